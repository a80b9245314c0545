"""The training loop on CPU: checkpoints, exact resume after an interruption, JSONL log, and a
2-process gloo DDP run. A small ReID network keeps these fast; the engine is model-agnostic and
tests/test_end_to_end.py runs it with ResNet50-DCSD."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import dcsd
from dcsd.data import MultiDomainDataset, make_synthetic_domains
from dcsd.engine import (
    Callback,
    DistributedContext,
    TrainConfig,
    Trainer,
    build_eval_splits,
    build_train_loader,
    evaluate_model,
    load_training_state,
)
from dcsd.losses import DCSDLoss
from dcsd.models import ReIDOutput


class TinyReIDNet(nn.Module):
    """A two-conv ReID network with a BNNeck and per-"layer" domain and camera logits."""

    def __init__(self, num_classes: int, num_domains: int, num_cameras: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.neck = nn.BatchNorm1d(16)
        self.classifier = nn.Linear(16, num_classes, bias=False)
        self.domain = nn.Linear(16, num_domains)
        self.camera = nn.Linear(16, num_cameras)

    def forward(self, images):
        features = self.body(images)
        embedding = self.neck(features)
        if not self.training:
            return embedding
        return ReIDOutput(
            features,
            self.classifier(embedding),
            (self.domain(features), self.domain(features.detach())),
            (self.camera(features),),
        )


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    domains = make_synthetic_domains(
        root=root, num_domains=2, train_ids_per_domain=6, test_ids_per_domain=4, image_size=(32, 16)
    )
    return MultiDomainDataset(domains)


def make_trainer(
    data,
    out_dir,
    epochs=3,
    num_workers=0,
    evaluate=None,
    context=None,
    seed=0,
    callbacks=(),
    **train_options,
):
    torch.manual_seed(seed)
    model = TinyReIDNet(data.num_classes, data.num_domains, data.num_cameras)
    loader = build_train_loader(
        data,
        image_size=(32, 16),
        num_identities=4,
        num_instances=2,
        num_workers=num_workers,
        context=context,
        seed=seed,
    )
    config = TrainConfig(
        epochs=epochs,
        lr=1e-2,
        warmup_epochs=1,
        milestones=(2,),
        progress=False,
        seed=seed,
        **train_options,
    )
    return Trainer(
        model,
        DCSDLoss(),
        loader,
        config,
        out_dir,
        context=context,
        evaluate=evaluate,
        callbacks=callbacks,
    )


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_to_identical_weights(tiny_data, tmp_path):
    reference = make_trainer(tiny_data, tmp_path / "straight", num_workers=2)
    reference.fit()

    interrupted = make_trainer(tiny_data, tmp_path / "resumed", num_workers=2)
    criterion, calls = interrupted.criterion, []

    def failing_criterion(*args):
        calls.append(1)
        if len(calls) == interrupted.iters_per_epoch + 2:
            raise Interrupt
        return criterion(*args)

    interrupted.criterion = failing_criterion
    with pytest.raises(Interrupt):
        interrupted.fit()
    assert load_training_state(tmp_path / "resumed" / "checkpoints").epoch == 1

    resumed = make_trainer(tiny_data, tmp_path / "resumed", num_workers=2, seed=0)
    assert resumed.resume() == 1
    resumed.fit()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    log = [
        json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    ]
    assert [record["epoch"] for record in log] == [1, 2, 3]


def test_checkpoint_period_saves_every_nth_epoch_and_a_resume_retrains_the_rest(
    tiny_data, tmp_path
):
    options = {"epochs": 5, "checkpoint_period": 2, "keep_checkpoints": 5}
    reference = make_trainer(tiny_data, tmp_path / "straight", **options)
    reference.fit()
    saved = sorted(p.name for p in (tmp_path / "straight" / "checkpoints").glob("epoch_*"))
    assert saved == ["epoch_0002", "epoch_0004", "epoch_0005"]  # every 2nd, and the last
    every_epoch = make_trainer(tiny_data, tmp_path / "every", epochs=5)
    every_epoch.fit()  # saving less often leaves the training itself unchanged
    for name, value in every_epoch.model.state_dict().items():
        assert torch.equal(reference.model.state_dict()[name], value), name

    interrupted = make_trainer(tiny_data, tmp_path / "resumed", **options)
    criterion, calls = interrupted.criterion, []

    def failing_criterion(*args):  # fails in epoch 4: epochs 1-3 done, the checkpoint is 2's
        calls.append(1)
        if len(calls) == 3 * interrupted.iters_per_epoch + 1:
            raise Interrupt
        return criterion(*args)

    interrupted.criterion = failing_criterion
    with pytest.raises(Interrupt):
        interrupted.fit()
    resumed = make_trainer(tiny_data, tmp_path / "resumed", **options)
    assert resumed.resume() == 2
    with pytest.warns(RuntimeWarning, match="epochs after the resumed one"):
        resumed.fit()  # epoch 3's log line is set aside: it is trained again
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
    log = (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2, 3, 4, 5]


def test_fit_logs_losses_and_evaluates(tiny_data, tmp_path):
    splits = build_eval_splits(tiny_data, image_size=(32, 16), batch_size=16, num_workers=0)
    trainer = make_trainer(
        tiny_data, tmp_path, epochs=2, evaluate=lambda model: evaluate_model(model, splits)
    )
    records = trainer.fit()
    assert [r["epoch"] for r in records] == [1, 2]
    for part in ("loss", "id", "triplet", "domain", "camera", "lr", "images_per_s"):
        assert part in records[0]
    assert records[0]["domain"] > 0 and records[0]["camera"] > 0
    assert set(records[-1]["eval"]) == set(tiny_data.eval_splits)
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(logged) == 2
    assert 0.0 <= logged[-1]["eval"]["synth0"]["mAP"] <= 1.0
    assert len(logged[-1]["eval"]["synth0"]["cmc"]) == 50
    assert trainer.model.training, "evaluation must restore training mode"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "epoch_0001",
        "epoch_0002",
        "latest",
    ]


def _ddp_worker(rank, world_size, port, data, out_dir, seen):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        context = DistributedContext(rank, world_size, 0, torch.device("cpu"))
        trainer = make_trainer(data, out_dir, epochs=2, context=context)
        seen[rank] = [list(batch) for batch in trainer.train_loader.batch_sampler]
        trainer.fit()
        weights = torch.cat([p.detach().flatten() for p in trainer.unwrapped_model.parameters()])
        gathered = [torch.empty_like(weights) for _ in range(world_size)]
        dist.all_gather(gathered, weights)
        seen[f"equal{rank}"] = all(torch.equal(gathered[0], w) for w in gathered)
    finally:
        dist.destroy_process_group()


def test_two_process_gloo_ddp(tiny_data, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with mp.Manager() as manager:
        seen = manager.dict()
        mp.spawn(_ddp_worker, args=(2, port, tiny_data, tmp_path, seen), nprocs=2, join=True)
        seen = dict(seen)
    assert seen["equal0"] and seen["equal1"]
    rank0 = {i for batch in seen[0] for i in batch}
    rank1 = {i for batch in seen[1] for i in batch}
    assert len(seen[0]) == len(seen[1]) > 0
    assert all(len(batch) == 8 for batch in seen[0] + seen[1])
    assert rank0.isdisjoint(rank1)
    assert load_training_state(tmp_path / "checkpoints").epoch == 2
    log = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(log) == 2


def test_trainer_takes_an_optimizer_or_builds_one_from_the_config(tiny_data, tmp_path):
    built = make_trainer(tiny_data, tmp_path / "built", epochs=1)
    assert isinstance(built.optimizer, torch.optim.Adam)
    assert {g["name"] for g in built.optimizer.param_groups} == {"decay", "no_decay"}

    torch.manual_seed(0)
    model = TinyReIDNet(tiny_data.num_classes, tiny_data.num_domains, tiny_data.num_cameras)
    sgd = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = build_train_loader(
        tiny_data, image_size=(32, 16), num_identities=4, num_instances=2, num_workers=0
    )
    config = TrainConfig(epochs=1, warmup_epochs=0, milestones=(5,), progress=False)
    trainer = Trainer(model, DCSDLoss(), loader, config, tmp_path / "given", optimizer=sgd)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.fit()
    assert trainer.optimizer is sgd and sgd.param_groups[0]["lr"] == pytest.approx(0.05)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))

    # A scheduler of one's own, stepped once per iteration, checkpointed with the run.
    decay = torch.optim.lr_scheduler.MultiplicativeLR(sgd, lambda step: 0.5)
    trainer = Trainer(
        model, DCSDLoss(), loader, config, tmp_path / "own", optimizer=sgd, scheduler=decay
    )
    trainer.fit()
    steps = trainer.iters_per_epoch
    assert trainer.scheduler is decay and sgd.param_groups[0]["lr"] == pytest.approx(
        0.05 * 0.5**steps
    )
    assert decay.last_epoch == steps
    # Resumed, a scheduler of one's own keeps its rates (the config's lr is not applied to it).
    resumed_decay = torch.optim.lr_scheduler.MultiplicativeLR(sgd, lambda step: 0.5)
    resumed = Trainer(
        model, DCSDLoss(), loader, config, tmp_path / "own", optimizer=sgd, scheduler=resumed_decay
    )
    assert resumed.resume() == 1
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5**steps)
    with pytest.raises(ValueError, match="scheduler must schedule the optimizer passed with it"):
        Trainer(model, DCSDLoss(), loader, config, tmp_path / "bad", scheduler=decay)


def test_generators_warm_up_longer_and_resume_on_their_own_schedule(tiny_data, tmp_path):
    torch.manual_seed(0)
    model = TinyReIDNet(tiny_data.num_classes, tiny_data.num_domains, tiny_data.num_cameras)
    model.body.insert(3, dcsd.DCSDConv(8, factors=("sample",)))
    loader = build_train_loader(
        tiny_data, image_size=(32, 16), num_identities=4, num_instances=2, num_workers=0
    )
    config = TrainConfig(
        epochs=1,
        lr=1e-2,
        warmup_epochs=1,
        generator_warmup_epochs=4,
        milestones=(9,),
        progress=False,
    )
    Trainer(model, DCSDLoss(), loader, config, tmp_path).fit()

    # Resumed after 1 of 4 warmup epochs: the backbone is warm, the generators a quarter of the
    # way from warmup_factor (0.1) to 1, each group at its own point of its own schedule.
    resumed = Trainer(model, DCSDLoss(), loader, dataclasses.replace(config, epochs=2), tmp_path)
    assert resumed.resume() == 1
    rates = {g["name"]: g["lr"] for g in resumed.optimizer.param_groups}
    assert rates["decay"] == pytest.approx(1e-2) and rates["no_decay"] == pytest.approx(1e-2)
    assert rates["generators"] == pytest.approx(1e-2 * (0.1 * 0.75 + 0.25))
    resumed.fit()
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(1e-2)


def test_evaluate_model_on_unseen_datasets_ranks_on_the_model_device(tiny_data, monkeypatch):
    import dcsd.engine.evaluation as evaluation

    unseen = tiny_data.datasets[1:]  # any list of datasets, e.g. ones not trained on
    splits = build_eval_splits(unseen, image_size=(32, 16), batch_size=16, num_workers=0)
    assert list(splits) == [d.name for d in unseen]
    devices = []
    rank = evaluation.evaluate_retrieval

    def spy(*args, **kwargs):
        devices.append(kwargs["device"])
        return rank(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_retrieval", spy)
    model = TinyReIDNet(tiny_data.num_classes, tiny_data.num_domains, tiny_data.num_cameras)
    results = evaluate_model(model, splits, rerank=True, roc=True)
    assert devices == [torch.device("cpu")] * len(unseen)  # the model's device
    assert all("TPR@FPR=1e-04" in metrics for metrics in results.values())
    with pytest.raises(TypeError, match="non-empty list of ReIDDataset"):
        build_eval_splits([])
    with pytest.raises(ValueError, match="distinct"):
        build_eval_splits([unseen[0], unseen[0]])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_model_on_the_gpu_matches_the_cpu(tiny_data):
    splits = build_eval_splits(tiny_data, image_size=(32, 16), batch_size=16, num_workers=0)
    torch.manual_seed(0)
    model = TinyReIDNet(tiny_data.num_classes, tiny_data.num_domains, tiny_data.num_cameras)
    on_cpu = evaluate_model(model, splits, amp=False)
    on_gpu = evaluate_model(model.cuda(), splits, amp=False)
    for name, metrics in on_cpu.items():
        assert abs(on_gpu[name]["mAP"] - metrics["mAP"]) < 1e-4, name
        np.testing.assert_allclose(on_gpu[name]["cmc"], metrics["cmc"], atol=1e-4)


def test_trainer_refuses_model_not_sized_for_the_data(tiny_data, tmp_path):
    loader = build_train_loader(tiny_data, image_size=(32, 16), num_identities=4, num_instances=2)
    config = TrainConfig(epochs=1, progress=False)
    oversized = dcsd.resnet50_dcsd(num_classes=tiny_data.num_classes)  # 5 domains, 32 cameras
    with pytest.raises(ValueError) as info:
        Trainer(oversized, DCSDLoss(), loader, config, tmp_path / "bad", data=tiny_data)
    message = str(info.value)
    domains, cameras = tiny_data.num_domains, tiny_data.num_cameras
    assert f"num_domains: the model has 5, the training data has {domains}" in message
    assert f"num_cameras: the model has 32, the training data has {cameras}" in message
    wrong_ids = dcsd.resnet50_reid(num_classes=tiny_data.num_classes + 1)
    with pytest.raises(ValueError, match=f"num_classes: the model has {tiny_data.num_classes + 1}"):
        Trainer(wrong_ids, DCSDLoss(), loader, config, tmp_path / "bad", data=tiny_data)
    fits = dcsd.resnet50_dcsd(**tiny_data.model_kwargs())
    trainer = Trainer(fits, DCSDLoss(), loader, config, tmp_path / "good", data=tiny_data)
    assert trainer.unwrapped_model is fits


class Recorder(Callback):
    """Writes down every call; its state is a running sum of the step losses."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.loss_sum = torch.zeros((), dtype=torch.float64)

    def on_fit_begin(self, trainer):
        self.calls.append(("fit_begin",))

    def on_epoch_begin(self, trainer, epoch):
        self.calls.append(("epoch_begin", epoch))

    def on_step_begin(self, trainer, step):
        self.calls.append(("step_begin", step))

    def on_step_end(self, trainer, step, logs):
        self.calls.append(("step_end", step, dict(logs)))
        self.loss_sum += logs["loss"]

    def on_epoch_end(self, trainer, epoch, logs):
        self.calls.append(("epoch_end", epoch, dict(logs)))

    def after_evaluation(self, trainer, epoch, metrics):
        self.calls.append(("evaluated", epoch, sorted(metrics)))

    def on_fit_end(self, trainer):
        self.calls.append(("fit_end",))

    def state_dict(self):
        return {"loss_sum": self.loss_sum.clone()}

    def load_state_dict(self, state):
        self.loss_sum = state["loss_sum"].clone()


