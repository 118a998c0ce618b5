"""tf.data input pipelines from a preprocessing manifest.

A manifest (``manifest.csv`` beside ``preprocess_config.json``, see docs/architecture.md)
lists 16-bit grayscale PNGs with their ``split`` and canonical ``label``. This module
turns one split into batches of ``(float32 [batch, size, size, 1] in [0, 1], int32 label)``
(for a ``breast`` manifest, whose rows hold a CC and an MLO file, the images are a dict
``{"cc": ..., "mlo": ...}`` keyed by the two-view model's input names, each view
augmented with its own seed) where the label is the output index under a label scheme: by default in
:func:`mammo_utils.classes.scheme_classes` order, or in the permutation of it passed as
``classes`` (the order a model card records). Units are kept for classes absent from
the data.

Training batches are shuffled with a seed, repeated without end and augmented
(rotation, flips, zoom, brightness, contrast) by stateless random ops. The augmentation
of an example is a function of the seed, the pass over the data and the example's row
alone, so it does not depend on the shuffle order, on TensorFlow's global seed or on how
many pipelines were made before (oversampled, where a row may come twice in a pass, of
the seed, the draw and the row). Every ``map`` keeps its input order however many
threads run it. Each pass's order is a function of the seed and the pass number alone, not of
TensorFlow's global seed nor of the iterators made before. Oversampling's draws depend
on the seed and on TensorFlow's global seed, which :func:`mammo_utils.train.train` sets
from the same seed first. Class imbalance is
handled by class weights (default, :func:`class_weights`, applied in the pipeline as
per-example weights) or by oversampling.

For training on several workers each worker reads its own ``shard`` of a split's rows
(every ``count``-th row from ``index``: data-level sharding, decided by the manifest
alone), and a resumed training starts its endless stream where the killed one stopped
(``start``), so resuming draws exactly the examples and augmentations it would have.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from mammo_utils.classes import check_class_order, map_label, scheme_classes
from mammo_utils.preprocess import CONFIG_FILE, MANIFEST_FILE
from mammo_utils.preprocess.breast_task import BREAST_PATH_COLUMNS, VIEW_INPUTS
from mammo_utils.training_config import BALANCE_MODES

_REQUIRED_COLUMNS = ("split", "label")
_PNG_MAX = 65535.0


class ManifestError(ValueError):
    """A manifest that cannot feed a pipeline; the message names the file and the reason."""


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: its rows (``path`` made absolute), source file and config."""

    frame: pd.DataFrame
    source: Path | None = None
    config: dict = field(default_factory=dict)

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split, in manifest order (the order a pipeline yields them)."""
        rows = self.frame[self.frame["split"] == name].reset_index(drop=True)
        if rows.empty:
            raise ManifestError(f"{self._where}: split {name!r} has no rows")
        return rows

    @property
    def path_columns(self) -> tuple[str, ...]:
        """The columns holding a row's files: ``path``, or a breast's ``cc_path`` and
        ``mlo_path``."""
        return path_columns(self.frame)

    @property
    def two_view(self) -> bool:
        """Whether each row is a breast with two view files (the ``breast`` task)."""
        return self.path_columns == BREAST_PATH_COLUMNS

    @property
    def image_size(self) -> int:
        """Patch or image size: from preprocess_config.json, else from the first PNG."""
        if "size" in self.config:
            return int(self.config["size"])
        first_file = self.frame[self.path_columns[0]].iloc[0]
        first = tf.io.decode_png(tf.io.read_file(first_file), dtype=tf.uint16)
        return int(first.shape[0])

    @property
    def _where(self) -> str:
        return str(self.source) if self.source else "manifest"


def load_manifest(source: str | Path | Manifest) -> Manifest:
    """Read a manifest from a processed folder or its ``manifest.csv``.

    Relative ``path`` values are resolved against the manifest's folder;
    ``preprocess_config.json`` beside the manifest is read when present.
    """
    if isinstance(source, Manifest):
        return source
    path = Path(source)
    if path.is_dir():
        path = path / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    root = path.parent
    frame = pd.read_csv(path)
    config_path = root / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    files = BREAST_PATH_COLUMNS if config.get("task") == "breast" else ("path",)
    missing = [column for column in _REQUIRED_COLUMNS + files if column not in frame.columns]
    if missing:
        raise ManifestError(f"{path}: missing columns {', '.join(missing)}")
    for column in files:
        frame[column] = [str(p if Path(p).is_absolute() else root / p) for p in frame[column]]
    return Manifest(frame=frame, source=path, config=config)


def path_columns(frame: pd.DataFrame) -> tuple[str, ...]:
    """The file columns of manifest rows: a breast's two views, else ``path``."""
    if all(column in frame.columns for column in BREAST_PATH_COLUMNS):
        return BREAST_PATH_COLUMNS
    return ("path",)


