"""The unit of work: one source image, everything it needs, everything it yields."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from mammo_utils.breast import BreastGeometry
from mammo_utils.preprocess.config import PreprocessConfig


@dataclass(frozen=True)
class ImageJob:
    """One source image to preprocess, with its index row and its abnormalities."""

    image_id: str
    image_path: str
    index_row: dict
    lesions: tuple[dict, ...]
    config: PreprocessConfig
    out_dir: str
    inputs_sha256: str

    def rng(self) -> np.random.Generator:
        """A generator seeded by the run seed and the image id, independent of order."""
        key = hashlib.sha256(f"{self.config.seed}:{self.image_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(key[:8], "little"))

    def base_row(self, sha256: str, geometry: BreastGeometry) -> dict:
        """Manifest fields shared by every output of this image."""
        row = self.index_row
        return {
            "image_id": self.image_id,
            "patient_id": row["patient_id"],
            "split": row["split"],
            "label": row["label"],
            "dataset": row["dataset"],
            "source_sha256": sha256,
            "crop_box": " ".join(str(value) for value in geometry.box),
            "flipped": bool(geometry.flipped),
        }


@dataclass
class TaskOutput:
    """PNG arrays to write (relative path -> uint16 image), their manifest rows, rejects,
    and how many of the image's lesions yielded no patch, by reason."""

    images: dict[str, np.ndarray] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    not_cut: Counter = field(default_factory=Counter)

    def add(self, item_id: str, label: str, array: np.ndarray, row: dict) -> None:
        """Add one output image, stored as ``<label>/<item_id>.png``."""
        path = f"{label}/{safe_name(item_id)}.png"
        if path in self.images:
            raise ValueError(f"two outputs of one image are both named {path}")
        self.images[path] = array
        self.rows.append({"path": path, "item_id": item_id, **row})


def safe_name(text: str) -> str:
    """A file-name-safe version of an identifier, distinct for distinct identifiers.

    An identifier of ``[A-Za-z0-9._-]`` only is its own name; any other has its other
    characters replaced by ``_`` and a hash of the whole identifier added after a ``+``,
    a character no unchanged name holds (``case 1`` -> ``case_1+<hash>``, never
    ``case_1``), so two identifiers cannot share an output file.
    """
    text = str(text)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)
    if safe == text:
        return text
    return f"{safe}+{hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}"


def to_uint16(image: np.ndarray) -> np.ndarray:
    """A [0, 1] float image as 16-bit integers (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float32) * 65535.0), 0, 65535).astype(
        np.uint16
    )
