"""CUHK-SYSU as ReID from ground-truth boxes: Train.mat / TestG50.mat (v5 or v7.3), crops
cut once from the scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reid_data_fixtures import SYSU_TEST, SYSU_TRAIN, make_cuhksysu, sysu_scene, write_mat

from dcsd.data import CUHKSYSU, build_dataset
from dcsd.data.matfile import load_mat


def crop(item_path: str) -> tuple[str, tuple[int, int, int, int]]:
    # p<id>_<scene>_<x>_<y>_<w>_<h>.png
    fields = Path(item_path).stem.split("_")
    return f"{fields[1]}.jpg", tuple(int(v) for v in fields[2:])


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_cuhksysu_splits_and_crops(tmp_path, version):
    folder = make_cuhksysu(tmp_path, version)
    dataset = CUHKSYSU(tmp_path)
    assert dataset.name == "cuhksysu" and dataset.root == folder
    # Default min_train_images=4 drops p3 (2 boxes); p1, p2 relabelled 0, 1.
    assert dataset.train_original_pids == [1, 2]
    assert sorted(i.pid for i in dataset.train) == [0] * 4 + [1] * 5
    assert sorted(i.pid for i in dataset.query) == [10, 11]
    # Gallery: the ground-truth boxes of the query identities; empty gallery boxes skipped.
    assert sorted(i.pid for i in dataset.gallery) == [10, 10, 11]
    assert {i.camid for s in (dataset.train, dataset.query, dataset.gallery) for i in s} == {0}
    assert dataset.num_cameras == 1
    for item in dataset.train + dataset.query + dataset.gallery:
        scene, (x, y, w, h) = crop(item.path)
        expected = sysu_scene(scene)[max(y, 0) : y + h, max(x, 0) : x + w]
        assert np.array_equal(np.asarray(Image.open(item.path)), expected), item.path
    boxes = {crop(i.path) for i in dataset.train}
    assert boxes == {b for pid in ("p1", "p2") for b in SYSU_TRAIN[pid]}
    query_boxes = {crop(i.path) for i in dataset.query}
    assert query_boxes == {query for query, _ in SYSU_TEST.values()}


def test_cuhksysu_min_train_images(tmp_path):
    make_cuhksysu(tmp_path, sub="CUHK-SYSU")
    dataset = build_dataset("cuhksysu", tmp_path, min_train_images=1)
    assert dataset.train_original_pids == [1, 2, 3]
    assert len(dataset.train) == 11
    with pytest.raises(ValueError, match="min_train_images"):
        CUHKSYSU(tmp_path, min_train_images=0)


def test_cuhksysu_crops_once(tmp_path):
    folder = make_cuhksysu(tmp_path)
    first = CUHKSYSU(tmp_path)
    path = Path(first.query[0].path)
    assert path.parent == folder / "cropped_gt" / "query"
    stamp = path.stat().st_mtime_ns
    (folder / "Image" / "SSM" / "s6.jpg").unlink()  # a cached crop needs no scene
    (folder / "Image" / "SSM" / "s7.jpg").unlink()
    again = CUHKSYSU(tmp_path)
    assert again.query == first.query
    assert path.stat().st_mtime_ns == stamp


def test_cuhksysu_missing_scene_names_it(tmp_path):
    folder = make_cuhksysu(tmp_path)
    (folder / "Image" / "SSM" / "s8.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="s8.jpg"):
        CUHKSYSU(tmp_path)


def test_cuhksysu_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        CUHKSYSU(tmp_path)
    assert "TestG50.mat" in str(err.value) and "Image/SSM" in str(err.value)


def test_cuhksysu_bad_identity_name_names_the_entry(tmp_path):
    folder = make_cuhksysu(tmp_path)
    train_mat = folder / "annotation" / "test" / "train_test" / "Train.mat"
    train = load_mat(train_mat, ["Train"])["Train"]
    train[1, 0]["idname"] = "person2"
    write_mat(train_mat, {"Train": train}, "v5")
    with pytest.raises(ValueError, match=r"'person2'.*Train.mat entry 2"):
        CUHKSYSU(tmp_path)