def output_classes(scheme: str = "four_class",
                   classes: Sequence[str] | None = None) -> tuple[str, ...]:
    """The output order: ``scheme``'s classes, or ``classes`` after checking that it is
    a permutation of them (``ValueError`` otherwise)."""
    if classes is None:
        return scheme_classes(scheme)
    return check_class_order(classes, scheme)


def encode_labels(labels, scheme: str = "four_class",
                  classes: Sequence[str] | None = None) -> np.ndarray:
    """Output indices (int32) of canonical class names under ``scheme``, in the output
    order ``classes`` (default: the scheme's order, see :func:`output_classes`)."""
    order = output_classes(scheme, classes)
    return np.asarray([order.index(map_label(label, scheme)) for label in labels],
                      dtype=np.int32)


def class_weights(labels, scheme: str = "four_class",
                  classes: Sequence[str] | None = None) -> dict[int, float]:
    """Balanced class weights ``n / (k * n_c)`` over the ``k`` classes present, keyed by
    output index in the order ``classes`` (see :func:`encode_labels`).

    Every output unit of the scheme gets a key (Keras wants them all); classes absent
    from ``labels`` get weight 1.0, which never applies since no example carries them.
    """
    indices = encode_labels(labels, scheme, classes)
    counts = np.bincount(indices, minlength=len(scheme_classes(scheme)))
    present = int(np.count_nonzero(counts))
    return {
        index: float(len(indices) / (present * count)) if count else 1.0
        for index, count in enumerate(counts)
    }


def decode_png(path: tf.Tensor, image_size: int) -> tf.Tensor:
    """A 16-bit grayscale PNG as ``float32 [image_size, image_size, 1]`` in [0, 1]."""
    image = tf.io.decode_png(tf.io.read_file(path), channels=1, dtype=tf.uint16)
    image = tf.cast(image, tf.float32) / _PNG_MAX
    if image.shape[0] != image_size or image.shape[1] != image_size:
        image = tf.image.resize(image, (image_size, image_size), antialias=True)
    return tf.ensure_shape(image, (image_size, image_size, 1))


@dataclass(frozen=True)
class Augmentation:
    """Random geometric and intensity changes for training batches.

    The defaults change geometry only (flips, rotation, a zoom of up to 10 %): a lesion's
    contrast with its surroundings and its size are what tell the classes apart, and a
    random contrast of +-20 %, a brightness shift of 0.1 and a zoom of 20 % blurred them
    (at the real working scale, seed 3: validation macro ROC-AUC 0.77 with them, 0.85
    without; README, "Training at the real working scale"). Ask for intensity changes
    explicitly (``brightness``, ``contrast``) where scanners differ in them.
    """

    rotation_degrees: float = 20.0
    zoom: float = 0.1
    horizontal_flip: bool = True
    vertical_flip: bool = True
    brightness: float = 0.0
    contrast: float = 0.0

    @classmethod
    def none(cls) -> Augmentation:
        """No change at all: every image passes through as it is."""
        return cls(rotation_degrees=0.0, zoom=0.0, horizontal_flip=False,
                   vertical_flip=False, brightness=0.0, contrast=0.0)

    def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Augment one ``[h, w, 1]`` image; ``seed`` is an int64 pair (stateless ops)."""
        seeds = tf.random.experimental.stateless_split(seed, num=6)
        if self.horizontal_flip:
            image = tf.image.stateless_random_flip_left_right(image, seeds[0])
        if self.vertical_flip:
            image = tf.image.stateless_random_flip_up_down(image, seeds[1])
        if self.rotation_degrees or self.zoom:
            image = self._rotate_and_zoom(image, seeds[2], seeds[3])
        if self.brightness:
            image = tf.image.stateless_random_brightness(image, self.brightness, seeds[4])
        if self.contrast:
            image = tf.image.stateless_random_contrast(
                image, 1.0 - self.contrast, 1.0 + self.contrast, seeds[5]
            )
        return tf.clip_by_value(image, 0.0, 1.0)

    def _rotate_and_zoom(self, image: tf.Tensor, angle_seed, zoom_seed) -> tf.Tensor:
        """One affine warp about the centre: rotation, then isotropic zoom; edges reflect."""
        limit = math.radians(self.rotation_degrees)
        angle = tf.random.stateless_uniform([], angle_seed, -limit, limit)
        scale = tf.random.stateless_uniform([], zoom_seed, 1.0 - self.zoom, 1.0 + self.zoom)
        height = tf.cast(tf.shape(image)[0], tf.float32)
        width = tf.cast(tf.shape(image)[1], tf.float32)
        cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
        # The transform maps output pixel (x, y) to the input pixel sampled there.
        a0, a1 = tf.cos(angle) / scale, -tf.sin(angle) / scale
        b0, b1 = tf.sin(angle) / scale, tf.cos(angle) / scale
        transform = tf.stack(
            [a0, a1, cx - a0 * cx - a1 * cy, b0, b1, cy - b0 * cx - b1 * cy, 0.0, 0.0]
        )
        warped = tf.raw_ops.ImageProjectiveTransformV3(
            images=image[tf.newaxis],
            transforms=transform[tf.newaxis],
            output_shape=tf.shape(image)[:2],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode="REFLECT",
        )
        return warped[0]


def shard_rows(rows: pd.DataFrame, shard: tuple[int, int]) -> pd.DataFrame:
    """Rows ``index, index + count, ...`` of ``rows`` for ``shard = (index, count)``: each
    of ``count`` workers gets a disjoint, deterministic share, together all the rows."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard}")
    return rows.iloc[index::count]


