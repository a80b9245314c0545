"""The training knobs of :class:`~dcsd.engine.TrainConfig` that are trainer callbacks: freezing
all but the fresh parts for the first epochs, and an exponential moving average of the weights.

The trainer builds them from its config (:func:`knob_callbacks`), so the config record names
them and a resumed run rebuilds them; their state is checkpointed like any callback's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .callbacks import Callback

if TYPE_CHECKING:
    from .trainer import TrainConfig, Trainer

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class FreezeGroups(Callback):
    """Train only some parameter groups for the first ``epochs`` epochs (fast-reid's
    ``FREEZE_ITERS``, torchreid's ``fixbase_epoch``), e.g. the fresh DCSD generators and heads
    on a pretrained backbone.

    The groups are the model's :meth:`~dcsd.models.ReIDResNet.parameter_groups`. A frozen
    parameter gets no gradient, so the optimizer leaves it (and its state) untouched; a
    normalisation layer whose parameters are all frozen runs in eval mode, so its running
    statistics do not move either (as fast-reid freezes layers). Parameters that were not
    trainable to begin with (BNNeck's bias) stay so. Depends only on the epoch: a resumed run
    freezes exactly as an uninterrupted one.

    Args:
        epochs: how many epochs (from the first) the groups stay frozen.
        groups: names of the frozen groups (default: the backbone).
    """

    def __init__(self, epochs: int, groups: tuple[str, ...] = ("backbone",)) -> None:
        self.epochs = epochs
        self.groups = tuple(groups)
        self._trainable: list[nn.Parameter] = []  # the frozen groups' trainable parameters
        self._norms: list[nn.Module] = []  # normalisation layers made only of them
        self._frozen = False

    def on_fit_begin(self, trainer: Trainer) -> None:
        model = trainer.unwrapped_model
        if not hasattr(model, "parameter_groups"):
            raise TypeError(
                f"freeze_epochs needs a model with parameter_groups() (a dcsd ReIDResNet), got "
                f"{type(model).__name__}"
            )
        groups = model.parameter_groups()
        unknown = sorted(set(self.groups) - set(groups))
        if unknown:
            raise ValueError(
                f"freeze_groups names {unknown}, which the model does not have (its groups: "
                f"{sorted(groups)})"
            )
        frozen = [p for name in self.groups for p in groups[name]]
        self._trainable = [p for p in frozen if p.requires_grad]
        ids = {id(p) for p in frozen}
        self._norms = [
            module
            for module in model.modules()
            if isinstance(module, _NORMS)
            and any(True for _ in module.parameters())
            and all(id(p) in ids for p in module.parameters())
        ]

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        self._frozen = epoch < self.epochs
        for parameter in self._trainable:
            parameter.requires_grad_(not self._frozen)

    def on_step_begin(self, trainer: Trainer, step: int) -> None:
        # The trainer puts the model in training mode at each epoch's start: undo it here.
        if self._frozen:
            for module in self._norms:
                module.eval()


class ExponentialMovingAverage(Callback):
    """An exponential moving average of the weights, updated after every optimizer step:
    ``average = decay * average + (1 - decay) * weights`` (the first step copies the weights),
    BatchNorm statistics included (integer counters are copied), through
    :class:`torch.optim.swa_utils.AveragedModel`.

    The trainer evaluates and exports the average (:attr:`Trainer.inference_model`); its
    weights are checkpointed with the callback's state, so a resumed run continues the same
    average.

    Args:
        model: the model trained (without a DDP wrapper).
        decay: the averaging factor, in (0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.average = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True
        )

    @property
    def model(self) -> nn.Module:
        """The averaged model (same class, config and card as the trained one)."""
        return self.average.module

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        model = trainer.unwrapped_model
        self.average.update_parameters(model)
        # Counters (BatchNorm's num_batches_tracked) are not averaged: they are the model's.
        for own, trained in zip(self.model.buffers(), model.buffers(), strict=True):
            if not own.is_floating_point():
                own.copy_(trained)

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "n_averaged": self.average.n_averaged.detach().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["weights"])
        self.average.n_averaged.copy_(state["n_averaged"])


def knob_callbacks(config: TrainConfig, model: nn.Module) -> list[Callback]:
    """The callbacks ``config`` asks for (``freeze_epochs``, ``ema_decay``), in that order."""
    callbacks: list[Callback] = []
    if config.freeze_epochs > 0:
        callbacks.append(FreezeGroups(config.freeze_epochs, config.freeze_groups))
    if config.ema_decay is not None:
        callbacks.append(ExponentialMovingAverage(model, config.ema_decay))
    return callbacks


def averaged_model(callbacks: tuple[Callback, ...]) -> nn.Module | None:
    """The EMA model of the first :class:`ExponentialMovingAverage` in ``callbacks``, if any."""
    for callback in callbacks:
        if isinstance(callback, ExponentialMovingAverage):
            return callback.model
    return None
