"""Portable models: model.keras without mammo_utils, ONNX / LiteRT / SavedModel exports
checked in their own runtimes, and `mammo predict` on ONNX without TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mammo_utils import export as exporting
from mammo_utils.export import PARITY_TOLERANCE, ExportParityError, export_model, parity_inputs
from mammo_utils.inference import (
    NO_HEATMAP,
    Classifier,
    ExportedModelError,
    read_sidecar,
    sidecar_path,
)
from mammo_utils.model_card import MODEL_FILE, load_model_dir

# Runs with mammo_utils made unimportable: what a consumer with only the runtime has.
WITHOUT_MAMMO_UTILS = "import sys; sys.modules['mammo_utils'] = None\n"

RUNTIMES = {
    "onnx": """
import onnxruntime
session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
out = session.run(None, {session.get_inputs()[0].name: batch})[0]
""",
    "litert": """
from ai_edge_litert.interpreter import Interpreter
runner = Interpreter(model_path=path).get_signature_runner()
(out,) = runner(**{name: batch for name in runner.get_input_details()}).values()
""",
    "savedmodel": """
import tensorflow as tf
serve = tf.saved_model.load(path).signatures["serving_default"]
(out,) = serve(tf.constant(batch)).values()
out = out.numpy()
""",
}


def _python(code: str, tmp_path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_model_keras_loads_with_plain_keras(permuted_known_answer_model, tmp_path):
    """No custom object in model.keras: it loads, compiled, where mammo_utils cannot be
    imported, and gives the trained model's outputs."""
    path = permuted_known_answer_model.model_dir / MODEL_FILE
    batch = np.random.default_rng(0).random((3, 32, 32, 1), dtype=np.float32)
    np.save(tmp_path / "batch.npy", batch)
    _python(WITHOUT_MAMMO_UTILS + f"""
import keras, numpy as np
model = keras.saving.load_model({str(path)!r})
assert model.compiled and "mammo_utils" not in str(model.get_compile_config())
np.save("out.npy", model.predict(np.load("batch.npy"), verbose=0))
""", tmp_path)
    expected = permuted_known_answer_model.model.predict(batch, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "litert", "savedmodel"])
def test_export_matches_keras_in_its_own_runtime(exported_models, real_mammograms, fmt,
                                                 tmp_path):
    """Each export, run where mammo_utils cannot be imported, gives Keras' probabilities
    on the manifest's patches and a real CBIS-DDSM mammogram's scan patches."""
    model, card = load_model_dir(exported_models["model_dir"])
    inputs = parity_inputs(model, card, [real_mammograms[1]])
    np.save(tmp_path / "batch.npy", inputs)
    path = exported_models[fmt]
    _python(WITHOUT_MAMMO_UTILS + f"""
import numpy as np
path, batch = {str(path)!r}, np.load("batch.npy")
{RUNTIMES[fmt]}
np.save("out.npy", out)
""", tmp_path)
    got = np.load(tmp_path / "out.npy")
    expected = model.predict(inputs, verbose=0)
    assert got.shape == expected.shape == (len(inputs), 4)
    assert np.max(np.abs(got - expected)) <= PARITY_TOLERANCE

    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["format"] == fmt and sidecar["classes"] == card.classes
    assert (sidecar["task"], sidecar["image_size"], sidecar["working_size"]) == (
        "roi", 32, [320, 256])
    assert sidecar["preprocessing"] == card.preprocessing
    assert sidecar["source_model"]["sha256"] == card.model_file["sha256"]
    parity = sidecar["parity"]
    assert 0 <= parity["max_abs_diff"] <= parity["tolerance"] == PARITY_TOLERANCE
    # 16 manifest patches, and for ONNX the real mammogram's 32 scan patches too.
    assert parity["n_inputs"] == (48 if fmt == "onnx" else 16)