def _decoded(rows: pd.DataFrame, labels: np.ndarray, image_size: int, cache: bool):
    """``(views, label)`` per row: a tuple of one decoded image per file column."""
    files = tuple(rows[column].to_numpy(str) for column in path_columns(rows))
    dataset = tf.data.Dataset.from_tensor_slices((files, labels))
    dataset = dataset.map(
        lambda paths, label: (tuple(decode_png(path, image_size) for path in paths), label),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )
    return dataset.cache() if cache else dataset


def _model_inputs(views: tuple, label):
    """A lone image for a single-view model; ``{"cc": ..., "mlo": ...}`` for two views."""
    if len(views) == 1:
        return views[0], label
    return dict(zip(VIEW_INPUTS, views, strict=True)), label


def _view_seed(seed: tf.Tensor, view: int) -> tf.Tensor:
    """The first view keeps ``seed`` (a single-view model's augmentation is unchanged);
    the second gets its own, so the two views of a breast are augmented independently."""
    return seed if view == 0 else tf.random.experimental.stateless_fold_in(seed, view)


def _augmentation_seed(seed: int, round_number: tf.Tensor, row: tf.Tensor,
                       n_rows: int) -> tf.Tensor:
    """The stateless seed (an int64 pair) that augments manifest row ``row`` of a split of
    ``n_rows`` in round ``round_number`` (a pass, or a draw): one pair per round and row,
    a function of these numbers alone."""
    return tf.stack([tf.constant(seed, tf.int64), round_number * n_rows + row])


