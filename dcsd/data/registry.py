"""Build a real dataset by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import ReIDDataset
from .cuhk03 import CUHK03
from .cuhksysu import CUHKSYSU
from .dukemtmc import DukeMTMCreID
from .market1501 import Market1501
from .msmt17 import MSMT17

_DATASETS: dict[str, type[ReIDDataset]] = {
    "market1501": Market1501,
    "dukemtmc": DukeMTMCreID,
    "cuhk03": CUHK03,
    "msmt17": MSMT17,
    "cuhksysu": CUHKSYSU,
}

# In the paper's order (Table I), which also fixes the global camera numbering of Fig. 3.
DATASET_NAMES: tuple[str, ...] = ("market1501", "cuhksysu", "dukemtmc", "cuhk03", "msmt17")


def build_dataset(name: str, root: str | Path, **kwargs: Any) -> ReIDDataset:
    """The dataset called ``name`` read from ``root``.

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: folder holding the dataset's own folder (see each class for its layout).
        **kwargs: options of the dataset class, e.g. ``labeled=False`` for CUHK03,
            ``version="V2"`` / ``include_val=True`` for MSMT17, ``min_train_images`` for
            CUHK-SYSU.

    Raises:
        ValueError: unknown ``name``.
    """
    if name not in _DATASETS:
        raise ValueError(f"name must be one of {DATASET_NAMES}, got {name!r}")
    return _DATASETS[name](root, **kwargs)
