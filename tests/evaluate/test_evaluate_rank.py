"""rank_metrics on hand-made cases, and against a plain per-query sorting loop."""

import numpy as np
import pytest
import torch

from dcsd.evaluate import RankAccumulator, rank_metrics


def reference_rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, cross_camera):
    """The textbook protocol, one query at a time with a stable sort of its row."""
    cmc_rows, aps, inps = [], [], []
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        keep = ~(same_pid & (g_camids[order] == q_camids[i])) if cross_camera else same_pid | True
        matches = same_pid[keep]
        if not matches.any():
            continue
        hits = np.flatnonzero(matches)
        cmc_rows.append(np.arange(max_rank) >= hits[0])
        aps.append(np.mean(np.arange(1, hits.size + 1) / (hits + 1)))
        inps.append(hits.size / (hits[-1] + 1))
    if not aps:
        return None, None, None, 0
    return np.mean(cmc_rows, axis=0), float(np.mean(aps)), float(np.mean(inps)), len(aps)


def single_query(distances, g_pids, g_camids, q_pid=1, q_camid=0, **kwargs):
    return rank_metrics(
        np.array([distances]), [q_pid], np.array(g_pids), [q_camid], np.array(g_camids), **kwargs
    )


def test_hand_case_ap_inp_cmc():
    # Ranked gallery: match, distractor, distractor, match -> hits at ranks 1 and 4.
    result = single_query([0.1, 0.2, 0.3, 0.4], [1, 5, 6, 1], [1, 1, 1, 1], max_rank=5)
    assert result["mAP"] == pytest.approx((1 / 1 + 2 / 4) / 2)
    assert result["mINP"] == pytest.approx(2 / 4)
    np.testing.assert_allclose(result["cmc"], [1, 1, 1, 1, 1])
    assert result["num_valid_queries"] == 1
    assert result["cmc"].dtype == np.float64 and result["cmc"].shape == (5,)


