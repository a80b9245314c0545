"""A ledger of finished runs: one JSON line per run (its folder name and its ``result.json``), in
a file kept with the code.

A run's folder (``reid_runs.run``) holds its checkpoints and is lost with the machine; the
ledger keeps the result: a run whose folder name is in the ledger is read from it and not
trained again, and the per-seed numbers behind every table stay in the repository. A run from a
proxy start is named by the start's digest, so it is read only where the same start file is:
a new machine of the same kind pretrains the starts to the same digests, one with another CPU
(an Intel Xeon against an AMD EPYC, both AVX-512) can pretrain them to other weights.

Each line is written whole by one ``write`` under an exclusive ``flock`` (runs finish side by
side), then flushed to disk. A last line without its newline is kept if it is a whole record (a
hand edit that dropped the final newline) and otherwise ignored, and dropped by the next append
(a write stopped midway); any other line that is not a record is an error that names the file
and the line.
"""

from __future__ import annotations

import argparse
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
        LedgerError: a line (other than a torn last one) is not a JSON object with a string
            ``run`` and an object ``result``.
    """
    if not path.is_file():
        return {}
    lines = path.read_bytes().split(b"\n")
    records: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            name, result = _parse(line)
        except LedgerError as error:
            if number == len(lines):
                continue  # a torn last line: a write stopped midway
            raise LedgerError(
                f"{path}:{number}: not a run record ({error}); every line is "
                '{"run": <folder name>, "result": <its result.json>}'
            ) from None
        records.setdefault(name, result)
    return records


def record_run(path: Path, name: str, result: dict[str, Any]) -> bool:
    """Append the run ``name``'s ``result`` to the ledger ``path`` unless it is there already.

    Returns:
        Whether a line was written.
    """
    line = json.dumps({"run": name, "result": result}, sort_keys=True, default=list)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            present = handle.read()
            lines = present.split(b"\n")
            names = [_name_or_none(line) for line in lines]
            if name in names:
                return False
            if names[-1] is not None:
                line = "\n" + line  # a whole last record without its newline: keep it
            else:
                handle.truncate(len(present) - len(lines[-1]))  # drop a torn last line
            handle.write((line + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())
            return True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _parse(line: bytes) -> tuple[str, dict[str, Any]]:
    """The ``(run, result)`` of one ledger line.

    Raises:
        LedgerError: it is not a JSON object with a string ``run`` and an object ``result``.
    """
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LedgerError(str(error)) from None
    if not isinstance(record, dict):
        raise LedgerError(f"a JSON {type(record).__name__}, not an object")
    name, result = record.get("run"), record.get("result")
    if not isinstance(name, str) or not isinstance(result, dict):
        raise LedgerError('"run" must be a string and "result" an object')
    return name, result


def _name_or_none(line: bytes) -> str | None:
    try:
        return _parse(line)[0]
    except LedgerError:
        return None  # read_ledger names a bad line; appending does not need to


def add_ledger_option(parser: argparse.ArgumentParser, default: Path) -> None:
    """A script's ``--ledger`` option; :func:`chosen_ledger` resolves it to ``default``."""
    parser.add_argument(
        "--ledger",
        type=Path,
        help=f"record each finished run here and read the runs recorded (default: {default.name} "
        "beside this script, committed, so a new machine trains only what it lacks; none with "
        "--quick); a run recorded on this device type is not trained again, even under a new "
        "--root: give another --ledger to train it again",
    )


def chosen_ledger(args: argparse.Namespace, default: Path) -> Path | None:
    """The ledger ``args`` asks for: ``--ledger``, else ``default``, else none with ``--quick``
    (a smoke run's results belong in no committed ledger)."""
    return args.ledger if args.ledger is not None or args.quick else default
