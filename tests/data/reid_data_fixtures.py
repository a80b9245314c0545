"""Builders of tiny dataset folders with the real naming conventions, and a MATLAB v7.3 writer.

Parsers read only file names for Market-style datasets, so those images are a few bytes of one
shared tiny JPEG; CUHK03 and CUHK-SYSU get real pixels because their images are extracted or
cropped.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from PIL import Image


def tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_files(folder: Path, names: Iterable[str]) -> None:
    data = tiny_jpeg()
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


# Market-1501: identity_c<cam>s<seq>_<frame>_<box>.jpg; -1 junk, 0000 distractors in the gallery.
MARKET_TRAIN = [
    "0002_c1s1_000451_03.jpg",
    "0002_c2s1_000301_01.jpg",
    "0007_c3s3_077419_03.jpg",
    "0007_c6s4_002202_01.jpg",
    "0010_c4s1_000551_02.jpg",
]
MARKET_QUERY = ["0001_c1s1_001051_00.jpg", "0003_c5s1_000476_00.jpg", "0003_c6s2_000151_00.jpg"]
MARKET_GALLERY = [
    "-1_c1s1_000401_03.jpg",
    "-1_c3s1_000676_05.jpg",
    "0000_c1s1_000151_01.jpg",
    "0000_c6s1_000601_02.jpg",
    "0001_c2s1_000301_01.jpg",
    "0003_c1s1_001026_02.jpg",
    "0003_c4s2_043587_01.jpg",
]


def make_market(root: Path, sub: str = "Market-1501-v15.09.15") -> Path:
    folder = root / sub
    write_files(folder / "bounding_box_train", MARKET_TRAIN)
    write_files(folder / "query", MARKET_QUERY)
    write_files(folder / "bounding_box_test", MARKET_GALLERY)
    # The real release has Windows thumbnail caches in its folders.
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"\0")
    return folder


DUKE_TRAIN = ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0005_c8_f0019004.jpg"]
DUKE_QUERY = ["0005_c2_f0064993.jpg", "0011_c1_f0057191.jpg"]
DUKE_GALLERY = [
    "0005_c7_f0080103.jpg",
    "0011_c3_f0058291.jpg",
    "0011_c8_f0100091.jpg",
    "7140_c4_f0102911.jpg",
]


def make_duke(root: Path, sub: str = "DukeMTMC-reID") -> Path:
    folder = root / sub
    write_files(folder / "bounding_box_train", DUKE_TRAIN)
    write_files(folder / "query", DUKE_QUERY)
    write_files(folder / "bounding_box_test", DUKE_GALLERY)
    return folder


# MSMT17: <pid>_<index>_<camera>_<date><time>_<frame>_<box>.jpg in per-identity folders.
MSMT_TRAIN = [
    ("0000/0000_000_01_0303morning_0015_0.jpg", 0),
    ("0000/0000_001_15_0303noon_1003_1.jpg", 0),
    ("0001/0001_000_03_0303morning_0022_0.jpg", 1),
    ("0003/0003_000_07_0113afternoon_0101_0.jpg", 3),
]
MSMT_VAL = [("0002/0002_000_05_0303morning_0101_0.jpg", 2)]
MSMT_QUERY = [
    ("0000/0000_000_02_0303morning_0035_0.jpg", 0),
    ("0001/0001_000_11_0113noon_0005_1.jpg", 1),
]
MSMT_GALLERY = [
    ("0000/0000_003_09_0303noon_0006_0.jpg", 0),
    ("0001/0001_002_14_0113morning_0001_0.jpg", 1),
    ("0002/0002_000_04_0302noon_0311_0.jpg", 2),
]


def make_msmt17(root: Path, version: str = "V1", prefix: str = "") -> Path:
    train_dir, test_dir = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}[
        version
    ]
    folder = root / prefix / f"MSMT17_{version}"
    for name, entries, image_dir in (
        ("train", MSMT_TRAIN, train_dir),
        ("val", MSMT_VAL, train_dir),
        ("query", MSMT_QUERY, test_dir),
        ("gallery", MSMT_GALLERY, test_dir),
    ):
        write_files(folder / image_dir, [path for path, _ in entries])
        lines = "".join(f"{path} {pid}\n" for path, pid in entries)
        (folder / f"list_{name}.txt").write_text(lines)
    return folder


# ---------------------------------------------------------------------------------------------
# MATLAB v7.3 (HDF5) writer, following MATLAB's layout: arrays stored transposed, chars as
# uint16, cells and struct-array fields as object references into "#refs#", empties as their
# dimensions with MATLAB_empty=1, and a 512-byte header block.


class StructArray:
    """A MATLAB struct array of the given shape (dicts in MATLAB column-major order)."""

    def __init__(self, elements: list[dict], shape: tuple[int, int] | None = None) -> None:
        self.elements = elements
        self.shape = shape or (1, len(elements))


def write_mat73(path: Path, variables: dict) -> None:
    with h5py.File(path, "w", userblock_size=512) as mat:
        refs = mat.create_group("#refs#")
        counter = iter(range(10**9))

        def ref_to(value) -> h5py.Reference:
            name = f"r{next(counter)}"
            write(refs, name, value)
            return refs[name].ref

        def write(group: h5py.Group, name: str, value) -> None:
            if isinstance(value, str):
                if not value:
                    _empty(group, name, "char")
                    return
                data = np.array([[ord(c) for c in value]], dtype=np.uint16)
                dataset = group.create_dataset(name, data=data.T)
                dataset.attrs["MATLAB_class"] = np.bytes_(b"char")
                dataset.attrs["MATLAB_int_decode"] = np.int32(2)
            elif isinstance(value, dict):
                sub = group.create_group(name)
                sub.attrs["MATLAB_class"] = np.bytes_(b"struct")
                for field, field_value in value.items():
                    write(sub, field, field_value)
            elif isinstance(value, StructArray):
                sub = group.create_group(name)
                sub.attrs["MATLAB_class"] = np.bytes_(b"struct")
                cells = np.empty(value.shape, dtype=object)
                for index, element in zip(np.ndindex(value.shape), _f_order(value), strict=True):
                    cells[index] = element
                for field in value.elements[0]:
                    data = np.empty(value.shape, dtype=h5py.ref_dtype)
                    for index in np.ndindex(value.shape):
                        data[index] = ref_to(cells[index][field])
                    sub.create_dataset(field, data=data.T, dtype=h5py.ref_dtype)
            elif isinstance(value, np.ndarray) and value.dtype == object:
                data = np.empty(value.shape, dtype=h5py.ref_dtype)
                for index in np.ndindex(value.shape):
                    data[index] = ref_to(value[index])
                dataset = group.create_dataset(name, data=data.T, dtype=h5py.ref_dtype)
                dataset.attrs["MATLAB_class"] = np.bytes_(b"cell")
            else:
                value = np.asarray(value)
                matlab_class = {"u1": "uint8", "f8": "double", "i4": "int32"}[value.dtype.str[1:]]
                if value.size == 0:
                    _empty(group, name, matlab_class)
                    return
                dataset = group.create_dataset(name, data=value.T)
                dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class.encode())

        for name, value in variables.items():
            write(mat, name, value)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .")


def _f_order(value: StructArray) -> list[dict]:
    # Elements are listed in MATLAB (column-major) order; place them by C-order index.
    order = np.arange(len(value.elements)).reshape(value.shape, order="F")
    return [value.elements[i] for i in order.ravel()]


def _empty(group: h5py.Group, name: str, matlab_class: str) -> None:
    dataset = group.create_dataset(name, data=np.zeros(2, dtype=np.uint64))
    dataset.attrs["MATLAB_class"] = np.bytes_(matlab_class.encode())
    dataset.attrs["MATLAB_empty"] = np.uint8(1)


def write_mat(path: Path, variables: dict, version: str) -> None:
    """Write ``variables`` as MATLAB v5 (scipy) or v7.3 (h5py)."""
    if version == "v7.3":
        write_mat73(path, variables)
    else:
        scipy.io.savemat(path, {k: _to_scipy(v) for k, v in variables.items()})


def _to_scipy(value):
    if isinstance(value, StructArray):
        fields = list(value.elements[0])
        array = np.empty(value.shape, dtype=[(f, object) for f in fields])
        for index, element in zip(np.ndindex(value.shape), _f_order(value), strict=True):
            array[index] = tuple(_to_scipy(element[f]) for f in fields)
        return array
    if isinstance(value, dict):
        return {k: _to_scipy(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) and value.dtype == object:
        out = np.empty(value.shape, dtype=object)
        for index in np.ndindex(value.shape):
            out[index] = _to_scipy(value[index])
        return out
    return value


def cell(values: list, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A MATLAB cell array (column vector by default) of the given values."""
    out = np.empty(shape or (len(values), 1), dtype=object)
    for index, value in zip(np.ndindex(out.shape), values, strict=True):
        out[index] = value
    return out


