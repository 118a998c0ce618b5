"""The shared file rules: one checksum, one atomic write."""

from __future__ import annotations

import hashlib

import pandas as pd
import pytest

from mammo_utils.files import (
    CHUNK_BYTES,
    PARTIAL_SUFFIX,
    atomic_write_bytes,
    atomic_write_csv,
    sha256_file,
)


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


def test_atomic_write_replaces_the_file_and_leaves_no_partial(tmp_path):
    target = tmp_path / "deep" / "table.csv"
    atomic_write_csv(target, pd.DataFrame({"a": [1, 2]}))
    atomic_write_csv(target, pd.DataFrame({"a": [3]}))
    assert target.read_text() == "a\n3\n"
    assert not list(tmp_path.rglob(f"*{PARTIAL_SUFFIX}"))


def test_a_failed_write_keeps_the_old_file_and_no_partial(tmp_path):
    target = tmp_path / "kept.bin"
    atomic_write_bytes(target, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # not bytes: the write fails mid-way
    assert target.read_bytes() == b"old"
    assert not list(tmp_path.glob(f"*{PARTIAL_SUFFIX}"))
