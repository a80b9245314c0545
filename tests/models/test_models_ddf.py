"""DDF's ImageNet weights into ResNet50-DCSD: exactness against a transcription of DDF's own
model, the checkpoint forms DDF's file comes in, pickle safety and refusals."""

from __future__ import annotations

import argparse
import pathlib

import pytest
import torch
from ddf_transcription import DDFMulResNet50

import dcsd
from dcsd.models import load_ddf_backbone, read_ddf_checkpoint, read_ddf_weights, save_model

IMAGES = (2, 3, 64, 32)


@pytest.fixture(scope="module")
def ddf_model() -> DDFMulResNet50:
    """DDF's model with random weights everywhere, BatchNorm statistics included, in eval mode."""
    torch.manual_seed(0)
    model = DDFMulResNet50()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def ddf_features(ddf_model: DDFMulResNet50) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(IMAGES, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return images, ddf_model.forward_features(images)


def _dcsd(**options) -> dcsd.models.ReIDResNet:
    options = {"num_classes": 0, "last_stride": 2, "backend": "reference", **options}
    return dcsd.resnet50_dcsd(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"factors": ("sample",)},
        {"factors": ("sample", "domain", "camera")},
        {"factors": ("sample", "domain", "camera"), "spatial_information": True},
        {"factors": ("sample", "camera"), "num_cameras": 7, "head": "agw"},
    ],
    ids=["S", "S+D+C", "S+D+C spatial information", "S+C AGW"],
)
def test_converted_weights_compute_ddfs_features(ddf_model, ddf_features, options) -> None:
    images, expected = ddf_features
    model = _dcsd(**options)
    report = load_ddf_backbone(model, ddf_model.state_dict())
    assert report.ignored == ("fc.weight", "fc.bias")
    model.eval()
    with torch.no_grad():
        features = model.forward_features(images)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


def test_report_names_what_loads_and_what_starts_fresh(ddf_model) -> None:
    model = _dcsd()
    report = load_ddf_backbone(model, ddf_model.state_dict())
    own = set(model.state_dict())
    assert set(report.loaded) | set(report.fresh) == own
    assert not set(report.loaded) & set(report.fresh)
    assert "layer3.0.conv2.channel_norm.scale" in report.loaded
    assert "layer3.0.conv2.spatial_norm.scale" in report.loaded  # DDF's fixed float
    assert "layer3.0.conv2.domain_classifier.weight" in report.fresh
    assert "head.bnneck.weight" in report.fresh or any(k.startswith("head.") for k in report.fresh)
    # D = Cam = 0 right after loading: the MLPs' last layers are zero.
    layer = model.layer3[0].conv2
    assert torch.count_nonzero(layer.domain_mlp[-1].weight) == 0
    assert torch.count_nonzero(layer.camera_mlp[-1].bias) == 0
    torch.testing.assert_close(
        layer.spatial_norm.scale, torch.full_like(layer.spatial_norm.scale, 2**0.5 / 3)
    )


def _state_with_prefix(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"module.{key}": value for key, value in model.state_dict().items()}


@pytest.mark.parametrize("form", ["bare", "timm checkpoint", "module prefix"])
def test_checkpoint_forms_read_alike(ddf_model, tmp_path, form) -> None:
    state = ddf_model.state_dict()
    if form == "bare":
        payload = state
    elif form == "timm checkpoint":
        optimizer = torch.optim.SGD(ddf_model.parameters(), lr=0.1, momentum=0.9)
        payload = {
            "epoch": 299,
            "arch": "ddf_mul_resnet50",
            "state_dict": _state_with_prefix(ddf_model),
            "optimizer": optimizer.state_dict(),
            "version": 2,
            "args": argparse.Namespace(model="ddf_mul_resnet50", lr=0.1, epochs=300),
            "metric": 79.1,
        }
    else:
        payload = _state_with_prefix(ddf_model)
    path = tmp_path / "ddf_mul_resnet50.pth.tar"
    torch.save(payload, path)
    read = read_ddf_checkpoint(path)
    assert read.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(read[key], value), key


class _Planted:
    """An object whose unpickling would create a file: what a hostile checkpoint does."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_hostile_pickle_is_refused_without_running_it(tmp_path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "x": _Planted(marker)}, path)
    with pytest.raises(ValueError, match="evil.pth.tar.*not unpickled"):
        read_ddf_checkpoint(path)
    assert not marker.exists()


def test_unreadable_and_empty_files_are_named(tmp_path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        read_ddf_checkpoint(garbage)
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(ValueError, match="empty.pth holds no state dict"):
        read_ddf_checkpoint(empty)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        read_ddf_checkpoint(tmp_path / "missing.pth")


@pytest.mark.parametrize("filter_norm", ["gate", "rms", "none"])
def test_a_layer_that_cannot_reproduce_ddf_is_refused(ddf_model, filter_norm) -> None:
    with pytest.raises(ValueError, match="filter_norm='ddf'"):
        load_ddf_backbone(_dcsd(filter_norm=filter_norm), ddf_model.state_dict())


def test_static_model_and_other_state_dicts_are_refused(ddf_model) -> None:
    with pytest.raises(ValueError, match="resnet50_dcsd"):
        load_ddf_backbone(dcsd.resnet50_reid(), ddf_model.state_dict())
    state = dict(ddf_model.state_dict())
    del state["layer2.1.conv2.channel_branch.4.std"]
    lacks = r"lacks 1 DDF tensors.*layer2\.1\.conv2\.channel_norm\.scale"
    with pytest.raises(ValueError, match=lacks):
        load_ddf_backbone(_dcsd(), state)
    state = dict(ddf_model.state_dict())
    state["layer2.1.conv2.channel_branch.4.mean"] = torch.zeros(9 * 128)
    with pytest.raises(ValueError, match="another DDF variant"):
        load_ddf_backbone(_dcsd(), state)
    torchvision_like = {
        key: value for key, value in ddf_model.state_dict().items() if ".conv2." not in key
    }
    with pytest.raises(ValueError, match="lacks"):
        load_ddf_backbone(_dcsd(), torchvision_like)


def test_converted_folder_starts_a_model_of_other_heads(ddf_model, ddf_features, tmp_path) -> None:
    converted = _dcsd()
    load_ddf_backbone(converted, ddf_model.state_dict())
    save_model(converted, tmp_path / "ddf")
    model = _dcsd(num_classes=11, num_domains=3, num_cameras=9)
    load_ddf_backbone(model, read_ddf_weights(tmp_path / "ddf"))
    images, expected = ddf_features
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(images), expected, rtol=0, atol=1e-5)
