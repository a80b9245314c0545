"""DukeMTMC-reID (Zheng et al., ICCV 2017) read from its published folder layout."""

from __future__ import annotations

from .market_style import MarketStyleDataset


class DukeMTMCreID(MarketStyleDataset):
    """DukeMTMC-reID: 702 train identities / 16,522 images, 8 cameras.

    Args:
        root: folder holding ``DukeMTMC-reID/`` (or ``dukemtmc-reid/DukeMTMC-reID/``, or the
            dataset folder itself).

    Raises:
        FileNotFoundError: the layout is not found; the message shows the expected one.
        ValueError: a file name does not parse (the message names the file) or a split is empty.
    """

    dataset_name = "dukemtmc"
    folders = ("DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID", "dukemtmc-reid", "")
    layout = """Expected layout (as fast-reid and torchreid read it):
  <root>/DukeMTMC-reID/               (or <root>/dukemtmc-reid/DukeMTMC-reID/)
      bounding_box_train/   0001_c2_f0046182.jpg ...  (identity_c<camera>_f<frame>)
      query/
      bounding_box_test/
The authors withdrew DukeMTMC; copies of DukeMTMC-reID.zip are described at
https://github.com/layumi/DukeMTMC-reID_evaluation."""
    camera_count = 8
