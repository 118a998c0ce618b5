"""File checksums shared by the stages that verify or record their inputs (fetch,
preprocess, training): one implementation, one chunk size."""

from __future__ import annotations

import hashlib
import os

#: Bytes read at a time, so a 100 MB DICOM never sits in memory twice.
CHUNK_BYTES = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
