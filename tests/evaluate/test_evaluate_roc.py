"""roc_metrics against scikit-learn's roc_curve over the explicit list of pairs."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from dcsd.evaluate import roc as roc_module
from dcsd.evaluate import roc_metrics


def plain_pairs(distmat, q_pids, g_pids, q_camids, g_camids, cross_camera):
    """(distance, genuine?) of every pair the protocol keeps, one query at a time."""
    scores, labels = [], []
    for i in range(distmat.shape[0]):
        same = g_pids == q_pids[i]
        keep = ~(same & (g_camids == q_camids[i])) if cross_camera else np.ones_like(same)
        scores.extend(distmat[i][keep])
        labels.extend(same[keep])
    return np.array(scores), np.array(labels)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("cross_camera", [True, False])
def test_tpr_at_fpr_matches_sklearn(seed, cross_camera, monkeypatch):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 40, 300
    q_pids, g_pids = rng.integers(0, 20, num_query), rng.integers(0, 20, num_gallery)
    q_camids, g_camids = rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery)
    distmat = rng.normal(size=(num_query, num_gallery)) + 2.0 * (q_pids[:, None] != g_pids)
    if seed % 2:  # heavy ties between genuine and impostor distances
        distmat = np.round(distmat, 1)
    monkeypatch.setattr(roc_module, "_CHUNK_ELEMENTS", 1000)  # several chunks
    targets = (1e-3, 1e-2, 0.1, 0.5)
    result = roc_metrics(distmat, q_pids, g_pids, q_camids, g_camids, cross_camera, targets)
    scores, labels = plain_pairs(distmat, q_pids, g_pids, q_camids, g_camids, cross_camera)
    fpr, tpr, _ = roc_curve(labels, -scores, drop_intermediate=False)
    for target in targets:
        assert result[f"TPR@FPR={target:.0e}"] == pytest.approx(tpr[fpr <= target].max())
    # Every point of our curve is a point of sklearn's (ours keeps the genuine thresholds).
    ours = set(zip(result["fpr"].round(12), result["tpr"].round(12), strict=True))
    assert ours <= set(zip(fpr.round(12), tpr.round(12), strict=True))
    assert result["thresholds"][0] == -np.inf and result["thresholds"][-1] == np.inf
    assert np.all(np.diff(result["fpr"]) >= 0) and np.all(np.diff(result["tpr"]) >= 0)


def test_torch_input_and_fast_reid_keys():
    distmat = torch.tensor([[0.1, 0.5, 0.3, 0.9]])
    result = roc_metrics(distmat, [1], [1, 2, 1, 3], [0], [1, 1, 2, 1])
    assert sorted(k for k in result if k.startswith("TPR")) == [
        "TPR@FPR=1e-02",
        "TPR@FPR=1e-03",
        "TPR@FPR=1e-04",
    ]
    # Genuine at 0.1 and 0.3, impostors at 0.5 and 0.9: separable, TPR 1 at FPR 0.
    assert result["TPR@FPR=1e-04"] == 1.0
    np.testing.assert_allclose(result["tpr"], [0, 0.5, 1, 1])
    np.testing.assert_allclose(result["fpr"], [0, 0, 0, 1])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([[0.1, 0.2]], [1], [2, 3], [0], [0, 0]), {}, "no genuine"),
        (([[0.1, 0.2]], [1], [1, 1], [0], [1, 1]), {}, "no impostor"),
        (([[np.nan, 0.2]], [1], [1, 2], [0], [1, 1]), {}, "NaN"),
        (([[0.1, 0.2]], [1], [1, 2, 3], [0], [1, 1]), {}, "g_pids must have 2 entries"),
        (([[0.1, 0.2]], [1], [1, 2], [0], [1, 1]), {"fpr_targets": (0,)}, "fpr_targets"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        roc_metrics(np.array(args[0]), *args[1:], **kwargs)
