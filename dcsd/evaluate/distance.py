"""Query-gallery distances, computed in blocks of query rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F

Metric = Literal["euclidean", "cosine"]
_MAX_LISTED_ROWS = 10


def _check_features(name: str, features: torch.Tensor) -> None:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(features).__name__}")
    if features.dim() != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(features.shape)}")
    if not features.dtype.is_floating_point:
        raise TypeError(f"{name} must be floating point, got dtype {features.dtype}")


def evaluation_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """The dtype evaluation computes in: float64 when any input is float64, else float32.

    float64 features (from a float64 model) then give rankings that do not depend on the CPU's
    float32 arithmetic, where ulp-level differences between vector units can swap near-tied
    neighbours; half-precision inputs are computed in float32.
    """
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def check_feature_pair(query_feats: torch.Tensor, gallery_feats: torch.Tensor) -> None:
    """Check that (Q, D) and (G, D) floating-point features share D and a device, and are
    finite (the message names the rows that are not)."""
    _check_features("query_feats", query_feats)
    _check_features("gallery_feats", gallery_feats)
    if query_feats.shape[1] != gallery_feats.shape[1]:
        raise ValueError(
            f"query_feats and gallery_feats must have the same feature size, got "
            f"{query_feats.shape[1]} and {gallery_feats.shape[1]}"
        )
    if query_feats.device != gallery_feats.device:
        raise ValueError(
            f"query_feats and gallery_feats must be on one device, got {query_feats.device} "
            f"and {gallery_feats.device}"
        )
    for name, features in (("query_feats", query_feats), ("gallery_feats", gallery_feats)):
        finite = torch.isfinite(features).all(dim=1)
        if not bool(finite.all()):
            rows = (~finite).nonzero().flatten().tolist()
            more = len(rows) - _MAX_LISTED_ROWS
            raise ValueError(
                f"{name} rows {rows[:_MAX_LISTED_ROWS]}{f' and {more} more' if more > 0 else ''} "
                "hold NaN or inf: the model gave non-finite features for those images"
            )


def distance_blocks(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    metric: Metric = "euclidean",
    chunk_size: int = 1024,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, distances[start:stop])`` over blocks of query rows.

    See :func:`pairwise_distance` for the arguments, the metrics and the dtype; blocks are on
    the features' device, so the full (Nq, Ng) matrix never has to exist at once.
    """
    check_feature_pair(query_feats, gallery_feats)
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = evaluation_dtype(query_feats, gallery_feats)
    gallery = gallery_feats.to(dtype)
    if metric == "cosine":
        gallery = F.normalize(gallery, dim=1)
    else:
        gallery_sq_norms = gallery.pow(2).sum(dim=1)
    gallery_t = gallery.t()
    for start in range(0, query_feats.shape[0], chunk_size):
        stop = min(start + chunk_size, query_feats.shape[0])
        query = query_feats[start:stop].to(dtype)
        if metric == "cosine":
            block = torch.mm(F.normalize(query, dim=1), gallery_t).neg_().add_(1)
        else:
            block = torch.addmm(
                query.pow(2).sum(dim=1, keepdim=True) + gallery_sq_norms,
                query,
                gallery_t,
                alpha=-2.0,
            )
        yield start, stop, block


def pairwise_distance(
    query_feats: torch.Tensor,
    gallery_feats: torch.Tensor,
    metric: Metric = "euclidean",
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Distances between every query and gallery feature, smaller is closer.

    ``"euclidean"`` is the *squared* Euclidean distance ``|q|^2 + |g|^2 - 2 q.g`` as in
    fast-reid and torchreid (same ranking as the Euclidean distance, without the square root;
    rounding can leave near-duplicates slightly below 0). ``"cosine"`` is ``1 - cos(q, g)``.
    Computed on the features' device, in float64 when either input is float64 and in float32
    otherwise (:func:`evaluation_dtype`), ``chunk_size`` query rows at a time so the
    temporaries stay small.

    Args:
        query_feats: (Nq, D) features.
        gallery_feats: (Ng, D) features, on the same device.
        metric: ``"euclidean"`` (squared) or ``"cosine"``.
        chunk_size: query rows per block.

    Returns:
        (Nq, Ng) distances, float64 or float32 as computed.

    Example:
        >>> q = torch.tensor([[0.0, 0.0]])
        >>> g = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
        >>> pairwise_distance(q, g)
        tensor([[25.,  1.]])
    """
    blocks = distance_blocks(query_feats, gallery_feats, metric, chunk_size)
    out = torch.empty(
        query_feats.shape[0],
        gallery_feats.shape[0],
        dtype=evaluation_dtype(query_feats, gallery_feats),
        device=query_feats.device,
    )
    for start, stop, block in blocks:
        out[start:stop] = block
    return out