def test_distractors_count_as_negatives():
    # Distractors (identity 0 and junk -1 never queried) ahead of the only match: rank 3.
    result = single_query([0.5, 0.1, 0.2], [1, 0, -1], [2, 2, 2], max_rank=4)
    assert result["mAP"] == pytest.approx(1 / 3)
    assert result["mINP"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(result["cmc"], [0, 0, 1, 1])


def test_ties_are_broken_by_gallery_index():
    # All distances equal: the ranking is the gallery order, as a stable sort gives.
    late = single_query([0.5, 0.5, 0.5], [2, 1, 1], [1, 1, 1], max_rank=3)
    assert late["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert late["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(late["cmc"], [0, 1, 1])
    early = single_query([0.5, 0.5, 0.5], [1, 1, 2], [1, 1, 1], max_rank=3)
    assert early["mAP"] == pytest.approx(1.0)
    np.testing.assert_allclose(early["cmc"], [1, 1, 1])


def test_tie_between_a_match_and_a_negative_with_distinct_neighbours():
    # Gallery 1 (negative) and 2 (match) tie at 0.3: the negative ranks first.
    result = single_query([0.9, 0.3, 0.3, 0.1], [1, 4, 1, 3], [1, 1, 1, 1], max_rank=4)
    # Ranked: 3 (neg), 1 (neg), 2 (match), 0 (match) -> hits at ranks 3 and 4.
    assert result["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert result["mINP"] == pytest.approx(2 / 4)


def test_same_camera_matches_are_ignored_not_counted_as_negatives():
    # Gallery 0 shares identity and camera with the query: dropped, so the remaining match
    # (gallery 2) is first among the kept items even though gallery 0 is closer.
    result = single_query([0.1, 0.5, 0.2], [1, 7, 1], [0, 1, 1], q_camid=0)
    assert result["mAP"] == pytest.approx(1.0)
    assert result["cmc"][0] == 1.0
    # A same-camera item of another identity stays as a negative.
    result = single_query([0.1, 0.5, 0.2], [7, 1, 1], [0, 1, 0], q_camid=0)
    assert result["mAP"] == pytest.approx(1 / 2)


def test_query_without_valid_match_is_skipped():
    distmat = np.array([[0.3, 0.1, 0.2], [0.1, 0.2, 0.3]])
    g_pids, g_camids = np.array([1, 2, 3]), np.array([1, 1, 1])
    # Query 0 (identity 1) matches gallery 0 at rank 3; query 1's only match shares its camera.
    result = rank_metrics(distmat, [1, 2], g_pids, [0, 1], g_camids, max_rank=3)
    assert result["num_valid_queries"] == 1
    assert result["mAP"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(result["cmc"], [0, 0, 1])


def test_no_valid_query_raises():
    with pytest.raises(ValueError, match="no query has a valid match.*cross_camera=False"):
        single_query([0.1, 0.2], [1, 1], [0, 0], q_camid=0)
    with pytest.raises(ValueError, match="no query has a valid match"):
        single_query([0.1, 0.2], [2, 3], [0, 0], cross_camera=False)


def test_single_camera_needs_cross_camera_off():
    # CUHK-SYSU style: one camera. With the filter off the same-camera match counts.
    result = single_query([0.4, 0.1, 0.3], [1, 2, 1], [0, 0, 0], q_camid=0, cross_camera=False)
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert result["mINP"] == pytest.approx(2 / 3)
    np.testing.assert_allclose(result["cmc"][:3], [0, 1, 1])


def test_cmc_longer_than_gallery():
    result = single_query([0.2, 0.1], [1, 2], [1, 1], max_rank=6)
    np.testing.assert_allclose(result["cmc"], [0, 1, 1, 1, 1, 1])


def test_infinite_distances_rank_last():
    result = single_query([np.inf, 0.1, 0.2, -np.inf], [1, 2, 1, 3], [1, 1, 1, 1], max_rank=4)
    # Ranked: 3 (-inf), 1, 2 (match), 0 (+inf, match).
    assert result["mAP"] == pytest.approx((1 / 3 + 2 / 4) / 2)


@pytest.mark.parametrize("seed", range(6))
def test_matches_per_query_loop_on_random_data(seed):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = int(rng.integers(1, 40)), int(rng.integers(1, 300))
    num_ids, num_cams = int(rng.integers(1, 12)), int(rng.integers(1, 5))
    kind = seed % 3
    if kind == 0:  # distinct continuous distances
        distmat = rng.random((num_query, num_gallery), dtype=np.float32)
    elif kind == 1:  # heavy ties
        distmat = rng.integers(0, 4, (num_query, num_gallery)).astype(np.float64)
    else:  # ties and infinities, large offset with a tiny spread
        distmat = 1e4 + rng.integers(0, 50, (num_query, num_gallery)) * 1e-3
        distmat[rng.random(distmat.shape) < 0.1] = np.inf
    q_pids = rng.integers(0, num_ids, num_query)
    g_pids = rng.integers(0, num_ids, num_gallery)
    q_camids = rng.integers(0, num_cams, num_query)
    g_camids = rng.integers(0, num_cams, num_gallery)
    for cross_camera in (True, False):
        cmc, m_ap, m_inp, num_valid = reference_rank_metrics(
            distmat, q_pids, g_pids, q_camids, g_camids, 20, cross_camera
        )
        if num_valid == 0:
            with pytest.raises(ValueError, match="no query"):
                rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, 20, cross_camera)
            continue
        for chunk_size in (None, 1, 7):
            result = rank_metrics(
                torch.from_numpy(distmat) if chunk_size == 7 else distmat,
                q_pids,
                g_pids,
                q_camids,
                g_camids,
                max_rank=20,
                cross_camera=cross_camera,
                chunk_size=chunk_size,
            )
            assert result["num_valid_queries"] == num_valid
            np.testing.assert_allclose(result["cmc"], cmc)
            assert result["mAP"] == pytest.approx(m_ap, rel=1e-12)
            assert result["mINP"] == pytest.approx(m_inp, rel=1e-12)


def test_realistic_sizes_match_loop():
    # Many images per identity, several cameras, a gallery large enough for many buckets.
    rng = np.random.default_rng(11)
    g_pids = rng.integers(0, 40, 3000)
    g_camids = rng.integers(0, 6, 3000)
    q_pids = rng.integers(0, 40, 50)
    q_camids = rng.integers(0, 6, 50)
    distmat = rng.normal(1.0, 0.1, (50, 3000)).astype(np.float32)
    distmat[q_pids[:, None] == g_pids[None, :]] -= 0.15
    cmc, m_ap, m_inp, num_valid = reference_rank_metrics(
        distmat, q_pids, g_pids, q_camids, g_camids, 50, True
    )
    result = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids)
    assert result["num_valid_queries"] == num_valid
    np.testing.assert_allclose(result["cmc"], cmc)
    assert result["mAP"] == pytest.approx(m_ap, rel=1e-12)
    assert result["mINP"] == pytest.approx(m_inp, rel=1e-12)


@pytest.mark.parametrize(
    "distances",
    [
        [0.0, 1e-40, 0.5, 1e-41, 3e38, -3e38],  # subnormal spread: scale overflows float32
        [1e30, 1e30 + 1e24, 2e30, 1e30, 0.0, 1e30],  # large offset, tiny relative spread
    ],
)
def test_extreme_float32_distances_match_loop(distances):
    distmat = np.array([distances, distances[::-1]], dtype=np.float32)
    ids = dict(
        q_pids=np.array([1, 2]),
        g_pids=np.array([1, 2, 1, 2, 1, 3]),
        q_camids=np.array([0, 0]),
        g_camids=np.array([1, 1, 1, 1, 0, 1]),
    )
    cmc, m_ap, m_inp, num_valid = reference_rank_metrics(
        distmat, **ids, max_rank=6, cross_camera=True
    )
    result = rank_metrics(distmat, **ids, max_rank=6)
    assert result["num_valid_queries"] == num_valid
    np.testing.assert_allclose(result["cmc"], cmc)
    assert result["mAP"] == pytest.approx(m_ap, rel=1e-12)
    assert result["mINP"] == pytest.approx(m_inp, rel=1e-12)


def test_half_precision_distances_equal_their_float32_values():
    rng = np.random.default_rng(3)
    distmat = torch.rand(10, 60, generator=torch.Generator().manual_seed(0)).half()
    ids = dict(
        q_pids=rng.integers(0, 4, 10),
        g_pids=rng.integers(0, 4, 60),
        q_camids=rng.integers(0, 2, 10),
        g_camids=rng.integers(0, 2, 60),
    )
    half = rank_metrics(distmat, **ids)
    full = rank_metrics(distmat.float().numpy(), **ids)
    assert half["mAP"] == full["mAP"] and half["mINP"] == full["mINP"]


def test_accumulator_blocks_equal_one_call():
    rng = np.random.default_rng(5)
    distmat = rng.random((30, 80))
    q_pids, g_pids = rng.integers(0, 5, 30), rng.integers(0, 5, 80)
    q_camids, g_camids = rng.integers(0, 3, 30), rng.integers(0, 3, 80)
    accumulator = RankAccumulator(g_pids, g_camids, max_rank=10)
    for start in (0, 11, 25):
        stop = {0: 11, 11: 25, 25: 30}[start]
        accumulator.add(
            torch.from_numpy(distmat[start:stop]), q_pids[start:stop], q_camids[start:stop]
        )
    whole = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=10)
    blocks = accumulator.result()
    np.testing.assert_allclose(blocks["cmc"], whole["cmc"])
    assert blocks["mAP"] == pytest.approx(whole["mAP"])
    assert blocks["num_valid_queries"] == whole["num_valid_queries"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"q_pids": [1, 2]}, ValueError, "len\\(q_pids\\)"),
        ({"g_camids": [0, 0]}, ValueError, "g_camids"),
        ({"q_camids": [0, 0]}, ValueError, "q_camids"),
        ({"distmat": np.array([[np.nan, 0.1, 0.2]])}, ValueError, "NaN"),
        ({"distmat": np.zeros(3)}, ValueError, "2-D"),
        ({"q_pids": [1.5]}, TypeError, "integers"),
        ({"max_rank": 0}, ValueError, "max_rank"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"distmat": [[0.1, 0.2, 0.3]]}, TypeError, "distmat"),
    ],
)
def test_validation(kwargs, error, match):
    arguments = dict(
        distmat=np.array([[0.1, 0.2, 0.3]]),
        q_pids=[1],
        g_pids=[1, 2, 1],
        q_camids=[0],
        g_camids=[1, 1, 1],
    )
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        rank_metrics(**arguments)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_distances_match_cpu():
    rng = np.random.default_rng(8)
    distmat = torch.from_numpy(rng.integers(0, 6, (40, 500)).astype(np.float32))
    ids = dict(
        q_pids=rng.integers(0, 9, 40),
        g_pids=rng.integers(0, 9, 500),
        q_camids=rng.integers(0, 3, 40),
        g_camids=rng.integers(0, 3, 500),
    )
    cpu = rank_metrics(distmat, **ids)
    gpu = rank_metrics(distmat.cuda(), **ids)
    np.testing.assert_allclose(gpu["cmc"], cpu["cmc"])
    assert gpu["mAP"] == pytest.approx(cpu["mAP"], rel=1e-12)
    assert gpu["mINP"] == pytest.approx(cpu["mINP"], rel=1e-12)


