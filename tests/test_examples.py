"""The example scripts run end to end on tiny synthetic data (a smoke test of their wiring)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from dcsd.data import make_synthetic_domains

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args, cwd, home):
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin"}
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_train_resume_and_extract(tmp_path):
    train_args = [
        "--synthetic-scale", "0.25", "--image-size", "32", "16", "--batch", "4", "2",
        "--workers", "0", "--device", "cpu", "--no-progress", "--out", tmp_path / "run",
        "--generator-warmup-epochs", "2",
    ]  # fmt: skip
    out = run("train_joint.py", *train_args, "--epochs", "1", cwd=tmp_path, home=tmp_path)
    assert "epoch 1:" in out and "| mean |" in out
    # The resumed run tests on two of the domains, with the test-time options.
    test_args = ["--test-datasets", "synth1,synth2", "--rerank", "--aqe", "--roc"]
    out = run(
        "train_joint.py", *train_args, "--epochs", "2", "--resume", *test_args,
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert "resumed from epoch 1" in out and "epoch 2:" in out and "epoch 1:" not in out
    assert "| synth1 |" in out and "| synth0 |" not in out and "TPR@FPR=1e-02" in out
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    train_config = json.loads((tmp_path / "run" / "model" / "train_config.json").read_text())
    assert train_config["generator_warmup_epochs"] == 2.0
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["architecture"] == "resnet50_dcsd" and config["num_domains"] == 3
    # The weights' card: what they were trained on and at, and the test metrics measured.
    card = config["pretrained_cfg"]
    assert card["input_size"] == [3, 32, 16] and card["datasets"] == ["synth0", "synth1", "synth2"]
    assert card["num_cameras"] == 12 and card["hub_id"] == "" and card["name"] == "trained"
    assert set(card["metrics"]) == {"synth1", "synth2"} and card["paper_metrics"] == {}
    assert "after epoch 2" in card["metrics_source"]

    out = run(  # no --image-size: the model's config.json says 32x16
        "extract_features.py",
        "--model", tmp_path / "run" / "model", "--synthetic-domain", "synth1",
        "--out", tmp_path / "gallery.safetensors",
        "--query-index", "0", "--top-k", "3", "--ranked-list", tmp_path / "ranked.png",
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert "ranked list written" in out and (tmp_path / "ranked.png").stat().st_size > 0
    out = run(
        "extract_features.py",
        "--model", tmp_path / "run" / "model", "--synthetic-domain", "synth1",
        "--image-size", "32", "16", "--out", tmp_path / "gallery.safetensors", "--rerank",
        "--ranked-lists", tmp_path / "worst.png", "--num-queries", "3", "--top-k", "4",
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert "(re-ranked)" in out and "3 ranked lists, lowest AP first" in out
    assert (tmp_path / "worst.png").stat().st_size > 0

    out = run(
        "plot_embeddings.py", "--model", f"a={tmp_path / 'run' / 'model'}",
        "--model", f"b={tmp_path / 'run' / 'model'}", "--max-images", "15",
        "--image-size", "32", "16", "--out", tmp_path / "tsne.png", cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert out.count("own-domain share") == 2 and (tmp_path / "tsne.png").stat().st_size > 0
    out = run(
        "plot_training_log.py", tmp_path / "run" / "log.jsonl", "--out", tmp_path / "c.png",
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert "2 epochs, 2 evaluations" in out and (tmp_path / "c.png").stat().st_size > 0
    with safe_open(str(tmp_path / "gallery.safetensors"), "pt") as features:
        paths = json.loads(features.metadata()["paths"])
        assert features.get_tensor("features").shape == (len(paths), 2048)


@pytest.mark.slow
def test_combineall_trains_on_everything_and_tests_on_an_unseen_domain(tmp_path):
    out = run(
        "train_joint.py", "--datasets", "synth0,synth1", "--combineall",
        "--test-datasets", "synth2", "--synthetic-scale", "0.25", "--image-size", "32", "16",
        "--batch", "4", "2", "--epochs", "1", "--workers", "0", "--device", "cpu",
        "--no-progress", "--out", tmp_path / "run", cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    # Each combined dataset trains on its train + query + gallery identities.
    synth0, synth1, _ = make_synthetic_domains(tmp_path / "synthetic", scale=0.25)
    assert synth0.combine_all().num_train_pids > synth0.num_train_pids
    identities = synth0.combine_all().num_train_pids + synth1.combine_all().num_train_pids
    assert f"2 domains, {identities} identities" in out, out
    assert "| synth2 |" in out and "| synth0 |" not in out and "| synth1 |" not in out


def test_combineall_refuses_to_test_on_its_training_images(tmp_path):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_joint.py"), "--combineall",
         "--datasets", "synth0,synth1", "--test-datasets", "synth1", "--device", "cpu"],
        cwd=tmp_path, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--combineall trains on the query and gallery of ['synth1']" in result.stderr


def test_train_joint_knows_registered_datasets(tmp_path):
    (tmp_path / "my_datasets.py").write_text(
        "from dcsd.data import register_dataset\n\n"
        "def campus(root):\n"
        "    raise RuntimeError(f'campus factory called with {root}')\n\n"
        "register_dataset('campus', campus)\n"
    )
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "train_joint.py"), "--data-root", str(tmp_path)]
        + ["--register", "my_datasets", "--datasets", "campus,nobody"],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    # Names are checked before any dataset is read; the registered one is known.
    assert "--datasets: unknown ['nobody']; known: ['market1501'" in result.stderr
    assert "'msmt17', 'cuhksysu', 'campus']" in result.stderr
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
    out = run("convert_ddf.py", checkpoint, tmp_path / "ddf", cwd=tmp_path, home=tmp_path)
    assert "fresh" in out and "fc.weight, fc.bias" in out
    config = json.loads((tmp_path / "ddf" / "config.json").read_text())
    assert config["filter_norm"] == "ddf" and config["num_classes"] == 0
    assert "ddf_mul_resnet50.pth.tar" in config["pretrained_cfg"]["source"]
    train_args = [
        "--synthetic-scale", "0.25", "--image-size", "32", "16", "--batch", "4", "2",
        "--workers", "0", "--device", "cpu", "--no-progress", "--out", tmp_path / "run",
        "--epochs", "1", "--init-ddf", tmp_path / "ddf",
    ]  # fmt: skip
    out = run("train_joint.py", *train_args, cwd=tmp_path, home=tmp_path)
    assert "DDF start" in out and "epoch 1:" in out
    trained = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert trained["filter_norm"] == "ddf" and trained["num_domains"] == 3
