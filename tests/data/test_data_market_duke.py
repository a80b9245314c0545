"""Market-1501 and DukeMTMC-reID parsed from fixture folders with their real file names."""

from __future__ import annotations

import pytest
from reid_data_fixtures import make_duke, make_market, write_files

from dcsd.data import DukeMTMCreID, Market1501, MarketStyleDataset, build_dataset


@pytest.mark.parametrize(
    "sub", ["Market-1501-v15.09.15", "market1501/Market-1501-v15.09.15", "market1501"]
)
def test_market_layouts_of_fastreid_and_torchreid(tmp_path, sub):
    folder = make_market(tmp_path, sub)
    dataset = Market1501(tmp_path)
    assert dataset.root == folder
    assert dataset.name == "market1501"


def test_market_ids_cameras_and_protocol(tmp_path):
    make_market(tmp_path)
    dataset = build_dataset("market1501", tmp_path)
    train = sorted((item.pid, item.camid) for item in dataset.train)
    # Identities 2, 7, 10 relabelled 0, 1, 2; cameras c1..c6 -> 0..5.
    assert train == [(0, 0), (0, 1), (1, 2), (1, 5), (2, 3)]
    assert dataset.train_original_pids == [2, 7, 10]
    assert sorted((i.pid, i.camid) for i in dataset.query) == [(1, 0), (3, 4), (3, 5)]
    gallery = sorted((i.pid, i.camid) for i in dataset.gallery)
    # Junk (-1) dropped, distractors (0) kept, Thumbs.db ignored.
    assert gallery == [(0, 0), (0, 5), (1, 1), (3, 0), (3, 3)]
    assert (dataset.num_train_pids, dataset.num_train_cams, dataset.num_cameras) == (3, 5, 6)
    assert all(item.path.endswith(".jpg") for item in dataset.gallery)


def test_market_summary_table(tmp_path):
    make_market(tmp_path)
    assert Market1501(tmp_path).summary() == "\n".join(
        [
            "=> market1501",
            "  ----------------------------------------",
            "  subset   | # ids | # images | # cameras",
            "  ----------------------------------------",
            "  train    |     3 |        5 |         5",
            "  query    |     2 |        3 |         3",
            "  gallery  |     3 |        5 |         4",
            "  ----------------------------------------",
        ]
    )


def test_market_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        Market1501(tmp_path / "nowhere")
    message = str(err.value)
    assert "Market-1501-v15.09.15" in message and "bounding_box_train" in message
    assert "zheng-lab" in message


def test_market_partial_folder_says_what_is_missing(tmp_path):
    folder = make_market(tmp_path)
    (folder / "query").rename(folder / "queries")
    with pytest.raises(FileNotFoundError, match="missing: query"):
        Market1501(tmp_path)


def test_market_bad_file_name_names_the_file(tmp_path):
    folder = make_market(tmp_path)
    write_files(folder / "query", ["person_0001.jpg"])
    with pytest.raises(ValueError, match="person_0001.jpg"):
        Market1501(tmp_path)


def test_market_camera_out_of_range_names_the_file(tmp_path):
    folder = make_market(tmp_path)
    write_files(folder / "bounding_box_train", ["0002_c7s1_000451_03.jpg"])
    with pytest.raises(ValueError, match=r"0002_c7s1_000451_03.jpg.*1\.\.6"):
        Market1501(tmp_path)


def test_market_empty_split_says_so(tmp_path):
    folder = make_market(tmp_path)
    for path in (folder / "query").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"no \.jpg/.* images in .*query"):
        Market1501(tmp_path)


@pytest.mark.parametrize("sub", ["DukeMTMC-reID", "dukemtmc-reid/DukeMTMC-reID"])
def test_duke_ids_and_cameras(tmp_path, sub):
    make_duke(tmp_path, sub)
    dataset = DukeMTMCreID(tmp_path)
    assert dataset.name == "dukemtmc"
    assert sorted((i.pid, i.camid) for i in dataset.train) == [(0, 1), (0, 4), (1, 7)]
    assert dataset.train_original_pids == [1, 5]
    assert sorted((i.pid, i.camid) for i in dataset.query) == [(5, 1), (11, 0)]
    assert dataset.split_stats("gallery") == (3, 4, 4)
    assert dataset.num_cameras == 8


def test_duke_missing_root_names_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="DukeMTMC-reID"):
        build_dataset("dukemtmc", tmp_path)


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="market1501"):
        build_dataset("market", tmp_path)


def test_combine_all_adds_test_identities_without_distractors(tmp_path):
    make_market(tmp_path)
    dataset = build_dataset("market1501", tmp_path)
    combined = dataset.combine_all()
    assert combined.query == dataset.query and combined.gallery == dataset.gallery
    added = sorted((i.pid, i.camid) for i in combined.train[len(dataset.train) :])
    # Test identities 1 and 3 become labels 3 and 4; the distractors (identity 0) stay out.
    assert added == [(3, 0), (3, 1), (4, 0), (4, 3), (4, 4), (4, 5)]
    assert combined.train_original_pids == [2, 7, 10, 1, 3]
    assert combined.num_train_pids == 5 and len(dataset.train) == 5  # the original is unchanged
    duke = build_dataset("dukemtmc", make_duke(tmp_path).parent).combine_all()
    assert duke.num_train_pids == 2 + 3  # no distractors in DukeMTMC: 7140 is a person


def test_a_dataset_in_markets_layout_is_data_only(tmp_path):
    """Market-1501 and DukeMTMC-reID are one class; a third such dataset is its attributes."""
    make_duke(tmp_path, "campus")

    class Campus(MarketStyleDataset):
        dataset_name = "campus"
        folders = ("campus",)
        layout = "<root>/campus/ with bounding_box_train/, query/, bounding_box_test/"
        camera_count = 8
        junk_pids = (11,)

    dataset = Campus(tmp_path)
    assert dataset.name == "campus" and dataset.root == tmp_path / "campus"
    # The file names of the Duke fixture; identity 11 dropped as junk.
    assert sorted((i.pid, i.camid) for i in dataset.query) == [(5, 1)]
    assert sorted((i.pid, i.camid) for i in dataset.gallery) == [(5, 6), (7140, 3)]
    assert Market1501.__init__ is DukeMTMCreID.__init__ is MarketStyleDataset.__init__
    with pytest.raises(FileNotFoundError, match="<root>/campus/ with"):
        Campus(tmp_path / "elsewhere")
