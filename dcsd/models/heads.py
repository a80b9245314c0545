"""The BNNeck head shared by the BoT and AGW baselines."""

from __future__ import annotations

import torch
import torch.nn as nn

from dcsd.modules import GeneralizedMeanPooling, GlobalAveragePooling
from dcsd.validation import check_int

POOLINGS = ("avg", "gem")


class BNNeckHead(nn.Module):
    """Global pooling, BNNeck and a bias-free identity classifier (Luo et al., BoT).

    The triplet loss takes the pooled feature, the identity loss the classifier's logits on the
    BNNeck output, and retrieval the BNNeck output. BNNeck's bias stays 0 (``requires_grad``
    False) so the embedding is not shifted away from the origin the cosine distance looks at.

    Args:
        in_features: D, channels of the backbone's feature map.
        num_classes: identities of the classifier; 0 builds no classifier.
        pooling: ``"avg"`` (BoT) or ``"gem"`` (AGW, learnable p from 3).
    """

    def __init__(self, in_features: int, num_classes: int, pooling: str = "avg") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.in_features = in_features
        self.pool = GlobalAveragePooling() if pooling == "avg" else GeneralizedMeanPooling(3.0)
        self.bnneck = nn.BatchNorm1d(in_features)
        nn.init.ones_(self.bnneck.weight)
        nn.init.zeros_(self.bnneck.bias)
        self.bnneck.bias.requires_grad_(False)
        self.classifier: nn.Linear | None = None
        self.reset_classifier(num_classes)

    @property
    def num_classes(self) -> int:
        """Identities of the classifier (0 when there is none)."""
        return 0 if self.classifier is None else self.classifier.out_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a fresh one (weights ~ N(0, 0.001^2)); 0 removes it."""
        check_int("num_classes", num_classes, 0)
        if num_classes == 0:
            self.classifier = None
            return
        weight = self.bnneck.weight
        self.classifier = nn.Linear(
            self.in_features, num_classes, bias=False, device=weight.device, dtype=weight.dtype
        )
        nn.init.normal_(self.classifier.weight, std=0.001)

    def forward(self, feature_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feature_map: (N, D, h, w) -> (pooled feature (N, D), BNNeck embedding (N, D))."""
        features = self.pool(feature_map)
        return features, self.bnneck(features)
