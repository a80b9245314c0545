"""Cross-entropy with label smoothing (BoT's identity loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcsd.losses._checks import check_label_range, check_labels, check_matrix


def smoothed_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, epsilon: float
) -> torch.Tensor:
    """Batch mean of ``-sum_k q_k log softmax(logits)_k``, ``q = (1 - eps) onehot + eps / C``.

    Computed in float32 with autocast off, whatever the input dtype. Inputs are trusted: the
    public losses validate them.

    Args:
        logits: (N, C) unnormalised class scores.
        targets: (N,) class indices in ``[0, C)``.
        epsilon: smoothing mass spread uniformly over the C classes (0: plain cross-entropy).

    Returns:
        A 0-dim float32 tensor.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        return F.cross_entropy(logits.float(), targets.long(), label_smoothing=epsilon)


class CrossEntropyLabelSmooth(nn.Module):
    """Cross-entropy against label-smoothed targets (Szegedy et al.; BoT uses ``epsilon=0.1``).

    The target distribution is ``q = (1 - epsilon) * onehot(y) + epsilon / C`` with C taken from
    the logits, so one instance serves any number of classes.

    Args:
        epsilon: smoothing mass in ``[0, 1)``; 0 gives plain cross-entropy.
    """

    def __init__(self, epsilon: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Batch-mean smoothed cross-entropy.

        Args:
            logits: (N, C) class scores, any floating dtype (computed in float32).
            targets: (N,) integer class indices in ``[0, C)``.

        Returns:
            A 0-dim float32 tensor.
        """
        check_matrix("logits", logits)
        check_labels("targets", targets, logits.shape[0])
        check_label_range("targets", targets, logits.shape[1])
        return smoothed_cross_entropy(logits, targets, self.epsilon)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}"
