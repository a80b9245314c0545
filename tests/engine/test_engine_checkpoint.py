"""Atomic checkpoints: layout, round trip, pruning, and clear errors on damage."""

import pytest
import torch

from dcsd.engine import ChecksumError, latest_checkpoint, load_training_state, save_training_state
from dcsd.manifest import write_manifest


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


def test_round_trip_and_latest_pointer(tmp_path):
    model = small_model()
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    path = save_training_state(tmp_path, model, {"epoch": 3, "optimizer": optimizer.state_dict()})
    assert path == tmp_path / "epoch_0003"
    assert latest_checkpoint(tmp_path) == path
    checkpoint = load_training_state(tmp_path)
    assert checkpoint.epoch == 3
    for name, value in model.state_dict().items():
        assert torch.equal(checkpoint.model_state[name], value)
    restored = torch.optim.Adam(small_model().parameters())
    restored.load_state_dict(checkpoint.training_state["optimizer"])
    assert torch.equal(
        restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_keeps_only_recent_checkpoints_and_no_staging_left(tmp_path):
    model = small_model()
    for epoch in range(1, 5):
        save_training_state(tmp_path, model, {"epoch": epoch}, keep=2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["epoch_0003", "epoch_0004", "latest"]


def test_no_checkpoint_yet(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_training_state(tmp_path)


def test_corrupt_weights_and_state_are_named(tmp_path):
    path = save_training_state(tmp_path, small_model(), {"epoch": 1})
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(ChecksumError, match="model.safetensors has 40 bytes"):
        load_training_state(path)
    # Damaged before its manifest was written: the parsers still name the file.
    write_manifest(path)
    with pytest.raises(ValueError, match="model.safetensors are corrupt"):
        load_training_state(path)
    path = save_training_state(tmp_path, small_model(), {"epoch": 2})
    (path / "training_state.pt").write_bytes(b"not a torch archive")
    with pytest.raises(ChecksumError, match="training_state.pt has 19 bytes"):
        load_training_state(tmp_path)
    write_manifest(path)
    with pytest.raises(ValueError, match="training_state.pt is corrupt"):
        load_training_state(tmp_path)


def test_training_state_needs_epoch(tmp_path):
    with pytest.raises(ValueError, match="'epoch'"):
        save_training_state(tmp_path, small_model(), {"optimizer": {}})
