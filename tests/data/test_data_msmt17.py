"""MSMT17, V1 and V2 layouts, parsed from fixture folders and list files."""

from __future__ import annotations

from pathlib import Path

import pytest
from reid_data_fixtures import make_msmt17

from dcsd.data import MSMT17, build_dataset


@pytest.mark.parametrize(
    ("version", "prefix", "train_dir", "test_dir"),
    [
        ("V1", "", "train", "test"),
        ("V2", "", "mask_train_v2", "mask_test_v2"),
        ("V1", "msmt17", "train", "test"),
        ("V2", "msmt17", "mask_train_v2", "mask_test_v2"),
    ],
)
def test_msmt17_layouts(tmp_path, version, prefix, train_dir, test_dir):
    folder = make_msmt17(tmp_path, version, prefix)
    dataset = build_dataset("msmt17", tmp_path)
    assert dataset.root == folder
    # list_train only: identities 0, 1, 3 -> labels 0, 1, 2; camera field 01 -> 0, 15 -> 14.
    assert sorted((i.pid, i.camid) for i in dataset.train) == [(0, 0), (0, 14), (1, 2), (2, 6)]
    assert dataset.train_original_pids == [0, 1, 3]
    assert all(Path(i.path).parts[-3] == train_dir for i in dataset.train)
    assert sorted((i.pid, i.camid) for i in dataset.query) == [(0, 1), (1, 10)]
    assert sorted((i.pid, i.camid) for i in dataset.gallery) == [(0, 8), (1, 13), (2, 3)]
    assert all(Path(i.path).parts[-3] == test_dir for i in dataset.gallery)
    assert dataset.num_cameras == 15


def test_msmt17_include_val(tmp_path):
    make_msmt17(tmp_path)
    dataset = MSMT17(tmp_path, include_val=True)
    assert dataset.train_original_pids == [0, 1, 2, 3]
    assert len(dataset.train) == 5


def test_msmt17_version_choice(tmp_path):
    make_msmt17(tmp_path, "V1")
    make_msmt17(tmp_path, "V2")
    assert MSMT17(tmp_path).root.name == "MSMT17_V1"
    assert MSMT17(tmp_path, version="V2").root.name == "MSMT17_V2"
    with pytest.raises(ValueError, match="version"):
        MSMT17(tmp_path, version="V3")


def test_msmt17_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        MSMT17(tmp_path)
    assert "list_train.txt" in str(err.value) and "mask_train_v2" in str(err.value)


def test_msmt17_bad_line_names_file_and_line(tmp_path):
    folder = make_msmt17(tmp_path)
    with (folder / "list_query.txt").open("a") as f:
        f.write("0005/0005_000_02_0303morning_0035_0.jpg\n")
    with pytest.raises(ValueError, match=r"list_query.txt:3"):
        MSMT17(tmp_path)


def test_msmt17_unparsable_camera_names_the_file(tmp_path):
    folder = make_msmt17(tmp_path)
    (folder / "list_gallery.txt").write_text("0000/0000_a_b.jpg 0\n")
    with pytest.raises(ValueError, match=r"0000_a_b.jpg.*list_gallery.txt:1"):
        MSMT17(tmp_path)


def test_msmt17_empty_list_says_so(tmp_path):
    folder = make_msmt17(tmp_path)
    (folder / "list_query.txt").write_text("")
    with pytest.raises(ValueError, match="lists no images"):
        MSMT17(tmp_path)
