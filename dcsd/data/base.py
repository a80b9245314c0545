"""The item and dataset types every ReID dataset shares, and the helpers their parsers use.

A dataset is three lists of :class:`ReIDItem`: ``train`` with identities relabelled 0..P-1 within
the dataset (as torchreid does with ``relabel=True``), and ``query`` / ``gallery`` with the
dataset's own identity numbers, so that evaluation matches the published protocol. Camera ids are
0-based everywhere.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

SPLITS = ("train", "query", "gallery")
# Sub-folders of Market-1501-style datasets holding the train, query and gallery images.
MARKET_STYLE_FOLDERS = ("bounding_box_train", "query", "bounding_box_test")
# Image files a dataset folder may hold (re-encoded copies of the datasets exist as .png).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Files operating systems leave in image folders (Market-1501's zip ships a Thumbs.db).
OS_METADATA_FILES = ("thumbs.db", "desktop.ini", ".ds_store")


class ReIDItem(NamedTuple):
    """One image of a dataset: its file, identity and camera (dataset-local, camera 0-based).

    A named tuple, so it unpacks as ``path, pid, camid = item`` (torchreid's and fast-reid's
    habit).
    """

    path: str
    pid: int
    camid: int


class ReIDDataset:
    """Train / query / gallery lists of one ReID dataset, in dataset-local ids.

    Args:
        name: short name, e.g. ``"market1501"``; keys the dataset in multi-domain evaluation.
        root: the folder the dataset was read from.
        train: training images, identities relabelled 0..P-1.
        query: query images with the dataset's own identity numbers.
        gallery: gallery images with the dataset's own identity numbers.
        train_original_pids: for each train label l, the dataset's own identity number
            (``train_original_pids[l]``); defaults to the labels themselves.

    Attributes:
        distractor_pids: gallery identities that are no person of the test set (Market-1501's
            0); :meth:`combine_all` leaves them out of training.

    Raises:
        ValueError: a split is empty, train labels are not 0..P-1, or a camera id is negative.
    """

    distractor_pids: tuple[int, ...] = ()

    def __init__(
        self,
        name: str,
        root: str | Path,
        train: Sequence[ReIDItem],
        query: Sequence[ReIDItem],
        gallery: Sequence[ReIDItem],
        train_original_pids: Sequence[int] | None = None,
    ) -> None:
        self.name = name
        self.root = Path(root)
        self.train = list(train)
        self.query = list(query)
        self.gallery = list(gallery)
        for split in SPLITS:
            items = getattr(self, split)
            if not items:
                raise ValueError(f"{name}: the {split} split is empty (read from {self.root})")
            bad = next((item for item in items if item.camid < 0), None)
            if bad is not None:
                raise ValueError(f"{name}: camera ids must be >= 0, got {bad.camid} for {bad.path}")
        labels = sorted({item.pid for item in self.train})
        if labels != list(range(len(labels))):
            raise ValueError(
                f"{name}: train identities must be relabelled 0..P-1, got labels "
                f"{labels[:5]}... ({len(labels)} identities)"
            )
        if train_original_pids is None:
            train_original_pids = labels
        if len(train_original_pids) != len(labels):
            raise ValueError(
                f"{name}: train_original_pids needs one entry per train identity "
                f"({len(labels)}), got {len(train_original_pids)}"
            )
        self.train_original_pids = list(train_original_pids)

    @property
    def num_train_pids(self) -> int:
        """Number of training identities P (train labels are 0..P-1)."""
        return len(self.train_original_pids)

    @property
    def num_train_cams(self) -> int:
        """Number of distinct cameras among the training images."""
        return len({item.camid for item in self.train})

    @property
    def num_cameras(self) -> int:
        """Cameras of the dataset: the largest camera id of any split, plus one."""
        return 1 + max(item.camid for split in SPLITS for item in getattr(self, split))

    def combine_all(self) -> ReIDDataset:
        """The dataset with its query and gallery images added to ``train`` (torchreid's
        ``combineall``), for training on everything before testing on *other* datasets.

        Test identities get train labels after the existing ones (P, P+1, ... in increasing
        order of their numbers; query and gallery share them); :attr:`distractor_pids` are left
        out. Query and gallery stay as they are, but evaluating on them afterwards would test on
        the training images.

        Returns:
            A new :class:`ReIDDataset` with the same name, query and gallery.
        """
        test_items = [
            item
            for item in self.query + self.gallery
            if item.pid not in self.distractor_pids and item.pid >= 0
        ]
        test_pids = sorted({item.pid for item in test_items})
        label_of = {pid: self.num_train_pids + label for label, pid in enumerate(test_pids)}
        train = self.train + [ReIDItem(i.path, label_of[i.pid], i.camid) for i in test_items]
        return ReIDDataset(
            self.name,
            self.root,
            train,
            self.query,
            self.gallery,
            train_original_pids=self.train_original_pids + test_pids,
        )

    def split_stats(self, split: str) -> tuple[int, int, int]:
        """(identities, images, cameras) of ``split`` ("train", "query" or "gallery")."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return split_stats(getattr(self, split))

    def summary(self) -> str:
        """A table of identities, images and cameras per split, as torchreid prints it."""
        rule = "  " + "-" * 40
        lines = [f"=> {self.name}", rule, "  subset   | # ids | # images | # cameras", rule]
        for split in SPLITS:
            pids, images, cams = self.split_stats(split)
            lines.append(f"  {split:<8} | {pids:5d} | {images:8d} | {cams:9d}")
        lines.append(rule)
        return "\n".join(lines)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split}={len(getattr(self, split))}" for split in SPLITS)
        return f"{type(self).__name__}(name={self.name!r}, {sizes})"


