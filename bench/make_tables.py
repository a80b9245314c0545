"""The documentation's result tables, generated from the CSV files beside the bench scripts.

A page holds a generated table between two markers::

    <!-- table: bench/study_dcsd_gap.csv study=10ep -->
    | row | what | ...
    <!-- /table -->

The first marker names the CSV file and, optionally, ``column=value`` filters (a row is kept
when every named column equals the value); the file's entry in :data:`TABLES` says how its
columns become the table's. ``python bench/make_tables.py`` rewrites the tables of every page
in ``docs/`` from the CSVs; ``--check`` only reports pages whose tables differ (exit status 1),
which ``tests/test_bench_tables.py`` asserts never happens.

    python bench/make_tables.py            # regenerate the tables in docs/*.md
    python bench/make_tables.py --check    # fail if a page's table is not what the CSV gives
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import re
import string
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(
    r"^<!-- table: (?P<csv>\S+\.csv)(?P<filters>(?: \w+=\S+)*) -->\n(?P<body>.*?)^<!-- /table -->$",
    re.MULTILINE | re.DOTALL,
)


@dataclasses.dataclass(frozen=True)
class Column:
    """One table column: its header, a ``str.format`` template over the CSV row, right-aligned
    or not. A field with a format spec is formatted as a number (``{mAP:.1f}``), one without is
    copied as the CSV has it."""

    header: str
    template: str
    right: bool = True


def _domains(prefix: str, spec: str = ".1f", sep: str = " / ") -> str:
    return sep.join(f"{{{prefix}_{d}:{spec}}}" for d in ("synth0", "synth1", "synth2"))


_STUDY = [
    Column("row", "{row}", right=False),
    Column("what", "{what}", right=False),
    Column("seeds", "{seeds:.0f}", right=False),
    Column("val mAP per domain", _domains("map"), right=False),
    Column("mean mAP ± seed std", "{mean_map:.1f} ± {mean_map_std:.1f}"),
    Column("Δ vs {baseline}, paired by seed", "{delta:+.1f} ± {delta_std:.1f}"),
    Column("mean rank-1", "{mean_rank1:.1f}"),
    Column("train id / triplet loss", "{train_id_loss:.2f} / {train_triplet_loss:.2f}"),
    Column("s/run", "{s_per_run:.0f}"),
]

_CONFLICT = [
    Column("row", "{row}", right=False),
    Column("table", "{table}", right=False),
    *(Column(d, f"{{map_{d}:.1f}} ± {{map_{d}_std:.1f}}") for d in ("synth0", "synth1", "synth2")),
    Column("mean", "{map_mean:.1f} ± {map_mean_std:.1f}"),
]

_KERNEL_TIMES = [
    Column("layer", "{layer}", right=False),
    Column("x", "{x:.0f}", right=False),
    Column("C", "{C:.0f}", right=False),
    Column("H x W", "{HxW}", right=False),
    Column("stride", "{stride:.0f}", right=False),
    Column("impl", "{impl}", right=False),
    Column("fwd ms", "{fwd_ms:.3f}", right=False),
    Column("fwd GB/s", "{fwd_gbps:.2f}", right=False),
    Column("fwd % copy", "{fwd_pct_copy:.1f}%", right=False),
    Column("fwd+bwd ms", "{fwdbwd_ms:.3f}", right=False),
    Column("fwd+bwd GB/s", "{fwdbwd_gbps:.2f}", right=False),
    Column("fwd+bwd % copy", "{fwdbwd_pct_copy:.1f}%", right=False),
]


@dataclasses.dataclass(frozen=True)
class Table:
    """How one CSV file's rows become a Markdown table. ``optional`` columns are left out when
    every kept row has them empty."""

    columns: tuple[Column, ...]
    optional: tuple[str, ...] = ()


TABLES: dict[str, Table] = {
    "bench/study_dcsd_gap.csv": Table(tuple(_STUDY), optional=("train id / triplet loss",)),
    "bench/bench_domain_conflict.csv": Table(tuple(_CONFLICT)),
    "bench/bench_kernels.csv": Table(tuple(_KERNEL_TIMES), optional=("C", "H x W", "stride")),
    "bench/bench_compile.csv": Table(
        (
            Column("part", "{part}", right=False),
            Column("config", "{config}", right=False),
            Column("MB", "{mb:.0f}"),
            Column("x floor", "{x_floor}"),
            Column("issue us", "{issue_us:.1f}"),
            Column("DRAM us", "{dram_us:.1f}"),
            Column("est. us", "{est_us:.1f}"),
        )
    ),
    "bench/bench_model.csv": Table(
        (
            Column("model", "{model}", right=False),
            Column("mode", "{mode}", right=False),
            Column("images/s", "{images_per_s:.1f}"),
            Column("peak memory (MiB)", "{peak_mib:.0f}"),
            Column("images/s vs static", "{vs_static:.2f}x"),
        )
    ),
    "bench/bench_evaluate.csv": Table(
        (
            Column("method", "{method}", right=False),
            Column("queries run", "{queries_run:,.0f}"),
            Column("wall s", "{wall_s:.1f}"),
            Column("CPU s", "{cpu_s:.1f}"),
            Column("wall s, all queries", "{wall_s_all}"),
            Column("CPU s, all queries", "{cpu_s_all}"),
            Column("peak GB", "{peak_gb}"),
            Column("mAP", "{map_pct:.3f}%"),
            Column("rank-1", "{rank1_pct:.2f}%"),
        )
    ),
}


class _CellFormatter(string.Formatter):
    """``str.format`` over a CSV row's text: a field with a format spec is read as a number."""

    def format_field(self, value: object, format_spec: str) -> str:
        if format_spec and isinstance(value, str):
            value = float(value)
        return super().format_field(value, format_spec)


