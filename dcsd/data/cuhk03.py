"""CUHK03 (Li et al., CVPR 2014) with the new 767/700 protocol (Zhong et al., CVPR 2017).

The images ship inside ``cuhk-03.mat``; they are extracted once to ``images_labeled/`` or
``images_detected/`` with torchreid's names ``<pair>_<person:03d>_<view>_<image:02d>.png``
(camera pair 1-5, person within the pair, view 1-2, image 1-10), the names the protocol files'
``filelist`` uses. Folders that torchreid or fast-reid already extracted are used as they are.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image

from .base import ReIDDataset, ReIDItem, find_dataset_dir, relabel
from .matfile import load_mat

CUHK03_LAYOUT = """Expected layout (as fast-reid and torchreid read it):
  <root>/cuhk03/
      cuhk03_release/cuhk-03.mat                  (only needed until images are extracted)
      cuhk03_new_protocol_config_labeled.mat
      cuhk03_new_protocol_config_detected.mat
      images_labeled/  images_detected/           (written here on first use)
Get cuhk03_release.zip from http://www.ee.cuhk.edu.hk/~xgwang/CUHK_identification.html and the
protocol files from https://github.com/zhunzhong07/person-re-ranking (evaluation/data/CUHK03)."""

PROTOCOL_VARIABLES = ("train_idx", "query_idx", "gallery_idx", "labels", "filelist")


class CUHK03(ReIDDataset):
    """CUHK03, new protocol: 767 train / 700 test identities; camera = view (2 cameras).

    Labeled boxes (default, as in the paper): 7,368 train, 1,400 query, 5,328 gallery images.

    Args:
        root: folder holding ``cuhk03/`` (or the ``cuhk03`` folder itself).
        labeled: hand-labelled boxes if True, detected boxes (DPM) if False. The detected
            variant is named ``"cuhk03_detected"``.

    Raises:
        FileNotFoundError: the layout is not found, or images must be extracted and
            ``cuhk03_release/cuhk-03.mat`` is missing.
        ValueError: a protocol entry is out of range or an image the protocol lists is not in
            ``cuhk-03.mat`` (the message names it).
    """

    def __init__(self, root: str | Path, labeled: bool = True) -> None:
        kind = "labeled" if labeled else "detected"
        config = f"cuhk03_new_protocol_config_{kind}.mat"
        folder = find_dataset_dir("cuhk03", root, {"cuhk03": [config], "": [config]}, CUHK03_LAYOUT)
        protocol = load_mat(folder / config, PROTOCOL_VARIABLES)
        names = [str(name) for name in protocol["filelist"].ravel(order="F")]
        pids = np.asarray(protocol["labels"]).ravel().astype(int)
        if len(names) != len(pids):
            raise ValueError(
                f"cuhk03: {folder / config} has {len(names)} files and {len(pids)} labels; "
                "they must match"
            )
        image_dir = folder / f"images_{kind}"

        def split(variable: str) -> list[ReIDItem]:
            # The protocol's indices are MATLAB's, 1-based.
            indices = np.asarray(protocol[variable]).ravel().astype(int) - 1
            if indices.size and not (0 <= indices.min() and indices.max() < len(names)):
                raise ValueError(
                    f"cuhk03: {variable} of {folder / config} indexes outside 1..{len(names)}"
                )
            return [
                ReIDItem(str(image_dir / names[i]), int(pids[i]), view_of(names[i]) - 1)
                for i in indices
            ]

        train, query, gallery = split("train_idx"), split("query_idx"), split("gallery_idx")
        needed = {Path(item.path).name for item in (*train, *query, *gallery)}
        absent = {name for name in needed if not (image_dir / name).is_file()}
        if absent:
            extract_cuhk03_images(folder / "cuhk03_release" / "cuhk-03.mat", kind, image_dir)
            still_absent = sorted(name for name in absent if not (image_dir / name).is_file())
            if still_absent:
                raise ValueError(
                    f"cuhk03: {len(still_absent)} images listed by {config} are not in "
                    f"cuhk-03.mat, e.g. {still_absent[0]}"
                )
        train, original = relabel(train)
        super().__init__(
            "cuhk03" if labeled else "cuhk03_detected",
            folder,
            train,
            query,
            gallery,
            train_original_pids=original,
        )


def view_of(name: str) -> int:
    """The view (1 or 2) in a torchreid-style CUHK03 image name, e.g. 2 for ``1_001_2_06.png``.

    Raises:
        ValueError: the name does not follow ``<pair>_<person>_<view>_<image>.png``.
    """
    fields = Path(name).stem.split("_")
    if len(fields) != 4 or fields[2] not in ("1", "2"):
        raise ValueError(
            f"cuhk03: cannot parse the view of {name!r} (expected <pair>_<person>_<view>_<image>"
            ".png with view 1 or 2, e.g. 1_001_2_06.png)"
        )
    return int(fields[2])


def extract_cuhk03_images(mat_path: Path, kind: str, image_dir: Path) -> None:
    """Write every image of ``kind`` ("labeled" or "detected") in ``cuhk-03.mat`` as PNG.

    Existing files are kept; each new file is written under a temporary name and renamed, so
    an interrupted run never leaves a truncated image behind.

    Raises:
        FileNotFoundError: ``mat_path`` does not exist (the message shows the expected layout).
    """
    if not mat_path.is_file():
        raise FileNotFoundError(
            f"cuhk03: images must be extracted from {mat_path}, which does not exist.\n"
            + CUHK03_LAYOUT
        )
    image_dir.mkdir(parents=True, exist_ok=True)
    for pair, person, index, image in _iter_cuhk03_images(mat_path, kind):
        # Images 1-5 of a person come from the pair's first camera, 6-10 from its second.
        view = 1 if index < 5 else 2
        path = image_dir / f"{pair + 1}_{person + 1:03d}_{view}_{index + 1:02d}.png"
        if path.is_file():
            continue
        handle, tmp = tempfile.mkstemp(dir=image_dir, suffix=".png.tmp")
        os.close(handle)
        Image.fromarray(image).save(tmp, format="PNG")
        os.replace(tmp, path)


def _iter_cuhk03_images(mat_path: Path, kind: str) -> Iterator[tuple[int, int, int, np.ndarray]]:
    """(pair, person, image index, HxWx3 uint8) for each non-empty cell, all 0-based.

    ``cuhk-03.mat`` is v7.3 (HDF5) as released; it is read lazily so that only one image is in
    memory at a time. A v5 copy (e.g. re-saved by MATLAB) is read with scipy.
    """
    if h5py.is_hdf5(mat_path):
        with h5py.File(mat_path, "r") as mat:
            for pair, pair_ref in enumerate(mat[kind][()].T.ravel(order="F")):
                cells = mat[pair_ref][()].T  # (persons, 10) references
                for person, index in np.ndindex(cells.shape):
                    image = mat[cells[person, index]][()].T
                    if image.ndim == 3:
                        yield pair, person, index, image
    else:
        pairs = scipy.io.loadmat(mat_path, variable_names=[kind])[kind]
        for pair, cells in enumerate(pairs.ravel(order="F")):
            for person, index in np.ndindex(cells.shape):
                image = cells[person, index]
                if image.ndim == 3:
                    yield pair, person, index, image
