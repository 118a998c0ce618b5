"""Inference: sources, card-driven classes, patch scan, Grad-CAM, refusals and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures_inference import (
    constant_model,
    png_bytes,
    small_cnn,
    synthetic_breast,
)
from fixtures_training import PERMUTED_CLASSES

from mammo_utils.breast import prepare_and_fit
from mammo_utils.classes import CLASSES
from mammo_utils.cli import main as mammo
from mammo_utils.inference import Classifier, array_image, patch_corners
from mammo_utils.pipeline import load_manifest
from mammo_utils.reader import ImageReadError, read_image


@pytest.fixture(scope="module")
def roi(bright_roi_model_dir):
    return Classifier.from_dir(bright_roi_model_dir)


def _same(a, b):
    assert a.label == b.label
    assert a.probabilities == b.probabilities
    np.testing.assert_array_equal(a.heatmap, b.heatmap)
    np.testing.assert_array_equal(a.image, b.image)


def test_path_bytes_array_and_upload_agree_exactly(roi, breast_png):
    data = breast_png.read_bytes()
    image, _ = read_image(breast_png)
    upload = ({"name": breast_png.name, "type": "image/png", "size": len(data),
               "content": memoryview(data), "last_modified": 0},)
    from_path = roi.predict(breast_png)
    _same(from_path, roi.predict(data, name=breast_png.name))
    _same(from_path, roi.predict(upload))
    from_array = roi.predict(image)
    assert from_array.probabilities == from_path.probabilities
    assert from_path.metadata["view"] == "CC"
    assert from_path.metadata["laterality"] == "RIGHT"


def test_patch_scan_finds_the_lesion_where_it_is(roi):
    image, centre = synthetic_breast(lesion=True)
    prediction = roi.predict(image, input_kind="mammogram")
    assert prediction.label == "MALIGNANT"
    assert prediction.confidence > 0.99
    assert list(prediction.probabilities) == list(CLASSES)
    assert prediction.image.shape == prediction.heatmap.shape == (128, 96)
    _, _, geometry = prepare_and_fit(image, (128, 96))
    (x, y), = geometry.map_points(np.array([centre])).round().astype(int)
    assert prediction.heatmap[y, x] > 0.9
    assert prediction.heatmap.min() >= 0.0 and prediction.heatmap.max() <= 1.0
    assert np.median(prediction.heatmap[prediction.heatmap > 0]) < 0.9
    assert any("view unknown" in note for note in prediction.warnings)


def test_patch_scan_without_lesion_is_normal_and_flip_is_canonical(roi):
    healthy, _ = synthetic_breast(lesion=False)
    assert roi.predict(healthy, input_kind="mammogram").label == "NORMAL"
    left, _ = synthetic_breast(chest_wall="left")
    right, _ = synthetic_breast(chest_wall="right")
    a = roi.predict(left, input_kind="mammogram")
    b = roi.predict(right, input_kind="mammogram")
    assert a.label == b.label == "MALIGNANT"
    peak_a = np.unravel_index(np.argmax(a.heatmap), a.heatmap.shape)
    peak_b = np.unravel_index(np.argmax(b.heatmap), b.heatmap.shape)
    assert np.abs(np.subtract(peak_a, peak_b)).max() <= 4


def test_threshold_and_stride_are_configurable(bright_roi_model_dir):
    image, _ = synthetic_breast(lesion=True)
    strict = Classifier.from_dir(bright_roi_model_dir, threshold=1.0)
    assert strict.predict(image, input_kind="mammogram").label == "NORMAL"
    fine = Classifier.from_dir(bright_roi_model_dir, stride=8)
    assert fine.stride == 8
    assert fine.predict(image, input_kind="mammogram").label == "MALIGNANT"
    assert patch_corners(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert patch_corners(20, 32, 16) == [0]


def test_crop_input_kind_classifies_directly(roi):
    crop = np.full((48, 40), 0.3, dtype=np.float32)
    crop[20:26, 18:24] = 1.0
    prediction = roi.predict(crop)
    assert prediction.input_kind == "crop"
    assert prediction.label == "MALIGNANT"
    tiny = roi.predict(np.full((20, 20), 0.3, dtype=np.float32), input_kind="crop")
    assert tiny.label == "NORMAL"
    assert any("smaller than the 32x32" in note for note in tiny.warnings)


def test_labels_follow_the_card_class_order():
    model = constant_model(4)
    permuted = ["MALIGNANT", "NORMAL", "BENIGN", "BENIGN_WITHOUT_CALLBACK"]
    card = {"classes": permuted, "task": "image", "image_size": 32}
    prediction = Classifier(model, card).predict(np.full((32, 32), 0.5), input_kind="crop")
    assert prediction.label == "MALIGNANT"
    assert list(prediction.probabilities) == permuted
    card["classes"] = list(CLASSES)
    assert Classifier(model, card).predict(np.full((32, 32), 0.5), input_kind="crop").label \
        == "NORMAL"


@pytest.mark.slow
def test_trained_model_with_permuted_classes_reads_through_its_card(
        permuted_known_answer_model, known_answer_roi_data):
    classifier = Classifier.from_dir(permuted_known_answer_model.model_dir)
    assert classifier.classes == PERMUTED_CLASSES
    rows = load_manifest(known_answer_roi_data).split("test")
    patches = [read_image(path)[0] for path in rows["path"]]
    outputs = classifier.model.predict(np.stack(patches)[..., None], verbose=0)
    labels = []
    for patch, output in zip(patches, outputs, strict=True):
        prediction = classifier.predict(patch, input_kind="crop")
        assert list(prediction.probabilities) == list(PERMUTED_CLASSES)
        assert prediction.label == PERMUTED_CLASSES[int(output.argmax())]
        np.testing.assert_allclose(list(prediction.probabilities.values()), output, atol=1e-5)
        labels.append(prediction.label)
    assert (np.array(labels) == rows["label"].to_numpy()).mean() >= 0.75


@pytest.mark.parametrize("scheme, first", [("three_class", "NORMAL"),
                                           ("malignant_vs_rest", "NOT_MALIGNANT")])
def test_saved_card_classes_name_the_outputs(constant_model_dir, scheme, first):
    classifier = Classifier.from_dir(constant_model_dir(scheme))
    prediction = classifier.predict(np.full((32, 32), 0.5), input_kind="crop")
    assert prediction.label == first
    assert tuple(prediction.probabilities) == classifier.classes


def test_grad_cam_follows_nested_backbones():
    flat, nested = small_cnn(nested=False), small_cnn(nested=True, seed=1)
    backbone = nested.get_layer("backbone")
    for name in ("conv1", "conv2"):
        backbone.get_layer(name).set_weights(flat.get_layer(name).get_weights())
    nested.get_layer("predictions").set_weights(flat.get_layer("predictions").get_weights())
    card = {"classes": list(CLASSES), "task": "image", "image_size": 32}
    image = np.random.default_rng(3).random((64, 64)).astype(np.float32)
    a = Classifier(flat, card).predict(image, input_kind="crop")
    b = Classifier(nested, card).predict(image, input_kind="crop")
    np.testing.assert_allclose(list(a.probabilities.values()), list(b.probabilities.values()),
                               rtol=1e-5)
    np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
    assert a.heatmap.shape == a.image.shape == (64, 64)
    assert 0.5 < a.heatmap.max() <= 1.0 and a.heatmap.min() >= 0.0
    assert a.heatmap.std() > 0.01


def test_image_model_predicts_a_breast_with_grad_cam(cnn_image_model_dir, breast_png):
    prediction = Classifier.from_dir(cnn_image_model_dir).predict(breast_png)
    assert prediction.input_kind == "mammogram"
    assert prediction.label in CLASSES
    assert prediction.image.shape == prediction.heatmap.shape
    assert prediction.image.shape[0] == prediction.image.shape[1] >= 32
    assert 0.0 <= prediction.heatmap.min() and prediction.heatmap.max() <= 1.0
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def test_array_inputs_are_normalised_with_warnings():
    colour = np.zeros((40, 30, 3), dtype=np.uint8)
    colour[..., 0] = 255
    image, metadata = array_image(colour)
    assert image.dtype == np.float32 and image.shape == (40, 30)
    assert 0.0 < image.max() <= 1.0
    assert metadata["warnings"] == ["colour image converted to grayscale"]
    stretched, metadata = array_image(np.linspace(-5, 5, 100).reshape(10, 10))
    assert stretched.min() == 0.0 and stretched.max() == 1.0
    assert "stretched" in metadata["warnings"][0]
    with pytest.raises(ValueError, match="NaN"):
        array_image(np.full((10, 10), np.nan))


def test_bad_sources_give_clear_errors(roi, tmp_path, real_mammograms, dicom_fixtures):
    with pytest.raises(ImageReadError, match="empty.dcm"):
        roi.predict(b"", name="empty.dcm")
    text = tmp_path / "notes.dcm"
    text.write_text("this is not a mammogram\n" * 20)
    with pytest.raises(ImageReadError, match="notes.dcm"):
        roi.predict(text)
    truncated = real_mammograms[0].read_bytes()[:200_000]
    with pytest.raises(ImageReadError, match="cut.dcm"):
        roi.predict(truncated, name="cut.dcm")
    with pytest.raises(ImageReadError, match="MG1_JPLY"):
        roi.predict(dicom_fixtures / "mammography_wg04" / "MG1_JPLY.dcm")
    with pytest.raises(ImageReadError, match="black.png: no breast"):
        roi.predict(png_bytes(np.zeros((300, 200))), name="black.png", input_kind="mammogram")
    with pytest.raises(ValueError, match="one file at a time"):
        roi.predict([{"name": "a.png", "content": b"1"}, {"name": "b.png", "content": b"2"}])
    with pytest.raises(ValueError, match="input_kind"):
        roi.predict(np.zeros((40, 40)), input_kind="film")


def test_real_mammogram_metadata_is_non_identifying(roi, real_mammograms):
    prediction = roi.predict(real_mammograms[0])
    assert prediction.input_kind == "mammogram"
    assert prediction.metadata["view"] in ("CC", "MLO")
    assert prediction.metadata["laterality"] in ("LEFT", "RIGHT")
    assert prediction.metadata["rows"] > 3000
    flat = json.dumps(prediction.metadata, default=str)
    assert "P_00" not in flat and "patient" not in flat.lower()


def test_cli_predicts_good_files_and_reports_bad_ones(bright_roi_model_dir, breast_png,
                                                      tmp_path, capsys):
    bad = tmp_path / "broken.dcm"
    bad.write_text("not an image")
    status = mammo(["predict", str(breast_png), str(bad), "--model", str(bright_roi_model_dir),
                    "--json"])
    assert status == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(breast_png), str(bad)]
    assert lines[0]["label"] == "MALIGNANT" and 0.99 < lines[0]["confidence"] <= 1.0
    assert "broken.dcm" in lines[1]["error"]
    assert mammo(["predict", str(breast_png), "--model", str(bright_roi_model_dir)]) == 0
    assert "MALIGNANT (100.0%)" in capsys.readouterr().out
