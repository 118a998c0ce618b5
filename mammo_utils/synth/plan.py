"""The plan of a synthetic data set: who the patients are, which images and
lesions they have, every UID, and how each DICOM file is encoded.

Planning draws only from the seed, never from pixels, so the CSVs are fixed before
any image is drawn and an interrupted run resumes with the same plan. Quirks of
the real CBIS-DDSM CSVs are planned here so that every set of a few patients
holds at least one of each (``_patients``, ``_styles``, ``_lesion``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.uid import generate_uid

from .lesions import lesion_diameter

PATHOLOGIES: tuple[str, ...] = ("BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT")

#: Base image size (rows, columns) per ``size``; each image shrinks by up to 6 %.
IMAGE_SIZES: dict[str, tuple[int, int]] = {"small": (1024, 640), "full": (4000, 3000)}

#: Official split names as they appear in CBIS-DDSM folder names.
SPLITS: tuple[str, ...] = ("Training", "Test")

_MASS_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "MALIGNANT": (("IRREGULAR", "LOBULATED-IRREGULAR"), ("SPICULATED", "ILL_DEFINED-SPICULATED")),
    "BENIGN": (("ROUND", "OVAL"), ("CIRCUMSCRIBED", "CIRCUMSCRIBED-OBSCURED")),
    "BENIGN_WITHOUT_CALLBACK": (("ROUND", "OVAL"), ("CIRCUMSCRIBED", "OBSCURED")),
}
_CALC_WORDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "MALIGNANT": (("PLEOMORPHIC", "FINE_LINEAR_BRANCHING"), ("CLUSTERED", "CLUSTERED-LINEAR")),
    "BENIGN": (("COARSE", "ROUND_AND_REGULAR", "LARGE_RODLIKE"), ("CLUSTERED", "REGIONAL")),
    "BENIGN_WITHOUT_CALLBACK": (("PUNCTATE", "ROUND_AND_REGULAR"), ("DIFFUSELY_SCATTERED", "NA")),
}
_ASSESSMENT: dict[str, tuple[int, ...]] = {
    "MALIGNANT": (4, 5),
    "BENIGN": (0, 3, 4),
    "BENIGN_WITHOUT_CALLBACK": (2, 3),
}
_SUBTLETY: dict[str, tuple[int, ...]] = {
    "MALIGNANT": (3, 4, 5),
    "BENIGN": (2, 3, 4, 5),
    "BENIGN_WITHOUT_CALLBACK": (1, 2, 3),
}


@dataclass(frozen=True)
class DicomStyle:
    """How one full mammogram (and its crops) is encoded.

    ``tags`` picks the laterality/view tags: ``cbis`` (Laterality and
    PatientOrientation, as CBIS-DDSM writes them), ``image`` (ImageLaterality and
    ViewPosition) or ``none``.
    """

    photometric: str
    bits_stored: int
    window: bool
    rle: bool
    tags: str


@dataclass(frozen=True)
class LesionPlan:
    """One abnormality on one view, and where its mask and crop live.

    The CSV names the crop and the mask ``0000NN.dcm`` (``crop_number``,
    ``mask_number``); on disk they are ``1-1.dcm``/``1-2.dcm`` (``crop_file``,
    ``mask_file``). When ``separate_series`` the two live in separate studies and
    series, each as ``000000.dcm`` / ``1-1.dcm``.
    """

    abnormality_id: int
    kind: str
    pathology: str
    assessment: int
    subtlety: int
    shape_or_type: str
    margins_or_distribution: str
    size_fraction: float
    folder: str
    mask_study: str
    mask_series: str
    crop_study: str
    crop_series: str
    mask_number: int
    crop_number: int
    mask_file: str
    crop_file: str

    @property
    def separate_series(self) -> bool:
        return self.mask_series != self.crop_series


@dataclass(frozen=True)
class ImagePlan:
    """One full mammogram: its folder (``Mass-Training_P_00001_LEFT_CC``), UIDs,
    lesions and encoding. ``group`` is ``Mass``, ``Calc`` or ``Normal``; ``split``
    is ``Training``, ``Test`` or None for normals."""

    index: int
    folder: str
    patient_id: str
    group: str
    split: str | None
    laterality: str
    view: str
    density: int
    rows: int
    columns: int
    study_uid: str
    series_uid: str
    lesions: tuple[LesionPlan, ...]
    style: DicomStyle


@dataclass(frozen=True)
class _Breast:
    patient_id: str
    group: str
    split: str | None
    laterality: str
    density: int
    findings: tuple[tuple[str, float, str, str, int, int], ...]


def uid(seed: int, *parts: object) -> str:
    """A DICOM UID derived from the seed and a name, the same on every run."""
    return generate_uid(entropy_srcs=["mammo_utils.synth", str(seed), *map(str, parts)])


def _finding(rng: np.random.Generator, kind: str, pathology: str) -> tuple:
    words = (_MASS_WORDS if kind == "mass" else _CALC_WORDS)[pathology]
    return (
        pathology,
        lesion_diameter(rng, kind, pathology),
        str(rng.choice(words[0])),
        str(rng.choice(words[1])),
        int(rng.choice(_ASSESSMENT[pathology])),
        int(rng.choice(_SUBTLETY[pathology])),
    )


def _patients(rng: np.random.Generator, patients: int, normal_fraction: float) -> list[_Breast]:
    """Breasts of every patient. The first abnormal patient has a mass in one
    official split and calcifications in the other breast in the other split (a
    patient in both the training and the test files, like P_00041); the second
    has two lesions in one breast (a full image repeated in the CSV)."""
    numbers = np.cumsum(rng.integers(1, 4, patients))
    n_normal = round(patients * normal_fraction)
    if normal_fraction > 0 and patients >= 3:
        n_normal = max(1, n_normal)
    normal = set(rng.choice(patients, size=min(n_normal, patients), replace=False).tolist())
    breasts: list[_Breast] = []
    n_abnormal = 0
    for index, number in enumerate(numbers):
        patient_id = f"P_{int(number):05d}"
        density = int(rng.integers(1, 5))
        if index in normal:
            breasts += [
                _Breast(patient_id, "Normal", None, side, density, ()) for side in ("LEFT", "RIGHT")
            ]
            continue
        first = "LEFT" if rng.random() < 0.5 else "RIGHT"
        other = "RIGHT" if first == "LEFT" else "LEFT"
        kind = "mass" if rng.random() < 0.5 else "calcification"
        split = "Training" if rng.random() < 0.7 else "Test"
        both_kinds = n_abnormal == 0 or rng.random() < 0.15
        n_lesions = 2 if n_abnormal == 1 or rng.random() < 0.15 else 1
        if n_abnormal == 0:
            kind, split = "mass", "Training"
        findings = tuple(
            _finding(rng, kind, str(rng.choice(PATHOLOGIES))) for _ in range(n_lesions)
        )
        group = "Mass" if kind == "mass" else "Calc"
        breasts.append(_Breast(patient_id, group, split, first, density, findings))
        if both_kinds:
            other_kind = "calcification" if kind == "mass" else "mass"
            other_split = "Test" if n_abnormal == 0 else split
            finding = _finding(rng, other_kind, str(rng.choice(PATHOLOGIES)))
            other_group = "Mass" if other_kind == "mass" else "Calc"
            breasts.append(
                _Breast(patient_id, other_group, other_split, other, density, (finding,))
            )
        n_abnormal += 1
    return breasts


def _styles(rng: np.random.Generator, count: int) -> list[DicomStyle]:
    """Encodings cycled over a shuffled image order with co-prime periods, so a
    handful of images already covers both photometrics, both bit depths, windows
    present and absent, RLE and uncompressed, and the three tag styles."""
    order = rng.permutation(count)
    styles = [None] * count
    for k, image in enumerate(order):
        styles[image] = DicomStyle(
            photometric=("MONOCHROME2", "MONOCHROME1")[int(k % 3 == 1)],
            bits_stored=(16, 12)[k % 2],
            window=k % 5 in (0, 2),
            rle=k % 4 in (1, 2),
            tags=("cbis", "image", "none")[(k // 2) % 3],
        )
    return styles


def _lesion(
    rng: np.random.Generator,
    seed: int,
    image_folder: str,
    abnormality_id: int,
    kind: str,
    finding: tuple,
    quirk: int,
) -> LesionPlan:
    """One lesion's files.

    CBIS-DDSM numbers the crop ``000000`` and the mask ``000001`` in mass files,
    the other way round in calc files; a download names them ``1-1.dcm`` and
    ``1-2.dcm`` in an order that need not follow those numbers, so the file a CSV
    path leads to by number is sometimes the other one (a swapped row: only the
    content, a binary full-size mask, tells). Now and then the mask and the crop
    sit in separate studies and series, each as ``000000.dcm``.

    ``quirk`` forces the layout of the first lesions (0 plain, 1 swapped, 2
    separate series); -1 draws it at about the rates of the real data.
    """
    pathology, size, shape_or_type, margins, assessment, subtlety = finding
    folder = f"{image_folder}_{abnormality_id}"
    common = (abnormality_id, kind, pathology, assessment, subtlety, shape_or_type, margins, size)
    separate = quirk == 2 or (quirk < 0 and kind == "mass" and rng.random() < 0.08)
    if separate:
        return LesionPlan(
            *common,
            folder=folder,
            mask_study=uid(seed, folder, "mask-study"),
            mask_series=uid(seed, folder, "mask-series"),
            crop_study=uid(seed, folder, "crop-study"),
            crop_series=uid(seed, folder, "crop-series"),
            mask_number=0,
            crop_number=0,
            mask_file="1-1.dcm",
            crop_file="1-1.dcm",
        )
    crop_number, mask_number = (0, 1) if kind == "mass" else (1, 0)
    swapped = quirk == 1 or (quirk < 0 and rng.random() < 0.25)
    mask_slot, crop_slot = (crop_number, mask_number) if swapped else (mask_number, crop_number)
    study, series = uid(seed, folder, "roi-study"), uid(seed, folder, "roi-series")
    return LesionPlan(
        *common,
        folder=folder,
        mask_study=study,
        mask_series=series,
        crop_study=study,
        crop_series=series,
        mask_number=mask_number,
        crop_number=crop_number,
        mask_file=f"1-{mask_slot + 1}.dcm",
        crop_file=f"1-{crop_slot + 1}.dcm",
    )


def plan_dataset(*, patients: int, seed: int, size: str, normal_fraction: float) -> list[ImagePlan]:
    """Every full mammogram of the set, in writing order."""
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    if size not in IMAGE_SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(IMAGE_SIZES)}")
    if not 0.0 <= normal_fraction < 1.0:
        raise ValueError(f"normal_fraction must be in [0, 1), got {normal_fraction}")
    rng = np.random.default_rng([seed, 0])
    breasts = _patients(rng, patients, normal_fraction)
    views = [(breast, view) for breast in breasts for view in ("CC", "MLO")]
    styles = _styles(rng, len(views))
    base_rows, base_columns = IMAGE_SIZES[size]
    images: list[ImagePlan] = []
    n_lesions = 0
    for index, ((breast, view), style) in enumerate(zip(views, styles, strict=True)):
        if breast.group == "Normal":
            folder = f"Normal_{breast.patient_id}_{breast.laterality}_{view}"
        else:
            folder = f"{breast.group}-{breast.split}_{breast.patient_id}_{breast.laterality}_{view}"
        kind = "mass" if breast.group == "Mass" else "calcification"
        lesions = []
        for number, finding in enumerate(breast.findings, start=1):
            quirk = n_lesions if n_lesions < 3 else -1
            lesions.append(_lesion(rng, seed, folder, number, kind, finding, quirk))
            n_lesions += 1
        shrink = rng.uniform(0.94, 1.0, 2)
        images.append(
            ImagePlan(
                index=index,
                folder=folder,
                patient_id=breast.patient_id,
                group=breast.group,
                split=breast.split,
                laterality=breast.laterality,
                view=view,
                density=breast.density,
                rows=2 * round(base_rows * shrink[0] / 2),
                columns=2 * round(base_columns * shrink[1] / 2),
                study_uid=uid(seed, folder, "study"),
                series_uid=uid(seed, folder, "series"),
                lesions=tuple(lesions),
                style=style,
            )
        )
    return images
