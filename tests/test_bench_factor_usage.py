"""bench/factor_usage.py's measures: the explained share against a plain sum-of-squares
computation, and a layer's measures when its information is switched off or known. Its command
runs on the quick benchmark's runs in tests/test_bench_domain_conflict.py."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import factor_usage  # noqa: E402
from factor_usage import explained_share, layer_usage  # noqa: E402

import dcsd  # noqa: E402
from dcsd.data import MultiDomainDataset, make_synthetic_domains  # noqa: E402
from dcsd.modules import DCSDConv  # noqa: E402


def sums_of_squares(values: np.ndarray, groups: np.ndarray, within: np.ndarray | None) -> float:
    """Between-group over total sum of squares, group by group in numpy."""
    flat = values.reshape(len(values), -1)
    total = ((flat - flat.mean(0)) ** 2).sum()
    between = 0.0
    for group in np.unique(groups):
        rows = flat[groups == group]
        if within is None:
            reference = flat.mean(0)
        else:
            (outer,) = np.unique(within[groups == group])  # the group nests in one outer group
            reference = flat[within == outer].mean(0)
        between += len(rows) * ((rows.mean(0) - reference) ** 2).sum()
    return between / total


def test_explained_share_is_the_between_group_sum_of_squares_over_the_total():
    generator = np.random.default_rng(0)
    values = generator.normal(size=(60, 4, 3))
    domains = generator.integers(0, 3, size=60)
    cameras = domains * 5 + generator.integers(0, 4, size=60)  # cameras nest in domains
    values[domains == 1] += 2.0  # a domain effect, so the shares are far from 0 and 1
    tensor = torch.from_numpy(values)
    share = explained_share(tensor, torch.from_numpy(domains))
    assert share == pytest.approx(sums_of_squares(values, domains, None), rel=1e-12)
    assert 0.3 < share < 0.9
    camera_share = explained_share(tensor, torch.from_numpy(cameras), torch.from_numpy(domains))
    assert camera_share == pytest.approx(sums_of_squares(values, cameras, domains), rel=1e-12)
    assert explained_share(torch.ones(5, 3), torch.tensor([0, 0, 1, 1, 2])) == 0.0


def make_layer(**kwargs) -> DCSDConv:
    torch.manual_seed(0)
    return DCSDConv(8, num_domains=2, num_cameras=4, **kwargs)


def test_a_layer_without_information_leaves_its_filters_alone():
    layer = make_layer()
    for mlp in (layer.domain_mlp, layer.camera_mlp):  # D and Cam are 0 for every image
        torch.nn.init.zeros_(mlp[-1].weight)
        torch.nn.init.zeros_(mlp[-1].bias)
    pooled = torch.randn(12, 8)
    domains = torch.arange(12) % 2
    usage = layer_usage(layer, pooled, domains, domains * 2 + torch.arange(12) % 3 // 2)
    assert usage["ratio"] == 0.0 and usage["change"] == 0.0
    assert usage["domain_share"] == usage["domain_share_without"]
    assert usage["camera_share"] == usage["camera_share_without"]


def test_information_that_names_the_domain_makes_the_filters_tell_the_domains_apart():
    layer = make_layer(factors=("sample", "domain"))
    domains = torch.arange(40) % 2
    pooled = torch.randn(40, 8, generator=torch.Generator().manual_seed(1)) * 0.1
    pooled[:, 0] = domains * 0.05  # the sample's own features barely tell the domains apart
    with torch.no_grad():  # D = (3, 0, ..., 0) in domain 1, 0 in domain 0
        first, last = layer.domain_mlp[0], layer.domain_mlp[-1]
        for linear in (first, last, layer.domain_classifier):
            linear.weight.zero_()
            linear.bias.zero_()
        first.weight[0, 0] = 20.0  # ReLU(20 * pooled[:, 0]): 1 in domain 1, 0 in domain 0
        last.weight[0, 0] = 3.0
        layer.domain_classifier.bias[0] = 1.0  # domain 0 unless D's first channel is 3
        layer.domain_classifier.weight[1, 0] = 1.0
    usage = layer_usage(layer, pooled, domains, domains)
    assert usage["domain_acc"] == 1.0
    assert usage["change"] > 0.0 and usage["ratio"] > 1.0
    assert usage["domain_share"] > 0.5 > 0.2 > usage["domain_share_without"]
    assert usage["camera_acc"] != usage["camera_acc"]  # no camera factor: NaN


def test_filter_variation_is_zero_for_a_static_filter_and_positive_for_generated_ones():
    pooled = torch.randn(12, 8, generator=torch.Generator().manual_seed(2))
    domains = torch.arange(12) % 2
    cameras = domains * 2 + torch.arange(12) % 3 // 2
    # The gate layer starts as its static depthwise filter: its gates' last layers are zero.
    static = layer_usage(make_layer(filter_norm="gate"), pooled, domains, cameras)
    assert static["variation"] == 0.0 and static["change"] == 0.0
    generated = make_layer(factors=("sample",))  # its filters are channel_filters(pooled)
    filters = generated.channel_filters(pooled).detach().flatten(1).double().numpy()
    spread = ((filters - filters.mean(0)) ** 2).sum() / (filters**2).sum()
    usage = layer_usage(generated, pooled, domains, cameras)
    assert usage["variation"] == pytest.approx(np.sqrt(spread), rel=1e-6)
    assert usage["variation"] > 0.1


def test_model_usage_labels_each_image_with_its_domain_and_global_camera(monkeypatch):
    datasets = make_synthetic_domains(
        preset="conflict_mild", seed=0, image_size=(32, 16), train_ids_per_domain=2,
        test_ids_per_domain=2,
    )  # fmt: skip
    data = MultiDomainDataset(datasets)
    model = dcsd.resnet50_dcsd(**{**data.model_kwargs(), "num_classes": 0})
    seen = []

    def record(layer, pooled, domains, cameras):
        seen.append((pooled.shape[0], domains.tolist(), cameras.tolist()))
        return {"variation": 0.0}

    monkeypatch.setattr(factor_usage, "layer_usage", record)
    usage = factor_usage.model_usage(model, data, (32, 16), torch.device("cpu"))
    assert len(usage) == 16
    # query then gallery of each domain, in domain order; cameras counted on across domains
    expected_domains, expected_cameras, offset = [], [], 0
    for domain, dataset in enumerate(datasets):
        for item in (*dataset.query, *dataset.gallery):
            expected_domains.append(domain)
            expected_cameras.append(offset + item.camid)
        offset += dataset.num_cameras
    assert offset > datasets[0].num_cameras  # the offsets matter
    assert seen[0] == (len(expected_domains), expected_domains, expected_cameras)
    assert all(entry == seen[0] for entry in seen)


def test_a_versus_start_is_refused(tmp_path, monkeypatch):
    """--versus-start, the benchmark's report option, is refused here, not ignored: this script
    reads the checkpoints of runs trained from one pretraining."""
    argv = ["factor_usage.py", "--quick", "--rows", "s", "--versus-start", "proxy_ddf=0ddba11e"]
    argv += ["--root", str(tmp_path / "runs"), "--proxy-root", str(tmp_path / "proxy")]
    argv += ["--recorded-start", "proxy_ddf=0badc0de"]  # a start whose digest is known
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="--versus-start: the benchmark's report option"):
        factor_usage.main()
