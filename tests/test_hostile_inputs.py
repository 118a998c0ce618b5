"""Adversarial inputs for the reader, the ingest adapters and the ``mammo`` CLIs.

Each case either reads correctly or fails with a clear error naming the file and the
reason; batch stages count every input as kept or rejected. The cases here are the ones
that found bugs (NaN images, pydicom exceptions escaping the reader, an index crash on a
symlink loop, duplicated lesions) or that pin a decision (palette colour refused).
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian
from test_reader_hostile import write_dicom

from mammo_utils import ImageReadError, read_image
from mammo_utils.cli import main as mammo
from mammo_utils.ingest import ingest
from mammo_utils.ingest.dicom_index import index_dicom_tree

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 4096, size=(16, 12)).astype(np.uint16)
#: PIXELS read as two's complement 12-bit values, as PixelRepresentation 1 says.
SIGNED_12_BIT = np.where(PIXELS >= 2048, PIXELS.astype(np.int32) - 4096, PIXELS)
POSIX_BYTES_NAMES = pytest.mark.skipif(
    sys.platform != "linux", reason="file names that are not UTF-8 need a Linux file system"
)


def _lut(descriptor, data, *, modality: bool = False) -> dict:
    """A one-item VOI (or modality) LUT sequence as DICOM keyword arguments."""
    item = Dataset()
    item.LUTDescriptor = descriptor
    item.add_new(0x00283006, "OW" if isinstance(data, bytes) else "US", data)
    if modality:
        item.ModalityLUTType = "US"
    return {"ModalityLUTSequence" if modality else "VOILUTSequence": [item]}


def _assert_valid_image(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.float32 and image.shape == shape
    assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


# --- DICOM header values that used to give NaN images or escape as other exceptions ----

READABLE_WITH_WARNING = {
    "slope-nan": ({"RescaleSlope": "NaN"}, "rescale slope"),
    "slope-inf": ({"RescaleSlope": "inf"}, "rescale slope"),
    "slope-zero": ({"RescaleSlope": 0, "RescaleIntercept": 5}, "rescale slope"),
    "intercept-nan": ({"RescaleIntercept": "nan"}, "rescale slope"),
    "center-nan": ({"WindowCenter": "NaN", "WindowWidth": 100}, "window width"),
    "center-inf": ({"WindowCenter": "inf", "WindowWidth": 100}, "window width"),
    "width-inf": ({"WindowCenter": 100, "WindowWidth": "inf"}, "window width"),
    "width-negative": ({"WindowCenter": 100, "WindowWidth": -50}, "window width"),
    "voi-short-data": (_lut([4096, 0, 16], list(range(10))), "10 entries"),
    "voi-two-value-descriptor": (_lut([4096, 0], list(range(4096))), "2 values"),
    "voi-40-bit": (_lut([10, 0, 40], list(range(10))), "40 bits"),
    "voi-odd-ow-bytes": (_lut([10, 0, 16], b"\x01\x02\x03\x04"), "4 bytes"),
    "modality-short-data": (_lut([4096, 0, 16], list(range(5)), modality=True), "5 entries"),
    "modality-one-value-descriptor": (_lut([4096], list(range(4096)), modality=True), "1 values"),
    "modality-values-overflow-8-bit": (
        _lut([4096, 0, 8], list(range(4096)), modality=True), "do not fit"
    ),
}


@pytest.mark.parametrize(
    ("tags", "warning"), READABLE_WITH_WARNING.values(), ids=READABLE_WITH_WARNING.keys()
)
def test_unusable_transform_is_ignored_with_a_warning(tmp_path, tags, warning):
    image, metadata = read_image(write_dicom(tmp_path / "t.dcm", PIXELS, **tags))
    _assert_valid_image(image, PIXELS.shape)
    assert metadata["voi_source"] == "full_range"
    assert any(warning in text for text in metadata["warnings"]), metadata["warnings"]
    np.testing.assert_allclose(image, PIXELS / 4095, atol=1e-5)  # the stored values, untouched


def test_valid_voi_lut_is_applied(tmp_path):
    lut = 4095 - np.arange(4096)  # an inverting LUT: its effect is unmistakable
    image, metadata = read_image(write_dicom(tmp_path / "v.dcm", PIXELS, **_lut([4096, 0, 16],
                                                                                lut.tolist())))
    assert metadata["voi_source"] == "voi_lut" and metadata["warnings"] == []
    np.testing.assert_allclose(image, 1 - PIXELS / 4095, atol=1e-5)


@pytest.mark.parametrize(
    ("pixels", "tags", "expected"),
    [
        (PIXELS.byteswap(), {"transfer_syntax": ExplicitVRBigEndian}, PIXELS / 4095),
        (PIXELS, {"transfer_syntax": DeflatedExplicitVRLittleEndian}, PIXELS / 4095),
        (PIXELS, {"PixelRepresentation": 1}, (SIGNED_12_BIT + 2048) / 4095),
    ],
    ids=["big-endian", "deflated", "signed-12-bit"],
)
def test_uncommon_encodings_are_read(tmp_path, pixels, tags, expected):
    """``pixels`` are the bytes as stored: big-endian words for the big-endian file."""
    image, _ = read_image(write_dicom(tmp_path / "e.dcm", pixels, **tags))
    np.testing.assert_allclose(image, expected, atol=1e-5)


REFUSED_DICOM = {
    "palette-colour": ({"photometric": "PALETTE COLOR"}, "'PALETTE COLOR' is not supported"),
    "unknown-photometric": ({"photometric": "HSV"}, "'HSV' is not supported"),
    "bits-stored-over-allocated": ({"BitsStored": 20}, "'Bits Stored' value of '20'"),
    "bits-allocated-12": ({"BitsAllocated": 12}, "'Bits Allocated' value of '12'"),
    "negative-frames": ({"NumberOfFrames": -3}, "'Number of Frames' value of '-3'"),
    "huge-frames": ({"NumberOfFrames": 10**9}, "pixel data truncated"),
    "overflowing-size": ({"Rows": 65535, "Columns": 65535}, "megapixel limit"),
}


@pytest.mark.parametrize(("tags", "reason"), REFUSED_DICOM.values(), ids=REFUSED_DICOM.keys())
def test_inconsistent_dicom_is_refused(tmp_path, tags, reason):
    path = write_dicom(tmp_path / "bad.dcm", PIXELS, **tags)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path) and reason in info.value.reason


def test_mutated_dicom_bytes_never_escape_as_another_exception(tmp_path):
    """Seeded byte flips and truncations anywhere after the preamble."""
    data = write_dicom(tmp_path / "seed.dcm", PIXELS, WindowCenter=2000, WindowWidth=4000,
                       **_lut([4096, 0, 16], list(range(4096)))).read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"read": 0, "refused": 0}
    for trial in range(300):
        end = len(data) if trial % 2 else rng.integers(132, len(data))  # odd trials: whole file
        mutated = bytearray(data[:end])
        for position in rng.integers(132, len(mutated), size=4):
            mutated[position] = rng.integers(0, 256)
        try:
            image, _ = read_image(bytes(mutated), name=f"mutant{trial}.dcm")
        except ImageReadError as err:
            assert err.path == f"mutant{trial}.dcm"
            outcomes["refused"] += 1
        else:
            assert np.isfinite(image).all() and 0.0 <= image.min() <= image.max() <= 1.0
            outcomes["read"] += 1
    assert outcomes["read"] and outcomes["refused"]


# --- rasters and paths ------------------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def _palette_png() -> bytes:
    """A 4x2 palette PNG (black, gray, white) written with PIL."""
    image = pytest.importorskip("PIL.Image").new("P", (4, 2))
    image.putpalette([0, 0, 0, 128, 128, 128, 255, 255, 255])
    image.putdata([0, 1, 2, 0] * 2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _cmyk_jpeg() -> bytes:
    image = pytest.importorskip("PIL.Image").new("CMYK", (16, 8), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (_palette_png, (2, 4)),
        (lambda: _png(RNG.integers(0, 65536, (6, 5, 3)).astype(np.uint16)), (6, 5)),
        (lambda: _png(RNG.integers(0, 256, (6, 5, 4)).astype(np.uint8)), (6, 5)),
        (_cmyk_jpeg, (8, 16)),
        (lambda: b"P5\n4 2\n65535\n" + np.arange(8, dtype=">u2").tobytes(), (2, 4)),
    ],
    ids=["palette-png", "16-bit-rgb-png", "rgba-png", "cmyk-jpeg", "pgm-maxval-65535"],
)
def test_unusual_rasters_are_read(make, shape):
    image, _ = read_image(make(), name="upload")
    _assert_valid_image(image, shape)


def test_palette_png_maps_through_its_palette():
    image, _ = read_image(_palette_png(), name="p.png")
    np.testing.assert_allclose(image[0], [0, 128 / 255, 1, 0], atol=1e-6)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"P2\n2 2\n255\n1 -2 3 4\n", "outside 0..65535"),
        (b"P2\n2 2\n255\n1 2 3 99999\n", "outside 0..65535"),
        (b"\x89", "not a DICOM, PNG, JPEG or PGM"),
        (b"II*\x00" + b"\x00" * 20, "not a DICOM, PNG, JPEG or PGM"),
        (b"\0" * 128 + b"DICM", "truncated: the file ends inside its file meta header"),
    ],
    ids=["pgm-negative-sample", "pgm-sample-over-16-bit", "one-byte", "tiff", "dicm-only"],
)
def test_hostile_bytes_are_refused(data, reason):
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(data, name="upload.img")
    assert info.value.path == "upload.img"


def _symlink_loop(folder: Path) -> Path:
    os.symlink(folder / "b.png", folder / "a.png")
    os.symlink(folder / "a.png", folder / "b.png")
    return folder / "a.png"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda folder: folder, "Is a directory"),
        (_symlink_loop, "symbolic links"),
        (lambda folder: folder / "missing.png", "No such file"),
    ],
    ids=["directory", "symlink-loop", "missing"],
)
def test_unreadable_paths_are_refused_naming_them(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(path)
    assert info.value.path == str(path)


@POSIX_BYTES_NAMES
def test_file_name_that_is_not_utf8_is_read(tmp_path):
    path = Path(os.fsdecode(bytes(tmp_path) + b"/\xff\xfe.png"))
    path.write_bytes(_png(np.full((3, 3), 255, np.uint8)))
    image, _ = read_image(path)
    assert image.min() == 1.0


# --- CBIS-DDSM case-description CSVs ----------------------------------------------------

CSV_NAME = "mass_case_description_train_set.csv"
HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,"
          "abnormality type,mass shape,mass margins,assessment,pathology,subtlety,"
          "image file path,cropped image file path,ROI mask file path\n")


def _row(patient: str, pathology: str = "MALIGNANT", folder: str | None = None) -> str:
    folder = folder or f"Mass-Training_{patient}_LEFT_CC"
    return (f"{patient},3,LEFT,CC,1,mass,OVAL,CIRCUMSCRIBED,4,{pathology},3,"
            f"{folder}/1.2.3/1.2.4/000000.dcm,{folder}_1/1.2.3/1.2.5/000000.dcm,"
            f'"{folder}_1/1.2.3/1.2.6/000001.dcm\n"\n')


GOOD = _row("P_00001") + _row("P_00002", "BENIGN")


def _ingest_csv(tmp_path: Path, content: str | bytes):
    (tmp_path / CSV_NAME).write_bytes(
        content if isinstance(content, bytes) else content.encode("utf-8")
    )
    return ingest("cbis-ddsm", tmp_path, require_images=False)


@pytest.mark.parametrize(
    "content",
    [
        HEADER + GOOD,
        "\ufeff" + HEADER + GOOD,
        (HEADER + GOOD).replace("\n", "\r\n"),
        HEADER.replace("\n", ",extra\n") + GOOD.replace('"\n', '",junk\n'),
    ],
    ids=["plain", "utf8-bom", "crlf", "extra-column"],
)
def test_csv_variants_give_the_same_index(tmp_path, content):
    result = _ingest_csv(tmp_path, content)
    assert result.index["patient_id"].tolist() == ["P_00001", "P_00002"]
    assert result.index["label"].tolist() == ["MALIGNANT", "BENIGN"]
    assert result.rejects.empty


@pytest.mark.parametrize(
    ("rows", "kept", "reason"),
    [
        (GOOD + _row("P_00003", "MAYBE"), 2, "unknown pathology"),
        (GOOD + _row("", folder="Mass-Training_P_00004_LEFT_CC"), 2, "empty patient_id"),
        (GOOD + GOOD, 2, "duplicate of mass_case_description_train_set.csv:1"),
        (GOOD + _row("P_00005", folder="Mass Training P_00005 LEFT CC"), 3, None),
    ],
    ids=["unknown-pathology", "empty-patient", "duplicated-rows", "path-with-spaces"],
)
def test_bad_rows_are_counted_rejects(tmp_path, rows, kept, reason):
    result = _ingest_csv(tmp_path, HEADER + rows)
    result.check_reconciliation()
    csv_rows = result.reconciliation.set_index("unit").loc["csv rows"]
    assert (csv_rows["total"], csv_rows["kept"]) == (rows.count("OVAL"), kept)
    assert len(result.lesions) == kept  # a duplicate no longer doubles a lesion
    reasons = result.rejects["reason"].tolist()
    assert (reasons == []) if reason is None else any(reason in text for text in reasons)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (HEADER.replace("pathology,", "") + "P_1,3\n", r"missing column\(s\) pathology"),
        ("", "not a readable UTF-8 CSV"),
        (HEADER, "hold no rows"),
        (HEADER + GOOD + "P_9,3,LEFT,CC,1,mass,a,b,4,BENIGN,3,p,q,r,s,t,u\n", "Expected 14 fields"),
        ((HEADER + GOOD).replace("OVAL", "OVAL\xe9").encode("latin-1"), "UTF-8"),
    ],
    ids=["missing-column", "empty-file", "header-only", "ragged-row", "latin-1"],
)
def test_unusable_csv_is_a_clear_error(tmp_path, content, reason):
    with pytest.raises(ValueError, match=reason) as info:
        _ingest_csv(tmp_path, content)
    assert str(tmp_path) in str(info.value)


def test_ingest_cli_reports_a_data_error_without_traceback(tmp_path, capsys):
    (tmp_path / CSV_NAME).write_text("")
    status = mammo(["ingest", "cbis-ddsm", "--root", str(tmp_path), "--out",
                    str(tmp_path / "out"), "--csv-only"])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("mammo ingest: error: ") and CSV_NAME in err
    assert mammo(["ingest", "mias", "--root", str(tmp_path / "nowhere"), "--out",
                  str(tmp_path / "out")]) == 1
    assert "is not a folder" in capsys.readouterr().err


# --- DICOM trees and image folders ------------------------------------------------------


def _hostile_tree(root: Path, good: Path) -> dict[str, str]:
    """Bad files beside copies of ``good``; returns file name -> expected error text."""
    (root / "zero.dcm").write_bytes(b"")
    (root / "folder.dcm").mkdir()
    os.symlink(root / "nowhere", root / "dangling.dcm")
    os.symlink(root / "loop2.dcm", root / "loop1.dcm")
    os.symlink(root / "loop1.dcm", root / "loop2.dcm")
    (root / os.fsdecode(b"\xff.dcm")).write_bytes(good.read_bytes())
    return {
        "zero.dcm": "not a readable DICOM",
        "folder.dcm": "Is a directory",
        "nowhere": "No such file",  # the dangling link, resolved
        "loop1.dcm": "symbolic links",
        "\\xff.dcm": "not valid UTF-8",
    }


@POSIX_BYTES_NAMES
def test_header_index_records_bad_files_instead_of_crashing(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    good = write_dicom(root / "good.dcm", PIXELS, PatientID="Mass-Training_P_00001_LEFT_CC")
    expected = _hostile_tree(root, good)
    cache = tmp_path / "headers.csv"
    for _ in range(2):  # the second pass reads the cache written by the first
        headers = index_dicom_tree(root, cache)
        headers.index = [path.rsplit("/", 1)[1] for path in headers["path"]]
        assert headers.loc["good.dcm", "rows"] == 16 and headers.loc["good.dcm", "error"] == ""
        assert headers["rows"].dtype.kind == "i"
        for name, error in expected.items():
            assert error in headers.loc[name, "error"], name


@POSIX_BYTES_NAMES
def test_folder_ingest_counts_broken_links_and_bad_names(tmp_path):
    root = tmp_path / "images"
    (root / "BENIGN").mkdir(parents=True)
    (root / "BENIGN" / "ok.png").write_bytes(_png(np.zeros((4, 4), np.uint8)))
    _symlink_loop(root / "BENIGN")
    (root / "BENIGN" / os.fsdecode(b"\xfe.png")).write_bytes(b"whatever")
    result = ingest("folder", root)
    result.check_reconciliation()
    assert result.index["image_id"].tolist() == ["BENIGN/ok.png"]
    reasons = dict(zip(result.rejects["source"], result.rejects["reason"], strict=True))
    assert reasons == {
        "BENIGN/a.png": "broken symbolic link",
        "BENIGN/b.png": "broken symbolic link",
        "BENIGN/\\xfe.png": "file name is not valid UTF-8; rename it",
    }
    result.save(tmp_path / "out")  # every table is writable as UTF-8
    assert "\\xfe.png" in (tmp_path / "out" / "rejects.csv").read_text()


# --- mammo predict on a mix of good and bad files ---------------------------------------


def test_predict_reports_each_bad_file_and_predicts_the_rest(
    bright_roi_model_dir, breast_png, tmp_path, capsys
):
    odd_but_readable = write_dicom(tmp_path / "nan_window.dcm", PIXELS,
                                   WindowCenter="NaN", WindowWidth=100)
    bad = {
        "palette.dcm": write_dicom(tmp_path / "palette.dcm", PIXELS, photometric="PALETTE COLOR"),
        "missing.png": tmp_path / "missing.png",
        "zero.png": tmp_path / "zero.png",
        "a_folder": tmp_path / "a_folder",
    }
    bad["zero.png"].write_bytes(b"")
    bad["a_folder"].mkdir()
    files = [breast_png, *bad.values(), odd_but_readable]
    status = mammo(["predict", *map(str, files), "--model", str(bright_roi_model_dir), "--json"])
    lines = {Path(r["file"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert status == 1
    assert list(lines) == [Path(path).name for path in files]
    for name in bad:
        assert name in lines[name]["error"]
    assert lines[breast_png.name]["label"] == "MALIGNANT"
    assert np.isfinite(list(lines["nan_window.dcm"]["probabilities"].values())).all()
    assert pd.Series(lines["nan_window.dcm"]["warnings"]).str.contains("window width").any()
