"""The model zoo: architectures (builders registered by name) and named weights of them.

As timm (``resnet50.a1_in1k``) and torchvision (``ResNet50_Weights.IMAGENET1K_V1``), a card
belongs to weights, not to an architecture: ``resnet50_dcsd`` is an architecture,
``resnet50_dcsd.joint5`` weights of it, with their Hub repository, transforms and metrics.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch.nn as nn

from dcsd.data.transforms import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])
# Larger than any ReID crop; a card asking for more would make extraction run out of memory.
MAX_INPUT_SIDE = 4096


UNTRAINED = "untrained"  # the name of a freshly built model's card
TRAINED = "trained"  # the name of the card a dcsd Trainer writes (weights not in the zoo)


@dataclass(frozen=True)
class PretrainedCfg:
    """The card of a model's weights: what they are, what they were trained on and how to feed
    them (timm's pretrained_cfg, torchvision's weights metadata).

    A model carries its card as ``model.pretrained_cfg``: a freshly built model has an
    ``"untrained"`` card (the architecture's input size and normalisation, no datasets, no
    metrics); a model trained by :class:`dcsd.engine.Trainer` the card the trainer wrote (its
    datasets, cameras, input size, recipe and measured metrics); a loaded model the card saved
    in its ``config.json`` (``"pretrained_cfg"``); a zoo entry's weights their entry's card.

    Attributes:
        name: which weights: ``"untrained"``, ``"trained"`` (trained by a dcsd Trainer, not a
            zoo entry) or a zoo name ``"<architecture>.<tag>"`` (:func:`list_pretrained`).
        hub_id: Hugging Face Hub repository holding ``config.json`` and ``model.safetensors``
            ("" for weights that are not on the Hub).
        hub_revision: branch, tag or commit to download (pin a commit for reproducibility).
        published: whether weights have been uploaded to ``hub_id``. When False the repository
            id is a placeholder and ``pretrained=True`` only finds weights someone put in the
            local Hub cache.
        input_size: (C, H, W) of the training and test images.
        mean, std: per-channel normalisation of RGB images in [0, 1].
        interpolation: resize interpolation of the eval transforms (``"bicubic"`` as BoT).
        datasets: training datasets; their order is the domain ID order (and fixes the global
            camera numbering).
        num_cameras: global camera IDs the camera classifiers were trained on.
        metrics: {dataset: {metric: value}} measured on these weights (mAP and rank1 in %).
        metrics_source: how and when ``metrics`` were measured.
        paper_metrics: {dataset: {metric: value}} the paper reports for this configuration:
            a target, not a measurement of these weights.
        recipe: how the weights were trained (the trainer's settings, JSON values).
        source: where the weights start from or come from when not from training alone (the
            ImageNet or DDF backbone a run started from, a converted checkpoint); "" otherwise.
    """

    name: str = UNTRAINED
    hub_id: str = ""
    hub_revision: str = "main"
    published: bool = False
    input_size: tuple[int, int, int] = (3, 256, 128)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    datasets: tuple[str, ...] = ()
    num_cameras: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    metrics_source: str = ""
    paper_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        # A card may come from a stranger's config.json: every size is bounded, every number
        # finite, before transforms are built from it.
        size = self.input_size
        if (
            len(size) != 3
            or not all(type(n) is int for n in size)
            or size[0] != 3
            or not all(1 <= n <= MAX_INPUT_SIDE for n in size[1:])
        ):
            raise ValueError(
                f"input_size must be (3, H, W) with H, W in 1..{MAX_INPUT_SIDE}, got {size!r}"
            )
        for name in ("mean", "std"):
            values = getattr(self, name)
            if (
                isinstance(values, str)
                or len(values) != 3
                or not all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            ):
                raise ValueError(f"{name} must be 3 finite numbers (R, G, B), got {values!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be > 0 for each channel, got {self.std!r}")
        if type(self.num_cameras) is not int or self.num_cameras < 0:
            raise ValueError(f"num_cameras must be an int >= 0, got {self.num_cameras!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        for name in ("name", "hub_id", "hub_revision", "metrics_source", "source"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str, got {getattr(self, name)!r}")
        for name in ("metrics", "paper_metrics", "recipe"):
            if not isinstance(getattr(self, name), Mapping):
                raise TypeError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        if isinstance(self.datasets, str):
            raise TypeError(f"datasets must be a sequence of names, got the str {self.datasets!r}")
        # JSON gives lists back: store tuples, so cards compare equal as written.
        for name in ("input_size", "mean", "std", "datasets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready values (what ``config.json`` stores under ``pretrained_cfg``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "pretrained_cfg") -> PretrainedCfg:
        """A card from :meth:`to_dict`'s output. Unknown fields (a later dcsd's) are ignored
        with a warning; bad values raise ``ValueError`` naming ``source``."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source} must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:  # a card written by a later dcsd: read what this version knows
            warnings.warn(
                f"{source} has fields this dcsd does not know, ignored: {unknown}",
                UserWarning,
                stacklevel=2,
            )
        try:
            return cls(**{key: value for key, value in values.items() if key in known})
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid pretrained config: {error}") from error

    def trained_on(
        self,
        datasets: Sequence[str],
        num_cameras: int,
        input_size: Sequence[int] | None = None,
        *,
        metrics: Mapping[str, Mapping[str, float]] | None = None,
        metrics_source: str = "",
        recipe: Mapping[str, Any] | None = None,
        source: str | None = None,
    ) -> PretrainedCfg:
        """The card of new weights trained from these (what :class:`dcsd.engine.Trainer`
        writes): named ``"trained"``, on the given data and image size, with the given measured
        metrics and recipe, no Hub repository and no paper numbers. ``source`` says where
        training started (default: these weights: a zoo name, their training data, or the start
        an untrained card records)."""
        if source is None:
            source = self._as_start()
        return dataclasses.replace(
            self,
            name=TRAINED,
            hub_id="",
            hub_revision="main",
            published=False,
            input_size=tuple(input_size) if input_size is not None else self.input_size,
            datasets=tuple(datasets),
            num_cameras=num_cameras,
            metrics={k: dict(v) for k, v in (metrics or {}).items()},
            metrics_source=metrics_source,
            paper_metrics={},
            recipe=dict(recipe or {}),
            source=source,
        )

    def _as_start(self) -> str:
        """How a card trained from these weights names them as its start."""
        if self.name == UNTRAINED:
            return self.source
        if self.name == TRAINED:
            start = f" (from {self.source})" if self.source else ""
            return f"weights trained on {', '.join(self.datasets) or 'unnamed data'}{start}"
        return self.name


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
_WEIGHTS: dict[str, PretrainedCfg] = {}
# Each architecture's default weights: the first registered, as timm's default tag.
_DEFAULT_WEIGHTS: dict[str, str] = {}