def split_stats(items: Iterable[ReIDItem]) -> tuple[int, int, int]:
    """(identities, images, cameras) of a list of items."""
    items = list(items)
    return len({i.pid for i in items}), len(items), len({i.camid for i in items})


def relabel(items: Iterable[ReIDItem]) -> tuple[list[ReIDItem], list[int]]:
    """Relabel identities to 0..P-1 in increasing order of their own numbers.

    Returns:
        (relabelled items, original pid of each label).
    """
    items = list(items)
    original = sorted({item.pid for item in items})
    label_of = {pid: label for label, pid in enumerate(original)}
    return [ReIDItem(i.path, label_of[i.pid], i.camid) for i in items], original


def find_dataset_dir(
    name: str, root: str | Path, candidates: Mapping[str, Sequence[str]], help_text: str
) -> Path:
    """The first sub-folder ``root / candidate`` that holds every path it requires.

    Args:
        name: dataset name, for the error message.
        root: folder the user passed.
        candidates: sub-folder of ``root`` ("" is ``root`` itself) -> paths relative to it that
            must all exist; tried in order.
        help_text: the expected layout and where to get the dataset, shown when nothing matches.

    Raises:
        FileNotFoundError: no candidate holds the required paths; the message lists what was
            looked at, what is missing in candidates that exist, and ``help_text``.
    """
    root = Path(root).expanduser()
    tried = []
    for candidate, required in candidates.items():
        folder = root / candidate if candidate else root
        if not folder.is_dir():
            tried.append(f"  {folder} (no such folder)")
            continue
        missing = [rel for rel in required if not (folder / rel).exists()]
        if not missing:
            return folder
        tried.append(f"  {folder} (missing: {', '.join(missing)})")
    raise FileNotFoundError(
        f"{name}: no dataset folder found under {root}. Looked at:\n"
        + "\n".join(tried)
        + f"\n{help_text}"
    )


def parse_image_folder(
    name: str,
    folder: Path,
    pattern: re.Pattern[str],
    num_cameras: int,
    drop_pids: Sequence[int] = (),
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> list[ReIDItem]:
    """Read a Market-1501-style folder: identity and 1-based camera parsed from each file name.

    Args:
        name: dataset name, for error messages.
        folder: the folder to list (not recursive).
        pattern: regex whose first two groups are the identity and the 1-based camera; searched
            in the file name.
        num_cameras: cameras are 1..num_cameras in the file names.
        drop_pids: identities the dataset's protocol discards (e.g. Market's junk id -1).
        suffixes: image file suffixes to read. Other files are skipped with a warning that
            counts and names them, except the operating system's (``Thumbs.db``, ``.DS_Store``,
            ``desktop.ini``, macOS's ``._*`` companions).

    Returns:
        Items sorted by file name, camera ids made 0-based.

    Raises:
        ValueError: a file name does not match ``pattern`` or its camera is out of range.
        ValueError: the folder holds no image with the given suffixes.
    """
    entries = sorted(
        p
        for p in folder.iterdir()
        if not p.is_dir()
        and p.name.lower() not in OS_METADATA_FILES
        and not p.name.startswith("._")
    )
    files = [p for p in entries if p.suffix.lower() in suffixes]
    skipped = [p.name for p in entries if p.suffix.lower() not in suffixes]
    if skipped:
        warnings.warn(
            f"{name}: skipped {len(skipped)} non-image file(s) in {folder}: {skipped[:5]}",
            RuntimeWarning,
            stacklevel=2,
        )
    if not files:
        raise ValueError(f"{name}: no {'/'.join(suffixes)} images in {folder}")
    items = []
    for path in files:
        match = pattern.search(path.name)
        if match is None:
            raise ValueError(
                f"{name}: cannot parse identity and camera from {path} "
                f"(expected a name matching {pattern.pattern!r})"
            )
        try:
            pid, cam = int(match.group(1)), int(match.group(2))
        except ValueError as error:
            raise ValueError(
                f"{name}: identity or camera of {path} is not a number ({error})"
            ) from error
        if not 1 <= cam <= num_cameras:
            raise ValueError(f"{name}: camera {cam} of {path} is outside 1..{num_cameras}")
        if pid in drop_pids:
            continue
        items.append(ReIDItem(str(path), pid, cam - 1))
    if not items:
        raise ValueError(f"{name}: every image in {folder} belongs to a dropped identity")
    return items
