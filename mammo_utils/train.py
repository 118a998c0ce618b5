"""Train one model on a processed data set and write its model directory.

:func:`train` reads ``manifest.csv`` and ``preprocess_config.json`` from a processed
folder and trains as a :class:`~mammo_utils.training_config.TrainingConfig` says: it
builds the tf.data pipelines and the model under one distribution strategy, trains with
early stopping, learning-rate reduction, checkpointing and a CSV log, and writes
``model.keras``, ``model_card.json`` and ``history.csv``. Backbones with pretrained
weights train in two stages: the new head on a frozen backbone, then the top of the
backbone at a lower learning rate. The best weights over both stages (lowest validation
loss) are the ones saved.

One seed gives one model: Python, NumPy, TensorFlow and Keras are seeded, TensorFlow's
ops run deterministically on one inter-op thread, and the input pipeline is a function
of the seed (see :mod:`mammo_utils.pipeline`), so two runs of one configuration on one
machine write the same weights, history and validation metrics. Op determinism alone
was not enough on a CPU: at the default report's scale, two DenseNet121 trainings with
one seed parted in the first epoch while ops ran side by side on several inter-op
threads, and repeated bit for bit on one (about 4 % slower). The card's
``repeatable`` says whether a run had both.

The output order is the label scheme's unless the config's ``class_order`` names a
permutation of it; either way the card's ``classes`` records it, and everything that
reads a model (evaluate, inference) takes the order from there.
"""

from __future__ import annotations

import hashlib
import logging
import os
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
from mammo_utils.splits import assert_no_patient_leakage
from mammo_utils.training_config import TrainingConfig

logger = logging.getLogger(__name__)

#: Environment variable TensorFlow reads for its inter-op thread count when it starts.
INTER_OP_THREADS_VARIABLE = "TF_NUM_INTEROP_THREADS"
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


def seed_everything(seed: int, deterministic: bool = True) -> bool:
    """Seed Python, NumPy, TensorFlow and Keras; if asked, make TensorFlow's ops
    deterministic and run them one at a time (process-wide: TensorFlow offers no public
    way to switch either off again). Returns whether the run can repeat bit for bit."""
    repeatable = deterministic and _single_inter_op_thread()
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    return repeatable


def _single_inter_op_thread() -> bool:
    """Run independent ops one after the other; ``False`` (with a warning) when TensorFlow
    already started with several inter-op threads and cannot change them any more."""
    if (tf.config.threading.get_inter_op_parallelism_threads() == 1
            or os.environ.get(INTER_OP_THREADS_VARIABLE) == "1"):
        return True
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        logger.warning(
            "TensorFlow started before training with several inter-op threads: this run "
            "may not repeat bit for bit. Train in a fresh process, or set "
            f"{INTER_OP_THREADS_VARIABLE}=1 before TensorFlow starts."
        )
        return False
    return True


def _compile(model: keras.Model, learning_rate: float, num_classes: int) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy", SparseAUC(num_classes)],
    )


def _callbacks(out_dir: Path, config: TrainingConfig, checkpoint, extra=()) -> list:
    """Early stopping and learning-rate halving on validation loss, the shared best-weights
    checkpoint, the CSV log (appended across stages), if asked TensorBoard, then ``extra``."""
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2), min_lr=1e-7
        ),
        checkpoint,
        keras.callbacks.CSVLogger(str(out_dir / HISTORY_FILE), append=True),
    ]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard")))
    return [*callbacks, *extra]


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


