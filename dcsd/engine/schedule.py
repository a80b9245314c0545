"""BoT's learning-rate schedule: linear warmup, then step decay at fixed epochs."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

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
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to step once per iteration; its state dict resumes it exactly."""
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda iteration: warmup_multistep_factor(
            iteration, iters_per_epoch, warmup_epochs, milestones, gamma, warmup_factor
        ),
    )