def make_dataset(
    manifest: str | Path | pd.DataFrame | Manifest,
    split: str,
    *,
    label_scheme: str = "four_class",
    classes: Sequence[str] | None = None,
    batch_size: int = 32,
    image_size: int | None = None,
    training: bool | None = None,
    augmentation: Augmentation | None = None,
    balance: str = "class_weight",
    seed: int = 0,
    cache: bool = True,
    class_weight: Mapping[int, float] | None = None,
    shard: tuple[int, int] = (0, 1),
    start: int = 0,
) -> tf.data.Dataset:
    """Batches of one split as ``(images, labels)``.

    Labels are output indices under ``label_scheme`` in the order ``classes`` (default:
    the scheme's; pass a model card's ``classes`` to match its output units).
    ``training`` (default: ``split == "train"``) turns on augmentation (default:
    :class:`Augmentation`; :meth:`Augmentation.none` for none), seeded shuffling and
    endless repetition (pass ``steps_per_epoch`` to ``fit``, see :func:`steps_per_epoch`);
    otherwise the split is read once, in manifest order, so predictions line up with
    :meth:`Manifest.split`. ``balance="oversample"`` draws every present class equally
    often (training only); with ``"class_weight"`` pass :func:`class_weights` to ``fit``.
    ``cache`` keeps decoded images in memory (False decodes them every time).

    Training only: ``class_weight`` (output index to weight, see :func:`class_weights`)
    adds a third element, each example's weight, as Keras' ``class_weight`` would (and
    which a distributed dataset cannot take); ``shard`` keeps one worker's rows (see
    :func:`shard_rows`), whose augmentation stays keyed by the row's place in the whole
    split; ``start`` skips that many examples of the endless stream, as drawn before
    (their augmentation is never computed).
    """
    if balance not in BALANCE_MODES:
        raise ValueError(f"balance must be one of {', '.join(BALANCE_MODES)}, got {balance!r}")
    manifest = load_manifest(manifest)
    split_rows = manifest.split(split)
    rows = shard_rows(split_rows, shard)
    size = image_size or manifest.image_size
    training = split == "train" if training is None else training
    labels = encode_labels(rows["label"], label_scheme, classes)
    dataset = _decoded(rows, labels, size, cache)
    if not training:
        return dataset.map(_model_inputs).batch(batch_size).prefetch(tf.data.AUTOTUNE)

    # Each example carries its manifest row, and a running count of the draws gives the
    # round: the pass over the split (each row comes once per len(rows) draws), or when
    # oversampling, where a row may come twice in a pass, the draw itself.
    row_numbers = rows.index.to_numpy(np.int64)  # places in the whole split
    dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.from_tensor_slices(row_numbers))
    if balance == "oversample":
        dataset = _oversampled(dataset, labels, seed)
        draws_per_round = tf.constant(1, tf.int64)
    else:
        dataset = _passes(dataset, len(rows), seed)
        draws_per_round = tf.constant(len(rows), tf.int64)
    augment = augmentation or Augmentation()

    def augmented(example, row, drawn):
        views, label = example
        round_number = drawn // draws_per_round
        row_seed = _augmentation_seed(seed, round_number, row, len(split_rows))
        return _model_inputs(
            tuple(augment(image, _view_seed(row_seed, view)) for view, image in enumerate(views)),
            label,
        )

    dataset = tf.data.Dataset.zip(dataset, tf.data.Dataset.counter()).skip(start).map(
        lambda pair, drawn: augmented(*pair, drawn),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
    )
    if class_weight is not None:
        weight_of = tf.constant([class_weight[index] for index in range(len(class_weight))],
                                tf.float32)
        dataset = dataset.map(lambda image, label: (image, label, tf.gather(weight_of, label)))
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _passes(dataset: tf.data.Dataset, n_rows: int, seed: int) -> tf.data.Dataset:
    """Endless passes over ``dataset`` (of ``n_rows`` elements), each in an order drawn
    from the seed and the pass number alone (a stateless draw).

    Not ``shuffle(reshuffle_each_iteration=True)``: its orders come from one generator
    shared by every iterator of the dataset, so an iterator made and dropped before
    (Keras makes one under a distribution strategy) could change them, and an abandoned
    iterator still prefetching could change them at random. A pass is gathered as one
    element to be reordered: one more copy of the (cached) split in memory.
    """
    seed_tensor = tf.constant(seed, tf.int64)

    def reordered(pass_number, whole_pass):
        keys = tf.random.stateless_uniform([n_rows], tf.stack([seed_tensor, pass_number]))
        order = tf.argsort(keys)
        return tf.nest.map_structure(lambda values: tf.gather(values, order), whole_pass)

    whole_passes = dataset.batch(n_rows).repeat()
    return tf.data.Dataset.zip(tf.data.Dataset.counter(), whole_passes).map(reordered).unbatch()


def _oversampled(dataset: tf.data.Dataset, labels: np.ndarray, seed: int) -> tf.data.Dataset:
    """An endless stream drawing each present class with equal probability (the elements
    are ``((image, label), row)``)."""
    per_class = []
    for index in np.unique(labels):
        count = int(np.count_nonzero(labels == index))
        subset = dataset.filter(
            lambda example, _row, index=index: tf.equal(example[1], index)
        )
        per_class.append(
            subset.shuffle(count, seed=seed + int(index), reshuffle_each_iteration=True).repeat()
        )
    return tf.data.Dataset.sample_from_datasets(
        per_class, weights=[1.0 / len(per_class)] * len(per_class), seed=seed
    )


def steps_per_epoch(manifest: str | Path | pd.DataFrame | Manifest, split: str,
                    batch_size: int, shards: int = 1) -> int:
    """Batches that make one pass over a training split (at least 1); over ``shards``
    workers, ``batch_size`` is one worker's and the pass is over the smallest shard, so
    every worker takes the same number of steps."""
    return max(1, len(load_manifest(manifest).split(split)) // shards // batch_size)
