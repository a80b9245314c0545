"""The training knobs of TrainConfig: cosine schedule, gradient clipping, freezing and EMA, each
against a computation written out here (not the trainer's code)."""

import copy
import dataclasses
import math

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

from dcsd.engine import Callback, TrainConfig, Trainer, build_scheduler
from dcsd.engine.schedule import warmup_cosine_factor

NUM_CLASSES = 3


class TinyNet(nn.Module):
    """A conv + BatchNorm "backbone" and a linear "head", grouped as a dcsd model groups its
    parameters; the head's bias starts frozen, as BNNeck's bias is."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, NUM_CLASSES)
        self.head.bias.requires_grad_(False)

    def parameter_groups(self):
        return {
            "backbone": [*self.conv.parameters(), *self.bn.parameters()],
            "heads": list(self.head.parameters()),
        }

    def forward(self, images):
        features = F.relu(self.bn(self.conv(images))).mean(dim=(2, 3))
        return self.head(features) if self.training else features


def criterion(logits, pids, domains, camids):
    loss = F.cross_entropy(logits, pids)
    return loss, {"ce": loss.detach()}


def batches(count=3):
    generator = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(4, 3, 6, 5, generator=generator),
            "pid": torch.randint(0, NUM_CLASSES, (4,), generator=generator),
            "domain": torch.zeros(4, dtype=torch.int64),
            "camid": torch.zeros(4, dtype=torch.int64),
        }
        for _ in range(count)
    ]


def trainer(out_dir, callbacks=(), model=None, evaluate=None, **config):
    torch.manual_seed(0)
    model = model or TinyNet()
    settings = dict(epochs=2, optimizer="sgd", lr=0.1, warmup_epochs=0, milestones=(50,))
    config = TrainConfig(**(settings | {"progress": False} | config))
    return Trainer(
        model, criterion, batches(), config, out_dir, callbacks=callbacks, evaluate=evaluate
    )


class Snapshots(Callback):
    """The weights (parameters and buffers) after every step and at every epoch's end."""

    def __init__(self):
        self.steps, self.epochs = [], []

    def on_step_end(self, trainer, step, logs):
        self.steps.append(copy.deepcopy(trainer.unwrapped_model.state_dict()))

    def on_epoch_end(self, trainer, epoch, logs):
        self.epochs.append(copy.deepcopy(trainer.unwrapped_model.state_dict()))


# Cosine schedule.


def test_cosine_factor_is_the_closed_form_times_the_warmup():
    kwargs = {"iters_per_epoch": 10, "warmup_epochs": 2, "total_epochs": 8, "warmup_factor": 0.1}
    for iteration in (0, 5, 20, 40, 79, 80, 95):
        cosine = 0.2 + 0.8 * (1 + math.cos(math.pi * min(iteration / 80, 1))) / 2
        warmup = 0.1 + 0.9 * iteration / 20 if iteration < 20 else 1.0
        expected = cosine * warmup
        got = warmup_cosine_factor(iteration, min_factor=0.2, **kwargs)
        assert got == pytest.approx(expected), iteration
    assert warmup_cosine_factor(80, min_factor=0.2, **kwargs) == pytest.approx(0.2)


def test_cosine_scheduler_keeps_each_groups_warmup():
    groups = [{"params": [nn.Parameter(torch.zeros(1))], "name": n} for n in ("a", "generators")]
    optimizer = torch.optim.SGD(groups, lr=1.0)
    scheduler = build_scheduler(
        optimizer,
        iters_per_epoch=4,
        warmup_epochs=1,
        schedule="cosine",
        total_epochs=5,
        group_warmup_epochs={"generators": 3},
    )
    rates = []
    for _ in range(20):
        rates.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    for iteration, (a, generators) in enumerate(rates):
        cosine = (1 + math.cos(math.pi * iteration / 20)) / 2
        assert a == pytest.approx(cosine * (0.1 + 0.9 * min(iteration / 4, 1)))
        assert generators == pytest.approx(cosine * (0.1 + 0.9 * min(iteration / 12, 1)))
    with pytest.raises(ValueError, match="cosine schedule needs total_epochs >= 1"):
        build_scheduler(optimizer, iters_per_epoch=4, schedule="cosine")
    with pytest.raises(ValueError, match="schedule must be one of"):
        build_scheduler(optimizer, iters_per_epoch=4, schedule="linear")


def test_trainer_follows_the_cosine_schedule(tmp_path):
    seen = []

    class Rates(Callback):
        def on_step_end(self, trainer, step, logs):
            seen.append({v for k, v in logs.items() if k.startswith("lr/")})

    trainer(tmp_path, callbacks=[Rates()], schedule="cosine", min_lr_factor=0.5).fit()
    # 2 epochs of 3 steps; the rate logged after step i is the one for step i + 1.
    expected = [0.1 * (0.5 + 0.25 * (1 + math.cos(math.pi * (i + 1) / 6))) for i in range(6)]
    assert all(len(rates) == 1 for rates in seen)  # every group at the same rate
    assert [rates.pop() for rates in seen] == pytest.approx(expected)


# Gradient clipping.


