"""Breast mask, crop and canonical flip: the geometry shared by preprocessing and inference.

A mammogram holds one breast on a dark background, often with bright burned-in labels
and film markers that are separate blobs. :func:`breast_mask` keeps the largest bright
connected component (computed on a downsampled copy, so a 4500x2800 film costs a few
milliseconds), :func:`prepare_breast` crops the image to that component and mirrors it
so the chest wall is at column 0. :func:`fit_to_shape` then pads the crop to an output
aspect ratio and resizes it once with ``cv2.INTER_AREA``; the returned
:class:`BreastGeometry` maps source coordinates (lesion centres, ROI masks) through
crop, flip, pad and resize.

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
class PreparedBreast:
    """A breast cropped to its mask and mirrored so the chest wall is at column 0.

    ``image`` is the float32 crop, ``box`` the crop ``(x0, y0, x1, y1)`` in source pixels
    (``x1``/``y1`` exclusive, before any flip), ``flipped`` whether the crop was mirrored
    left-right, and ``mask`` the boolean breast mask of the crop (same shape as ``image``,
    flipped with it).
    """

    image: np.ndarray
    box: Box
    flipped: bool
    mask: np.ndarray


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
        crop = _crop(mask.astype(np.uint8), self.box)
        if self.flipped:
            crop = crop[:, ::-1]
        fitted, _, _ = fit_to_shape(crop, self.shape, interpolation=cv2.INTER_NEAREST)
        return fitted > 0


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _downsample(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """A copy whose longest side is at most ``max_side`` and its scale to the source."""
    factor = max(image.shape) / max_side
    if factor <= 1:
        return image, 1.0
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


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


def _small_mask(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Breast mask on a downsampled copy, and the copy's scale (source px per mask px)."""
    if image.ndim != 2:
        raise ValueError(f"breast_mask expects a 2-D grayscale image, got shape {image.shape}")
    small, factor = _downsample(np.asarray(image, dtype=np.float32), max_side)
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


def breast_mask(image: np.ndarray, *, max_side: int = MASK_MAX_SIDE) -> np.ndarray:
    """Boolean mask of the breast in a [0, 1] grayscale image, at the image's size.

    Thresholds a downsampled copy (half its Otsu level), keeps the largest connected
    component and fills its holes, so burned-in labels and film markers (separate bright
    blobs) are dropped. An image with no tissue gives an all-false mask.
    """
    small, _ = _small_mask(image, max_side)
    return cv2.resize(
        small.astype(np.uint8), image.shape[::-1], interpolation=cv2.INTER_NEAREST
    ) > 0


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


def _scale_box(box: Box, factor: float, shape: tuple[int, int]) -> Box:
    """A box from mask pixels to source pixels, widened by one mask pixel of margin."""
    x0, y0, x1, y1 = box
    height, width = shape
    return (
        max(0, int(np.floor((x0 - 1) * factor))),
        max(0, int(np.floor((y0 - 1) * factor))),
        min(width, int(np.ceil((x1 + 1) * factor))),
        min(height, int(np.ceil((y1 + 1) * factor))),
    )


def prepare_breast(image: np.ndarray, *, max_side: int = MASK_MAX_SIDE) -> PreparedBreast:
    """Crop a [0, 1] mammogram to its breast and mirror it to the chest wall at column 0.

    The mask is computed on a copy downsampled to ``max_side``; the crop is taken from
    the full-resolution image (a view, no copy until flipped). Raises ``ValueError`` when
    no breast is found.
    """
    small, factor = _small_mask(image, max_side)
    small_box = crop_box(small)
    flipped = chest_wall_on_right(_crop(small, small_box))
    box = _scale_box(small_box, factor, image.shape)
    crop = _crop(image, box)
    mask = _place_mask(small, small_box, factor, box, crop.shape)
    if flipped:
        crop, mask = crop[:, ::-1], mask[:, ::-1]
    return PreparedBreast(
        image=np.ascontiguousarray(crop, dtype=np.float32), box=box, flipped=flipped,
        mask=np.ascontiguousarray(mask),
    )


def _place_mask(
    small: np.ndarray, small_box: Box, factor: float, box: Box, shape: tuple[int, int]
) -> np.ndarray:
    """The small mask resampled onto the source-pixel crop ``box`` (nearest neighbour)."""
    x0, y0, _, _ = box
    rows = np.clip(((np.arange(shape[0]) + y0 + 0.5) / factor).astype(int), 0, small.shape[0] - 1)
    cols = np.clip(((np.arange(shape[1]) + x0 + 0.5) / factor).astype(int), 0, small.shape[1] - 1)
    return small[np.ix_(rows, cols)]


def fit_to_shape(
    image: np.ndarray, shape: tuple[int, int], *, interpolation: int = cv2.INTER_AREA
) -> tuple[np.ndarray, int, float]:
    """Pad a chest-wall-left crop to the aspect of ``shape`` and resize it to ``shape``.

    Aspect is kept: a crop too narrow gets zero columns on the right (away from the chest
    wall), a crop too wide gets zero rows split evenly above and below. Returns the
    resized image, the rows padded on top and the scale (output px per crop px).
    """
    height, width = image.shape
    out_h, out_w = shape
    canvas_h = max(height, int(np.ceil(width * out_h / out_w)))
    canvas_w = max(width, int(np.ceil(height * out_w / out_h)))
    pad_top = (canvas_h - height) // 2
    canvas = _pad_canvas(image, pad_top, (canvas_h, canvas_w))
    scale = out_h / canvas_h
    return cv2.resize(canvas, (out_w, out_h), interpolation=interpolation), pad_top, scale


def _pad_canvas(image: np.ndarray, pad_top: int, canvas: tuple[int, int]) -> np.ndarray:
    height, width = image.shape
    return cv2.copyMakeBorder(
        np.ascontiguousarray(image), pad_top, canvas[0] - height - pad_top, 0,
        canvas[1] - width, cv2.BORDER_CONSTANT, value=0,
    )


def prepare_and_fit(
    image: np.ndarray, shape: tuple[int, int], *, max_side: int = MASK_MAX_SIDE
) -> tuple[np.ndarray, np.ndarray, BreastGeometry]:
    """Crop, flip and fit a mammogram to ``shape``: the canvas, its breast mask, geometry.

    This is the one path from a source image to a model canvas (the ``image`` task's
    input and the ``roi`` task's working resolution), used by preprocessing and inference.
    """
    prepared = prepare_breast(image, max_side=max_side)
    canvas, pad_top, scale = fit_to_shape(prepared.image, shape)
    mask, _, _ = fit_to_shape(
        prepared.mask.astype(np.uint8), shape, interpolation=cv2.INTER_NEAREST
    )
    geometry = BreastGeometry(
        box=prepared.box, flipped=prepared.flipped, shape=tuple(shape), pad_top=pad_top,
        scale=scale,
    )
    return canvas, mask > 0, geometry


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
