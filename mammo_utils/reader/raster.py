"""PNG, JPEG and PGM to a float32 [0, 1] image.

Dimensions come from the header first (PNG IHDR, JPEG SOF marker, PGM header), so an
oversized image is refused before it is decoded. PNG and JPEG decode with OpenCV
(``IMREAD_UNCHANGED`` keeps 16-bit PNGs 16-bit); PGM, the mini-MIAS format, is parsed
here so its ``maxval`` (not the dtype maximum) sets the white point. Integer images
are scaled by their dtype's maximum, PGMs by ``maxval``.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from mammo_utils.reader.errors import ImageReadError, ensure_pixel_count
from mammo_utils.reader.intensity import scale_to_unit, to_grayscale
from mammo_utils.reader.metadata import new_metadata, parse_laterality_view

#: JPEG start-of-frame markers (SOF0-SOF15 except DHT, JPG and DAC), which carry the size.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field: TEM and RST0-RST7.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
#: One PGM header field, after any whitespace and ``#`` comments.
_PGM_FIELD = re.compile(rb"(?:\s|#[^\r\n]*)*(\d+)")


def read_raster(
    data: bytes, label: str, fmt: str, *, name: str | None, allow_color: bool
) -> tuple[np.ndarray, dict]:
    """Read a PNG, JPEG or PGM (``fmt``) held in ``data``."""
    if fmt == "pgm":
        pixels, maxval = _decode_pgm(data, label)
    else:
        rows, columns = _png_size(data, label) if fmt == "png" else _jpeg_size(data, label)
        ensure_pixel_count(rows, columns, label)
        pixels = _decode_opencv(data, label, fmt)
        maxval = np.iinfo(pixels.dtype).max
    laterality, view = parse_laterality_view([name])
    metadata = new_metadata(
        fmt,
        laterality=laterality,
        view=view,
        bits_stored=int(maxval).bit_length(),
        rows=pixels.shape[0],
        columns=pixels.shape[1],
        voi_source="full_range",
        photometric_interpretation="RGB" if pixels.ndim == 3 else "MONOCHROME2",
    )
    gray = to_grayscale(
        pixels, channel_order="BGR", allow_color=allow_color, label=label,
        warnings=metadata["warnings"],
    )
    return scale_to_unit(gray, 0.0, float(maxval)), metadata


def check_raster(data: bytes, label: str, fmt: str, *, name: str | None) -> dict:
    """The metadata of a PNG, JPEG or PGM that :func:`read_raster` would go on to decode,
    from its header (a PGM, small and unframed, is decoded); raises
    :class:`ImageReadError` for a header refused before decoding or a truncated PNG."""
    if fmt == "pgm":
        return read_raster(data, label, fmt, name=name, allow_color=True)[1]
    rows, columns = _png_size(data, label) if fmt == "png" else _jpeg_size(data, label)
    ensure_pixel_count(rows, columns, label)
    if fmt == "png" and b"IEND" not in data[-12:]:
        raise ImageReadError(label, "PNG truncated: it does not end with an IEND chunk")
    laterality, view = parse_laterality_view([name])
    return new_metadata(fmt, laterality=laterality, view=view, rows=rows, columns=columns)


def _png_size(data: bytes, label: str) -> tuple[int, int]:
    """(rows, columns) from the IHDR chunk, which a valid PNG has right after its signature."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageReadError(label, "PNG header is truncated or has no IHDR chunk")
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return height, width


def _jpeg_size(data: bytes, label: str) -> tuple[int, int]:
    """(rows, columns) from the first start-of-frame marker, walking the marker segments."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ImageReadError(label, "JPEG header is corrupt (marker expected)")
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        if marker in _JPEG_STANDALONE:
            position += 2
            continue
        if marker in _JPEG_SOF and position + 9 <= len(data):
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            return height, width
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame
            break
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    raise ImageReadError(label, "JPEG header has no frame (SOF) marker: truncated or corrupt")


def _decode_opencv(data: bytes, label: str, fmt: str) -> np.ndarray:
    """Decode a PNG or JPEG keeping its bit depth and channels."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        pixels = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(label, f"{fmt.upper()} could not be decoded ({exc})") from exc
    if pixels is None:
        raise ImageReadError(label, f"{fmt.upper()} could not be decoded: corrupt or truncated")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(label, f"{fmt.upper()} sample type {pixels.dtype} is not supported")
    return pixels


def _decode_pgm(data: bytes, label: str) -> tuple[np.ndarray, int]:
    """Decode a binary (P5) or ASCII (P2) PGM; return the pixels and ``maxval``."""
    fields, position = [], 2
    for _ in range(3):
        match = _PGM_FIELD.match(data, position)
        if match is None:
            raise ImageReadError(label, "PGM header is malformed (width, height, maxval expected)")
        fields.append(int(match.group(1)))
        position = match.end()
    width, height, maxval = fields
    ensure_pixel_count(height, width, label)
    if not 1 <= maxval <= 65535:
        raise ImageReadError(label, f"PGM maxval {maxval} is outside 1..65535")
    count = width * height
    if data[:2] == b"P2":
        samples = data[position:].split()
        if len(samples) < count:
            raise ImageReadError(label, f"PGM has {len(samples)} samples, the header needs {count}")
        try:
            pixels = np.array(samples[:count]).astype(np.int64)
        except (ValueError, OverflowError) as exc:
            raise ImageReadError(label, "PGM sample is not a number") from exc
        if pixels.min() < 0 or pixels.max() > 65535:
            raise ImageReadError(label, "PGM sample is outside 0..65535")
        return pixels.astype(np.uint16).reshape(height, width), maxval
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    start = position + 1  # exactly one whitespace byte ends the header
    needed = count * dtype.itemsize
    present = max(len(data) - start, 0)
    if present < needed:
        raise ImageReadError(
            label, f"PGM pixel data truncated: {present} bytes present, the header needs {needed}"
        )
    pixels = np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return pixels.reshape(height, width), maxval
