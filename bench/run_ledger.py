"""A ledger of finished runs: one JSON line per run (its folder name and its ``result.json``), in
a file kept with the code.

A run's folder (``reid_runs.run``) holds its checkpoints and is lost with the machine; the
ledger keeps the result. The proxy starts pretrain to the same digest on a new machine, so a run
whose folder name is in the ledger is read from it and not trained again, and the per-seed
numbers behind every table stay in the repository.

Each line is written whole by one ``write`` under an exclusive ``flock`` (runs finish side by
side), then flushed to disk. A last line without its newline (a machine stopped mid-write) is
ignored, and dropped by the next append; any other line that does not parse is an error that
names the file and the line.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any


class LedgerError(ValueError):
    """A ledger line that is not a run record (names the file and the line)."""


def read_ledger(path: Path) -> dict[str, dict[str, Any]]:
    """``{run folder name: result}`` of every run recorded in ``path`` (empty if there is no
    file yet); a run recorded twice keeps its first record.

    Raises:
        LedgerError: a line (other than a torn last one) is not a JSON object with ``run`` and
            ``result``.
    """
    if not path.is_file():
        return {}
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the part after the last newline is empty or a torn write
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            name, result = record["run"], record["result"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise LedgerError(
                f"{path}:{number}: not a run record ({error}); every line is "
                '{"run": <folder name>, "result": <its result.json>}'
            ) from error
        records.setdefault(name, result)
    return records


def record_run(path: Path, name: str, result: dict[str, Any]) -> bool:
    """Append the run ``name``'s ``result`` to the ledger ``path`` unless it is there already.

    Returns:
        Whether a line was written.
    """
    line = json.dumps({"run": name, "result": result}, sort_keys=True, default=list) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            present = handle.read()
            if name in _names(present):
                return False
            if not present.endswith("\n"):
                # a torn last line (a write stopped midway) holds no whole record: drop it
                handle.truncate(present.rfind("\n") + 1)
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
            return True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _names(text: str) -> set[str]:
    names = set()
    for line in text.split("\n")[:-1]:
        try:
            names.add(json.loads(line)["run"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # read_ledger names a bad line; appending does not need to
    return names
