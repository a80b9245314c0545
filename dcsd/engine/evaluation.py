"""Per-dataset evaluation of a model: features, then CMC / mAP / mINP."""

from __future__ import annotations

from typing import Any

import torch

from ..evaluate import evaluate_retrieval, extract_features
from .loaders import EvalSplit


def evaluate_model(
    model: torch.nn.Module,
    splits: dict[str, EvalSplit],
    device: torch.device | str | None = None,
    amp: bool | None = None,
    flip: bool = False,
) -> dict[str, dict[str, Any]]:
    """Rank every dataset's queries against its own gallery (the paper's per-dataset protocol).

    Returns:
        ``{dataset name: metrics}`` with ``cmc``, ``mAP`` and ``mINP`` as
        :func:`dcsd.evaluate.rank_metrics` returns them.
    """
    results = {}
    for name, split in splits.items():
        query = extract_features(model, split.query, device=device, amp=amp, flip=flip)
        gallery = extract_features(model, split.gallery, device=device, amp=amp, flip=flip)
        results[name] = evaluate_retrieval(query, gallery, cross_camera=split.cross_camera)
    return results