@pytest.mark.slow
def test_export_fails_above_the_tolerance_and_writes_nothing(
        permuted_known_answer_model, tmp_path, monkeypatch):
    forward = exporting.exported_forward
    monkeypatch.setattr(exporting, "exported_forward",
                        lambda path, fmt: lambda batch: forward(path, fmt)(batch) + 1e-3)
    out = tmp_path / "model_savedmodel"
    with pytest.raises(ExportParityError, match=r"differs from model.keras by up to 0.001"):
        export_model(permuted_known_answer_model.model_dir, "savedmodel", out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_export_refuses_a_wrong_suffix_and_an_unknown_format(permuted_known_answer_model,
                                                             tmp_path):
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_model(permuted_known_answer_model.model_dir, "onnx", tmp_path / "m.tflite")
    with pytest.raises(ValueError, match="unknown export format 'tfjs'"):
        export_model(permuted_known_answer_model.model_dir, "tfjs")


@pytest.mark.slow
def test_predict_with_onnx_runs_without_tensorflow(exported_models, real_mammograms,
                                                   tmp_path):
    """`mammo predict --model x.onnx` gives Keras' label and probabilities, and
    TensorFlow is never imported in that process."""
    dicom = real_mammograms[2]
    result = _python(f"""
import sys
from mammo_utils.cli import main
status = main(["predict", {str(dicom)!r}, "--model", {str(exported_models["onnx"])!r},
               "--json"])
assert status == 0
assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "TensorFlow imported"
""", tmp_path)
    record = json.loads(result.stdout.strip().splitlines()[-1])
    keras_prediction = Classifier.from_dir(exported_models["model_dir"]).predict(dicom)
    assert record["label"] == keras_prediction.label
    for name, probability in keras_prediction.probabilities.items():
        assert abs(record["probabilities"][name] - probability) <= PARITY_TOLERANCE


@pytest.mark.slow
def test_onnx_file_must_match_its_sidecar(exported_models, tmp_path):
    onnx = tmp_path / "copy.onnx"
    shutil.copy(exported_models["onnx"], onnx)
    with pytest.raises(ExportedModelError, match="no sidecar copy.onnx.json"):
        Classifier.from_dir(onnx)
    shutil.copy(sidecar_path(exported_models["onnx"]), sidecar_path(onnx))
    assert read_sidecar(onnx)["classes"][0] == "BENIGN"  # the permuted order
    with onnx.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ExportedModelError, match="copy.onnx: the file is not the one"):
        Classifier.from_dir(onnx)


def test_onnx_image_model_says_grad_cam_needs_keras(cnn_image_model_dir, breast_png,
                                                    tmp_path):
    """A model without a training manifest is checked on the images given; an ONNX
    image model predicts like Keras but has no Grad-CAM, and says so."""
    with pytest.raises(ValueError, match="no real input to check the export on"):
        export_model(cnn_image_model_dir, "onnx", tmp_path / "none.onnx")
    result = export_model(cnn_image_model_dir, "onnx", tmp_path / "cnn.onnx",
                          check_images=[breast_png])
    assert result.n_inputs == 1 and result.max_abs_diff <= PARITY_TOLERANCE
    onnx_prediction = Classifier.from_dir(result.path).predict(breast_png)
    keras_prediction = Classifier.from_dir(cnn_image_model_dir).predict(breast_png)
    assert onnx_prediction.label == keras_prediction.label
    assert keras_prediction.has_heatmap and not onnx_prediction.has_heatmap
    assert any(w.startswith(NO_HEATMAP) and "Grad-CAM needs the Keras model" in w
               for w in onnx_prediction.warnings)
    assert not onnx_prediction.heatmap.any()


def test_onnx_export_keeps_constants_a_layer_holds(breast_png, tmp_path):
    """A backbone model's Normalization layer holds its mean and variance as tensors, not
    variables; tf2onnx makes them graph inputs, and the export gives them back."""
    import keras
    from fixtures_inference import PATCH, write_model_dir

    keras.utils.set_random_seed(0)
    inputs = keras.Input((PATCH, PATCH, 1), name="image")
    x = keras.layers.Normalization(mean=0.4, variance=0.09)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))
    folder = write_model_dir(tmp_path / "normalized", model, task="image")
    result = export_model(folder, "onnx", check_images=[breast_png])
    assert result.path == folder / "model.onnx" and result.max_abs_diff <= PARITY_TOLERANCE
    (image_input,) = Classifier.from_dir(result.path).model.session.get_inputs()
    assert image_input.name == "image"
