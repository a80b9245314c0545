"""Average query expansion (AQE), as fast-reid's ``TEST.AQE``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dcsd.evaluate.distance import check_feature_pair, evaluation_dtype

# Similarities per block of rows.
_BLOCK_ELEMENTS = 1 << 24


@torch.no_grad()
def average_query_expansion(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    times: int = 1,
    k: int = 5,
    alpha: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace every feature by the weighted mean of its ``k`` most similar features.

    fast-reid's ``aqe`` (``TEST.AQE``: ``QE_TIME=1``, ``QE_K=5``, ``ALPHA=3.0``; after PyRetri,
    and Chum et al., ICCV 2007 for query expansion): over the N = Q + G query and gallery
    features together, the k nearest by cosine similarity s (the feature itself included) are
    averaged with weights s**alpha, ``times`` times over. The averaged features are not
    normalised; rank them as usual (:func:`evaluate_retrieval` normalises). Similarities are
    computed a block of rows at a time, so the (N, N) matrix never exists.

    Args:
        query_feats: (Q, D) features.
        gallery_feats: (G, D) features, on the same device.
        times: rounds of expansion.
        k: neighbours averaged (the feature itself counts as one).
        alpha: exponent of the similarity weights.

    Returns:
        (Q, D) and (G, D) expanded features on the input device: float64 when either input
        is float64, else float32 (:func:`~dcsd.evaluate.distance.evaluation_dtype`).
    """
    check_feature_pair(query_feats, gallery_feats)
    num_all = query_feats.shape[0] + gallery_feats.shape[0]
    if not isinstance(times, int) or times < 1:
        raise ValueError(f"times must be an integer >= 1, got {times!r}")
    if not isinstance(k, int) or not 1 <= k <= num_all:
        raise ValueError(f"k must be an integer in [1, {num_all}] (queries + gallery), got {k!r}")
    dtype = evaluation_dtype(query_feats, gallery_feats)
    features = torch.cat([query_feats.to(dtype), gallery_feats.to(dtype)])
    block = max(1, _BLOCK_ELEMENTS // num_all)
    for _ in range(times):
        normalised = F.normalize(features, dim=1)
        expanded = torch.empty_like(features)
        for start in range(0, num_all, block):
            similarity = normalised[start : start + block] @ normalised.t()
            weights, neighbours = similarity.topk(k, dim=1)
            weighted = features[neighbours] * weights.pow(alpha)[:, :, None]
            expanded[start : start + block] = weighted.mean(dim=1)
        features = expanded
    num_query = query_feats.shape[0]
    return features[:num_query], features[num_query:]
