"""Generate the synthetic CBIS-DDSM data set: plan, draw, write, describe.

The set is a pure function of its parameters: one seed gives byte-identical CSVs
and identical pixel arrays. A finished set is recognised by its manifest and not
redrawn; an interrupted one (manifest without its completion marker) resumes,
keeping the DICOM files already written, since every file is written under a
temporary name and renamed only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from mammo_utils.files import atomic_write_text

from . import layout
from .dicom_writer import (
    CROP_DESCRIPTION,
    FULL_DESCRIPTION,
    MASK_DESCRIPTION,
    to_stored,
    window_for,
    write_dicom,
)
from .lesions import draw_calcifications, draw_mass, place_lesion
from .phantom import draw_breast
from .plan import PATHOLOGIES, ImagePlan, LesionPlan, plan_dataset, uid

FORMAT_VERSION = 1
#: Share of patients without any abnormality (their images go to the Normal_ folders).
DEFAULT_NORMAL_FRACTION = 0.25


@dataclass(frozen=True)
class SynthSummary:
    """What a generated set holds. ``n_images`` counts full mammograms (normal
    ones included), ``n_normals`` the normal full mammograms, ``n_abnormalities``
    the CSV rows; ``pathology_counts`` counts CSV rows per pathology."""

    out: Path
    n_patients: int
    n_images: int
    n_abnormalities: int
    n_normals: int
    pathology_counts: dict[str, int] = field(default_factory=dict)
    reused: bool = False


def _summary(out: Path, patients: int, images: list[ImagePlan], reused: bool) -> SynthSummary:
    lesions = [lesion for image in images for lesion in image.lesions]
    counts = Counter(lesion.pathology for lesion in lesions)
    return SynthSummary(
        out=out,
        n_patients=patients,
        n_images=len(images),
        n_abnormalities=len(lesions),
        n_normals=sum(image.group == "Normal" for image in images),
        pathology_counts={name: counts.get(name, 0) for name in PATHOLOGIES},
        reused=reused,
    )


def _read_manifest(out: Path) -> dict | None:
    path = out / layout.MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a readable synthetic-set manifest ({err})") from None


def _write_manifest(out: Path, parameters: dict, counts: dict | None) -> None:
    manifest = {
        "generator": "mammo_utils.synth",
        "format_version": FORMAT_VERSION,
        "parameters": parameters,
        "counts": counts,
        "complete": counts is not None,
    }
    atomic_write_text(out / layout.MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _prepare(out: Path, parameters: dict, overwrite: bool) -> tuple[bool, bool]:
    """Decide what to do with ``out``: (already complete, resume a partial run).

    A folder holding a different set, or a CBIS-DDSM tree this generator did not
    write, is refused unless ``overwrite``, which deletes that tree first.
    """
    manifest = _read_manifest(out)
    same = manifest is not None and manifest.get("parameters") == parameters
    if same and manifest.get("complete"):
        return True, False
    if same:
        return False, True
    tree = out / layout.CBIS_FOLDER
    if manifest is not None or tree.exists():
        if not overwrite:
            held = manifest["parameters"] if manifest else "a CBIS-DDSM tree without a manifest"
            raise FileExistsError(
                f"{out}: holds {held}, not the requested {parameters}; "
                "pass overwrite=True (--overwrite) to replace it"
            )
        shutil.rmtree(tree, ignore_errors=True)
    return False, False


def _draw(image: ImagePlan, seed: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Pixels of one full mammogram: image, breast region and one mask per lesion."""
    rng = np.random.default_rng([seed, 1, image.index])
    phantom = draw_breast(
        rng,
        (image.rows, image.columns),
        laterality=image.laterality,
        view=image.view,
        density=image.density,
    )
    allowed = phantom.breast & (phantom.tissue_depth > 0.25) & ~phantom.pectoral
    taken = np.zeros(allowed.shape, bool)
    masks = []
    for lesion in image.lesions:
        diameter = lesion.size_fraction * image.rows
        centre = place_lesion(rng, allowed, diameter, taken)
        draw = draw_mass if lesion.kind == "mass" else draw_calcifications
        mask = draw(rng, phantom.image, centre, diameter, lesion.pathology)
        taken |= mask
        masks.append(mask)
    return phantom.image, phantom.breast, masks


def _crop_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The lesion's bounding box widened by a quarter on each side, as CBIS-DDSM
    crops include some surrounding tissue."""
    ys, xs = np.nonzero(mask)
    pad_y = max(4, (ys.max() - ys.min()) // 4)
    pad_x = max(4, (xs.max() - xs.min()) // 4)
    height, width = mask.shape
    return (
        slice(max(0, ys.min() - pad_y), min(height, ys.max() + pad_y + 1)),
        slice(max(0, xs.min() - pad_x), min(width, xs.max() + pad_x + 1)),
    )


def _lesion_files(root: Path, lesion: LesionPlan) -> list[tuple[Path, str, str, str]]:
    """(path, study, series, role) of a lesion's mask and crop."""
    return [
        (layout.mask_file(root, lesion), lesion.mask_study, lesion.mask_series, "mask"),
        (layout.crop_file(root, lesion), lesion.crop_study, lesion.crop_series, "crop"),
    ]