# ---------------------------------------------------------------------------------------------
# CUHK03: cuhk-03.mat holds, per camera pair, a (persons x 10) cell of images (1-5 from the
# pair's first camera, 6-10 from its second, empty when missing); the new protocol lists
# torchreid-style file names with global labels and 1-based train/query/gallery indices.

# (pair, person) -> image slots present; person (1, 3) is seen by one camera only.
CUHK03_SLOTS = {
    (1, 1): [0, 1, 5, 6],
    (1, 2): [0, 5, 6, 7],
    (1, 3): [0, 1, 2],
    (2, 1): [1, 2, 8, 9],
    (2, 2): [0, 5],
}
CUHK03_LABELS = {(1, 1): 1, (1, 2): 2, (1, 3): 3, (2, 1): 4, (2, 2): 5}
CUHK03_TRAIN_LABELS = (1, 3, 4)


def cuhk03_images(kind: str) -> dict[str, np.ndarray]:
    """File name -> image of every non-empty cell of the fixture's cuhk-03.mat."""
    rng = np.random.default_rng(0 if kind == "labeled" else 1)
    images = {}
    for (pair, person), slots in CUHK03_SLOTS.items():
        for slot in slots:
            view = 1 if slot < 5 else 2
            name = f"{pair}_{person:03d}_{view}_{slot + 1:02d}.png"
            images[name] = rng.integers(0, 256, size=(7, 3, 3), dtype=np.uint8)
    return images


