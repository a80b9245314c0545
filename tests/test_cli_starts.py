"""load_start: the start `dcsd train` and `dcsd extract` give a freshly built model."""

from __future__ import annotations

from pathlib import Path

import torch

import dcsd
from dcsd.cli.starts import load_start
from dcsd.models import save_model


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return dcsd.create_model("resnet50_reid", num_classes=0)


def test_a_folder_start_loads_its_weights_and_none_loads_nothing(tmp_path: Path) -> None:
    trained = _model(0)
    folder = save_model(trained, tmp_path / "model")
    fresh = _model(1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    load_start(fresh, "none")
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    load_start(fresh, str(folder))
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
