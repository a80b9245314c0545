"""Datasets in Market-1501's published layout: Market-1501 and DukeMTMC-reID are one class,
told apart by their data (folder names, camera count, junk and distractor identities)."""

from __future__ import annotations

import re
from pathlib import Path

from .base import MARKET_STYLE_FOLDERS, ReIDDataset, find_dataset_dir, parse_image_folder, relabel

# "0002_c1s1_000451_03.jpg" (Market-1501) or "0001_c2_f0046182.jpg" (DukeMTMC-reID):
# identity 2 (1), camera 1 (2). Market-1501 marks junk boxes with identity -1.
MARKET_STYLE_PATTERN = re.compile(r"^(-?\d+)_c(\d)")


class MarketStyleDataset(ReIDDataset):
    """A dataset in Market-1501's layout: ``bounding_box_train/``, ``query/`` and
    ``bounding_box_test/`` of ``<identity>_c<camera>...`` images (as fast-reid and torchreid
    read both benchmarks). A subclass is data only: the class attributes below.

    Attributes:
        dataset_name: the dataset's short name (its ``name``).
        folders: sub-folders of ``root`` that may hold the three folders, tried in order (""
            is ``root`` itself).
        layout: the expected layout, shown when it is not found.
        camera_count: cameras of the dataset (camera IDs 1..camera_count in file names).
        junk_pids: identities of junk images, dropped as the protocol says.
        distractor_pids: gallery identities that are no person of the test set.

    Args:
        root: the folder holding the dataset (see ``folders``).

    Raises:
        FileNotFoundError: the layout is not found; the message shows the expected one.
        ValueError: a file name does not parse (the message names the file) or a split is empty.
    """

    dataset_name: str
    folders: tuple[str, ...]
    layout: str
    camera_count: int
    junk_pids: tuple[int, ...] = ()

    def __init__(self, root: str | Path) -> None:
        name = self.dataset_name
        folder = find_dataset_dir(
            name, root, dict.fromkeys(self.folders, MARKET_STYLE_FOLDERS), self.layout
        )

        def read(sub: str):
            return parse_image_folder(
                name,
                folder / sub,
                MARKET_STYLE_PATTERN,
                num_cameras=self.camera_count,
                drop_pids=self.junk_pids,
            )

        train, original = relabel(read("bounding_box_train"))
        super().__init__(
            name,
            folder,
            train,
            read("query"),
            read("bounding_box_test"),
            train_original_pids=original,
        )
