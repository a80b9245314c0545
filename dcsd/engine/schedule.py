"""BoT's learning-rate schedule: linear warmup, then step decay at fixed epochs."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence

import torch


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
    warmup_iters = warmup_epochs * iters_per_epoch
    factor = gamma ** bisect_right(list(milestones), epoch)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    iters_per_epoch: int,
    warmup_epochs: float = 10,
    milestones: Sequence[int] = (40, 90),
    gamma: float = 0.1,
    warmup_factor: float = 0.1,
    group_warmup_epochs: Mapping[str, float] | None = None,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to step once per iteration; its state dict resumes it exactly.

    ``group_warmup_epochs`` gives parameter groups (by their ``"name"``, as
    :func:`dcsd.engine.build_optimizer` names them) a warmup length of their own, e.g. a longer
    one for freshly initialised filter generators; the other groups use ``warmup_epochs``.
    """
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
    lengths = dict(group_warmup_epochs or {})
    names = {group.get("name") for group in optimizer.param_groups}
    unknown = sorted(set(lengths) - names, key=str)
    if unknown:
        raise ValueError(
            f"group_warmup_epochs names groups {unknown} that the optimizer does not have "
            f"(its groups: {sorted(names, key=str)})"
        )

    def factor(warmup: float) -> Callable[[int], float]:
        return lambda iteration: warmup_multistep_factor(
            iteration, iters_per_epoch, warmup, milestones, gamma, warmup_factor
        )

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        [factor(lengths.get(group.get("name"), warmup_epochs)) for group in optimizer.param_groups],
    )
