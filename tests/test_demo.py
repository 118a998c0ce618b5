"""The demo's widget logic, driven in-process by setting the upload value."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import numpy as np
import pytest
from fixtures_inference import png_bytes

from mammo_utils.demo import (
    ACCEPT,
    DESCRIPTIONS,
    MODEL_DIR_ENV,
    build_demo,
    find_models,
    overlay_png,
    percent,
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
    app.model_chooser.value = project / "models" / "run" / "cnn_image"
    assert app.prediction.image.shape[0] == app.prediction.image.shape[1]
    assert app.classifier.task == "image"


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
