"""Tiny model directories and images for inference and demo tests.

The models are built, not trained, with fixed weights, so their answers are known:

* ``bright_roi_model_dir`` (roi task, 32 px patches, 128x96 working size): a patch whose
  brightest pixel is near 1 is MALIGNANT, breast tissue at 0.3 is NORMAL;
* ``cnn_image_model_dir`` (image task, 32 px): a small seeded CNN, for Grad-CAM;
* ``constant_model_dir(scheme)``: always answers output unit 0 with about 99 %.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mammo_utils.classes import scheme_classes

PATCH = 32
WORKING = (128, 96)
TISSUE = 0.3


def _keras():
    import keras

    return keras


def write_model_dir(folder, model, *, task: str, label_scheme: str = "four_class",
                    working_size=None, name: str = "tiny"):
    """Save ``model`` and its card into ``folder`` (the layout training writes)."""
    from mammo_utils.model_card import MODEL_FILE, ModelCard

    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    card = ModelCard(
        model_name=name, architecture="test", classes=list(scheme_classes(label_scheme)),
        label_scheme=label_scheme, task=task, image_size=PATCH,
        working_size=list(working_size) if working_size else None,
        preprocessing={"task": task, "size": PATCH, "min_breast_fraction": 0.5},
        parameter_count=int(model.count_params()), seed=0,
    )
    card.save(folder)
    return folder


def bright_spot_model():
    """GlobalMaxPooling -> Dense: logits ``[5 - 10m, -5, -5, -5 + 10m]`` for max pixel m."""
    keras = _keras()
    inputs = keras.Input((PATCH, PATCH, 1), name="image")
    x = keras.layers.Conv2D(1, 1, name="identity_conv")(inputs)
    x = keras.layers.GlobalMaxPooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("identity_conv").set_weights([np.ones((1, 1, 1, 1)), np.zeros(1)])
    model.get_layer("predictions").set_weights(
        [np.array([[-10.0, 0.0, 0.0, 10.0]]), np.array([5.0, -5.0, -5.0, -5.0])]
    )
    return model


def small_cnn(num_classes: int = 4, *, nested: bool = False, seed: int = 0):
    """Two seeded 3x3 convolutions, global pooling and a softmax; optionally with the
    convolutions inside a nested ``backbone`` model, like a keras.applications model."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    convs = [
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
    ]
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(
        num_classes, activation="softmax", name="predictions")]
    inputs = keras.Input((PATCH, PATCH, 1), name="image")
    if nested:
        inner_in = keras.Input((PATCH, PATCH, 1))
        backbone = keras.Model(inner_in, convs[1](convs[0](inner_in)), name="backbone")
        x = backbone(inputs)
    else:
        x = convs[1](convs[0](inputs))
    outputs = head[1](head[0](x))
    return keras.Model(inputs, outputs)


def constant_model(num_classes: int):
    """Answers output unit 0 whatever the input (bias-only softmax)."""
    keras = _keras()
    inputs = keras.Input((PATCH, PATCH, 1), name="image")
    x = keras.layers.Conv2D(1, 1, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    bias = np.zeros(num_classes)
    bias[0] = 6.0
    model.get_layer("predictions").set_weights([np.zeros((1, num_classes)), bias])
    return model


def synthetic_breast(lesion: bool = True, *, chest_wall: str = "left", seed: int = 0):
    """A 400x300 image: a half-ellipse breast of tissue 0.3 on black, with a bright disc.

    Returns the image and the lesion centre ``(x, y)`` in source pixels.
    """
    rng = np.random.default_rng(seed)
    image = np.zeros((400, 300), dtype=np.float32)
    cv2.ellipse(image, (0, 200), (220, 180), 0, -90, 90, TISSUE, thickness=-1)
    image += (image > 0) * rng.normal(0.0, 0.01, image.shape).astype(np.float32)
    centre = (110, 150)
    if lesion:
        cv2.circle(image, centre, 7, 1.0, thickness=-1)
    image = np.clip(image, 0.0, 1.0)
    if chest_wall == "right":
        image = np.ascontiguousarray(image[:, ::-1])
        centre = (image.shape[1] - 1 - centre[0], centre[1])
    return image, centre


def png_bytes(image: np.ndarray) -> bytes:
    """A [0, 1] image as 16-bit PNG bytes."""
    ok, encoded = cv2.imencode(".png", np.rint(image * 65535).astype(np.uint16))
    assert ok
    return encoded.tobytes()


@pytest.fixture(scope="session")
def bright_roi_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "run" / "bright_roi"
    return write_model_dir(folder, bright_spot_model(), task="roi", working_size=WORKING,
                           name="bright_roi")


@pytest.fixture(scope="session")
def cnn_image_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "run" / "cnn_image"
    return write_model_dir(folder, small_cnn(nested=True), task="image", name="cnn_image")


@pytest.fixture(scope="session")
def constant_model_dir(tmp_path_factory):
    """A factory: ``constant_model_dir(scheme)`` -> a model dir always answering unit 0."""
    root = tmp_path_factory.mktemp("constant")

    def make(scheme: str):
        classes = scheme_classes(scheme)
        return write_model_dir(root / scheme, constant_model(len(classes)), task="image",
                               label_scheme=scheme, name=f"constant_{scheme}")

    return make


@pytest.fixture(scope="session")
def breast_png(tmp_path_factory):
    """A synthetic breast with a bright lesion, written as a 16-bit PNG."""
    image, _ = synthetic_breast()
    path = tmp_path_factory.mktemp("images") / "breast_RIGHT_CC.png"
    path.write_bytes(png_bytes(image))
    return path
