"""TensorBoardLogger: a tiny run's event files, read back with TensorBoard's own event reader."""

import json

import numpy as np
import pytest
import test_engine_trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcsd.engine import tensorboard
from dcsd.engine.tensorboard import TENSORBOARD_NOTICE, TensorBoardLogger, scalar_metrics

tiny_data = test_engine_trainer.tiny_data  # the module-scoped fixture


def read_scalars(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_a_run_writes_its_curves_and_a_resume_continues_them(tiny_data, tmp_path):
    metrics = {"synth0": {"cmc": np.array([0.5, 0.75] + [1.0] * 10), "mAP": 0.25, "mINP": 0.125}}
    trainer = test_engine_trainer.make_trainer(
        tiny_data,
        tmp_path,
        epochs=2,
        evaluate=lambda model: metrics,
        callbacks=[TensorBoardLogger(tmp_path / "tb")],
    )
    trainer.fit()
    steps = trainer.iters_per_epoch
    scalars = read_scalars(tmp_path / "tb")
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    # Per iteration: the loss and its parts, each group's lr, images/s; steps counted from 1.
    for part in ("loss", "id", "triplet", "domain", "camera"):
        values = scalars[f"train/{part}"]
        assert [step for step, _ in values] == list(range(1, 2 * steps + 1))
        # The epoch's mean in log.jsonl is the mean of its steps' values.
        for epoch, record in enumerate(log):
            mean = np.mean([v for _, v in values[epoch * steps : (epoch + 1) * steps]])
            assert mean == pytest.approx(record[part], rel=1e-5)
    groups = [g.get("name", i) for i, g in enumerate(trainer.optimizer.param_groups)]
    assert {f"lr/{name}" for name in groups} <= scalars.keys()
    assert scalars[f"lr/{groups[0]}"][-1][1] == pytest.approx(log[-1]["lr"])
    assert all(value > 0 for _, value in scalars["train/images_per_s"])
    # Per evaluation (the last epoch): each dataset's metrics at that epoch.
    assert scalars["eval/synth0/mAP"] == [(2, 0.25)]
    assert scalars["eval/synth0/rank1"] == [(2, 0.5)] and scalars["eval/synth0/rank5"][0][1] == 1
    assert scalars["eval/synth0/mINP"] == [(2, 0.125)]

    # Two epochs more from the checkpoint: the curves go on from iteration 2 * steps + 1.
    resumed = test_engine_trainer.make_trainer(
        tiny_data,
        tmp_path,
        epochs=4,
        evaluate=lambda model: metrics,
        callbacks=[TensorBoardLogger(tmp_path / "tb")],
    )
    assert resumed.resume() == 2
    resumed.fit()
    loss = read_scalars(tmp_path / "tb")["train/loss"]
    assert [step for step, _ in loss] == list(range(1, 4 * steps + 1))


def test_without_tensorboard_the_logger_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(tensorboard, "tensorboard_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'dcsd\[tensorboard\]'"):
        TensorBoardLogger("tb")
    assert "\n" not in TENSORBOARD_NOTICE  # one line


def test_scalar_metrics_take_ranks_from_the_cmc_and_drop_non_finite_values():
    cmc = np.linspace(0.1, 1.0, 10)
    scalars = scalar_metrics({"cmc": cmc, "mAP": np.float64(0.3), "x": float("nan"), "n": 4})
    assert scalars == pytest.approx({"rank1": 0.1, "rank5": 0.5, "rank10": 1.0, "mAP": 0.3, "n": 4})
