"""MSMT17 (Wei et al., CVPR 2018), V1 and V2 layouts, read from its list files."""

from __future__ import annotations

from pathlib import Path

from .base import ReIDDataset, ReIDItem, find_dataset_dir, relabel

# Image folders of each release; both ship list_{train,val,query,gallery}.txt beside them.
MSMT17_VERSIONS = {
    "MSMT17_V1": ("train", "test"),
    "MSMT17_V2": ("mask_train_v2", "mask_test_v2"),
}

MSMT17_LAYOUT = """Expected layout (as fast-reid and torchreid read it), V1 or V2:
  <root>/MSMT17_V1/                   (or <root>/msmt17/MSMT17_V1/)
      train/0000/0000_000_01_0303morning_0015_0.jpg ...
      test/...
      list_train.txt  list_val.txt  list_query.txt  list_gallery.txt   (lines "<path> <pid>")
  <root>/MSMT17_V2/ with mask_train_v2/ and mask_test_v2/ in place of train/ and test/
Request it from the authors: https://www.pkuvmc.com/dataset.html (MSMT17)."""


class MSMT17(ReIDDataset):
    """MSMT17: 1,041 train identities / 30,248 images (``list_train``), 15 cameras.

    The camera is the third underscore field of the file name (1-based), e.g. camera 1 for
    ``0000_000_01_0303morning_0015_0.jpg``.

    Args:
        root: folder holding ``MSMT17_V1/`` or ``MSMT17_V2/`` (or ``msmt17/MSMT17_V*``).
        version: ``"V1"`` or ``"V2"``; ``None`` takes the first found, V1 first.
        include_val: also train on ``list_val.txt`` (off by default, as in the paper and
            torchreid, for comparison with published results).

    Raises:
        FileNotFoundError: the layout is not found; the message shows the expected one.
        ValueError: a list line or file name does not parse (the message names the file and
            line), or a split is empty.
    """

    def __init__(
        self, root: str | Path, version: str | None = None, include_val: bool = False
    ) -> None:
        if version is None:
            versions = list(MSMT17_VERSIONS)
        elif f"MSMT17_{version}" in MSMT17_VERSIONS:
            versions = [f"MSMT17_{version}"]
        else:
            raise ValueError(f"version must be 'V1', 'V2' or None, got {version!r}")
        lists = ["list_train.txt", "list_query.txt", "list_gallery.txt"]
        if include_val:
            lists.append("list_val.txt")
        candidates = {
            f"{prefix}{v}": [*MSMT17_VERSIONS[v], *lists]
            for v in versions
            for prefix in ("", "msmt17/")
        }
        folder = find_dataset_dir("msmt17", root, candidates, MSMT17_LAYOUT)
        train_dir, test_dir = (folder / sub for sub in MSMT17_VERSIONS[folder.name])
        train = read_msmt17_list(folder / "list_train.txt", train_dir)
        if include_val:
            train += read_msmt17_list(folder / "list_val.txt", train_dir)
        train, original = relabel(train)
        super().__init__(
            "msmt17",
            folder,
            train,
            read_msmt17_list(folder / "list_query.txt", test_dir),
            read_msmt17_list(folder / "list_gallery.txt", test_dir),
            train_original_pids=original,
        )


def read_msmt17_list(list_path: Path, image_dir: Path) -> list[ReIDItem]:
    """Items of an MSMT17 list file, lines ``<path relative to image_dir> <pid>``.

    Raises:
        ValueError: a line does not have two fields, the pid is not an integer, or the camera
            field of the file name is not an integer in 1..15 (message names file and line).
        ValueError: the list is empty.
    """
    items = []
    for number, line in enumerate(list_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{list_path}:{number}"
        if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
            raise ValueError(f"msmt17: expected '<path> <pid>' at {where}, got {line!r}")
        rel_path, pid = fields[0], int(fields[1])
        name_fields = Path(rel_path).name.split("_")
        if len(name_fields) < 3 or not name_fields[2].isdigit():
            raise ValueError(
                f"msmt17: cannot parse the camera of {rel_path} at {where} "
                "(expected <pid>_<index>_<camera>_..., e.g. 0000_000_01_0303morning_0015_0.jpg)"
            )
        cam = int(name_fields[2])
        if not 1 <= cam <= 15:
            raise ValueError(f"msmt17: camera {cam} of {rel_path} at {where} is outside 1..15")
        items.append(ReIDItem(str(image_dir / rel_path), pid, cam - 1))
    if not items:
        raise ValueError(f"msmt17: {list_path} lists no images")
    return items
