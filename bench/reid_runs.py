"""One training run of a ReID model on some synthetic domains, cached on disk: the unit of the
domain-conflict benchmark and of the DCSD study. Shared by the scripts in ``bench/``.

A run is described by a :class:`RunSpec` (model, its options, training knobs, seed, domains) and
lives in ``root/<spec key>/``. Its ``result.json`` is written last and atomically, so a finished
run is never trained again and an interrupted one starts over cleanly; a ledger
(:mod:`run_ledger`, kept with the code) records each finished run's result, so a new machine
trains only the runs it does not hold.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import safetensors.torch
import torch
import torch.nn as nn
import triton
from run_ledger import read_ledger, record_run

import dcsd
from dcsd.data import MultiDomainDataset, ReIDDataset
from dcsd.engine import (
    TrainConfig,
    Trainer,
    build_eval_splits,
    build_train_loader,
    evaluate_model,
    seed_everything,
)
from dcsd.losses import DCSDLoss
from dcsd.models import LoadReport, load_ddf_backbone, load_imagenet_backbone, read_ddf_checkpoint
from dcsd.models.resnet import Bottleneck

# Knobs of a run that are not model-builder arguments: the depthwise control and
# initialisations applied to a built model.
TWEAKS = ("depthwise", "ddf_init")
# A proxy start's digest, the end of the names of the runs from it: this many hex digits of
# its file's SHA-256.
DIGEST_DIGITS = 8


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's result (its cache key is a hash of it)."""

    model: str  # "resnet50_reid" or "resnet50_dcsd"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    tweaks: tuple[str, ...] = ()
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    domains: tuple[str, ...] = ()  # names of the domains trained (and evaluated) together
    seed: int = 0
    epochs: int = 10
    batch: tuple[int, int] = (8, 4)
    image_size: tuple[int, int] = (64, 32)
    split: str = "test"  # "test" or "val" (held-out training identities)
    data: str = ""  # a description of the data (preset, seed, validation ids)
    balance_domains: bool = False  # the same number of identities of each domain per batch
    loss: dict[str, Any] = field(default_factory=dict)  # DCSDLoss arguments
    # The start: "" (from scratch) or a name with the cache key of the proxy pretraining that
    # made it, e.g. "proxy_ddf@<key>" (:func:`start_init`; see ``starts`` of :func:`run`).
    init: str = ""

    def key(self) -> str:
        fields = asdict(self)
        # Fields added later enter the key only when set, so earlier runs' caches stay valid.
        for name, default in _LATER_FIELDS.items():
            if fields[name] == default:
                del fields[name]
        # A later layer option set to its earlier value builds the model of the earlier runs.
        fields["model_kwargs"] = {
            name: value
            for name, value in fields["model_kwargs"].items()
            if not _at_earlier_value(name, value)
        }
        text = json.dumps(fields, sort_keys=True, default=list)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def start_init(start: str, pool_key: str) -> str:
    """A :class:`RunSpec`'s ``init`` for the proxy start ``start`` pretrained on the proxy
    pool whose cache key is ``pool_key``: ``"proxy_ddf@<key>"``."""
    return f"{start}@{pool_key}"


def init_start(init: str) -> str:
    """The proxy start a :class:`RunSpec`'s ``init`` names (:func:`start_init`'s ``start``)."""
    return init.split("@")[0]


_LATER_FIELDS: dict[str, Any] = {"balance_domains": False, "loss": {}, "init": ""}
# Layer options added after DCSD runs were first cached, with the value every earlier run had:
# at that value (or, in a run's layer config, where the option changes nothing) they stay out
# of a run's key, so the earlier runs stay valid.
_LATER_LAYER_OPTIONS: dict[str, Any] = {"detach_information_input": False}


def _at_earlier_value(name: str, value: Any) -> bool:
    """Whether ``name`` is a later layer option set to the value every earlier run had."""
    return name in _LATER_LAYER_OPTIONS and value == _LATER_LAYER_OPTIONS[name]


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation over seeds (0 for a single seed)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def make_depthwise(model: nn.Module) -> int:
    """Replace every bottleneck's static 3x3 convolution by a static depthwise 3x3 convolution
    (groups = channels, Kaiming-initialised): the control that has DCSD's connectivity without
    its dynamic filters. Returns the number of layers replaced."""
    count = 0
    for block in model.modules():
        if isinstance(block, Bottleneck) and isinstance(block.conv2, nn.Conv2d):
            old = block.conv2
            block.conv2 = nn.Conv2d(
                old.in_channels,
                old.out_channels,
                3,
                old.stride,
                padding=1,
                groups=old.in_channels,
                bias=False,
            )
            nn.init.kaiming_normal_(block.conv2.weight, mode="fan_out", nonlinearity="relu")
            count += 1
    return count


