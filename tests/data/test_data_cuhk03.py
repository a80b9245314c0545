"""CUHK03 new protocol: images extracted once from cuhk-03.mat (v7.3 or v5), splits from the
protocol .mat files (v5 or v7.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reid_data_fixtures import (
    CUHK03_LABELS,
    CUHK03_SLOTS,
    cell,
    cuhk03_images,
    make_cuhk03,
    write_mat,
)

from dcsd.data import CUHK03, build_dataset
from dcsd.data.matfile import load_mat


@pytest.mark.parametrize(("raw_version", "config_version"), [("v7.3", "v5"), ("v5", "v7.3")])
@pytest.mark.parametrize("labeled", [True, False])
def test_cuhk03_extracts_and_splits(tmp_path, raw_version, config_version, labeled):
    folder = make_cuhk03(tmp_path, raw_version, config_version)
    kind = "labeled" if labeled else "detected"
    dataset = CUHK03(tmp_path, labeled=labeled)
    assert dataset.name == ("cuhk03" if labeled else "cuhk03_detected")
    assert dataset.root == folder

    # Every image of the .mat is extracted under torchreid's name with its exact pixels.
    images = cuhk03_images(kind)
    extracted = sorted(p.name for p in (folder / f"images_{kind}").iterdir())
    assert extracted == sorted(images)
    for name, pixels in images.items():
        assert np.array_equal(np.asarray(Image.open(folder / f"images_{kind}" / name)), pixels)

    # Train: labels 1, 3, 4 relabelled 0, 1, 2; camera = view - 1.
    assert dataset.train_original_pids == [1, 3, 4]
    expected_train = sorted(
        (
            [1, 3, 4].index(CUHK03_LABELS[(pair, person)]),
            0 if slot < 5 else 1,
        )
        for (pair, person), slots in CUHK03_SLOTS.items()
        for slot in slots
        if CUHK03_LABELS[(pair, person)] in (1, 3, 4)
    )
    assert sorted((i.pid, i.camid) for i in dataset.train) == expected_train
    # Test identities 2 and 5 keep their labels: one query per view, the rest in the gallery.
    assert sorted((i.pid, i.camid) for i in dataset.query) == [(2, 0), (2, 1), (5, 0), (5, 1)]
    assert sorted((i.pid, i.camid) for i in dataset.gallery) == [(2, 1), (2, 1)]
    assert dataset.num_cameras == 2
    assert all(Path(i.path).parent.name == f"images_{kind}" for i in dataset.train)


def test_cuhk03_extracts_once_and_needs_no_mat_afterwards(tmp_path):
    folder = make_cuhk03(tmp_path)
    first = CUHK03(tmp_path)
    image = folder / "images_labeled" / "1_001_1_01.png"
    stamp = image.stat().st_mtime_ns
    (folder / "cuhk03_release" / "cuhk-03.mat").unlink()
    again = build_dataset("cuhk03", tmp_path / "cuhk03")
    assert again.train == first.train and again.gallery == first.gallery
    assert image.stat().st_mtime_ns == stamp


def test_cuhk03_missing_mat_names_it(tmp_path):
    folder = make_cuhk03(tmp_path)
    (folder / "cuhk03_release" / "cuhk-03.mat").unlink()
    with pytest.raises(FileNotFoundError, match="cuhk-03.mat"):
        CUHK03(tmp_path)


def test_cuhk03_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        CUHK03(tmp_path)
    assert "cuhk03_new_protocol_config_labeled.mat" in str(err.value)
    assert "person-re-ranking" in str(err.value)


def test_cuhk03_protocol_image_absent_from_mat_names_it(tmp_path):
    folder = make_cuhk03(tmp_path)
    config = folder / "cuhk03_new_protocol_config_labeled.mat"
    values = load_mat(config, ["filelist", "labels", "train_idx", "query_idx", "gallery_idx"])
    names = list(values["filelist"].ravel())
    names[0] = "2_009_1_01.png"
    values["filelist"] = cell(names)
    write_mat(config, values, "v5")
    with pytest.raises(ValueError, match="2_009_1_01.png"):
        CUHK03(tmp_path)
