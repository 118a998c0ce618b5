"""The synthetic CBIS-DDSM data set: layout, CSV columns and quirks, DICOM variety,
determinism, resumability and the ``mammo synth`` command."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from mammo_utils.cli import main
from mammo_utils.synth import generate_dataset
from mammo_utils.synth.phantom import draw_breast

CASE_FILES = [
    f"{kind}_case_description_{split}_set.csv"
    for kind in ("mass", "calc")
    for split in ("train", "test")
]
FOLDER = re.compile(r"^(Mass|Calc)-(Training|Test)_P_\d{5}_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$")
NORMAL_FOLDER = re.compile(r"^Normal_P_\d{5}_(LEFT|RIGHT)_(CC|MLO)$")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def case_rows(root: Path) -> list[dict[str, str]]:
    return [row for name in CASE_FILES for row in read_rows(root / name)]


def series_folders(root: Path) -> dict[str, Path]:
    """Series UID -> folder, joined through metadata.csv as a real download is."""
    rows = read_rows(root / "metadata.csv")
    return {row["Series UID"]: root / row["File Location"] for row in rows}


def series_of(csv_path: str) -> str:
    return csv_path.strip().split("/")[2]


@pytest.fixture(scope="module")
def cli_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The set ``mammo synth --patients 12 --seed 3`` writes."""
    out = tmp_path_factory.mktemp("synth_cli") / "set"
    status = main(["synth", "--out", str(out), "--patients", "12", "--seed", "3", "--quiet"])
    assert status == 0
    return out


@pytest.fixture(scope="module")
def dicoms(cli_set: Path) -> dict[Path, pydicom.Dataset]:
    return {path: pydicom.dcmread(path) for path in sorted(cli_set.rglob("*.dcm"))}


def test_cli_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--out", "--patients", "--seed", "--size"):
        assert option in help_text


def test_layout(cli_set: Path) -> None:
    for name in [*CASE_FILES, "normal_case_description.csv", "metadata.csv"]:
        assert (cli_set / name).is_file(), name
    manifest = json.loads((cli_set / "synth_manifest.json").read_text())
    assert manifest["complete"] is True
    assert manifest["parameters"]["patients"] == 12 and manifest["parameters"]["seed"] == 3
    folders = [path.name for path in (cli_set / "CBIS-DDSM").iterdir()]
    assert all(FOLDER.match(name) or NORMAL_FOLDER.match(name) for name in folders), folders
    assert any(NORMAL_FOLDER.match(name) for name in folders)
    assert any(name.endswith("_1") for name in folders)
    for path in (cli_set / "CBIS-DDSM").rglob("*"):
        if path.is_file():
            assert re.fullmatch(r"1-[12]\.dcm", path.name), path
            assert len(path.relative_to(cli_set / "CBIS-DDSM").parts) == 4
    assert not list(cli_set.rglob("*.tmp"))


def test_case_columns_equal_the_official_files(cli_set: Path, cbis_csv_dir: Path) -> None:
    for name in CASE_FILES:
        with (cbis_csv_dir / name).open(newline="") as handle:
            official = next(csv.reader(handle))
        with (cli_set / name).open(newline="") as handle:
            synthetic = next(csv.reader(handle))
        assert synthetic == official, name


def test_csv_quirks(cli_set: Path) -> None:
    raw = b"".join((cli_set / name).read_bytes() for name in CASE_FILES)
    assert b'.dcm\n"' in raw, "a quoted path ending with a newline"
    rows = case_rows(cli_set)
    splits_of = {}
    for name in CASE_FILES:
        for row in read_rows(cli_set / name):
            splits_of.setdefault(row["patient_id"], set()).add(name.split("_")[-2])
    assert any(splits == {"train", "test"} for splits in splits_of.values())
    repeated = Counter(row["image file path"] for row in rows)
    assert max(repeated.values()) >= 2, "a full image with two abnormalities"
    assert {row["pathology"] for row in rows} <= {"BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT"}
    for row in rows:
        for column in ("image file path", "cropped image file path", "ROI mask file path"):
            assert re.search(r"/00000[01]\.dcm$", row[column].strip()), row[column]


