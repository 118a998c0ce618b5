"""Synthetic breast phantoms: outline, skin line, fibroglandular texture, pectoral
muscle and a burned-in view label.

Images are float32 in [0, 1] with dense tissue bright, drawn in the LEFT-breast
orientation of CBIS-DDSM (chest wall at column 0); RIGHT breasts are mirrored, as
in the real collection. The texture is a power-law (1/f^beta) random field, the
spectrum measured for mammographic parenchyma, synthesized on a reduced grid and
upsampled so that a full-size (about 4000x3000) image stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: Long side of the grid the texture is synthesized on before upsampling.
_TEXTURE_GRID = 512
#: Intensity of the burned-in label, brighter than any tissue.
_LABEL_LEVEL = 0.97


@dataclass
class Phantom:
    """One drawn breast: the image, the breast region and the label's bounding box.

    ``label_box`` is ``(x0, y0, x1, y1)`` in pixels, exclusive ends.
    """

    image: np.ndarray
    breast: np.ndarray
    tissue_depth: np.ndarray
    pectoral: np.ndarray
    label_box: tuple[int, int, int, int]


def power_law_noise(
    rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0
) -> np.ndarray:
    """Zero-mean, unit-variance random field whose power spectrum falls as 1/f^beta."""
    height, width = shape
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freq = np.hypot(fx, fy)
    freq[0, 0] = 1.0 / max(height, width)
    amplitude = freq ** (-beta / 2.0)
    spectrum = amplitude * (rng.standard_normal(freq.shape) + 1j * rng.standard_normal(freq.shape))
    field = np.fft.irfft2(spectrum, s=shape)
    return ((field - field.mean()) / field.std()).astype(np.float32)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], beta: float = 3.0) -> np.ndarray:
    """A power-law field synthesized on a reduced grid and upsampled to ``shape``."""
    height, width = shape
    scale = min(1.0, _TEXTURE_GRID / max(height, width))
    grid = (max(8, round(height * scale)), max(8, round(width * scale)))
    field = power_law_noise(rng, grid, beta)
    return cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)


def _outline(
    rng: np.random.Generator, shape: tuple[int, int], view: str
) -> tuple[np.ndarray, np.ndarray]:
    """Breast region and normalized depth (1 at the chest wall centre, 0 at the skin).

    The outline is a half-ellipse from the chest wall whose radius is modulated by a
    few low harmonics of the polar angle, so every breast has its own shape.
    """
    height, width = shape
    semi_x = rng.uniform(0.52, 0.72) * width
    if view == "MLO":
        centre_y = rng.uniform(0.52, 0.6) * height
        semi_y = rng.uniform(0.5, 0.56) * height
    else:
        centre_y = rng.uniform(0.46, 0.54) * height
        semi_y = rng.uniform(0.38, 0.45) * height
    ys = (np.arange(height, dtype=np.float32)[:, None] - centre_y) / semi_y
    xs = np.arange(width, dtype=np.float32)[None, :] / semi_x
    theta = np.arctan2(ys, xs)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        wobble += rng.uniform(-0.05, 0.05) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.sqrt(xs**2 + ys**2) / wobble
    breast = radius < 1.0
    return breast, np.clip(1.0 - radius, 0.0, 1.0)


def _pectoral(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """The pectoral muscle of an MLO view: a slightly curved triangle at the top of
    the chest wall."""
    height, width = shape
    reach_x = rng.uniform(0.25, 0.4) * width
    reach_y = rng.uniform(0.35, 0.55) * height
    ys = np.arange(height, dtype=np.float32)[:, None] / reach_y
    xs = np.arange(width, dtype=np.float32)[None, :] / reach_x
    bulge = rng.uniform(0.85, 1.0)
    return (xs**bulge + ys**bulge) < 1.0


def _burn_label(image: np.ndarray, breast: np.ndarray, text: str) -> tuple[int, int, int, int]:
    """Burn ``text`` into the corner farthest from the chest wall that the breast
    does not touch, and return its box. Scanners put such markers outside the
    breast, where a breast mask (largest bright component) drops them."""
    height, width = image.shape
    font = cv2.FONT_HERSHEY_SIMPLEX
    scale = height / 700.0
    thickness = max(1, round(height / 300))
    (text_w, text_h), baseline = cv2.getTextSize(text, font, scale, thickness)
    margin = max(4, height // 60)
    box_h = text_h + baseline + thickness
    chest_left = breast[:, : width // 2].sum() >= breast[:, width // 2 :].sum()
    x0 = width - margin - text_w if chest_left else margin
    for y0 in (margin, height - margin - box_h):
        box = (x0, y0, x0 + text_w + thickness, y0 + box_h)
        if not breast[box[1] : box[3], box[0] : box[2]].any():
            break
    else:
        raise ValueError(
            f"no breast-free corner for the label {text!r} in a {height}x{width} image"
        )
    canvas = np.zeros(image.shape, np.uint8)
    cv2.putText(canvas, text, (x0, y0 + text_h), font, scale, 255, thickness, cv2.LINE_AA)
    ink = canvas.astype(np.float32) / 255.0
    image[:] = image * (1.0 - ink) + _LABEL_LEVEL * ink
    return box


def draw_breast(
    rng: np.random.Generator,
    shape: tuple[int, int],
    *,
    laterality: str,
    view: str,
    density: int,
) -> Phantom:
    """Draw one breast without lesions.

    ``density`` is the BI-RADS density category (1 fatty to 4 extremely dense): it
    shifts how much of the texture field becomes bright fibroglandular tissue.
    """
    breast, depth = _outline(rng, shape, view)
    pectoral = _pectoral(rng, shape) if view == "MLO" else np.zeros(shape, bool)
    breast |= pectoral

    texture = smooth_field(rng, shape, beta=3.0)
    fine = smooth_field(rng, shape, beta=2.2)
    gland_offset = {1: -1.1, 2: -0.5, 3: 0.1, 4: 0.7}[density]
    gland = 0.5 + 0.5 * np.tanh(0.9 * texture + 0.35 * fine + gland_offset + 1.2 * (depth - 0.35))
    thickness = np.minimum(1.0, 2.2 * np.sqrt(depth))
    tissue = (0.2 + 0.34 * gland + 0.02 * fine) * (0.4 + 0.6 * thickness)

    skin_band = 0.005 * shape[0] / (0.6 * shape[1])
    skin = (depth > 0) & (depth < skin_band)
    tissue = np.where(skin, tissue + 0.1, tissue)
    muscle = 0.62 + 0.04 * texture
    tissue = np.where(pectoral, np.maximum(tissue, muscle), tissue)

    background = 0.03 + 0.01 * smooth_field(rng, shape, beta=2.0)
    image = np.where(breast, tissue, background).astype(np.float32)
    image += rng.normal(0.0, 0.006, shape).astype(np.float32)

    if laterality == "RIGHT":
        image, breast = image[:, ::-1].copy(), breast[:, ::-1].copy()
        depth, pectoral = depth[:, ::-1].copy(), pectoral[:, ::-1].copy()
    label = f"{laterality[0]} {view}"
    box = _burn_label(image, breast, label)
    np.clip(image, 0.0, 1.0, out=image)
    return Phantom(image=image, breast=breast, tissue_depth=depth, pectoral=pectoral, label_box=box)