def make_cuhk03(root: Path, raw_version: str = "v7.3", config_version: str = "v5") -> Path:
    folder = root / "cuhk03"
    (folder / "cuhk03_release").mkdir(parents=True)
    raw = {}
    for kind in ("labeled", "detected"):
        images = cuhk03_images(kind)
        pairs = []
        for pair in (1, 2):
            persons = [p for (q, p) in CUHK03_SLOTS if q == pair]
            cells = np.empty((len(persons), 10), dtype=object)
            for person in persons:
                for slot in range(10):
                    view = 1 if slot < 5 else 2
                    name = f"{pair}_{person:03d}_{view}_{slot + 1:02d}.png"
                    cells[person - 1, slot] = images.get(name, np.zeros((0, 0), dtype=np.uint8))
            pairs.append(cells)
        raw[kind] = cell(pairs)
        names = sorted(images)
        labels = [CUHK03_LABELS[(int(n[0]), int(n[2:5]))] for n in names]
        train = [i for i, label in enumerate(labels) if label in CUHK03_TRAIN_LABELS]
        # One query per test identity and view; the other test images are the gallery.
        query, seen = [], set()
        for i, (name, label) in enumerate(zip(names, labels, strict=True)):
            if label not in CUHK03_TRAIN_LABELS and (label, name[6]) not in seen:
                seen.add((label, name[6]))
                query.append(i)
        gallery = [i for i in range(len(names)) if i not in train and i not in query]
        config = {
            "filelist": cell(names),
            "labels": np.array(labels, dtype=np.float64)[:, None],
            "camId": np.array([int(n[6]) for n in names], dtype=np.float64)[:, None],
            "train_idx": np.array(train, dtype=np.float64)[:, None] + 1,
            "query_idx": np.array(query, dtype=np.float64)[:, None] + 1,
            "gallery_idx": np.array(gallery, dtype=np.float64)[:, None] + 1,
        }
        write_mat(folder / f"cuhk03_new_protocol_config_{kind}.mat", config, config_version)
    write_mat(folder / "cuhk03_release" / "cuhk-03.mat", raw, raw_version)
    return folder


