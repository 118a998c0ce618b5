"""One run at a time per output folder: an advisory lock on ``<out>/.lock``.

Two runs writing one folder would race on the same partial files and done records. The
lock is an ``flock`` on a file holding the owner's process id, so it is released by the
operating system whenever its owner ends, killed or not: a stale lock cannot exist.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

#: The lock file inside a processed folder (holds the owning run's process id).
LOCK_FILE = ".lock"


class FolderLockedError(RuntimeError):
    """Another run holds the output folder; ``str(err)`` names the folder and its pid."""

    def __init__(self, folder: Path, pid: str) -> None:
        self.folder, self.pid = folder, pid
        super().__init__(
            f"{folder} is being written by another preprocess run (process id {pid}); "
            "wait for it to end, or pass --wait to wait for it"
        )


class FolderLock:
    """Hold the lock of ``folder`` for a ``with`` block.

    ``wait=False`` raises :class:`FolderLockedError` at once when another run holds it;
    ``wait=True`` blocks until that run ends.
    """

    def __init__(self, folder: str | Path, *, wait: bool = False) -> None:
        self.folder = Path(folder)
        self.wait = wait
        self._descriptor: int | None = None

    def __enter__(self) -> FolderLock:
        path = self.folder / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flags = fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(descriptor, flags)
            except BlockingIOError:
                owner = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
                raise FolderLockedError(self.folder, owner or "unknown") from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(descriptor)
            raise
        self._descriptor = descriptor
        return self

    def __exit__(self, *exc_info) -> None:
        if self._descriptor is not None:
            os.ftruncate(self._descriptor, 0)
            os.close(self._descriptor)  # closing releases the flock
            self._descriptor = None
