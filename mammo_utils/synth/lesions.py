"""Lesions drawn into a phantom, with the pathology readable from the pixels.

* Masses: BENIGN round or oval with a sharp (circumscribed) edge; MALIGNANT
  irregular with radial spicules; BENIGN_WITHOUT_CALLBACK small, faint and round.
* Calcification clusters: BENIGN a few coarse bright dots; MALIGNANT many fine
  pleomorphic dots packed in a cluster; BENIGN_WITHOUT_CALLBACK a few faint
  punctate dots scattered over a wider area.

Sizes are fractions of the image height (``LESION_SIZE``), so a lesion keeps its
look at every resolution. Each function draws into ``image`` in place, on a
window around the lesion only, and returns the lesion's ROI mask.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Lesion diameter as a fraction of the image height: (min, max) per kind.
LESION_SIZE: dict[str, tuple[float, float]] = {
    "mass": (0.03, 0.08),
    "calcification": (0.04, 0.10),
}

#: Sub-pixel precision used by the OpenCV drawing calls.
_SHIFT = 4
_ONE = 1 << _SHIFT


def lesion_diameter(rng: np.random.Generator, kind: str, pathology: str) -> float:
    """A diameter fraction for one lesion; BENIGN_WITHOUT_CALLBACK masses stay small."""
    low, high = LESION_SIZE[kind]
    if kind == "mass" and pathology == "BENIGN_WITHOUT_CALLBACK":
        high = low + 0.35 * (high - low)
    return float(rng.uniform(low, high))


def _window(
    shape: tuple[int, int], centre: tuple[float, float], half: float
) -> tuple[slice, slice, float, float]:
    """Slices of a square window around ``centre`` clipped to the image, and the
    centre's coordinates inside it."""
    height, width = shape
    cx, cy = centre
    x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
    x1, y1 = min(width, int(cx + half) + 1), min(height, int(cy + half) + 1)
    return slice(y0, y1), slice(x0, x1), cx - x0, cy - y0


