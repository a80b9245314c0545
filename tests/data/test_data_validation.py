"""holdout_identities: a validation split made of training identities."""

from __future__ import annotations

import pytest

from dcsd.data import ReIDDataset, ReIDItem, holdout_identities


def make_dataset(num_ids: int = 8, cameras: int = 3, shots: int = 2) -> ReIDDataset:
    train = [
        ReIDItem(f"/d/{pid:04d}_c{cam + 1}_{shot}.jpg", pid, cam)
        for pid in range(num_ids)
        for cam in range(cameras)
        for shot in range(shots)
    ]
    test = [ReIDItem("/d/q.jpg", 100, 0)]
    return ReIDDataset("toy", "/d", train, test, test, [10 + pid for pid in range(num_ids)])


def test_held_out_identities_leave_train_and_form_a_protocol_split():
    dataset = make_dataset()
    split = holdout_identities(dataset, 3, seed=1)
    held = {item.pid for item in split.query}
    assert len(held) == 3 and held <= set(dataset.train_original_pids)
    assert {item.pid for item in split.gallery} == held
    # Remaining train identities are relabelled 0..P-1 and keep their original numbers.
    assert split.num_train_pids == 5
    assert not held & set(split.train_original_pids)
    assert len(split.train) + len(split.query) + len(split.gallery) == len(dataset.train)
    # Two queries per identity, from distinct cameras, each with a cross-camera match.
    for pid in held:
        queries = [q for q in split.query if q.pid == pid]
        assert len(queries) == 2 and len({q.camid for q in queries}) == 2
    for query in split.query:
        assert any(g.pid == query.pid and g.camid != query.camid for g in split.gallery)
    # The test split is not part of the result.
    assert all(item.path != "/d/q.jpg" for item in split.query + split.gallery)


def test_same_seed_same_split_other_seed_other_split():
    dataset = make_dataset(num_ids=20)
    first = holdout_identities(dataset, 5, seed=0)
    assert first.query == holdout_identities(dataset, 5, seed=0).query
    assert first.query != holdout_identities(dataset, 5, seed=3).query


def test_a_query_without_a_cross_camera_match_goes_to_the_gallery():
    # Two cameras with one image each: only one query can keep a match.
    split = holdout_identities(make_dataset(cameras=2, shots=1), 2, queries_per_identity=2)
    assert len(split.query) == 2 and len(split.gallery) == 2
    for query in split.query:
        assert any(g.pid == query.pid and g.camid != query.camid for g in split.gallery)


def test_bad_arguments_are_named():
    dataset = make_dataset()
    with pytest.raises(ValueError, match=r"num_identities must be in 1\.\.6 for toy"):
        holdout_identities(dataset, 7)
    with pytest.raises(TypeError, match="num_identities must be an int"):
        holdout_identities(dataset, 2.0)
    with pytest.raises(ValueError, match="queries_per_identity"):
        holdout_identities(dataset, 2, queries_per_identity=0)
    with pytest.raises(ValueError, match="seen by two or more cameras"):
        holdout_identities(make_dataset(cameras=1), 2)
