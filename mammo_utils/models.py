"""The baseline CNN and the ``keras.applications`` transfer-learning backbones.

Every single-view model takes ``float32 [batch, size, size, 1]`` grayscale in [0, 1] and
ends in a softmax over the label scheme's classes. Each is a *trunk* (convolutions up to
the last feature map, :func:`build_trunk`), a global pooling and a *head*. A two-view
(``breast``) model (:func:`build_two_view_model`) takes ``cc`` and ``mlo`` through one
shared trunk, nested as a model named :data:`TRUNK_LAYER` whose layer names are the
single-view trunk's, so trunk weights copy from one to the other by layer name. A
whole-breast model adds *top blocks* between trunk and pooling (:func:`top_blocks_for`,
after Shen et al. 2019): new convolutions that see the trunk's lesion features over a
wider field than a patch, which the head stage trains with the trunk frozen. For
backbones, the grayscale-to-RGB step and the backbone's own ``preprocess_input`` live
inside the model (in the trunk) as plain Keras layers
(``Concatenate`` and ``Normalization`` holding the backbone's constants), so a saved
model loads with ``safe_mode=True`` and needs no custom code.

ImageNet weights come from the Keras cache (``$KERAS_HOME/models`` or
``~/.keras/models``) or are downloaded by Keras; on a machine without internet
:func:`build_model` fails within seconds and says how to supply the weights instead:
copy the Keras ``*_notop.h5`` file into the cache, or pass its path (or a file written by
:func:`save_backbone_weights`) as ``weights``.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mammo_utils.preprocess.breast_task import VIEW_INPUTS
from mammo_utils.training_config import ARCHITECTURES

#: Name of the nested backbone model inside a transfer-learning model.
BACKBONE_LAYER = "backbone"
#: Name of the nested shared trunk inside a two-view model.
TRUNK_LAYER = "trunk"

_DOWNLOAD_HOST = "storage.googleapis.com"
_MOBILENET_ROWS = (96, 128, 160, 192, 224)


@dataclass(frozen=True)
class _Backbone:
    """How to build one ``keras.applications`` backbone and feed it."""

    constructor: str
    #: ``preprocess_input`` of the backbone on [0, 1] input, written as
    #: ``(x - mean) / std`` per RGB channel.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    min_size: int

    def weights_file(self, size: int) -> str:
        """Name of the no-top ImageNet weights file Keras downloads for this input size."""
        if self.constructor == "MobileNetV2":
            rows = size if size in _MOBILENET_ROWS else 224
            return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{rows}_no_top.h5"
        return f"{self.constructor.lower()}_weights_tf_dim_ordering_tf_kernels_notop.h5"


# "caffe" mode (VGG16, ResNet50): RGB->BGR, 0..255, minus the ImageNet BGR means. The
# three channels of a grayscale image are equal, so the channel swap only reorders means.
_CAFFE_MEAN = tuple(m / 255.0 for m in (103.939, 116.779, 123.68))
_CAFFE_STD = (1 / 255.0,) * 3

_BACKBONES: dict[str, _Backbone] = {
    "vgg16": _Backbone("VGG16", _CAFFE_MEAN, _CAFFE_STD, 32),
    "resnet50": _Backbone("ResNet50", _CAFFE_MEAN, _CAFFE_STD, 32),
    # "tf" mode: scale to [-1, 1].
    "mobilenetv2": _Backbone("MobileNetV2", (0.5,) * 3, (0.5,) * 3, 32),
    # "torch" mode: ImageNet mean and standard deviation on [0, 1].
    "densenet121": _Backbone("DenseNet121", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 32),
}


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable from this machine."""


