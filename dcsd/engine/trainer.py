"""The joint-training loop: AMP, per-iteration schedule, atomic checkpoints, exact resume, DDP."""

from __future__ import annotations

import json
import math
import numbers
import os
import random
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from dcsd.data import MultiDomainDataset
from dcsd.manifest import MANIFEST_FILE
from dcsd.models.pretrained import save_model
from dcsd.models.registry import PretrainedCfg
from dcsd.validation import check_int

from .callbacks import Callback
from .checkpoint import (
    LATEST_FILE,
    STATE_FILE,
    load_latest_training_state,
    load_training_state,
    save_training_state,
)
from .distributed import DistributedContext, all_reduce_mean, barrier
from .knobs import averaged_model, knob_callbacks
from .optim import GENERATOR_GROUPS, OPTIMIZERS, build_optimizer, group_settings, optimizer_settings
from .run_lock import RunLock
from .schedule import SCHEDULES, build_scheduler

AMP_MODES = ("auto", "bf16", "fp16", "off")
NONFINITE_POLICIES = ("raise", "skip")
# Saved with each checkpoint; on resume these may change without a word (a longer run, quiet bars).
_FREELY_CHANGED = ("epochs", "progress", "eval_period", "keep_checkpoints", "checkpoint_period")
_RESUME_KEYS = ("optimizer", "scheduler", "scaler")
CALLBACKS_KEY = "callbacks"  # the callbacks' states in training_state.pt
# A resumed run must keep what gives the weights their meaning; each entry names the flag of
# examples/train_joint.py that sets it. Other model options have no flag (None).
_MODEL_FLAGS = {
    "architecture": "--model",
    "head": "--head",
    "factors": "--factors",
    "stop_gradient": "--no-stop-gradient",
    "detach_information_input": "--no-detach-information-input",
    "num_classes": "the identity count: --datasets, --synthetic-scale, --combineall",
    "num_domains": "--datasets",
    "num_cameras": "--datasets",
}
_DATA_FLAGS = "--datasets, their order, --synthetic-scale, --combineall"
# Saved with each checkpoint too; a change keeps the weights' meaning and is only named.
_SOFT_RUN_FLAGS = {"batch": "--batch"}
LOG_SET_ASIDE_SUFFIX = ".set-aside"
_MAX_SEED = 2**32


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or infinite loss or gradient."""


@dataclass
class TrainConfig:
    """Knobs of a training run; the defaults are BoT's recipe as DCSD trains it.

    Attributes:
        epochs: epochs to train.
        optimizer: ``"adam"`` (BoT), ``"adamw"`` or ``"sgd"`` (see
            :func:`dcsd.engine.build_optimizer`); used when the trainer is given no optimizer.
        lr: base learning rate.
        weight_decay: L2 penalty (Adam's ``weight_decay``, as fast-reid uses it).
        weight_decay_norm: weight decay of normalisation parameters, FilterNorm scales and
            biases (``None``: ``weight_decay``, as BoT).
        generator_lr_factor: learning-rate multiplier of the DCSD filter generators.
        generator_weight_decay: weight decay of the generators' weights (``None``:
            ``weight_decay``).
        warmup_epochs: linear warmup length, stepped per iteration.
        generator_warmup_epochs: warmup length of the DCSD filter generators (``None``:
            ``warmup_epochs``): fresh generators may warm up longer than a pretrained backbone.
        warmup_factor: learning-rate multiplier at the first iteration.
        milestones: epochs at which the learning rate is multiplied by ``gamma``.
        gamma: the step decay factor.
        amp: ``"auto"`` (bf16 on CUDA, off on CPU), ``"bf16"``, ``"fp16"`` (with a grad scaler)
            or ``"off"``.
        channels_last: feed images in channels_last memory format (CUDA speed).
        seed: every random generator is re-seeded from (seed, epoch, rank) at each epoch start,
            so a resumed run repeats an uninterrupted one exactly.
        eval_period: evaluate every this many epochs (0: only after the last epoch).
        keep_checkpoints: how many recent checkpoints to keep.
        checkpoint_period: save a checkpoint every this many epochs, and after the last one
            (1: every epoch). A resumed run starts from the last checkpoint and trains the
            epochs after it again; a larger period saves time where a save is long against
            an epoch (a ResNet50 with its Adam state is about 290 MB).
        progress: show tqdm progress bars (main process only).
        nonfinite: what a step whose loss or gradient is NaN or infinite does: ``"raise"``
            stops with :class:`NonFiniteLossError` naming the step and the loss parts (no
            checkpoint of that epoch is written); ``"skip"`` drops the step's update, as AMP's
            grad scaler does, and counts it in the epoch's ``skipped_steps``.
        schedule: ``"multistep"`` (warmup, then ``gamma`` at each of ``milestones``) or
            ``"cosine"`` (warmup times a cosine from ``lr`` to ``min_lr_factor * lr`` over
            ``epochs``); per-group warmups apply to both.
        min_lr_factor: the cosine schedule's final learning rate, as a fraction of ``lr``.
        clip_grad_norm: scale each step's gradients so their total L2 norm is at most this
            (``None``: no clipping); the logged ``grad_norm`` is the norm before clipping.
        freeze_epochs: train only the groups not in ``freeze_groups`` for this many epochs
            (:class:`dcsd.engine.knobs.FreezeGroups`), e.g. the fresh DCSD generators and heads
            on a pretrained backbone.
        freeze_groups: the model's parameter groups frozen during ``freeze_epochs``.
        ema_decay: keep an exponential moving average of the weights with this decay
            (:class:`dcsd.engine.knobs.ExponentialMovingAverage`), which is evaluated, exported
            and checkpointed; ``None``: off.
    """

    epochs: int = 120
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    weight_decay_norm: float | None = None
    generator_lr_factor: float = 1.0
    generator_weight_decay: float | None = None
    warmup_epochs: float = 10
    generator_warmup_epochs: float | None = None
    warmup_factor: float = 0.1
    milestones: tuple[int, ...] = (40, 90)
    gamma: float = 0.1
    amp: str = "auto"
    channels_last: bool = False
    seed: int = 0
    eval_period: int = 0
    keep_checkpoints: int = 2
    checkpoint_period: int = 1
    progress: bool = True
    nonfinite: str = "raise"
    schedule: str = "multistep"
    min_lr_factor: float = 0.0
    clip_grad_norm: float | None = None
    freeze_epochs: int = 0
    freeze_groups: tuple[str, ...] = ("backbone",)
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise ValueError(
                f"nonfinite must be one of {NONFINITE_POLICIES}, got {self.nonfinite!r}"
            )
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.keep_checkpoints < 1:
            raise ValueError(
                f"keep_checkpoints must be >= 1 (the newest checkpoint is what resume reads), "
                f"got {self.keep_checkpoints}"
            )
        if self.checkpoint_period < 1:
            raise ValueError(
                f"checkpoint_period must be >= 1 (1: every epoch), got {self.checkpoint_period}"
            )
        if self.eval_period < 0:
            raise ValueError(
                f"eval_period must be >= 0 (0: after the last epoch only), got {self.eval_period}"
            )
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ValueError(
                f"warmup_epochs must be a finite number >= 0, got {self.warmup_epochs}"
            )
        generator_warmup = self.generator_warmup_epochs
        if generator_warmup is not None and not (
            math.isfinite(generator_warmup) and generator_warmup >= 0
        ):
            raise ValueError(
                "generator_warmup_epochs must be None or a finite number >= 0, "
                f"got {generator_warmup}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        for name in ("gamma", "warmup_factor"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        milestones = [check_int("milestones", m, 1) for m in self.milestones]
        if any(b <= a for a, b in zip(milestones, milestones[1:], strict=False)):
            raise ValueError(f"milestones must be increasing epochs >= 1, got {milestones}")
        if check_int("seed", self.seed, 0) >= _MAX_SEED:
            raise ValueError(f"seed must be an int in 0..2**32-1, got {self.seed!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (isinstance(self.min_lr_factor, int | float) and 0 <= self.min_lr_factor <= 1):
            raise ValueError(f"min_lr_factor must be in [0, 1], got {self.min_lr_factor!r}")
        clip = self.clip_grad_norm
        if clip is not None and not (
            isinstance(clip, int | float) and math.isfinite(clip) and clip > 0
        ):
            raise ValueError(f"clip_grad_norm must be None or a finite number > 0, got {clip!r}")
        check_int("freeze_epochs", self.freeze_epochs, 0)
        if isinstance(self.freeze_groups, str) or not all(
            isinstance(name, str) for name in self.freeze_groups
        ):
            raise ValueError(
                f"freeze_groups must be a tuple of group names, got {self.freeze_groups!r}"
            )
        ema = self.ema_decay
        if ema is not None and not (isinstance(ema, int | float) and 0 < ema < 1):
            raise ValueError(f"ema_decay must be None or a number in (0, 1), got {ema!r}")


def _generator_warmup(optimizer: torch.optim.Optimizer, config: TrainConfig) -> dict[str, float]:
    """The generators' own warmup length for those of ``optimizer``'s groups that hold them."""
    if config.generator_warmup_epochs is None:
        return {}
    names = {group.get("name") for group in optimizer.param_groups}
    return {name: config.generator_warmup_epochs for name in GENERATOR_GROUPS if name in names}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries still draw from the legacy global
    torch.manual_seed(seed)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def _json_ready(value: Any) -> Any:
    """Plain JSON values: NumPy arrays and scalars as lists and numbers, NaN and inf as null."""
    if isinstance(value, np.ndarray | np.generic):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _same_setting(a: Any, b: Any) -> bool:
    """Compare config values as saved (tuples may come back as lists)."""
    return json.dumps(_json_ready(a)) == json.dumps(_json_ready(b))


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


EvaluateFn = Callable[[torch.nn.Module], dict[str, dict[str, Any]]]


class Trainer:
    """Trains a ReID model with a loss of ``(output, pids, domains, camids) -> (total, parts)``.

    The loader yields dict batches with ``image``, ``pid``, ``camid`` and ``domain``; its batch
    sampler must offer ``set_epoch``. Checkpoints go to ``out_dir/checkpoints``, one JSON line per
    epoch to ``out_dir/log.jsonl``. An epoch's checkpoint (every ``checkpoint_period`` epochs and
    after the last) is written before the epoch is evaluated.

    Every checkpoint and the exported model carry the card of the weights trained
    (:meth:`trained_card`: datasets in domain order, cameras, image size, recipe, measured
    metrics), so a trained model reloads knowing what it is.

    ``out_dir`` must be a writable folder (checked here). A run started without :meth:`resume`
    in a folder that holds a run's checkpoints or log refuses to start, unless ``overwrite``.

    Args:
        model: the ReID model (wrapped in DDP here when the context is distributed).
        criterion: the loss, e.g. :class:`dcsd.losses.DCSDLoss`.
        train_loader: the training DataLoader.
        config: the run's :class:`TrainConfig`.
        out_dir: where checkpoints and the log go.
        context: from :func:`dcsd.engine.init_distributed`; ``None`` means one process on the
            model's device.
        evaluate: called with the unwrapped model on the main process; returns per-dataset
            metrics that are logged.
        optimizer: the optimizer over the model's parameters; default
            :func:`dcsd.engine.build_optimizer` from the config's optimizer fields.
        scheduler: a learning-rate scheduler of ``optimizer``, stepped once per iteration
            (needs ``optimizer``); default: the config's warmup and step schedule
            (:func:`dcsd.engine.build_scheduler`) over the optimizer's parameter groups. Its
            state is checkpointed and resumed like the built one's; a changed ``lr`` on resume
            is only named then (a scheduler passed in owns the rates).
        overwrite: a fresh run (no :meth:`resume`) in a used ``out_dir`` deletes its
            checkpoints and log first instead of refusing to start.
        data: the training data the loader reads; when given, the model's identity classifier
            and its DCSD domain / camera classifiers must have ``data.model_kwargs()``'s sizes
            (checked once, here). Build the model with ``**data.model_kwargs()``.
        callbacks: :class:`~dcsd.engine.Callback` objects called at the loop's moments, in
            this order (policies such as logging, freezing and EMA); their states are
            checkpointed and resumed.

    Raises:
        ValueError: a head of the model does not match ``data`` (the message names both
            numbers), or the loader yields no batch.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        criterion: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]],
        train_loader: Iterable[dict[str, Any]],
        config: TrainConfig,
        out_dir: str | Path,
        context: DistributedContext | None = None,
        evaluate: EvaluateFn | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        overwrite: bool = False,
        data: MultiDomainDataset | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        callbacks = tuple(callbacks)
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(
                    f"callbacks must be dcsd.engine.Callback objects, got {type(callback).__name__}"
                )
        self.callbacks = callbacks
        if data is not None:
            check_model_fits_data(model, data)
        device = next(model.parameters()).device
        self.context = context or DistributedContext(0, 1, 0, device)
        self.config = config
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "log.jsonl"
        self.model_dir = self.out_dir / "model"
        self.overwrite = overwrite
        self.data = data
        self._resume_requested = False
        self._position = (0, 0)  # (epoch, step) of the step under way, for error messages
        self._grad_norm: torch.Tensor | None = None  # the last step's, for on_step_end
        self._input_size: tuple[int, ...] | None = None  # (C, H, W) of the batches trained on
        self._saved_input_size: list[int] | None = None  # the resumed checkpoint's
        self._weights_epoch = 0  # epochs trained into the model's weights
        self._evaluation: tuple[int, dict[str, Any]] | None = None  # (epoch, metrics), last
        # The card of the weights training starts from: the trained card names it as the start.
        self._start_card = getattr(model, "pretrained_cfg", None)
        if self.context.is_main:
            _check_writable_folder(self.out_dir)
        # One run per folder: taken by resume() or fit(), held until fit() ends.
        self._lock = RunLock(self.out_dir) if self.context.is_main else None
        self.train_loader = train_loader
        self.criterion = criterion
        self.evaluate = evaluate
        self.device = self.context.device
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.context.is_distributed:
            if config.freeze_epochs:
                raise ValueError(
                    "freeze_epochs is not supported under DDP (DistributedDataParallel fixes "
                    "the parameters it reduces when it is built): train the first epochs "
                    "frozen in one process, or drop freeze_epochs"
                )
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=device_ids)
        # The config's knobs that are callbacks come first; their states are checkpointed too.
        self.callbacks = (*knob_callbacks(config, self.unwrapped_model), *self.callbacks)
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        self.optimizer = optimizer or build_optimizer(
            self.model, name=config.optimizer, **optimizer_settings(config)
        )
        self.optimizer_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.iters_per_epoch = len(train_loader)
        if self.iters_per_epoch < 1:
            raise ValueError("train_loader yields no batch: too few identities for P x K batches")
        if scheduler is not None and (optimizer is None or scheduler.optimizer is not optimizer):
            raise ValueError(
                "scheduler must schedule the optimizer passed with it: pass optimizer= and a "
                "scheduler built on that optimizer"
            )
        # Only the schedule built here follows the config's rates on resume.
        self._built_scheduler = scheduler is None
        self.scheduler = scheduler or build_scheduler(
            self.optimizer,
            self.iters_per_epoch,
            config.warmup_epochs,
            config.milestones,
            config.gamma,
            config.warmup_factor,
            group_warmup_epochs=_generator_warmup(self.optimizer, config),
            schedule=config.schedule,
            total_epochs=config.epochs,
            min_lr_factor=config.min_lr_factor,
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.start_epoch = 0

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without its DDP wrapper."""
        return _unwrap(self.model)

    @property
    def inference_model(self) -> torch.nn.Module:
        """What is evaluated and exported: the moving average of the weights with
        ``ema_decay``, else the model trained (without its DDP wrapper)."""
        average = averaged_model(self.callbacks)
        return average if average is not None else self.unwrapped_model

    def resume(self, path: str | Path | None = None) -> int:
        """Load the latest checkpoint of this run (or ``path``); returns the epoch to start at.

        Takes the output folder's run lock (held until :meth:`fit` ends). Returns 0, and
        changes nothing, when the run has no checkpoint yet. Without ``path``, a damaged latest
        checkpoint is passed over for the newest whole one, with a warning. The config's ``lr``
        and ``weight_decay`` apply even when the checkpoint was trained with others; every
        setting that differs from the checkpoint's is named in a warning.

        Raises:
            RunLockedError: another run holds the output folder.
            ValueError: the checkpoint is damaged (``path``), none is whole, its training
                state lacks the optimizer, scheduler or scaler (the message names the file), or
                it was trained with another model, head, factors or other datasets (their order
                and identity counts included): the message names the setting, its flag and the
                saved value.
        """
        self._resume_requested = True
        self._take_lock()
        try:
            return self._resume(path)
        except BaseException:
            self._release_lock()
            raise

    def _resume(self, path: str | Path | None) -> int:
        self._check_output_tree()
        if path is None:
            checkpoint = load_latest_training_state(self.checkpoint_dir)
            if checkpoint is None:
                return 0
        else:
            checkpoint = load_training_state(path)
        state = checkpoint.training_state
        missing = [key for key in _RESUME_KEYS if key not in state]
        if missing:
            raise ValueError(
                f"{checkpoint.path / STATE_FILE} lacks {missing}: it cannot resume training "
                f"(it needs {list(_RESUME_KEYS)}); load its model with dcsd.load_model instead"
            )
        soft_changes = self._check_same_run(checkpoint.path, state.get("run", {}))
        self._check_same_tensors(checkpoint.path, checkpoint.model_state)
        self.unwrapped_model.load_state_dict(checkpoint.model_state)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self._load_callback_states(checkpoint.path, state.get(CALLBACKS_KEY, []))
        self._apply_changed_settings(checkpoint.path, state.get("config", {}), soft_changes)
        self.start_epoch = self._weights_epoch = checkpoint.epoch
        saved_size = state.get("run", {}).get("input_size")
        self._saved_input_size = list(saved_size) if isinstance(saved_size, list) else None
        return self.start_epoch

    def _callback_states(self) -> list[list[Any]]:
        """``[class name, state]`` of each callback, in order."""
        return [[type(c).__qualname__, c.state_dict()] for c in self.callbacks]

    def _load_callback_states(self, path: Path, saved: Any) -> None:
        """Give each callback its checkpointed state (matched by class name, in order); refuse a
        checkpoint whose states belong to other callbacks, or that lacks one a callback has."""
        pending: dict[str, list[Any]] = {}
        for entry in saved if isinstance(saved, list) else ():
            if isinstance(entry, list | tuple) and len(entry) == 2:
                pending.setdefault(str(entry[0]), []).append(entry[1])
        problems = []
        for callback in self.callbacks:
            name = type(callback).__qualname__
            states = pending.get(name)
            if states:
                callback.load_state_dict(states.pop(0))
            elif callback.state_dict():
                problems.append(f"it holds no state of the callback {name}")
        problems += [
            f"it holds the state of a callback {name} this run does not have"
            for name, states in pending.items()
            for state in states
            if state
        ]
        if problems:
            raise ValueError(
                f"cannot resume {path / STATE_FILE}: " + "; ".join(problems) + ". Resume with the "
                "checkpoint's callbacks, or start a new run"
            )

    def _run_identity(self) -> dict[str, Any]:
        """What gives the weights their meaning (model options; datasets in domain order with
        their identity and camera counts) and what does not (batch, image size)."""
        model = self.unwrapped_model
        run: dict[str, Any] = {}
        if isinstance(getattr(model, "config", None), dict):
            run["model"] = _json_ready(dict(model.config))
        if self.data is not None:
            run["datasets"] = [
                [d.name, d.num_train_pids, d.num_cameras] for d in self.data.datasets
            ]
        sampler = getattr(self.train_loader, "batch_sampler", None)
        if hasattr(sampler, "num_identities") and hasattr(sampler, "num_instances"):
            run["batch"] = [sampler.num_identities, sampler.num_instances]
        if self._input_size is not None:
            run["input_size"] = list(self._input_size)
        return run

    def _check_same_run(self, path: Path, saved: dict[str, Any]) -> list[str]:
        """Refuse a checkpoint whose weights mean something else; returns the harmless changes
        (batch, image size) for the settings warning."""
        current = self._run_identity()
        refused = []
        saved_model, model = saved.get("model"), current.get("model")
        if isinstance(saved_model, dict) and model is not None:
            for key in sorted(saved_model.keys() | model.keys()):
                if not _same_setting(saved_model.get(key), model.get(key)):
                    flag = _MODEL_FLAGS.get(key)
                    in_checkpoint = (
                        repr(saved_model[key])
                        if key in saved_model
                        else "none (saved before this setting existed)"
                    )
                    refused.append(
                        f"{key}{f' ({flag})' if flag else ''}: checkpoint {in_checkpoint}, "
                        f"this run {model.get(key)!r}"
                    )
        if "datasets" in saved and "datasets" in current:
            if not _same_setting(saved["datasets"], current["datasets"]):
                refused.append(
                    f"datasets as [name, identities, cameras] in domain order ({_DATA_FLAGS}): "
                    f"checkpoint {saved['datasets']}, this run {current['datasets']}"
                )
        if refused:
            raise ValueError(
                f"cannot resume {path}: it was trained with other settings that give its "
                "weights their meaning (classifier rows, domain and camera heads): "
                + "; ".join(refused)
                + ". Resume with the checkpoint's settings, or start a new run (another folder, "
                "or --overwrite)"
            )
        return [
            f"{key} ({flag}) {saved[key]!r} -> {current[key]!r}"
            for key, flag in _SOFT_RUN_FLAGS.items()
            if key in saved and key in current and not _same_setting(saved[key], current[key])
        ]

    def _check_same_tensors(self, path: Path, state: dict[str, torch.Tensor]) -> None:
        """Name a model that does not fit the checkpoint in a few words, not load_state_dict's
        list of hundreds of keys."""
        own = self.unwrapped_model.state_dict()
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        reshaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
        if missing or unexpected or reshaped:
            parts = [
                f"{len(keys)} {what} (e.g. {keys[0]})"
                for what, keys in (
                    ("tensors missing from the checkpoint", missing),
                    ("tensors the model lacks", unexpected),
                    ("tensors of other shapes", reshaped),
                )
                if keys
            ]
            raise ValueError(
                f"cannot resume {path}: its weights are not this model's ({', '.join(parts)}); "
                "was it trained with another --model, --head or --factors? Resume with the "
                "checkpoint's model, or start a new run"
            )

    def _apply_changed_settings(
        self, path: Path, saved: dict[str, Any], changed_data: list[str]
    ) -> None:
        """Make the current lr and weight decay rule (the checkpoint's optimizer holds its own)."""
        current = asdict(self.config)
        changed = changed_data + [
            f"{key} {saved[key]!r} -> {current[key]!r}"
            for key in sorted(saved.keys() & current.keys())
            if key not in _FREELY_CHANGED and not _same_setting(saved[key], current[key])
        ]
        settings = group_settings(**optimizer_settings(self.config))
        built = self._built_scheduler
        for index, group in enumerate(self.optimizer.param_groups if built else ()):
            # Groups of an optimizer passed in by the user keep the rates they were loaded with.
            lr, weight_decay = settings.get(group.get("name"), (group["initial_lr"], None))
            self.scheduler.base_lrs[index] = group["initial_lr"] = lr
            group["lr"] = lr * self.scheduler.lr_lambdas[index](self.scheduler.last_epoch)
            if weight_decay is not None:
                group["weight_decay"] = weight_decay
        if changed and self.context.is_main:
            warnings.warn(
                f"resuming {path} with settings that differ from the checkpoint's: "
                + ", ".join(changed)
                + "; the new values apply from here on",
                RuntimeWarning,
                stacklevel=3,
            )

    def _training_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": asdict(self.config),
            "run": self._run_identity(),
            CALLBACKS_KEY: self._callback_states(),
        }

    def _take_lock(self) -> None:
        if self._lock is not None:
            self._lock.acquire()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def _run_entries(self) -> dict[Path, str]:
        """The run's own entries of ``out_dir`` and the kind each must be."""
        return {self.checkpoint_dir: "folder", self.model_dir: "folder", self.log_path: "file"}

    def _misplaced_entries(self) -> list[str]:
        """The run's entries that are symlinks or of the wrong kind, described."""
        found = []
        for path, kind in self._run_entries().items():
            if path.is_symlink():
                found.append(f"{path.name} (a symlink to {os.readlink(path)})")
            elif path.exists() and (path.is_dir() if kind == "folder" else path.is_file()) is False:
                found.append(f"{path.name} (not a {'folder' if kind == 'folder' else 'file'})")
        return found

    def _check_output_tree(self) -> None:
        """Before any training: the run's entries are what the run writes, and none is a
        symlink, which would take checkpoints (or a fall-back) out of the run."""
        if not self.context.is_main:
            return
        misplaced = self._misplaced_entries()
        if misplaced:
            raise FileExistsError(
                f"{self.out_dir} holds {', '.join(misplaced)} where the run keeps its own: "
                "a run never follows a symlink out of its folder. Move it away, or start over "
                "with overwrite=True (--overwrite), which removes the link, not its target"
            )

    def _claim_out_dir(self) -> None:
        """Refuse (or, with ``overwrite``, clear) a used folder when starting a fresh run."""
        if self._resume_requested:
            self._check_output_tree()
            return
        used = self._misplaced_entries()
        if self.checkpoint_dir.is_dir() and not self.checkpoint_dir.is_symlink():
            used += sorted(p.name for p in self.checkpoint_dir.glob("epoch_*"))
            if os.path.lexists(self.checkpoint_dir / LATEST_FILE):
                used.append(LATEST_FILE)
        if self.log_path.is_file() and self.log_path.stat().st_size > 0:
            used.append(self.log_path.name)
        if self.model_dir.is_dir():
            used.append(self.model_dir.name)
        if not used:
            return
        if not self.overwrite:
            raise FileExistsError(
                f"{self.out_dir} holds a run ({', '.join(dict.fromkeys(used))}): resume it "
                "(Trainer.resume(), --resume), or start over with overwrite=True (--overwrite), "
                "which deletes its checkpoints, log and exported model, or pick another folder"
            )
        barrier()
        if self.context.is_main:
            for path in self._run_entries():
                _remove_in_place(path)
        barrier()

    def _repair_log(self) -> None:
        """On resume: keep one line per epoch up to the resumed one (whose line belongs to the
        weights resumed), and set aside a torn line, lines of epochs after it (trained after the
        last checkpoint, or a fall-back past a damaged one: they are trained again), and lines
        of another run, saying so."""
        if not self.context.is_main or not self.log_path.is_file():
            return
        lines = self.log_path.read_bytes().split(b"\n")
        kept: dict[int, bytes] = {}
        aside: list[bytes] = []
        for line in lines:
            if not line.strip():
                continue
            try:
                epoch = json.loads(line)["epoch"]
                fits = type(epoch) is int and 1 <= epoch <= self.start_epoch
            except (ValueError, KeyError, TypeError, RecursionError):
                fits = False
            if not fits:
                aside.append(line)
                continue
            if epoch in kept:
                aside.append(kept.pop(epoch))
            kept[epoch] = line
        repaired = b"".join(kept[epoch] + b"\n" for epoch in sorted(kept))
        if repaired == self.log_path.read_bytes():
            return
        set_aside = self.log_path.with_name(self.log_path.name + LOG_SET_ASIDE_SUFFIX)
        with set_aside.open("ab") as handle:
            handle.write(b"".join(line + b"\n" for line in aside))
        tmp = self.log_path.with_name(f".{self.log_path.name}.tmp")
        tmp.write_bytes(repaired)
        os.replace(tmp, self.log_path)
        warnings.warn(
            f"{self.log_path}: kept one line per epoch up to the resumed epoch "
            f"{self.start_epoch} ({len(kept)} lines); set {len(aside)} other line(s) aside in "
            f"{set_aside} (a torn last line, epochs after the resumed one, or repeats)",
            RuntimeWarning,
            stacklevel=3,
        )

    def export_model(self) -> Path:
        """Write the trained model as a model folder, ``out_dir/model/`` (``config.json`` +
        ``model.safetensors``, what ``dcsd.load_model`` and the Hub upload read) with the run's
        ``train_config.json`` beside them and ``manifest.json`` over all three, which
        ``load_model`` verifies. Only the main process writes, and without waiting
        for the others: call it on the main process (as ``train_joint.py`` does), or put a
        barrier after it before other ranks read the folder. Part of the run: a fresh run in
        the same folder refuses it, ``overwrite`` deletes it.

        Returns:
            The folder.
        """
        self._write_card()
        if self.context.is_main:
            self.model_dir.mkdir(parents=True, exist_ok=True)
            (self.model_dir / MANIFEST_FILE).unlink(missing_ok=True)
            config = json.dumps(_json_ready(asdict(self.config)), indent=2) + "\n"
            (self.model_dir / "train_config.json").write_text(config)
            # Last: its manifest covers train_config.json too.
            save_model(self.inference_model, self.model_dir)
        return self.model_dir

    def trained_card(self) -> PretrainedCfg | None:
        """The card of the weights trained so far (``None`` for a model without a card): its
        start's card :meth:`~dcsd.models.PretrainedCfg.trained_on` the training data in domain
        order (``data``), its global cameras, the image size of the batches trained on, the
        recipe (the config, the batch, the callbacks) and the metrics measured by ``evaluate``
        on these very weights (none when the last evaluation was of an earlier epoch)."""
        start = self._start_card
        if not isinstance(start, PretrainedCfg):
            return None
        data = self.data
        size = self._input_size or start.input_size
        recipe = {
            "train_config": _json_ready(asdict(self.config)),
            "batch": self._run_identity().get("batch"),
            "callbacks": [type(callback).__qualname__ for callback in self.callbacks],
            "epochs_trained": self._weights_epoch,
        }
        metrics: dict[str, dict[str, float]] = {}
        source = ""
        if self._evaluation is not None and self._evaluation[0] == self._weights_epoch:
            metrics = _card_metrics(self._evaluation[1])
            source = (
                f"measured by the trainer's evaluate after epoch {self._weights_epoch} (mAP and "
                "rank1 in %, on each dataset's test query and gallery)"
            )
        return start.trained_on(
            data.domain_names if data is not None else (),
            data.num_cameras if data is not None else 0,
            input_size=size,
            metrics=metrics,
            metrics_source=source,
            recipe=recipe,
        )

    def _write_card(self) -> None:
        card = self.trained_card()
        if card is not None:
            self.unwrapped_model.pretrained_cfg = card
            self.inference_model.pretrained_cfg = card

    def fit(self) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` to ``config.epochs``; returns the epochs' log records.

        Holds the output folder's run lock throughout (another run in the folder is refused
        at once, :class:`RunLockedError`, naming its process), and checks the folder before
        the first epoch.
        """
        self._take_lock()
        try:
            self._claim_out_dir()
            if self._resume_requested:
                self._repair_log()
            return self._fit()
        finally:
            self._release_lock()

    def _fit(self) -> list[dict[str, Any]]:
        records = []
        for callback in self.callbacks:
            callback.on_fit_begin(self)
        for epoch in range(self.start_epoch, self.config.epochs):
            seed_everything(self.config.seed + 1000 * epoch + self.context.rank)
            batch_sampler = getattr(self.train_loader, "batch_sampler", None)
            if hasattr(batch_sampler, "set_epoch"):
                batch_sampler.set_epoch(epoch)
            for callback in self.callbacks:
                callback.on_epoch_begin(self, epoch)
            logs = self.train_one_epoch(epoch)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
            record = {"epoch": epoch + 1, **logs}
            self._weights_epoch = epoch + 1
            self._write_card()
            last = epoch + 1 == self.config.epochs
            if last or (epoch + 1) % self.config.checkpoint_period == 0:
                if self.context.is_main:
                    save_training_state(
                        self.checkpoint_dir,
                        self.unwrapped_model,
                        self._training_state(epoch + 1),
                        keep=self.config.keep_checkpoints,
                    )
                barrier()
            period = self.config.eval_period
            if self.evaluate is not None and (last or (period and (epoch + 1) % period == 0)):
                if self.context.is_main:
                    try:
                        record["eval"] = self.evaluate(self.inference_model)
                        self._evaluation = (epoch + 1, record["eval"])
                    except Exception as error:
                        self._log(record | {"eval_error": repr(error)})
                        raise
                    for callback in self.callbacks:
                        callback.after_evaluation(self, epoch, record["eval"])
                barrier()
            if self.context.is_main:
                self._log(record)
            records.append(record)
        for callback in self.callbacks:
            callback.on_fit_end(self)
        return records

    def _log(self, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(json.dumps(_json_ready(record), allow_nan=False) + "\n")

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the loader; returns mean loss parts, the last lr and images/s.

        Loss parts are averaged over the steps taken; ``skipped_steps`` counts the non-finite
        steps dropped under ``nonfinite="skip"``.
        """
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        num_images = 0
        taken = 0
        start = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not (self.config.progress and self.context.is_main),
            leave=False,
        )
        for step, batch in enumerate(bar):
            self._position = (epoch, step)
            for callback in self.callbacks:
                callback.on_step_begin(self, step)
            step_start = time.perf_counter()
            parts = self.train_step(batch)
            if parts is None:
                continue
            taken += 1
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            num_images += batch["image"].shape[0]
            now = time.perf_counter()
            elapsed = now - start
            if self.callbacks:
                logs = self._step_logs(parts, batch["image"].shape[0], now - step_start)
                for callback in self.callbacks:
                    callback.on_step_end(self, step, logs)
            if bar.disable:
                continue
            bar.set_postfix(
                {name: f"{value.item():.3f}" for name, value in parts.items()}
                | {
                    "lr": f"{self.optimizer.param_groups[0]['lr']:.2e}",
                    "img/s": f"{num_images * self.context.world_size / elapsed:.1f}",
                }
            )
        elapsed = time.perf_counter() - start
        if taken == 0:
            raise NonFiniteLossError(
                f"every step of epoch {epoch + 1} was non-finite and skipped: training is not "
                "progressing; lower the learning rate or check the inputs"
            )
        means = {name: all_reduce_mean(total / taken).item() for name, total in sums.items()}
        return {
            **means,
            "skipped_steps": self.iters_per_epoch - taken,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": num_images * self.context.world_size / elapsed,
            "seconds": elapsed,
        }

    def _note_input_size(self, size: tuple[int, ...]) -> None:
        """Record the image size trained on (for the card); name a change on resume (only a
        step shows it: the loader's transforms decide it)."""
        self._input_size = size
        saved = self._saved_input_size
        if saved is not None and saved != list(size) and self.context.is_main:
            warnings.warn(
                f"resumed with another image size (--image-size): the checkpoint was trained on "
                f"{saved}, this run feeds {list(size)}; the new size applies from here on",
                RuntimeWarning,
                stacklevel=3,
            )

    def _step_logs(
        self, parts: dict[str, torch.Tensor], images: int, seconds: float
    ) -> dict[str, float]:
        """What :meth:`Callback.on_step_end` receives (one host sync for all values)."""
        names = list(parts)
        values = torch.stack([parts[name].float() for name in names]).tolist()
        logs = dict(zip(names, values, strict=True))
        for index, group in enumerate(self.optimizer.param_groups):
            logs[f"lr/{group.get('name', index)}"] = float(group["lr"])
        logs["images_per_s"] = images * self.context.world_size / max(seconds, 1e-9)
        if self._grad_norm is not None:
            logs["grad_norm"] = float(self._grad_norm)
        return logs

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor] | None:
        """Forward, loss, backward and optimizer step on one batch; returns detached parts.

        A NaN or infinite loss or gradient raises :class:`NonFiniteLossError`, or with
        ``nonfinite="skip"`` drops the update and returns ``None``. The check costs one host
        sync per step.
        """
        images = batch["image"].to(self.device, non_blocking=True)
        if self._input_size is None:
            self._note_input_size(tuple(images.shape[1:]))
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        pids = batch["pid"].to(self.device, non_blocking=True)
        domains = batch["domain"].to(self.device, non_blocking=True)
        camids = batch["camid"].to(self.device, non_blocking=True)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else nullcontext()
        )
        # A skipped step must not leave its batch in BatchNorm's running statistics either.
        skip = self.config.nonfinite == "skip"
        buffers = [b.detach().clone() for b in self.model.buffers()] if skip else []
        with autocast:
            output = self.model(images)
        loss, parts = self.criterion(output, pids, domains, camids)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        finite = torch.isfinite(loss.detach())
        grad_norm = None
        if not self.scaler.is_enabled():
            # With fp16 the scaler itself skips steps whose scaled gradients overflow.
            grads = [p.grad for p in self.optimizer_params if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads)
            finite = finite & torch.isfinite(grad_norm)
        elif self.config.clip_grad_norm is not None:
            # The scaler's gradients are scaled: unscale them first to clip them.
            self.scaler.unscale_(self.optimizer)
            grads = [p.grad for p in self.optimizer_params if p.grad is not None]
            grad_norm = torch.nn.utils.get_total_norm(grads)
        if self.config.clip_grad_norm is not None:
            # Scales the .grad of the parameters given, by max_norm / grad_norm when below 1.
            with_grads = [p for p in self.optimizer_params if p.grad is not None]
            torch.nn.utils.clip_grads_with_norm_(with_grads, self.config.clip_grad_norm, grad_norm)
        if self.context.is_distributed:
            finite = finite.to(torch.int32)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        self._grad_norm = grad_norm
        if not bool(finite):
            self._non_finite_step(batch, loss, parts, grad_norm)
            for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                buffer.copy_(saved)
            self.optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():
                # The schedule counts iterations, skipped ones too (as with AMP's grad scaler).
                warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step")
                self.scheduler.step()
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}

    def _non_finite_step(
        self,
        batch: dict[str, Any],
        loss: torch.Tensor,
        parts: dict[str, torch.Tensor],
        grad_norm: torch.Tensor | None,
    ) -> None:
        """Raise (or, under ``nonfinite="skip"``, warn) naming the step, parts and inputs."""
        epoch, step = self._position
        values = {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
        described = ", ".join(f"{name} {float(value):.4g}" for name, value in values.items())
        if grad_norm is not None:
            described += f"; gradient norm {float(grad_norm):.4g}"
        images = batch["image"]
        bad_images = (~torch.isfinite(images.flatten(1)).all(dim=1)).nonzero().flatten().tolist()
        inputs = ""
        if bad_images:
            paths = batch.get("path")
            names = [paths[i] for i in bad_images] if paths is not None else bad_images
            inputs = f"; the input batch holds NaN/inf in image(s) {names[:4]}"
        where = (
            f"epoch {epoch + 1}, step {step + 1}/{self.iters_per_epoch} "
            f"(iteration {epoch * self.iters_per_epoch + step + 1})"
        )
        if self.config.nonfinite == "skip":
            warnings.warn(
                f"skipped a non-finite step at {where}: {described}{inputs}",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        raise NonFiniteLossError(
            f"non-finite loss or gradient at {where}: {described}{inputs}. No checkpoint of this "
            "epoch was written; the previous ones are intact. Lower the learning rate (--lr), "
            "check the inputs, then resume (--resume), or skip such steps with "
            "TrainConfig(nonfinite='skip') (--nonfinite skip)"
        )


def _card_metrics(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``evaluate``'s per-dataset results (mAP and CMC as fractions) as a card's metrics:
    ``{dataset: {"mAP": %, "rank1": %}}``, for the datasets and metrics it reports."""
    metrics: dict[str, dict[str, float]] = {}
    for name, values in results.items():
        if not isinstance(values, dict):
            continue
        entry: dict[str, float] = {}
        if isinstance(values.get("mAP"), numbers.Real):
            entry["mAP"] = 100 * float(values["mAP"])
        cmc = values.get("cmc")
        if cmc is not None and len(cmc) > 0:
            entry["rank1"] = 100 * float(cmc[0])
        if entry:
            metrics[str(name)] = entry
    return metrics


# model.heads() name -> the MultiDomainDataset.model_kwargs() size it must equal.
_HEAD_SIZES = {"identity": "num_classes", "domain": "num_domains", "camera": "num_cameras"}


def check_model_fits_data(model: torch.nn.Module, data: MultiDomainDataset) -> None:
    """Raise unless the model's heads are sized for ``data`` (see ``data.model_kwargs()``).

    Asks ``model.heads()`` (head name -> output size: ``identity``, ``domain``, ``camera``;
    a static model has no domain or camera heads); a model without that method is checked on
    its ``num_classes`` alone, when it has one.

    Raises:
        ValueError: naming each head whose size differs, the model's and the data's numbers.
    """
    wanted = data.model_kwargs()
    model = _unwrap(model)
    if hasattr(model, "heads"):
        heads = dict(model.heads())
    elif hasattr(model, "num_classes"):
        heads = {"identity": model.num_classes}
    else:
        heads = {}
    problems = [
        f"{_HEAD_SIZES[head]}: the model has {size}, the training data has "
        f"{wanted[_HEAD_SIZES[head]]}"
        for head, size in heads.items()
        if head in _HEAD_SIZES and size != wanted[_HEAD_SIZES[head]]
    ]
    if problems:
        raise ValueError(
            "the model's heads do not match the training data ("
            + "; ".join(problems)
            + "); build the model with **data.model_kwargs()"
        )


def _remove_in_place(path: Path) -> None:
    """Delete a run's entry without following a symlink: a link is removed, not its target."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _check_writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed and prove it takes files, before any training is done."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"out_dir {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PermissionError(f"out_dir {folder} is not writable: {error}") from error
