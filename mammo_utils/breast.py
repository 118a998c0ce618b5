"""Breast mask, crop and canonical flip: the geometry shared by preprocessing and inference.

A mammogram holds one breast on a dark background, often with bright burned-in labels
and film markers that are separate blobs. :func:`breast_mask` keeps the largest bright
connected component (computed on a block-averaged copy, so a 4500x2800 film costs a few
milliseconds). :func:`prepare_and_fit` crops the image to that component, mirrors it so
the chest wall is at column 0, pads it to an output aspect ratio and area-resizes it
(:func:`fit_to_shape`), all without one full-resolution copy: the crop stays a view of
the source, is shrunk before it is mirrored or padded, and its canvas mask is sampled
from the small mask. The returned :class:`BreastGeometry` maps source coordinates
(lesion centres, ROI masks) through crop, flip, pad and resize.

Every function here is pure: it reads its arguments and returns new arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Longest side of the downsampled copy the mask is computed on.
MASK_MAX_SIDE = 512

#: Side of the opening kernel, in mask pixels: wider than a film edge line at that scale.
OPEN_KERNEL = 7

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class BreastGeometry:
    """How a source image was turned into an output canvas: crop, flip, pad, resize.

    ``pad_top`` rows were added above the crop (``pad_bottom`` below) and columns on the
    right, away from the chest wall, to reach the output aspect ratio; then every pixel
    was scaled by ``scale`` (output pixels per source pixel) to ``shape`` ``(height, width)``.
    """

    box: Box
    flipped: bool
    shape: tuple[int, int]
    pad_top: int
    scale: float

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 2)`` source ``(x, y)`` pixel coordinates to output pixel coordinates.

        Pixel centres map to pixel centres, so the centroid of a source mask lands on the
        centroid of the same mask drawn on the output canvas.
        """
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x0, y0, x1, _ = self.box
        u = points[:, 0] + 0.5 - x0
        if self.flipped:
            u = (x1 - x0) - u
        v = points[:, 1] + 0.5 - y0 + self.pad_top
        return np.stack([u * self.scale - 0.5, v * self.scale - 0.5], axis=1)

    def map_length(self, length: float) -> float:
        """Map a source length in pixels (e.g. a MIAS radius) to output pixels."""
        return float(length) * self.scale

    def map_mask(self, mask: np.ndarray) -> np.ndarray:
        """Map a boolean mask drawn on the source image onto the output canvas."""
        crop = _crop(mask, self.box).astype(np.uint8)
        fitted, _, _ = fit_to_shape(
            crop, self.shape, interpolation=cv2.INTER_NEAREST_EXACT, mirror=self.flipped
        )
        return fitted > 0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _shrink_by(image: np.ndarray, factor: int, *, keep_right: bool = False) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks (OpenCV's fast integer ``INTER_AREA`` path).

    The last ``rows % factor`` rows and ``columns % factor`` columns are dropped first,
    on the right, or on the left when ``keep_right`` (so a chest wall on the right stays).
    The input may be a strided view: nothing is copied at full resolution.
    """
    height, width = image.shape
    rows, cols = height // factor * factor, width // factor * factor
    trimmed = image[:rows, width - cols :] if keep_right else image[:rows, :cols]
    return cv2.resize(trimmed, (cols // factor, rows // factor), interpolation=cv2.INTER_AREA)


def _largest_component_filled(binary: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of ``binary`` with its holes filled."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros(binary.shape, dtype=bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, color=1, thickness=cv2.FILLED)
    return filled > 0


def _small_mask(image: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Breast mask on a block-averaged copy, and the block size (source px per mask px).

    The block size is the smallest integer that brings the longest side to ``max_side``
    or less; an integer factor lets OpenCV average blocks without interpolation weights.
    """
    if image.ndim != 2:
        raise ValueError(f"breast_mask expects a 2-D grayscale image, got shape {image.shape}")
    factor = max(1, -(-max(image.shape) // max_side))
    small = np.asarray(image, dtype=np.float32)
    if factor > 1:
        small = _shrink_by(small, factor)
    small8 = cv2.GaussianBlur(_to_uint8(small), (5, 5), 0)
    threshold, _ = cv2.threshold(small8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    # Otsu splits background from tissue; halving it keeps the faint skin line and fat,
    # while a floor of 8/255 stays above scanner noise on an empty background.
    level = max(8.0, 0.5 * threshold)
    binary = (small8 > level).astype(np.uint8)
    # Opening cuts thin bright film edges and scanner lines that touch the breast.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (OPEN_KERNEL, OPEN_KERNEL))
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    return _largest_component_filled(binary), factor


def _sample_mask(small: np.ndarray, factor: int, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The small mask at source positions ``ys`` x ``xs`` (continuous pixel coordinates).

    Nearest neighbour; positions past the small mask's edge (the rows and columns the
    block averaging dropped) take its last row or column.
    """
    rows = np.clip((ys / factor).astype(np.intp), 0, small.shape[0] - 1)
    cols = np.clip((xs / factor).astype(np.intp), 0, small.shape[1] - 1)
    # Two takes along one axis each: several times faster than one np.ix_ gather.
    return small.take(rows, axis=0).take(cols, axis=1)


def breast_mask(image: np.ndarray, *, max_side: int = MASK_MAX_SIDE) -> np.ndarray:
    """Boolean mask of the breast in a [0, 1] grayscale image, at the image's size.

    Thresholds a downsampled copy (half its Otsu level), keeps the largest connected
    component and fills its holes, so burned-in labels and film markers (separate bright
    blobs) are dropped. An image with no tissue gives an all-false mask.
    """
    small, factor = _small_mask(image, max_side)
    height, width = image.shape
    return _sample_mask(small, factor, np.arange(height) + 0.5, np.arange(width) + 0.5)


def crop_box(mask: np.ndarray) -> Box:
    """Bounding box ``(x0, y0, x1, y1)`` of a boolean mask (exclusive ends).

    Raises ``ValueError`` for an empty mask: there is no breast to crop.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("no breast tissue found: the breast mask is empty")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def chest_wall_on_right(mask: np.ndarray) -> bool:
    """Whether the chest wall of a cropped breast mask is on the right.

    The breast is widest at the chest wall and tapers towards the nipple, so the half
    of the crop holding more breast area is the chest-wall side.
    """
    half = mask.shape[1] // 2
    left = int(np.count_nonzero(mask[:, :half]))
    right = int(np.count_nonzero(mask[:, mask.shape[1] - half :]))
    return right > left


def _crop(image: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


def _scale_box(box: Box, factor: int, shape: tuple[int, int]) -> Box:
    """A box from mask pixels to source pixels, widened by one mask pixel of margin."""
    x0, y0, x1, y1 = box
    height, width = shape
    return (
        max(0, (x0 - 1) * factor),
        max(0, (y0 - 1) * factor),
        min(width, (x1 + 1) * factor),
        min(height, (y1 + 1) * factor),
    )


@dataclass(frozen=True)
class _Located:
    """Where the breast is: the small mask, its block size, the source box, the side."""

    small: np.ndarray
    factor: int
    box: Box
    flipped: bool


def _locate(image: np.ndarray, max_side: int) -> _Located:
    small, factor = _small_mask(image, max_side)
    small_box = crop_box(small)
    return _Located(
        small=small, factor=factor, box=_scale_box(small_box, factor, image.shape),
        flipped=chest_wall_on_right(_crop(small, small_box)),
    )


def _layout(size: tuple[int, int], shape: tuple[int, int]) -> tuple[int, float]:
    """Rows to pad above a ``size`` crop to reach the aspect of ``shape``, and the scale.

    A crop too narrow is padded on the right only (away from the chest wall), one too
    wide above and below evenly; the scale is output pixels per crop pixel.
    """
    height, width = size
    out_h, out_w = shape
    canvas_h = max(height, int(np.ceil(width * out_h / out_w)))
    return (canvas_h - height) // 2, out_h / canvas_h


def _resize(image: np.ndarray, scale: float, interpolation: int, mirror: bool) -> np.ndarray:
    """``image`` scaled by ``scale``; a large ``INTER_AREA`` reduction goes in two steps.

    Averaging ``int(1 / scale)`` pixel blocks first (OpenCV's fast integer path) and then
    ``INTER_AREA`` by less than 2 is an area average too, within about 1 % of a single
    ``INTER_AREA``, and several times faster on a full-size mammogram. At most
    ``int(1 / scale) - 1`` source pixels, under one output pixel, are dropped at the
    bottom and at the side away from the chest wall.
    """
    height, width = image.shape
    block = int(1.0 / scale) if interpolation == cv2.INTER_AREA else 1
    if block >= 2:
        image = _shrink_by(image, block, keep_right=mirror)
        height, width = height // block * block, width // block * block
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def fit_to_shape(
    image: np.ndarray,
    shape: tuple[int, int],
    *,
    interpolation: int = cv2.INTER_AREA,
    mirror: bool = False,
) -> tuple[np.ndarray, int, float]:
    """Pad a chest-wall-left crop to the aspect of ``shape`` and resize it to ``shape``.

    Aspect is kept: a crop too narrow gets zero columns on the right (away from the chest
    wall), a crop too wide gets zero rows split evenly above and below. ``mirror`` takes a
    crop whose chest wall is on the right and mirrors it while fitting, which costs
    nothing at full resolution. The crop may be a strided view; only the output is
    allocated. Returns the fitted image, the rows padded on top (crop pixels) and the
    scale (output px per crop px).
    """
    out_h, out_w = shape
    pad_top, scale = _layout(image.shape, shape)
    resized = _resize(image, scale, interpolation, mirror)
    if mirror:
        resized = cv2.flip(resized, 1)
    rows, cols = min(resized.shape[0], out_h), min(resized.shape[1], out_w)
    top = min(round(pad_top * scale), out_h - rows)
    canvas = np.zeros(shape, dtype=resized.dtype)
    canvas[top : top + rows, :cols] = resized[:rows, :cols]
    return canvas, pad_top, scale


def _fitted_mask(located: _Located, geometry: BreastGeometry) -> np.ndarray:
    """The breast mask on the output canvas, sampled straight from the small mask.

    Each output pixel centre is mapped back through resize, pad and flip to source
    coordinates (the inverse of :meth:`BreastGeometry.map_points`); padding is False.
    """
    x0, y0, x1, y1 = geometry.box
    out_h, out_w = geometry.shape
    down = (np.arange(out_h) + 0.5) / geometry.scale - geometry.pad_top
    across = (np.arange(out_w) + 0.5) / geometry.scale
    xs = x1 - across if geometry.flipped else x0 + across
    mask = _sample_mask(located.small, located.factor, y0 + down, xs)
    mask &= ((down >= 0) & (down < y1 - y0))[:, None]
    mask &= (across < x1 - x0)[None, :]
    return mask


def prepare_and_fit(
    image: np.ndarray, shape: tuple[int, int], *, max_side: int = MASK_MAX_SIDE
) -> tuple[np.ndarray, np.ndarray, BreastGeometry]:
    """Crop, flip and fit a mammogram to ``shape``: the canvas, its breast mask, geometry.

    This is the one path from a source image to a model canvas (the ``image`` task's
    input and the ``roi`` task's working resolution), used by preprocessing and inference.
    Nothing is copied at full resolution: the crop is a view, it is block-averaged and
    resized before it is mirrored, and the canvas mask comes from the small mask.
    """
    located = _locate(image, max_side)
    canvas, pad_top, scale = fit_to_shape(
        _crop(image, located.box), shape, mirror=located.flipped
    )
    geometry = BreastGeometry(
        box=located.box, flipped=located.flipped, shape=tuple(shape), pad_top=pad_top,
        scale=scale,
    )
    return canvas, _fitted_mask(located, geometry), geometry


def extract_patch(image: np.ndarray, center: tuple[float, float], size: int) -> np.ndarray:
    """A ``size`` x ``size`` patch centred on ``(x, y)``, zero-padded past the borders."""
    cx, cy = (int(round(value)) for value in center)
    x0, y0 = cx - size // 2, cy - size // 2
    patch = np.zeros((size, size), dtype=image.dtype)
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(image.shape[1], x0 + size), min(image.shape[0], y0 + size)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return patch
