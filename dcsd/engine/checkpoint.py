"""Training checkpoints written atomically and checksummed, so an interrupted run loses nothing.

A checkpoint is a folder ``epoch_XXXX/``: a model folder as :func:`dcsd.models.save_model` writes
it (``config.json`` + ``model.safetensors``, so ``dcsd.load_model`` opens it), plus
``training_state.pt`` (optimizer, scheduler, grad scaler and epoch: tensors and plain containers
only, read back with ``torch.load(weights_only=True)``, so no arbitrary pickle) and
``manifest.json`` (size and SHA-256 of every other file, see :mod:`dcsd.manifest`). The folder is
written under a temporary name, every file flushed to disk, the manifest written last, and the
folder renamed into place; ``latest`` is then replaced atomically with the new folder's name. A
crash at any moment leaves the previous checkpoint whole, and a flipped byte is caught on load.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..manifest import fsync_dir, fsync_file, verify_manifest, write_manifest
from ..models.pretrained import (
    LATEST_NAME,
    TRAINING_STATE_NAME,
    WEIGHTS_NAME,
    follow_latest,
    read_latest,
    save_model,
)

# The file names, defined once with the model folder format (dcsd.models.pretrained).
MODEL_FILE = WEIGHTS_NAME
STATE_FILE = TRAINING_STATE_NAME
LATEST_FILE = LATEST_NAME
STAGING_PREFIX = ".staging-"


@dataclass
class Checkpoint:
    """A training checkpoint read back from disk (:func:`load_training_state`)."""

    path: Path
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The number of epochs completed when it was written."""
        return int(self.training_state["epoch"])


def _tensors(value: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) of every tensor inside nested dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{name}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{name}[{index}]")


def _check_finite(model_state: dict[str, torch.Tensor], training_state: dict[str, Any]) -> None:
    """Refuse NaN / inf weights or optimizer state: such a checkpoint would replace good ones."""
    for name, tensor in (*_tensors(model_state, "weights"), *_tensors(training_state, "state")):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"refusing to write a checkpoint holding non-finite values ({name} has NaN or "
                "inf): training diverged; the previous checkpoints are kept"
            )


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _staging_prefix() -> str:
    """This process's staging folder names: ``.staging-<host>-<pid>-``, so a cleanup can tell
    whether a folder's writer still runs."""
    return f"{STAGING_PREFIX}{socket.gethostname()}-{os.getpid()}-"


def _writer_gone(folder: Path) -> bool:
    """Whether the process that made staging ``folder`` has ended (or is this one, which is not
    writing while it cleans up). A writer on another host cannot be asked: its folder is kept."""
    try:
        host, pid, _ = folder.name[len(STAGING_PREFIX) :].rsplit("-", 2)
        pid = int(pid)
    except ValueError:
        return True  # not named by a writer of this format: nobody is writing it
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_staging(directory: str | Path) -> list[Path]:
    """Remove the temporary folders of checkpoint writes that a crash interrupted: those whose
    writer process has ended. A folder a live process is writing is left alone.

    Returns:
        The folders removed.
    """
    stale = sorted(p for p in Path(directory).glob(f"{STAGING_PREFIX}*") if _writer_gone(p))
    for folder in stale:
        if folder.is_symlink():
            folder.unlink()
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return stale


