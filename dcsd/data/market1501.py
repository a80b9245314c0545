"""Market-1501 (Zheng et al., ICCV 2015) read from its published folder layout."""

from __future__ import annotations

import re
from pathlib import Path

from .base import MARKET_STYLE_FOLDERS, ReIDDataset, find_dataset_dir, parse_image_folder, relabel

MARKET1501_LAYOUT = """Expected layout (as fast-reid and torchreid read it):
  <root>/Market-1501-v15.09.15/       (or <root>/market1501/Market-1501-v15.09.15/)
      bounding_box_train/   0002_c1s1_000451_03.jpg ...  (identity_c<camera>s<sequence>_...)
      query/
      bounding_box_test/
Get Market-1501-v15.09.15.zip from https://zheng-lab-anu.github.io/Project/project_reid.html"""

# "0002_c1s1_000451_03.jpg": identity 2, camera 1. Identity -1 marks junk boxes, 0 distractors.
MARKET1501_PATTERN = re.compile(r"^(-?\d+)_c(\d)")


class Market1501(ReIDDataset):
    """Market-1501: 751 train identities / 12,936 images, 6 cameras.

    Junk images (identity -1) are dropped as the protocol says; distractors (identity 0) stay
    in the gallery.

    Args:
        root: folder holding ``Market-1501-v15.09.15/`` (or ``market1501/...``, or the dataset
            folder itself).

    Raises:
        FileNotFoundError: the layout is not found; the message shows the expected one.
        ValueError: a file name does not parse (the message names the file) or a split is empty.
    """

    distractor_pids = (0,)

    def __init__(self, root: str | Path) -> None:
        folder = find_dataset_dir(
            "market1501",
            root,
            dict.fromkeys(
                ["Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501", ""],
                MARKET_STYLE_FOLDERS,
            ),
            MARKET1501_LAYOUT,
        )

        def read(sub: str):
            return parse_image_folder(
                "market1501", folder / sub, MARKET1501_PATTERN, num_cameras=6, drop_pids=(-1,)
            )

        train, original = relabel(read("bounding_box_train"))
        super().__init__(
            "market1501",
            folder,
            train,
            read("query"),
            read("bounding_box_test"),
            train_original_pids=original,
        )
