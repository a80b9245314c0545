"""k-reciprocal re-ranking against a plain transcription of the published algorithm."""

import numpy as np
import pytest
import torch

from dcsd.evaluate import re_ranking, re_ranking_features
from dcsd.evaluate import rerank as rerank_module


def published_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value, dtype=np.float32):
    """Zhong et al.'s algorithm written out with dense matrices and one image at a time (the
    published code computes in float32)."""
    num_query = q_g.shape[0]
    joint = np.block([[q_q, q_g], [q_g.T, g_g]])
    joint = np.power(joint, 2).astype(dtype)
    joint = np.transpose(joint / np.max(joint, axis=0))
    num_all = joint.shape[0]
    ranking = np.argsort(joint).astype(np.int32)

    def reciprocal(i, k):
        forward = ranking[i, : k + 1]
        return np.array([c for c in forward if i in ranking[c, : k + 1]], dtype=np.int64)

    encoding = np.zeros_like(joint)
    half = int(np.around(k1 / 2.0))
    for i in range(num_all):
        own = reciprocal(i, k1)
        expansion = list(own)
        for candidate in own:
            theirs = reciprocal(candidate, half)
            if len(np.intersect1d(theirs, own)) > 2.0 / 3 * len(theirs):
                expansion.extend(theirs)
        expansion = np.unique(expansion)
        weight = np.exp(-joint[i, expansion])
        encoding[i, expansion] = weight / np.sum(weight)
    if k2 != 1:
        encoding = np.stack([encoding[ranking[i, :k2]].mean(axis=0) for i in range(num_all)])
    jaccard = np.zeros((num_query, num_all), dtype=dtype)
    for i in range(num_query):
        overlap = np.minimum(encoding[i][None], encoding).sum(axis=1)
        jaccard[i] = 1 - overlap / (2 - overlap)
    final = jaccard * (1 - lambda_value) + joint[:num_query] * lambda_value
    return final[:, num_query:]