def test_clipping_scales_the_gradients_to_the_total_norm(tmp_path):
    run = trainer(tmp_path, clip_grad_norm=0.01, weight_decay=0.0)
    model = run.unwrapped_model
    start = copy.deepcopy(model)
    batch = batches()[0]
    run.train_step(batch)
    # By hand: the gradients of the same loss, scaled by 0.01 / their total norm, one SGD step.
    start.train()
    loss, _ = criterion(start(batch["image"]), batch["pid"], None, None)
    loss.backward()
    grads = [p.grad for p in start.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 0.01  # the clipping acts
    assert float(run._grad_norm) == pytest.approx(float(norm), rel=1e-5)  # logged before it
    for (name, after), before in zip(model.named_parameters(), start.parameters(), strict=True):
        if before.grad is None:
            assert torch.equal(after, before), name
        else:
            torch.testing.assert_close(after, before - 0.1 * before.grad * 0.01 / norm)


# Freezing.


def test_freeze_trains_only_the_other_groups_for_the_first_epochs(tmp_path):
    snapshots = Snapshots()
    run = trainer(tmp_path, callbacks=[snapshots], epochs=3, freeze_epochs=2)
    initial = copy.deepcopy(run.unwrapped_model.state_dict())
    run.fit()
    backbone = [k for k in initial if k.startswith(("conv.", "bn."))]
    assert "bn.running_mean" in backbone and "bn.num_batches_tracked" in backbone
    for epoch in (0, 1):  # frozen: weights and BatchNorm statistics untouched, head trained
        state = snapshots.epochs[epoch]
        assert all(torch.equal(state[k], initial[k]) for k in backbone)
        assert not torch.equal(state["head.weight"], initial["head.weight"])
    assert not torch.equal(snapshots.epochs[2]["conv.weight"], initial["conv.weight"])
    assert not torch.equal(snapshots.epochs[2]["bn.running_mean"], initial["bn.running_mean"])
    model = run.unwrapped_model
    assert torch.equal(model.head.bias, initial["head.bias"])  # never trainable: stays so
    assert not model.head.bias.requires_grad and model.conv.weight.requires_grad


def test_freeze_refuses_unknown_groups_and_models_without_groups(tmp_path):
    with pytest.raises(ValueError, match=r"freeze_groups names \['generators'\]"):
        trainer(tmp_path / "a", freeze_epochs=1, freeze_groups=("generators",)).fit()
    plain = nn.Sequential(nn.Conv2d(3, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with pytest.raises(TypeError, match="needs a model with parameter_groups"):
        trainer(tmp_path / "b", model=plain, freeze_epochs=1).fit()


# EMA.


def test_ema_is_the_average_of_the_steps_and_is_evaluated_and_exported(tmp_path):
    snapshots, evaluated = Snapshots(), []

    def evaluate(model):
        evaluated.append(copy.deepcopy(model.state_dict()))
        return {}

    run = trainer(tmp_path, callbacks=[snapshots], evaluate=evaluate, ema_decay=0.75)
    run.fit()
    # By hand: the first step's weights, then average = 0.75 * average + 0.25 * weights.
    average = {k: v.clone() for k, v in snapshots.steps[0].items()}
    for state in snapshots.steps[1:]:
        for key, value in state.items():
            if value.is_floating_point():
                average[key] = 0.75 * average[key] + 0.25 * value
            else:
                average[key] = value.clone()
    ema = run.inference_model.state_dict()
    assert run.inference_model is not run.unwrapped_model
    for key, value in average.items():
        torch.testing.assert_close(ema[key], value, msg=key)
    assert not torch.equal(ema["head.weight"], snapshots.steps[-1]["head.weight"])
    (last_evaluated,) = evaluated
    assert all(torch.equal(last_evaluated[k], v) for k, v in ema.items())
    exported = safetensors.torch.load_file(run.export_model() / "model.safetensors")
    assert all(torch.equal(exported[k], v) for k, v in ema.items())


def test_a_resumed_run_with_ema_ends_bit_exact(tmp_path):
    straight = trainer(tmp_path / "straight", epochs=2, ema_decay=0.9)
    straight.fit()
    first = trainer(tmp_path / "resumed", epochs=1, ema_decay=0.9)
    first.fit()
    resumed = trainer(tmp_path / "resumed", epochs=2, ema_decay=0.9)
    assert resumed.resume() == 1
    resumed.fit()
    for a, b in (
        (straight.inference_model, resumed.inference_model),
        (straight.unwrapped_model, resumed.unwrapped_model),
    ):
        state = b.state_dict()
        assert all(torch.equal(value, state[key]) for key, value in a.state_dict().items())
    # A run without EMA cannot resume a checkpoint that has one, and the reverse: named.
    with pytest.raises(ValueError, match="ExponentialMovingAverage"):
        trainer(tmp_path / "resumed", epochs=3).resume()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("schedule", "linear", "schedule must be one of"),
        ("min_lr_factor", 1.5, r"min_lr_factor must be in \[0, 1\]"),
        ("clip_grad_norm", 0.0, "clip_grad_norm must be None or a finite number > 0"),
        ("clip_grad_norm", float("inf"), "clip_grad_norm must be None or a finite number > 0"),
        ("freeze_epochs", -1, "freeze_epochs"),
        ("freeze_groups", "backbone", "freeze_groups must be a tuple of group names"),
        ("ema_decay", 1.0, r"ema_decay must be None or a number in \(0, 1\)"),
    ],
)
def test_bad_knob_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TrainConfig(), **{field: value})
