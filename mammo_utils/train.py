"""Train one model on a processed data set and write its model directory.

:func:`train` reads ``manifest.csv`` and ``preprocess_config.json`` from a processed
folder, builds the tf.data pipelines and the model, trains with early stopping,
learning-rate reduction, checkpointing and a CSV log, and writes ``model.keras``,
``model_card.json`` and ``history.csv``. Backbones train in two stages: the new head on
a frozen backbone, then the top of the backbone at a lower learning rate. The best
weights over both stages (lowest validation loss) are the ones saved.

The output order is the label scheme's unless ``class_order`` names a permutation of it;
either way the card's ``classes`` records it, and everything that reads a model (evaluate,
inference) takes the order from there.
"""

from __future__ import annotations

import hashlib
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from mammo_utils import models, pipeline
from mammo_utils.files import sha256_file
from mammo_utils.metrics import macro_roc_auc, one_vs_rest_roc_auc
from mammo_utils.model_card import CARD_FILE, HISTORY_FILE, MODEL_FILE, ModelCard

logger = logging.getLogger(__name__)

_CHECKPOINT_FILE = "best.weights.h5"


@keras.saving.register_keras_serializable(package="mammo_utils")
class SparseAUC(keras.metrics.AUC):
    """ROC-AUC over one-vs-rest indicators, fed integer labels (Keras' AUC wants one-hot)."""

    def __init__(self, num_classes: int, name: str = "auc", **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        return super().update_state(tf.one_hot(labels, self.num_classes), y_pred)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}


@dataclass
class TrainResult:
    """What :func:`train` produced: the model directory and its contents."""

    model_dir: Path
    model: keras.Model
    card: ModelCard
    history: pd.DataFrame


def split_sha256(frame: pd.DataFrame) -> str:
    """Hex SHA-256 of the split assignment (``item_id``, else the file name, with ``split``),
    sorted, so two cards share it exactly when their models saw the same division."""
    if "item_id" in frame.columns:
        items = frame["item_id"].astype(str)
    else:
        items = frame["path"].map(lambda path: Path(path).name)
    lines = sorted(f"{item},{split}" for item, split in zip(items, frame["split"], strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def choose_strategy() -> tf.distribute.Strategy:
    """``MirroredStrategy`` when several GPUs are visible, else the default strategy."""
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow; make TensorFlow ops deterministic if asked."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        try:
            tf.config.experimental.enable_op_determinism()
        except (RuntimeError, ValueError) as exc:  # unsupported on some builds/devices
            logger.warning("op determinism unavailable: %s", exc)


def _check_leakage(frame: pd.DataFrame) -> None:
    """Refuse a manifest where a patient spans splits (when the splits stage exists)."""
    try:
        from mammo_utils.splits import assert_no_patient_leakage
    except ImportError:
        logger.warning("mammo_utils.splits is not available; patient leakage not checked")
        return
    assert_no_patient_leakage(frame)


def _compile(model: keras.Model, learning_rate: float, num_classes: int) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", SparseAUC(num_classes)],
    )


def _callbacks(out_dir: Path, patience: int, checkpoint, tensorboard: bool) -> list:
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, patience // 2), min_lr=1e-7
        ),
        checkpoint,
        keras.callbacks.CSVLogger(str(out_dir / HISTORY_FILE), append=True),
    ]
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard")))
    return callbacks


def _validation_metrics(model: keras.Model, val_data: tf.data.Dataset, labels: np.ndarray,
                        classes: tuple[str, ...]) -> dict:
    """Loss, accuracy and Keras AUC from ``evaluate``; ROC-AUC as :mod:`mammo_utils.metrics`
    computes it for ``metrics.json`` (``None`` where a class lacks positives or negatives)."""
    scores = model.evaluate(val_data, verbose=0, return_dict=True)
    probabilities = model.predict(val_data, verbose=0)
    per_class = one_vs_rest_roc_auc(labels, probabilities)
    return {
        "loss": float(scores["loss"]),
        "accuracy": float(scores["accuracy"]),
        "auc": float(scores["auc"]),
        "macro_roc_auc": macro_roc_auc(labels, probabilities),
        "roc_auc_per_class": dict(zip(classes, per_class, strict=True)),
        "n": int(len(labels)),
    }