def keras_cache_dirs() -> list[Path]:
    """Folders where Keras looks for downloaded application weights, in its order."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
    return [home / "models", Path("/tmp/.keras/models")]


def _host_reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_imagenet_weights_available(architecture: str, image_size: int) -> None:
    """Fail fast, before Keras tries a download that would hang on an offline machine.

    Passes when the weights file is in the Keras cache or the download host answers
    within a few seconds; otherwise raises :class:`WeightsUnavailableError` saying how
    to provide the weights offline.
    """
    spec = _backbone_spec(architecture)
    filename = spec.weights_file(image_size)
    if any((folder / filename).is_file() for folder in keras_cache_dirs()):
        return
    if _host_reachable(_DOWNLOAD_HOST):
        return
    raise WeightsUnavailableError(
        f"ImageNet weights for {architecture} are not in the Keras cache and "
        f"{_DOWNLOAD_HOST} cannot be reached. To work offline, copy {filename} into "
        f"{keras_cache_dirs()[0]} (or set KERAS_HOME), or pass the file's path as "
        f"weights (--weights PATH); a file written by save_backbone_weights() also works."
    )


def _backbone_spec(architecture: str) -> _Backbone:
    try:
        return _BACKBONES[architecture]
    except KeyError:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


def _conv_block(x, filters: int, index: int, dropout: float, l2: float):
    """Two 3x3 convolutions with batch normalization, then max pooling and dropout."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for repeat in range(2):
        x = keras.layers.Conv2D(
            filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer,
            name=f"block{index}_conv{repeat + 1}",
        )(x)
        x = keras.layers.BatchNormalization(
            momentum=0.9, name=f"block{index}_bn{repeat + 1}"
        )(x)
        x = keras.layers.ReLU(name=f"block{index}_relu{repeat + 1}")(x)
    x = keras.layers.MaxPooling2D(name=f"block{index}_pool")(x)
    return keras.layers.Dropout(dropout / 2, name=f"block{index}_dropout")(x)


#: Filters of the baseline's convolution blocks.
_BASELINE_FILTERS: tuple[int, ...] = (32, 64, 128)


#: Side, in pixels, at which the baseline's convolution blocks see a patch. The blocks and
#: their receptive field were sized on 64-pixel patches; a larger patch first passes a
#: stem of strided convolutions halving it (224 -> 112 -> 56), so a lesion still spans the
#: last block's receptive field and each epoch costs what a 64-pixel epoch costs.
BASELINE_BLOCK_SIDE = 64


def baseline_stem_steps(image_size: int) -> int:
    """How many times the baseline's stem halves an ``image_size`` patch (0 at 64 px or
    below): the halvings that bring it nearest :data:`BASELINE_BLOCK_SIDE`."""
    return max(0, round(math.log2(image_size / BASELINE_BLOCK_SIDE)))


