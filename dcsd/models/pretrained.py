"""Model folders: ``config.json`` + ``model.safetensors``, locally or on the Hugging Face Hub, and
the torchvision ImageNet initialisation of the backbone.

One format everywhere: :func:`save_model` writes it (``model.save_pretrained`` and every training
checkpoint of :mod:`dcsd.engine` call it), and two calls read it, as in timm:
``create_model(name, checkpoint_path=folder)`` (weights into a model you describe) and
``load_model(folder or Hub id)`` (the model ``config.json`` describes, with the pretrained config
it saved).

Only safetensors files are read for model checkpoints (no pickle). The one exception is
torchvision's own ImageNet file, which :func:`imagenet_state_dict` loads with
``weights_only=True`` and a hash check.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn as nn
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError

from dcsd.manifest import MANIFEST_FILE, ChecksumError, verify_manifest, write_manifest
from dcsd.modules import DCSDConv

from .registry import UNTRAINED, PretrainedCfg, create_model, get_pretrained_cfg, is_model

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PRETRAINED_CFG_KEY = "pretrained_cfg"
# A run's checkpoint folder names its newest checkpoint in this file (see dcsd.engine).
LATEST_NAME = "latest"
# What marks a training checkpoint (dcsd.engine), which must carry a manifest.
TRAINING_STATE_NAME = "training_state.pt"
CLASSIFIER_KEY = "head.classifier.weight"
# Parts of the model that exist in torchvision's ResNet50 under the same names.
_BACKBONE_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")
_MAX_LISTED_KEYS = 8
_EPOCH_FOLDER = re.compile(r"epoch_\d{4,}")
_MAX_LATEST_BYTES = 256
_MAX_CONFIG_BYTES = 1 << 20
IMAGENET_SOURCE = "torchvision ResNet50_Weights.IMAGENET1K_V1 (backbone)"
_HUB_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")

logger = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A checkpoint's tensors do not fit the model it is loaded into."""


@dataclass(frozen=True)
class LoadReport:
    """Which tensors a load filled.

    Attributes:
        loaded: model keys filled from the source.
        fresh: model keys left at their initial values.
        ignored: source keys not used (e.g. torchvision's fc, or a dropped classifier).
    """

    loaded: tuple[str, ...]
    fresh: tuple[str, ...]
    ignored: tuple[str, ...]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f", ... ({more} more)" if more > 0 else "")


def model_config_json(model: nn.Module) -> dict[str, Any]:
    """What ``config.json`` holds for ``model``: ``model.config`` (architecture and builder
    options) plus ``"pretrained_cfg"``, the card of these weights (input size, mean/std,
    interpolation, training datasets, cameras, measured metrics)."""
    config = dict(model.config)
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is not None:
        config[PRETRAINED_CFG_KEY] = cfg.to_dict()
    return config


