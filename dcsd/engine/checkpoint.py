"""Training checkpoints written atomically, so an interrupted run loses nothing.

A checkpoint is a folder ``epoch_XXXX/`` holding ``model.safetensors`` (the weights) and
``training_state.pt`` (optimizer, scheduler, grad scaler and epoch: tensors and plain containers
only, read back with ``torch.load(weights_only=True)``, so no arbitrary pickle). The
folder is written under a temporary name and renamed into place; ``latest`` is then replaced
atomically with the new folder's name. A crash at any moment leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"
LATEST_FILE = "latest"


@dataclass
class Checkpoint:
    """A checkpoint read back from disk."""

    path: Path
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any]

    @property
    def epoch(self) -> int:
        """The number of epochs completed when it was written."""
        return int(self.training_state["epoch"])


def _contiguous_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module,
    training_state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write ``directory/epoch_XXXX`` atomically and point ``directory/latest`` at it.

    Args:
        directory: the run's checkpoint folder (created if missing).
        model: the (unwrapped) model whose weights are saved.
        training_state: must hold ``"epoch"`` (epochs completed); everything else (optimizer,
            scheduler, scaler) is saved as given and must be tensors or plain containers.
        keep: how many most recent checkpoints to keep; older ones are removed.

    Returns:
        The folder of the new checkpoint.
    """
    if "epoch" not in training_state:
        raise ValueError("training_state must hold 'epoch', the number of epochs completed")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"epoch_{int(training_state['epoch']):04d}"
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
    save_file(_contiguous_state(model), str(staging / MODEL_FILE))
    torch.save(training_state, staging / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    latest_tmp = directory / f".{LATEST_FILE}.tmp"
    latest_tmp.write_text(final.name + "\n")
    os.replace(latest_tmp, directory / LATEST_FILE)
    _prune(directory, keep)
    return final


def _prune(directory: Path, keep: int) -> None:
    checkpoints = sorted(p for p in directory.glob("epoch_*") if p.is_dir())
    for old in checkpoints[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The folder ``directory/latest`` names, or ``None`` when no checkpoint was written yet."""
    pointer = Path(directory) / LATEST_FILE
    if not pointer.is_file():
        return None
    return Path(directory) / pointer.read_text().strip()


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder (or a run folder, whose ``latest`` is followed).

    Raises:
        FileNotFoundError: no checkpoint there.
        ValueError: a file is corrupt or incomplete (the message names it).
    """
    path = Path(path)
    if (path / LATEST_FILE).is_file():
        path = latest_checkpoint(path)
    model_file, state_file = path / MODEL_FILE, path / STATE_FILE
    for required in (model_file, state_file):
        if not required.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}: expected {MODEL_FILE} and {STATE_FILE} "
                f"(missing {required.name})"
            )
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
    return Checkpoint(path, model_state, training_state)
