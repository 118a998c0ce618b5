"""Durable file writes and checksums shared by every stage that writes or verifies files
(synth, fetch, ingest, preprocess, training): one implementation of each rule.

Atomic writes go to ``<name>.partial`` and are renamed into place, so a reader sees the
old file or the complete new one, and a killed run leaves at most a ``.partial`` file
(preprocessing deletes those on its next run).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

#: Bytes read at a time, so a 100 MB DICOM never sits in memory twice.
CHUNK_BYTES = 1 << 20
#: Suffix of a file being written.
PARTIAL_SUFFIX = ".partial"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a ``.partial`` file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + PARTIAL_SUFFIX)
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text (line ends written as given)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a data frame as CSV (no index) atomically."""
    atomic_write_text(path, frame.to_csv(index=False))
