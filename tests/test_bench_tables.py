"""The docs' result tables are what bench/make_tables.py generates from the CSVs beside the
bench scripts, so a table cannot drift from its data."""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_domain_conflict as bench  # noqa: E402
import make_tables  # noqa: E402
import results_csv  # noqa: E402

PAGES = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_tables_equal_what_the_csvs_generate(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert make_tables.update(text) == text, (
        f"{page.relative_to(ROOT)}: a table differs from its CSV; run python bench/make_tables.py"
    )


def test_every_csv_is_shown_and_every_marker_names_a_known_csv() -> None:
    shown = {
        match.group("csv")
        for page in PAGES
        for match in make_tables.MARKER.finditer(page.read_text(encoding="utf-8"))
    }
    assert shown == set(make_tables.TABLES)
    assert shown == {p.relative_to(ROOT).as_posix() for p in (ROOT / "bench").glob("*.csv")}


def _markdown_rows(table: str) -> list[list[str]]:
    lines = table.strip().splitlines()
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def test_generated_conflict_table_reads_back_as_the_csv() -> None:
    """Parse the rendered table back (independently of its templates) and compare with the
    CSV read by the csv module."""
    with (ROOT / "bench" / "bench_domain_conflict.csv").open(newline="") as file:
        expected = [row for row in csv.DictReader(file) if row["test_ids"] == "64"]
    rendered = make_tables.render("bench/bench_domain_conflict.csv", {"test_ids": "64"})
    rows = _markdown_rows(rendered)
    assert [r[0] for r in rows] == [row["row"] for row in expected]
    for cells, row in zip(rows, expected, strict=True):
        for cell, domain in zip(cells[2:], ("synth0", "synth1", "synth2", "mean"), strict=True):
            mean, std = (float(x) for x in re.split(r" ± ", cell))
            assert mean == pytest.approx(float(row[f"map_{domain}"]))
            assert std == pytest.approx(float(row[f"map_{domain}_std"]))


def test_study_table_leaves_out_an_empty_optional_column() -> None:
    ten = make_tables.render("bench/study_dcsd_gap.csv", {"study": "10ep"})
    sixty = make_tables.render("bench/study_dcsd_gap.csv", {"study": "60ep"})
    assert "train id / triplet loss" not in ten
    assert "train id / triplet loss" in sixty
    assert "Δ vs dcsd, paired by seed" in ten
    assert "Δ vs static_dw_60, paired by seed" in sixty


def test_bad_markers_are_named(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "bench_model.csv").write_text(
        "device,threads,batch,model,mode,images_per_s,peak_mib,vs_static\n"
        "cpu,2,8,m,infer,1.5,10,1.0\n"
    )
    page = "<!-- table: bench/bench_model.csv mode=train -->\n<!-- /table -->\n"
    with pytest.raises(ValueError, match=r"bench_model.csv: no row has \{'mode': 'train'\}"):
        make_tables.update(page, tmp_path)
    page = "<!-- table: bench/bench_model.csv speed=1 -->\n<!-- /table -->\n"
    with pytest.raises(ValueError, match=r"bench_model.csv: no column \['speed'\]"):
        make_tables.update(page, tmp_path)
    page = "<!-- table: bench/other.csv -->\n<!-- /table -->\n"
    with pytest.raises(ValueError, match="no table layout for bench/other.csv"):
        make_tables.update(page, tmp_path)
    page = "<!-- table: bench/bench_model.csv -->\nold\n<!-- /table -->\n"
    assert make_tables.update(page, tmp_path) == (
        "<!-- table: bench/bench_model.csv -->\n"
        "| model | mode | images/s | peak memory (MiB) | images/s vs static |\n"
        "|---|---|---:|---:|---:|\n"
        "| m | infer | 1.5 | 10 | 1.00x |\n"
        "<!-- /table -->\n"
    )


def test_append_rows_writes_the_header_once_and_refuses_other_columns(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    results_csv.append_rows(path, [{"a": 1, "b": "x, y"}])
    results_csv.append_rows(path, [{"a": 2, "b": "z"}])
    with path.open(newline="") as file:
        assert list(csv.DictReader(file)) == [{"a": "1", "b": "x, y"}, {"a": "2", "b": "z"}]
    with pytest.raises(ValueError, match=r"results.csv has the columns \['a', 'b'\], these rows"):
        results_csv.append_rows(path, [{"a": 3}])
    with pytest.raises(ValueError, match="rows with different columns"):
        results_csv.append_rows(tmp_path / "new.csv", [{"a": 1}, {"b": 2}])


def test_conflict_benchmark_csv_rows_render_back_to_its_printed_table(tmp_path: Path) -> None:
    """bench_domain_conflict.py --csv: its rows give back the mAP table the script prints."""
    domains = ["synth0", "synth1", "synth2"]
    results = {
        row.name: [
            {
                d: {"mAP": 10.0 * i + 3.1 * seed + 0.37 * k, "rank1": 1.0}
                for k, d in enumerate(domains)
            }
            for seed in range(3)
        ]
        for i, row in enumerate(bench.ROWS)
    }
    args = argparse.Namespace(
        preset="conflict",
        split="test",
        quick=False,
        train_ids=32,
        test_ids=64,
        val_ids=8,
        epochs=10,
        seeds=[0, 1, 2],
        proxy=bench.PoolConfig(),
    )
    csv_path = tmp_path / "bench" / "bench_domain_conflict.csv"
    csv_path.parent.mkdir()
    results_csv.append_rows(csv_path, bench.csv_rows(bench.ROWS, results, domains, args))
    rendered = make_tables.render("bench/bench_domain_conflict.csv", {"test_ids": "64"}, tmp_path)
    assert rendered == bench.table(bench.ROWS, results, domains, "mAP") + "\n"


def test_conflict_csv_rows_name_their_proxy_pool_and_tables_filter_on_it(tmp_path: Path) -> None:
    """Rows from two proxy pools share the CSV; a table marker's ``proxy_pool=`` keeps one."""
    domains = ["synth0", "synth1", "synth2"]
    row = bench.ROWS[0]
    csv_path = tmp_path / "bench" / "bench_domain_conflict.csv"
    csv_path.parent.mkdir()
    for ids, value in ((50, 10.0), (200, 20.0)):
        results = {row.name: [{d: {"mAP": value, "rank1": 1.0} for d in domains}] * 3}
        args = argparse.Namespace(
            preset="conflict_mild",
            split="val",
            quick=False,
            train_ids=64,
            test_ids=64,
            val_ids=64,
            epochs=30,
            seeds=[0, 1, 2],
            proxy=bench.PoolConfig(domains=4, ids_per_domain=ids),
        )
        results_csv.append_rows(csv_path, bench.csv_rows([row], results, domains, args))
    with csv_path.open(newline="") as file:
        assert [r["proxy_pool"] for r in csv.DictReader(file)] == ["4x50", "4x200"]
    rendered = make_tables.render(
        "bench/bench_domain_conflict.csv", {"proxy_pool": "4x200"}, tmp_path
    )
    [cells] = _markdown_rows(rendered)
    assert cells[0] == row.name
    assert cells[2:] == ["20.0 ± 0.0"] * 4