def _series_records(root: Path, image: ImagePlan) -> list[layout.SeriesRecord]:
    """metadata.csv rows of one image's series, sized from the files on disk."""
    full = layout.full_image_file(root, image)
    records = [
        layout.SeriesRecord(
            image.folder,
            image.study_uid,
            image.series_uid,
            FULL_DESCRIPTION,
            1,
            full.stat().st_size,
        )
    ]
    for lesion in image.lesions:
        files = _lesion_files(root, lesion)
        if lesion.separate_series:
            for path, study, series, role in files:
                description = MASK_DESCRIPTION if role == "mask" else CROP_DESCRIPTION
                size = path.stat().st_size
                records.append(
                    layout.SeriesRecord(lesion.folder, study, series, description, 1, size)
                )
        else:
            size = sum(path.stat().st_size for path, *_ in files)
            records.append(
                layout.SeriesRecord(
                    lesion.folder, lesion.mask_study, lesion.mask_series, MASK_DESCRIPTION, 2, size
                )
            )
    return records


def _write_image(root: Path, image: ImagePlan, seed: int) -> None:
    """Draw one full mammogram and write it with its ROI masks and crops."""
    pixels, breast, masks = _draw(image, seed)
    style = image.style
    stored = to_stored(pixels, style)
    window = window_for(stored, breast) if style.window else None
    encoding = {
        "photometric": style.photometric,
        "bits_stored": style.bits_stored,
        "rle": style.rle,
    }
    write_dicom(
        layout.full_image_file(root, image),
        stored,
        patient_id=image.folder,
        study_uid=image.study_uid,
        series_uid=image.series_uid,
        sop_uid=uid(seed, image.folder, "sop"),
        series_description=FULL_DESCRIPTION,
        instance_number=1,
        window=window,
        laterality_tags=(style.tags, image.laterality, image.view),
        **encoding,
    )
    for lesion, mask in zip(image.lesions, masks, strict=True):
        rows, cols = _crop_box(mask)
        content = {
            "mask": (np.where(mask, 255, 0).astype(np.uint8), MASK_DESCRIPTION),
            "crop": (np.ascontiguousarray(stored[rows, cols]), CROP_DESCRIPTION),
        }
        for path, study, series, role in _lesion_files(root, lesion):
            data, description = content[role]
            is_mask = role == "mask"
            write_dicom(
                path,
                data,
                patient_id=lesion.folder,
                study_uid=study,
                series_uid=series,
                sop_uid=uid(seed, lesion.folder, role),
                series_description=description,
                instance_number=int(path.stem.split("-")[1]),
                photometric="MONOCHROME2" if is_mask else style.photometric,
                bits_stored=8 if is_mask else style.bits_stored,
                rle=style.rle,
                window=None if is_mask else window,
            )


def _image_paths(root: Path, image: ImagePlan) -> list[Path]:
    lesion_paths = [path for lesion in image.lesions for path, *_ in _lesion_files(root, lesion)]
    return [layout.full_image_file(root, image), *lesion_paths]


def generate_dataset(
    out: str | os.PathLike,
    patients: int = 12,
    seed: int = 0,
    size: str = "small",
    normal_fraction: float = DEFAULT_NORMAL_FRACTION,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Generate a synthetic CBIS-DDSM data set under ``out``.

    ``size`` is ``small`` (about 1024x640 per image, seconds for a few dozen
    patients) or ``full`` (about 4000x3000, as real scans). A set already complete
    with the same parameters is reused as it is (``SynthSummary.reused``).
    """
    out = Path(out)
    parameters = {
        "patients": int(patients),
        "seed": int(seed),
        "size": size,
        "normal_fraction": float(normal_fraction),
        "format_version": FORMAT_VERSION,
    }
    images = plan_dataset(patients=patients, seed=seed, size=size, normal_fraction=normal_fraction)
    out.mkdir(parents=True, exist_ok=True)
    complete, resume = _prepare(out, parameters, overwrite)
    summary = _summary(out, patients, images, reused=complete)
    if complete:
        return summary
    _write_manifest(out, parameters, counts=None)

    by_patient = groupby(sorted(images, key=lambda image: image.patient_id), lambda i: i.patient_id)
    n_patients = len({image.patient_id for image in images})
    for _, patient_images in tqdm(by_patient, total=n_patients, desc="synth", disable=not progress):
        for image in patient_images:
            if resume and all(path.is_file() for path in _image_paths(out, image)):
                continue
            _write_image(out, image, seed)

    for name, rows in layout.case_tables(images).items():
        columns = layout.MASS_COLUMNS if name.startswith("mass") else layout.CALC_COLUMNS
        layout.write_csv(out / name, columns, rows)
    layout.write_csv(out / layout.NORMAL_CSV, layout.NORMAL_COLUMNS, layout.normal_rows(images))
    records = [record for image in images for record in _series_records(out, image)]
    layout.write_csv(
        out / layout.METADATA_CSV, layout.METADATA_COLUMNS, layout.metadata_rows(records)
    )

    counts = {
        "patients": summary.n_patients,
        "images": summary.n_images,
        "abnormalities": summary.n_abnormalities,
        "normal_images": summary.n_normals,
        "pathology": summary.pathology_counts,
        "series": len(records),
    }
    _write_manifest(out, parameters, counts)
    return summary