def clustered_distances(seed, num_query, num_gallery, num_ids=6, dim=8):
    """Euclidean distances among points drawn around a few identity centres (no ties)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids, dim))
    ids = rng.integers(0, num_ids, num_query + num_gallery)
    points = centres[ids] + 0.6 * rng.normal(size=(ids.size, dim))
    d = np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1))
    return d[:num_query, num_query:], d[:num_query, :num_query], d[num_query:, num_query:]


@pytest.mark.parametrize(
    "seed, num_query, num_gallery, k1, k2, lambda_value",
    [
        (0, 7, 40, 20, 6, 0.3),  # the paper's parameters
        (1, 12, 50, 5, 1, 0.3),  # no query expansion; k1/2 = 2.5 rounds to 2
        (2, 3, 30, 6, 3, 0.0),  # Jaccard alone
        (3, 10, 25, 8, 2, 1.0),  # original distance alone
        (4, 1, 60, 12, 4, 0.5),
    ],
)
def test_matches_the_published_algorithm(seed, num_query, num_gallery, k1, k2, lambda_value):
    q_g, q_q, g_g = clustered_distances(seed, num_query, num_gallery)
    q_g, q_q, g_g = (d.astype(np.float32) for d in (q_g, q_q, g_g))
    expected = published_re_ranking(q_g, q_q, g_g, k1, k2, lambda_value)
    result = re_ranking(q_g, q_q, g_g, k1=k1, k2=k2, lambda_value=lambda_value)
    assert isinstance(result, np.ndarray) and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
    # The re-ranking changes the order (else the test would not see the Jaccard term).
    if 0 < lambda_value < 1:
        assert (np.argsort(result, axis=1) != np.argsort(q_g, axis=1)).any()


def test_float64_distances_are_reranked_in_float64():
    q_g, q_q, g_g = clustered_distances(0, 7, 40)
    expected = published_re_ranking(q_g, q_q, g_g, 20, 6, 0.3, dtype=np.float64)
    result = re_ranking(q_g, q_q, g_g)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, expected, rtol=1e-12, atol=1e-14)
    # Mixed inputs compute in float64 too; float32 ones stay float32 (to float32's accuracy).
    mixed = re_ranking(q_g.astype(np.float32), q_q, g_g)
    assert mixed.dtype == np.float64
    single = re_ranking(q_g.astype(np.float32), q_q.astype(np.float32), g_g.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=1e-5, atol=1e-6)
    features = torch.from_numpy(np.random.default_rng(1).normal(size=(30, 8)))
    from_features = re_ranking_features(features[:6], features[6:], k1=6, k2=3)
    assert from_features.dtype == torch.float64


def test_small_blocks_give_the_same_result(monkeypatch):
    q_g, q_q, g_g = clustered_distances(5, 9, 45)
    expected = re_ranking(q_g, q_q, g_g, k1=7, k2=3)
    monkeypatch.setattr(rerank_module, "_BLOCK_ELEMENTS", 100)  # blocks of 1-2 rows
    monkeypatch.setattr(rerank_module, "_JOIN_PAIRS", 50)  # one query per join block
    np.testing.assert_allclose(re_ranking(q_g, q_q, g_g, k1=7, k2=3), expected, rtol=1e-6)


def test_torch_in_torch_out_and_features_entry_point():
    rng = np.random.default_rng(6)
    feats = torch.from_numpy(rng.normal(size=(40, 16)).astype(np.float32))
    query, gallery = feats[:8], feats[8:]
    d = torch.cdist(feats, feats).square()
    result = re_ranking(d[:8, 8:], d[:8, :8], d[8:, 8:], k1=6, k2=3)
    assert isinstance(result, torch.Tensor) and result.shape == (8, 32)
    from_features = re_ranking_features(query, gallery, k1=6, k2=3)
    torch.testing.assert_close(from_features, result, rtol=1e-4, atol=1e-5)


def test_memory_refusal_names_what_it_needs(monkeypatch):
    q_g, q_q, g_g = clustered_distances(7, 5, 20)
    monkeypatch.setattr(rerank_module, "_available_bytes", lambda device: 1000)
    with pytest.raises(MemoryError, match=r"re_ranking needs about .* GiB of cpu memory"):
        re_ranking(q_g, q_q, g_g, k1=4, k2=2)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((np.ones((2, 3)), np.ones((2, 2)), np.ones((2, 2))), {}, ValueError, "g_g_dist must be"),
        ((np.ones((2, 3)), np.ones((3, 3)), np.ones((3, 3))), {}, ValueError, "q_q_dist must be"),
        ((np.ones(3), np.ones((1, 1)), np.ones((3, 3))), {}, ValueError, "q_g_dist must be 2-D"),
        (([[1.0]], np.ones((1, 1)), np.ones((1, 1))), {}, TypeError, "q_g_dist must be a numpy"),
        ((np.ones((2, 3), int), np.ones((2, 2)), np.ones((3, 3))), {}, TypeError, "floating"),
        (None, {"k1": 0}, ValueError, "k1 must be an integer >= 1"),
        (None, {"k2": 2.5}, ValueError, "k2 must be an integer >= 1"),
        (None, {"lambda_value": 1.5}, ValueError, "lambda_value must be in"),
        (None, {"k1": 30}, ValueError, "must not exceed the number of images"),
        ("inf", {}, ValueError, "must be finite"),
    ],
)
def test_bad_input(args, kwargs, error, match):
    if args is None or args == "inf":
        args = clustered_distances(8, 4, 16)
        if kwargs == {}:
            args = (np.where(args[0] > 1.5, np.inf, args[0]), *args[1:])
    with pytest.raises(error, match=match):
        re_ranking(*args, **({"k1": 4, "k2": 2} | kwargs))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    q_g, q_q, g_g = clustered_distances(9, 20, 80)
    expected = re_ranking(q_g, q_q, g_g)
    on_gpu = re_ranking(*(torch.from_numpy(m).cuda() for m in (q_g, q_q, g_g)))
    assert on_gpu.is_cuda
    np.testing.assert_allclose(on_gpu.cpu().numpy(), expected, rtol=1e-4, atol=1e-5)
