"""Model building: baseline, the four backbones, freezing, local weights, offline ImageNet."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from mammo_utils import models

SIZE = 32

_PREPROCESS = {
    "vgg16": keras.applications.vgg16.preprocess_input,
    "resnet50": keras.applications.resnet50.preprocess_input,
    "mobilenetv2": keras.applications.mobilenet_v2.preprocess_input,
    "densenet121": keras.applications.densenet.preprocess_input,
}


def _batch(n: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, SIZE, SIZE, 1), dtype=np.float32), np.arange(n) % 3


def test_baseline_outputs_a_distribution_per_image():
    model = models.build_model("baseline", 4, SIZE)
    images, _ = _batch(3)
    probabilities = model.predict(images, verbose=0)
    assert model.input_shape == (None, SIZE, SIZE, 1)
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert models.backbone_of(model) is None
    # The baseline's trunk is its convolution blocks: frozen in the head stage (a model
    # started from another model's trunk), the head left to train.
    models.set_backbone_trainable(model, "head")
    trunk = models.trunk_layers(model)
    assert {layer.name for layer in trunk} >= {"block1_conv1", "block3_bn2"}
    assert not any(layer.trainable for layer in trunk)
    assert model.get_layer("dense").trainable and model.get_layer("predictions").trainable
    models.set_backbone_trainable(model, "finetune", 1.0)
    assert model.get_layer("block1_conv1").trainable
    assert not model.get_layer("block1_bn1").trainable
    inputs = keras.Input((SIZE, SIZE, 1))
    headless = keras.Model(inputs, keras.layers.Dense(2, name="predictions")(inputs))
    with pytest.raises(ValueError, match="no trunk"):
        models.set_backbone_trainable(headless, "head")


@pytest.mark.parametrize(("image_size", "steps", "block_side"),
                         [(32, 0, 32), (64, 0, 64), (96, 1, 48), (128, 1, 64), (224, 2, 56)])
def test_baseline_stem_brings_a_patch_near_the_blocks_side(image_size, steps, block_side):
    """The baseline's blocks see a patch at about 64 pixels whatever its size: at 224 two
    strided stem convolutions halve it twice (so the blocks' receptive field still spans a
    lesion, and an epoch costs what a 64-pixel epoch costs); at 64 or below there is no stem,
    so the toy-scale model is unchanged."""
    assert models.baseline_stem_steps(image_size) == steps
    model = models.build_model("baseline", 4, image_size)
    stem = [layer.name for layer in model.layers if layer.name.startswith("stem_conv")]
    assert stem == [f"stem_conv{index}" for index in range(1, steps + 1)]
    assert model.get_layer("block1_conv1").input.shape[1] == block_side


@pytest.mark.parametrize("architecture", list(_PREPROCESS))
def test_backbone_builds_preprocesses_like_keras_and_trains_a_step(architecture):
    model = models.build_model(architecture, 3, SIZE, weights="none")
    images, labels = _batch()
    # Inside the model: grayscale repeated to RGB, then the backbone's own preprocess_input.
    inner = keras.Model(model.input, model.get_layer("backbone_preprocess").output)
    expected = _PREPROCESS[architecture](np.repeat(images, 3, axis=-1) * 255.0)
    np.testing.assert_allclose(inner.predict(images, verbose=0), expected, atol=1e-4)

    models.set_backbone_trainable(model, "head")
    backbone = models.backbone_of(model)
    assert backbone.trainable_weights == []
    frozen_before = [w.numpy().copy() for w in backbone.weights]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    for before, after in zip(frozen_before, backbone.weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())  # BN statistics included
    assert model.predict(images, verbose=0).shape == (2, 3)


def test_fine_tune_unfreezes_the_top_but_never_batch_norm():
    model = models.build_model("mobilenetv2", 2, SIZE)
    models.set_backbone_trainable(model, "finetune", fine_tune_fraction=0.25)
    layers = models.backbone_of(model).layers
    trainable = [layer.trainable for layer in layers]
    cut = round(len(layers) * 0.75)
    assert not any(trainable[:cut])
    assert any(trainable[cut:])
    assert not any(
        layer.trainable for layer in layers if isinstance(layer, keras.layers.BatchNormalization)
    )
    with pytest.raises(ValueError, match="stage must be"):
        models.set_backbone_trainable(model, "all")
    models.set_backbone_trainable(model, "full")
    assert all(layer.trainable for layer in layers)


def test_batch_norm_statistics_follow_training_only_from_scratch(tmp_path):
    """From scratch the backbone's BatchNormalization moving averages must catch up with
    short training; with given weights the learned statistics are left as they are."""
    def momenta(model):
        return {layer.momentum for layer in models.backbone_of(model).layers
                if isinstance(layer, keras.layers.BatchNormalization)}

    scratch = models.build_model("mobilenetv2", 2, SIZE, weights="none")
    assert momenta(scratch) == {models.FROM_SCRATCH_BN_MOMENTUM}
    path = models.save_backbone_weights(scratch, tmp_path / "b.weights.h5")
    assert momenta(models.build_model("mobilenetv2", 2, SIZE, weights=path)) == {0.999}


def test_local_backbone_weights_round_trip(tmp_path):
    keras.utils.set_random_seed(1)
    source = models.build_model("mobilenetv2", 4, SIZE)
    path = models.save_backbone_weights(source, tmp_path / "mobilenetv2.weights.h5")
    rebuilt = models.build_model("mobilenetv2", 4, SIZE, weights=path)
    rebuilt.get_layer("predictions").set_weights(source.get_layer("predictions").get_weights())
    images, _ = _batch(4)
    np.testing.assert_allclose(
        rebuilt.predict(images, verbose=0), source.predict(images, verbose=0), atol=1e-6
    )
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        models.save_backbone_weights(source, tmp_path / "backbone.h5")
    with pytest.raises(FileNotFoundError, match="missing.weights.h5"):
        models.build_model("mobilenetv2", 4, SIZE, weights=tmp_path / "missing.weights.h5")


def test_imagenet_without_cache_or_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(models, "keras_cache_dirs", lambda: [tmp_path / "keras" / "models"])
    monkeypatch.setattr(models, "_DOWNLOAD_HOST", "192.0.2.1")  # TEST-NET-1: never answers
    started = time.perf_counter()
    with pytest.raises(models.WeightsUnavailableError) as error:
        models.build_model("resnet50", 4, SIZE, weights="imagenet")
    assert time.perf_counter() - started < 10
    message = str(error.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert str(tmp_path / "keras" / "models") in message and "--weights PATH" in message


def test_imagenet_weights_found_in_the_cache_skip_the_network(tmp_path, monkeypatch):
    cache = tmp_path / "models"
    cache.mkdir()
    (cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5").touch()
    monkeypatch.setattr(models, "keras_cache_dirs", lambda: [cache])
    monkeypatch.setattr(models, "_host_reachable", lambda host: pytest.fail("network used"))
    models.ensure_imagenet_weights_available("mobilenetv2", 96)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown architecture 'vgg19'"):
        models.build_model("vgg19", 4, SIZE)
    with pytest.raises(ValueError, match="no pretrained weights"):
        models.build_model("baseline", 4, SIZE, weights="imagenet")
    with pytest.raises(ValueError, match="at least 32"):
        models.build_model("vgg16", 4, 16)
    with pytest.raises(ValueError, match="at least 2"):
        models.build_model("baseline", 1, SIZE)
