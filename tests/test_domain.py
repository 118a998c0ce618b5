"""The training range a card records, and the differences an image is warned about."""

from __future__ import annotations

import pandas as pd

from mammo_utils.domain import SIZE_FACTOR, domain_differences, training_range
from mammo_utils.preprocess import MANIFEST_FILE
from mammo_utils.provenance import is_synthetic

#: A range as a model trained on 16-bit DICOMs of about 1000 x 600 pixels records it.
TRAINED = {
    "datasets": ["cbis-ddsm"], "formats": ["dicom"], "bits_stored": [16],
    "image_rows": [1000, 1100], "image_columns": [600, 700], "views": ["CC", "MLO"],
    "breast_rows": [700, 900], "breast_columns": [300, 450],
}
IN_RANGE = {"format": "dicom", "bits_stored": 16, "rows": 1050, "columns": 650, "view": "CC"}


def test_synthetic_folder_range_comes_from_manifest_and_headers(
        workspace_roi_data, synthetic_training_range):
    manifest = pd.read_csv(workspace_roi_data / MANIFEST_FILE)
    train = manifest[manifest["split"] == "train"].drop_duplicates("image_id")
    found = synthetic_training_range
    assert found["datasets"] == ["synthetic"] and found["synthetic"] is True
    assert found["n_images"] == len(train) == found["headers_read"]
    assert found["formats"] == ["dicom"]
    assert set(found["bits_stored"]) <= {12, 16} and found["bits_stored"]
    assert set(found["views"]) == {"CC", "MLO"}
    boxes = train["crop_box"].str.split(expand=True).astype(int)
    heights = boxes[3] - boxes[1]
    assert found["breast_rows"] == [heights.min(), heights.max()]
    low, high = found["image_rows"]
    assert 0 < low <= high and found["breast_rows"][1] <= high


def test_changed_index_leaves_the_header_facets_unknown(workspace_roi_data, tmp_path):
    processed = tmp_path / "data" / "processed" / "synthetic" / "roi-64"
    interim = tmp_path / "data" / "interim" / "synthetic"
    processed.mkdir(parents=True)
    interim.mkdir(parents=True)
    for path in workspace_roi_data.iterdir():
        (processed / path.name).write_bytes(path.read_bytes())
    index = workspace_roi_data.parents[2] / "interim" / "synthetic" / "index.csv"
    (interim / "index.csv").write_text(index.read_text() + "\n")
    found = training_range(pd.read_csv(processed / MANIFEST_FILE), processed)
    assert found["headers_read"] == 0 and found["formats"] is None and found["views"] is None
    assert found["breast_rows"] is not None  # the manifest alone still gives the breast


def test_an_image_like_the_training_images_has_no_difference():
    assert domain_differences(TRAINED, IN_RANGE, (0, 100, 400, 900)) == []
    assert domain_differences({}, {"format": "pgm"}) == []
    assert domain_differences(None, {"format": "pgm"}) == []


def test_a_film_scanned_pgm_is_named_by_format_and_bit_depth():
    found = domain_differences(TRAINED, {**IN_RANGE, "format": "pgm", "bits_stored": 8})
    assert len(found) == 2
    assert "PGM file" in found[0] and "only on DICOM files" in found[0]
    assert "8-bit pixels" in found[1] and "16-bit" in found[1]


def test_view_pixel_grid_and_breast_size_outside_the_range_are_named():
    far = round(1100 * SIZE_FACTOR) + 10
    found = domain_differences(TRAINED, {**IN_RANGE, "view": "ML", "rows": far},
                               (0, 0, 450 * 2, 900 * 2))
    assert any("ML view" in text and "CC and MLO" in text for text in found)
    assert any(f"{far} x 650 pixels" in text and "pixel spacing" in text for text in found)
    assert any("breast of 1800 x 900 pixels" in text for text in found)
    inside = domain_differences(TRAINED, {**IN_RANGE, "rows": round(1100 * SIZE_FACTOR) - 1})
    assert inside == []


def test_unknown_facets_are_not_checked():
    assert domain_differences(TRAINED, {"format": None, "view": None}) == []
    assert domain_differences({**TRAINED, "formats": None}, {"format": "pgm"}) == []


def test_is_synthetic_needs_every_named_source_synthetic():
    assert is_synthetic(["synthetic"])
    assert not is_synthetic(["synthetic", "mias"])
    assert not is_synthetic([])
