"""Grad-CAM on the project's own architectures, through public Keras API only."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from fixtures_inference import small_cnn

import mammo_utils.inference
from mammo_utils.inference.gradcam import (
    feature_model,
    grad_cam_function,
    last_convolution_layer,
)
from mammo_utils.models import BACKBONE_LAYER, build_model

INFERENCE_SOURCES = sorted(Path(mammo_utils.inference.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("architecture, size, tapped, cells", [
    ("baseline", 32, "block3_conv2", 8),  # the last convolution itself
    ("vgg16", 64, BACKBONE_LAYER, 2),  # a keras.applications backbone, nested whole
])
def test_grad_cam_of_a_baseline_and_a_backbone(architecture, size, tapped, cells):
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(architecture, 4, size, weights="none")
    assert last_convolution_layer(model).name == tapped
    features, probabilities = feature_model(model).outputs
    assert tuple(features.shape[1:3]) == (cells, cells)
    cam = grad_cam_function(model, size)
    assert cam is not None
    batch = np.random.default_rng(2).random((1, size, size, 1), dtype=np.float32)
    got, heat = cam(batch)
    np.testing.assert_allclose(got, np.asarray(model(batch, training=False))[0], atol=1e-5)
    assert heat.shape == (size, size) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and 0.5 < heat.max() <= 1.0 and heat.std() > 0.01


def test_a_whole_breast_models_map_comes_from_its_trunk_not_its_top_blocks():
    """The top blocks halve the map twice more: the map is taken before them."""
    from mammo_utils.models import build_two_view_model

    model = build_model("baseline", 4, 64, stem_steps=0, top_blocks=2)
    assert last_convolution_layer(model).name == "block3_conv2"
    features, _ = feature_model(model).outputs
    assert tuple(features.shape[1:3]) == (16, 16)  # not the top blocks' 4 x 4
    _, heat = grad_cam_function(model, 64)(
        np.random.default_rng(3).random((1, 64, 64, 1), dtype=np.float32))
    assert heat.shape == (64, 64) and heat.max() > 0.5
    two_view = build_two_view_model("baseline", 4, 64, stem_steps=0, top_blocks=2)
    assert last_convolution_layer(two_view).name == "trunk"


def test_a_model_without_convolution_has_no_heat_map():
    import keras

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    assert last_convolution_layer(model) is None and grad_cam_function(model, 8) is None
    nested = small_cnn(nested=True)
    assert last_convolution_layer(nested).name == "backbone"


def test_grad_cam_leaves_the_model_unchanged():
    model = small_cnn(nested=True)
    batch = np.random.default_rng(4).random((2, 32, 32, 1), dtype=np.float32)
    before = np.asarray(model(batch))
    names = [layer.name for layer in model.layers]
    assert grad_cam_function(model, 32) is not None
    assert [layer.name for layer in model.layers] == names
    np.testing.assert_array_equal(np.asarray(model(batch)), before)


def _private_accesses(path: Path) -> list[str]:
    """``obj._name`` and ``getattr(obj, "_name")`` on anything but ``self`` or ``cls``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute):
            name, owner = node.attr, node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "hasattr", "setattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            name, owner = node.args[1].value, node.args[0]
        else:
            continue
        private = name.startswith("_") and not name.endswith("__")
        if private and not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
            found.append(f"{path.name}:{node.lineno} {name}")
    return sorted(found)


def test_inference_touches_no_private_attribute():
    assert {path.name for path in INFERENCE_SOURCES} >= {"gradcam.py", "classifier.py"}
    assert [hit for path in INFERENCE_SOURCES for hit in _private_accesses(path)] == []


def test_the_private_attribute_check_catches_one(tmp_path):
    old_style = tmp_path / "old.py"
    old_style.write_text("def f(layer):\n    return layer._inbound_nodes[0], "
                         "getattr(layer, '_keras_history')\n")
    assert _private_accesses(old_style) == ["old.py:2 _inbound_nodes", "old.py:2 _keras_history"]
