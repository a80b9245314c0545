"""build_optimizer: parameter groups, learning-rate factors and the trainer's optimizer hook."""

from __future__ import annotations

import pytest
import torch

import dcsd
from dcsd.engine import TrainConfig, build_optimizer, build_scheduler
from dcsd.modules import DCSDConv


def small_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(8, 8, 1),
        torch.nn.BatchNorm2d(8),
        DCSDConv(8, num_domains=2, num_cameras=3, filter_norm="ddf"),
    )


def group(optimizer, name):
    (found,) = [g for g in optimizer.param_groups if g["name"] == name]
    return found


def test_groups_split_weights_norms_and_generators():
    model = small_model()
    layer = model[2]
    optimizer = build_optimizer(
        model,
        lr=1e-3,
        weight_decay=5e-4,
        weight_decay_norm=0.0,
        generator_lr_factor=3.0,
        generator_weight_decay=1e-5,
    )
    ids = {
        name: {id(p) for p in group(optimizer, name)["params"]}
        for name in ("decay", "no_decay", "generators", "generators_no_decay")
    }
    assert id(model[0].weight) in ids["decay"] and id(layer.domain_mlp[0].weight) in ids["decay"]
    assert {id(model[0].bias), id(model[1].weight), id(model[1].bias)} <= ids["no_decay"]
    assert id(layer.channel_branch[2].weight) in ids["generators"]
    assert id(layer.spatial_branch.weight) in ids["generators"]
    assert {id(layer.channel_norm.scale), id(layer.spatial_branch.bias)} <= ids[
        "generators_no_decay"
    ]
    # Every trainable parameter is in exactly one group.
    total = sum(len(g["params"]) for g in optimizer.param_groups)
    assert total == len(list(model.parameters()))
    assert group(optimizer, "decay")["weight_decay"] == 5e-4
    assert group(optimizer, "no_decay")["weight_decay"] == 0.0
    assert group(optimizer, "generators")["lr"] == pytest.approx(3e-3)
    assert group(optimizer, "generators")["weight_decay"] == 1e-5
    assert group(optimizer, "generators_no_decay")["weight_decay"] == 0.0


def test_defaults_are_bots_recipe_and_frozen_parameters_are_left_out():
    model = small_model()
    model[1].weight.requires_grad_(False)
    optimizer = build_optimizer(model)
    assert isinstance(optimizer, torch.optim.Adam)
    assert {g["weight_decay"] for g in optimizer.param_groups} == {5e-4}
    assert {g["lr"] for g in optimizer.param_groups} == {3.5e-4}
    assert all(p is not model[1].weight for g in optimizer.param_groups for p in g["params"])
    assert isinstance(build_optimizer(model, name="sgd"), torch.optim.SGD)
    assert isinstance(build_optimizer(model, name="adamw"), torch.optim.AdamW)


def test_scheduler_scales_each_group_from_its_own_rate():
    optimizer = build_optimizer(small_model(), lr=1.0, generator_lr_factor=0.5)
    scheduler = build_scheduler(optimizer, iters_per_epoch=1, warmup_epochs=0, milestones=(1,))
    optimizer.step()
    scheduler.step()
    assert group(optimizer, "decay")["lr"] == pytest.approx(0.1)
    assert group(optimizer, "generators")["lr"] == pytest.approx(0.05)


