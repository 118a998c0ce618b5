"""Breast mask, crop, canonical flip and coordinate mapping."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from fixtures_preprocess import make_breast, plant_disk

from mammo_utils.breast import (
    breast_mask,
    crop_box,
    extract_patch,
    fit_to_shape,
    prepare_and_fit,
)


def test_crop_drops_burned_in_label():
    image = make_breast((640, 512))  # label at rows 20-60, columns 402-492
    canvas, _, geometry = prepare_and_fit(image, (640, 512))
    x0, y0, x1, y1 = geometry.box
    assert x1 < 402, "the crop reaches the label's columns"
    assert canvas.max() < 0.95, "the bright label survived the crop"
    assert not geometry.flipped
    assert breast_mask(image)[40, 450] == np.False_


def test_mask_covers_breast_and_fills_holes():
    image = make_breast((640, 512), label=False)
    image[300:310, 100:110] = 0.0  # a dark hole inside the breast
    mask = breast_mask(image)
    assert mask[305, 105]
    assert mask[320, 50] and not mask[320, 500]


def test_empty_image_has_no_breast():
    with pytest.raises(ValueError, match="no breast tissue"):
        prepare_and_fit(np.zeros((100, 80), dtype=np.float32), (50, 40))


def test_crop_box_of_mask():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:9] = True
    assert crop_box(mask) == (3, 2, 9, 5)


def test_flip_is_canonical_and_mirror_equal():
    left = make_breast((1024, 640))
    right = left[:, ::-1].copy()
    (a, a_mask, a_geometry), (b, b_mask, b_geometry) = (
        prepare_and_fit(side, (512, 320)) for side in (left, right)
    )
    assert (a_geometry.flipped, b_geometry.flipped) == (False, True)
    for mask in (a_mask, b_mask):
        column_area = mask.sum(axis=0)
        assert column_area[0] > column_area[-1], "chest wall is not at column 0"
    np.testing.assert_allclose(a, b, atol=1e-6)  # resampled before the mirror: float rounding
    np.testing.assert_array_equal(a_mask, b_mask)
    box = a_geometry.box
    assert b_geometry.box == (640 - box[2], box[1], 640 - box[0], box[3])


@pytest.mark.parametrize("mirrored", [False, True])
def test_lesion_centre_maps_through_crop_flip_resize(mirrored):
    source = plant_disk(make_breast((640, 512)), (130, 300), 14)
    centre = np.array([[130.0, 300.0]])
    if mirrored:
        source = source[:, ::-1].copy()
        centre[0, 0] = 511 - centre[0, 0]
    canvas, _, geometry = prepare_and_fit(source, (320, 256))
    x, y = geometry.map_points(centre)[0]
    patch = extract_patch(canvas, (x, y), 16)
    assert patch[6:10, 6:10].min() > 0.99, "the disk is not at the patch centre"
    mask = np.zeros(source.shape, dtype=bool)
    rows, cols = np.nonzero(source > 0.999)
    mask[rows, cols] = True
    mask[:80] = False  # drop the label, keep only the disk
    mapped = geometry.map_mask(mask)
    ys, xs = np.nonzero(mapped)
    assert abs(xs.mean() - x) < 1.0 and abs(ys.mean() - y) < 1.0


def test_fit_to_shape_keeps_aspect_and_chest_wall():
    crop = np.ones((100, 20), dtype=np.float32)
    fitted, pad_top, scale = fit_to_shape(crop, (50, 50))
    assert fitted.shape == (50, 50) and pad_top == 0 and scale == 0.5
    assert fitted[:, :10].min() == 1.0 and fitted[:, 11:].max() == 0.0
    wide = np.ones((20, 100), dtype=np.float32)
    fitted, pad_top, _ = fit_to_shape(wide, (50, 50))
    assert pad_top == 40 and fitted[:19].max() == 0.0 and fitted[25].min() == 1.0


def test_extract_patch_pads_past_borders():
    image = np.ones((10, 10), dtype=np.float32)
    patch = extract_patch(image, (0, 0), 6)
    assert patch.shape == (6, 6)
    assert patch[:3].max() == 0.0 and patch[3:, 3:].min() == 1.0


def test_fit_to_shape_mirror_equals_fitting_the_mirrored_crop():
    crop = make_breast((300, 200), label=False)[:, ::-1]  # chest wall on the right
    mirrored, pad_top, scale = fit_to_shape(crop, (64, 64), mirror=True)
    reference, ref_pad, ref_scale = fit_to_shape(np.ascontiguousarray(crop[:, ::-1]), (64, 64))
    assert (pad_top, scale) == (ref_pad, ref_scale)
    np.testing.assert_allclose(mirrored, reference, atol=1e-5)


def test_large_reduction_matches_one_area_resize():
    rng = np.random.default_rng(0)
    crop = cv2.GaussianBlur(rng.random((1800, 1200), dtype=np.float32), (0, 0), 6)
    fitted, _, scale = fit_to_shape(crop, (120, 120))
    assert scale == 120 / 1800
    reference = cv2.resize(crop, (80, 120), interpolation=cv2.INTER_AREA)
    assert np.abs(fitted[:, :80] - reference).mean() < 0.01
    assert fitted[:, 81:].max() == 0.0, "the padding is not on the right"


@pytest.mark.parametrize("mirrored", [False, True])
def test_prepare_and_fit_agrees_with_a_full_resolution_crop(mirrored):
    """The copy-free path equals cropping and mirroring at full resolution, then fitting."""
    image = make_breast((1200, 900), seed=3)
    if mirrored:
        image = np.ascontiguousarray(image[:, ::-1])
    canvas, mask, geometry = prepare_and_fit(image, (300, 240))
    assert geometry.flipped == mirrored
    x0, y0, x1, y1 = geometry.box
    crop, crop_mask = image[y0:y1, x0:x1], breast_mask(image)[y0:y1, x0:x1]
    if geometry.flipped:
        crop, crop_mask = crop[:, ::-1], crop_mask[:, ::-1]
    reference, pad_top, scale = fit_to_shape(np.ascontiguousarray(crop), (300, 240))
    reference_mask, _, _ = fit_to_shape(
        np.ascontiguousarray(crop_mask, dtype=np.uint8), (300, 240),
        interpolation=cv2.INTER_NEAREST_EXACT,
    )
    assert (geometry.pad_top, geometry.scale) == (pad_top, scale)
    assert np.abs(canvas - reference).mean() < 0.01
    overlap = (mask & (reference_mask > 0)).sum() / (mask | (reference_mask > 0)).sum()
    assert overlap > 0.98
    assert mask[:, 0].sum() > mask[:, -1].sum(), "the canvas mask is not chest wall left"
