"""Recipe files (dcsd.recipe) and the dcsd train options generated from them."""

import dataclasses

import pytest

from dcsd.cli import build_parser
from dcsd.cli.options import flag_name
from dcsd.cli.train import resolve_recipe
from dcsd.data import DATASET_NAMES
from dcsd.engine import TrainConfig
from dcsd.models import list_models
from dcsd.recipe import (
    SECTIONS,
    RecipeError,
    RunConfig,
    build_recipe,
    bundled_recipes,
    find_recipe,
    read_recipe_file,
    save_recipe,
)

# The paper's recipe as DCSD.md states it (Sec. IV): 256x128, P16 x K4, Adam 3.5e-4, /10 at 40
# and 90, 120 epochs, margin 0.3, ImageNet start.
PAPER = {
    ("data", "image_size"): (256, 128),
    ("data", "batch"): (16, 4),
    ("train", "optimizer"): "adam",
    ("train", "lr"): 3.5e-4,
    ("train", "milestones"): (40, 90),
    ("train", "gamma"): 0.1,
    ("train", "epochs"): 120,
    ("loss", "margin"): 0.3,
    ("loss", "label_smoothing"): 0.1,
    ("model", "pretrained"): "imagenet",
}
RECIPES = {
    # name: (architecture, head, triplet, per_domain)
    "bot_static_joint": ("resnet50_reid", "bot", "batch_hard", False),
    "bot_dcsd_joint": ("resnet50_dcsd", "bot", "batch_hard", False),
    "agw_static_joint": ("resnet50_reid", "agw", "weighted", False),
    "agw_dcsd_joint": ("resnet50_dcsd", "agw", "weighted", False),
    "bot_static_per_domain": ("resnet50_reid", "bot", "batch_hard", True),
    "bot_dcsd_per_domain": ("resnet50_dcsd", "bot", "batch_hard", True),
    "agw_static_per_domain": ("resnet50_reid", "agw", "weighted", True),
    "agw_dcsd_per_domain": ("resnet50_dcsd", "agw", "weighted", True),
}


def train_args(*argv):
    return build_parser().parse_args(["train", *map(str, argv)])


def load(name):
    path = find_recipe(name)
    return build_recipe([(str(path), read_recipe_file(path))])


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_each_paper_recipe_holds_the_papers_values(name):
    config = load(name)
    for (section, key), value in PAPER.items():
        assert getattr(getattr(config, section), key) == pytest.approx(value), (section, key)
    architecture, head, triplet, per_domain = RECIPES[name]
    assert config.model.architecture == architecture and config.model.head == head
    assert config.loss.triplet == triplet and config.data.per_domain is per_domain
    # Every shipped recipe is one of the paper's, the base they share, or a synthetic demo.
    assert set(bundled_recipes()) == set(RECIPES) | {"paper", "synthetic", "synthetic_tiny"}


def test_unknown_key_and_wrong_type_are_refused_naming_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: ok.yaml\ntrain:\n  lrr: 0.1\n")
    (tmp_path / "ok.yaml").write_text("train:\n  lr: 0.001\n")
    with pytest.raises(RecipeError, match=rf"{bad}: unknown key train\.lrr \(known: epochs"):
        read_recipe_file(bad)
    bad.write_text("train:\n  epochs: 1.5\n")
    with pytest.raises(RecipeError, match=rf"{bad}: train\.epochs must be an int, got 1\.5"):
        read_recipe_file(bad)
    bad.write_text("train:\n  channels_last: 1\n")
    with pytest.raises(RecipeError, match=rf"{bad}: train\.channels_last must be true/false"):
        read_recipe_file(bad)
    bad.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(RecipeError, match=rf"{bad}: unknown section 'trian'"):
        read_recipe_file(bad)
    bad.write_text("data:\n  batch: [16, 4, 2]\n")
    with pytest.raises(RecipeError, match=rf"{bad}: data\.batch must be a list of 2 an int"):
        read_recipe_file(bad)
    bad.write_text("train:\n  amp: fast\n")
    with pytest.raises(RecipeError, match=rf"{bad}: train\.amp must be among \['auto'"):
        read_recipe_file(bad)
    bad.write_text("train: [1, 2\n")
    with pytest.raises(RecipeError, match=rf"{bad}: not valid YAML"):
        read_recipe_file(bad)
    # A value of the right type that the section refuses names the key and where it was set.
    bad.write_text("data:\n  batch: [1, 4]\n")
    with pytest.raises(RecipeError, match=rf"{bad}: data\.batch: batch P K must have P >= 2"):
        build_recipe([(str(bad), read_recipe_file(bad))])