def _is_mask(ds: pydicom.Dataset, shape: tuple[int, int]) -> bool:
    pixels = ds.pixel_array
    return pixels.shape == shape and set(np.unique(pixels).tolist()) <= {0, 255}


def test_every_csv_path_resolves_and_swaps_are_detectable(cli_set: Path) -> None:
    folders = series_folders(cli_set)
    swapped = plain = 0
    for row in case_rows(cli_set):
        image_path = row["image file path"].strip()
        full = pydicom.dcmread(folders[series_of(image_path)] / "1-1.dcm")
        folder, study, series, _ = image_path.split("/")
        assert (full.PatientID, full.StudyInstanceUID, full.SeriesInstanceUID) == (
            folder,
            study,
            series,
        )
        assert full.SeriesDescription == "full mammogram images"
        shape = (full.Rows, full.Columns)
        roi_files = {
            path
            for column in ("ROI mask file path", "cropped image file path")
            for path in folders[series_of(row[column])].glob("*.dcm")
        }
        roles = {_is_mask(pydicom.dcmread(path), shape) for path in roi_files}
        assert roles == {True, False}, "one mask and one crop per abnormality"
        mask_path = row["ROI mask file path"].strip()
        number = int(mask_path[-10:-4])
        by_number = folders[series_of(mask_path)] / f"1-{number + 1}.dcm"
        if _is_mask(pydicom.dcmread(by_number), shape):
            plain += 1
        else:
            swapped += 1
    assert swapped > 0 and plain > 0


def test_normal_list_points_at_normal_images(cli_set: Path) -> None:
    folders = series_folders(cli_set)
    rows = read_rows(cli_set / "normal_case_description.csv")
    assert rows and list(rows[0]) == [
        "patient_id",
        "left or right breast",
        "image view",
        "image file path",
    ]
    case_patients = {row["patient_id"] for row in case_rows(cli_set)}
    for row in rows:
        ds = pydicom.dcmread(folders[series_of(row["image file path"])] / "1-1.dcm")
        assert (
            ds.PatientID
            == f"Normal_{row['patient_id']}_{row['left or right breast']}_" + row["image view"]
        )
        assert row["patient_id"] not in case_patients


def test_dicom_variety(dicoms: dict[Path, pydicom.Dataset]) -> None:
    full = [ds for ds in dicoms.values() if ds.SeriesDescription == "full mammogram images"]
    assert {ds.PhotometricInterpretation for ds in full} == {"MONOCHROME1", "MONOCHROME2"}
    assert {ds.BitsStored for ds in full} == {12, 16}
    assert {"WindowCenter" in ds for ds in full} == {True, False}
    assert {"ImageLaterality" in ds for ds in full} == {True, False}
    assert {"ViewPosition" in ds for ds in full} == {True, False}
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in dicoms.values()}
    assert syntaxes == {RLELossless, ExplicitVRLittleEndian}
    for ds in dicoms.values():
        assert ds.Modality == "MG" and ds.BodyPartExamined == "BREAST"
        assert ds.SeriesDescription in {
            "full mammogram images",
            "ROI mask images",
            "cropped images",
        }
    masks = [ds for ds in dicoms.values() if ds.SeriesDescription == "ROI mask images"]
    assert all(ds.BitsStored == 8 and ds.PhotometricInterpretation == "MONOCHROME2" for ds in masks)
    crops = [ds for ds in dicoms.values() if ds.SeriesDescription == "cropped images"]
    assert crops and all(ds.Rows < 512 and ds.Columns < 512 for ds in crops)


def test_roi_patient_ids_name_their_folder(dicoms: dict[Path, pydicom.Dataset]) -> None:
    for path, ds in dicoms.items():
        assert ds.PatientID == path.parts[-4]


