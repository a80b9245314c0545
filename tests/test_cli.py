"""The installed ``dcsd`` command, run in a subprocess as a user runs it (``pip install -e .`` puts
it beside the interpreter), on tiny synthetic data; and the example scripts that remain."""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dcsd.data import make_synthetic_domains

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DCSD = shutil.which("dcsd", path=str(Path(sys.executable).parent)) or shutil.which("dcsd")
TINY = ROOT / "configs" / "synthetic_tiny.yaml"


def environment(home):
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    return env


def dcsd(*args, cwd, home, check=True):
    """Run the installed command; with ``check``, it must succeed. Returns the result."""
    assert DCSD is not None, "the dcsd command is not installed: pip install -e ."
    result = subprocess.run(
        [DCSD, *map(str, args)],
        cwd=cwd,
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def example(script, *args, cwd, home):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        cwd=cwd,
        env=environment(home),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def report_rows(text):
    """``{dataset: [rank-1, rank-5, rank-10, mAP, mINP]}`` of a printed metrics table."""
    rows = re.findall(r"^\| (\w+) \|((?: [\d.]+ \|)+)$", text, flags=re.MULTILINE)
    return {name: [float(v) for v in values.split("|") if v.strip()] for name, values in rows}


def test_the_command_names_its_commands_and_refuses_bad_recipes(tmp_path):
    out = dcsd("--help", cwd=tmp_path, home=tmp_path).stdout
    for command in ("train", "eval", "extract", "export", "push", "convert-ddf"):
        assert f"    {command}" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {TINY}\ntrain:\n  epoch: 3\n")
    result = dcsd("train", "--config", bad, cwd=tmp_path, home=tmp_path, check=False)
    assert result.returncode == 2 and f"{bad}: unknown key train.epoch (known: " in result.stderr
    bad.write_text("data:\n  image_size: 64\n")
    result = dcsd("train", "--config", bad, cwd=tmp_path, home=tmp_path, check=False)
    assert f"{bad}: data.image_size must be a list of 2 an int, got 64" in result.stderr
    result = dcsd("train", "--set", "train.lr=fast", cwd=tmp_path, home=tmp_path, check=False)
    assert "--set: train.lr must be a number, got 'fast'" in result.stderr
    assert not (tmp_path / "runs").exists()  # refused before any run folder is made


@pytest.mark.slow
def test_train_resume_eval_extract_export_push(tmp_path):
    run = tmp_path / "run"
    args = ["--config", TINY, "--model", "resnet50_reid", "--out", run, "--device", "cpu"]
    out = dcsd("train", *args, "--generator-warmup-epochs", "2", cwd=tmp_path, home=tmp_path)
    assert "epoch 1:" in out.stdout and "| mean |" in out.stdout
    recipe = (run / "config.yaml").read_text()
    # The resolved recipe: P x K, the triplet, domain balancing and the datasets, in order.
    for line in ("  batch: [4, 2]", "  triplet: batch_hard", "  balance_domains: false"):
        assert f"\n{line}\n" in recipe
    assert "  datasets: [synth0, synth1, synth2]\n" in recipe
    assert "  generator_warmup_epochs: 2.0\n" in recipe

    # The resume names no recipe: it reads run/config.yaml back; flags still override it.
    test_args = ["--test-datasets", "synth1,synth2", "--rerank", "--aqe", "--roc"]
    out = dcsd("train", "--out", run, "--resume", "--epochs", "2", *test_args,
               cwd=tmp_path, home=tmp_path).stdout  # fmt: skip
    assert "resumed from epoch 1" in out and "epoch 2:" in out and "epoch 1:" not in out
    assert "| synth1 |" in out and "| synth0 |" not in out and "TPR@FPR=1e-02" in out
    recipe = (run / "config.yaml").read_text()
    assert "  epochs: 2\n" in recipe and "  test_datasets: [synth1, synth2]\n" in recipe
    assert "  image_size: [32, 16]\n" in recipe and "  architecture: resnet50_reid\n" in recipe
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    train_config = json.loads((run / "model" / "train_config.json").read_text())
    assert train_config["generator_warmup_epochs"] == 2.0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architecture"] == "resnet50_reid" and config["num_domains"] == 3
    card = config["pretrained_cfg"]
    assert card["input_size"] == [3, 32, 16] and card["datasets"] == ["synth0", "synth1", "synth2"]
    assert set(card["metrics"]) == {"synth1", "synth2"} and card["name"] == "trained"

    # TensorBoard: both epochs' iterations, in order, and each test dataset's metrics.
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) % 2 == 0
    mAP = events.Scalars("eval/synth2/mAP")
    assert [e.step for e in mAP] == [1, 2] and mAP[-1].value == pytest.approx(
        log[-1]["eval"]["synth2"]["mAP"]
    )

    # Evaluation only, of the exported model folder, with the run's recipe beside it (test
    # datasets, synthetic scale, seed, re-ranking, AQE): the run's last test, reproduced.
    out = dcsd("eval", run / "model", cwd=tmp_path, home=tmp_path).stdout
    assert f"recipe {run / 'config.yaml'}" in out and "at 32x16" in out  # the card's size
    rows = report_rows(out)
    assert set(rows) == {"synth1", "synth2", "mean"}
    for name in ("synth1", "synth2"):
        metrics = log[-1]["eval"][name]
        expected = [100 * metrics["cmc"][k] for k in (0, 4, 9)] + [100 * metrics["mAP"]]
        assert rows[name][:4] == pytest.approx(expected, abs=0.051), name

    out = dcsd(  # no --image-size: the model's config.json says 32x16
        "extract", "--model", run / "model", "--synthetic-domain", "synth1",
        "--out", tmp_path / "gallery.safetensors",
        "--query-index", "0", "--top-k", "3", "--ranked-list", tmp_path / "ranked.png",
        cwd=tmp_path, home=tmp_path,
    ).stdout  # fmt: skip
    assert "ranked list written" in out and (tmp_path / "ranked.png").stat().st_size > 0
    with safe_open(str(tmp_path / "gallery.safetensors"), "pt") as features:
        paths = json.loads(features.metadata()["paths"])
        assert features.get_tensor("features").shape == (len(paths), 2048)

    out = dcsd("export", run / "model", tmp_path / "m.onnx", cwd=tmp_path, home=tmp_path).stdout
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    shape = [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    # A dynamic batch (named by the exporter) of the card's 32x16 images.
    assert isinstance(shape[0], str) and shape[1:] == [3, 32, 16] and "N x 3 x 32 x 16" in out

    out = dcsd("push", run / "model", "--drop-classifier", "--save-only", tmp_path / "up",
               cwd=tmp_path, home=tmp_path).stdout  # fmt: skip
    assert json.loads((tmp_path / "up" / "config.json").read_text())["num_classes"] == 0
    result = dcsd("push", run / "model", cwd=tmp_path, home=tmp_path, check=False)
    assert result.returncode == 2 and "give --repo-id" in result.stderr

    out = example(
        "plot_training_log.py", run / "log.jsonl", "--out", tmp_path / "c.png",
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert "2 epochs, 2 evaluations" in out and (tmp_path / "c.png").stat().st_size > 0
    out = example(
        "plot_embeddings.py", "--model", f"a={run / 'model'}", "--model", f"b={run / 'model'}",
        "--max-images", "15", "--image-size", "32", "16", "--out", tmp_path / "tsne.png",
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert out.count("own-domain share") == 2 and (tmp_path / "tsne.png").stat().st_size > 0


@pytest.mark.slow
def test_combineall_trains_on_everything_and_tests_on_an_unseen_domain(tmp_path):
    out = dcsd(
        "train", "--config", TINY, "--datasets", "synth0,synth1", "--combineall",
        "--test-datasets", "synth2", "--device", "cpu", "--out", tmp_path / "run",
        cwd=tmp_path, home=tmp_path,
    ).stdout  # fmt: skip
    # Each combined dataset trains on its train + query + gallery identities.
    synth0, synth1, _ = make_synthetic_domains(tmp_path / "synthetic", scale=0.25)
    assert synth0.combine_all().num_train_pids > synth0.num_train_pids
    identities = synth0.combine_all().num_train_pids + synth1.combine_all().num_train_pids
    assert f"2 domains, {identities} identities" in out, out
    assert "| synth2 |" in out and "| synth0 |" not in out and "| synth1 |" not in out


def test_combineall_refuses_to_test_on_its_training_images(tmp_path):
    result = dcsd(
        "train", "--combineall", "--datasets", "synth0,synth1", "--test-datasets", "synth1",
        "--device", "cpu", cwd=tmp_path, home=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--combineall trains on the query and gallery of ['synth1']" in result.stderr


def test_train_knows_registered_datasets(tmp_path):
    (tmp_path / "my_datasets.py").write_text(
        "from dcsd.data import register_dataset\n\n"
        "def campus(root):\n"
        "    raise RuntimeError(f'campus factory called with {root}')\n\n"
        "register_dataset('campus', campus)\n"
    )
    result = subprocess.run(
        [DCSD, "train", "--data-root", str(tmp_path), "--register", "my_datasets"]
        + ["--datasets", "campus,nobody"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    # Names are checked before any dataset is read; the registered one is known.
    assert "--datasets: unknown ['nobody']; known: ['market1501'" in result.stderr
    assert "'campus']" in result.stderr
    assert "campus factory called" not in result.stderr


def test_convert_ddf_then_train_from_it(tmp_path):
    """DDF's checkpoint, as its authors' timm training saved it, converted to a model folder
    whose card names its source, then a run started from that folder."""
    from ddf_transcription import DDFMulResNet50

    ddf = DDFMulResNet50()
    checkpoint = tmp_path / "ddf_mul_resnet50.pth.tar"
    torch.save(
        {
            "epoch": 299,
            "arch": "ddf_mul_resnet50",
            "state_dict": {f"module.{k}": v for k, v in ddf.state_dict().items()},
            "args": argparse.Namespace(model="ddf_mul_resnet50"),
        },
        checkpoint,
    )
    out = dcsd("convert-ddf", checkpoint, tmp_path / "ddf", cwd=tmp_path, home=tmp_path).stdout
    assert "fresh" in out and "fc.weight, fc.bias" in out
    config = json.loads((tmp_path / "ddf" / "config.json").read_text())
    assert config["filter_norm"] == "ddf" and config["num_classes"] == 0
    assert "ddf_mul_resnet50.pth.tar" in config["pretrained_cfg"]["source"]
    out = dcsd(
        "train", "--config", TINY, "--device", "cpu", "--out", tmp_path / "run",
        "--init-ddf", tmp_path / "ddf", cwd=tmp_path, home=tmp_path,
    ).stdout  # fmt: skip
    assert "DDF start" in out and "epoch 1:" in out
    trained = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert trained["filter_norm"] == "ddf" and trained["num_domains"] == 3


def test_example_scripts_are_the_commands(tmp_path):
    for script, command in (
        ("train_joint.py", "train"),
        ("extract_features.py", "extract"),
        ("push_to_hub.py", "push"),
        ("convert_ddf.py", "convert-ddf"),
    ):
        assert f"usage: dcsd {command} " in example(script, "--help", cwd=tmp_path, home=tmp_path)
