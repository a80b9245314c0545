"""CUHK-SYSU (Xiao et al., CVPR 2017) as a ReID benchmark from its ground-truth boxes.

CUHK-SYSU is a person-search dataset: whole scene images with annotated boxes. Its ReID form
takes the boxes as images:

- train: the identities of ``Train.mat`` (each with its boxes in the training scenes), keeping
  identities with at least ``min_train_images`` boxes;
- query: the 2,900 query boxes of ``TestG50.mat``;
- gallery: the ground-truth boxes of those 2,900 identities in their ``TestG50`` gallery scenes.

Boxes are cut from the scenes once and cached as PNG under ``cropped_gt/{train,query,gallery}/``
named ``p<identity>_<scene>_<x>_<y>_<w>_<h>.png``. There is one camera (camera id 0), so
evaluation must not drop same-camera matches here.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from .base import ReIDDataset, ReIDItem, find_dataset_dir, relabel
from .matfile import load_mat, struct_list

CUHKSYSU_LAYOUT = """Expected layout (the dataset's own release):
  <root>/cuhk_sysu/                   (or <root>/CUHK-SYSU/, <root>/cuhksysu/)
      Image/SSM/s1.jpg ...                          (scene images)
      annotation/test/train_test/Train.mat
      annotation/test/train_test/TestG50.mat
      cropped_gt/                                   (written here on first use)
Request it from the authors: http://www.ee.cuhk.edu.hk/~xgwang/PS/dataset.html
(or see https://github.com/ShuangLI59/person_search)."""

TRAIN_MAT = "annotation/test/train_test/Train.mat"
TEST_MAT = "annotation/test/train_test/TestG50.mat"

# (scene file name, box x, y, w, h in pixels)
Box = tuple[str, int, int, int, int]


class CUHKSYSU(ReIDDataset):
    """CUHK-SYSU as ReID: one camera; 2,900 test identities with one query box each.

    The paper's Table I gives 942 train identities / 4,374 images, far fewer than the 5,532
    identities of ``Train.mat``. Lifelong-ReID code (Pu et al., CVPR 2021) builds its CUHK-SYSU
    training set from ``Train.mat`` keeping identities with at least 4 boxes, and Table I's
    4.6 boxes per identity fits such a filter, so that rule is the default
    (``min_train_images=4``; not checked here against the real annotations, which we do not
    have). ``min_train_images=1`` keeps every training identity.

    Args:
        root: folder holding ``cuhk_sysu/`` (or ``CUHK-SYSU/``, ``cuhksysu/``, or the dataset
            folder itself).
        min_train_images: drop train identities with fewer boxes than this.

    Raises:
        FileNotFoundError: the layout is not found, or a scene image a box refers to is missing.
        ValueError: an annotation entry does not parse (the message names the file and entry),
            or a split is empty.
    """

    def __init__(self, root: str | Path, min_train_images: int = 4) -> None:
        if min_train_images < 1:
            raise ValueError(f"min_train_images must be >= 1, got {min_train_images}")
        folder = find_dataset_dir(
            "cuhksysu",
            root,
            dict.fromkeys(
                ["cuhk_sysu", "CUHK-SYSU", "cuhksysu", ""], ["Image/SSM", TRAIN_MAT, TEST_MAT]
            ),
            CUHKSYSU_LAYOUT,
        )
        train_boxes, query_boxes, gallery_boxes = read_cuhksysu_annotations(folder)
        train_boxes = {
            pid: boxes for pid, boxes in train_boxes.items() if len(boxes) >= min_train_images
        }
        train, original = relabel(crop_boxes(folder, "train", train_boxes))
        super().__init__(
            "cuhksysu",
            folder,
            train,
            crop_boxes(folder, "query", query_boxes),
            crop_boxes(folder, "gallery", gallery_boxes),
            train_original_pids=original,
        )


def read_cuhksysu_annotations(
    folder: Path,
) -> tuple[dict[int, list[Box]], dict[int, list[Box]], dict[int, list[Box]]]:
    """Boxes per identity for train (``Train.mat``), query and gallery (``TestG50.mat``).

    Returns:
        (train, query, gallery), each identity number -> its boxes.

    Raises:
        ValueError: an identity name or box does not parse (the message names file and entry).
    """
    train: dict[int, list[Box]] = defaultdict(list)
    mat = folder / TRAIN_MAT
    for number, person in enumerate(struct_list(load_mat(mat, ["Train"])["Train"]), start=1):
        pid = _pid(person, f"{mat} entry {number}")
        for scene in struct_list(person["scene"]):
            train[pid].append(_box(scene, f"{mat} entry {number}"))
    query: dict[int, list[Box]] = defaultdict(list)
    gallery: dict[int, list[Box]] = defaultdict(list)
    mat = folder / TEST_MAT
    for number, test in enumerate(struct_list(load_mat(mat, ["TestG50"])["TestG50"]), start=1):
        where = f"{mat} query {number}"
        (probe,) = struct_list(test["Query"])
        pid = _pid(probe, where)
        query[pid].append(_box(probe, where))
        for scene in struct_list(test["Gallery"]):
            # A gallery scene without the person has an empty box.
            if np.asarray(scene["idlocate"]).size:
                gallery[pid].append(_box(scene, where))
    return dict(train), dict(query), dict(gallery)


def crop_boxes(folder: Path, split: str, boxes: dict[int, list[Box]]) -> list[ReIDItem]:
    """Cut each box from its scene once (cached in ``cropped_gt/<split>/``); one item per box.

    Raises:
        FileNotFoundError: a scene image is missing (the message names it).
    """
    out_dir = folder / "cropped_gt" / split
    out_dir.mkdir(parents=True, exist_ok=True)
    items = []
    todo: dict[str, list[tuple[tuple[int, int, int, int], Path]]] = defaultdict(list)
    for pid in sorted(boxes):
        for scene, x, y, w, h in boxes[pid]:
            path = out_dir / f"p{pid}_{Path(scene).stem}_{x}_{y}_{w}_{h}.png"
            items.append(ReIDItem(str(path), pid, 0))
            if not path.is_file():
                todo[scene].append(((x, y, w, h), path))
    # Scenes hold several boxes: open each scene once.
    for scene, crops in sorted(todo.items()):
        scene_path = folder / "Image" / "SSM" / scene
        if not scene_path.is_file():
            raise FileNotFoundError(f"cuhksysu: scene image {scene_path} is missing")
        with Image.open(scene_path) as image:
            image = image.convert("RGB")
            for (x, y, w, h), path in crops:
                box = (max(x, 0), max(y, 0), min(x + w, image.width), min(y + h, image.height))
                if box[2] <= box[0] or box[3] <= box[1]:
                    raise ValueError(
                        f"cuhksysu: box {(x, y, w, h)} lies outside {scene_path} "
                        f"({image.width}x{image.height})"
                    )
                handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
                os.close(handle)
                image.crop(box).save(tmp, format="PNG")
                os.replace(tmp, path)
    return items


def _pid(person: dict, where: str) -> int:
    name = person.get("idname", "")
    if not (isinstance(name, str) and name[:1] == "p" and name[1:].isdigit()):
        raise ValueError(f"cuhksysu: identity name {name!r} at {where} is not like 'p11422'")
    return int(name[1:])


def _box(scene: dict, where: str) -> Box:
    name = scene.get("imname", "")
    box = np.asarray(scene.get("idlocate", ())).ravel()
    if not isinstance(name, str) or not name or box.size != 4 or box[2] <= 0 or box[3] <= 0:
        raise ValueError(
            f"cuhksysu: bad box at {where}: image {name!r}, box {box.tolist()} "
            "(expected a scene name and [x, y, w, h] with w, h > 0)"
        )
    x, y, w, h = (int(round(float(v))) for v in box)
    return name, x, y, w, h
