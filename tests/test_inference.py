"""Inference: sources, card-driven classes, patch scan, Grad-CAM, refusals and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fixtures_inference import (
    PATCH,
    WORKING,
    constant_model,
    png_bytes,
    small_cnn,
    synthetic_breast,
    write_model_dir,
)
from fixtures_preprocess import tiny_dataset
from fixtures_training import PERMUTED_CLASSES

from mammo_utils.breast import extract_patch, prepare_and_fit
from mammo_utils.classes import CLASSES
from mammo_utils.cli import main as mammo
from mammo_utils.inference import Classifier, patch_corners
from mammo_utils.pipeline import load_manifest
from mammo_utils.preprocess import PreprocessConfig, run_preprocess
from mammo_utils.reader import ImageReadError, read_image

#: The contradictory case a clinician reported: NORMAL 23 %, MALIGNANT 31.6 %.
AMBIGUOUS = np.array([0.23, 0.25, 0.204, 0.316])
#: Under half a 16-bit step: the same PNG value (float32 division may differ by 6e-8).
HALF_STEP = 0.5 / 65535


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
    assert Classifier.from_dir(bright_roi_model_dir).threshold is None
    strict = Classifier.from_dir(bright_roi_model_dir, threshold=1.0)
    called = strict.predict(image, input_kind="mammogram")
    assert called.label == "NORMAL"
    assert called.confidence == called.probabilities["NORMAL"] < 0.01
    assert any("no patch reached the 100.0% threshold" in note for note in called.warnings)
    with pytest.raises(ValueError, match="threshold"):
        Classifier.from_dir(bright_roi_model_dir, threshold=1.5)
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


# ---------------------------------------------------------------- same pixels as training
@pytest.fixture(scope="module")
def tiny_processed(tmp_path_factory):
    """The preprocess fixtures' tiny data set (some breasts facing right) run through both
    tasks at the inference fixtures' sizes: ``{task: processed folder}``."""
    root = tmp_path_factory.mktemp("parity")
    index, _ = tiny_dataset(root / "interim", corrupt=False)
    configs = {
        "image": PreprocessConfig(task="image", size=PATCH, seed=0),
        "roi": PreprocessConfig(task="roi", size=PATCH, working_size=WORKING,
                                normal_per_image=2, patches_per_lesion=1, seed=0),
    }
    folders = {}
    for task, config in configs.items():
        folders[task] = root / "processed" / task
        run_preprocess(index, folders[task], config, progress=False)
    return folders


def _manifest_rows(folder):
    manifest = pd.read_csv(folder / "manifest.csv")
    assert len(manifest) >= 5
    return manifest.itertuples()


def test_image_model_input_is_the_training_png(tiny_processed, cnn_image_model_dir):
    classifier = Classifier.from_dir(cnn_image_model_dir)
    index = pd.read_csv(tiny_processed["image"].parent.parent / "interim" / "index.csv")
    sources = dict(zip(index["image_id"], index["image_path"], strict=True))
    flipped = 0
    for row in _manifest_rows(tiny_processed["image"]):
        written, _ = read_image(tiny_processed["image"] / row.path)
        image, _ = read_image(sources[row.image_id])
        model_input, _, geometry = classifier.fit_canvas(image)
        assert model_input.shape == (PATCH, PATCH)
        np.testing.assert_allclose(model_input, written, rtol=0, atol=HALF_STEP)
        flipped += geometry.flipped
    assert flipped >= 1


def test_roi_scan_runs_over_the_canvas_training_patches_came_from(tiny_processed,
                                                                   bright_roi_model_dir):
    classifier = Classifier.from_dir(bright_roi_model_dir)
    index = pd.read_csv(tiny_processed["roi"].parent.parent / "interim" / "index.csv")
    sources = dict(zip(index["image_id"], index["image_path"], strict=True))
    canvases = {}
    for image_id, path in sources.items():
        image, _ = read_image(path)
        canvases[image_id] = classifier.predict(path, input_kind="mammogram").image
        # The scanned tissue is the breast mask the NORMAL training patches were drawn on.
        _, mask, _ = classifier.fit_canvas(image)
        np.testing.assert_array_equal(mask, prepare_and_fit(image, WORKING)[1])
    for row in _manifest_rows(tiny_processed["roi"]):
        written, _ = read_image(tiny_processed["roi"] / row.path)
        canvas = canvases[row.image_id]
        assert canvas.shape == WORKING
        patch = extract_patch(canvas, (row.center_x, row.center_y), PATCH)
        np.testing.assert_allclose(patch, written, rtol=0, atol=HALF_STEP)