def test_callbacks_see_each_moment_and_their_state_resumes(tiny_data, tmp_path):
    splits = build_eval_splits(tiny_data, image_size=(32, 16), batch_size=16, num_workers=0)
    recorder = Recorder()
    trainer = make_trainer(
        tiny_data,
        tmp_path / "run",
        epochs=2,
        evaluate=lambda model: evaluate_model(model, splits),
        callbacks=[recorder],
    )
    records = trainer.fit()
    steps = trainer.iters_per_epoch
    kinds = [call[0] for call in recorder.calls]
    epoch_calls = ["epoch_begin"] + ["step_begin", "step_end"] * steps + ["epoch_end"]
    assert kinds == ["fit_begin", *epoch_calls, *epoch_calls, "evaluated", "fit_end"]
    step_logs = [call[2] for call in recorder.calls if call[0] == "step_end"]
    names = {g["name"] for g in trainer.optimizer.param_groups}
    for logs in step_logs:
        assert {"loss", "id", "triplet", "domain", "camera", "images_per_s", "grad_norm"} <= set(
            logs
        )
        assert {f"lr/{name}" for name in names} <= set(logs)
    # The epoch's logs are its record; the step losses average to the epoch's mean loss.
    epoch_logs = [call[2] for call in recorder.calls if call[0] == "epoch_end"]
    for record, logs, first in zip(records, epoch_logs, (0, steps), strict=True):
        assert logs == {k: v for k, v in record.items() if k not in ("epoch", "eval")}
        mean = sum(log["loss"] for log in step_logs[first : first + steps]) / steps
        assert logs["loss"] == pytest.approx(mean, rel=1e-5)
    assert recorder.calls[-2] == ("evaluated", 1, sorted(tiny_data.eval_splits))

    # Resumed after epoch 1, the callback's state is the checkpoint's, then goes on as before.
    after_one = float(sum(log["loss"] for log in step_logs[:steps]))
    straight = Recorder()
    make_trainer(tiny_data, tmp_path / "straight", epochs=2, callbacks=[straight]).fit()
    first = Recorder()
    make_trainer(tiny_data, tmp_path / "resumed", epochs=1, callbacks=[first]).fit()
    assert float(first.loss_sum) == pytest.approx(after_one, rel=1e-6)
    resumed = Recorder()
    trainer = make_trainer(tiny_data, tmp_path / "resumed", epochs=2, callbacks=[resumed])
    assert trainer.resume() == 1
    assert torch.equal(resumed.loss_sum, first.loss_sum)
    trainer.fit()
    assert torch.equal(resumed.loss_sum, straight.loss_sum)

    # A checkpoint whose callbacks' states are not this run's is refused.
    with pytest.raises(ValueError, match="holds the state of a callback Recorder"):
        make_trainer(tiny_data, tmp_path / "resumed", epochs=3).resume()
    with pytest.raises(
        TypeError, match="must be dcsd.engine.Callback objects, got builtin_function"
    ):
        make_trainer(tiny_data, tmp_path / "other", callbacks=[print])


