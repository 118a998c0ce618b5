"""Grad-CAM heat maps: where a classifier looked, from its last convolution.

The feature map tapped is the output of the last top-level layer that is, or holds,
a convolution (a whole-breast model's top blocks aside): the last convolution itself in
a flat model such as the baseline CNN,
or the whole nested backbone of a ``keras.applications`` model (whose output is its
last convolution block). Only public Keras API is used: the layer is found by walking
``model.layers`` (and nested models' ``layers``), and its output in the model's own
graph is captured while :func:`keras.models.clone_model` re-runs that graph with the
model's own layers (weights shared, nothing copied).

A two-view model calls its shared trunk (the layer tapped) once per view: each call's
feature map is captured, and each view gets its own map from the gradient of the one
breast score, both scaled by their common peak, so the map shows which view, and
where in it, drove the answer.

TensorFlow and Keras are imported on first use, so importing inference stays light.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

#: ``cam(batch)`` for a ``[1, size, size, 1]`` batch -> (probabilities, map in [0, 1]);
#: for a two-view model, a list of one such batch per input -> (probabilities,
#: ``[views, size, size]`` maps).
GradCam = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def is_convolution(layer) -> bool:
    """A 2-D convolution layer, or a nested model holding one at any depth."""
    import keras

    convolutions = (
        keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D
    )
    if isinstance(layer, convolutions):
        return True
    return isinstance(layer, keras.Model) and any(is_convolution(inner) for inner in layer.layers)


def last_convolution_layer(model):
    """The last top-level layer of ``model`` that is or holds a convolution, else ``None``.

    A whole-breast model's top blocks (layers and nested model named ``top...``, see
    :func:`mammo_utils.models.top_blocks_for`) are passed over: they halve the trunk's
    map twice more, so a map from them would be 4 times coarser, and the trunk's last
    convolution still gets the class's gradient through them.
    """
    from mammo_utils.models import TOP_LAYER

    return next((layer for layer in reversed(model.layers)
                 if is_convolution(layer) and not layer.name.startswith(TOP_LAYER)), None)


def feature_model(model):
    """``keras.Model(inputs, [feature map, ..., probabilities])`` over ``model``'s layers.

    The feature maps are the outputs of :func:`last_convolution_layer` wherever ``model``
    calls it: once in a single-view model, once per view in a two-view model's shared
    trunk (a nested model's ``output`` belongs to its inner graph, so they are captured
    from a re-run of the outer graph instead). ``None`` without a convolution.
    """
    import keras

    target = last_convolution_layer(model)
    if target is None:
        return None
    captured = []

    def call(layer, *args, **kwargs):
        outputs = layer(*args, **kwargs)
        if layer is target:
            captured.append(outputs)
        return outputs

    # The model's graph as a functional model, a Sequential one included.
    graph = keras.Model(_unwrap(model.inputs), _unwrap(model.outputs))
    rerun = keras.models.clone_model(graph, clone_function=lambda layer: layer,
                                     call_function=call)
    return keras.Model(rerun.input, [*captured, rerun.output])


def _unwrap(tensors: list):
    """A lone tensor rather than a one-element list: the structure a model is called with."""
    return tensors[0] if len(tensors) == 1 else tensors


def grad_cam_function(model, size: int) -> GradCam | None:
    """A function ``batch -> (probabilities, map in [0, 1])`` for a one-image batch
    (a two-view model: a list of one batch per view -> ``[views, size, size]`` maps).

    The map is the Grad-CAM of the most probable class at the feature map of
    :func:`feature_model`, resized to ``size`` x ``size``; the probabilities come from
    the same forward pass. Returns ``None`` when the model has no convolution layer or
    the tapped graph does not reproduce the model's output (checked once on a test input).
    """
    import tensorflow as tf

    tapped = feature_model(model)
    if tapped is None:
        return None

    @tf.function(reduce_retracing=True)
    def graph(x):
        # Traced once per input shape: eager back-propagation through a backbone is
        # several times slower than the forward pass it explains.
        with tf.GradientTape() as tape:
            *features, probabilities = tapped(x, training=False)
            score = tf.reduce_max(probabilities, axis=-1)
        gradients = tape.gradient(score, features)
        maps = [
            tf.nn.relu(tf.reduce_sum(
                tf.reduce_mean(gradient, axis=(1, 2), keepdims=True) * feature, axis=-1))
            for gradient, feature in zip(gradients, features, strict=True)
        ]
        return probabilities, maps

    views = len(model.inputs)

    def cam(batch) -> tuple[np.ndarray, np.ndarray]:
        inputs = ([tf.convert_to_tensor(view) for view in batch] if views > 1
                  else tf.convert_to_tensor(batch))
        probabilities, maps = graph(inputs)
        # Resized first, then scaled by the common peak, so the brightest pixel is 1
        # (linear upsampling rarely lands on a coarse cell's centre).
        heats = [cv2.resize(heat[0].numpy().astype(np.float32), (size, size),
                            interpolation=cv2.INTER_LINEAR) for heat in maps]
        peak = max(float(heat.max()) for heat in heats)
        heats = [heat / peak if peak > 0 else np.zeros_like(heat) for heat in heats]
        return (np.asarray(probabilities[0], dtype=np.float64),
                heats[0] if views == 1 else np.stack(heats))

    rng = np.random.default_rng(0)
    probe = [rng.random((1, size, size, 1), dtype=np.float32) for _ in range(views)]
    probe = probe[0] if views == 1 else probe
    reference = np.asarray(model(probe, training=False))[0]
    got, _ = cam(probe)
    return cam if np.allclose(got, reference, atol=1e-5) else None
