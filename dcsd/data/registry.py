"""The dataset registry: build a dataset by name, and add your own.

The five benchmarks are registered here; a user's dataset class joins them with
:func:`register_dataset` (torchreid's ``register_image_dataset``, fast-reid's
``DATASET_REGISTRY``) and then works with :func:`build_dataset`, :class:`MultiDomainDataset` and
the examples' ``--datasets`` flag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .base import ReIDDataset
from .cuhk03 import CUHK03
from .cuhksysu import CUHKSYSU
from .dukemtmc import DukeMTMCreID
from .market1501 import Market1501
from .msmt17 import MSMT17

# A dataset factory: called as ``factory(root, **kwargs)``, returns a ReIDDataset.
DatasetFactory = Callable[..., ReIDDataset]

# In the paper's order (Table I), which also fixes the global camera numbering of Fig. 3.
DATASET_NAMES: tuple[str, ...] = ("market1501", "cuhksysu", "dukemtmc", "cuhk03", "msmt17")

_DATASETS: dict[str, DatasetFactory] = {
    "market1501": Market1501,
    "dukemtmc": DukeMTMCreID,
    "cuhk03": CUHK03,
    "msmt17": MSMT17,
    "cuhksysu": CUHKSYSU,
}


def register_dataset(name: str, factory: DatasetFactory, *, overwrite: bool = False) -> None:
    """Make ``build_dataset(name, root, **kwargs)`` call ``factory(root, **kwargs)``.

    Args:
        name: the dataset's short name (it also names its domain in multi-domain training).
        factory: a :class:`ReIDDataset` subclass or any callable ``(root, **kwargs)`` returning
            a :class:`ReIDDataset`.
        overwrite: replace a dataset already registered under ``name``.

    Raises:
        TypeError: ``name`` is not a string or ``factory`` is not callable.
        ValueError: ``name`` is empty, holds a comma or whitespace (the examples' ``--datasets``
            flag is comma-separated), or is taken and ``overwrite`` is False.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name or any(c == "," or c.isspace() for c in name):
        raise ValueError(f"name must be non-empty, without commas or whitespace, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable (a ReIDDataset class), got {factory!r}")
    if name in _DATASETS and not overwrite:
        raise ValueError(
            f"a dataset is already registered as {name!r} ({_DATASETS[name]!r}); "
            "pass overwrite=True to replace it"
        )
    _DATASETS[name] = factory


def list_datasets() -> list[str]:
    """Names :func:`build_dataset` accepts: the five benchmarks, then registered ones."""
    return list(_DATASETS)


def build_dataset(name: str, root: str | Path, **kwargs: Any) -> ReIDDataset:
    """The dataset called ``name`` read from ``root``.

    Args:
        name: one of :func:`list_datasets` (the five benchmarks, :data:`DATASET_NAMES`, and any
            added with :func:`register_dataset`).
        root: folder holding the dataset's own folder (see each class for its layout).
        **kwargs: options of the dataset class, e.g. ``labeled=False`` for CUHK03,
            ``version="V2"`` / ``include_val=True`` for MSMT17, ``min_train_images`` for
            CUHK-SYSU.

    Raises:
        ValueError: unknown ``name``.
        TypeError: a registered factory returned something other than a ReIDDataset.
    """
    if name not in _DATASETS:
        raise ValueError(
            f"name must be one of {tuple(_DATASETS)} (add your own with register_dataset), "
            f"got {name!r}"
        )
    dataset = _DATASETS[name](root, **kwargs)
    if not isinstance(dataset, ReIDDataset):
        raise TypeError(
            f"the factory registered as {name!r} returned {type(dataset).__name__}, "
            "not a ReIDDataset"
        )
    return dataset
