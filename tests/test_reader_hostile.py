"""The reader on small files the test writes itself: every format, and every refusal."""

from __future__ import annotations

import pickle
import time
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from mammo_utils import ImageReadError, read_image
from mammo_utils.reader import MAX_PIXELS, METADATA_KEYS

RNG = np.random.default_rng(0)
_MG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray Image - For Presentation


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    shape: tuple[int, int] | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    preamble: bool = True,
    **tags,
) -> Path:
    """Write a small uncompressed DICOM; ``shape`` overrides Rows/Columns to lie in the header."""
    frames, rows, columns, samples = _layout(pixels, shape)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    ds.file_meta.MediaStorageSOPClassUID = _MG_SOP_CLASS
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = _MG_SOP_CLASS
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits_stored <= 8 else 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    if samples > 1:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if pixels is not None:
        data = pixels.astype(np.uint8 if bits_stored <= 8 else np.uint16).tobytes()
        ds.PixelData = encapsulate([data]) if UID(transfer_syntax).is_encapsulated else data
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.file_meta = FileMetaDataset()
        ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def _layout(pixels: np.ndarray | None, shape: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """(frames, rows, columns, samples): ``(rows, cols, 3)`` is RGB, ``(n, rows, cols)`` frames."""
    if pixels is None:
        rows, columns = shape or (8, 8)
        return 1, rows, columns, 1
    samples = 3 if pixels.ndim == 3 and pixels.shape[2] == 3 else 1
    frames = pixels.shape[0] if pixels.ndim == 3 and samples == 1 else 1
    rows, columns = shape or (pixels.shape[:2] if samples == 3 else pixels.shape[-2:])
    return frames, int(rows), int(columns), samples


def _ramp(rows: int = 32, columns: int = 24, high: int = 4095) -> np.ndarray:
    return RNG.integers(0, high + 1, size=(rows, columns)).astype(np.uint16)


def _png_bytes(pixels: np.ndarray, extension: str = ".png", params: tuple = ()) -> bytes:
    ok, encoded = cv2.imencode(extension, pixels, list(params))
    assert ok
    return encoded.tobytes()


# --- DICOM ------------------------------------------------------------------------------


def test_monochrome2_full_range_is_stored_value_over_bits(tmp_path):
    pixels = _ramp()
    image, metadata = read_image(write_dicom(tmp_path / "a.dcm", pixels))
    np.testing.assert_allclose(image, pixels / 4095, atol=1e-6)
    assert image.dtype == np.float32
    assert metadata["voi_source"] == "full_range" and metadata["format"] == "dicom"
    assert set(metadata) == set(METADATA_KEYS) and metadata["warnings"] == []


def test_monochrome1_is_inverted(tmp_path):
    pixels = _ramp()
    image, _ = read_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    np.testing.assert_allclose(image, 1 - pixels / 4095, atol=1e-6)


def test_rescale_maps_full_range_with_it(tmp_path):
    pixels = _ramp()
    path = write_dicom(tmp_path / "r.dcm", pixels, RescaleSlope=2, RescaleIntercept=-1000)
    image, _ = read_image(path)
    np.testing.assert_allclose(image, pixels / 4095, atol=1e-5)


def test_first_of_several_windows_is_applied(tmp_path):
    pixels = np.array([[0, 100, 200, 300, 400]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "w.dcm", pixels, WindowCenter=[200.5, 1000], WindowWidth=[201, 50]
    )
    image, metadata = read_image(path)
    assert metadata["voi_source"] == "window"
    assert (metadata["window_center"], metadata["window_width"]) == (200.5, 201.0)
    np.testing.assert_allclose(image[0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_invalid_window_width_falls_back_to_full_range(tmp_path):
    path = write_dicom(tmp_path / "w0.dcm", _ramp(), WindowCenter=100, WindowWidth=0)
    _, metadata = read_image(path)
    assert metadata["voi_source"] == "full_range"
    assert any("window width" in warning for warning in metadata["warnings"])


def test_multi_frame_gives_the_first_frame_with_a_warning(tmp_path):
    frames = np.stack([_ramp(), _ramp(), _ramp()])
    image, metadata = read_image(write_dicom(tmp_path / "mf.dcm", frames))
    np.testing.assert_allclose(image, frames[0] / 4095, atol=1e-6)
    assert any("3 frames" in warning for warning in metadata["warnings"])


def test_colour_dicom_becomes_luma_or_is_refused(tmp_path):
    rgb = RNG.integers(0, 256, size=(16, 12, 3)).astype(np.uint8)
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits_stored=8)
    image, metadata = read_image(path)
    expected = (rgb @ np.array([0.299, 0.587, 0.114])) / 255
    np.testing.assert_allclose(image, expected, atol=1e-5)
    assert any("grayscale" in warning for warning in metadata["warnings"])
    with pytest.raises(ImageReadError, match="colour image refused"):
        read_image(path, allow_color=False)


def test_dicom_without_preamble_is_read(tmp_path):
    pixels = _ramp()
    path = write_dicom(tmp_path / "raw.dcm", pixels, preamble=False)
    assert path.read_bytes()[128:132] != b"DICM"
    image, _ = read_image(path)
    np.testing.assert_allclose(image, pixels / 4095, atol=1e-6)


def test_laterality_and_view_from_tags_and_from_identifiers(tmp_path):
    tagged = write_dicom(tmp_path / "t.dcm", _ramp(), ImageLaterality="R", ViewPosition="MLO")
    assert [read_image(tagged)[1][k] for k in ("laterality", "view")] == ["RIGHT", "MLO"]
    parsed = write_dicom(tmp_path / "p.dcm", _ramp(), PatientID="Calc-Test_P_00042_LEFT_CC_1")
    _, metadata = read_image(parsed)
    assert (metadata["laterality"], metadata["view"]) == ("LEFT", "CC")
    assert "P_00042" not in " ".join(str(value) for value in metadata.values())


def test_series_description_keeps_only_allowed_words(tmp_path):
    path = write_dicom(
        tmp_path / "s.dcm", _ramp(), PatientID="Mass-Test_P_00001_LEFT_CC",
        SeriesDescription="Mass-Test_P_00001_LEFT_CC full mammogram images",
        PatientName="Doe^Jane", AccessionNumber="A123456",
    )
    _, metadata = read_image(path)
    assert metadata["series_description"] == "LEFT CC full mammogram images"
    other = write_dicom(tmp_path / "o.dcm", _ramp(),
                        SeriesDescription="L CC Jane Doe 1965-04-12 mrn 99812345")
    assert read_image(other)[1]["series_description"] == "L CC"
    rendered = " ".join(str(value) for value in metadata.values())
    for secret in ("P_00001", "Doe^Jane", "A123456"):
        assert secret not in rendered


@pytest.mark.parametrize(
    ("writer", "reason"),
    [
        (lambda p: _write(p, b""), "empty file"),
        (lambda p: _write(p, b"hello, I am not a mammogram\n" * 20), "no 'DICM' marker"),
        (lambda p: write_dicom(p, None), "no Pixel Data"),
        (lambda p: _truncate(write_dicom(p, _ramp(64, 64)), 1000), "pixel data truncated"),
        (lambda p: write_dicom(p, _ramp(), Rows=0), "empty image"),
        (
            lambda p: write_dicom(p, _ramp(), transfer_syntax="1.2.840.10008.1.2.4.100"),
            "no decoder exists for transfer syntax MPEG2",
        ),
    ],
    ids=["empty", "text-named-dcm", "no-pixel-data", "truncated", "zero-rows", "mpeg2"],
)
def test_hostile_dicom_is_refused_naming_file_and_reason(tmp_path, writer, reason):
    path = writer(tmp_path / "hostile.dcm")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path) and str(path) in str(info.value)
    assert reason in info.value.reason


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _truncate(path: Path, n_bytes: int) -> Path:
    path.write_bytes(path.read_bytes()[:-n_bytes])
    return path


def test_huge_dicom_header_is_refused_before_decoding(tmp_path):
    path = write_dicom(tmp_path / "huge.dcm", _ramp(), shape=(60000, 60000))
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ImageReadError, match="megapixel limit"):
        read_image(path)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert 60000 * 60000 > MAX_PIXELS
    assert elapsed < 2.0 and peak < 20_000_000


def test_huge_png_header_is_refused_before_decoding():
    ihdr = (60000).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    data = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + ihdr + b"\0" * 4
    tracemalloc.start()
    with pytest.raises(ImageReadError, match="60000 x 60000"):
        read_image(data, name="huge.png")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20_000_000


# --- rasters ----------------------------------------------------------------------------


def test_png_8_and_16_bit_scale_by_dtype_max():
    eight = RNG.integers(0, 256, size=(20, 30)).astype(np.uint8)
    sixteen = RNG.integers(0, 65536, size=(20, 30)).astype(np.uint16)
    image8, meta8 = read_image(_png_bytes(eight), name="x.png")
    image16, meta16 = read_image(_png_bytes(sixteen), name="x.png")
    np.testing.assert_allclose(image8, eight / 255, atol=1e-6)
    np.testing.assert_allclose(image16, sixteen / 65535, atol=1e-6)
    assert (meta8["bits_stored"], meta16["bits_stored"]) == (8, 16)
    assert meta8["format"] == "png" and set(meta8) == set(METADATA_KEYS)


def test_jpeg_is_read_close_to_its_source():
    gray = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))
    image, metadata = read_image(_png_bytes(gray, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, 100)))
    assert metadata["format"] == "jpeg" and image.shape == (48, 64)
    np.testing.assert_allclose(image, gray / 255, atol=3 / 255)