def ddf_init(model: nn.Module) -> int:
    """DDF's initialisation of the filter generators: Kaiming normal (fan_out, ReLU) weights and
    zero biases for the channel branch (DDF's 1x1 convs are our linear layers) and the spatial
    branch. Returns the number of DCSD layers changed."""
    layers = [m for m in model.modules() if isinstance(m, dcsd.DCSDConv)]
    for layer in layers:
        for module in (*layer.channel_branch, layer.spatial_branch):
            if isinstance(module, nn.Linear | nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
    return len(layers)


def build_model(spec: RunSpec, data: MultiDomainDataset) -> nn.Module:
    kwargs = {**data.model_kwargs(), "zero_init_residual": True, **spec.model_kwargs}
    model = dcsd.create_model(spec.model, **kwargs)
    unknown = set(spec.tweaks) - set(TWEAKS)
    if unknown:
        raise ValueError(f"unknown tweaks {sorted(unknown)}; known: {TWEAKS}")
    if "depthwise" in spec.tweaks and make_depthwise(model) != 16:
        raise ValueError("the depthwise control needs the static resnet50_reid")
    if "ddf_init" in spec.tweaks:
        ddf_init(model)
    return model


def last_train_loss(out_dir: Path) -> dict[str, float] | None:
    """The identity and triplet losses of a run's last epoch (from its ``log.jsonl``): how well
    it fits its training identities, to set against how it ranks held-out ones."""
    log = out_dir / "log.jsonl"
    if not log.is_file():
        return None
    last = json.loads(log.read_text().splitlines()[-1])
    return {"id": last["id"], "triplet": last["triplet"]}


def run_setup(device: torch.device | str) -> dict[str, Any]:
    """What a run on ``device`` runs with, recorded beside its result: a run's digits can
    depend on the torch threads (DCSD runs came out otherwise with another thread count) and
    on the CPU's model (the proxy starts pretrained to other weights on an Intel Xeon than on
    an AMD EPYC, both AVX-512, and capping the Xeon at AVX2 gave a third static start)."""
    setup: dict[str, Any] = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "dcsd": dcsd.__version__,
    }
    if torch.device(device).type == "cpu":
        setup["cpu"] = cpu_description()
    return setup


def cpu_description() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what :mod:`platform` knows) and the
    instruction set PyTorch's CPU kernels use, say ``"Intel(R) Xeon(R) Processor, AVX512"``."""
    return f"{_cpu_model()}, {torch.backends.cpu.get_cpu_capability()}"


@functools.cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ledger_start_digests(ledger: Path | None, device_type: str) -> dict[str, dict[str, int]]:
    """``{start: {start digest: runs}}`` of the runs recorded in ``ledger`` on ``device_type``
    (the ones a run there can read) from a proxy start, the start named as the run's spec names
    it (``proxy_ddf@<pool key>``: runs from another proxy pool count apart); the digest ends the
    run's name (:func:`run_folder`)."""
    counts: dict[str, dict[str, int]] = {}
    for name, result in (read_ledger(ledger) if ledger is not None else {}).items():
        init = result.get("spec", {}).get("init")
        digest = name.rsplit("-", 1)[-1]
        if not init or _device_type(result) != device_type or not is_digest(digest):
            continue
        per_digest = counts.setdefault(init, {})
        per_digest[digest] = per_digest.get(digest, 0) + 1
    return counts


def is_digest(text: str) -> bool:
    """Whether ``text`` has the form of a start's digest (:func:`start_digest`)."""
    return len(text) == DIGEST_DIGITS and all(c in "0123456789abcdef" for c in text)


class RecordedStart(NamedTuple):
    """A proxy start known by its digest alone (its file is on another machine): the runs the
    ledger recorded from it can be read, none can be trained."""

    digest: str


def start_digest(path: Path | RecordedStart) -> str:
    """The first ``DIGEST_DIGITS`` hex digits of the SHA-256 of a proxy start (a DDF checkpoint
    file, or a model folder's ``model.safetensors``; a :class:`RecordedStart`'s own digest): a
    start pretrained again gets a new digest."""
    if isinstance(path, RecordedStart):
        return path.digest
    file = _start_file(path)
    stat = file.stat()
    return _file_digest(file, stat.st_size, stat.st_mtime_ns)


