"""The typed result a ReID model returns in training mode."""

from __future__ import annotations

from typing import NamedTuple

import torch


class ReIDOutput(NamedTuple):
    """What a ReID model returns from ``forward`` in training mode.

    In eval mode the models return only the (N, D) embedding after BNNeck. A model built with
    ``num_classes=0`` has no identity classifier and refuses a training-mode forward
    (``RuntimeError``) rather than returning empty logits.

    Attributes:
        features: (N, D) global feature before BNNeck, used by the triplet loss.
        logits: (N, num_classes) identity logits after BNNeck and the classifier.
        domain_logits: one (N, num_domains) tensor per DCSD layer whose domain factor is on
            (empty for static models or when the factor is off).
        camera_logits: one (N, num_cameras) tensor per DCSD layer whose camera factor is on.
    """

    features: torch.Tensor
    logits: torch.Tensor
    domain_logits: tuple[torch.Tensor, ...] = ()
    camera_logits: tuple[torch.Tensor, ...] = ()
