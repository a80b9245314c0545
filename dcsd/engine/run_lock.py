"""One run per output folder: an exclusive ``flock`` on ``out_dir/.dcsd-run.lock``.

Two runs writing one folder interleave their logs and delete each other's checkpoint writes. The
lock is held for a whole run (resume and fit); the kernel drops it when its process ends, however
it ends, so a killed run never leaves the folder locked. The file itself stays, naming the last
holder; only the lock on it counts.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_FILE = ".dcsd-run.lock"
_MAX_HOLDER_BYTES = 500


class RunLockedError(RuntimeError):
    """Another process is running in this output folder."""


class RunLock:
    """An exclusive, non-blocking lock on an output folder.

    Args:
        folder: the run's output folder (it must exist).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._descriptor: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._descriptor is not None

    def acquire(self) -> None:
        """Take the lock, or fail at once if another process (or another lock object) holds it.

        Raises:
            RunLockedError: naming the holder (pid, host, since when) as it wrote itself down.
        """
        if self.held:
            return
        # O_NOFOLLOW: a symlink planted as the lock file must not lead out of the run.
        descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, _MAX_HOLDER_BYTES, 0).decode(errors="replace").strip()
            os.close(descriptor)
            raise RunLockedError(
                f"{self.folder} is in use by another run ({holder or 'holder unknown'}): one run "
                "per output folder. Wait for it to end, or pick another folder"
            ) from None
        holder = (
            f"pid {os.getpid()} on host {socket.gethostname()}, since "
            f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
        )
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, holder.encode() + b"\n", 0)
        self._descriptor = descriptor

    def release(self) -> None:
        """Drop the lock (closing the file drops it); nothing if not held."""
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None

    def __del__(self) -> None:
        self.release()