# ---------------------------------------------------------------- label and bars agree
def _fixed_output_model(probabilities: np.ndarray):
    """A patch model answering ``probabilities`` for every input (bias-only softmax)."""
    import keras

    inputs = keras.Input((PATCH, PATCH, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(1, 1)(inputs))
    layer = keras.layers.Dense(len(probabilities), activation="softmax")
    model = keras.Model(inputs, layer(x))
    layer.set_weights([np.zeros((1, len(probabilities))), np.log(probabilities)])
    return model


@pytest.fixture(scope="module")
def ambiguous_roi_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ambiguous") / "run" / "ambiguous_roi"
    return write_model_dir(folder, _fixed_output_model(AMBIGUOUS), task="roi",
                           working_size=WORKING, name="ambiguous_roi")


def _agrees(prediction) -> bool:
    values = prediction.probabilities
    return (prediction.label == max(values, key=values.get)
            and prediction.confidence == values[prediction.label])


def test_roi_label_is_the_argmax_of_the_probabilities_shown(ambiguous_roi_model_dir):
    image, _ = synthetic_breast(lesion=False)
    prediction = Classifier.from_dir(ambiguous_roi_model_dir).predict(
        image, input_kind="mammogram")
    assert prediction.label == "MALIGNANT"
    assert prediction.confidence == pytest.approx(0.316, abs=1e-6)
    np.testing.assert_allclose(list(prediction.probabilities.values()), AMBIGUOUS, atol=1e-6)
    assert _agrees(prediction)
    assert not any("threshold" in note for note in prediction.warnings)


def test_threshold_calls_a_weak_finding_normal_and_says_why(ambiguous_roi_model_dir):
    image, _ = synthetic_breast(lesion=False)
    strict = Classifier.from_dir(ambiguous_roi_model_dir, threshold=0.5)
    prediction = strict.predict(image, input_kind="mammogram")
    assert prediction.label == "NORMAL"
    assert prediction.confidence == pytest.approx(0.23, abs=1e-6)
    assert prediction.confidence == prediction.probabilities["NORMAL"]
    notes = [note for note in prediction.warnings if "threshold" in note]
    assert notes == ["no patch reached the 50.0% threshold for a finding: the most "
                     "suspicious class is MALIGNANT at 31.6%, so it is called NORMAL"]
    lenient = Classifier.from_dir(ambiguous_roi_model_dir, threshold=0.3)
    assert lenient.predict(image, input_kind="mammogram").label == "MALIGNANT"
    whole = Classifier(_fixed_output_model(AMBIGUOUS),
                       {"classes": list(CLASSES), "task": "image", "image_size": PATCH},
                       threshold=0.5).predict(image, input_kind="mammogram")
    assert whole.label == "NORMAL"
    assert any(note.startswith("the image did not reach the 50.0%") for note in whole.warnings)


def test_the_most_suspicious_patch_decides_even_when_it_is_most_probably_normal(roi):
    patches = np.array([
        [0.90, 0.04, 0.03, 0.03],  # clearly normal
        [0.30, 0.35, 0.35, 0.00],  # argmax non-normal, but less suspicious ...
        [0.50, 0.00, 0.05, 0.45],  # ... than this one, which is still most probably normal
    ])
    assert roi.rule.decisive_patch(patches) == 2
    assert roi.rule.decide(patches[2]) == ("NORMAL", 0.5, None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_and_bars_always_agree_by_default(seed):
    card = {"classes": list(CLASSES), "task": "roi", "image_size": PATCH,
            "working_size": list(WORKING)}
    classifier = Classifier(small_cnn(seed=seed), card)
    for lesion in (False, True):
        image, _ = synthetic_breast(lesion=lesion, seed=seed)
        assert _agrees(classifier.predict(image, input_kind="mammogram"))
        assert _agrees(classifier.predict(image[150:200, 80:140], input_kind="crop"))


def test_cli_json_label_matches_its_probabilities(ambiguous_roi_model_dir, breast_png,
                                                  capsys):
    model = str(ambiguous_roi_model_dir)
    for options, threshold in (([], None), (["--threshold", "0.5"], 0.5),
                               (["--threshold", "0.3"], 0.3)):
        assert mammo(["predict", str(breast_png), "--model", model, "--json", *options]) == 0
        record = json.loads(capsys.readouterr().out)
        values = record["probabilities"]
        assert record["confidence"] == values[record["label"]]
        below = [note for note in record["warnings"] if "threshold" in note]
        if threshold is None:
            assert record["label"] == max(values, key=values.get) == "MALIGNANT"
            assert not below
        elif record["label"] != max(values, key=values.get):
            assert record["label"] == "NORMAL"
            assert below and "MALIGNANT at 31.6%" in below[0]
        if threshold is not None:
            expected = Classifier.from_dir(model, threshold=threshold).predict(breast_png)
            assert record["label"] == expected.label
            assert record["label"] == ("NORMAL" if threshold > 0.316 else "MALIGNANT")