@functools.cache
def _file_digest(file: Path, size: int, mtime_ns: int) -> str:
    # size and mtime enter the cache key: a file rewritten in place is hashed again.
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()[:DIGEST_DIGITS]


def _keyed_layer_config(config: dict[str, Any]) -> dict[str, Any]:
    """A DCSD model's ``config`` as it enters its runs' keys: without the later layer options
    at their earlier value, and without ``detach_information_input`` for a layer with no
    domain or camera MLP (whose input it detaches)."""
    informed = bool({"domain", "camera"} & set(config.get("factors", ())))
    return {
        name: value
        for name, value in config.items()
        if not (_at_earlier_value(name, value) or (name in _LATER_LAYER_OPTIONS and not informed))
    }


def run_folder(
    spec: RunSpec,
    model: nn.Module,
    root: Path,
    starts: dict[str, Path | RecordedStart] | None = None,
) -> Path:
    """Where ``spec``'s run (built as ``model``) lives under ``root``. A run from a proxy start
    (``spec.init``, a name of ``starts``) lives under the start's digest too, so that runs from
    two pretrainings of one start (which differ) are never cached or resumed as one.

    Raises:
        ValueError: ``spec.init`` names no start of ``starts``.
    """
    key = spec.key()
    if getattr(model, "dynamic", False):
        # A DCSD run also depends on the layer defaults of the installed library (say, its
        # filter_norm), which the spec leaves implicit: they are part of its key.
        layer_config = json.dumps(_keyed_layer_config(model.config), sort_keys=True).encode()
        key += "-" + hashlib.sha256(layer_config).hexdigest()[:8]
    if spec.init:
        key += "-" + start_digest(_start_path(spec.init, starts or {}))
    return root / key


def _read_result(folder: Path) -> dict[str, Any]:
    result = json.loads((folder / "result.json").read_text())
    # Runs cached before the result recorded these: the training loss is in their log.
    result.setdefault("train_loss", last_train_loss(folder / "train"))
    result.setdefault("resumed_at_epoch", None)
    return result


def cached_result(
    spec: RunSpec,
    datasets: list[ReIDDataset],
    root: Path,
    starts: dict[str, Path | RecordedStart] | None = None,
    ledger: Path | None = None,
    device: torch.device | str = "cpu",
) -> dict | None:
    """:func:`run`'s result for ``spec`` if it is cached under ``root``, or recorded in
    ``ledger`` (:mod:`run_ledger`) from a run on ``device``'s type, from the start that
    ``starts`` holds now, else ``None``, also when that start is not pretrained yet (builds the
    model on the CPU for the run's key; trains nothing). A cached run missing from ``ledger`` is
    recorded there."""
    start = _start_path(spec.init, starts or {}) if spec.init else None
    if isinstance(start, Path) and not _start_file(start).is_file():
        # (a start not pretrained yet, or being pretrained again)
        return None
    model = build_model(spec, MultiDomainDataset(datasets))
    return _finished_result(run_folder(spec, model, root, starts), ledger, device)


def _finished_result(folder: Path, ledger: Path | None, device: torch.device | str) -> dict | None:
    """The result of the run in ``folder``: its ``result.json`` (recorded in ``ledger`` if it is
    not there yet), else its ledger record if that run ran on ``device``'s type, else ``None``.
    A run's key leaves the device out, and a GPU run trains in bf16 where a CPU run trains in
    float32: the ledger, shared by every machine, must not pool them."""
    if (folder / "result.json").is_file():
        result = _read_result(folder)
        if ledger is not None:
            record_run(ledger, folder.name, result)
        return result
    recorded = read_ledger(ledger).get(folder.name) if ledger is not None else None
    if recorded is None or _device_type(recorded) != torch.device(device).type:
        return None
    return recorded


def _device_type(result: dict[str, Any]) -> str:
    # Runs recorded before ``ran_with`` existed all ran on the CPU.
    return torch.device(result.get("ran_with", {}).get("device", "cpu")).type


def _start_path(init: str, starts: dict[str, Path | RecordedStart]) -> Path | RecordedStart:
    start = init_start(init)
    if start not in starts:
        raise ValueError(f"unknown start {start!r}; known: {sorted(starts)}")
    return starts[start]