def test_colour_png_warns_and_gray_stored_as_colour_does_not():
    bgr = RNG.integers(0, 256, size=(10, 10, 3)).astype(np.uint8)
    image, metadata = read_image(_png_bytes(bgr), name="c.png")
    np.testing.assert_allclose(image, (bgr @ np.array([0.114, 0.587, 0.299])) / 255, atol=1e-5)
    assert metadata["photometric_interpretation"] == "RGB" and metadata["warnings"]
    with pytest.raises(ImageReadError, match="c.png: colour image refused"):
        read_image(_png_bytes(bgr), name="c.png", allow_color=False)
    gray = np.repeat(bgr[..., :1], 3, axis=2)
    image, metadata = read_image(_png_bytes(gray), allow_color=False)
    np.testing.assert_allclose(image, gray[..., 0] / 255, atol=1e-6)
    assert metadata["warnings"] == []


@pytest.mark.parametrize("maxval", [255, 4095, 65535])
def test_pgm_p5_scales_by_maxval(maxval):
    pixels = RNG.integers(0, maxval + 1, size=(7, 9))
    dtype = ">u1" if maxval < 256 else ">u2"
    header = f"P5\n# mini-MIAS style comment\n9 7\n{maxval}\n".encode()
    image, metadata = read_image(header + pixels.astype(dtype).tobytes(), name="mdb001.pgm")
    np.testing.assert_allclose(image, pixels / maxval, atol=1e-6)
    assert metadata["format"] == "pgm" and metadata["laterality"] is None


