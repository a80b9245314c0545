"""Average query expansion against a plain transcription of fast-reid's aqe."""

import numpy as np
import pytest
import torch

from dcsd.evaluate import average_query_expansion
from dcsd.evaluate import query_expansion as qe_module


def plain_aqe(query, gallery, times, k, alpha):
    """One feature at a time with the full similarity matrix, in float64."""
    features = np.concatenate([query, gallery]).astype(np.float64)
    for _ in range(times):
        unit = features / np.linalg.norm(features, axis=1, keepdims=True)
        similarity = unit @ unit.T
        rows = []
        for i in range(features.shape[0]):
            nearest = np.argsort(-similarity[i])[:k]
            weights = similarity[i, nearest] ** alpha
            rows.append((features[nearest] * weights[:, None]).mean(axis=0))
        features = np.stack(rows)
    return features[: query.shape[0]], features[query.shape[0] :]


@pytest.mark.parametrize(
    "dtype, tolerance", [(torch.float32, 1e-4), (torch.float64, 1e-12), (torch.float16, 1e-2)]
)
@pytest.mark.parametrize("times, k, alpha", [(1, 5, 3.0), (2, 3, 1.0), (1, 1, 3.0)])
def test_matches_plain_transcription(times, k, alpha, dtype, tolerance, monkeypatch):
    rng = np.random.default_rng(times * 10 + k)
    query = torch.from_numpy(rng.normal(size=(6, 12))).to(dtype)
    gallery = torch.from_numpy(rng.normal(size=(30, 12))).to(dtype)
    expected = plain_aqe(query.double().numpy(), gallery.double().numpy(), times, k, alpha)
    monkeypatch.setattr(qe_module, "_BLOCK_ELEMENTS", 100)  # several blocks of rows
    result = average_query_expansion(query, gallery, times=times, k=k, alpha=alpha)
    for got, want in zip(result, expected, strict=True):
        # Computed in float64 for float64 features, else in float32.
        assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        np.testing.assert_allclose(got.numpy(), want, rtol=tolerance, atol=tolerance / 10)
    if k == 1:  # only the feature itself, weight 1: unchanged
        np.testing.assert_allclose(result[0].numpy(), query.float().numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, r"k must be an integer in \[1, 7\]"),
        ({"k": 8}, r"k must be an integer in \[1, 7\]"),
        ({"times": 0}, "times must be an integer >= 1"),
        ({"gallery_feats": torch.ones(4, 3)}, "same feature size"),
        ({"query_feats": torch.ones(3)}, "query_feats must be 2-D"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"query_feats": torch.ones(3, 2), "gallery_feats": torch.ones(4, 2)} | kwargs
    with pytest.raises(ValueError, match=match):
        average_query_expansion(**args)
