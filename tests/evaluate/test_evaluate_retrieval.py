"""pairwise_distance, evaluate_retrieval and format_report."""

import numpy as np
import pytest
import torch

from dcsd.evaluate import (
    FeatureSet,
    average_query_expansion,
    evaluate_retrieval,
    format_report,
    pairwise_distance,
    rank_metrics,
    re_ranking,
    roc_metrics,
)


def test_pairwise_distance_hand_cases():
    query = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    gallery = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    # Squared Euclidean.
    expected = torch.tensor([[25.0, 1.0], [20.0, 0.0]])
    torch.testing.assert_close(pairwise_distance(query, gallery), expected)
    torch.testing.assert_close(pairwise_distance(query, gallery, chunk_size=1), expected)
    cosine = pairwise_distance(
        torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0], [5.0, 0.0]]), "cosine"
    )
    torch.testing.assert_close(cosine, torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize(
    "query_dtype, gallery_dtype, computed",
    [
        (torch.float64, torch.float64, torch.float64),
        (torch.float32, torch.float64, torch.float64),
        (torch.float32, torch.float32, torch.float32),
        (torch.float16, torch.bfloat16, torch.float32),
    ],
)
def test_pairwise_distance_dtype(query_dtype, gallery_dtype, computed):
    query = torch.randn(5, 8, dtype=torch.float64).to(query_dtype)
    gallery = torch.randn(9, 8, dtype=torch.float64).to(gallery_dtype)
    distances = pairwise_distance(query, gallery)
    assert distances.dtype == computed
    expected = torch.cdist(query.double(), gallery.double()).pow(2).to(computed)
    tolerance = 1e-12 if computed == torch.float64 else 1e-4
    torch.testing.assert_close(distances, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("aqe, rerank", [(False, False), (True, False), (False, True)])
def test_float64_features_keep_float64_ties_apart(aqe, rerank):
    # Each query's true match sits 1e-5 off its direction, an impostor 2e-5 off: squared
    # distances 1e-10 and 4e-10 after normalising, which float64 tells apart and float32
    # rounds both to 0 (a tie). Impostors come first in the gallery, so a tie ranks them first.
    num_ids, dim = 12, 16
    centres = torch.nn.functional.normalize(
        torch.randn(num_ids, dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64),
        dim=1,
    )
    offset = torch.zeros(num_ids, dim, dtype=torch.float64)
    offset[torch.arange(num_ids), (torch.arange(num_ids) + 1) % dim] = 1.0
    offset -= (offset * centres).sum(1, keepdim=True) * centres  # orthogonal to the centre
    offset = torch.nn.functional.normalize(offset, dim=1)
    impostors = centres + 2e-5 * offset
    matches = centres + 1e-5 * offset
    ids = np.arange(num_ids)
    query = FeatureSet(centres, ids, np.zeros(num_ids, int), [f"q{i}" for i in ids])
    gallery = FeatureSet(
        torch.cat([impostors, matches]),
        np.concatenate([ids + num_ids, ids]),
        np.ones(2 * num_ids, int),
        [f"g{i}" for i in range(2 * num_ids)],
    )
    kwargs = {"aqe": aqe, "rerank": rerank, "max_rank": 2}
    exact = evaluate_retrieval(query, gallery, **kwargs)
    assert exact["cmc"][0] == 1.0
    # The same features in float32: the tie costs rank-1 (else the test would not see the dtype).
    rounded = FeatureSet(query.features.float(), query.pids, query.camids, query.paths)
    rounded_gallery = FeatureSet(
        gallery.features.float(), gallery.pids, gallery.camids, gallery.paths
    )
    assert evaluate_retrieval(rounded, rounded_gallery, **kwargs)["cmc"][0] < 1.0


@pytest.mark.parametrize(
    ("query", "gallery", "kwargs", "error", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(4, 5), {}, ValueError, "feature size"),
        (torch.zeros(2, 3), torch.zeros(4, 3), {"metric": "l1"}, ValueError, "metric"),
        (torch.zeros(2), torch.zeros(4, 3), {}, ValueError, "query_feats"),
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(4, 3), {}, TypeError, "floating"),
        (torch.zeros(2, 3), torch.zeros(4, 3), {"chunk_size": 0}, ValueError, "chunk_size"),
    ],
)
def test_pairwise_distance_validation(query, gallery, kwargs, error, match):
    with pytest.raises(error, match=match):
        pairwise_distance(query, gallery, **kwargs)


def random_split(generator, size, num_ids, num_cams, dim=16):
    pids = torch.randint(0, num_ids, (size,), generator=generator)
    centres = torch.randn(num_ids, dim, generator=torch.Generator().manual_seed(99))
    features = centres[pids] + 0.8 * torch.randn(size, dim, generator=generator)
    camids = torch.randint(0, num_cams, (size,), generator=generator)
    return FeatureSet(features, pids.numpy(), camids.numpy(), [f"{i}.jpg" for i in range(size)])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("normalize", [True, False])
