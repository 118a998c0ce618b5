"""The ``roi`` task: patches around each abnormality and NORMAL patches from the same breast.

The breast crop is fitted to one working resolution, so every patch has the same
physical scale. A lesion's centre is its ROI-mask centroid (CBIS-DDSM) or its listed
centre (MIAS), mapped through crop, flip, pad and resize; each of its patches is shifted
by its own seeded jitter. NORMAL patches are drawn, seeded, among windows that are mostly breast and
touch no abnormality of the image.

A lesion that yields no patch is counted under one reason (:data:`NO_LOCATION`,
:data:`UNUSABLE_MASK`, :data:`UNKNOWN_PATHOLOGY`) and rejected with it. When any lesion of
an image cannot be located (the lesion could be anywhere, e.g. a mini-MIAS calcification
listed without a centre), no NORMAL patch is cut from that image either.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from mammo_utils.breast import BreastGeometry, extract_patch, prepare_and_fit
from mammo_utils.classes import normalize_label
from mammo_utils.preprocess.job import ImageJob, TaskOutput, safe_name, to_uint16
from mammo_utils.reader import read_image

#: Margin (working pixels) added around each abnormality before drawing NORMAL patches,
#: so resampling of the mask cannot let a NORMAL patch graze a lesion edge.
LESION_MARGIN = 2

#: Why a lesion yields no patch: the reasons of the per-reason lesion counts.
NO_LOCATION = "lesion without location"
UNUSABLE_MASK = "unusable ROI mask"
UNKNOWN_PATHOLOGY = "unknown pathology"
#: Reasons that leave a lesion's place unknown, so that no NORMAL patch is safe.
UNLOCATED = (NO_LOCATION, UNUSABLE_MASK)


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value)) and (
        str(value).strip() != ""
    )


def has_location(lesion: dict) -> bool:
    """Whether a lesion row says where the lesion is: an ROI mask, or a centre."""
    return _present(lesion.get("mask_path")) or (
        _present(lesion.get("center_x")) and _present(lesion.get("center_y"))
    )


def read_lesion_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """A lesion's binary ROI mask (``> 0.5``), resampled to the source ``shape`` if needed.

    Some CBIS-DDSM masks differ from their full image by a few rows; the mask is then
    stretched to the image, which keeps the lesion where the radiologist drew it.
    """
    image, _ = read_image(path)
    mask = image > 0.5
    if mask.shape != tuple(shape):
        resized = cv2.resize(mask.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
        mask = resized > 0
    return mask


def locate_lesion(
    lesion: dict, source_shape: tuple[int, int], geometry: BreastGeometry, patch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(x, y)`` and boolean region of one abnormality at working resolution.

    Uses the ROI mask when ``mask_path`` is given, else ``center_x``/``center_y`` and
    ``radius`` (a missing radius counts as half a patch). Raises ``ValueError`` when the
    mask is empty or the row has neither a mask nor a centre, and the reader's
    ``ImageReadError`` when the mask cannot be read.
    """
    if _present(lesion.get("mask_path")):
        mask = read_lesion_mask(str(lesion["mask_path"]), source_shape)
        moments = cv2.moments(mask.astype(np.uint8), binaryImage=True)
        if moments["m00"] == 0:
            raise ValueError(f"{lesion['mask_path']}: the ROI mask is empty")
        centroid = (moments["m10"] / moments["m00"], moments["m01"] / moments["m00"])
        return geometry.map_points(np.array([centroid]))[0], geometry.map_mask(mask)
    if _present(lesion.get("center_x")) and _present(lesion.get("center_y")):
        source_centre = np.array([[float(lesion["center_x"]), float(lesion["center_y"])]])
        centre = geometry.map_points(source_centre)[0]
        radius = (
            geometry.map_length(float(lesion["radius"])) if _present(lesion.get("radius"))
            else patch_size / 2
        )
        region = np.zeros(geometry.shape, dtype=np.uint8)
        cv2.circle(region, tuple(int(round(v)) for v in centre), max(1, round(radius)), 1, -1)
        return centre, region > 0
    raise ValueError("the abnormality has neither an ROI mask nor a centre")