def _start_file(path: Path) -> Path:
    """The file a start's digest reads: a DDF checkpoint itself, a model folder's weights."""
    return path if path.is_file() else path / "model.safetensors"


def apply_start(
    model: nn.Module, start: str, starts: dict[str, Path | RecordedStart]
) -> LoadReport:
    """Load the proxy-pretrained start ``start`` (a name of ``starts``) into ``model``: a DDF
    checkpoint through :func:`dcsd.models.load_ddf_backbone` (what a user does with DDF's
    file), a dcsd model folder through :func:`dcsd.models.load_imagenet_backbone` (its stem,
    1x1 convolutions, BatchNorms and downsample; its 3x3 convolutions too if ``model`` is
    static: today's ImageNet path)."""
    path = _start_path(start, starts)
    if isinstance(path, RecordedStart):
        raise ValueError(
            f"{start} is known by its digest {path.digest} alone (its runs can be read from the "
            "ledger): no run can be trained from it here"
        )
    if path.is_file():
        return load_ddf_backbone(model, read_ddf_checkpoint(path))
    state = safetensors.torch.load_file(path / "model.safetensors")
    return load_imagenet_backbone(model, state)


def run(
    spec: RunSpec,
    datasets: list[ReIDDataset],
    root: Path,
    device: torch.device,
    workers: int = 0,
    starts: dict[str, Path | RecordedStart] | None = None,
    ledger: Path | None = None,
) -> dict[str, Any]:
    """Train and evaluate ``spec`` on ``datasets`` (or read the result cached under ``root`` or
    recorded in ``ledger``); ``starts`` names the proxy-pretrained starts that ``spec.init`` may
    name (before its ``@``). A finished run is recorded in ``ledger`` (:mod:`run_ledger`).

    Returns ``{"spec": ..., "seconds": ..., "ran_with": {"device", "threads", "torch",
    "triton", "dcsd", on the CPU "cpu"} (:func:`run_setup`), "resumed_at_epoch": ...,
    "train_loss": {"id", "triplet"} of the last epoch, "metrics": {domain: {"mAP", "rank1"}}}``:
    ``seconds`` times the epochs after ``resumed_at_epoch`` (0 unless the run was interrupted
    and resumed); runs cached before they were recorded have no ``ran_with`` and ``None`` for
    ``resumed_at_epoch``.
    """
    data = MultiDomainDataset(datasets)
    seed_everything(spec.seed)
    model = build_model(spec, data)
    folder = run_folder(spec, model, root, starts)
    finished = _finished_result(folder, ledger, device)
    if finished is not None:
        return finished
    if spec.init:
        apply_start(model, init_start(spec.init), starts or {})
    config = TrainConfig(
        epochs=spec.epochs,
        warmup_epochs=1.0,
        milestones=(max(1, spec.epochs * 7 // 10),),
        seed=spec.seed,
        progress=False,
        keep_checkpoints=1,
        # Six checkpoints a run: saving ResNet50 with its Adam state (about 290 MB, 2 s on the
        # CPU) after each of a per-domain run's 90 short epochs took 2/3 of its time on a GPU.
        checkpoint_period=max(1, spec.epochs // 6),
        **spec.train,
    )
    loader = build_train_loader(
        data,
        image_size=spec.image_size,
        num_identities=spec.batch[0],
        num_instances=spec.batch[1],
        balance_domains=spec.balance_domains,
        seed=spec.seed,
        num_workers=workers,
    )
    splits = build_eval_splits(data, image_size=spec.image_size, num_workers=workers)
    trainer = Trainer(
        model.to(device), DCSDLoss(**spec.loss), loader, config, folder / "train", data=data
    )
    resumed_at = trainer.resume()  # an interrupted run continues from its last checkpoint
    start = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - start
    metrics = evaluate_model(trainer.unwrapped_model, splits, device=device)
    result = {
        "spec": asdict(spec),
        "seconds": seconds,
        "ran_with": run_setup(device),
        "resumed_at_epoch": resumed_at,
        "train_loss": last_train_loss(folder / "train"),
        "metrics": {
            name: {"mAP": float(m["mAP"]) * 100, "rank1": float(m["cmc"][0]) * 100}
            for name, m in metrics.items()
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=1, default=list))
    os.replace(tmp, folder / "result.json")
    if ledger is not None:
        record_run(ledger, folder.name, result)
    return result
