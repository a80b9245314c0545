"""Triplet losses over a P x K identity batch: batch-hard (BoT) and weighted regularisation (AGW).

Both follow their reference code (fast-reid's ``triplet_loss``, the ReID-survey's
``WeightedRegularizedTriplet``): Euclidean distances between the features of the batch, and the
anchor itself counted among its positives. Anchors without any negative in the batch (a batch
of a single identity) are left out of the mean; with no anchor left the loss is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcsd.losses._checks import check_labels, check_matrix


def euclidean_distance_matrix(features: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances between the rows of ``features``.

    Args:
        features: (N, D).

    Returns:
        (N, N) distances. The squared distances are clamped at 1e-12 before the square root,
        whose gradient is infinite at 0 (the diagonal); clamped entries get no gradient.
    """
    squared_norms = features.pow(2).sum(dim=1, keepdim=True)
    squared = torch.addmm(squared_norms + squared_norms.t(), features, features.t(), alpha=-2.0)
    return squared.clamp(min=1e-12).sqrt()


def _prepare(features: torch.Tensor, pids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate, then return float32 distances (N, N) and the same-identity mask (N, N)."""
    check_matrix("features", features)
    check_labels("pids", pids, features.shape[0])
    distances = euclidean_distance_matrix(features.float())
    same_identity = pids.unsqueeze(0) == pids.unsqueeze(1)
    return distances, same_identity


def _mean_over_anchors_with_negatives(
    per_anchor: torch.Tensor, same_identity: torch.Tensor
) -> torch.Tensor:
    # A tensor denominator keeps this free of host syncs.
    has_negative = (~same_identity).any(dim=1)
    total = torch.where(has_negative, per_anchor, torch.zeros_like(per_anchor)).sum()
    return total / has_negative.sum().clamp(min=1)


class TripletLoss(nn.Module):
    """Batch-hard triplet loss (Hermans et al.; BoT): for each anchor, its farthest positive and
    its closest negative in the batch.

    ``loss = mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin)``, or with ``soft_margin``
    ``mean_i softplus(d(a_i, p_i) - d(a_i, n_i))`` (no margin), d Euclidean.

    Args:
        margin: the hinge margin (BoT: 0.3); unused with ``soft_margin``.
        soft_margin: use the soft-margin (softplus) form instead of the hinge.
    """

    def __init__(self, margin: float = 0.3, soft_margin: bool = False) -> None:
        super().__init__()
        if margin < 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.soft_margin = bool(soft_margin)

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """Batch-hard triplet loss.

        Args:
            features: (N, D) embeddings, any floating dtype (computed in float32, autocast off).
            pids: (N,) integer identity labels.

        Returns:
            A 0-dim float32 tensor.
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            distances, same_identity = _prepare(features, pids)
            hardest_positive = distances.masked_fill(~same_identity, float("-inf")).amax(dim=1)
            # An anchor without negatives gets +inf here, hence a zero loss and zero gradient.
            hardest_negative = distances.masked_fill(same_identity, float("inf")).amin(dim=1)
            gap = hardest_positive - hardest_negative
            per_anchor = F.softplus(gap) if self.soft_margin else F.relu(gap + self.margin)
            return _mean_over_anchors_with_negatives(per_anchor, same_identity)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, soft_margin={self.soft_margin}"


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of ``scores`` over the entries where ``mask`` is True, 0 elsewhere.

    A row with no True entry gets all-zero weights; unlike ``softmax`` of an all ``-inf`` row
    this stays free of NaN in the forward and the backward pass.
    """
    row_max = scores.masked_fill(~mask, float("-inf")).amax(dim=1, keepdim=True)
    # Softmax is shift invariant, so the shift needs no gradient.
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    exp = (scores - row_max).masked_fill(~mask, float("-inf")).exp()
    return exp / exp.sum(dim=1, keepdim=True).clamp(min=torch.finfo(exp.dtype).tiny)


class WeightedRegularizationTriplet(nn.Module):
    """AGW's weighted regularisation triplet (Ye et al., "Deep Learning for Person
    Re-identification: A Survey and Outlook"): every positive and negative pair contributes,
    weighted by a softmax over its distance, with no margin.

    For anchor i with positives P_i (itself included) and negatives N_i:
    ``w_p = softmax_{p in P_i}(d_ip)``, ``w_n = softmax_{n in N_i}(-d_in)``,
    ``loss_i = softplus(sum_p w_p d_ip - sum_n w_n d_in)``; the loss is the batch mean.
    The weights are not detached, as in the reference code.
    """

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """Weighted regularisation triplet loss.

        Args:
            features: (N, D) embeddings, any floating dtype (computed in float32, autocast off).
            pids: (N,) integer identity labels.

        Returns:
            A 0-dim float32 tensor.
        """
        with torch.autocast(device_type=features.device.type, enabled=False):
            distances, same_identity = _prepare(features, pids)
            positive_weights = _masked_softmax(distances, same_identity)
            negative_weights = _masked_softmax(-distances, ~same_identity)
            weighted_positive = (positive_weights * distances).sum(dim=1)
            weighted_negative = (negative_weights * distances).sum(dim=1)
            per_anchor = F.softplus(weighted_positive - weighted_negative)
            return _mean_over_anchors_with_negatives(per_anchor, same_identity)
