"""The joint-training loop: AMP, per-iteration schedule, atomic checkpoints, exact resume, DDP."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from .distributed import DistributedContext, all_reduce_mean, barrier
from .optim import OPTIMIZERS, build_optimizer
from .schedule import build_scheduler

AMP_MODES = ("auto", "bf16", "fp16", "off")


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
        progress: show tqdm progress bars (main process only).
    """

    epochs: int = 120
    optimizer: str = "adam"
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    weight_decay_norm: float | None = None
    generator_lr_factor: float = 1.0
    generator_weight_decay: float | None = None
    warmup_epochs: float = 10
    warmup_factor: float = 0.1
    milestones: tuple[int, ...] = (40, 90)
    gamma: float = 0.1
    amp: str = "auto"
    channels_last: bool = False
    seed: int = 0
    eval_period: int = 0
    keep_checkpoints: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries still draw from the legacy global
    torch.manual_seed(seed)


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[mode]


def _json_value(value: Any) -> Any:
    """NumPy arrays and scalars (CMC curves, metrics) as plain JSON values."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"cannot log a {type(value).__name__}")


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


EvaluateFn = Callable[[torch.nn.Module], dict[str, dict[str, Any]]]


class Trainer:
    """Trains a ReID model with a loss of ``(output, pids, domains, camids) -> (total, parts)``.

    The loader yields dict batches with ``image``, ``pid``, ``camid`` and ``domain``; its batch
    sampler must offer ``set_epoch``. Checkpoints go to ``out_dir/checkpoints``, one JSON line per
    epoch to ``out_dir/log.jsonl``.

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
            :func:`dcsd.engine.build_optimizer` from the config's optimizer fields. The
            scheduler (warmup, milestones) is always built here over its parameter groups.
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
    ) -> None:
        device = next(model.parameters()).device
        self.context = context or DistributedContext(0, 1, 0, device)
        self.config = config
        self.out_dir = Path(out_dir)
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.log_path = self.out_dir / "log.jsonl"
        self.train_loader = train_loader
        self.criterion = criterion
        self.evaluate = evaluate
        self.device = self.context.device
        self.model = model.to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.context.is_distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=device_ids)
        self.amp_dtype = _amp_dtype(config.amp, self.device)
        self.optimizer = optimizer or build_optimizer(
            self.model,
            name=config.optimizer,
            lr=config.lr,
            weight_decay=config.weight_decay,
            weight_decay_norm=config.weight_decay_norm,
            generator_lr_factor=config.generator_lr_factor,
            generator_weight_decay=config.generator_weight_decay,
        )
        self.iters_per_epoch = len(train_loader)
        if self.iters_per_epoch < 1:
            raise ValueError("train_loader yields no batch: too few identities for P x K batches")
        self.scheduler = build_scheduler(
            self.optimizer,
            self.iters_per_epoch,
            config.warmup_epochs,
            config.milestones,
            config.gamma,
            config.warmup_factor,
        )
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16
        )
        self.start_epoch = 0

    @property
    def unwrapped_model(self) -> torch.nn.Module:
        """The model without its DDP wrapper."""
        return _unwrap(self.model)

    def resume(self, path: str | Path | None = None) -> int:
        """Load the latest checkpoint of this run (or ``path``); returns the epoch to start at.

        Returns 0, and changes nothing, when the run has no checkpoint yet.
        """
        if path is None:
            path = latest_checkpoint(self.checkpoint_dir)
            if path is None:
                return 0
        checkpoint = load_checkpoint(path)
        self.unwrapped_model.load_state_dict(checkpoint.model_state)
        state = checkpoint.training_state
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = checkpoint.epoch
        return self.start_epoch

    def _training_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def fit(self) -> list[dict[str, Any]]:
        """Train from ``start_epoch`` to ``config.epochs``; returns the epochs' log records."""
        records = []
        for epoch in range(self.start_epoch, self.config.epochs):
            seed_everything(self.config.seed + 1000 * epoch + self.context.rank)
            batch_sampler = getattr(self.train_loader, "batch_sampler", None)
            if hasattr(batch_sampler, "set_epoch"):
                batch_sampler.set_epoch(epoch)
            record = {"epoch": epoch + 1, **self.train_one_epoch(epoch)}
            last = epoch + 1 == self.config.epochs
            period = self.config.eval_period
            if self.evaluate is not None and (last or (period and (epoch + 1) % period == 0)):
                if self.context.is_main:
                    record["eval"] = self.evaluate(self.unwrapped_model)
                barrier()
            if self.context.is_main:
                save_checkpoint(
                    self.checkpoint_dir,
                    self.unwrapped_model,
                    self._training_state(epoch + 1),
                    keep=self.config.keep_checkpoints,
                )
                self._log(record)
            barrier()
            records.append(record)
        return records

    def _log(self, record: dict[str, Any]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(json.dumps(record, default=_json_value) + "\n")

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the loader; returns mean loss parts, the last lr and images/s."""
        self.model.train()
        sums: dict[str, torch.Tensor] = {}
        num_images = 0
        start = time.perf_counter()
        bar = tqdm(
            self.train_loader,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            disable=not (self.config.progress and self.context.is_main),
            leave=False,
        )
        for batch in bar:
            parts = self.train_step(batch)
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value
            num_images += batch["image"].shape[0]
            elapsed = time.perf_counter() - start
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
        means = {
            name: all_reduce_mean(total / self.iters_per_epoch).item()
            for name, total in sums.items()
        }
        return {
            **means,
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": num_images * self.context.world_size / elapsed,
            "seconds": elapsed,
        }

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Forward, loss, backward and optimizer step on one batch; returns detached parts."""
        images = batch["image"].to(self.device, non_blocking=True)
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
        with autocast:
            output = self.model(images)
        loss, parts = self.criterion(output, pids, domains, camids)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
