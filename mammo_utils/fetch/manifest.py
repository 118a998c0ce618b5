"""The local download manifest: what a fetch has completed, with sizes and checksums.

``<out>/fetch_manifest.json`` maps an item key (a series UID, a CSV name, an archive) to
the files it produced, each with its size and sha256, plus free-form details. An item is
complete only when its entry exists *and* every file still matches; a resumed run skips
exactly those items. The file is rewritten atomically after each completed item, under a
lock, so parallel workers and an interrupted run never leave it half-written.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mammo_utils.files import atomic_write_text, sha256_file

MANIFEST_NAME = "fetch_manifest.json"
FORMAT_VERSION = 1


def file_record(root: Path, path: Path) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of one finished file, its path relative to root."""
    return {
        "path": path.relative_to(root).as_posix(),
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
    }


class Manifest:
    """Thread-safe record of completed items under one output folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / MANIFEST_NAME
        self._lock = threading.Lock()
        self._items: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"{self.path}: unknown manifest version {data.get('version')}")
            self._items = data["items"]

    def entry(self, key: str) -> dict[str, Any] | None:
        """The recorded entry of ``key`` (or None)."""
        with self._lock:
            return self._items.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def is_complete(self, key: str) -> bool:
        """True when ``key`` is recorded and each of its files has its size and sha256."""
        entry = self.entry(key)
        if entry is None:
            return False
        for record in entry["files"]:
            path = self.root / record["path"]
            if not path.is_file() or path.stat().st_size != record["size"]:
                return False
            if sha256_file(path) != record["sha256"]:
                return False
        return True

    def record(self, key: str, files: list[dict[str, Any]], **details: Any) -> None:
        """Mark ``key`` complete with its file records and save the manifest atomically."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock:
            self._items[key] = {"files": files, "completed": stamp, **details}
            self._save()

    def forget(self, key: str) -> None:
        """Drop ``key`` (its files are about to be replaced)."""
        with self._lock:
            if self._items.pop(key, None) is not None:
                self._save()

    def _save(self) -> None:
        atomic_write_text(
            self.path, json.dumps({"version": FORMAT_VERSION, "items": self._items}, indent=1)
        )
