"""A numpy image to a float32 [0, 1] image, through the same steps as a decoded file.

An array has no header to say where its white point is, so the rule is stated here:
integer samples are scaled by their type's maximum (as a PNG's are), floating samples
already in [0, 1] are kept, and any other floating range is stretched from its own
minimum and maximum onto [0, 1] with a warning. Channels-last colour (RGB, numpy's
convention) becomes grayscale by the reader's own conversion, and every scaling is
:func:`~mammo_utils.reader.intensity.scale_to_unit`, the one the file readers use.
"""

from __future__ import annotations

import numpy as np

from mammo_utils.reader.errors import ImageReadError, ensure_pixel_count
from mammo_utils.reader.intensity import scale_to_unit, to_grayscale
from mammo_utils.reader.metadata import new_metadata, parse_laterality_view

#: numpy dtype kinds that hold pixel values: boolean, signed and unsigned integer, float.
_PIXEL_KINDS = "biuf"


def read_array(
    array: np.ndarray, label: str, *, name: str | None, allow_color: bool
) -> tuple[np.ndarray, dict]:
    """Read an ``(rows, columns)`` or ``(rows, columns, channels)`` array as an image.

    ``label`` names the array in errors; ``name``, when given, is parsed for laterality
    and view like an upload's file name. The result never shares memory with ``array``.
    """
    if array.dtype.kind not in _PIXEL_KINDS:
        raise ImageReadError(label, f"an array of {array.dtype} values is not an image")
    colour = array.ndim == 3 and 1 <= array.shape[2] <= 4
    if not (array.ndim == 2 or colour) or min(array.shape[:2]) < 2:
        raise ImageReadError(
            label, f"expected a 2-D grayscale or colour image, got shape {array.shape}"
        )
    ensure_pixel_count(array.shape[0], array.shape[1], label)
    laterality, view = parse_laterality_view([name])
    metadata = new_metadata(
        "array", laterality=laterality, view=view, rows=array.shape[0], columns=array.shape[1]
    )
    warnings = metadata["warnings"]
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageReadError(label, "the image holds NaN or infinite values")
    gray = to_grayscale(
        array, channel_order="RGB", allow_color=allow_color, label=label, warnings=warnings
    )
    if array.dtype.kind in "iu":
        return scale_to_unit(gray, 0.0, float(np.iinfo(array.dtype).max)), metadata
    low, high = float(gray.min()), float(gray.max())
    if low >= 0.0 and high <= 1.0:
        return scale_to_unit(gray, 0.0, 1.0), metadata
    warnings.append(f"values in [{low:g}, {high:g}] were stretched to [0, 1]")
    return scale_to_unit(gray, low, high), metadata