def _stem(x, steps: int, l2: float):
    """``steps`` strided 3x3 convolutions with batch normalization, each halving the side."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for index in range(1, steps + 1):
        x = keras.layers.Conv2D(
            _BASELINE_FILTERS[0], 3, strides=2, padding="same", use_bias=False,
            kernel_regularizer=regularizer, name=f"stem_conv{index}",
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"stem_bn{index}")(x)
        x = keras.layers.ReLU(name=f"stem_relu{index}")(x)
    return x


def _baseline_trunk(x, dropout: float, l2: float, stem_steps: int | None = None):
    """The baseline's stem and convolution blocks: ``[size, size, 1]`` -> its last
    feature map. ``stem_steps`` defaults to :func:`baseline_stem_steps` of the input side
    (a model started from a patch model's trunk keeps that model's stem instead)."""
    steps = baseline_stem_steps(x.shape[1]) if stem_steps is None else stem_steps
    x = _stem(x, steps, l2)
    for index, width in enumerate(_BASELINE_FILTERS, start=1):
        x = _conv_block(x, width, index, dropout, l2)
    return x


#: Top blocks a whole-breast model (``image`` and ``breast`` tasks) adds on its trunk by
#: default; a patch (``roi``) model has none. Shen et al. (2019) put two such blocks on
#: their patch classifiers' trunks to make whole-image classifiers.
WHOLE_BREAST_TOP_BLOCKS = 2
#: Filters of each top block on a backbone's wider map (the baseline's keep its last width).
_BACKBONE_TOP_FILTERS = 256
#: Name of the nested top blocks of a two-view model (shared by both views, as the trunk).
TOP_LAYER = "top"


def top_blocks_for(task: str) -> int:
    """The default number of top blocks for a model of ``task``: none for patches, whose
    trunk already spans a lesion; :data:`WHOLE_BREAST_TOP_BLOCKS` for whole breasts."""
    return 0 if task == "roi" else WHOLE_BREAST_TOP_BLOCKS


def _top(x, architecture: str, blocks: int, dropout: float, l2: float):
    """``blocks`` convolution blocks after the trunk (layers ``top{i}_*``): each two 3x3
    convolutions with batch normalization, then max pooling that halves the map (``same``
    padding, so a small map never vanishes). They are new in every model that has them
    unless its source had them too; :func:`set_backbone_trainable` never freezes them."""
    filters = _BASELINE_FILTERS[-1] if architecture == "baseline" else _BACKBONE_TOP_FILTERS
    regularizer = keras.regularizers.L2(l2) if l2 else None
    for index in range(1, blocks + 1):
        for repeat in (1, 2):
            x = keras.layers.Conv2D(
                filters, 3, padding="same", use_bias=False, kernel_regularizer=regularizer,
                name=f"top{index}_conv{repeat}",
            )(x)
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"top{index}_bn{repeat}")(x)
            x = keras.layers.ReLU(name=f"top{index}_relu{repeat}")(x)
        x = keras.layers.MaxPooling2D(padding="same", name=f"top{index}_pool")(x)
        x = keras.layers.Dropout(dropout / 2, name=f"top{index}_dropout")(x)
    return x


def _baseline_head(features, num_classes: int, dropout: float, l2: float):
    """Pooled features -> class probabilities (dense layer, dropout, softmax)."""
    x = keras.layers.Dense(
        64, activation="relu", kernel_regularizer=keras.regularizers.L2(l2), name="dense"
    )(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)


def _global_pool(architecture: str):
    """The pooling between trunk and head.

    Baseline: max, not average: a lesion may fill a small part of the patch, and
    averaging over the whole patch dilutes it (on the synthetic known answer, max
    pooling reached a validation macro AUC of 0.94 against 0.92 for average pooling in
    the same epochs). Backbones: average, as ``keras.applications`` classifiers pool.
    """
    if architecture == "baseline":
        return keras.layers.GlobalMaxPooling2D(name="global_pool")
    return keras.layers.GlobalAveragePooling2D(name="global_pool")


def _load_backbone(architecture: str, image_size: int, weights: str | Path):
    """The backbone without its top, with ImageNet, no or local weights."""
    spec = _backbone_spec(architecture)
    if image_size < spec.min_size:
        raise ValueError(f"{architecture} needs an input of at least {spec.min_size} pixels")
    constructor = getattr(keras.applications, spec.constructor)
    keras_weights = None
    if weights == "imagenet":
        ensure_imagenet_weights_available(architecture, image_size)
        keras_weights = "imagenet"
    backbone = constructor(
        include_top=False, weights=keras_weights, input_shape=(image_size, image_size, 3),
        name=BACKBONE_LAYER,
    )
    if weights not in ("none", "imagenet", None):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file {path} does not exist")
        backbone.load_weights(str(path))
    return backbone


#: Moving-average momentum of BatchNormalization in a backbone trained from scratch.
FROM_SCRATCH_BN_MOMENTUM = 0.9


def _use_fast_batch_norm_statistics(backbone: keras.Model) -> None:
    """Let a from-scratch backbone's BatchNormalization statistics follow training.

    ``keras.applications`` use a momentum of 0.99, made for ImageNet-length training:
    after a few hundred steps the moving statistics still describe the random initial
    weights, and the model predicts one class at validation (MobileNetV2 on the
    synthetic patches: validation macro AUC 0.49 after 8 epochs at 0.99, 0.80 at 0.9).
    """
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = FROM_SCRATCH_BN_MOMENTUM


def _transfer_trunk(inputs, architecture: str, image_size: int, weights: str | Path):
    """Grayscale to RGB, the backbone's input preprocessing and the backbone itself:
    ``[size, size, 1]`` in [0, 1] -> the backbone's last feature map."""
    spec = _backbone_spec(architecture)
    rgb = keras.layers.Concatenate(name="grayscale_to_rgb")([inputs, inputs, inputs])
    x = keras.layers.Normalization(
        mean=list(spec.mean), variance=[s * s for s in spec.std], name="backbone_preprocess"
    )(rgb)
    backbone = _load_backbone(architecture, image_size, weights)
    # Pretrained: training=False keeps BatchNormalization in inference mode in both stages,
    # so small batches never disturb the learned statistics. From scratch the statistics
    # must be learned, so BatchNormalization follows the training phase.
    pretrained = weights not in ("none", None)
    if not pretrained:
        _use_fast_batch_norm_statistics(backbone)
    return backbone(x, training=False if pretrained else None)


def _transfer_head(features, num_classes: int, dropout: float, l2: float):
    """Pooled features -> class probabilities (dropout, softmax)."""
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    return keras.layers.Dense(
        num_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(l2),
        name="predictions",
    )(x)


