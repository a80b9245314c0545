"""Verification metrics: the ROC of query-gallery pairs and TPR at fixed FPRs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dcsd.evaluate.rank import ArrayLike, _distmat_tensor, _id_array

# Distances per chunk of query rows.
_CHUNK_ELEMENTS = 1 << 24


def roc_metrics(
    distmat: np.ndarray | torch.Tensor,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    cross_camera: bool = True,
    fpr_targets: Sequence[float] = (1e-4, 1e-3, 1e-2),
) -> dict[str, np.ndarray | float]:
    """ROC of "same identity?" decisions over all query-gallery pairs, as fast-reid's ROC test.

    A pair is accepted when its distance is at most a threshold: TPR is the fraction of
    same-identity pairs accepted, FPR that of different-identity pairs. The pairs are those
    the ranking sees (with ``cross_camera``, same-identity pairs from the query's camera are
    left out), as in fast-reid's ``evaluate_roc``. Two differences from fast-reid, both
    deliberate: fast-reid labels the *different*-identity pairs as its positive class (so its
    "TPR@FPR" is the rate of correctly rejected impostor pairs at a rate of wrongly rejected
    genuine ones), here genuine pairs are the positives, as in verification (TAR@FAR); and
    TPR@FPR=x is the best TPR whose FPR does not exceed x, where fast-reid takes the curve point
    whose FPR is nearest to x (possibly above it).

    Exact, ties included, without sorting all Q x G distances: the genuine distances (a few per
    query) are sorted, and the impostor distances are counted between consecutive genuine ones,
    a chunk of query rows at a time.

    Args:
        distmat: (Q, G) distances, smaller is closer; NaN refused.
        q_pids: (Q,) query identity labels.
        g_pids: (G,) gallery identity labels.
        q_camids: (Q,) query camera IDs.
        g_camids: (G,) gallery camera IDs.
        cross_camera: leave out same-identity pairs from the same camera.
        fpr_targets: FPRs at which to report the TPR.

    Returns:
        ``{"fpr": (T,), "tpr": (T,), "thresholds": (T,)}`` float64 arrays, the curve's points
        from (0, 0) at threshold -inf to (1, 1) at +inf, one per distinct genuine distance in
        between; and ``"TPR@FPR=1e-04"`` etc. (fast-reid's keys) as floats.

    Raises:
        ValueError: mismatched shapes, NaN distances, or no genuine or no impostor pair.
    """
    distmat = _distmat_tensor(distmat)
    ids = {
        name: torch.from_numpy(_id_array(name, value)).to(distmat.device)
        for name, value in (
            ("q_pids", q_pids),
            ("g_pids", g_pids),
            ("q_camids", q_camids),
            ("g_camids", g_camids),
        )
    }
    num_query, num_gallery = distmat.shape
    for name, size in (
        ("q_pids", num_query),
        ("q_camids", num_query),
        ("g_pids", num_gallery),
        ("g_camids", num_gallery),
    ):
        if ids[name].numel() != size:
            raise ValueError(
                f"{name} must have {size} entries to match distmat {tuple(distmat.shape)}, "
                f"got {ids[name].numel()}"
            )
    targets = [float(target) for target in fpr_targets]
    if any(not 0 < target <= 1 for target in targets):
        raise ValueError(f"fpr_targets must lie in (0, 1], got {list(fpr_targets)}")
    distmat = distmat.detach()
    if not distmat.dtype.is_floating_point:
        distmat = distmat.double()
    chunk = max(1, _CHUNK_ELEMENTS // max(num_gallery, 1))

    def chunks():
        for start in range(0, num_query, chunk):
            stop = start + chunk
            rows = distmat[start:stop]
            if bool(torch.isnan(rows).any()):
                raise ValueError("distmat must not contain NaN")
            same = ids["q_pids"][start:stop, None] == ids["g_pids"][None]
            genuine = same
            if cross_camera:
                genuine = same & (ids["q_camids"][start:stop, None] != ids["g_camids"][None])
            yield rows, same, genuine

    genuine = torch.cat([rows[kept] for rows, _, kept in chunks()]).sort().values
    if genuine.numel() == 0:
        raise ValueError("no genuine (same-identity) pair: the ROC is undefined")
    # Impostors with exactly j genuine distances below them, j = 0..P.
    below = torch.zeros(genuine.numel() + 1, dtype=torch.int64, device=distmat.device)
    for rows, same, _ in chunks():
        impostors = rows[~same].to(genuine.dtype)
        below += torch.bincount(
            torch.searchsorted(genuine, impostors), minlength=genuine.numel() + 1
        )
    num_impostors = int(below.sum())
    if num_impostors == 0:
        raise ValueError("no impostor (different-identity) pair: the ROC is undefined")
    thresholds = torch.unique(genuine)
    # At threshold t: genuine pairs with d <= t; impostors with d <= t are those with no more
    # genuine distances below them than lie below t.
    true_pos = torch.searchsorted(genuine, thresholds, right=True)
    false_pos = below.cumsum(0)[torch.searchsorted(genuine, thresholds)]
    tpr = np.concatenate([[0.0], true_pos.cpu().double().numpy() / genuine.numel(), [1.0]])
    fpr = np.concatenate([[0.0], false_pos.cpu().double().numpy() / num_impostors, [1.0]])
    result: dict[str, np.ndarray | float] = {
        "fpr": fpr,
        "tpr": tpr,
        "thresholds": np.concatenate([[-np.inf], thresholds.cpu().double().numpy(), [np.inf]]),
    }
    for target in targets:
        result[f"TPR@FPR={target:.0e}"] = float(tpr[fpr <= target].max())
    return result