def save_model(model: nn.Module, directory: str | os.PathLike, *, manifest: bool = True) -> Path:
    """Write a model folder: ``model.safetensors``, for dcsd models (which have ``config``)
    ``config.json`` (:func:`model_config_json`), and last ``manifest.json`` (size and SHA-256 of
    every file of the folder, :mod:`dcsd.manifest`), which :func:`load_model` verifies. The one
    writer of the format that :func:`load_model` and ``create_model(name, checkpoint_path=folder)``
    read.

    Args:
        model: the model to save.
        directory: the folder (created if missing).
        manifest: write the manifest; ``False`` for a writer that adds files of its own and
            writes the manifest after them (:mod:`dcsd.engine`'s checkpoints).

    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # A folder rewritten in place must not keep a manifest of its old files while it changes.
    (directory / MANIFEST_FILE).unlink(missing_ok=True)
    # contiguous() and cpu(): channels_last or CUDA models hold tensors safetensors refuses.
    state = {key: value.detach().contiguous().cpu() for key, value in model.state_dict().items()}
    safetensors.torch.save_file(state, directory / WEIGHTS_NAME, metadata={"format": "pt"})
    if hasattr(model, "config"):
        text = json.dumps(model_config_json(model), indent=2, sort_keys=True) + "\n"
        (directory / CONFIG_NAME).write_text(text)
    if manifest:
        write_manifest(directory)
    return directory


def read_latest(directory: str | os.PathLike) -> Path | None:
    """The checkpoint folder ``directory/latest`` names, or ``None`` without ``latest``.

    ``latest`` may only name an epoch folder of this run (``epoch_XXXX``): never a path, an
    absolute path or ``..``, so a pointer cannot lead out of the run.

    Raises:
        ValueError: ``latest`` is unreadable (not a file, not ASCII) or names anything else;
            the message names it.
    """
    pointer = Path(directory) / LATEST_NAME
    if not os.path.lexists(pointer):
        return None
    try:
        if pointer.is_symlink() or not pointer.is_file():
            raise ValueError("not a regular file")
        with open(pointer, "rb") as handle:
            name = handle.read(_MAX_LATEST_BYTES).decode("ascii").strip()
    except (OSError, ValueError) as error:
        raise ValueError(f"{pointer} is unreadable: {error}") from None
    if not _EPOCH_FOLDER.fullmatch(name):
        raise ValueError(
            f"{pointer} names {name[:80]!r}, which is not an epoch folder of this run "
            "(epoch_XXXX, no path)"
        )
    return Path(directory) / name


def follow_latest(path: str | os.PathLike) -> Path:
    """A run's checkpoint folder (with a ``latest`` pointer) stands for the checkpoint it names;
    any other path is itself.

    Raises:
        FileNotFoundError: ``latest`` names a folder that does not exist (or a symlink).
        ValueError: ``latest`` is unreadable or names no epoch folder (see :func:`read_latest`).
    """
    path = Path(path)
    target = read_latest(path)
    if target is None:
        return path
    if target.is_symlink() or not target.is_dir():
        raise FileNotFoundError(
            f"{path / LATEST_NAME} names {target.name}, which does not exist (a dangling latest "
            "pointer)"
        )
    return target


def _read_config(config_file: Path) -> dict[str, Any]:
    """A checkpoint's ``config.json`` as a dict; errors name the file. The file is data from
    strangers (the Hub): its size and nesting are bounded before it is trusted with anything."""
    if config_file.stat().st_size > _MAX_CONFIG_BYTES:
        raise ValueError(
            f"{config_file} has {config_file.stat().st_size} bytes, more than a model config "
            f"ever needs ({_MAX_CONFIG_BYTES})"
        )
    try:
        config = json.loads(config_file.read_bytes())
    except (ValueError, RecursionError) as error:
        # ValueError covers bad JSON and bad UTF-8; RecursionError, absurdly deep nesting.
        raise ValueError(
            f"{config_file} is not valid JSON: {type(error).__name__}: {error}"
        ) from None
    if not isinstance(config, dict):
        raise ValueError(
            f"{config_file} must hold a JSON object of model options, got a {type(config).__name__}"
        )
    if "pretrained" in config:
        raise ValueError(
            f"{config_file} holds 'pretrained' ({str(config['pretrained'])[:80]!r}): a folder's "
            "config describes an architecture and never says what else to load"
        )
    return config


def _local_files(checkpoint: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """(weights file, config or None) of a checkpoint folder or ``.safetensors`` file.

    A folder with a ``manifest.json`` (training checkpoints) is verified against it first; a
    run's checkpoint folder stands for the checkpoint its ``latest`` names.
    """
    path = follow_latest(Path(checkpoint))
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            verify_manifest(path)
        elif (path / TRAINING_STATE_NAME).is_file():
            raise ChecksumError(
                f"training checkpoint {path} has no {MANIFEST_FILE}: its files cannot be "
                "verified (a write that never finished, or a copy that left it out); use another "
                "checkpoint"
            )
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            found = sorted(p.name for p in path.iterdir())
            raise FileNotFoundError(
                f"checkpoint folder {path} has no {WEIGHTS_NAME} (it holds {found}); only "
                "safetensors checkpoints are read, write them with model.save_pretrained()"
            )
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(
                f"checkpoint must be a .safetensors file or a folder holding {WEIGHTS_NAME}, got "
                f"{path}; pickled checkpoints (.pth, .bin, .pt) are not read, convert them "
                "with safetensors.torch.save_file(state_dict, 'model.safetensors')"
            )
        weights = path
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    config_file = weights.parent / CONFIG_NAME
    config = _read_config(config_file) if config_file.is_file() else None
    return weights, config


def _first_mismatch(
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]], suffix: str
) -> tuple[int, int] | None:
    """(checkpoint rows, model rows) of the first mismatched key ending with ``suffix``."""
    for key, theirs, ours in mismatched:
        if key.endswith(suffix):
            return theirs[0], ours[0]
    return None


def _mismatch_message(
    source: str,
    model: nn.Module,
    config: dict[str, Any] | None,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
) -> str:
    lines = [f"checkpoint {source} does not match the model:"]
    classes = _first_mismatch(mismatched, CLASSIFIER_KEY)
    if classes is not None:
        lines.append(
            f"- its identity classifier has {classes[0]} classes, the model {classes[1]}: pass "
            f"num_classes={classes[0]}, or num_classes=0 to drop it (the embedding is "
            "unchanged) and then model.reset_classifier(n) to fine-tune on n identities"
        )
    if CLASSIFIER_KEY in missing:
        lines.append(
            "- it has no identity classifier: build the model with num_classes=0 and call "
            "model.reset_classifier(n) to train one"
        )
    for factor in ("domain", "camera"):
        counts = _first_mismatch(mismatched, f"{factor}_classifier.weight")
        if counts is not None:
            lines.append(
                f"- it was trained with num_{factor}s={counts[0]}, the model has "
                f"num_{factor}s={counts[1]}: pass num_{factor}s={counts[0]} (at test time the "
                f"{factor} information is predicted from the image, so any data can be embedded)"
            )
    if config is not None:
        ours = model.config
        differing = [
            f"{key}: checkpoint {config.get(key)!r}, model {ours.get(key)!r}"
            for key in sorted(set(config) | set(ours))
            if key not in ("num_classes", PRETRAINED_CFG_KEY)
            and _normalised(config.get(key)) != _normalised(ours.get(key))
        ]
        if differing:
            lines.append(
                "- its config.json differs: " + "; ".join(differing) + ". Build the model with "
                "the checkpoint's options, or load it with dcsd.load_model(path), which reads "
                "config.json"
            )
    if missing:
        lines.append(f"- missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        lines.append(f"- unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if mismatched:
        shapes = [f"{key} {theirs} vs {ours}" for key, theirs, ours in mismatched]
        lines.append(f"- shape mismatches, checkpoint vs model ({len(shapes)}): {_listing(shapes)}")
    return "\n".join(lines)


def _normalised(value: Any) -> Any:
    """JSON turns tuples into lists; compare configs as JSON would store them."""
    return json.loads(json.dumps(value))


def load_weights(model: nn.Module, checkpoint: str | os.PathLike) -> LoadReport:
    """Load a model folder's (or ``.safetensors`` file's) weights into ``model``, every tensor
    exactly; what ``create_model(name, checkpoint_path=folder)`` does after building the model. A
    ``pretrained_cfg`` saved in the folder's ``config.json`` becomes ``model.pretrained_cfg``.

    A model built with ``num_classes=0`` drops the checkpoint's identity classifier; every other
    difference (missing or unexpected keys, other shapes, other numbers of domains or cameras)
    raises :class:`CheckpointMismatchError` saying how to build a matching model.

    Args:
        model: a dcsd model (it has ``config`` and ``num_classes``).
        checkpoint: a folder with ``model.safetensors`` (and ``config.json``), or a
            ``.safetensors`` file.

    Returns:
        A :class:`LoadReport`.
    """
    return _load_weights(model, *_local_files(checkpoint))


def _saved_pretrained_cfg(config_file: Path, config: dict[str, Any] | None) -> PretrainedCfg | None:
    if config is None or PRETRAINED_CFG_KEY not in config:
        return None
    return PretrainedCfg.from_dict(config[PRETRAINED_CFG_KEY], f"{config_file} pretrained_cfg")


def _load_weights(model: nn.Module, weights: Path, config: dict[str, Any] | None) -> LoadReport:
    """Load ``weights`` into ``model`` exactly; the card saved in ``config`` (if any) becomes
    ``model.pretrained_cfg``."""
    try:
        state = safetensors.torch.load_file(weights)
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"checkpoint weights {weights} are corrupt: {error}") from error
    ignored = []
    if model.num_classes == 0 and CLASSIFIER_KEY in state:
        del state[CLASSIFIER_KEY]
        ignored.append(CLASSIFIER_KEY)
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    mismatched = [
        (key, tuple(state[key].shape), tuple(own[key].shape))
        for key in sorted(own.keys() & state.keys())
        if state[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            _mismatch_message(str(weights), model, config, missing, unexpected, mismatched)
        )
    non_finite = [
        key
        for key, value in state.items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if non_finite:
        raise ValueError(
            f"checkpoint weights {weights} hold NaN or inf in {len(non_finite)} tensor(s) "
            f"({_listing(non_finite)}): a diverged or damaged model, refused"
        )
    model.load_state_dict(state, strict=True)
    saved_cfg = _saved_pretrained_cfg(weights.parent / CONFIG_NAME, config)
    if saved_cfg is not None:
        model.pretrained_cfg = saved_cfg
    return LoadReport(loaded=tuple(sorted(state)), fresh=(), ignored=tuple(ignored))


def download_checkpoint(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """Fetch ``config.json`` and ``model.safetensors`` of a Hub repository into the Hub cache.

    Honours the Hub cache (``HF_HUB_CACHE``, ``cache_dir``), offline mode (``HF_HUB_OFFLINE``)
    and revision pinning; files already cached are not downloaded again.

    Returns:
        The local snapshot folder holding both files.

    Raises:
        OSError: the files could not be fetched nor found in the cache.
    """
    options = dict(
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        local_files_only=local_files_only,
        force_download=force_download,
        library_name="dcsd",
    )
    try:
        hf_hub_download(repo_id, CONFIG_NAME, **options)
        weights = hf_hub_download(repo_id, WEIGHTS_NAME, **options)
    except (OSError, EntryNotFoundError) as error:
        raise OSError(
            f"could not get {CONFIG_NAME} and {WEIGHTS_NAME} of the Hub repository {repo_id!r} "
            f"(revision {revision or 'main'}) from the Hub or the local Hub cache: {error}"
        ) from error
    return Path(weights).parent


def load_pretrained(model: nn.Module, name: str) -> LoadReport:
    """Fill a freshly built model with the zoo's weights ``name`` (``"<architecture>.<tag>"``)
    from the Hub or the local Hub cache. The card saved with the weights says what they are;
    the zoo entry adds its name, where they live and the paper's numbers.

    Raises:
        OSError: the weights could not be fetched (for unpublished entries the message says
            that none have been published).
    """
    cfg = get_pretrained_cfg(name)
    try:
        folder = download_checkpoint(cfg.hub_id, revision=cfg.hub_revision)
    except OSError as error:
        status = (
            ""
            if cfg.published
            else f"\nNo weights named {cfg.name} have been published on the Hub yet (its repo id "
            "is a placeholder): train a model and load it with dcsd.load_model(folder), or start "
            "from ImageNet with dcsd.models.load_imagenet_backbone(model)."
        )
        raise OSError(f"pretrained weights {cfg.name!r}: {error}{status}") from error
    report = load_weights(model, folder)
    saved = model.pretrained_cfg
    model.pretrained_cfg = dataclasses.replace(
        saved if saved.name != UNTRAINED else cfg,
        name=cfg.name,
        hub_id=cfg.hub_id,
        hub_revision=cfg.hub_revision,
        published=cfg.published,
        paper_metrics=cfg.paper_metrics,
    )
    return report


def load_model(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
    **overrides: Any,
) -> nn.Module:
    """Build the model a model folder's ``config.json`` describes and load its weights.

    The model's ``pretrained_cfg`` is the one saved in ``config.json`` (input size, mean/std,
    datasets, cameras, metrics of these weights), or an ``"untrained"`` card for folders
    without one (nothing is known of their weights).

    Args:
        source: a local model folder (``config.json`` + ``model.safetensors``: written by
            ``save_pretrained``, ``train_joint.py`` or any training checkpoint
            ``runs/x/checkpoints/epoch_XXXX``; a run's ``checkpoints`` folder means its latest
            checkpoint) or a Hub repository id such as ``"user/resnet50_dcsd-market"``.
        revision, cache_dir, token, local_files_only, force_download: Hub download options
            (ignored for a local folder).
        **overrides: builder options replacing the config's, e.g. ``num_classes=0`` to drop the
            identity classifier or ``backend="reference"``.

    Returns:
        The model, in training mode as every freshly built module (call ``.eval()`` to embed).

    Raises:
        FileNotFoundError: no such folder (nor Hub id shape), or no ``config.json``.
        ValueError: ``config.json`` or the weights are unreadable, or do not fit together; a
            folder with a ``manifest.json`` (a training checkpoint) has a file that does not
            match it (:class:`dcsd.manifest.ChecksumError`); ``config.json`` holds
            ``"pretrained"`` (a folder never says what else to load), sizes that do not fit the
            weights' shapes (checked before anything is allocated) or a card out of bounds; the
            weights hold NaN or inf. Every message names the file.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path or a Hub repo id, got {type(source).__name__}")
    folder = Path(source)
    if folder.exists():
        folder = follow_latest(folder)
    else:
        if not _HUB_REPO_ID.fullmatch(os.fspath(source)) or ".." in os.fspath(source):
            raise FileNotFoundError(
                f"no such folder: {os.fspath(source)!r} (and it is not a Hub repo id, 'owner/name')"
            )
        folder = download_checkpoint(
            os.fspath(source),
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    config_file = folder / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{folder} has no {CONFIG_NAME}, so its architecture is unknown: build the model with "
            "dcsd.create_model(name, checkpoint_path=path, ...) instead"
        )
    weights, config = _local_files(folder)
    options = dict(config)
    options.pop(PRETRAINED_CFG_KEY, None)
    architecture = options.pop("architecture", None)
    if not isinstance(architecture, str) or not is_model(architecture):
        raise ValueError(
            f"{config_file} names architecture {architecture!r}, which is not a registered "
            "model (see dcsd.list_models())"
        )
    options = {**options, **overrides}
    try:
        # Built without memory first: the config's sizes are checked against the weights'
        # shapes before anything of that size is allocated.
        with torch.device("meta"):
            skeleton = create_model(architecture, **options)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise ValueError(f"{config_file} holds options {architecture} refuses: {error}") from error
    _check_shapes(skeleton, _weights_shapes(weights), weights, config)
    model = create_model(architecture, **options)
    _load_weights(model, weights, config)
    return model


