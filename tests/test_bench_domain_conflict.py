"""Smoke test of the domain-conflict benchmark (tiny data, 1 seed, 1 epoch): every row trains,
the tables, the goal check and the figure are written, and a second call trains nothing."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_domain_conflict.py"


def run(tmp_path, *args):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu", "--root", tmp_path / "runs",
         *map(str, args)],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_quick_benchmark_writes_tables_and_figure_and_resumes(tmp_path):
    results, figure = tmp_path / "RESULTS.md", tmp_path / "conflict.png"
    out = run(tmp_path, "--results", results, "--figure", figure)
    for row in (
        "static alone",
        "static joint",
        "DCSD alone",
        "DCSD joint (S+D+C)",
        "| S |",
        "| S+D |",
        "| S+C |",
        "S+D+C, no stop gradient",
    ):
        assert row in out
    assert "| synth0 | synth1 | synth2 | mean |" in out
    assert "Conflict present:" in out and "DCSD joint" in out and "<= S+D" in out
    assert figure.stat().st_size > 5000
    assert results.read_text().count("## Domain conflict in miniature") == 1
    # 6 joint rows + 2 per-domain rows of 3 domains, one seed: 12 cached runs.
    cached = list((tmp_path / "runs").glob("*/result.json"))
    assert len(cached) == 12
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    again = run(tmp_path, "--static-only")
    assert "static joint" in again and "DCSD joint" not in again.split("Conflict present")[0]
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # nothing trained again
