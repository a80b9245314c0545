"""MultiDomainDataset: domain ids, disjoint global identities, global cameras as in Fig. 3."""

from __future__ import annotations

import pytest
from reid_data_fixtures import make_cuhk03, make_cuhksysu, make_duke, make_market, make_msmt17

from dcsd.data import DATASET_NAMES, DomainItem, MultiDomainDataset, build_dataset


@pytest.fixture(scope="module")
def five_datasets(tmp_path_factory):
    """The paper's five datasets, as fixtures, in the paper's order."""
    root = tmp_path_factory.mktemp("datasets")
    make_market(root)
    make_cuhksysu(root)
    make_duke(root)
    make_cuhk03(root)
    make_msmt17(root)
    return [build_dataset(name, root) for name in DATASET_NAMES]


def test_paper_order_gives_32_global_cameras(five_datasets):
    joint = MultiDomainDataset(five_datasets)
    assert joint.domain_names == ["market1501", "cuhksysu", "dukemtmc", "cuhk03", "msmt17"]
    assert joint.num_domains == 5
    assert joint.camera_offsets == [0, 6, 7, 15, 17]
    assert joint.num_cameras == 32
    assert joint.single_camera == {
        "market1501": False,
        "cuhksysu": True,
        "dukemtmc": False,
        "cuhk03": False,
        "msmt17": False,
    }


def test_global_labels_are_disjoint_and_map_back(five_datasets):
    joint = MultiDomainDataset(five_datasets)
    sizes = [d.num_train_pids for d in five_datasets]
    assert joint.num_classes == sum(sizes)
    assert joint.pid_offsets == [sum(sizes[:d]) for d in range(5)]
    assert len(joint.train) == sum(len(d.train) for d in five_datasets)
    assert sorted({item.pid for item in joint.train}) == list(range(joint.num_classes))
    seen: dict[int, int] = {}
    for item in joint.train:
        assert isinstance(item, DomainItem)
        assert seen.setdefault(item.pid, item.domain) == item.domain
    for item, (domain, dataset) in zip(
        joint.train,
        [(d, ds) for d, ds in enumerate(five_datasets) for _ in ds.train],
        strict=True,
    ):
        local = dataset.train[[i.path for i in dataset.train].index(item.path)]
        assert item.domain == domain
        assert joint.local_pid(item.pid) == (domain, local.pid)
        assert joint.global_pid(domain, local.pid) == item.pid
        assert joint.local_camera_id(item.camid) == (domain, local.camid)
        assert joint.global_camera_id(domain, local.camid) == item.camid
        assert joint.original_pid(item.pid) == (
            dataset.name,
            dataset.train_original_pids[local.pid],
        )


def test_eval_splits_keep_local_ids_in_domain_order(five_datasets):
    joint = MultiDomainDataset(five_datasets)
    assert list(joint.eval_splits) == joint.domain_names
    for dataset in five_datasets:
        query, gallery = joint.eval_splits[dataset.name]
        assert query == dataset.query and gallery == dataset.gallery
    assert joint.domain_of("dukemtmc") == 2


def test_synthetic_cameras_follow_fig3(synthetic_domains):
    joint = MultiDomainDataset(synthetic_domains)
    assert joint.camera_offsets == [0, 3, 7]
    assert joint.num_cameras == 12
    cams_by_domain = {d: set() for d in range(3)}
    for item in joint.train:
        cams_by_domain[item.domain].add(item.camid)
    assert cams_by_domain == {0: {0, 1, 2}, 1: {3, 4, 5, 6}, 2: {7, 8, 9, 10, 11}}


def test_summary_lists_every_domain(five_datasets):
    summary = MultiDomainDataset(five_datasets).summary()
    assert "5 domains" in summary and "32 cameras" in summary
    assert "| msmt17           |" in summary and "17-31" in summary


def test_errors(five_datasets):
    with pytest.raises(ValueError, match="at least one"):
        MultiDomainDataset([])
    with pytest.raises(ValueError, match="distinct"):
        MultiDomainDataset([five_datasets[0], five_datasets[0]])
    joint = MultiDomainDataset(five_datasets)
    with pytest.raises(ValueError, match="global_pid"):
        joint.local_pid(joint.num_classes)
    with pytest.raises(ValueError, match="camid"):
        joint.global_camera_id(1, 1)
    with pytest.raises(ValueError, match="name"):
        joint.domain_of("viper")
