"""Ingest fixtures: a tiny hand-built CBIS-DDSM tree with every CSV quirk, and the
interim folder produced by ingesting the project's synthetic data set.

``build_cbis_tree`` writes real DICOM files with pydicom, in the NBIA layout
(``<folder>/<study>/<series>/1-1.dcm``), and official-style CSVs that reference them
by ``.../000000.dcm`` paths, so the join must go through DICOM content.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

FULL_SHAPE = (64, 48)
CROP_SHAPE = (12, 10)
MASS_COLUMNS = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip
CALC_COLUMNS = [
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "calc type", "calc distribution", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str, study: str, series: str) -> None:
    """A minimal uncompressed MG DICOM file with the tags ingest joins on."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesDescription = "full mammogram images"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


class CbisTree:
    """Builds a tiny CBIS-DDSM download: images on disk and the CSV rows naming them."""

    def __init__(self, root: Path, seed: int = 0) -> None:
        self.root = root
        self.rng = np.random.default_rng(seed)
        self.rows: dict[str, list[dict]] = {}

    def _series(self, folder: str) -> tuple[str, str, Path]:
        study, series = generate_uid(), generate_uid()
        return study, series, self.root / "CBIS-DDSM" / folder / study / series

    def full_image(self, folder: str, *, on_disk: bool = True) -> str:
        """Write a full image; return its CSV path (``.../000000.dcm``)."""
        study, series, series_dir = self._series(folder)
        if on_disk:
            pixels = self.rng.integers(100, 4000, size=FULL_SHAPE)
            write_dicom(series_dir / "1-1.dcm", pixels, folder, study, series)
        return f"{folder}/{study}/{series}/000000.dcm"

    def roi(self, folder: str, *, mask_first: bool, on_disk: bool = True) -> tuple[str, str]:
        """Write a mask and a crop into one series; return their CSV paths (crop, mask)."""
        study, series, series_dir = self._series(folder)
        if on_disk:
            mask = np.zeros(FULL_SHAPE, dtype=np.uint16)
            mask[20:30, 10:20] = 255
            crop = self.rng.integers(100, 4000, size=CROP_SHAPE)
            names = ("1-1.dcm", "1-2.dcm") if mask_first else ("1-2.dcm", "1-1.dcm")
            write_dicom(series_dir / names[0], mask, folder, study, series)
            write_dicom(series_dir / names[1], crop, folder, study, series)
        base = f"{folder}/{study}/{series}"
        return f"{base}/000000.dcm", f"{base}/000001.dcm"

    def lesion_row(
        self,
        csv_name: str,
        patient: str,
        side: str,
        view: str,
        pathology: str,
        image_path: str,
        *,
        abnormality: int = 1,
        swap_csv_paths: bool = False,
        mask_first: bool = True,
        roi_on_disk: bool = True,
    ) -> None:
        """Add one abnormality row (with its ROI series) to ``csv_name``."""
        kind = "mass" if csv_name.startswith("mass") else "calcification"
        folder = image_path.split("/")[0]
        crop, mask = self.roi(f"{folder}_{abnormality}", mask_first=mask_first, on_disk=roi_on_disk)
        if swap_csv_paths:
            crop, mask = mask, crop
        density = "breast_density" if kind == "mass" else "breast density"
        row = {
            "patient_id": patient, density: "2", "left or right breast": side,
            "image view": view, "abnormality id": str(abnormality), "abnormality type": kind,
            "assessment": "4", "pathology": pathology, "subtlety": "3",
            "image file path": image_path, "cropped image file path": crop,
            # the official files end some quoted paths with a newline
            "ROI mask file path": mask + "\n",
        }  # fmt: skip
        if kind == "mass":
            row.update({"mass shape": "OVAL", "mass margins": "CIRCUMSCRIBED"})
        else:
            row.update({"calc type": "PLEOMORPHIC", "calc distribution": "CLUSTERED"})
        self.rows.setdefault(csv_name, []).append(row)

    def write_csvs(self, csv_dir: Path | None = None) -> Path:
        """Write every CSV (quoting all cells, as upstream does for paths)."""
        out = csv_dir or self.root
        out.mkdir(parents=True, exist_ok=True)
        for name, rows in self.rows.items():
            columns = MASS_COLUMNS if name.startswith("mass") else CALC_COLUMNS
            with open(out / name, "w", newline="") as handle:
                writer = csv.DictWriter(handle, columns, quoting=csv.QUOTE_MINIMAL)
                writer.writeheader()
                writer.writerows(rows)
        return out


