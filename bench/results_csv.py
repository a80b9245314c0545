"""Results as CSV beside the bench scripts: one row per measurement, appended run after run.

``bench/make_tables.py`` turns these files into the documentation's tables.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path


def append_rows(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Append ``rows`` to the CSV file ``path``, with a header line if the file is new.

    Raises:
        ValueError: when the rows do not all have the same columns, or when ``path`` exists with
            other columns (named, with the file).
    """
    if not rows:
        return
    columns = list(rows[0])
    for row in rows:
        if list(row) != columns:
            raise ValueError(f"{path}: rows with different columns: {list(row)} and {columns}")
    if path.exists() and path.stat().st_size:
        with path.open(newline="", encoding="utf-8") as file:
            header = next(csv.reader(file))
        if header != columns:
            raise ValueError(f"{path} has the columns {header}, these rows have {columns}")
        write_header = False
    else:
        write_header = True
    with path.open("a", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, columns)
        if write_header:
            writer.writeheader()
        writer.writerows(rows)
