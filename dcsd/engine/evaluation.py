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
    aqe: bool = False,
    rerank: bool = False,
    roc: bool = False,
) -> dict[str, dict[str, Any]]:
    """Rank every dataset's queries against its own gallery (the paper's per-dataset protocol).

    Features are extracted and ranked on ``device``, by default the model's: on a GPU the
    distance products and ranking run there too (on 2 CPU cores the distances alone take about
    two minutes at MSMT17 size).

    Args:
        model: maps (B, 3, H, W) images to (B, D) embeddings in eval mode.
        splits: ``{dataset name: EvalSplit}``, e.g. from :func:`build_eval_splits`.
        device: where to embed and rank; default: the device of the model's first parameter.
        amp: bfloat16 autocast for the features; default on for CUDA.
        flip: average each embedding with that of the mirrored image.
        aqe, rerank, roc: see :func:`dcsd.evaluate.evaluate_retrieval`.

    Returns:
        ``{dataset name: metrics}`` with ``cmc``, ``mAP`` and ``mINP`` as
        :func:`dcsd.evaluate.rank_metrics` returns them (and ``TPR@FPR=...`` with ``roc``).
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    results = {}
    for name, split in splits.items():
        query = extract_features(model, split.query, device=device, amp=amp, flip=flip)
        gallery = extract_features(model, split.gallery, device=device, amp=amp, flip=flip)
        results[name] = evaluate_retrieval(
            query,
            gallery,
            cross_camera=split.cross_camera,
            device=device,
            aqe=aqe,
            rerank=rerank,
            roc=roc,
        )
    return results