def test_distmat_requiring_grad_is_accepted():
    distmat = torch.tensor([[0.3, 0.1, 0.2]], requires_grad=True)
    result = rank_metrics(distmat, [1], [1, 2, 1], [0], [1, 1, 1])
    assert result["mAP"] == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize("seed", range(3))
def test_per_query_arrays_match_the_loop_query_by_query(seed):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = 30, 60
    distmat = rng.integers(0, 6, (num_query, num_gallery)).astype(np.float32)  # ties
    q_pids, g_pids = rng.integers(0, 10, num_query), rng.integers(0, 8, num_gallery)
    q_camids, g_camids = rng.integers(0, 3, num_query), rng.integers(0, 3, num_gallery)
    expected = {"query_index": [], "all_AP": [], "all_INP": [], "first_match_rank": []}
    for i in range(num_query):
        cmc, m_ap, m_inp, valid = reference_rank_metrics(
            distmat[i : i + 1], q_pids[i : i + 1], g_pids, q_camids[i : i + 1], g_camids,
            num_gallery, True,
        )  # fmt: skip
        if valid:
            expected["query_index"].append(i)
            expected["all_AP"].append(m_ap)
            expected["all_INP"].append(m_inp)
            expected["first_match_rank"].append(num_gallery - int(cmc.sum()) + 1)
    assert 0 < len(expected["query_index"]) < num_query  # some queries are skipped
    result = rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids, chunk_size=7, per_query=True)
    for key, values in expected.items():
        np.testing.assert_allclose(result[key], values, rtol=1e-12)
    assert result["query_index"].dtype == result["first_match_rank"].dtype == np.int64
    assert result["mAP"] == pytest.approx(result["all_AP"].mean())
    assert "all_AP" not in rank_metrics(distmat, q_pids, g_pids, q_camids, g_camids)
