"""Market-1501 (Zheng et al., ICCV 2015) read from its published folder layout."""

from __future__ import annotations

from .market_style import MarketStyleDataset


class Market1501(MarketStyleDataset):
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

    dataset_name = "market1501"
    folders = ("Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501", "")
    layout = """Expected layout (as fast-reid and torchreid read it):
  <root>/Market-1501-v15.09.15/       (or <root>/market1501/Market-1501-v15.09.15/)
      bounding_box_train/   0002_c1s1_000451_03.jpg ...  (identity_c<camera>s<sequence>_...)
      query/
      bounding_box_test/
Get Market-1501-v15.09.15.zip from https://zheng-lab-anu.github.io/Project/project_reid.html"""
    camera_count = 6
    junk_pids = (-1,)
    distractor_pids = (0,)
