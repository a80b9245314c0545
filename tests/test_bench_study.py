"""Smoke test of the DCSD study (``bench/study_dcsd_gap.py --quick``) and of the run cache it
shares with the domain-conflict benchmark (``bench/reid_runs.py``)."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import make_tables  # noqa: E402
import study_dcsd_gap  # noqa: E402
from reid_runs import RunSpec  # noqa: E402


def test_run_key_keeps_earlier_caches_and_tells_batch_composition_apart():
    spec = RunSpec(model="resnet50_dcsd", domains=("synth0", "synth1"), seed=1, split="val")
    # Fields added later (balance_domains, loss, init) stay out of the key while unset, so runs
    # cached before them keep theirs: this is the key the RunSpec of c5afdf6 (before init)
    # gave this spec.
    assert spec.key() == "ef29fd69403f14c5"
    assert dataclasses.replace(spec, init="proxy_ddf@596742e29444").key() != spec.key()
    balanced = dataclasses.replace(spec, balance_domains=True)
    assert balanced.key() != spec.key()
    no_camera_loss = dataclasses.replace(spec, loss={"camera_weight": 0.0})
    assert no_camera_loss.key() not in (spec.key(), balanced.key())
    assert dataclasses.replace(spec, seed=2).key() != spec.key()


@pytest.mark.slow
def test_quick_study_prints_paired_rows_and_resumes(tmp_path):
    rows = "static_dw,dcsd_no_fn_bal,dcsd_gen_warmup5"
    command = [
        sys.executable, str(BENCH / "study_dcsd_gap.py"), "--quick", "--device", "cpu",
        "--rows", rows, "--seeds", "0", "--root", str(tmp_path / "runs"),
    ]  # fmt: skip
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"}

    def study(*extra):
        result = subprocess.run(
            [*command, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    results = tmp_path / "RESULTS.md"
    committed = study_dcsd_gap.LEDGER.read_bytes() if study_dcsd_gap.LEDGER.exists() else None
    out = study("--results", str(results))
    # --quick records nothing in the committed ledger
    ledger_now = study_dcsd_gap.LEDGER.read_bytes() if study_dcsd_gap.LEDGER.exists() else None
    assert ledger_now == committed
    assert "Δ vs static_dw, paired by seed" in out and "train id / triplet loss" in out
    for row in rows.split(","):
        assert f"| {row} |" in out
    assert "domain-balanced batches" in out and "warm up over 5 epochs" in out
    assert "validation ablations" in results.read_text()
    cached = sorted((tmp_path / "runs").glob("*/result.json"))
    assert len(cached) == 3
    # The balanced row ran with balanced batches: its spec says so, and only its spec.
    specs = [json.loads(p.read_text())["spec"] for p in cached]
    assert sorted(s["balance_domains"] for s in specs) == [False, False, True]
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    table = tmp_path / "bench" / "study_dcsd_gap.csv"
    table.parent.mkdir()
    again = study("--csv", str(table), "--study", "quick")
    assert again.splitlines()[2:] == out.splitlines()[2:]  # every row again, from the cache
    # The CSV rows give back the printed table (bench/make_tables.py renders the docs from them).
    assert make_tables.render("bench/study_dcsd_gap.csv", {"study": "quick"}, tmp_path) == again
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # nothing trained again
    # The ledger: the cached runs are recorded as they are read; with the run folders gone (a
    # new machine) every row is read from it and nothing trains.
    ledger = tmp_path / "runs.jsonl"
    study("--ledger", str(ledger))
    assert len(ledger.read_text().splitlines()) == 3
    shutil.rmtree(tmp_path / "runs")
    assert study("--ledger", str(ledger)).splitlines()[2:] == out.splitlines()[2:]
    assert not list((tmp_path / "runs").glob("*/result.json"))
    with pytest.raises(AssertionError):
        study("--rows", "no_such_row")
