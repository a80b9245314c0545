"""Query-against-gallery evaluation from features, and the per-dataset report table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcsd.evaluate.distance import Metric, distance_blocks, evaluation_dtype, pairwise_distance
from dcsd.evaluate.features import FeatureSet
from dcsd.evaluate.query_expansion import average_query_expansion
from dcsd.evaluate.rank import RankAccumulator
from dcsd.evaluate.rerank import re_ranking_features
from dcsd.evaluate.roc import roc_metrics


@torch.no_grad()
def evaluate_retrieval(
    query: FeatureSet,
    gallery: FeatureSet,
    cross_camera: bool = True,
    metric: Metric = "euclidean",
    normalize: bool = True,
    max_rank: int = 50,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    aqe: bool = False,
    rerank: bool = False,
    per_query: bool = False,
    roc: bool = False,
) -> dict[str, np.ndarray | float | int]:
    """Rank the gallery for every query and score it (see :func:`rank_metrics`).

    Distances are computed block by block of queries and scored at once, so the full
    (Nq, Ng) matrix never exists (MSMT17's would be 3.8 GB), unless ``rerank`` or ``roc`` needs
    it. The order is fast-reid's: L2-normalise, query expansion, distances, re-ranking.
    Computed in float64 when the features are float64 (from a float64 model: results that do
    not depend on the CPU's float32 arithmetic), else in float32.

    Args:
        query: query features and labels.
        gallery: gallery features and labels.
        cross_camera: ignore same-identity gallery items from the query's camera (off for
            single-camera data such as CUHK-SYSU).
        metric: ``"euclidean"`` (squared, as fast-reid) or ``"cosine"``; see
            :func:`pairwise_distance`.
        normalize: L2-normalise the features first (then both metrics rank alike).
        max_rank: length of the CMC curve.
        chunk_size: queries per block (default: about 16M distances per block).
        device: where distances and ranks are computed; default: the features' device.
        aqe: average query expansion with fast-reid's defaults (see
            :func:`average_query_expansion`; call it directly for other parameters).
        rerank: k-reciprocal re-ranking with the paper's k1=20, k2=6, lambda=0.3 (see
            :func:`re_ranking_features`).
        per_query: add the per-query arrays of :func:`rank_metrics`.
        roc: add :func:`roc_metrics`' TPR at FPR 1e-4, 1e-3 and 1e-2 (not the curve).

    Returns:
        ``{"cmc": (max_rank,) float64 array, "mAP": float, "mINP": float,
        "num_valid_queries": int}``, plus the per-query arrays and ``"TPR@FPR=1e-04"`` etc.
        when asked for.
    """
    for name, features in (("query", query), ("gallery", gallery)):
        if not isinstance(features, FeatureSet):
            raise TypeError(f"{name} must be a FeatureSet, got {type(features).__name__}")
    device = torch.device(device) if device is not None else query.features.device
    query_feats = query.features.to(device)
    gallery_feats = gallery.features.to(device)
    if normalize:
        dtype = evaluation_dtype(query_feats, gallery_feats)
        query_feats = F.normalize(query_feats.to(dtype), dim=1)
        gallery_feats = F.normalize(gallery_feats.to(dtype), dim=1)
    if aqe:
        query_feats, gallery_feats = average_query_expansion(query_feats, gallery_feats)
        if normalize:
            query_feats = F.normalize(query_feats, dim=1)
            gallery_feats = F.normalize(gallery_feats, dim=1)
    accumulator = RankAccumulator(
        gallery.pids, gallery.camids, max_rank, cross_camera, device, chunk_size, per_query
    )
    if rerank or roc:
        if rerank:
            distances = re_ranking_features(query_feats, gallery_feats, metric)
        else:
            distances = pairwise_distance(query_feats, gallery_feats, metric)
        accumulator.add(distances, query.pids, query.camids)
        result = accumulator.result()
        if roc:
            verification = roc_metrics(
                distances, query.pids, gallery.pids, query.camids, gallery.camids, cross_camera
            )
            result |= {key: value for key, value in verification.items() if "@" in key}
        return result
    blocks = distance_blocks(query_feats, gallery_feats, metric, accumulator.chunk_size)
    for start, stop, distances in blocks:
        accumulator.add(distances, query.pids[start:stop], query.camids[start:stop])
    return accumulator.result()


_COLUMNS = (("rank-1", 1), ("rank-5", 5), ("rank-10", 10))


def format_report(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A Markdown table of per-dataset results, in percent with one decimal.

    Columns: dataset, rank-1, rank-5, rank-10, mAP, mINP, and the ``TPR@FPR=...`` values that
    every result holds (:func:`roc_metrics`); a ``mean`` row (the unweighted mean over datasets)
    follows when there is more than one dataset. A rank beyond a result's CMC
    length shows as ``-`` (and is left out of the mean).

    Args:
        results: ``{dataset name: metrics}`` with ``cmc``, ``mAP`` and ``mINP`` as
            :func:`rank_metrics` returns them (fractions in [0, 1]).

    Returns:
        The table, one line per row, without a trailing newline.
    """
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping of dataset name to metrics")
    verification = [
        key
        for key in next(iter(results.values()))
        if key.startswith("TPR@FPR=") and all(key in metrics for metrics in results.values())
    ]
    header = ["dataset", *(name for name, _ in _COLUMNS), "mAP", "mINP", *verification]
    rows: list[tuple[str, list[float | None]]] = []
    for dataset, metrics in results.items():
        missing = [key for key in ("cmc", "mAP", "mINP") if key not in metrics]
        if missing:
            raise ValueError(f"results[{dataset!r}] lacks the key(s) {missing}")
        cmc = np.asarray(metrics["cmc"], dtype=np.float64).reshape(-1)
        values = [float(cmc[rank - 1]) if rank <= cmc.size else None for _, rank in _COLUMNS]
        values += [float(metrics[key]) for key in ("mAP", "mINP", *verification)]
        rows.append((str(dataset), values))
    if len(rows) > 1:
        columns = zip(*(values for _, values in rows), strict=True)
        means = []
        for column in columns:
            present = [value for value in column if value is not None]
            means.append(sum(present) / len(present) if present else None)
        rows.append(("mean", means))

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    lines += ["| " + " | ".join([name, *map(cell, values)]) + " |" for name, values in rows]
    return "\n".join(lines)