MASS_TRAIN = "mass_case_description_train_set.csv"
MASS_TEST = "mass_case_description_test_set.csv"
CALC_TEST = "calc_case_description_test_set.csv"


def build_cbis_tree(root: Path) -> Path:
    """A tiny CBIS-DDSM tree exercising every quirk; returns ``root``.

    * ``P_00001`` LEFT CC: two masses (BENIGN, MALIGNANT) on one image; the second row's
      crop and mask paths are swapped in the CSV, and its series stores the crop first;
    * ``P_00002`` RIGHT MLO: BENIGN_WITHOUT_CALLBACK, ROI series absent from disk;
    * ``P_00003``: in the official mass training file and the calc test file;
    * ``P_00004``: the full image is absent from disk (row rejected);
    * ``P_00005`` .. ``P_00010``: one mass each, so the splits have patients to draw.
    """
    tree = CbisTree(root)
    image = tree.full_image("Mass-Training_P_00001_LEFT_CC")
    tree.lesion_row(MASS_TRAIN, "P_00001", "LEFT", "CC", "BENIGN", image)
    tree.lesion_row(
        MASS_TRAIN, "P_00001", "LEFT", "CC", "MALIGNANT", image,
        abnormality=2, swap_csv_paths=True, mask_first=False,
    )  # fmt: skip
    image = tree.full_image("Mass-Training_P_00002_RIGHT_MLO")
    tree.lesion_row(
        MASS_TRAIN, "P_00002", "RIGHT", "MLO", "BENIGN_WITHOUT_CALLBACK", image, roi_on_disk=False
    )
    image = tree.full_image("Mass-Training_P_00003_LEFT_MLO")
    tree.lesion_row(MASS_TRAIN, "P_00003", "LEFT", "MLO", "BENIGN", image)
    image = tree.full_image("Calc-Test_P_00003_LEFT_CC")
    tree.lesion_row(CALC_TEST, "P_00003", "LEFT", "CC", "MALIGNANT", image)
    image = tree.full_image("Mass-Test_P_00004_RIGHT_CC", on_disk=False)
    tree.lesion_row(MASS_TEST, "P_00004", "RIGHT", "CC", "MALIGNANT", image, roi_on_disk=False)
    for number in range(5, 11):
        folder = f"Mass-Training_P_{number:05d}_LEFT_MLO"
        pathology = "MALIGNANT" if number % 2 else "BENIGN"
        image = tree.full_image(folder)
        tree.lesion_row(MASS_TRAIN, f"P_{number:05d}", "LEFT", "MLO", pathology, image)
    tree.write_csvs()
    return root


@pytest.fixture(scope="session")
def tiny_cbis_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny CBIS-DDSM tree (see :func:`build_cbis_tree`); read-only for tests."""
    return build_cbis_tree(tmp_path_factory.mktemp("tiny_cbis"))


@pytest.fixture(scope="session")
def synthetic_ingest(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Interim folder (index.csv, lesions.csv, rejects.csv) of the ingested synthetic set."""
    from mammo_utils.ingest import ingest

    out = tmp_path_factory.mktemp("synthetic_interim")
    ingest("cbis-ddsm", synthetic_root, cache_path=out / "dicom_headers.csv").save(out)
    return out
