"""One API: one model folder format (also inside training checkpoints), weights that carry their
own card, named weights in the zoo, builders that delegate, and the old names gone."""

import dataclasses
import json

import pytest
import torch
from torchvision.transforms import InterpolationMode

import dcsd
from dcsd.data import build_eval_transforms
from dcsd.engine import ChecksumError, load_training_state, save_training_state
from dcsd.models import PretrainedCfg, ReIDResNet, registry, save_model
from dcsd.models.resnet import create_reid_resnet
from dcsd.modules import DCSDConv

SMALL = dict(num_classes=4, num_domains=2, num_cameras=3)


def fine_tuned() -> torch.nn.Module:
    """A model fine-tuned at 384x192 on two datasets, with measured metrics."""
    torch.manual_seed(0)
    model = dcsd.resnet50_dcsd(**SMALL)
    model.pretrained_cfg = dataclasses.replace(
        model.pretrained_cfg.trained_on(["market1501", "dukemtmc"], 3, input_size=(3, 384, 192)),
        interpolation="bilinear",
        metrics={"market1501": {"mAP": 12.5}},
        metrics_source="a test",
    )
    return model


def test_weights_carry_their_own_pretrained_config(tmp_path):
    model = fine_tuned()
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["pretrained_cfg"]["input_size"] == [3, 384, 192]
    for loaded in (
        dcsd.load_model(tmp_path / "m"),
        dcsd.create_model("resnet50_dcsd", checkpoint_path=tmp_path / "m", **SMALL),
    ):
        cfg = loaded.pretrained_cfg
        assert cfg == model.pretrained_cfg
        assert cfg.input_size == (3, 384, 192) and cfg.hub_id == "" and not cfg.published
        assert cfg.datasets == ("market1501", "dukemtmc") and cfg.num_cameras == 3
        assert cfg.metrics == {"market1501": {"mAP": 12.5}} and cfg.paper_metrics == {}
        assert cfg.name == "trained"
    # The zoo's card is untouched, and a fresh model has none of its claims.
    fresh = dcsd.resnet50_dcsd().pretrained_cfg
    assert fresh == PretrainedCfg() and fresh.name == "untrained"
    assert fresh.datasets == () and fresh.metrics == {} and fresh.paper_metrics == {}
    assert dcsd.get_pretrained_cfg("resnet50_dcsd").input_size == (3, 256, 128)


def test_the_zoo_names_weights_not_architectures():
    assert dcsd.list_models() == ["resnet50_dcsd", "resnet50_reid"]
    assert dcsd.list_pretrained() == ["resnet50_dcsd.joint5", "resnet50_reid.joint5"]
    card = dcsd.get_pretrained_cfg("resnet50_dcsd.joint5")
    assert dcsd.get_pretrained_cfg("resnet50_dcsd") is card  # an architecture's default weights
    assert card.name == "resnet50_dcsd.joint5" and card.hub_id == "dcsd/resnet50_dcsd.joint5"
    # Unpublished: nothing measured; the paper's numbers are kept as what they are.
    assert not card.published and card.metrics == {} and card.metrics_source == ""
    assert card.paper_metrics["market1501"] == {"mAP": 89.5}
    assert dcsd.get_pretrained_cfg("resnet50_reid.joint5").paper_metrics["msmt17"] == {"mAP": 49.5}
    # A weights name builds its architecture; without pretrained=True nothing is loaded.
    model = dcsd.create_model("resnet50_reid.joint5", num_classes=0)
    assert model.architecture == "resnet50_reid" and model.pretrained_cfg.name == "untrained"
    with pytest.raises(ValueError, match=r"unknown weights 'resnet50_dcsd.paper'.*joint5"):
        dcsd.create_model("resnet50_dcsd.paper")
    with pytest.raises(TypeError, match="pretrained must be True or False, got str 'imagenet'"):
        dcsd.create_model("resnet50_reid", pretrained="imagenet")
    with pytest.raises(TypeError, match="checkpoint_path=folder"):
        dcsd.resnet50_reid(pretrained="/some/folder")


