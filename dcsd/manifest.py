"""SHA-256 manifests of checkpoint folders, and the fsync calls crash-safe writers need.

A folder's ``manifest.json`` lists every other file in it with its size and SHA-256. It is
written last, after every file is flushed to disk, so a folder whose manifest verifies is whole:
no file was cut short by a crash, and no byte was flipped since. Whatever files a checkpoint
holds (weights, optimizer state, ``config.json``), the manifest covers them all.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "dcsd-manifest/1"
_CHUNK_BYTES = 1 << 20


class ChecksumError(ValueError):
    """A file of a checkpoint folder does not match its manifest (or the manifest is unusable)."""


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def sha256_file(path: str | os.PathLike) -> str:
    """The hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(folder: str | os.PathLike) -> Path:
    """Flush every file of ``folder`` to disk, then write and flush its ``manifest.json``.

    Every regular file directly in ``folder`` (except the manifest) is listed; call this after
    the folder's last file is written.

    Returns:
        The manifest's path.
    """
    folder = Path(folder)
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST_FILE):
        fsync_file(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = folder / MANIFEST_FILE
    manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n")
    fsync_file(manifest)
    fsync_dir(folder)
    return manifest


def verify_manifest(folder: str | os.PathLike) -> None:
    """Check every file ``folder/manifest.json`` lists: present, same size, same SHA-256.

    Files added to the folder later (e.g. a README) are not listed and not checked.

    Raises:
        ChecksumError: the manifest is missing or unreadable, or a file is missing, has another
            size or another hash; the message names the file.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise ChecksumError(
            f"{folder} has no {MANIFEST_FILE}: its write did not finish (the manifest is written "
            "last), or an older dcsd wrote it"
        )
    try:
        content = json.loads(manifest.read_text())
        if content["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {content['format']!r} is not {MANIFEST_FORMAT!r}")
        files = content["files"]
        entries = [(name, int(item["bytes"]), str(item["sha256"])) for name, item in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise ChecksumError(f"{manifest} is unreadable: {error!r}") from error
    for name, size, expected in entries:
        path = folder / name
        if Path(name).name != name:
            raise ChecksumError(f"{manifest} lists {name!r}, which is not a file of {folder}")
        if not path.is_file():
            raise ChecksumError(f"{path} is missing (listed in {MANIFEST_FILE})")
        if path.stat().st_size != size:
            raise ChecksumError(
                f"{path} has {path.stat().st_size} bytes, its manifest says {size}: the file "
                "was cut short or changed"
            )
        if sha256_file(path) != expected:
            raise ChecksumError(
                f"{path} does not match its SHA-256 in {MANIFEST_FILE}: the file is corrupt "
                "(bytes changed on disk since it was written)"
            )
