"""Pixel arithmetic shared by the DICOM and raster readers, all in float32.

Mammograms are 10 to 30 megapixels, so every step here makes at most one float32
array and then works in place: no float64 intermediates.
"""

from __future__ import annotations

import numpy as np

from mammo_utils.reader.errors import ImageReadError

#: ITU-R BT.601 luma weights, in R, G, B order.
_LUMA_RGB = (0.299, 0.587, 0.114)


def scale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``[low, high]`` linearly onto ``[0, 1]`` as a new float32 array, clipping outside.

    A degenerate range (``high <= low``) gives a black image rather than a division by zero.
    """
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    scale = np.float32(1.0 / (high - low))
    if low == 0:  # the common unsigned case: one pass instead of two
        out = np.multiply(values, scale, dtype=np.float32)
    else:
        out = np.subtract(values, np.float32(low), dtype=np.float32)
        out *= scale
    return np.clip(out, 0.0, 1.0, out=out)


def window_to_unit(
    values: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Apply a DICOM VOI window (PS3.3 C.11.2.1.2) straight onto ``[0, 1]`` in float32.

    ``LINEAR`` and ``LINEAR_EXACT`` follow the standard's formulas with output range
    [0, 1]; ``SIGMOID`` uses the logistic curve. pydicom's ``apply_windowing`` computes
    the same curves but scaled to the stored-value range in float64; mapping directly
    to [0, 1] saves a full-size float64 copy and a second rescaling.
    """
    out = values.astype(np.float32)
    if function == "SIGMOID":
        out -= np.float32(center)
        out *= np.float32(-4.0 / width)
        with np.errstate(over="ignore"):
            np.exp(out, out=out)
        out += np.float32(1.0)
        return np.reciprocal(out, out=out)
    if function == "LINEAR_EXACT":
        out -= np.float32(center)
        out *= np.float32(1.0 / width)
    else:
        out -= np.float32(center - 0.5)
        out *= np.float32(1.0 / max(width - 1.0, 1e-6))
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def to_grayscale(
    pixels: np.ndarray,
    *,
    channel_order: str,
    allow_color: bool,
    label: str,
    warnings: list[str],
) -> np.ndarray:
    """Reduce a channels-last image to one channel.

    An alpha channel is dropped. Gray stored as colour (all channels equal, common in
    exported JPEGs) becomes its first channel unchanged, without a warning. A true
    colour image is converted to BT.601 luma in float32 with a warning, or refused
    when ``allow_color`` is false.

    Parameters
    ----------
    pixels : ndarray
        ``(rows, columns)`` or ``(rows, columns, channels)``.
    channel_order : {"RGB", "BGR"}
        Order of the colour channels (pydicom gives RGB, OpenCV BGR).
    """
    if pixels.ndim == 2:
        return pixels
    channels = pixels.shape[2]
    if channels in (2, 4):
        pixels = pixels[..., : channels - 1]
        warnings.append("alpha channel ignored")
    if pixels.shape[2] == 1 or all(
        np.array_equal(pixels[..., 0], pixels[..., c]) for c in range(1, pixels.shape[2])
    ):
        return pixels[..., 0]
    if not allow_color:
        raise ImageReadError(label, "colour image refused (allow_color=False)")
    weights = _LUMA_RGB if channel_order == "RGB" else _LUMA_RGB[::-1]
    gray = np.multiply(pixels[..., 0], np.float32(weights[0]), dtype=np.float32)
    for channel in (1, 2):
        gray += np.multiply(pixels[..., channel], np.float32(weights[channel]), dtype=np.float32)
    warnings.append(f"colour image ({channel_order}) converted to grayscale (BT.601 luma)")
    return gray