def test_eval_transforms_are_built_from_the_config():
    model = fine_tuned()
    transform = build_eval_transforms(model.pretrained_cfg)
    resize = transform.transforms[0]
    assert tuple(resize.size) == (384, 192)
    assert resize.interpolation == InterpolationMode.BILINEAR
    image = torch.randint(0, 256, (3, 100, 50), dtype=torch.uint8)
    assert transform(image).shape == (3, 384, 192)
    as_dict = build_eval_transforms(model.pretrained_cfg.to_dict())
    assert tuple(as_dict.transforms[0].size) == (384, 192)
    resized = build_eval_transforms(model.pretrained_cfg, size=(64, 32)).transforms[0]
    assert tuple(resized.size) == (64, 32) and resized.interpolation == InterpolationMode.BILINEAR
    with pytest.raises(ValueError, match="must give input_size, mean and std"):
        build_eval_transforms({"input_size": (3, 8, 4)})
    with pytest.raises(ValueError, match="interpolation must be one of"):
        build_eval_transforms({**model.pretrained_cfg.to_dict(), "interpolation": "lanczos9"})


def test_a_bad_saved_pretrained_config_names_the_file(tmp_path):
    model = fine_tuned()
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config = json.loads(config_file.read_text())
    config["pretrained_cfg"]["colour"] = "red"  # a field of a later dcsd: read the rest
    config_file.write_text(json.dumps(config))
    (tmp_path / "manifest.json").unlink()  # edited by hand: the manifest no longer holds
    with pytest.warns(UserWarning, match=r"pretrained_cfg has fields .* ignored: \['colour'"):
        assert dcsd.load_model(tmp_path).pretrained_cfg == model.pretrained_cfg
    config["pretrained_cfg"] = {"input_size": [3, 0, 4]}
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json pretrained_cfg is not a valid"):
        dcsd.load_model(tmp_path)


def test_training_checkpoints_are_model_folders(tmp_path):
    model = fine_tuned()
    save_model(model, tmp_path / "plain")  # the one writer, also public
    plain = {p.name for p in (tmp_path / "plain").iterdir()}
    assert plain == {"config.json", "model.safetensors", "manifest.json"}
    path = save_training_state(tmp_path / "checkpoints", model, {"epoch": 1})
    assert {p.name for p in path.iterdir()} == {
        "config.json",
        "model.safetensors",
        "training_state.pt",
        "manifest.json",
    }
    # Any checkpoint, or the run's checkpoint folder (its latest), opens with load_model, and
    # config.json is covered by the manifest like every other file.
    for source in (path, tmp_path / "checkpoints"):
        loaded = dcsd.load_model(source)
        assert loaded.pretrained_cfg.input_size == (3, 384, 192)
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    assert "config.json" in json.loads((path / "manifest.json").read_text())["files"]
    assert load_training_state(tmp_path / "checkpoints").epoch == 1
    # A training checkpoint that lost its manifest cannot be verified, so it is not loaded.
    (path / "manifest.json").unlink()
    with pytest.raises(ChecksumError, match="has no manifest.json"):
        dcsd.load_model(path)


