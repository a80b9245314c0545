"""The DCSD training objective (paper Eq. 5)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from dcsd.losses._checks import check_label_range, check_labels, check_matrix
from dcsd.losses.cross_entropy import smoothed_cross_entropy
from dcsd.losses.triplet import TripletLoss, WeightedRegularizationTriplet
from dcsd.models.output import ReIDOutput


class DCSDLoss(nn.Module):
    """``L = L_tri + L_ce(identity) + w_d * mean_b CE(domain_b) + w_c * mean_b CE(camera_b)``.

    Paper Eq. 5 with ``w_d = w_c = 1``: the triplet loss on the features before BNNeck, the
    label-smoothed identity cross-entropy on the logits, and the mean over the DCSD layers of the
    cross-entropy of each layer's domain and camera classifier against the domain ID and global
    camera ID. The domain and camera terms are plain cross-entropy (no label smoothing); each is
    0 when the output has no logits of that kind (a static model, or the factor switched off).

    Everything is computed in float32 with autocast off.

    Args:
        triplet: ``"batch_hard"`` (BoT, :class:`TripletLoss`) or ``"weighted"`` (AGW,
            :class:`WeightedRegularizationTriplet`).
        margin: batch-hard margin; unused by ``"weighted"`` and by ``soft_margin``.
        soft_margin: soft-margin batch-hard triplet; unused by ``"weighted"``.
        label_smoothing: epsilon of the identity cross-entropy (BoT: 0.1).
        domain_weight: factor on the mean domain cross-entropy.
        camera_weight: factor on the mean camera cross-entropy.
    """

    def __init__(
        self,
        triplet: Literal["batch_hard", "weighted"] = "batch_hard",
        margin: float = 0.3,
        soft_margin: bool = False,
        label_smoothing: float = 0.1,
        domain_weight: float = 1.0,
        camera_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if triplet == "batch_hard":
            self.triplet: nn.Module = TripletLoss(margin=margin, soft_margin=soft_margin)
        elif triplet == "weighted":
            self.triplet = WeightedRegularizationTriplet()
        else:
            raise ValueError(f"triplet must be 'batch_hard' or 'weighted', got {triplet!r}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        for name, weight in (("domain_weight", domain_weight), ("camera_weight", camera_weight)):
            if weight < 0:
                raise ValueError(f"{name} must be >= 0, got {weight}")
        self.label_smoothing = float(label_smoothing)
        self.domain_weight = float(domain_weight)
        self.camera_weight = float(camera_weight)

    def forward(
        self,
        output: ReIDOutput,
        pids: torch.Tensor,
        domains: torch.Tensor,
        camids: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its detached parts.

        Args:
            output: the model's training output: ``features`` (N, D), ``logits``
                (N, num_classes), ``domain_logits`` and ``camera_logits`` (one (N, classes)
                tensor per DCSD layer each, possibly none).
            pids: (N,) identity labels in ``[0, num_classes)``.
            domains: (N,) domain IDs, indexing the domain logits' classes.
            camids: (N,) global camera IDs, indexing the camera logits' classes.

        Returns:
            ``(total, parts)``: the 0-dim float32 total to backpropagate, and
            ``{"id", "triplet", "domain", "camera"}`` detached 0-dim tensors, the domain and
            camera parts being the unweighted means over layers.
        """
        for attribute in ("features", "logits", "domain_logits", "camera_logits"):
            if not hasattr(output, attribute):
                raise TypeError(
                    f"output must be a ReIDOutput (with attribute {attribute!r}), "
                    f"got {type(output).__name__}"
                )
        check_matrix("output.features", output.features)
        batch_size = output.features.shape[0]
        check_matrix("output.logits", output.logits, batch_size)
        check_labels("pids", pids, batch_size)
        check_label_range("pids", pids, output.logits.shape[1])

        parts = {
            "id": smoothed_cross_entropy(output.logits, pids, self.label_smoothing),
            "triplet": self.triplet(output.features, pids),
            "domain": self._mean_layer_cross_entropy(
                "domain_logits", output.domain_logits, domains, "domains", batch_size
            ),
            "camera": self._mean_layer_cross_entropy(
                "camera_logits", output.camera_logits, camids, "camids", batch_size
            ),
        }
        total = (
            parts["triplet"]
            + parts["id"]
            + self.domain_weight * parts["domain"]
            + self.camera_weight * parts["camera"]
        )
        return total, {name: value.detach() for name, value in parts.items()}

    def _mean_layer_cross_entropy(
        self,
        logits_name: str,
        layer_logits: tuple[torch.Tensor, ...],
        labels: torch.Tensor,
        labels_name: str,
        batch_size: int,
    ) -> torch.Tensor:
        """Mean over layers of plain cross-entropy; a float32 zero when there are no layers."""
        check_labels(labels_name, labels, batch_size)
        if len(layer_logits) == 0:
            return torch.zeros((), dtype=torch.float32, device=labels.device)
        for index, logits in enumerate(layer_logits):
            check_matrix(f"output.{logits_name}[{index}]", logits, batch_size)
        # One range check against the narrowest layer covers them all.
        num_classes = min(logits.shape[1] for logits in layer_logits)
        check_label_range(labels_name, labels, num_classes)
        losses = [smoothed_cross_entropy(logits, labels, 0.0) for logits in layer_logits]
        return torch.stack(losses).mean()

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, domain_weight={self.domain_weight}, "
            f"camera_weight={self.camera_weight}"
        )
