"""Shortcut audit: flags a planted acquisition shortcut, leaves a clean roi task alone."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammo_utils.audit import (
    CATEGORICAL_FEATURES,
    NUMERIC_FEATURES,
    AuditResult,
    audit_manifest,
    background_statistics,
    extract_features,
    present_classes,
    shortcut_audit,
)
from mammo_utils.classes import CLASSES

LESION_CLASSES = ("BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT")


def _breast(shape: tuple[int, int], rng: np.random.Generator, background: float) -> np.ndarray:
    """A bright half-ellipse on the left over a noisy dark background, in [0, 1]."""
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    inside = ((yy - rows / 2) / (rows * 0.45)) ** 2 + (xx / (cols * 0.6)) ** 2 <= 1
    image = rng.uniform(0, background, size=shape)
    image[inside] = 0.5 + 0.3 * rng.random(int(inside.sum()))
    return image


def _write_dicom(path: Path, image: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = "ANON"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = (image * 4095).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _index(tmp_path: Path, *, plant_normals: bool, n_patients: int = 48, seed: int = 0):
    """index.csv rows: synthetic 12-bit DICOMs; NORMAL as 8-bit PNGs of another size if planted."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = ("NORMAL", *LESION_CLASSES)[p % 4]
        for view in ("CC", "MLO"):
            image_id = f"P{p:03d}_{view}"
            if plant_normals and label == "NORMAL":
                path = tmp_path / f"{image_id}.png"
                image = _breast((100, 70), rng, background=0.15)
                cv2.imwrite(str(path), (image * 255).astype(np.uint8))
                dataset = "mias"
            else:
                path = tmp_path / f"{image_id}.dcm"
                _write_dicom(path, _breast((128, 96), rng, background=0.02))
                dataset = "synthetic"
            rows.append(
                {
                    "image_id": image_id,
                    "patient_id": f"P{p:03d}",
                    "dataset": dataset,
                    "view": view,
                    "label": label,
                    "image_path": str(path),
                }
            )
    return pd.DataFrame(rows)


def test_background_statistics_see_quantization():
    rng = np.random.default_rng(0)
    image = _breast((128, 96), rng, background=0.05)
    fine = background_statistics(image)
    coarse = background_statistics(np.round(image * 8) / 8)
    assert 0.2 < fine["background_fraction"] < 0.8
    assert fine["background_levels"] > coarse["background_levels"]
    assert fine["background_mean"] == pytest.approx(0.025, abs=0.01)


def test_flags_normals_from_another_source(tmp_path):
    index = _index(tmp_path, plant_normals=True)
    result, rejects = audit_manifest(index, index, progress=False)
    assert rejects.empty
    assert "NORMAL" in result.flagged
    assert result.per_class_roc_auc["NORMAL"] >= 0.95
    assert result.has_shortcut
    assert "separable without anatomy: a likely shortcut" in result.banner_markdown()
    assert "SHORTCUT WARNING" in result.banner_html()
    assert result.n_patients == 48
    assert result.classes == list(CLASSES)
    assert list(result.per_class_roc_auc) == list(CLASSES)


def test_classes_follow_the_canonical_order_not_the_alphabet():
    labels = pd.Series(["MALIGNANT", "NORMAL", "BENIGN", "MALIGNANT", "NOT_MALIGNANT"])
    assert present_classes(labels) == ["NORMAL", "BENIGN", "MALIGNANT", "NOT_MALIGNANT"]
    assert present_classes(pd.Series(["BENIGN_WITHOUT_CALLBACK", "BENIGN"])) == [
        "BENIGN_WITHOUT_CALLBACK", "BENIGN"]


def test_does_not_flag_clean_roi_task(tmp_path):
    index = _index(tmp_path, plant_normals=False)
    patches = []
    for row in index.itertuples():
        kinds = [("lesion", row.label)] if row.label != "NORMAL" else []
        kinds += [("normal", "NORMAL")] * 2
        for n, (kind, label) in enumerate(kinds):
            patches.append(
                {
                    "item_id": f"{row.image_id}_{n}",
                    "image_id": row.image_id,
                    "patient_id": row.patient_id,
                    "label": label,
                    "kind": kind,
                }
            )
    result, _ = audit_manifest(pd.DataFrame(patches), index, progress=False)
    assert result.flagged == []
    assert not result.has_shortcut
    assert all(v is not None and v < 0.8 for v in result.per_class_roc_auc.values())
    assert "No shortcut found" in result.banner_markdown()


def test_unreadable_image_is_rejected_and_others_go_on(tmp_path):
    index = _index(tmp_path, plant_normals=True, n_patients=8)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom")
    index.loc[0, "image_path"] = str(broken)
    features, rejects = extract_features(index, progress=False)
    assert len(features) + len(rejects) == len(index)
    assert rejects["source"].tolist() == [str(broken)]
    assert "broken.dcm" in rejects["reason"].iloc[0]


def test_tiny_input_reports_none_not_crash():
    samples = pd.DataFrame({"image_id": ["a"], "patient_id": ["p"], "label": ["NORMAL"]})
    features = pd.DataFrame(
        {"dataset": ["x"], "photometric_interpretation": ["M2"], "view": ["CC"], "rows": [1.0]},
        index=pd.Index(["a"], name="image_id"),
    ).reindex(columns=[*CATEGORICAL_FEATURES, *NUMERIC_FEATURES])
    result = shortcut_audit(samples, features, classes=["NORMAL", "MALIGNANT"])
    assert isinstance(result, AuditResult)
    assert result.per_class_roc_auc == {"NORMAL": None, "MALIGNANT": None}
    assert result.to_dict()["has_shortcut"] is False
