"""The example scripts run end to end on tiny synthetic data (a smoke test of their wiring)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script, *args, cwd, home):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        cwd=cwd,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "1"},
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
    ]  # fmt: skip
    out = run("train_joint.py", *train_args, "--epochs", "1", cwd=tmp_path, home=tmp_path)
    assert "epoch 1:" in out and "| mean |" in out
    out = run(
        "train_joint.py", *train_args, "--epochs", "2", "--resume", cwd=tmp_path, home=tmp_path
    )
    assert "resumed from epoch 1" in out and "epoch 2:" in out and "epoch 1:" not in out
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]
    config = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert config["architecture"] == "resnet50_dcsd" and config["num_domains"] == 3

    out = run(
        "extract_features.py",
        "--model", tmp_path / "run" / "model", "--synthetic-domain", "synth1",
        "--image-size", "32", "16", "--out", tmp_path / "gallery.safetensors",
        "--query-index", "0", "--top-k", "3", "--ranked-list", tmp_path / "ranked.png",
        cwd=tmp_path, home=tmp_path,
    )  # fmt: skip
    assert "ranked list written" in out and (tmp_path / "ranked.png").stat().st_size > 0
    with safe_open(str(tmp_path / "gallery.safetensors"), "pt") as features:
        paths = json.loads(features.metadata()["paths"])
        assert features.get_tensor("features").shape == (len(paths), 2048)


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