def test_pgm_p2_ascii():
    image, _ = read_image(b"P2\n3 2\n10\n0 5 10\n10 5 0\n")
    np.testing.assert_allclose(image, [[0, 0.5, 1], [1, 0.5, 0]], atol=1e-6)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"P5\n9 7\n255\n" + b"\0" * 10, "PGM pixel data truncated"),
        (b"P5\nnine seven\n", "PGM header is malformed"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\0" + b"\0" * 7, "no frame"),
        (b"\x89PNG\r\n\x1a\n\0\0", "PNG header is truncated"),
        (b"GIF89a" + b"\0" * 50, "not a DICOM, PNG, JPEG or PGM"),
    ],
    ids=["pgm-truncated", "pgm-header", "jpeg-no-sof", "png-header", "gif"],
)
def test_hostile_rasters_are_refused(data, reason):
    with pytest.raises(ImageReadError, match=reason) as info:
        read_image(data, name="upload.bin")
    assert info.value.path == "upload.bin"


def test_truncated_png_is_refused():
    data = _png_bytes(RNG.integers(0, 256, size=(64, 64)).astype(np.uint8))
    with pytest.raises(ImageReadError, match="could not be decoded"):
        read_image(data[: len(data) // 2], name="cut.png")


def test_bytes_and_path_give_the_same_result(tmp_path):
    path = tmp_path / "Mass-Training_P_00005_RIGHT_MLO.png"
    path.write_bytes(_png_bytes(_ramp(high=65535)))
    from_path = read_image(path)
    from_bytes = read_image(path.read_bytes(), name=path.name)
    np.testing.assert_array_equal(from_path[0], from_bytes[0])
    assert from_path[1] == from_bytes[1]
    assert (from_path[1]["laterality"], from_path[1]["view"]) == ("RIGHT", "MLO")


# --- the error type ---------------------------------------------------------------------


def test_missing_file_is_an_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="cannot be read"):
        read_image(tmp_path / "nowhere.dcm")


def test_error_is_a_value_error_that_survives_pickling():
    err = ImageReadError("a/b.dcm", "empty file (0 bytes)")
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, ValueError)
    assert (copy.path, copy.reason, str(copy)) == ("a/b.dcm", "empty file (0 bytes)", str(err))


def test_non_path_source_is_a_type_error():
    with pytest.raises(TypeError, match="path or bytes"):
        read_image(42)