def test_base_chain_merges_and_names_a_missing_base(tmp_path):
    (tmp_path / "a.yaml").write_text("train:\n  lr: 0.001\n  epochs: 5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  epochs: 7\n")
    assert read_recipe_file(tmp_path / "b.yaml") == {"train": {"lr": 0.001, "epochs": 7}}
    (tmp_path / "c.yaml").write_text("base: gone.yaml\n")
    with pytest.raises(RecipeError, match=r"gone\.yaml \(the base of .*c\.yaml\): no such"):
        read_recipe_file(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("base: d.yaml\n")
    with pytest.raises(RecipeError, match="loops back"):
        read_recipe_file(tmp_path / "d.yaml")


def test_saved_recipe_reads_back_equal(tmp_path):
    config = load("agw_dcsd_per_domain")
    config.data = dataclasses.replace(config.data, datasets=DATASET_NAMES)
    path = save_recipe(config, tmp_path / "config.yaml")
    assert build_recipe([(str(path), read_recipe_file(path))]) == config
    assert "  batch: [16, 4]\n" in path.read_text()


def test_flags_override_set_which_overrides_the_file(tmp_path):
    args = train_args(
        "--config", "synthetic_tiny", "--lr", "0.01", "--set", "train.lr=0.5",
        "--set", "train.epochs=3", "--no-progress", "--out", tmp_path,
    )  # fmt: skip
    config, source = resolve_recipe(args)
    assert source.endswith("synthetic_tiny.yaml")
    assert config.train.lr == 0.01 and config.train.epochs == 3
    assert config.data.image_size == (32, 16) and config.data.synthetic_scale == 0.25
    # No recipe named: the synthetic demo, or the paper's BoT-DCSD with real data.
    assert resolve_recipe(train_args("--out", tmp_path))[0].data.image_size == (64, 32)
    real, source = resolve_recipe(train_args("--out", tmp_path, "--data-root", tmp_path))
    assert source.endswith("bot_dcsd_joint.yaml") and real.train.epochs == 120
    # --resume reads the run's own recipe back.
    saved = dataclasses.replace(load("synthetic_tiny"), train=TrainConfig(epochs=4, lr=0.02))
    save_recipe(saved, tmp_path / "config.yaml")
    resumed, source = resolve_recipe(train_args("--out", tmp_path, "--resume", "--epochs", "6"))
    assert source == str(tmp_path / "config.yaml")
    assert resumed.train.lr == 0.02 and resumed.train.epochs == 6
    with pytest.raises(RecipeError, match="--resume reads the run's recipe"):
        resolve_recipe(train_args("--out", tmp_path, "--resume", "--config", "synthetic"))


def test_every_recipe_key_has_its_flag_with_the_sources_choices():
    train = train_args().command_parser
    options = {option: action for action in train._actions for option in action.option_strings}
    for section, cls in SECTIONS.items():
        for item in dataclasses.fields(cls):
            assert flag_name(section, item.name) in options, (section, item.name)
    assert {f.name for f in dataclasses.fields(RunConfig().train)} == {
        f.name for f in dataclasses.fields(TrainConfig)
    }
    assert list(options["--model"].choices) == list_models()
    assert options["--lr"].help.endswith("[train.lr]")
    args = train_args("--amp", "bf16", "--milestones", "3", "5", "--no-stop-gradient")
    config, _ = resolve_recipe(args)
    assert config.train.amp == "bf16" and config.train.milestones == (3, 5)
    assert config.model.stop_gradient is False
    with pytest.raises(SystemExit):
        train_args("--amp", "fp8")


def test_the_dcsd_layer_flags_reach_the_built_model(tmp_path):
    """``--no-stop-gradient`` and ``--no-detach-information-input`` build every DCSD layer with
    them off; without the flags the layers keep the defaults (both on)."""
    import torch

    from dcsd.cli.train import build_model
    from dcsd.data import MultiDomainDataset, make_synthetic_domains
    from dcsd.engine.distributed import DistributedContext

    data = MultiDomainDataset(
        make_synthetic_domains(
            tmp_path, num_domains=2, train_ids_per_domain=2, test_ids_per_domain=2
        )
    )
    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    for flags, expected in (
        ((), True),
        (("--no-stop-gradient", "--no-detach-information-input"), False),
    ):
        config, _ = resolve_recipe(
            train_args("--out", tmp_path / "run", "--model", "resnet50_dcsd", *flags)
        )
        with torch.device("meta"):
            model = build_model(config, data, context)
        assert model.stop_gradient is expected
        assert model.detach_information_input is expected
        assert model.layer4[2].conv2.detach_information_input is expected


def test_whether_a_model_takes_dcsd_options_is_asked_of_the_model(monkeypatch):
    """A registered DCSD variant whose name does not say "dcsd" still gets the DCSD options,
    and a static one does not: the answer is the built model's, not the name's."""
    from dcsd.models import registry
    from dcsd.models.resnet import create_reid_resnet
    from dcsd.recipe import ModelConfig

    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))

    @registry.register_model
    def dynamic_net(pretrained=False, **kwargs):
        return create_reid_resnet("dynamic_net", pretrained, dynamic=True, **kwargs)

    @registry.register_model
    def static_dcsd_named_net(pretrained=False, **kwargs):
        return create_reid_resnet("static_dcsd_named_net", pretrained, dynamic=False, **kwargs)

    assert ModelConfig(architecture="dynamic_net").is_dynamic()
    assert not ModelConfig(architecture="static_dcsd_named_net").is_dynamic()
    assert ModelConfig(architecture="resnet50_dcsd").is_dynamic()
    assert not ModelConfig(architecture="resnet50_reid").is_dynamic()
