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
import re
from pathlib import Path

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "dcsd-manifest/1"
# The Hub's model card: written after the weights by save_pretrained, edited on the Hub,
# never loaded, so a manifest need not list it.
UNCHECKED_FILE = "README.md"
_SHA256_HEX = re.compile("[0-9a-f]{64}")
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
    names = (MANIFEST_FILE, UNCHECKED_FILE)
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name not in names):
        fsync_file(path)
        files[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = folder / MANIFEST_FILE
    manifest.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=1) + "\n")
    fsync_file(manifest)
    fsync_dir(folder)
    return manifest


def _manifest_entries(manifest: Path) -> dict[str, tuple[int, str]]:
    """{file name: (bytes, sha256)} of a manifest, every field checked: a damaged manifest is
    reported as such, never as a crash of the reader."""
    try:
        content = json.loads(manifest.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        # ValueError covers bad JSON and bad UTF-8; RecursionError, absurdly deep nesting.
        raise ChecksumError(f"{manifest} is unreadable: {type(error).__name__}: {error}") from None
    if not isinstance(content, dict) or content.get("format") != MANIFEST_FORMAT:
        raise ChecksumError(f"{manifest} is not a {MANIFEST_FORMAT} manifest")
    files = content.get("files")
    if not isinstance(files, dict):
        raise ChecksumError(f"{manifest} has no 'files' object")
    entries = {}
    for name, item in files.items():
        if name in ("", ".", "..", MANIFEST_FILE) or Path(name).name != name:
            raise ChecksumError(f"{manifest} lists {name!r}, which is not a file of its folder")
        size = item.get("bytes") if isinstance(item, dict) else None
        digest = item.get("sha256") if isinstance(item, dict) else None
        # type() rather than isinstance(): JSON's true is an int to Python, 4e19904 a float.
        if type(size) is not int or size < 0:
            raise ChecksumError(f"{manifest}: {name!r} has no valid byte count ({size!r})")
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise ChecksumError(f"{manifest}: {name!r} has no valid SHA-256 ({digest!r})")
        entries[name] = (size, digest)
    return entries


def verify_manifest(folder: str | os.PathLike) -> None:
    """Check ``folder`` against its ``manifest.json``: every file listed is a regular file of
    the same size and SHA-256, and every entry of the folder is listed (except ``README.md``,
    the model card that the Hub writes and edits and that nothing loads).

    Raises:
        ChecksumError: the manifest is missing or unreadable, a file is missing, has another
            size or another hash, or an entry of the folder is not listed; the message names
            the file.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        raise ChecksumError(
            f"{folder} has no {MANIFEST_FILE}: its write did not finish (the manifest is written "
            "last), or an older dcsd wrote it"
        )
    entries = _manifest_entries(manifest)
    unlisted = sorted(
        p.name
        for p in folder.iterdir()
        if p.name not in entries and p.name not in (MANIFEST_FILE, UNCHECKED_FILE)
    )
    if unlisted:
        raise ChecksumError(
            f"{folder} holds {unlisted}, which {MANIFEST_FILE} does not list: a manifest must "
            "cover every file of its folder, so this one cannot vouch for it"
        )
    for name, (size, expected) in entries.items():
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise ChecksumError(
                f"{path} is missing or not a regular file (listed in {MANIFEST_FILE})"
            )
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