def test_static_model_has_no_generator_group():
    optimizer = build_optimizer(dcsd.resnet50_reid(num_classes=4))
    assert {g["name"] for g in optimizer.param_groups} == {"decay", "no_decay"}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        build_optimizer(small_model(), name="lamb")
    with pytest.raises(ValueError, match="lr must be >= 0"):
        build_optimizer(small_model(), lr=-1.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(optimizer="rmsprop")


def test_generators_warm_up_over_their_own_length():
    optimizer = build_optimizer(small_model(), lr=1.0)
    scheduler = build_scheduler(
        optimizer,
        iters_per_epoch=4,
        warmup_epochs=1,
        milestones=(10,),
        group_warmup_epochs={"generators": 3, "generators_no_decay": 3},
    )
    for _ in range(4):  # one epoch: the other groups are warm, the generators a third of the way
        optimizer.step()
        scheduler.step()
    assert group(optimizer, "decay")["lr"] == pytest.approx(1.0)
    assert group(optimizer, "no_decay")["lr"] == pytest.approx(1.0)
    assert group(optimizer, "generators")["lr"] == pytest.approx(0.1 * (2 / 3) + 1 / 3)
    assert group(optimizer, "generators_no_decay")["lr"] == pytest.approx(0.1 * (2 / 3) + 1 / 3)
    for _ in range(8):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1.0] * 4)


def test_group_warmup_names_must_exist():
    optimizer = build_optimizer(dcsd.resnet50_reid(num_classes=4))
    with pytest.raises(ValueError, match=r"names groups \['generators'\]"):
        build_scheduler(optimizer, iters_per_epoch=1, group_warmup_epochs={"generators": 2})
    with pytest.raises(ValueError, match="generator_warmup_epochs must be None or a finite"):
        TrainConfig(generator_warmup_epochs=-1.0)


def test_model_groups_its_parameters_and_the_optimizer_asks_it():
    model = dcsd.resnet50_dcsd(num_classes=4, num_domains=2, num_cameras=3, filter_norm="ddf")
    groups = model.parameter_groups()
    assert set(groups) == {"backbone", "generators", "information", "heads"}
    ids = {key: [id(p) for p in params] for key, params in groups.items()}
    flat = [i for members in ids.values() for i in members]
    assert len(flat) == len(set(flat)) == len(list(model.parameters()))
    layers = [m for m in model.modules() if isinstance(m, DCSDConv)]
    assert len(layers) == 16
    generators = {
        id(p)
        for layer in layers
        for part in (layer.channel_branch, layer.spatial_branch, layer.channel_norm)
        for p in part.parameters()
    }
    assert set(ids["generators"]) == generators  # DDF's spatial scale is a buffer
    mlps = {id(p) for layer in layers for p in (*layer.domain_mlp.parameters(),)}
    assert mlps <= set(ids["information"])
    assert id(model.head.classifier.weight) in ids["heads"]
    assert id(layers[0].camera_classifier.weight) in ids["heads"]
    assert (
        id(model.conv1.weight) in ids["backbone"]
        and id(model.layer1[0].bn2.bias) in ids["backbone"]
    )
    assert model.heads() == {"identity": 4, "domain": 2, "camera": 3}
    assert dcsd.resnet50_reid(num_classes=0).heads() == {"identity": 0}
    names = model.no_weight_decay()
    assert {"bn1.weight", "layer1.0.conv2.channel_norm.scale", "head.bnneck.bias"} <= names
    assert "conv1.weight" not in names and "layer1.0.conv2.spatial_branch.weight" not in names
    optimizer = build_optimizer(model, generator_lr_factor=2.0)
    by_name = {g["name"]: {id(p) for p in g["params"]} for g in optimizer.param_groups}
    assert by_name["generators"] | by_name["generators_no_decay"] == generators
    assert id(layers[0].domain_mlp[0].weight) in by_name["decay"]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set().union(*by_name.values()) == trainable


def test_groups_that_overlap_or_leave_a_parameter_out_are_refused():
    class Overlapping(torch.nn.Module):
        def __init__(self, overlap: bool) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.overlap = overlap

        def parameter_groups(self):
            first = list(self.a.parameters())
            return {"backbone": first, "heads": first if self.overlap else []}

    with pytest.raises(ValueError, match="in both 'backbone' and 'heads'"):
        build_optimizer(Overlapping(True))
    with pytest.raises(ValueError, match=r"leaves out 2 parameter\(s\) \(e.g. b.weight\)"):
        build_optimizer(Overlapping(False))