def save_training_state(
    directory: str | Path,
    model: torch.nn.Module,
    training_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write the training checkpoint ``directory/epoch_XXXX`` atomically and point
    ``directory/latest`` at it: the model folder (:func:`dcsd.models.save_model`), the
    training state and the manifest.

    Staging folders left by interrupted writes are removed first.

    Args:
        directory: the run's checkpoint folder (created if missing).
        model: the (unwrapped) model whose weights are saved.
        training_state: must hold ``"epoch"`` (epochs completed); everything else (optimizer,
            scheduler, scaler) is saved as given and must be tensors or plain containers.
        keep: how many most recent checkpoints to keep; older ones are removed, never the one
            ``latest`` names.

    Returns:
        The folder of the new checkpoint.

    Raises:
        ValueError: ``training_state`` has no ``"epoch"``, or the weights or the state hold NaN
            or inf (nothing is written then).
    """
    if "epoch" not in training_state:
        raise ValueError("training_state must hold 'epoch', the number of epochs completed")
    _check_finite(model.state_dict(), training_state)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(directory)
    final = directory / f"epoch_{int(training_state['epoch']):04d}"
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=directory))
    try:
        save_model(model, staging, manifest=False)
        torch.save(training_state, staging / STATE_FILE)
        write_manifest(staging)
    except (OSError, RuntimeError, SafetensorError) as error:
        # torch.save reports a full disk as "RuntimeError [enforce fail at inline_container.cc]".
        shutil.rmtree(staging, ignore_errors=True)
        free = shutil.disk_usage(directory).free / 2**20
        raise OSError(
            f"writing checkpoint {final.name} in {directory} failed ({free:.0f} MiB free on its "
            f"disk; a full disk?): {type(error).__name__}: {error}. The partial write was removed; "
            f"the previous checkpoint ({_latest_name(directory)}) is intact: free space, then "
            "resume"
        ) from error
    if final.exists():
        # Moved aside, not deleted, so a crash here leaves it to the next write's cleanup.
        replaced = Path(tempfile.mkdtemp(prefix=_staging_prefix(), dir=directory))
        os.replace(final, replaced / final.name)
    os.replace(staging, final)
    fsync_dir(directory)
    _write_atomically(directory / LATEST_FILE, final.name + "\n")
    remove_stale_staging(directory)
    _prune(directory, keep)
    return final


def _latest_name(directory: Path) -> str:
    try:
        latest = latest_checkpoint(directory)
    except ValueError:
        return "latest unreadable"
    return "none yet" if latest is None else latest.name


def _prune(directory: Path, keep: int) -> None:
    protected = latest_checkpoint(directory)
    checkpoints = _epoch_folders(directory)[::-1]
    for old in checkpoints[:-keep] if keep > 0 else []:
        if old != protected:
            shutil.rmtree(old)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder ``directory/latest`` names (it may be missing), or ``None`` without ``latest``.

    Raises:
        ValueError: ``latest`` is unreadable or names no epoch folder of this run.
    """
    return read_latest(directory)


def _epoch_folders(directory: Path) -> list[Path]:
    """The run's checkpoint folders, newest first; symlinks are not followed out of the run."""
    folders = (p for p in directory.glob("epoch_*") if p.is_dir() and not p.is_symlink())
    return sorted(folders, reverse=True)


def load_training_state(path: str | Path) -> Checkpoint:
    """Read a training checkpoint folder (or a run's checkpoint folder, whose ``latest`` is
    followed), verified. (For the model alone: ``dcsd.load_model(path)``.)

    Every file is checked against the folder's ``manifest.json`` before it is read.

    Raises:
        FileNotFoundError: no checkpoint there, or ``latest`` names a missing folder.
        ChecksumError: a file is missing, cut short or changed since it was written (a
            :class:`ValueError`; the message names the file).
        ValueError: a file is corrupt or incomplete (the message names it).
    """
    path = follow_latest(path)
    model_file, state_file = path / MODEL_FILE, path / STATE_FILE
    for required in (model_file, state_file):
        if not required.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}: expected {MODEL_FILE} and {STATE_FILE} "
                f"(missing {required.name})"
            )
    verify_manifest(path)
    try:
        model_state = load_file(str(model_file))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"checkpoint weights {model_file} are corrupt: {error}") from error
    try:
        training_state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several unrelated types for damaged archives
        raise ValueError(f"checkpoint state {state_file} is corrupt: {error}") from error
    if not isinstance(training_state, dict) or "epoch" not in training_state:
        raise ValueError(f"checkpoint state {state_file} has no 'epoch': not a dcsd checkpoint")
    epoch = training_state["epoch"]
    if type(epoch) is not int or epoch < 0:
        raise ValueError(f"checkpoint state {state_file} has epoch {epoch!r}, not an int >= 0")
    return Checkpoint(path, model_state, training_state)


def load_latest_training_state(directory: str | Path) -> Checkpoint | None:
    """The training checkpoint ``latest`` names or, when it is damaged or missing, the newest
    whole one.

    Each checkpoint passed over is reported with a :class:`RuntimeWarning` naming it and what is
    wrong, and the one used instead.

    Returns:
        The checkpoint, or ``None`` when ``directory`` holds none.

    Raises:
        ValueError: checkpoints exist but none is whole (the message lists each one's problem).
    """
    directory = Path(directory)
    candidates = _epoch_folders(directory)
    problems = []
    try:
        latest = latest_checkpoint(directory)
    except ValueError as error:
        latest = None
        problems.append(f"{LATEST_FILE}: {error}")
    if latest is not None:
        candidates = [latest, *(p for p in candidates if p != latest)]
    for candidate in candidates:
        try:
            checkpoint = load_training_state(candidate)
        except (OSError, ValueError) as error:
            reason = str(error)
            if candidate == latest and not candidate.is_dir():
                reason = f"{directory / LATEST_FILE} names {latest.name}, which does not exist"
            problems.append(f"{candidate.name}: {reason}")
            continue
        if problems:
            warnings.warn(
                "skipped damaged checkpoint(s): "
                + "; ".join(problems)
                + f". Resuming from the newest whole checkpoint, {candidate}",
                RuntimeWarning,
                stacklevel=2,
            )
        return checkpoint
    if problems:
        raise ValueError(f"no whole checkpoint in {directory}: " + "; ".join(problems))
    return None
