"""Where the synthetic set's files go and what its CSVs say.

Two path forms coexist, as in a real CBIS-DDSM download:

* the case-description CSVs name ``<folder>/<study UID>/<series UID>/00000N.dcm``;
* the files lie in the NBIA layout ``CBIS-DDSM/<folder>/<study UID>/<series UID>/1-N.dcm``,
  listed series by series in ``metadata.csv``.

The column sets, their order and the CSV quirks are those of the official files.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mammo_utils.files import atomic_write_text

from .plan import ImagePlan, LesionPlan

CBIS_FOLDER = "CBIS-DDSM"
NORMAL_CSV = "normal_case_description.csv"
METADATA_CSV = "metadata.csv"
MANIFEST = "synth_manifest.json"

_CASE_START = ["patient_id"]
_CASE_SIDE = ["left or right breast", "image view", "abnormality id", "abnormality type"]
_CASE_END = [
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
]
#: Column order of the official mass files (density spelled ``breast_density``).
MASS_COLUMNS: tuple[str, ...] = tuple(
    _CASE_START + ["breast_density"] + _CASE_SIDE + ["mass shape", "mass margins"] + _CASE_END
)
#: Column order of the official calc files (density spelled ``breast density``).
CALC_COLUMNS: tuple[str, ...] = tuple(
    _CASE_START + ["breast density"] + _CASE_SIDE + ["calc type", "calc distribution"] + _CASE_END
)
NORMAL_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "left or right breast",
    "image view",
    "image file path",
)
#: Columns of the metadata.csv an NBIA Data Retriever download writes.
METADATA_COLUMNS: tuple[str, ...] = (
    "Series UID",
    "Collection",
    "3rd Party Analysis",
    "Data Description URI",
    "Subject ID",
    "Study UID",
    "Study Description",
    "Study Date",
    "Series Description",
    "Manufacturer",
    "Modality",
    "SOP Class Name",
    "SOP Class UID",
    "Number of Images",
    "File Size",
    "File Location",
    "Download Timestamp",
)
_COLLECTION_DOI = "https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY"
#: Fixed, so that metadata.csv is byte-identical across runs with one seed.
_DOWNLOAD_TIMESTAMP = "2016-07-20T00:00:00.000"


@dataclass(frozen=True)
class SeriesRecord:
    """One series as metadata.csv lists it."""

    subject: str
    study_uid: str
    series_uid: str
    description: str
    n_images: int
    size_bytes: int


def case_csv_name(group: str, split: str) -> str:
    """``mass_case_description_train_set.csv`` and the like."""
    kind = {"Mass": "mass", "Calc": "calc"}[group]
    part = {"Training": "train", "Test": "test"}[split]
    return f"{kind}_case_description_{part}_set.csv"


def csv_path(folder: str, study_uid: str, series_uid: str, number: int) -> str:
    """A path as the case-description CSVs write it."""
    return f"{folder}/{study_uid}/{series_uid}/{number:06d}.dcm"


def series_dir(root: Path, folder: str, study_uid: str, series_uid: str) -> Path:
    """The NBIA folder of one series under the data set root."""
    return root / CBIS_FOLDER / folder / study_uid / series_uid


def file_location(folder: str, study_uid: str, series_uid: str) -> str:
    """metadata.csv's File Location of one series."""
    return f"./{CBIS_FOLDER}/{folder}/{study_uid}/{series_uid}"


def full_image_file(root: Path, image: ImagePlan) -> Path:
    return series_dir(root, image.folder, image.study_uid, image.series_uid) / "1-1.dcm"


def mask_file(root: Path, lesion: LesionPlan) -> Path:
    return series_dir(root, lesion.folder, lesion.mask_study, lesion.mask_series) / lesion.mask_file


def crop_file(root: Path, lesion: LesionPlan) -> Path:
    return series_dir(root, lesion.folder, lesion.crop_study, lesion.crop_series) / lesion.crop_file


def _case_row(image: ImagePlan, lesion: LesionPlan) -> dict[str, str]:
    """One CSV row. Mass files end the ROI-mask path with a newline inside its
    quotes and calc files the cropped-image path, as the official files do."""
    is_mass = image.group == "Mass"
    crop = csv_path(lesion.folder, lesion.crop_study, lesion.crop_series, lesion.crop_number)
    mask = csv_path(lesion.folder, lesion.mask_study, lesion.mask_series, lesion.mask_number)
    row = {
        "patient_id": image.patient_id,
        "breast_density" if is_mass else "breast density": str(image.density),
        "left or right breast": image.laterality,
        "image view": image.view,
        "abnormality id": str(lesion.abnormality_id),
        "abnormality type": lesion.kind,
        "mass shape" if is_mass else "calc type": lesion.shape_or_type,
        "mass margins" if is_mass else "calc distribution": lesion.margins_or_distribution,
        "assessment": str(lesion.assessment),
        "pathology": lesion.pathology,
        "subtlety": str(lesion.subtlety),
        "image file path": csv_path(image.folder, image.study_uid, image.series_uid, 0),
        "cropped image file path": crop if is_mass else crop + "\n",
        "ROI mask file path": mask + "\n" if is_mass else mask,
    }
    return row


def case_tables(images: Iterable[ImagePlan]) -> dict[str, list[dict[str, str]]]:
    """Rows of the four case-description CSVs keyed by file name (all four present,
    possibly empty), one row per abnormality."""
    tables: dict[str, list[dict[str, str]]] = {
        case_csv_name(group, split): []
        for group in ("Mass", "Calc")
        for split in ("Training", "Test")
    }
    for image in images:
        for lesion in image.lesions:
            tables[case_csv_name(image.group, image.split)].append(_case_row(image, lesion))
    return tables


def normal_rows(images: Iterable[ImagePlan]) -> list[dict[str, str]]:
    """Rows of normal_case_description.csv: one per normal image."""
    return [
        {
            "patient_id": image.patient_id,
            "left or right breast": image.laterality,
            "image view": image.view,
            "image file path": csv_path(image.folder, image.study_uid, image.series_uid, 0),
        }
        for image in images
        if image.group == "Normal"
    ]


def _file_size(size_bytes: int) -> str:
    if size_bytes >= 1 << 20:
        return f"{size_bytes / (1 << 20):.2f} MB"
    return f"{size_bytes / (1 << 10):.2f} KB"


def metadata_rows(records: Iterable[SeriesRecord]) -> list[dict[str, str]]:
    """Rows of metadata.csv, one per series."""
    return [
        {
            "Series UID": record.series_uid,
            "Collection": "CBIS-DDSM",
            "3rd Party Analysis": "NO",
            "Data Description URI": _COLLECTION_DOI,
            "Subject ID": record.subject,
            "Study UID": record.study_uid,
            "Study Description": "",
            "Study Date": "07-20-2016",
            "Series Description": record.description,
            "Manufacturer": "",
            "Modality": "MG",
            "SOP Class Name": "Secondary Capture Image Storage",
            "SOP Class UID": "1.2.840.10008.5.1.4.1.1.7",
            "Number of Images": str(record.n_images),
            "File Size": _file_size(record.size_bytes),
            "File Location": file_location(record.subject, record.study_uid, record.series_uid),
            "Download Timestamp": _DOWNLOAD_TIMESTAMP,
        }
        for record in records
    ]


def write_csv(path: Path, columns: Sequence[str], rows: Iterable[dict[str, str]]) -> None:
    """Write a CSV the way the official files are written (minimal quoting, LF line
    ends), atomically: a temp name, then a rename."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