@pytest.mark.parametrize("laterality", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_label_lies_outside_the_breast(laterality: str, view: str) -> None:
    for seed in range(4):
        phantom = draw_breast(
            np.random.default_rng(seed), (512, 320), laterality=laterality, view=view, density=3
        )
        x0, y0, x1, y1 = phantom.label_box
        assert not phantom.breast[y0:y1, x0:x1].any()
        assert phantom.image[y0:y1, x0:x1].max() > 0.9, "the label is burned in"
        chest_wall_left = phantom.breast[:, 0].sum() > phantom.breast[:, -1].sum()
        assert chest_wall_left == (laterality == "LEFT")


def _pixels(root: Path) -> dict[str, np.ndarray]:
    return {
        str(path.relative_to(root)): pydicom.dcmread(path).pixel_array
        for path in sorted(root.rglob("*.dcm"))
    }


def _tables(root: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(root.glob("*.csv"))}


def test_same_seed_same_set_other_seed_other_set(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path / "a", patients=3, seed=5, progress=False).out
    second = generate_dataset(tmp_path / "b", patients=3, seed=5, progress=False).out
    other = generate_dataset(tmp_path / "c", patients=3, seed=6, progress=False).out
    assert _tables(first) == _tables(second)
    # Every DICOM byte too: RLE compression must not mint a fresh random instance UID
    # (it once did, and the file sizes in metadata.csv then varied between runs).
    dicoms_first, dicoms_second = (
        {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}
        for root in (first, second)
    )
    assert dicoms_first == dicoms_second
    pixels_first, pixels_second = _pixels(first), _pixels(second)
    assert pixels_first.keys() == pixels_second.keys()
    for name, array in pixels_first.items():
        np.testing.assert_array_equal(array, pixels_second[name], err_msg=name)
    assert _tables(first)["metadata.csv"] != _tables(other)["metadata.csv"]
    full_first = next(a for n, a in pixels_first.items() if not re.search(r"_\d+/", n))
    full_other = next(a for n, a in _pixels(other).items() if not re.search(r"_\d+/", n))
    assert full_first.shape != full_other.shape or not np.array_equal(full_first, full_other)


def test_summary_matches_the_files(cli_set: Path) -> None:
    summary = generate_dataset(cli_set, patients=12, seed=3, progress=False)
    assert summary.reused
    rows = case_rows(cli_set)
    assert summary.n_abnormalities == len(rows)
    drawn = {name: count for name, count in summary.pathology_counts.items() if count}
    assert drawn == Counter(row["pathology"] for row in rows)
    assert sum(summary.pathology_counts.values()) == len(rows)
    assert summary.n_normals == len(read_rows(cli_set / "normal_case_description.csv"))
    full_images = {row["image file path"] for row in rows}
    assert summary.n_images == len(full_images) + summary.n_normals


def test_other_parameters_need_overwrite(cli_set: Path) -> None:
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_dataset(cli_set, patients=5, seed=3, progress=False)


def test_interrupted_run_resumes(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path / "set", patients=2, seed=1, progress=False).out
    files = sorted(out.rglob("*.dcm"))
    victim = files[len(files) // 2]
    expected = pydicom.dcmread(victim).pixel_array
    victim.unlink()
    manifest_path = out / "synth_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["complete"] = False
    manifest_path.write_text(json.dumps(manifest))
    summary = generate_dataset(out, patients=2, seed=1, progress=False)
    assert not summary.reused
    np.testing.assert_array_equal(pydicom.dcmread(victim).pixel_array, expected)
    assert json.loads(manifest_path.read_text())["complete"] is True


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"patients": 0}, "patients"),
        ({"size": "huge"}, "size"),
        ({"normal_fraction": 1.5}, "normal"),
    ],
)
def test_bad_parameters_are_refused(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "set", **arguments)
