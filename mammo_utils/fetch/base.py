"""Pieces every fetcher shares: the report, the archive error, the byte progress bar and
the name of the scratch folder inside ``--out``."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

TMP_DIR = ".fetch-tmp"  # partial downloads and unpacking, always inside --out


def remove_if_empty(folder: Path) -> None:
    """Drop the scratch folder once nothing (no partial download) is left in it."""
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


class ArchiveError(ValueError):
    """A downloaded archive that does not hold what it should."""


@dataclass
class FetchReport:
    """What one fetch did: items in = downloaded + skipped + failed."""

    out: Path
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (
            f"{len(self.downloaded)} downloaded, {len(self.skipped)} already complete, "
            f"{len(self.failed)} failed -> {self.out}"
        )


class ByteProgress:
    """One byte bar (rate, ETA) fed by any number of worker threads, with an item count."""

    def __init__(self, total: int, enabled: bool, desc: str, items: int) -> None:
        self._lock = threading.Lock()
        self._items, self._done = items, 0
        self.bar = tqdm(
            total=total or None, unit="B", unit_scale=True, unit_divisor=1024,
            desc=desc, disable=not enabled, dynamic_ncols=True,
        )  # fmt: skip

    def add_bytes(self, count: int) -> None:
        with self._lock:
            self.bar.update(count)

    def item_done(self) -> None:
        with self._lock:
            self._done += 1
            self.bar.set_postfix_str(f"{self._done}/{self._items} items", refresh=False)

    def close(self) -> None:
        self.bar.close()
