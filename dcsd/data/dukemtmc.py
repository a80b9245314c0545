"""DukeMTMC-reID (Zheng et al., ICCV 2017) read from its published folder layout."""

from __future__ import annotations

import re
from pathlib import Path

from .base import MARKET_STYLE_FOLDERS, ReIDDataset, find_dataset_dir, parse_image_folder, relabel

DUKEMTMC_LAYOUT = """Expected layout (as fast-reid and torchreid read it):
  <root>/DukeMTMC-reID/               (or <root>/dukemtmc-reid/DukeMTMC-reID/)
      bounding_box_train/   0001_c2_f0046182.jpg ...  (identity_c<camera>_f<frame>)
      query/
      bounding_box_test/
The authors withdrew DukeMTMC; copies of DukeMTMC-reID.zip are described at
https://github.com/layumi/DukeMTMC-reID_evaluation."""

DUKEMTMC_PATTERN = re.compile(r"^(-?\d+)_c(\d)")


class DukeMTMCreID(ReIDDataset):
    """DukeMTMC-reID: 702 train identities / 16,522 images, 8 cameras.

    Args:
        root: folder holding ``DukeMTMC-reID/`` (or ``dukemtmc-reid/DukeMTMC-reID/``, or the
            dataset folder itself).

    Raises:
        FileNotFoundError: the layout is not found; the message shows the expected one.
        ValueError: a file name does not parse (the message names the file) or a split is empty.
    """

    def __init__(self, root: str | Path) -> None:
        folder = find_dataset_dir(
            "dukemtmc",
            root,
            dict.fromkeys(
                ["DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid", ""],
                MARKET_STYLE_FOLDERS,
            ),
            DUKEMTMC_LAYOUT,
        )

        def read(sub: str):
            return parse_image_folder("dukemtmc", folder / sub, DUKEMTMC_PATTERN, num_cameras=8)

        train, original = relabel(read("bounding_box_train"))
        super().__init__(
            "dukemtmc",
            folder,
            train,
            read("query"),
            read("bounding_box_test"),
            train_original_pids=original,
        )