def normal_centres(
    breast: np.ndarray,
    lesions: np.ndarray,
    size: int,
    count: int,
    rng: np.random.Generator,
    min_breast_fraction: float,
) -> list[tuple[int, int]]:
    """Up to ``count`` patch centres ``(x, y)`` whose ``size`` window lies inside the
    canvas, is at least ``min_breast_fraction`` breast and holds no lesion pixel.

    Every valid window is scored at once with integral images, then ``count`` are drawn
    without replacement; fewer come back when fewer windows qualify.
    """
    height, width = breast.shape
    if count == 0 or height < size or width < size:
        return []

    def window_sums(mask: np.ndarray) -> np.ndarray:
        table = cv2.integral(mask.astype(np.uint8))
        inner, outer = table[:-size], table[size:]
        return outer[:, size:] - inner[:, size:] - outer[:, :-size] + inner[:, :-size]

    valid = (window_sums(breast) >= min_breast_fraction * size * size) & (
        window_sums(lesions) == 0
    )
    candidates = np.flatnonzero(valid)
    if candidates.size == 0:
        return []
    chosen = rng.choice(candidates, size=min(count, candidates.size), replace=False)
    rows, cols = np.unravel_index(chosen, valid.shape)
    return [(int(x) + size // 2, int(y) + size // 2) for x, y in zip(cols, rows, strict=True)]


def _locate(
    lesion: dict, source_shape: tuple[int, int], geometry: BreastGeometry, patch_size: int
) -> tuple[np.ndarray | None, np.ndarray | None, str, str]:
    """``(centre, region, reason, detail)`` of one lesion: a centre and region when it is
    located, else the reason (:data:`UNLOCATED`) and what went wrong."""
    if not has_location(lesion):
        return None, None, NO_LOCATION, "lesions.csv gives neither an ROI mask nor a centre"
    try:
        centre, region = locate_lesion(lesion, source_shape, geometry, patch_size)
    except ValueError as exc:  # ImageReadError is a ValueError too
        return None, None, UNUSABLE_MASK, str(exc)
    return centre, region, "", ""


def cut_roi(image: np.ndarray, job: ImageJob, sha256: str) -> TaskOutput:
    """Lesion and NORMAL patches of one image, as PNG arrays and manifest rows.

    A lesion that yields no patch is rejected and counted under its reason while the
    others are still cut. When a lesion cannot be located, no NORMAL patch is cut from the
    image: it could overlap the lesion.
    """
    config = job.config
    size = config.size
    if not job.lesions and job.index_row["label"] != "NORMAL":
        raise ValueError(
            f"labelled {job.index_row['label']} but lesions.csv lists no abnormality for "
            f"{job.image_id}, so neither lesion nor NORMAL patches can be placed"
        )
    canvas, breast, geometry = prepare_and_fit(image, config.working_size)
    rng = job.rng()
    base = job.base_row(sha256, geometry)
    output = TaskOutput()
    lesion_area = np.zeros(config.working_size, dtype=np.uint8)
    for lesion in job.lesions:
        abnormality = str(lesion["abnormality_id"])
        centre, region, reason, detail = _locate(lesion, image.shape, geometry, size)
        if region is not None:
            lesion_area |= region.astype(np.uint8)
            try:
                label = normalize_label(lesion["pathology"])
            except ValueError as exc:
                reason, detail = UNKNOWN_PATHOLOGY, str(exc)
        if reason:
            output.not_cut[reason] += 1
            mask_path = lesion.get("mask_path")
            withheld = "; no NORMAL patch cut from this image" if reason in UNLOCATED else ""
            output.rejects.append({
                "source": str(mask_path) if _present(mask_path) else job.image_path,
                "reason": f"{reason}: abnormality {abnormality} of {job.image_id}: "
                f"{detail}{withheld}",
            })
            continue
        for view in range(config.patches_per_lesion):
            shift = rng.integers(-config.jitter, config.jitter + 1, size=2)
            cx, cy = (int(round(value)) for value in centre + shift)
            suffix = f"_{view}" if view else ""
            output.add(
                f"{job.image_id}_lesion_{safe_name(abnormality)}{suffix}", label,
                to_uint16(extract_patch(canvas, (cx, cy), size)),
                {**base, "label": label, "kind": "lesion", "abnormality_id": abnormality,
                 "center_x": cx, "center_y": cy},
            )
    if any(output.not_cut[reason] for reason in UNLOCATED):
        return output
    kernel = np.ones((2 * LESION_MARGIN + 1,) * 2, dtype=np.uint8)
    keep_out = cv2.dilate(lesion_area, kernel)
    centres = normal_centres(
        breast, keep_out, size, config.normal_per_image, rng, config.min_breast_fraction
    )
    for number, (cx, cy) in enumerate(centres):
        output.add(
            f"{job.image_id}_normal_{number}", "NORMAL",
            to_uint16(extract_patch(canvas, (cx, cy), size)),
            {**base, "label": "NORMAL", "kind": "normal", "abnormality_id": "",
             "center_x": cx, "center_y": cy},
        )
    return output


def lesions_by_image(lesions: pd.DataFrame) -> dict[str, tuple[dict, ...]]:
    """Group lesion rows by ``image_id`` as plain dicts (picklable, hashable order)."""
    if lesions.empty:
        return {}
    return {
        str(image_id): tuple(group.to_dict("records"))
        for image_id, group in lesions.groupby("image_id", sort=False)
    }