def train(
    data_dir: str | Path,
    architecture: str = "baseline",
    weights: str | Path = "none",
    epochs: int = 20,
    batch_size: int = 32,
    out_dir: str | Path = "models/default/baseline",
    *,
    label_scheme: str = "four_class",
    class_order: Sequence[str] | None = None,
    seed: int = 0,
    learning_rate: float = 1e-3,
    fine_tune_epochs: int = 0,
    fine_tune_learning_rate: float = 1e-5,
    fine_tune_fraction: float = 0.3,
    balance: str = "class_weight",
    augment: bool = True,
    patience: int = 5,
    dropout: float = 0.3,
    l2: float = 1e-4,
    tensorboard: bool = False,
    deterministic: bool = True,
    verbose: int = 1,
    model_name: str | None = None,
) -> TrainResult:
    """Train ``architecture`` on the processed folder ``data_dir``; write ``out_dir``.

    ``epochs`` is the head stage length; a pretrained backbone then fine-tunes for
    ``fine_tune_epochs`` more at ``fine_tune_learning_rate`` with the top
    ``fine_tune_fraction`` of the backbone unfrozen. A backbone with ``weights="none"``
    trains whole, from scratch, for ``epochs + fine_tune_epochs`` in one stage.
    ``class_order`` sets which output unit is which class: a permutation of the
    ``label_scheme`` classes (default: the scheme's order); anything else raises
    ``ValueError`` before training starts. ``balance`` is ``class_weight`` (default),
    ``oversample`` or ``none``. ``verbose`` is
    passed to Keras (1: progress bars, 2: one line per epoch).
    """
    started = time.perf_counter()
    classes = pipeline.output_classes(label_scheme, class_order)
    seed_everything(seed, deterministic)
    manifest = pipeline.load_manifest(data_dir)
    _check_leakage(manifest.frame)
    image_size = manifest.image_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HISTORY_FILE).unlink(missing_ok=True)

    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    common = {"label_scheme": label_scheme, "classes": classes, "batch_size": batch_size,
              "image_size": image_size, "seed": seed}
    train_data = pipeline.make_dataset(
        manifest, "train", balance=balance, training=True,
        augmentation=None if augment else pipeline.Augmentation(0, 0, False, False, 0, 0),
        **common,
    )
    val_data = pipeline.make_dataset(manifest, "val", training=False, **common)
    val_labels = pipeline.encode_labels(val_rows["label"], label_scheme, classes)
    weights_by_class = (
        pipeline.class_weights(train_rows["label"], label_scheme, classes)
        if balance == "class_weight" else None
    )
    steps = pipeline.steps_per_epoch(manifest, "train", batch_size)

    with choose_strategy().scope():
        model = models.build_model(
            architecture, len(classes), image_size, weights=weights, dropout=dropout, l2=l2
        )
        has_backbone = models.backbone_of(model) is not None
        pretrained = has_backbone and weights not in ("none", None)
        if has_backbone:
            models.set_backbone_trainable(model, "head" if pretrained else "full")
        _compile(model, learning_rate, len(classes))

    checkpoint = keras.callbacks.ModelCheckpoint(
        str(out_dir / _CHECKPOINT_FILE), monitor="val_loss", save_best_only=True,
        save_weights_only=True,
    )
    fit = {"x": train_data, "validation_data": val_data, "steps_per_epoch": steps,
           "class_weight": weights_by_class, "shuffle": False, "verbose": verbose}
    # From scratch there is nothing to protect: one stage trains everything for all epochs.
    first_stage_epochs = epochs if pretrained or not has_backbone else epochs + fine_tune_epochs
    model.fit(epochs=first_stage_epochs,
              callbacks=_callbacks(out_dir, patience, checkpoint, tensorboard), **fit)
    if pretrained and fine_tune_epochs > 0:
        done = len(pd.read_csv(out_dir / HISTORY_FILE))
        with choose_strategy().scope():
            models.set_backbone_trainable(model, "finetune", fine_tune_fraction)
            _compile(model, fine_tune_learning_rate, len(classes))
        model.fit(epochs=done + fine_tune_epochs, initial_epoch=done,
                  callbacks=_callbacks(out_dir, patience, checkpoint, tensorboard), **fit)
    with warnings.catch_warnings():
        # The checkpoint may hold the other stage's optimizer state; only layers matter here.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        model.load_weights(str(out_dir / _CHECKPOINT_FILE))
    (out_dir / _CHECKPOINT_FILE).unlink()

    history = pd.read_csv(out_dir / HISTORY_FILE)
    best_epoch = int(history.loc[history["val_loss"].idxmin(), "epoch"]) + 1
    model.save(out_dir / MODEL_FILE)
    card = ModelCard(
        model_name=model_name or out_dir.name,
        architecture=architecture,
        classes=list(classes),
        label_scheme=label_scheme,
        task=str(manifest.config.get("task", "roi")),
        image_size=image_size,
        working_size=manifest.config.get("working_size"),
        preprocessing=manifest.config,
        data={
            "manifest": str(manifest.source),
            "manifest_sha256": sha256_file(manifest.source) if manifest.source else None,
            "split_sha256": split_sha256(manifest.frame),
            "counts": {
                split: {str(k): int(v) for k, v in rows["label"].value_counts().items()}
                for split, rows in manifest.frame.groupby("split")
            },
        },
        training={
            "epochs": epochs, "fine_tune_epochs": fine_tune_epochs if has_backbone else 0,
            "stages": ["head", "finetune"] if pretrained else ["full"],
            "epochs_run": len(history), "batch_size": batch_size,
            "learning_rate": learning_rate,
            "fine_tune_learning_rate": fine_tune_learning_rate if has_backbone else None,
            "fine_tune_fraction": fine_tune_fraction if has_backbone else None,
            "weights": str(weights), "balance": balance, "augment": augment,
            "class_weight": (
                {classes[i]: w for i, w in weights_by_class.items()} if weights_by_class else None
            ),
            "dropout": dropout, "l2": l2,
            "patience": patience, "seed": seed, "deterministic": deterministic,
            "strategy": type(choose_strategy()).__name__,
            "training_time_s": round(time.perf_counter() - started, 2),
        },
        best_epoch=best_epoch,
        validation_metrics=_validation_metrics(model, val_data, val_labels, classes),
        parameter_count=models.parameter_count(model),
        seed=seed,
    )
    card.save(out_dir)
    logger.info("wrote %s, %s and %s to %s", MODEL_FILE, CARD_FILE, HISTORY_FILE, out_dir)
    return TrainResult(model_dir=out_dir, model=model, card=card, history=history)
