"""The one file checksum every stage records."""

from __future__ import annotations

import hashlib

from mammo_utils.checksums import CHUNK_BYTES, sha256_file


def test_sha256_of_a_file_longer_than_one_chunk_equals_the_whole_bytes_digest(tmp_path):
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 7)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert len(data) > 2 * CHUNK_BYTES
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_empty_file_has_the_empty_digest(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert sha256_file(path) == hashlib.sha256(b"").hexdigest()