def test_one_builder_records_the_variant_name(tmp_path, monkeypatch):
    """A new variant is one registered function that delegates; it needs no other change."""
    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))
    monkeypatch.setattr(registry, "_WEIGHTS", dict(registry._WEIGHTS))
    monkeypatch.setattr(registry, "_DEFAULT_WEIGHTS", dict(registry._DEFAULT_WEIGHTS))

    @registry.register_model
    def resnet50_dcsd_s(pretrained=False, **kwargs):
        """ResNet50-DCSD with the sample factor only (DDF-like) by default."""
        options = {"dynamic": True, "factors": ("sample",), **kwargs}
        return create_reid_resnet("resnet50_dcsd_s", pretrained, **options)

    model = dcsd.create_model("resnet50_dcsd_s", num_classes=4)
    assert model.architecture == "resnet50_dcsd_s"
    assert model.config["architecture"] == "resnet50_dcsd_s"
    assert model.config["factors"] == ["sample"] and model.pretrained_cfg.name == "untrained"
    with pytest.raises(ValueError, match="'resnet50_dcsd_s' has no weights in the zoo"):
        dcsd.get_pretrained_cfg("resnet50_dcsd_s")
    card = registry.register_weights(PretrainedCfg(name="resnet50_dcsd_s.tiny", hub_id="me/s"))
    assert dcsd.get_pretrained_cfg("resnet50_dcsd_s") is card
    with pytest.raises(ValueError, match="'<architecture>.<tag>' of a registered architecture"):
        registry.register_weights(PretrainedCfg(name="resnet50_nothing.tiny"))
    model.save_pretrained(tmp_path)
    loaded = dcsd.load_model(tmp_path)
    assert loaded.architecture == "resnet50_dcsd_s" and loaded.factors == ("sample",)
    # The stock builders delegate the same way and keep the layer's defaults.
    layer_default = DCSDConv(8, num_domains=1, num_cameras=1).filter_norm
    assert dcsd.resnet50_dcsd().config["filter_norm"] == layer_default
    with pytest.raises(TypeError, match="unexpected keyword argument 'dilation'"):
        dcsd.resnet50_dcsd(dilation=2)


def test_a_folder_without_a_card_loads_untrained_and_old_names_are_gone(tmp_path):
    model = dcsd.resnet50_dcsd(**SMALL, filter_norm="ddf")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["pretrained_cfg"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "manifest.json").unlink()  # edited by hand
    loaded = dcsd.load_model(tmp_path)
    assert loaded.filter_norm == "ddf" and loaded.pretrained_cfg == PretrainedCfg()
    with pytest.raises(TypeError, match="filter_norm must be a str"):
        DCSDConv(8, num_domains=1, num_cameras=1, filter_norm=True)
    with pytest.raises(TypeError, match="unexpected keyword argument 'op_backend'"):
        dcsd.resnet50_dcsd(**SMALL, op_backend="reference")
    for module, name in (
        (dcsd.models, "save_checkpoint"),
        (dcsd.models, "load_checkpoint"),
        (dcsd.engine, "save_checkpoint"),
        (dcsd.engine, "load_checkpoint"),
        (dcsd.engine, "load_latest_whole_checkpoint"),
    ):
        assert not hasattr(module, name), name


def test_a_model_built_directly_is_a_stock_entry(tmp_path):
    model = ReIDResNet(dynamic=True, num_classes=4, num_domains=2, num_cameras=3)
    assert model.architecture == "resnet50_dcsd"
    assert model.pretrained_cfg == PretrainedCfg()
    model.save_pretrained(tmp_path)  # with its model card
    assert dcsd.load_model(tmp_path).config == model.config
    with pytest.raises(TypeError, match="datasets must be a sequence"):
        PretrainedCfg(datasets="market1501")


def test_a_trained_card_names_where_training_started():
    imagenet = PretrainedCfg(source="torchvision ResNet50_Weights.IMAGENET1K_V1 (backbone)")
    first = imagenet.trained_on(["market1501"], 6, metrics={"market1501": {"mAP": 80.0}})
    assert first.source == imagenet.source and first.metrics == {"market1501": {"mAP": 80.0}}
    again = first.trained_on(["msmt17"], 15)  # fine-tuned: no metrics carried over
    assert again.source == f"weights trained on market1501 (from {imagenet.source})"
    assert again.metrics == {} and again.datasets == ("msmt17",)
    zoo = dcsd.get_pretrained_cfg("resnet50_dcsd.joint5").trained_on(["synth0"], 3)
    assert zoo.source == "resnet50_dcsd.joint5" and zoo.paper_metrics == {} and zoo.hub_id == ""