# ---------------------------------------------------------------------------------------------
# CUHK-SYSU: scene images and boxes [x, y, w, h]. Train.mat is a cell of 1x1 structs (idname,
# nAppear, scene struct array); TestG50.mat a struct array of Query (1x1 struct) and Gallery
# (struct array whose idlocate is empty where the person is absent).

SYSU_TRAIN = {  # identity -> boxes; p3 has too few boxes for the default min_train_images=4
    "p1": [
        ("s1.jpg", (2, 3, 6, 12)),
        ("s2.jpg", (10, 5, 5, 10)),
        ("s3.jpg", (0, 0, 4, 9)),
        ("s4.jpg", (20, 8, 7, 14)),
    ],
    "p2": [
        ("s1.jpg", (15, 2, 6, 12)),
        ("s2.jpg", (1, 1, 5, 11)),
        ("s3.jpg", (25, 20, 6, 10)),
        ("s4.jpg", (3, 18, 5, 10)),
        ("s5.jpg", (8, 8, 8, 16)),
    ],
    "p3": [("s5.jpg", (20, 2, 5, 10)), ("s1.jpg", (28, 30, 6, 12))],
}
SYSU_TEST = {  # query identity -> (query box, gallery scenes with the box or None)
    "p10": (
        ("s6.jpg", (4, 4, 6, 12)),
        [("s7.jpg", (9, 9, 6, 12)), ("s5.jpg", None), ("s8.jpg", (30, 25, 8, 20))],
    ),
    "p11": (("s7.jpg", (22, 3, 6, 12)), [("s8.jpg", (2, 2, 6, 14)), ("s6.jpg", None)]),
}


def sysu_scene(name: str) -> np.ndarray:
    rng = np.random.default_rng(int(name[1:-4]))
    return rng.integers(0, 256, size=(48, 40, 3), dtype=np.uint8)


def make_cuhksysu(root: Path, version: str = "v5", sub: str = "cuhk_sysu") -> Path:
    folder = root / sub
    (folder / "Image" / "SSM").mkdir(parents=True)
    (folder / "annotation" / "test" / "train_test").mkdir(parents=True)
    for number in range(1, 9):
        # PNG data under the release's .jpg names keeps the pixels exact for the crop check.
        Image.fromarray(sysu_scene(f"s{number}.jpg")).save(
            folder / "Image" / "SSM" / f"s{number}.jpg", format="PNG"
        )

    def scene(name, box):
        location = np.zeros((0, 0)) if box is None else np.array([box], dtype=np.float64)
        return {"imname": name, "idlocate": location, "ishard": np.array([[0.0]])}

    train = cell(
        [
            {
                "idname": pid,
                "nAppear": np.array([[float(len(boxes))]]),
                "scene": StructArray([scene(n, b) for n, b in boxes]),
            }
            for pid, boxes in SYSU_TRAIN.items()
        ]
    )
    tests = StructArray(
        [
            {
                "Query": {**scene(*query), "idname": pid},
                "Gallery": StructArray([scene(n, b) for n, b in gallery]),
            }
            for pid, (query, gallery) in SYSU_TEST.items()
        ]
    )
    annotations = folder / "annotation" / "test" / "train_test"
    write_mat(annotations / "Train.mat", {"Train": train}, version)
    write_mat(annotations / "TestG50.mat", {"TestG50": tests}, version)
    return folder