_FORMATTER = _CellFormatter()


def read_rows(csv_path: Path, filters: dict[str, str]) -> list[dict[str, str]]:
    """The rows of ``csv_path`` whose columns equal ``filters``; an unknown column is an error."""
    with csv_path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        unknown = set(filters) - set(reader.fieldnames or ())
        if unknown:
            raise ValueError(f"{csv_path}: no column {sorted(unknown)} to filter on")
        rows = [row for row in reader if all(row[k] == v for k, v in filters.items())]
    if not rows:
        raise ValueError(f"{csv_path}: no row has {filters}")
    return rows


def render(csv_name: str, filters: dict[str, str], root: Path = ROOT) -> str:
    """The Markdown table of ``csv_name``'s rows that match ``filters``."""
    if csv_name not in TABLES:
        raise ValueError(f"no table layout for {csv_name}; known: {sorted(TABLES)}")
    table = TABLES[csv_name]
    rows = read_rows(root / csv_name, filters)
    columns = []
    for column in table.columns:
        fields = re.findall(r"{(\w+)", column.template)
        if column.header in table.optional and all(not row[f] for row in rows for f in fields):
            continue
        columns.append(column)
    header_fields = rows[0]
    lines = [
        "| " + " | ".join(c.header.format(**header_fields) for c in columns) + " |",
        "|" + "|".join("---:" if c.right else "---" for c in columns) + "|",
    ]
    for row in rows:
        cells = (_FORMATTER.format(c.template, **row) for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update(text: str, root: Path = ROOT) -> str:
    """``text`` with every marked table regenerated from its CSV."""

    def replace(match: re.Match[str]) -> str:
        filters = dict(item.split("=", 1) for item in match.group("filters").split())
        head = match.group(0)[: match.start("body") - match.start(0)]
        return head + render(match.group("csv"), filters, root) + "<!-- /table -->"

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables")
    args = parser.parse_args(argv)
    stale = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        new = update(text)
        if new != text:
            stale.append(page.relative_to(ROOT).as_posix())
            if not args.check:
                page.write_text(new, encoding="utf-8")
    verb = "differ from their CSVs" if args.check else "rewritten"
    print(f"{len(stale)} pages {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
