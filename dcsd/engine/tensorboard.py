"""Live training curves: a trainer callback that writes TensorBoard event files.

Needs the ``tensorboard`` package (``pip install "dcsd[tensorboard]"``); the writer is
``torch.utils.tensorboard.SummaryWriter``. The trainer's ``log.jsonl`` is written either way.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import Trainer

TENSORBOARD_NOTICE = (
    "TensorBoard logging is off: pip install 'dcsd[tensorboard]' for live curves in OUT/tb/"
)


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package, which the writer needs, is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLogger(Callback):
    """Writes the run's curves to ``log_dir`` on the main process (rank 0).

    Per iteration (x axis: the iteration, counted from the run's start): the loss and its parts
    (``train/loss``, ``train/id``, ...), the learning rate of each optimizer group
    (``lr/<group>``), ``train/images_per_s`` and ``train/grad_norm``. Per epoch: the epoch's
    means (``epoch/...``). Per evaluation (x axis: the epoch): each dataset's scalar metrics
    (``eval/<dataset>/mAP``, ``mINP``, ``rank1``, ``rank5``, ``rank10``, TPR at the ROC's FPRs).
    A resumed run drops the events written after its checkpoint (``purge_step``), so its curves
    do not fold back.

    Args:
        log_dir: the folder of the event files, e.g. ``OUT/tb``.

    Raises:
        ImportError: ``tensorboard`` is not installed (the message says how to install it).
    """

    def __init__(self, log_dir: str | Path) -> None:
        if not tensorboard_available():
            raise ImportError(TENSORBOARD_NOTICE)
        self.log_dir = Path(log_dir)
        self._writer: Any = None
        self._epoch = 0

    def on_fit_begin(self, trainer: Trainer) -> None:
        if not trainer.context.is_main:
            return
        from torch.utils.tensorboard import SummaryWriter

        first = trainer.start_epoch * trainer.iters_per_epoch + 1
        self._writer = SummaryWriter(str(self.log_dir), purge_step=first if first > 1 else None)

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self._epoch = epoch

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        if self._writer is None:
            return
        iteration = self._epoch * trainer.iters_per_epoch + step + 1
        for name, value in logs.items():
            tag = name if name.startswith("lr/") else f"train/{name}"
            self._writer.add_scalar(tag, value, iteration)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in logs.items():
            if isinstance(value, int | float):
                self._writer.add_scalar(f"epoch/{name}", value, epoch + 1)
        self._writer.flush()

    def after_evaluation(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        if self._writer is None:
            return
        for dataset, values in metrics.items():
            for name, value in scalar_metrics(values).items():
                self._writer.add_scalar(f"eval/{dataset}/{name}", value, epoch + 1)
        self._writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """One dataset's metrics as scalars: ``cmc`` as ``rank1``, ``rank5``, ``rank10``; the
    finite numbers as they are."""
    scalars: dict[str, float] = {}
    for name, value in metrics.items():
        if name == "cmc":
            cmc = [float(v) for v in value]
            scalars |= {f"rank{k}": cmc[k - 1] for k in (1, 5, 10) if k <= len(cmc)}
        elif isinstance(value, int | float) and math.isfinite(value):
            scalars[name] = float(value)
        elif hasattr(value, "item") and getattr(value, "size", 1) == 1:
            number = float(value.item())
            if math.isfinite(number):
                scalars[name] = number
    return scalars