def _polar(patch_shape: tuple[int, int], cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(patch_shape[0], dtype=np.float32)[:, None] - cy
    xs = np.arange(patch_shape[1], dtype=np.float32)[None, :] - cx
    return np.hypot(xs, ys), np.arctan2(ys, xs)


def draw_mass(
    rng: np.random.Generator,
    image: np.ndarray,
    centre: tuple[float, float],
    diameter_px: float,
    pathology: str,
) -> np.ndarray:
    """Add a mass of ``pathology`` at ``centre`` (x, y); return its ROI mask."""
    radius = diameter_px / 2.0
    rows, cols, cx, cy = _window(image.shape, centre, 2.6 * radius + 4)
    patch = image[rows, cols]
    dist, theta = _polar(patch.shape, cx, cy)

    if pathology == "MALIGNANT":
        boundary = np.ones_like(theta)
        for k in range(3, 10):
            boundary += rng.uniform(0.03, 0.09) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        edge = 0.12
        contrast = rng.uniform(0.17, 0.23)
    else:
        elongation = rng.uniform(0.65, 1.0) if pathology == "BENIGN" else rng.uniform(0.85, 1.0)
        angle = rng.uniform(0, np.pi)
        boundary = elongation / np.sqrt(
            (elongation * np.cos(theta - angle)) ** 2 + np.sin(theta - angle) ** 2
        )
        edge = 0.03 if pathology == "BENIGN" else 0.12
        contrast = rng.uniform(0.13, 0.18) if pathology == "BENIGN" else rng.uniform(0.08, 0.12)

    rel = dist / (radius * boundary)
    body = 1.0 / (1.0 + np.exp(np.clip((rel - 1.0) / edge, -30.0, 30.0)))
    dome = np.sqrt(np.clip(1.0 - 0.6 * rel**2, 0.2, 1.0))
    added = contrast * body * dome

    if pathology == "MALIGNANT":
        added += _spicules(rng, patch.shape, cx, cy, radius, 0.45 * contrast)
    patch += added.astype(np.float32)
    np.clip(patch, 0.0, 1.0, out=patch)

    mask = np.zeros(image.shape, bool)
    mask[rows, cols] = rel < 1.08
    return mask


def _spicules(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cx: float,
    cy: float,
    radius: float,
    contrast: float,
) -> np.ndarray:
    """Thin radial lines leaving a malignant mass: the spiculated margin."""
    canvas = np.zeros(shape, np.float32)
    width = max(1, round(radius * 0.07))
    for angle in rng.uniform(0, 2 * np.pi, rng.integers(10, 20)):
        length = radius * rng.uniform(1.6, 2.5)
        start = (cx + 0.6 * radius * np.cos(angle), cy + 0.6 * radius * np.sin(angle))
        end = (cx + length * np.cos(angle), cy + length * np.sin(angle))
        cv2.line(
            canvas,
            (round(start[0] * _ONE), round(start[1] * _ONE)),
            (round(end[0] * _ONE), round(end[1] * _ONE)),
            float(rng.uniform(0.6, 1.0)),
            width,
            cv2.LINE_AA,
            _SHIFT,
        )
    sigma = max(0.5, radius * 0.03)
    return contrast * cv2.GaussianBlur(canvas, (0, 0), sigma)


#: Per pathology: dot count range, dot diameter range (fraction of image height),
#: brightness range, spread of the dots (fraction of the cluster radius), and the
#: largest elongation of a dot (1 = round).
_CALC_STYLE: dict[str, dict[str, tuple[float, float]]] = {
    "MALIGNANT": {
        "count": (22, 45),
        "size": (0.0025, 0.0045),
        "level": (0.22, 0.38),
        "spread": (0.35, 0.45),
        "elongation": (1.0, 2.8),
    },
    "BENIGN": {
        "count": (3, 8),
        "size": (0.008, 0.014),
        "level": (0.3, 0.45),
        "spread": (0.5, 0.6),
        "elongation": (1.0, 1.2),
    },
    "BENIGN_WITHOUT_CALLBACK": {
        "count": (3, 7),
        "size": (0.004, 0.006),
        "level": (0.15, 0.22),
        "spread": (0.7, 0.8),
        "elongation": (1.0, 1.1),
    },
}


def draw_calcifications(
    rng: np.random.Generator,
    image: np.ndarray,
    centre: tuple[float, float],
    diameter_px: float,
    pathology: str,
) -> np.ndarray:
    """Add a calcification cluster of ``pathology`` at ``centre`` (x, y); return
    its ROI mask (the convex hull of the dots, widened by a margin)."""
    style = _CALC_STYLE[pathology]
    height = image.shape[0]
    radius = diameter_px / 2.0
    largest_dot = style["size"][1] * height
    rows, cols, cx, cy = _window(image.shape, centre, radius + largest_dot + 4)
    patch = image[rows, cols]

    count = int(rng.integers(style["count"][0], style["count"][1] + 1))
    spread = rng.uniform(*style["spread"]) * radius
    offsets = np.clip(rng.normal(0.0, spread, (count, 2)), -0.9 * radius, 0.9 * radius)
    points = offsets + np.array([cx, cy])

    dots = np.zeros(patch.shape, np.float32)
    for x, y in points:
        size = rng.uniform(*style["size"]) * height
        elongation = rng.uniform(*style["elongation"])
        axes = (max(1, round(size / 2 * _ONE)), max(1, round(size / 2 / elongation * _ONE)))
        cv2.ellipse(
            dots,
            (round(x * _ONE), round(y * _ONE)),
            axes,
            float(rng.uniform(0, 180)),
            0,
            360,
            float(rng.uniform(*style["level"])),
            -1,
            cv2.LINE_AA,
            _SHIFT,
        )
    sigma = max(0.4, 0.0006 * height)
    patch += cv2.GaussianBlur(dots, (0, 0), sigma)
    np.clip(patch, 0.0, 1.0, out=patch)

    hull = cv2.convexHull(np.round(points).astype(np.int32))
    region = np.zeros(patch.shape, np.uint8)
    cv2.fillConvexPoly(region, hull, 1)
    margin = max(3, round(0.15 * radius)) * 2 + 1
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (margin, margin)))
    mask = np.zeros(image.shape, bool)
    mask[rows, cols] = region.astype(bool)
    return mask


def place_lesion(
    rng: np.random.Generator,
    allowed: np.ndarray,
    diameter_px: float,
    taken: np.ndarray,
) -> tuple[float, float]:
    """A centre (x, y) inside ``allowed`` whose lesion stays clear of ``taken``
    (the masks of lesions already drawn) and of the image border."""
    height, width = allowed.shape
    margin = int(1.3 * diameter_px) + 2
    ys, xs = np.nonzero(allowed[margin : height - margin, margin : width - margin])
    if len(xs) == 0:
        raise ValueError(f"no room for a {diameter_px:.0f}-pixel lesion in this breast")
    for _ in range(200):
        i = int(rng.integers(len(xs)))
        x, y = xs[i] + margin, ys[i] + margin
        r = int(diameter_px)
        if not taken[max(0, y - r) : y + r, max(0, x - r) : x + r].any():
            return float(x), float(y)
    raise ValueError(f"no free place for a {diameter_px:.0f}-pixel lesion in this breast")
