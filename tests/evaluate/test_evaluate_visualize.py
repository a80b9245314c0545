"""Ranked lists, embedding maps and training curves: content checks on tiny inputs."""

import json

import matplotlib
import numpy as np
import pytest
from PIL import Image

from dcsd.evaluate import (
    embedding_map,
    plot_embedding_maps,
    plot_training_log,
    ranked_lists_figure,
    read_training_log,
    top_matches,
)

matplotlib.use("Agg")


def test_top_matches_follow_the_protocol():
    distmat = np.array([[0.3, 0.1, 0.1, 0.9, 0.2], [0.5, 0.4, 0.3, 0.2, 0.1]])
    q_pids, g_pids = [1, 2], [1, 1, 2, 2, 3]
    q_camids, g_camids = [0, 0], [1, 0, 0, 1, 0]
    # Query 0: gallery 1 (pid 1, camera 0) is junk; the tie 0.1 keeps gallery order.
    assert top_matches(distmat, q_pids, g_pids, q_camids, g_camids, top_k=3) == [
        [2, 4, 0],
        [4, 3, 1],
    ]
    assert top_matches(distmat, q_pids, g_pids, q_camids, g_camids, 2, cross_camera=False) == [
        [1, 2],
        [4, 3],
    ]
    with pytest.raises(ValueError, match="distmat must be"):
        top_matches(distmat, [1], g_pids, [0], g_camids)
    with pytest.raises(ValueError, match="top_k"):
        top_matches(distmat, q_pids, g_pids, q_camids, g_camids, top_k=0)


def test_ranked_lists_figure_layout_and_frames(tmp_path):
    paths = []
    for index, colour in enumerate(["blue", "yellow", "purple"]):
        paths.append(str(tmp_path / f"{index}.png"))
        Image.new("RGB", (8, 16), colour).save(paths[-1])
    figure = ranked_lists_figure(
        [paths[0], paths[1]],
        [[(paths[1], True), (paths[2], False)], [(paths[2], None)]],
        image_size=(16, 8),
    )
    slot, row = 8 + 8 + 4, 16 + 8 + 4
    assert figure.size == (3 * slot, 2 * row)
    assert figure.getpixel((0, 0)) == (255, 255, 255)  # query frame
    assert figure.getpixel((slot, 0)) == (0, 255, 0)  # true match
    assert figure.getpixel((2 * slot, 0)) == (255, 0, 0)  # other identity
    assert figure.getpixel((slot, row)) == (128, 128, 128)  # unknown
    assert figure.getpixel((slot + 6, 6)) == (255, 255, 0)  # the match's image inside
    labelled = ranked_lists_figure([paths[0]], [[(paths[1], True)]], labels=["AP 50%"])
    assert labelled.size[0] > 2 * slot
    with pytest.raises(ValueError, match="one entry per query"):
        ranked_lists_figure([paths[0]], [])


def test_embedding_maps_and_training_curves_are_written(tmp_path):
    rng = np.random.default_rng(0)
    domains = np.repeat([0, 1], 12)
    features = rng.normal(size=(24, 6))
    features[np.arange(24), domains] += 5  # domain d around axis d
    coords = embedding_map(features)
    assert coords.shape == (24, 2)
    # The two separated clusters stay apart in 2-D: each point's nearest neighbour shares it.
    gaps = np.linalg.norm(coords[:, None] - coords[None], axis=-1) + np.eye(24) * 1e9
    assert (domains[gaps.argmin(1)] == domains).all()
    cameras = np.tile([0, 1, 2], 8)
    out = tmp_path / "map.png"
    plot_embedding_maps({"a": coords, "b": coords[::-1]}, domains, cameras, ["d0", "d1"], out)
    assert Image.open(out).size[0] > Image.open(out).size[1]  # two panels side by side
    with pytest.raises(ValueError, match="maps\\['a'\\] must be"):
        plot_embedding_maps({"a": coords[:5]}, domains, cameras, ["d0", "d1"], out)

    log = tmp_path / "log.jsonl"
    records = [
        {"epoch": 1, "loss": 3.0, "id": 2.0, "triplet": 1.0},
        {"epoch": 2, "loss": 2.0, "id": 1.5, "triplet": 0.5,
         "eval": {"synth0": {"cmc": [0.5, 0.7], "mAP": 0.4, "mINP": 0.2}}},
    ]  # fmt: skip
    log.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert read_training_log(log) == records
    plot_training_log(read_training_log(log), tmp_path / "curves.png")
    assert Image.open(tmp_path / "curves.png").size[0] > 0
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1 is not a JSON line"):
        read_training_log(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="no training log"):
        read_training_log(tmp_path / "missing.jsonl")