def _weights_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape, read from the safetensors header alone."""
    try:
        with safetensors.safe_open(weights, "pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (safetensors.SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"checkpoint weights {weights} are corrupt: {error}") from error


def _check_shapes(
    model: nn.Module,
    shapes: dict[str, tuple[int, ...]],
    weights: Path,
    config: dict[str, Any] | None,
) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``shapes`` fill ``model`` exactly (the
    identity classifier may be dropped by a model with ``num_classes=0``)."""
    if model.num_classes == 0:
        shapes = {key: shape for key, shape in shapes.items() if key != CLASSIFIER_KEY}
    own = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    missing = sorted(own.keys() - shapes.keys())
    unexpected = sorted(shapes.keys() - own.keys())
    mismatched = [
        (key, shapes[key], own[key])
        for key in sorted(own.keys() & shapes.keys())
        if shapes[key] != own[key]
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(
            _mismatch_message(str(weights), model, config, missing, unexpected, mismatched)
        )


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ResNet50 ImageNet weights (``IMAGENET1K_V1``, 76.1% top-1, what BoT and
    fast-reid start from), via torchvision's loader and cache (``$TORCH_HOME``).

    Raises:
        OSError: the file is not cached and cannot be downloaded.
    """
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.IMAGENET1K_V1
    try:
        return weights.get_state_dict(
            progress=True, check_hash=True, weights_only=True, map_location="cpu"
        )
    except OSError as error:
        target = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise OSError(
            f"could not get torchvision's ResNet50 ImageNet weights from {weights.url}: {error}. "
            f"Offline, copy that file to {target}"
        ) from error


def load_tensors_by_name(
    model: nn.Module,
    state_dict: dict[str, torch.Tensor],
    keys: list[str],
    source: str,
    kind: str,
) -> list[str]:
    """Load the model's ``keys`` from a foreign ``state_dict`` holding them under the same
    names (BatchNorm's ``num_batches_tracked`` may be absent: older files predate it); every
    other key is required with the model's shape. Returns the keys loaded.

    Raises:
        ValueError: a key is missing or has another shape; the message names ``source`` (what
            the state dict should be) and ``kind`` (which tensors).
    """
    own = model.state_dict()
    missing = [k for k in keys if k not in state_dict and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(
            f"state_dict is not a {source} state dict: it lacks {len(missing)} {kind} tensors "
            f"({_listing(missing)})"
        )
    loaded = [key for key in keys if key in state_dict]
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(own[key].shape)}"
        for key in loaded
        if state_dict[key].shape != own[key].shape
    ]
    if mismatched:
        raise ValueError(
            f"state_dict shapes differ from the model's ({source} vs model): "
            + _listing(mismatched)
        )
    model.load_state_dict({key: state_dict[key] for key in loaded}, strict=False)
    return loaded


def load_imagenet_backbone(
    model: nn.Module, state_dict: dict[str, torch.Tensor] | None = None
) -> LoadReport:
    """The ImageNet start: initialise the stem, 1x1 convolutions, BatchNorms and downsample
    branches from a torchvision ResNet50 state dict.

    Static 3x3 convolutions load too (``resnet50_reid``); DCSD generators, non-local blocks and
    the head keep their fresh initialisation; torchvision's ``fc`` is not used. The model's card
    records the start in ``source`` (training then names it as where it started).

    Args:
        model: a dcsd ResNet50 model.
        state_dict: e.g. ``torchvision.models.resnet50(weights=...).state_dict()``; default
            torchvision's ``IMAGENET1K_V1`` weights (:func:`imagenet_state_dict`).

    Returns:
        A :class:`LoadReport` (also logged at INFO level).

    Raises:
        ValueError: ``state_dict`` lacks backbone tensors or has other shapes.
    """
    source = IMAGENET_SOURCE
    if state_dict is None:
        state_dict = imagenet_state_dict()
    else:
        source = "a torchvision ResNet50 state dict (backbone)"
    dynamic_prefixes = tuple(
        f"{name}." for name, module in model.named_modules() if isinstance(module, DCSDConv)
    )
    own = model.state_dict()
    backbone = [
        key
        for key in own
        if key.startswith(_BACKBONE_PREFIXES) and not key.startswith(dynamic_prefixes)
    ]
    loaded = load_tensors_by_name(model, state_dict, backbone, "torchvision ResNet50", "backbone")
    loaded_set = set(loaded)
    report = LoadReport(
        loaded=tuple(loaded),
        fresh=tuple(key for key in own if key not in loaded_set),
        ignored=tuple(key for key in state_dict if key not in loaded_set),
    )
    card = getattr(model, "pretrained_cfg", None)
    if isinstance(card, PretrainedCfg):
        model.pretrained_cfg = dataclasses.replace(card, source=source)
    logger.info(
        "ImageNet init: %d tensors loaded, %d fresh, %d ImageNet tensors unused (%s)",
        len(report.loaded),
        len(report.fresh),
        len(report.ignored),
        _listing(list(report.ignored)),
    )
    return report
