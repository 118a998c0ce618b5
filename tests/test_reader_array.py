"""The reader on numpy arrays: the same grayscale conversion and scaling as files."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammo_utils import ImageReadError, read_image
from mammo_utils.reader import METADATA_KEYS

RNG = np.random.default_rng(0)


def test_array_of_a_decoded_file_reads_back_unchanged(tmp_path):
    pixels = RNG.integers(0, 65536, size=(40, 30), dtype=np.uint16)
    path = tmp_path / "Calc-Test_P_00001_LEFT_MLO.png"
    cv2.imwrite(str(path), pixels)
    decoded, _ = read_image(path)
    again, metadata = read_image(decoded)
    np.testing.assert_array_equal(again, decoded)
    assert again.dtype == np.float32 and not np.shares_memory(again, decoded)
    assert metadata["warnings"] == [] and metadata["format"] == "array"
    assert tuple(metadata) == METADATA_KEYS
    assert (metadata["rows"], metadata["columns"]) == (40, 30)
    # An integer array is scaled by its type's maximum, exactly as the PNG's samples were.
    np.testing.assert_array_equal(read_image(pixels)[0], decoded)
    # A name is a hint for laterality and view, as for an upload.
    _, named = read_image(decoded, name=path.name)
    assert (named["laterality"], named["view"]) == ("LEFT", "MLO")


def test_colour_array_becomes_the_readers_luma_or_is_refused(tmp_path):
    rgb = RNG.integers(0, 256, size=(16, 12, 3), dtype=np.uint8)
    image, metadata = read_image(rgb)
    np.testing.assert_allclose(image, rgb @ np.array([0.299, 0.587, 0.114]) / 255, atol=1e-5)
    assert any("converted to grayscale" in note for note in metadata["warnings"])
    # The same pixels as a PNG file (OpenCV writes BGR) read to the same image.
    cv2.imwrite(str(tmp_path / "rgb.png"), rgb[..., ::-1])
    np.testing.assert_allclose(image, read_image(tmp_path / "rgb.png")[0], atol=1e-6)
    with pytest.raises(ImageReadError, match="colour image refused"):
        read_image(rgb, allow_color=False)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(read_image(rgba)[0], image)
    gray_as_rgb = np.repeat(rgb[..., :1], 3, axis=2)
    assert read_image(gray_as_rgb)[1]["warnings"] == []


def test_float_array_outside_unit_range_is_stretched_with_a_warning():
    stretched, metadata = read_image(np.linspace(-5, 5, 100).reshape(10, 10))
    assert stretched.dtype == np.float32
    assert stretched.min() == 0.0 and stretched.max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(stretched.ravel(), np.linspace(0, 1, 100), atol=1e-6)
    assert metadata["warnings"] == ["values in [-5, 5] were stretched to [0, 1]"]
    flat, _ = read_image(np.full((4, 4), 7.0))
    assert not flat.any()


@pytest.mark.parametrize("array, reason", [
    (np.full((10, 10), np.nan), "NaN or infinite"),
    (np.zeros((10, 10, 5)), "got shape"),
    (np.zeros(10), "got shape"),
    (np.zeros((1, 10)), "got shape"),
    (np.array([["a", "b"], ["c", "d"]]), "is not an image"),
])
def test_unusable_arrays_are_refused_with_the_reason(array, reason):
    with pytest.raises(ImageReadError, match=f"upload.png: .*{reason}"):
        read_image(array, name="upload.png")
    with pytest.raises(ImageReadError, match="<array>"):
        read_image(array)
