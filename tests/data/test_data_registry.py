import pytest
import torch

import dcsd
from dcsd.data import (
    MultiDomainDataset,
    ReIDDataset,
    ReIDItem,
    build_dataset,
    list_datasets,
    register_dataset,
)
from dcsd.data import registry as registry_module
from dcsd.engine import check_model_fits_data


class MyCampus(ReIDDataset):
    """A user's dataset: 3 train identities over 2 cameras, read from nowhere."""

    def __init__(self, root, num_cameras=2):
        train = [ReIDItem(f"{root}/t{p}_{c}.jpg", p, c) for p in range(3) for c in range(2)]
        query = [ReIDItem(f"{root}/q{p}.jpg", 10 + p, 0) for p in range(2)]
        gallery = [ReIDItem(f"{root}/g{p}.jpg", 10 + p, num_cameras - 1) for p in range(2)]
        super().__init__("my_campus", root, train, query, gallery)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(registry_module, "_DATASETS", dict(registry_module._DATASETS))
    register_dataset("my_campus", MyCampus)


def test_registered_dataset_builds_and_joins_multi_domain(registered, tmp_path):
    assert list_datasets()[-1] == "my_campus"
    campus = build_dataset("my_campus", tmp_path, num_cameras=3)
    assert isinstance(campus, MyCampus)
    assert campus.num_cameras == 3
    other = MyCampus(tmp_path)
    other.name = "other"
    data = MultiDomainDataset([campus, other])
    assert data.model_kwargs() == {"num_classes": 6, "num_domains": 2, "num_cameras": 5}
    path, pid, camid, domain = data.train[-1]
    assert (pid, camid, domain) == (5, 4, 1)


def test_register_dataset_errors(registered):
    with pytest.raises(ValueError, match="already registered as 'my_campus'"):
        register_dataset("my_campus", MyCampus)
    register_dataset("my_campus", MyCampus, overwrite=True)
    with pytest.raises(ValueError, match="without commas"):
        register_dataset("a,b", MyCampus)
    with pytest.raises(TypeError, match="factory must be callable"):
        register_dataset("thing", "MyCampus")
    register_dataset("not_a_dataset", lambda root: [root])
    with pytest.raises(TypeError, match="'not_a_dataset' returned list, not a ReIDDataset"):
        build_dataset("not_a_dataset", "/nowhere")
    with pytest.raises(ValueError, match="register_dataset"):
        build_dataset("nobody", "/nowhere")


def test_reid_item_unpacks():
    path, pid, camid = ReIDItem("a.jpg", 3, 1)
    assert (path, pid, camid) == ("a.jpg", 3, 1)


def test_model_sized_from_data_and_mismatch_named(tmp_path):
    data = MultiDomainDataset([MyCampus(tmp_path)])
    with torch.device("meta"):
        fits = dcsd.resnet50_dcsd(**data.model_kwargs())
        default = dcsd.resnet50_dcsd(num_classes=3)
        static = dcsd.resnet50_reid(num_classes=3)
    check_model_fits_data(fits, data)
    check_model_fits_data(static, data)  # no domain / camera heads to check
    with pytest.raises(ValueError) as info:
        check_model_fits_data(default, data)
    message = str(info.value)
    assert "num_domains: the model has 5, the training data has 1" in message
    assert "num_cameras: the model has 32, the training data has 2" in message
    assert "num_classes" not in message
