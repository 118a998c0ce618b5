"""Durable outputs: atomic writes, source checksums and the per-image done records.

Resumability rests on one rule: a PNG is written to a temporary name and renamed into
place, and an image's *done record* (``.state/<image>.json``, holding its manifest rows
and rejects) is written the same way only after all its PNGs exist. ``manifest.csv`` is
assembled from the done records, so a killed run leaves complete files only and no
manifest row pointing to a missing file; the next run redoes exactly the images
without a valid record.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mammo_utils.files import (
    PARTIAL_SUFFIX,
    atomic_write_text,
    sha256_file,
)

#: Manifest columns of every task, then the extra columns of the ``roi`` task.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path", "item_id", "image_id", "patient_id", "split", "label", "dataset",
    "source_sha256", "crop_box", "flipped",
)
ROI_COLUMNS: tuple[str, ...] = ("kind", "abnormality_id", "center_x", "center_y")
REJECT_COLUMNS: tuple[str, ...] = ("source", "reason")

STATE_DIR = ".state"
#: Layout of the done records; the image of a record in another layout is redone.
#: Format 2 added ``lesions_not_cut``, without which a resumed run cannot count lesions.
RECORD_FORMAT = 2


def manifest_columns(task: str) -> tuple[str, ...]:
    """Manifest columns for ``task`` (``roi`` adds kind, abnormality and centre)."""
    return MANIFEST_COLUMNS + (ROI_COLUMNS if task == "roi" else ())


def remove_partial_files(out_dir: Path) -> int:
    """Delete ``*.partial`` leftovers of a killed run under ``out_dir``; return how many."""
    leftovers = list(out_dir.rglob(f"*{PARTIAL_SUFFIX}")) if out_dir.is_dir() else []
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def sha256_json(value: object) -> str:
    """SHA-256 of a JSON-serializable value in canonical form (sorted keys)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SourceStamp:
    """Identity of a source file: its checksum, and the size and mtime it was taken at."""

    sha256: str
    size: int
    mtime_ns: int

    @classmethod
    def read(cls, path: Path) -> tuple[SourceStamp, bytes]:
        """Stat ``path``, then read it once: its stamp and the bytes to decode.

        Hashing the bytes that are decoded means the file is read once, not twice. The
        stat comes first, so a file changed during the read gets a stamp that no longer
        matches it and is redone by the next run. Raises ``OSError`` when it cannot be read.
        """
        stat = path.stat()
        data = path.read_bytes()
        return cls(hashlib.sha256(data).hexdigest(), stat.st_size, stat.st_mtime_ns), data


@dataclass
class DoneRecord:
    """Everything one source image produced: manifest rows, rejects and its identity.

    ``inputs_sha256`` hashes the image's index row and lesion rows, so a changed label,
    split or lesion outline also triggers reprocessing. ``rejected`` marks an image that
    produced nothing; it is not retried while its source and inputs are unchanged.
    ``lesions_not_cut`` counts the image's lesions that yielded no patch, by reason.
    """

    image_id: str
    source: str
    stamp: SourceStamp
    inputs_sha256: str
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    rejected: bool = False
    lesions_not_cut: dict[str, int] = field(default_factory=dict)
    record_format: int = RECORD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> DoneRecord:
        values = json.loads(text)
        values.setdefault("record_format", 1)  # records written before formats were numbered
        values["stamp"] = SourceStamp(**values["stamp"])
        return cls(**values)


class DoneStore:
    """The per-image done records of one output folder (``<out>/.state/``)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.state_dir = self.out_dir / STATE_DIR

    def _path(self, image_id: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id)
        tag = hashlib.sha256(image_id.encode("utf-8")).hexdigest()[:8]
        return self.state_dir / f"{safe}-{tag}.json"

    def load(self, image_id: str) -> DoneRecord | None:
        """The record of ``image_id``, or ``None`` when there is none or it is unreadable."""
        path = self._path(image_id)
        try:
            record = DoneRecord.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return record if record.image_id == image_id else None

    def save(self, record: DoneRecord) -> None:
        """Store a record atomically (call only once its PNGs are all written)."""
        atomic_write_text(self._path(record.image_id), record.to_json())

    def is_current(self, record: DoneRecord, source: Path, inputs_sha256: str) -> bool:
        """Whether ``record`` still describes ``source``: same record format, same inputs,
        same bytes, files there.

        The checksum is trusted without rehashing when size and mtime are unchanged
        (the cache that makes a rerun fast); otherwise the file is hashed again.
        """
        if record.record_format != RECORD_FORMAT:
            return False
        if record.inputs_sha256 != inputs_sha256 or record.source != str(source):
            return False
        try:
            stat = source.stat()
        except OSError:
            return False
        stamp = record.stamp
        if (stat.st_size, stat.st_mtime_ns) != (stamp.size, stamp.mtime_ns):
            try:
                if sha256_file(source) != stamp.sha256:
                    return False
            except OSError:
                return False
        return all((self.out_dir / row["path"]).is_file() for row in record.rows)

    def discard_outputs(self, record: DoneRecord) -> None:
        """Delete the PNGs of a stale record (its image is about to be redone)."""
        for row in record.rows:
            (self.out_dir / row["path"]).unlink(missing_ok=True)