def test_evaluate_retrieval_equals_rank_metrics_on_full_matrix(metric, normalize):
    generator = torch.Generator().manual_seed(0)
    query = random_split(generator, 23, 8, 3)
    gallery = random_split(generator, 150, 8, 3)
    query_feats, gallery_feats = query.features, gallery.features
    if normalize:
        query_feats = torch.nn.functional.normalize(query_feats, dim=1)
        gallery_feats = torch.nn.functional.normalize(gallery_feats, dim=1)
    distmat = pairwise_distance(query_feats, gallery_feats, metric)
    expected = rank_metrics(distmat, query.pids, gallery.pids, query.camids, gallery.camids)
    for chunk_size in (None, 5):
        result = evaluate_retrieval(
            query, gallery, metric=metric, normalize=normalize, chunk_size=chunk_size
        )
        np.testing.assert_allclose(result["cmc"], expected["cmc"])
        assert result["mAP"] == pytest.approx(expected["mAP"], rel=1e-12)
        assert result["mINP"] == pytest.approx(expected["mINP"], rel=1e-12)
        assert result["num_valid_queries"] == expected["num_valid_queries"]
    # Clustered features retrieve far better than chance.
    assert expected["mAP"] > 0.5


def test_evaluate_retrieval_cross_camera_off_and_max_rank():
    generator = torch.Generator().manual_seed(1)
    query = random_split(generator, 10, 5, 1)
    gallery = random_split(generator, 40, 5, 1)
    with pytest.raises(ValueError, match="cross_camera=False"):
        evaluate_retrieval(query, gallery)
    result = evaluate_retrieval(query, gallery, cross_camera=False, max_rank=7)
    assert result["cmc"].shape == (7,)
    assert result["num_valid_queries"] == 10


def test_evaluate_retrieval_rejects_non_feature_sets():
    generator = torch.Generator().manual_seed(2)
    gallery = random_split(generator, 5, 2, 2)
    with pytest.raises(TypeError, match="query must be a FeatureSet"):
        evaluate_retrieval(torch.zeros(3, 16), gallery)


def test_format_report_table_and_mean_row():
    results = {
        "market1501": {
            "cmc": np.array([0.9, 0.93, 0.95, 0.96, 0.97, 0.97, 0.98, 0.98, 0.98, 0.99]),
            "mAP": 0.8612,
            "mINP": 0.5,
        },
        "msmt17": {
            "cmc": np.linspace(0.7, 0.9, 12),
            "mAP": 0.5,
            "mINP": 0.14444,
        },
    }
    expected = "\n".join(
        [
            "| dataset | rank-1 | rank-5 | rank-10 | mAP | mINP |",
            "|---|---:|---:|---:|---:|---:|",
            "| market1501 | 90.0 | 97.0 | 99.0 | 86.1 | 50.0 |",
            "| msmt17 | 70.0 | 77.3 | 86.4 | 50.0 | 14.4 |",
            "| mean | 80.0 | 87.1 | 92.7 | 68.1 | 32.2 |",
        ]
    )
    assert format_report(results) == expected


def test_format_report_single_dataset_short_cmc():
    report = format_report({"cuhk03": {"cmc": [0.5, 0.75], "mAP": 0.25, "mINP": 0.125}})
    assert report.splitlines()[2] == "| cuhk03 | 50.0 | - | - | 25.0 | 12.5 |"
    assert len(report.splitlines()) == 3


def test_format_report_validation():
    with pytest.raises(ValueError, match="non-empty"):
        format_report({})
    with pytest.raises(ValueError, match="mINP"):
        format_report({"a": {"cmc": [1.0], "mAP": 1.0}})


def test_evaluate_retrieval_options_equal_the_functions_composed():
    generator = torch.Generator().manual_seed(3)
    query = random_split(generator, 12, 6, 3)
    gallery = random_split(generator, 60, 6, 3)
    q = torch.nn.functional.normalize(query.features, dim=1)
    g = torch.nn.functional.normalize(gallery.features, dim=1)
    q, g = average_query_expansion(q, g)
    q = torch.nn.functional.normalize(q, dim=1)
    g = torch.nn.functional.normalize(g, dim=1)
    distmat = re_ranking(pairwise_distance(q, g), pairwise_distance(q, q), pairwise_distance(g, g))
    labels = (query.pids, gallery.pids, query.camids, gallery.camids)
    expected = rank_metrics(distmat, *labels, per_query=True)
    expected |= roc_metrics(distmat, *labels)
    result = evaluate_retrieval(query, gallery, aqe=True, rerank=True, per_query=True, roc=True)
    assert result["mAP"] == pytest.approx(expected["mAP"], rel=1e-5)
    np.testing.assert_allclose(result["all_AP"], expected["all_AP"], rtol=1e-5)
    np.testing.assert_array_equal(result["query_index"], expected["query_index"])
    for key in ("TPR@FPR=1e-04", "TPR@FPR=1e-03", "TPR@FPR=1e-02"):
        assert result[key] == pytest.approx(expected[key])
    assert "fpr" not in result
    # The options change the result (else this test would not see them).
    assert evaluate_retrieval(query, gallery)["mAP"] != pytest.approx(result["mAP"])
    assert "| TPR@FPR=1e-04 |" in format_report({"synth": result}).splitlines()[0]