def _check_model_arguments(architecture: str, num_classes: int, weights) -> None:
    if architecture not in ARCHITECTURES:
        raise ValueError(
            f"unknown architecture {architecture!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if architecture == "baseline" and weights not in ("none", None):
        raise ValueError("the baseline CNN has no pretrained weights; use weights='none'")


def _trunk(inputs, architecture: str, image_size: int, weights, dropout: float, l2: float,
           stem_steps: int | None = None):
    """The trunk's layers applied to ``inputs``: the one definition both the single-view
    model (inline) and :func:`build_trunk` (nested) use, so their layer names agree."""
    if architecture == "baseline":
        return _baseline_trunk(inputs, dropout, l2, stem_steps)
    return _transfer_trunk(inputs, architecture, image_size, weights)


def _head(features, architecture: str, num_classes: int, dropout: float, l2: float):
    if architecture == "baseline":
        return _baseline_head(features, num_classes, dropout, l2)
    return _transfer_head(features, num_classes, dropout, l2)


def build_model(
    architecture: str,
    num_classes: int,
    image_size: int,
    *,
    weights: str | Path = "none",
    dropout: float = 0.3,
    l2: float = 1e-4,
    stem_steps: int | None = None,
    top_blocks: int = 0,
) -> keras.Model:
    """A classifier taking ``[batch, image_size, image_size, 1]`` in [0, 1].

    ``weights`` applies to backbones: ``"none"`` (random), ``"imagenet"`` (Keras cache or
    download; fails fast offline) or the path of a backbone weights file (a Keras
    ``*_notop.h5`` or a ``.weights.h5`` from :func:`save_backbone_weights`).
    ``stem_steps`` (baseline only) overrides :func:`baseline_stem_steps`. The trunk's
    layers (:func:`build_trunk`) sit inline, then ``top_blocks`` top blocks
    (:func:`top_blocks_for`), ``global_pool`` and the head.
    """
    _check_model_arguments(architecture, num_classes, weights)
    inputs = keras.Input((image_size, image_size, 1), name="image")
    features = _trunk(inputs, architecture, image_size, weights, dropout, l2, stem_steps)
    features = _top(features, architecture, top_blocks, dropout, l2)
    pooled = _global_pool(architecture)(features)
    outputs = _head(pooled, architecture, num_classes, dropout, l2)
    return keras.Model(inputs, outputs, name=architecture)


def build_trunk(
    architecture: str,
    image_size: int,
    *,
    weights: str | Path = "none",
    dropout: float = 0.3,
    l2: float = 1e-4,
    stem_steps: int | None = None,
) -> keras.Model:
    """The convolutional trunk alone, as a model named :data:`TRUNK_LAYER`:
    ``[batch, image_size, image_size, 1]`` in [0, 1] -> the last feature map.

    Its layers are the single-view model's trunk layers under the same names (the
    baseline's ``block*`` layers; a backbone's ``grayscale_to_rgb``,
    ``backbone_preprocess`` and nested ``backbone``), so weights copied by layer name
    from a single-view model fill it.
    """
    _check_model_arguments(architecture, 2, weights)
    inputs = keras.Input((image_size, image_size, 1), name="view")
    features = _trunk(inputs, architecture, image_size, weights, dropout, l2, stem_steps)
    return keras.Model(inputs, features, name=TRUNK_LAYER)


def build_two_view_model(
    architecture: str,
    num_classes: int,
    image_size: int,
    *,
    weights: str | Path = "none",
    dropout: float = 0.3,
    l2: float = 1e-4,
    stem_steps: int | None = None,
    top_blocks: int = 0,
) -> keras.Model:
    """A breast classifier: inputs ``cc`` and ``mlo`` (each ``[batch, image_size,
    image_size, 1]`` in [0, 1]) through one shared trunk, features joined, one head.

    The trunk (:func:`build_trunk`) is one nested model called on both views, so both
    views train the same weights. Each view's feature map is pooled as the single-view
    model pools it, and the two vectors are *concatenated* (``view_features``, CC
    first), not averaged: CC and MLO show the breast from two angles, so the head can
    weigh each view's evidence on its own, and a lesion seen in one view only is not
    halved by a view that misses it. A breast given one view twice (preprocessing's
    ``single_view: duplicate``) is still a valid input. ``top_blocks`` top blocks
    (:func:`top_blocks_for`) follow the trunk in each view, one nested model
    (:data:`TOP_LAYER`) shared by both as the trunk is.
    """
    _check_model_arguments(architecture, num_classes, weights)
    trunk = build_trunk(architecture, image_size, weights=weights, dropout=dropout, l2=l2,
                        stem_steps=stem_steps)
    inputs = {view: keras.Input((image_size, image_size, 1), name=view) for view in VIEW_INPUTS}
    features = {view: trunk(inputs[view]) for view in VIEW_INPUTS}
    if top_blocks:
        trunk_output = keras.Input(trunk.output.shape[1:], name="trunk_features")
        top = keras.Model(trunk_output, _top(trunk_output, architecture, top_blocks,
                                             dropout, l2), name=TOP_LAYER)
        features = {view: top(features[view]) for view in VIEW_INPUTS}
    pool = _global_pool(architecture)
    pooled = [pool(features[view]) for view in VIEW_INPUTS]
    joined = keras.layers.Concatenate(name="view_features")(pooled)
    outputs = _head(joined, architecture, num_classes, dropout, l2)
    return keras.Model([inputs[view] for view in VIEW_INPUTS], outputs,
                       name=f"{architecture}_two_view")


def trunk_of(model: keras.Model) -> keras.Model | None:
    """The nested shared trunk of a two-view model, or None for a single-view model."""
    try:
        return model.get_layer(TRUNK_LAYER)
    except ValueError:
        return None


def backbone_of(model: keras.Model) -> keras.Model | None:
    """The nested backbone of a transfer-learning model (inside the shared trunk of a
    two-view model), or None for the baseline."""
    holder = trunk_of(model) or model
    try:
        return holder.get_layer(BACKBONE_LAYER)
    except ValueError:
        return None


def trunk_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of the convolutional trunk: the nested backbone's, or the baseline's
    stem and convolution blocks (``stem*``, ``block*``, inside the shared trunk of a
    two-view model); empty when the model has neither."""
    backbone = backbone_of(model)
    if backbone is not None:
        return list(backbone.layers)
    holder = trunk_of(model) or model
    return [layer for layer in holder.layers if layer.name.startswith(("stem", "block"))]


def set_backbone_trainable(
    model: keras.Model, stage: str, fine_tune_fraction: float = 0.3
) -> None:
    """Set which trunk layers train; recompile the model afterwards.

    The trunk is the nested backbone of a transfer-learning model, or the convolution
    blocks of the baseline (a baseline started from another model's trunk trains in
    stages too, see :mod:`mammo_utils.transfer`).
    ``"head"``: the whole trunk frozen (first stage with pretrained weights).
    ``"finetune"``: the top ``fine_tune_fraction`` of its layers unfrozen, except
    BatchNormalization layers, which stay frozen (a pretrained backbone is called with
    ``training=False``, and a frozen BatchNormalization layer runs in inference mode, so
    their statistics never move either). ``"full"``: every layer trains (a trunk learned
    from scratch, ``weights="none"``).
    """
    layers = trunk_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no trunk to freeze or fine-tune")
    backbone = backbone_of(model)
    if stage in ("head", "full"):
        if backbone is not None:
            backbone.trainable = stage == "full"
        for layer in layers:
            layer.trainable = stage == "full"
        return
    if stage != "finetune":
        raise ValueError(f"stage must be 'head', 'finetune' or 'full', got {stage!r}")
    if not 0.0 < fine_tune_fraction <= 1.0:
        raise ValueError(f"fine_tune_fraction must be in (0, 1], got {fine_tune_fraction}")
    if backbone is not None:
        backbone.trainable = True
    first_trainable = int(round(len(layers) * (1.0 - fine_tune_fraction)))
    for position, layer in enumerate(layers):
        frozen = position < first_trainable or isinstance(
            layer, keras.layers.BatchNormalization
        )
        layer.trainable = not frozen


def save_backbone_weights(model: keras.Model, path: str | Path) -> Path:
    """Write the backbone's weights to ``path`` (must end in ``.weights.h5``) for reuse
    as ``build_model(..., weights=path)`` on a machine without internet."""
    backbone = backbone_of(model)
    if backbone is None:
        raise ValueError(f"model {model.name!r} has no backbone")
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"backbone weights file name must end in .weights.h5: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    backbone.save_weights(str(path))
    return path


def parameter_count(model: keras.Model) -> int:
    """Total number of weights (trainable and not)."""
    return int(sum(np.prod(weight.shape) for weight in model.weights))