@pytest.mark.slow
def test_a_trained_model_reloads_with_the_card_of_what_it_was_trained_on(tiny_data, tmp_path):
    import torchvision

    from dcsd.data import build_eval_transforms
    from dcsd.models import load_imagenet_backbone

    torch.manual_seed(0)
    model = dcsd.resnet50_reid(**tiny_data.model_kwargs())
    load_imagenet_backbone(model, torchvision.models.resnet50().state_dict())
    loader = build_train_loader(
        tiny_data, image_size=(32, 16), num_identities=4, num_instances=2, num_workers=0
    )
    splits = build_eval_splits(tiny_data, image_size=(32, 16), batch_size=16, num_workers=0)
    config = TrainConfig(epochs=1, warmup_epochs=0, milestones=(5,), progress=False)
    trainer = Trainer(
        model,
        DCSDLoss(),
        loader,
        config,
        tmp_path,
        evaluate=lambda m: evaluate_model(m, splits),
        data=tiny_data,
    )
    (record,) = trainer.fit()
    folder = trainer.export_model()
    card = dcsd.load_model(folder).pretrained_cfg
    # Its own datasets in domain order, cameras and size; the metrics it measured, no others.
    assert card.name == "trained" and card.datasets == ("synth0", "synth1")
    assert card.num_cameras == tiny_data.num_cameras and card.input_size == (3, 32, 16)
    assert set(card.metrics) == {"synth0", "synth1"}
    for name, metrics in card.metrics.items():
        assert metrics["mAP"] == pytest.approx(100 * record["eval"][name]["mAP"])
        assert metrics["rank1"] == pytest.approx(100 * record["eval"][name]["cmc"][0])
    assert "after epoch 1" in card.metrics_source and card.paper_metrics == {}
    assert card.hub_id == "" and not card.published
    assert card.recipe["train_config"]["lr"] == config.lr and card.recipe["batch"] == [4, 2]
    assert "torchvision ResNet50" in card.source  # where training started
    assert tuple(build_eval_transforms(card).transforms[0].size) == (32, 16)
    # The epoch's checkpoint, written before its evaluation, has the same card without metrics.
    checkpoint_card = dcsd.load_model(tmp_path / "checkpoints").pretrained_cfg
    assert checkpoint_card.datasets == card.datasets and checkpoint_card.input_size == (3, 32, 16)
    assert checkpoint_card.metrics == {}


def test_resume_with_another_image_size_is_named_at_the_first_step(tiny_data, tmp_path):
    make_trainer(tiny_data, tmp_path, epochs=1).fit()
    resumed = make_trainer(tiny_data, tmp_path, epochs=2)
    resumed.train_loader = build_train_loader(
        tiny_data, image_size=(40, 20), num_identities=4, num_instances=2, num_workers=0
    )
    assert resumed.resume() == 1
    with pytest.warns(
        RuntimeWarning, match=r"trained on \[3, 32, 16\], this run feeds \[3, 40, 20\]"
    ):
        resumed.fit()
    state = load_training_state(tmp_path / "checkpoints").training_state
    assert state["run"]["input_size"] == [3, 40, 20]