def train(data_dir: str | Path, out_dir: str | Path, config: TrainingConfig, *,
          model_name: str | None = None, verbose: int = 1,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train as ``config`` says on the processed folder ``data_dir``; write ``out_dir``.

    The settings are checked when ``config`` is made; a ``class_order`` that does not
    fit the data, or a patient in two splits, raises ``ValueError`` before anything is
    written. ``model_name`` defaults to the folder's name. ``verbose`` is passed to
    Keras (0: silent, 1: progress bars, 2: one line per epoch). ``callbacks`` are
    further Keras callbacks for every stage (a learning-curve recorder, say).
    """
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    started = time.perf_counter()
    classes = pipeline.output_classes(config.label_scheme, config.class_order)
    repeatable = seed_everything(config.seed, config.deterministic)
    manifest = pipeline.load_manifest(data_dir)
    assert_no_patient_leakage(manifest.frame)
    image_size = manifest.image_size
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / HISTORY_FILE).unlink(missing_ok=True)

    train_rows, val_rows = manifest.split("train"), manifest.split("val")
    common = {"label_scheme": config.label_scheme, "classes": classes,
              "batch_size": config.batch_size, "image_size": image_size, "seed": config.seed}
    train_data = pipeline.make_dataset(
        manifest, "train", balance=config.balance, training=True,
        augmentation=pipeline.Augmentation() if config.augment else pipeline.Augmentation.none(),
        **common,
    )
    val_data = pipeline.make_dataset(manifest, "val", training=False, **common)
    val_labels = pipeline.encode_labels(val_rows["label"], config.label_scheme, classes)
    weights_by_class = (
        pipeline.class_weights(train_rows["label"], config.label_scheme, classes)
        if config.balance == "class_weight" else None
    )
    steps = pipeline.steps_per_epoch(manifest, "train", config.batch_size)

    # One strategy for the whole run: both stages build and compile under it, and the
    # card records it.
    strategy = choose_strategy()
    with strategy.scope():
        model = models.build_model(config.architecture, len(classes), image_size,
                                   weights=config.weights, dropout=config.dropout, l2=config.l2)
        if models.backbone_of(model) is not None:
            models.set_backbone_trainable(model, "head" if config.pretrained else "full")
        _compile(model, config.learning_rate, len(classes))

    checkpoint = keras.callbacks.ModelCheckpoint(
        str(out_dir / _CHECKPOINT_FILE), monitor="val_loss", save_best_only=True,
        save_weights_only=True,
    )
    fit = {"x": train_data, "validation_data": val_data, "steps_per_epoch": steps,
           "class_weight": weights_by_class, "shuffle": False, "verbose": verbose}
    # From scratch there is nothing to protect: one stage trains everything for all epochs.
    first_stage_epochs = (config.epochs if config.pretrained
                          else config.epochs + config.fine_tune_epochs)
    model.fit(epochs=first_stage_epochs,
              callbacks=_callbacks(out_dir, config, checkpoint, callbacks), **fit)
    if config.pretrained and config.fine_tune_epochs > 0:
        done = len(pd.read_csv(out_dir / HISTORY_FILE))
        with strategy.scope():
            models.set_backbone_trainable(model, "finetune", config.fine_tune_fraction)
            _compile(model, config.fine_tune_learning_rate, len(classes))
        model.fit(epochs=done + config.fine_tune_epochs, initial_epoch=done,
                  callbacks=_callbacks(out_dir, config, checkpoint, callbacks), **fit)
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
        architecture=config.architecture,
        classes=list(classes),
        label_scheme=config.label_scheme,
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
            **config.to_dict(),
            "stages": ["head", "finetune"] if config.pretrained else ["full"],
            "epochs_run": len(history),
            "class_weight": (
                {classes[i]: w for i, w in weights_by_class.items()} if weights_by_class else None
            ),
            "strategy": type(strategy).__name__,
            "replicas": int(strategy.num_replicas_in_sync),
            "repeatable": repeatable,
            "training_time_s": round(time.perf_counter() - started, 2),
        },
        best_epoch=best_epoch,
        validation_metrics=_validation_metrics(model, val_data, val_labels, classes),
        parameter_count=models.parameter_count(model),
        seed=config.seed,
    )
    card.save(out_dir)
    logger.info("wrote %s, %s and %s to %s", MODEL_FILE, CARD_FILE, HISTORY_FILE, out_dir)
    return TrainResult(model_dir=out_dir, model=model, card=card, history=history)
