"""The whole-breast patch scan: a patch model applied to every breast patch of a canvas.

:func:`scan_patches` cuts overlapping square patches from a canvas (a mammogram fitted
to a patch model's working resolution), skips those lying mostly on background, and
classifies the rest in batches through any ``forward`` function. It knows nothing of
Keras or model cards, so inference and an image-level evaluation of patch models run
the very same scan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

#: ``forward(batch)``: ``float32 [n, size, size, 1]`` in [0, 1] -> ``[n, classes]``.
Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PatchScan:
    """The result of scanning a canvas.

    Attributes
    ----------
    probabilities : ndarray, shape (patches, classes)
        One probability vector per scanned patch, in scan order (rows, then columns).
    corners : ndarray of int, shape (patches, 2)
        Each patch's top-left corner as ``(y, x)`` canvas pixels.
    size : int
        Patch side in canvas pixels.
    shape : tuple of int
        ``(height, width)`` of the canvas.
    used_all : bool
        True when no patch met the tissue requirement, so every patch was scanned.
    """

    probabilities: np.ndarray
    corners: np.ndarray
    size: int
    shape: tuple[int, int]
    used_all: bool = False

    @cached_property
    def class_maps(self) -> np.ndarray:
        """``[height, width, classes]``: per pixel, the class probabilities averaged over
        the scanned patches covering it (zero where none lies)."""
        size = self.size
        height, width = max(self.shape[0], size), max(self.shape[1], size)
        sums = np.zeros((height, width, self.probabilities.shape[1]), dtype=np.float64)
        counts = np.zeros((height, width, 1), dtype=np.float64)
        for (y, x), vector in zip(self.corners, self.probabilities, strict=True):
            sums[y : y + size, x : x + size] += vector
            counts[y : y + size, x : x + size] += 1
        maps = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
        return maps[: self.shape[0], : self.shape[1]]


#: Most patches one image's scan may cut unless the caller raises the limit: the default
#: stride cuts about a hundred; a stride of one pixel would cut hundreds of thousands and
#: run for many minutes through gigabytes of memory.
MAX_SCAN_PATCHES = 10_000


def scan_patch_count(shape: tuple[int, int], size: int, stride: int) -> int:
    """Patches :func:`scan_patches` cuts from a canvas of ``shape`` (before tissue skipping)."""
    height, width = (max(side, size) for side in shape)
    return len(patch_corners(height, size, stride)) * len(patch_corners(width, size, stride))


def patch_corners(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of ``size`` windows every ``stride`` pixels, the last flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def scan_patches(
    canvas: np.ndarray,
    forward: Forward,
    *,
    size: int,
    stride: int,
    mask: np.ndarray | None = None,
    min_tissue: float = 0.5,
    batch_size: int = 64,
) -> PatchScan:
    """Classify the overlapping ``size`` x ``size`` patches of ``canvas``.

    Parameters
    ----------
    canvas : ndarray, shape (height, width)
        The image at the patch model's scale, in [0, 1]. A canvas smaller than a patch
        is zero-padded.
    forward : callable
        ``float32 [n, size, size, 1] -> [n, classes]`` class probabilities; called on at
        most ``batch_size`` patches at a time.
    size, stride : int
        Patch side and the step between patches, in canvas pixels.
    mask : ndarray of bool, optional
        Breast tissue. A patch is scanned when at least ``min_tissue`` of its pixels lie
        on it; when none does, every patch is (``used_all``). Without a mask, every
        patch is scanned.
    """
    height, width = canvas.shape
    padded_h, padded_w = max(height, size), max(width, size)
    padded = _pad_to(canvas, padded_h, padded_w)
    corners = np.array(
        [(y, x) for y in patch_corners(padded_h, size, stride)
         for x in patch_corners(padded_w, size, stride)]
    )
    used_all = False
    if mask is not None:
        keep = _tissue_fraction(mask, corners, size, (padded_h, padded_w)) >= min_tissue
        used_all = not keep.any()
        if not used_all:
            corners = corners[keep]
    outputs = []
    for start in range(0, len(corners), batch_size):
        batch = np.stack([padded[y : y + size, x : x + size]
                          for y, x in corners[start : start + batch_size]])
        outputs.append(np.asarray(forward(batch[..., np.newaxis].astype(np.float32))))
    return PatchScan(
        probabilities=np.concatenate(outputs).astype(np.float64), corners=corners,
        size=size, shape=(height, width), used_all=used_all,
    )


def _tissue_fraction(
    mask: np.ndarray, corners: np.ndarray, size: int, shape: tuple[int, int]
) -> np.ndarray:
    """Fraction of each patch's pixels on ``mask``, from one integral image."""
    tissue = cv2.integral(_pad_to(mask.astype(np.uint8), *shape))
    ys, xs = corners[:, 0], corners[:, 1]
    covered = (
        tissue[ys + size, xs + size] - tissue[ys, xs + size]
        - tissue[ys + size, xs] + tissue[ys, xs]
    )
    return covered / float(size * size)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` zero-padded at the bottom and right to ``height`` x ``width``."""
    if image.shape == (height, width):
        return image
    out = np.zeros((height, width), dtype=image.dtype)
    out[: image.shape[0], : image.shape[1]] = image
    return out