def register_model(builder: Builder) -> Builder:
    """Decorator adding a builder to the zoo under its function name (an architecture; its
    weights are registered apart, with :func:`register_weights`)."""
    name = builder.__name__
    if name in _BUILDERS:
        raise ValueError(f"a model named {name!r} is already registered")
    if "." in name:
        raise ValueError(f"a model name cannot hold '.' (it separates the weights' tag): {name!r}")
    _BUILDERS[name] = builder
    return builder


def register_weights(card: PretrainedCfg) -> PretrainedCfg:
    """Add named weights to the zoo: ``card.name`` is ``"<architecture>.<tag>"`` of a
    registered architecture; the first weights of an architecture are its default.

    Returns:
        The card.
    """
    if not isinstance(card, PretrainedCfg):
        raise TypeError(f"card must be a PretrainedCfg, got {type(card).__name__}")
    architecture, _, tag = card.name.partition(".")
    if not tag or architecture not in _BUILDERS:
        raise ValueError(
            f"weights must be named '<architecture>.<tag>' of a registered architecture "
            f"({list_models()}), got {card.name!r}"
        )
    if card.name in _WEIGHTS:
        raise ValueError(f"weights named {card.name!r} are already registered")
    _WEIGHTS[card.name] = card
    _DEFAULT_WEIGHTS.setdefault(architecture, card.name)
    return card


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered architectures, optionally filtered by a shell-style
    pattern such as ``"*dcsd*"``."""
    names = sorted(_BUILDERS)
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Sorted names of the zoo's weights, ``"<architecture>.<tag>"`` (timm's
    ``list_pretrained``), optionally filtered by a shell-style pattern."""
    names = sorted(_WEIGHTS)
    if pattern is None:
        return names
    return [name for name in names if fnmatch.fnmatchcase(name, pattern)]


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered architecture."""
    return name in _BUILDERS


def split_model_name(name: object) -> tuple[str, str]:
    """``"arch.tag"`` -> ``("arch", "tag")``, ``"arch"`` -> ``("arch", "")``, checked.

    Raises:
        TypeError: ``name`` is not a str.
        ValueError: unknown architecture or weights.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}")
    architecture, _, tag = name.partition(".")
    if architecture not in _BUILDERS:
        raise ValueError(f"unknown model {architecture!r}; available: {list_models()}")
    if tag and name not in _WEIGHTS:
        raise ValueError(
            f"unknown weights {name!r}; weights of {architecture}: "
            f"{list_pretrained(architecture + '.*')}"
        )
    return architecture, tag


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The card of the zoo's weights ``name``: ``"<architecture>.<tag>"``, or an
    architecture for its default weights.

    Raises:
        ValueError: unknown name, or an architecture without weights in the zoo.
    """
    architecture, tag = split_model_name(name)
    if tag:
        return _WEIGHTS[name]
    if architecture not in _DEFAULT_WEIGHTS:
        raise ValueError(f"{architecture!r} has no weights in the zoo; see list_pretrained()")
    return _WEIGHTS[_DEFAULT_WEIGHTS[architecture]]


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model (timm's ``create_model``).

    Args:
        name: an architecture from :func:`list_models` (``"resnet50_dcsd"``) or weights from
            :func:`list_pretrained` (``"resnet50_dcsd.joint5"``).
        pretrained: load the named weights (an architecture's default weights for a bare
            architecture name) from the Hub or the local Hub cache. Backbone starts have
            functions of their own: :func:`dcsd.models.load_imagenet_backbone`,
            :func:`dcsd.models.load_ddf_backbone`.
        checkpoint_path: a local model folder or ``.safetensors`` file whose weights fill the
            model built here (:func:`dcsd.models.load_weights`; timm's ``checkpoint_path``).
            To build the model a folder describes, use :func:`dcsd.load_model`.
        **kwargs: the builder's keyword-only options (num_classes, num_domains, ...).
    """
    architecture, tag = split_model_name(name)
    if not isinstance(pretrained, bool):
        raise TypeError(
            f"pretrained must be True or False, got {type(pretrained).__name__} {pretrained!r}: "
            "a local folder is checkpoint_path=folder (or dcsd.load_model(folder)), the ImageNet "
            "backbone dcsd.models.load_imagenet_backbone(model)"
        )
    if pretrained and checkpoint_path is not None:
        raise ValueError("pass pretrained=True or checkpoint_path, not both")
    model = _BUILDERS[architecture](**kwargs)
    if pretrained:
        from .pretrained import load_pretrained

        load_pretrained(model, name if tag else get_pretrained_cfg(architecture).name)
    elif checkpoint_path is not None:
        from .pretrained import load_weights

        load_weights(model, checkpoint_path)
    return model
