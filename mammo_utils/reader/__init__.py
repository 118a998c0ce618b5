"""Read a mammogram safely: DICOM, PNG, JPEG, PGM or a numpy array to float32 in [0, 1].

``read_image`` is the one entry point. The format is decided by the file's content
(magic bytes), never by its name, so a mislabelled upload is still read correctly;
the name only appears in messages and serves as one more hint for laterality and
view. A numpy array goes through the same grayscale conversion and intensity scaling
(:mod:`mammo_utils.reader.array`). Whatever cannot be read safely raises
:class:`ImageReadError`, naming the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mammo_utils.reader.array import read_array
from mammo_utils.reader.dicom import check_dicom, read_dicom
from mammo_utils.reader.errors import MAX_PIXELS, ImageReadError
from mammo_utils.reader.metadata import IDENTIFYING_KEYWORDS, METADATA_KEYS
from mammo_utils.reader.raster import check_raster, read_raster

__all__ = [
    "IDENTIFYING_KEYWORDS",
    "MAX_PIXELS",
    "METADATA_KEYS",
    "ImageReadError",
    "check_image",
    "read_image",
    "sniff_format",
]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
#: First bytes of a DICOM data set written without preamble: a group 0002 or 0008 tag.
_RAW_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")
_DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})


def read_image(
    source: str | os.PathLike | bytes | np.ndarray,
    *,
    name: str | None = None,
    allow_color: bool = True,
) -> tuple[np.ndarray, dict]:
    """Read a mammogram into a float32 2-D array in [0, 1], dense tissue bright.

    Parameters
    ----------
    source : str, path-like, bytes or ndarray
        A file path, the raw bytes of an upload, or an image already in memory
        (``(rows, columns)`` or channels-last colour; see :mod:`mammo_utils.reader.array`
        for how its values are scaled).
    name : str, optional
        The upload's file name, used in messages and to parse laterality and view
        (``Mass-Test_P_00820_LEFT_CC.png``). Defaults to the path's name.
    allow_color : bool, default True
        Convert a colour image to grayscale with a warning; ``False`` refuses it.

    Returns
    -------
    image : ndarray of float32, shape (rows, columns)
        Finite, in [0, 1].
    metadata : dict
        Exactly the non-identifying keys in :data:`METADATA_KEYS`; ``warnings`` lists
        what the reader changed or ignored.

    Raises
    ------
    ImageReadError
        When the file is empty, not an image, undecodable, oversized
        (:data:`MAX_PIXELS`), truncated, has no pixel data, or is colour with
        ``allow_color=False``; or when an array is not 2-D grayscale or colour, or
        holds NaN or infinite values.
    """
    if isinstance(source, np.ndarray):
        return read_array(source, name or "<array>", name=name, allow_color=allow_color)
    label, name, data = _load(source, name)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageReadError(label, _unrecognised_reason(data, name))
    if fmt in ("dicom", "dicom-raw"):
        return read_dicom(data, label, name=name, allow_color=allow_color, raw=fmt == "dicom-raw")
    return read_raster(data, label, fmt, name=name, allow_color=allow_color)


def check_image(source: str | os.PathLike | bytes, *, name: str | None = None) -> dict:
    """Check that ``source`` can be read as an image, without decoding its pixels.

    The cheap part of :func:`read_image`: the format from the content, the header, the
    size limit, and for DICOM the pixel data's presence and length (truncation). Ingest
    calls it on every file it indexes, so a file that could never be read is rejected
    there with its reason instead of reaching preprocessing. Returns the header
    metadata (as :func:`read_image` does, without ``voi_source`` for rasters); raises
    :class:`ImageReadError` naming the file and the reason.
    """
    label, name, data = _load(source, name)
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageReadError(label, _unrecognised_reason(data, name))
    if fmt in ("dicom", "dicom-raw"):
        return check_dicom(data, label, name=name, raw=fmt == "dicom-raw")
    return check_raster(data, label, fmt, name=name)


def sniff_format(data: bytes) -> str | None:
    """``dicom``, ``dicom-raw`` (no preamble), ``png``, ``jpeg``, ``pgm`` or ``None``."""
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    if data[:2] in (b"P5", b"P2") and data[2:3].isspace():
        return "pgm"
    if data[:2] in _RAW_DICOM_GROUPS:
        return "dicom-raw"
    return None


def _load(source: str | os.PathLike | bytes, name: str | None) -> tuple[str, str | None, bytes]:
    """The label used in messages, the name, and the bytes of ``source``."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label, name = str(path), name or path.name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(label, f"cannot be read ({exc.strerror or exc})") from exc
    else:
        raise TypeError(
            f"source must be a path or bytes, or a numpy array, not {type(source).__name__}"
        )
    if not data:
        raise ImageReadError(label, "empty file (0 bytes)")
    return label, name, data


def _unrecognised_reason(data: bytes, name: str | None) -> str:
    """Why unrecognised content was refused, mentioning a DICOM-looking name."""
    suffix = Path(name).suffix.lower() if name else ""
    if suffix in _DICOM_SUFFIXES:
        return f"named {suffix} but not DICOM: no 'DICM' marker at byte 128"
    kind = "text" if _looks_like_text(data) else "binary data"
    return f"not a DICOM, PNG, JPEG or PGM file (unrecognised {kind}, {len(data)} bytes)"


def _looks_like_text(data: bytes) -> bool:
    """Whether the first kilobyte is printable ASCII or UTF-8 text (for the reason only)."""
    head = data[:1024]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(character.isprintable() or character.isspace() for character in text)
