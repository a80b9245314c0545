"""Learning-rate schedules stepped per iteration: linear warmup, then BoT's step decay at fixed
epochs or a cosine decay over the run."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence

import torch

SCHEDULES = ("multistep", "cosine")


def warmup_multistep_factor(
    iteration: int,
    iters_per_epoch: int,
    warmup_epochs: float,
    milestones: Sequence[int],
    gamma: float,
    warmup_factor: float,
) -> float:
    """Learning-rate multiplier at a global iteration.

    Linear from ``warmup_factor`` to 1 over the first ``warmup_epochs`` epochs (per iteration,
    as fast-reid does), times ``gamma`` for every milestone epoch already reached.
    """
    epoch = iteration // iters_per_epoch
    factor = gamma ** bisect_right(list(milestones), epoch)
    return factor * _warmup(iteration, warmup_epochs * iters_per_epoch, warmup_factor)


def _warmup(iteration: int, warmup_iters: float, warmup_factor: float) -> float:
    if iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


def warmup_cosine_factor(
    iteration: int,
    iters_per_epoch: int,
    warmup_epochs: float,
    total_epochs: int,
    warmup_factor: float,
    min_factor: float = 0.0,
) -> float:
    """Learning-rate multiplier at a global iteration: a cosine from 1 at the first iteration
    to ``min_factor`` at the end of ``total_epochs`` (per iteration, and constant after it),
    times the same linear warmup as :func:`warmup_multistep_factor` (the warmup multiplies the
    decay, as fast-reid's warmup multiplies its main schedule)."""
    progress = min(iteration / (total_epochs * iters_per_epoch), 1.0)
    cosine = min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
    return cosine * _warmup(iteration, warmup_epochs * iters_per_epoch, warmup_factor)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    iters_per_epoch: int,
    warmup_epochs: float = 10,
    milestones: Sequence[int] = (40, 90),
    gamma: float = 0.1,
    warmup_factor: float = 0.1,
    group_warmup_epochs: Mapping[str, float] | None = None,
    schedule: str = "multistep",
    total_epochs: int | None = None,
    min_lr_factor: float = 0.0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to step once per iteration; its state dict resumes it exactly.

    ``group_warmup_epochs`` gives parameter groups (by their ``"name"``, as
    :func:`dcsd.engine.build_optimizer` names them) a warmup length of their own, e.g. a longer
    one for freshly initialised filter generators; the other groups use ``warmup_epochs``.

    ``schedule`` is ``"multistep"`` (:func:`warmup_multistep_factor`: ``milestones`` and
    ``gamma``) or ``"cosine"`` (:func:`warmup_cosine_factor`: from the base rate to
    ``min_lr_factor`` times it over ``total_epochs``); the warmup applies to both.
    """
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "cosine" and (type(total_epochs) is not int or total_epochs < 1):
        raise ValueError(f"the cosine schedule needs total_epochs >= 1, got {total_epochs!r}")
    if not (math.isfinite(min_lr_factor) and 0 <= min_lr_factor <= 1):
        raise ValueError(f"min_lr_factor must be in [0, 1], got {min_lr_factor!r}")
    lengths = dict(group_warmup_epochs or {})
    names = {group.get("name") for group in optimizer.param_groups}
    unknown = sorted(set(lengths) - names, key=str)
    if unknown:
        raise ValueError(
            f"group_warmup_epochs names groups {unknown} that the optimizer does not have "
            f"(its groups: {sorted(names, key=str)})"
        )

    def factor(warmup: float) -> Callable[[int], float]:
        if schedule == "cosine":
            return lambda iteration: warmup_cosine_factor(
                iteration, iters_per_epoch, warmup, total_epochs, warmup_factor, min_lr_factor
            )
        return lambda iteration: warmup_multistep_factor(
            iteration, iters_per_epoch, warmup, milestones, gamma, warmup_factor
        )

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        [factor(lengths.get(group.get("name"), warmup_epochs)) for group in optimizer.param_groups],
    )
