"""Folder ingest: odd class-folder spellings, an unknown folder, patients.csv, DICOM tags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_ingest import write_dicom

from mammo_utils.ingest import ReconciliationError, folder, ingest
from mammo_utils.splits import assert_no_patient_leakage


def write_png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((8, 8), 128, dtype=np.uint8))


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    write_png(tmp_path / "Benign_Without_Callback" / "a1.png")
    write_png(tmp_path / "benign-no-callback" / "a2.png")
    write_png(tmp_path / "MALIGNANT" / "case7_left.png")
    write_png(tmp_path / "MALIGNANT" / "case7_right.png")
    write_png(tmp_path / "normal" / "n1.png")
    write_dicom(tmp_path / "normal" / "n2.dcm", np.zeros((8, 8)), "X", "1.2", "1.3")
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "unsure" / "u1.png")
    write_png(tmp_path / "unsure" / "u2.png")
    (tmp_path / "patients.csv").write_text(
        "file,patient_id\nMALIGNANT/case7_left.png,case7\ncase7_right.png,case7\n"
    )
    return tmp_path


def test_folder_labels_from_odd_class_names(folder_root: Path) -> None:
    index = ingest("folder", folder_root).index.set_index("image_id")
    assert index.loc["Benign_Without_Callback/a1.png", "label"] == "BENIGN_WITHOUT_CALLBACK"
    assert index.loc["benign-no-callback/a2.png", "label"] == "BENIGN_WITHOUT_CALLBACK"
    assert index.loc["MALIGNANT/case7_left.png", "label"] == "MALIGNANT"
    assert index.loc["normal/n2.dcm", "label"] == "NORMAL"
    assert set(index["dataset"]) == {"folder"}
    assert Path(index.loc["normal/n1.png", "image_path"]).is_file()


def test_folder_unknown_class_and_non_images_rejected(folder_root: Path) -> None:
    result = ingest("folder", folder_root)
    rejects = dict(zip(result.rejects["source"], result.rejects["reason"], strict=True))
    assert rejects["unsure/u1.png"] == "unknown class folder 'unsure'"
    assert rejects["unsure/u2.png"] == "unknown class folder 'unsure'"
    assert rejects["normal/notes.txt"] == "unsupported file type '.txt'"
    assert len(result.index) == 6
    assert result.reconciliation[["total", "kept", "rejected"]].iloc[0].tolist() == [9, 6, 3]
    result.check_reconciliation()


def test_folder_file_lost_without_reject_is_caught(
    folder_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(folder, "tqdm", lambda files, **_: files[:-1])  # loses unsure/u2.png
    with pytest.raises(ReconciliationError, match=r"\(files\): 9 read, 6 kept, 2 rejected; 1 read"):
        ingest("folder", folder_root)


def test_folder_patients_csv_groups_files(folder_root: Path) -> None:
    index = ingest("folder", folder_root, seed=5).index.set_index("image_id")
    assert index.loc["MALIGNANT/case7_left.png", "patient_id"] == "case7"
    assert index.loc["MALIGNANT/case7_right.png", "patient_id"] == "case7"
    assert index.loc["normal/n1.png", "patient_id"] == "n1"
    assert_no_patient_leakage(index.reset_index())


def test_folder_patients_csv_needs_its_columns(folder_root: Path) -> None:
    (folder_root / "patients.csv").write_text("name,patient\nx,y\n")
    with pytest.raises(ValueError, match="patients.csv: missing column"):
        folder.read_patient_map(folder_root)
