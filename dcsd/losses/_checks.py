"""Boundary checks shared by the losses."""

from __future__ import annotations

import torch


def check_labels(name: str, labels: torch.Tensor, batch_size: int) -> None:
    """Raise unless ``labels`` is an integer tensor of shape ``(batch_size,)``."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got dtype {labels.dtype}")
    if labels.shape != (batch_size,):
        raise ValueError(f"{name} must have shape ({batch_size},), got {tuple(labels.shape)}")


def check_matrix(name: str, x: torch.Tensor, batch_size: int | None = None) -> None:
    """Raise unless ``x`` is a floating tensor of shape ``(N, C)``, ``N, C >= 1``.

    With ``batch_size`` given, N must equal it.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, C) with N, C >= 1, got {tuple(x.shape)}")
    if batch_size is not None and x.shape[0] != batch_size:
        raise ValueError(
            f"{name} must have {batch_size} rows (the batch size), got shape {tuple(x.shape)}"
        )


def check_label_range(name: str, labels: torch.Tensor, num_classes: int) -> None:
    """Raise unless every label lies in ``[0, num_classes)``, without a host sync on accelerators.

    An out-of-range class index otherwise surfaces on CUDA as an opaque device-side assert far
    from its cause. On CPU tensors the values are at hand, so a ``ValueError`` names them; on
    other devices ``torch._assert_async`` queues the check with the same message (raised at the
    next synchronisation), so a training step never waits for the device to validate labels
    that the data (:class:`~dcsd.data.MultiDomainDataset`) already guarantees.
    """
    if labels.numel() == 0:
        return
    message = f"{name} must lie in [0, {num_classes}) to index {num_classes} logits"
    if labels.device.type != "cpu":
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all(), message)
        return
    low, high = torch.stack(tuple(torch.aminmax(labels))).tolist()
    if low < 0 or high >= num_classes:
        raise ValueError(f"{message}, got values in [{low}, {high}]")
