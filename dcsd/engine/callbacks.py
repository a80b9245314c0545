"""Trainer callbacks: training policies (logging, freezing, EMA, ...) that plug into the loop
instead of growing :class:`~dcsd.engine.Trainer` and :class:`~dcsd.engine.TrainConfig`.

As fast-reid's hooks and Lightning's callbacks: a :class:`Callback` overrides the moments it
cares about; every method is a no-op by default. The trainer calls each of its callbacks in
the order given, on every process (a callback that writes files checks
``trainer.context.is_main`` itself).

A callback with state (an EMA of the weights, a counter) returns it from :meth:`state_dict`;
the trainer stores it in every checkpoint (``training_state.pt``, written after
:meth:`on_epoch_end`) and hands it back to :meth:`load_state_dict` on resume, so a resumed run
repeats an uninterrupted one. A resume refuses a checkpoint whose callbacks' states do not
match the run's callbacks (matched by class name, in order). The state is
read with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .trainer import Trainer


class Callback:
    """Base class of the trainer's callbacks; override the moments you need."""

    def on_fit_begin(self, trainer: Trainer) -> None:
        """Before the first epoch of :meth:`Trainer.fit` (after a resume has loaded its state)."""

    def on_epoch_begin(self, trainer: Trainer, epoch: int) -> None:
        """Before epoch ``epoch`` (0-based) is trained, after the seeds are set."""

    def on_step_begin(self, trainer: Trainer, step: int) -> None:
        """Before step ``step`` (0-based, within the epoch) runs its forward pass."""

    def on_step_end(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        """After step ``step``'s optimizer update (not called for a skipped non-finite step).

        Args:
            trainer: the trainer.
            step: 0-based step within the epoch.
            logs: ``loss`` and its parts, ``lr/<group name>`` of each optimizer group,
                ``images_per_s`` of the step (all processes) and ``grad_norm`` (absent under
                fp16, whose grad scaler owns the gradients' scale).
        """

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """After epoch ``epoch`` (0-based) is trained, before its checkpoint is written (so
        state changed here is in that checkpoint) and before it is evaluated.

        Args:
            trainer: the trainer.
            epoch: 0-based epoch.
            logs: the epoch's record as :meth:`Trainer.train_one_epoch` returns it (mean loss
                parts, ``skipped_steps``, ``lr``, ``images_per_s``, ``seconds``).
        """

    def after_evaluation(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """After epoch ``epoch`` (0-based) was evaluated, on the main process only (where the
        evaluation runs); ``metrics`` as the trainer's ``evaluate`` returned them."""

    def on_fit_end(self, trainer: Trainer) -> None:
        """After the last epoch of :meth:`Trainer.fit`."""

    def state_dict(self) -> dict[str, Any]:
        """What to checkpoint (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output on resume (default: nothing to restore)."""
