"""The patch scan with a plain numpy forward function: corners, tissue, batches, maps."""

from __future__ import annotations

import numpy as np
import pytest

from mammo_utils.inference import PatchScan, patch_corners, scan_patches


def mean_and_rest(batch: np.ndarray) -> np.ndarray:
    """A two-class "model": the patch's mean intensity and one minus it."""
    means = batch.mean(axis=(1, 2, 3))
    return np.stack([means, 1.0 - means], axis=1)


def test_corners_cover_the_length_with_the_last_flush():
    assert patch_corners(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert patch_corners(96, 32, 32) == [0, 32, 64]
    assert patch_corners(32, 32, 8) == [0]
    assert patch_corners(20, 32, 16) == [0]


def test_each_probability_row_is_the_patch_at_its_corner():
    canvas = np.random.default_rng(0).random((40, 56)).astype(np.float32)
    scan = scan_patches(canvas, mean_and_rest, size=16, stride=12)
    expected = [(y, x) for y in (0, 12, 24) for x in (0, 12, 24, 36, 40)]
    assert isinstance(scan, PatchScan) and not scan.used_all
    assert scan.corners.tolist() == [list(c) for c in expected]
    means = [canvas[y : y + 16, x : x + 16].mean() for y, x in expected]
    np.testing.assert_allclose(scan.probabilities[:, 0], means, rtol=1e-6)
    assert scan.probabilities.dtype == np.float64 and scan.shape == (40, 56) and scan.size == 16


def test_patches_off_the_tissue_are_skipped_unless_none_qualifies():
    canvas = np.zeros((32, 64), dtype=np.float32)
    mask = np.zeros((32, 64), dtype=bool)
    mask[:, :24] = True  # the first patch is all tissue, the second half, the rest none
    scan = scan_patches(canvas, mean_and_rest, size=16, stride=16, mask=mask, min_tissue=0.5)
    assert sorted(map(tuple, scan.corners)) == [(0, 0), (0, 16), (16, 0), (16, 16)]
    strict = scan_patches(canvas, mean_and_rest, size=16, stride=16, mask=mask, min_tissue=0.9)
    assert sorted(map(tuple, strict.corners)) == [(0, 0), (16, 0)]
    empty = scan_patches(canvas, mean_and_rest, size=16, stride=16,
                         mask=np.zeros_like(mask), min_tissue=0.5)
    assert empty.used_all and len(empty.corners) == 8


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_forward_sees_at_most_a_batch_and_results_do_not_depend_on_it(batch_size):
    canvas = np.random.default_rng(1).random((48, 48)).astype(np.float32)
    seen = []

    def forward(batch):
        assert batch.dtype == np.float32 and batch.shape[1:] == (16, 16, 1)
        seen.append(len(batch))
        return mean_and_rest(batch)

    scan = scan_patches(canvas, forward, size=16, stride=8, batch_size=batch_size)
    assert sum(seen) == len(scan.corners) == 25 and max(seen) <= batch_size
    reference = scan_patches(canvas, mean_and_rest, size=16, stride=8, batch_size=1000)
    np.testing.assert_array_equal(scan.probabilities, reference.probabilities)


def test_class_maps_average_the_patches_over_each_pixel():
    canvas = np.zeros((16, 24), dtype=np.float32)
    canvas[:, 16:] = 1.0
    scan = scan_patches(canvas, mean_and_rest, size=16, stride=8)
    assert scan.corners.tolist() == [[0, 0], [0, 8]]  # means 0 and 0.5
    maps = scan.class_maps
    assert maps.shape == (16, 24, 2)
    np.testing.assert_allclose(maps[0, [0, 10, 20], 0], [0.0, 0.25, 0.5])
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0)


def test_a_canvas_smaller_than_a_patch_is_padded():
    canvas = np.ones((10, 12), dtype=np.float32)
    scan = scan_patches(canvas, mean_and_rest, size=16, stride=8)
    assert scan.corners.tolist() == [[0, 0]]
    assert scan.probabilities[0, 0] == pytest.approx(120 / 256)
    assert scan.class_maps.shape == (10, 12, 2)
