"""Checkpoints: save_pretrained and loading round trips, the Hub cache, errors, ImageNet init."""

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import torch
import torchvision

import dcsd
from dcsd.models import (
    CheckpointMismatchError,
    ReIDResNet,
    load_imagenet_backbone,
)
from dcsd.models import pretrained as pretrained_module

NUM_CLASSES = 8
HUB_ID = "dcsd/resnet50_dcsd.joint5"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def images() -> torch.Tensor:
    return torch.randn(2, 3, 32, 16, generator=torch.Generator().manual_seed(0))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: tuple[str, ...] = ()) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert sorted(set(state_a) - set(skip)) == sorted(set(state_b) - set(skip))
    for key in state_b:
        if key not in skip:
            assert torch.equal(state_a[key], state_b[key]), key


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[ReIDResNet, Path]:
    """A trained-looking ResNet50-DCSD (zoo defaults: 5 domains, 32 cameras) and its folder."""
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(num_classes=NUM_CLASSES)
    with torch.no_grad():  # make BN statistics and every weight differ from a fresh build
        model.train()(images())
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.eval()
    folder = tmp_path_factory.mktemp("checkpoint") / "resnet50_dcsd-test"
    model.save_pretrained(folder)
    return model, folder


def put_in_hub_cache(cache: Path, folder: Path, repo_id: str = HUB_ID) -> None:
    """Lay a checkpoint out as huggingface_hub's cache does (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)


@pytest.fixture
def offline_hub_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_save_pretrained_writes_config_and_safetensors(saved):
    model, folder = saved
    assert {"config.json", "model.safetensors"} <= {p.name for p in folder.iterdir()}
    saved_config = json.loads((folder / "config.json").read_text())
    assert saved_config.pop("pretrained_cfg") == json.loads(
        json.dumps(model.pretrained_cfg.to_dict())
    )
    assert saved_config == model.config
    tensors = safetensors.torch.load_file(folder / "model.safetensors")
    assert set(tensors) == set(model.state_dict())


def test_load_model_round_trip_is_bit_exact(saved):
    model, folder = saved
    loaded = dcsd.load_model(folder)
    assert_same_weights(loaded, model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(images()), model(images()), rtol=0, atol=0)
    assert_same_weights(ReIDResNet.from_pretrained(folder), model)


def test_create_model_from_a_folder_or_a_file(saved):
    model, folder = saved
    for source in (folder, str(folder / "model.safetensors")):
        loaded = dcsd.create_model("resnet50_dcsd", checkpoint_path=source, num_classes=NUM_CLASSES)
        assert_same_weights(loaded, model)


def test_num_classes_zero_drops_the_classifier_only(saved):
    model, folder = saved
    for loaded in (
        dcsd.create_model("resnet50_dcsd", checkpoint_path=folder),
        dcsd.load_model(folder, num_classes=0, backend="reference"),
    ):
        assert loaded.num_classes == 0
        # Every tensor of the embedding path is the checkpoint's: the embedding is unchanged.
        assert_same_weights(loaded, model, skip=("head.classifier.weight",))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_domains=3), "trained with num_domains=5, the model has num_domains=3"),
        (dict(num_cameras=6), "pass num_cameras=32"),
        (dict(num_classes=4), "pass num_classes=8, or num_classes=0"),
        (dict(factors=("sample",)), "config.json differs: factors"),
        (dict(head="agw"), "unexpected keys|missing keys"),
    ],
)
def test_mismatch_errors_say_how_to_fix_them(saved, kwargs, message):
    _, folder = saved
    with pytest.raises(CheckpointMismatchError, match=message):
        dcsd.create_model("resnet50_dcsd", checkpoint_path=folder, **kwargs)


def test_static_model_refuses_a_dcsd_checkpoint(saved):
    _, folder = saved
    with pytest.raises(CheckpointMismatchError) as error:
        dcsd.create_model("resnet50_reid", checkpoint_path=folder, num_classes=NUM_CLASSES)
    text = str(error.value)
    assert "architecture: checkpoint 'resnet50_dcsd', model 'resnet50_reid'" in text
    assert "dcsd.load_model(path)" in text


def test_pretrained_true_reads_the_hub_cache_offline(saved, offline_hub_cache):
    model, folder = saved
    put_in_hub_cache(offline_hub_cache, folder)
    for name in ("resnet50_dcsd", "resnet50_dcsd.joint5"):
        loaded = dcsd.create_model(name, pretrained=True, num_classes=NUM_CLASSES)
        assert_same_weights(loaded, model)
        # The zoo names the weights and where they live; nothing is claimed as measured.
        card = loaded.pretrained_cfg
        assert card.name == "resnet50_dcsd.joint5" and card.hub_id == HUB_ID
        assert card.paper_metrics["market1501"] == {"mAP": 89.5} and card.metrics == {}
    pinned = dcsd.load_model(HUB_ID, revision=COMMIT)
    assert_same_weights(pinned, model)


def test_pretrained_true_without_published_weights_fails_clearly(offline_hub_cache):
    with pytest.raises(OSError, match="No weights named resnet50_dcsd.joint5 have been published"):
        dcsd.create_model("resnet50_dcsd", pretrained=True)
    with pytest.raises(OSError, match="could not get config.json and model.safetensors"):
        dcsd.load_model("someone/missing-model")


def test_only_safetensors_checkpoints_are_read(saved, tmp_path):
    model, _ = saved
    pickled = tmp_path / "model.pth"
    torch.save(model.state_dict(), pickled)
    with pytest.raises(ValueError, match="pickled checkpoints"):
        dcsd.create_model("resnet50_dcsd", checkpoint_path=pickled, num_classes=NUM_CLASSES)
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        dcsd.create_model("resnet50_dcsd", checkpoint_path=tmp_path, num_classes=NUM_CLASSES)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dcsd.create_model("resnet50_dcsd", checkpoint_path=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such folder: .*not a Hub repo id"):
        dcsd.load_model(str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="pretrained must be True or False, got int 1"):
        dcsd.create_model("resnet50_reid", pretrained=1)


def test_push_to_hub_uploads_config_and_weights(saved, monkeypatch):
    model, _ = saved
    uploads = {}

    class FakeRepo:
        repo_id = "user/resnet50_dcsd-test"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        uploads[repo_id] = {p.name: p.read_bytes() for p in folder.iterdir()}
        return "https://huggingface.co/user/resnet50_dcsd-test/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, **kwargs: FakeRepo())
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model.push_to_hub("user/resnet50_dcsd-test")
    files = uploads["user/resnet50_dcsd-test"]
    assert {"config.json", "model.safetensors"} <= set(files)
    uploaded_config = json.loads(files["config.json"])
    assert uploaded_config.pop("pretrained_cfg")["input_size"] == [3, 256, 128]
    assert uploaded_config == model.config
    tensors = safetensors.torch.load(files["model.safetensors"])
    assert torch.equal(tensors["conv1.weight"], model.conv1.weight)


@pytest.fixture(scope="module")
def torchvision_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return torchvision.models.resnet50().state_dict()


@pytest.mark.parametrize("name", ["resnet50_dcsd", "resnet50_reid"])
def test_imagenet_backbone_mapping(name, torchvision_state):
    model = dcsd.create_model(name, num_classes=NUM_CLASSES)
    fresh_before = {k: v.clone() for k, v in model.state_dict().items() if "conv2." in k}
    report = load_imagenet_backbone(model, torchvision_state)
    state = model.state_dict()
    for key in report.loaded:
        assert torch.equal(state[key], torchvision_state[key]), key
    for key in ("conv1.weight", "layer1.0.bn2.running_var", "layer4.0.downsample.0.weight"):
        assert key in report.loaded
    assert {"fc.weight", "fc.bias"} <= set(report.ignored)
    assert "head.classifier.weight" in report.fresh
    if name == "resnet50_dcsd":
        assert "layer1.0.conv2.weight" in report.ignored
        assert "layer3.2.conv2.channel_branch.0.weight" in report.fresh
        for key, value in fresh_before.items():
            assert torch.equal(state[key], value), key
    else:
        assert "layer1.0.conv2.weight" in report.loaded
        assert set(report.ignored) == {"fc.weight", "fc.bias"}


def test_imagenet_file_without_num_batches_tracked_loads(torchvision_state):
    model = dcsd.resnet50_dcsd()
    legacy = {k: v for k, v in torchvision_state.items() if not k.endswith("num_batches_tracked")}
    report = load_imagenet_backbone(model, legacy)
    assert not any(key.endswith("num_batches_tracked") for key in report.loaded)
    broken = dict(legacy)
    del broken["layer2.1.conv1.weight"]
    with pytest.raises(ValueError, match="lacks 1 backbone tensors"):
        load_imagenet_backbone(model, broken)


def test_the_imagenet_start_uses_torchvision_weights(torchvision_state, monkeypatch):
    monkeypatch.setattr(pretrained_module, "imagenet_state_dict", lambda: torchvision_state)
    model = dcsd.create_model("resnet50_dcsd", num_classes=NUM_CLASSES)
    load_imagenet_backbone(model)
    loaded = model.layer2[0].conv1.weight
    assert torch.equal(loaded, torchvision_state["layer2.0.conv1.weight"])
    # The card records the start, and claims no training data.
    card = model.pretrained_cfg
    assert card.name == "untrained" and card.datasets == () and "IMAGENET1K_V1" in card.source
