"""Train one model on a processed data set and write its model directory.

:func:`train` reads ``manifest.csv`` and ``preprocess_config.json`` from a processed
folder and trains as a :class:`~mammo_utils.training_config.TrainingConfig` says: it
builds the tf.data pipelines and the model under one distribution strategy, trains with
early stopping, learning-rate reduction, checkpointing and a CSV log, and writes
``model.keras``, ``model_card.json`` and ``history.csv``. Backbones with pretrained
weights, and models started from another model's trunk (``init_from``, see
:mod:`mammo_utils.transfer`), train in two stages (``TrainingConfig.stages``): the new
head on a frozen trunk, then the top of the trunk at a lower learning rate. The best
weights over both stages (lowest validation loss) are the ones saved.

Each training is also an MLflow run (:mod:`mammo_utils.tracking`): its settings, every
epoch's metrics, the card and the model; a store that fails costs a warning, never the
model.

One seed gives one model: Python, NumPy, TensorFlow and Keras are seeded, TensorFlow's
ops run deterministically on one inter-op thread, and the input pipeline is a function
of the seed (see :mod:`mammo_utils.pipeline`), so two runs of one configuration on one
machine write the same weights, history and validation metrics. Op determinism alone
was not enough on a CPU: at the default report's scale, two DenseNet121 trainings with
one seed parted in the first epoch while ops ran side by side on several inter-op
threads, and repeated bit for bit on one (about 4 % slower). The card's
``repeatable`` says whether a run had both.

Training may be spread over several devices or machines (``config.distribute``, see
:mod:`mammo_utils.distribute`; only the chief writes the model directory) and survives
being killed: a backup after every epoch lets the same call resume where it stopped
(:mod:`mammo_utils.resume`).

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

from mammo_utils import distribute, models, pipeline, tracking, transfer
from mammo_utils.distribute import choose_strategy
from mammo_utils.domain import training_range
from mammo_utils.files import sha256_file
from mammo_utils.metrics import macro_roc_auc, one_vs_rest_roc_auc
from mammo_utils.model_card import CARD_FILE, HISTORY_FILE, MODEL_FILE, ModelCard
from mammo_utils.resume import Backup, BackupCallback, Position, truncate_history
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
    """What :func:`train` produced: the model directory and its contents (written only
    when ``chief``: the other workers of a multi-worker run return them unwritten)."""

    model_dir: Path
    model: keras.Model
    card: ModelCard
    history: pd.DataFrame
    chief: bool = True


def split_sha256(frame: pd.DataFrame) -> str:
    """Hex SHA-256 of the split assignment (``item_id``, else the file name, with ``split``),
    sorted, so two cards share it exactly when their models saw the same division."""
    if "item_id" in frame.columns:
        items = frame["item_id"].astype(str)
    else:
        items = frame["path"].map(lambda path: Path(path).name)
    lines = sorted(f"{item},{split}" for item, split in zip(items, frame["split"], strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


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


def _save_portable(model: keras.Model, path: Path) -> None:
    """Save ``model`` compiled with built-in objects only (its optimizer and loss, accuracy),
    so plain Keras loads the file without mammo_utils: :class:`SparseAUC` served training."""
    model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"])
    model.save(path)


def _build(config: TrainingConfig, manifest: pipeline.Manifest,
           num_classes: int) -> keras.Model:
    """The untrained model ``config`` describes for ``manifest``: the two-view model for
    a breast manifest (CC and MLO per row); the source's stem for a baseline started from
    another model; the task's top blocks unless ``config.top_blocks`` says otherwise."""
    build = models.build_two_view_model if manifest.two_view else models.build_model
    stem_steps = (transfer.stem_steps_of(config.init_from) if config.init_from
                  else config.stem_steps)
    top_blocks = (models.top_blocks_for(manifest.config.get("task", "roi"))
                  if config.top_blocks is None else config.top_blocks)
    return build(config.architecture, num_classes, manifest.image_size,
                 weights=config.weights, dropout=config.dropout, l2=config.l2,
                 stem_steps=stem_steps, top_blocks=top_blocks)


def _prepare(model: keras.Model, stage: dict, config: TrainingConfig,
             num_classes: int) -> None:
    """Freeze what ``stage`` (one of ``TrainingConfig.stages()``) leaves alone and compile
    with its learning rate (a new optimizer); call under the run's strategy."""
    if models.trunk_layers(model):
        models.set_backbone_trainable(model, stage["name"], config.fine_tune_fraction)
    _compile(model, stage["learning_rate"], num_classes)


def _callbacks(out_dir: Path, config: TrainingConfig, checkpoint,
               run: tracking.TrackedRun, extra=()) -> list:
    """Early stopping and learning-rate halving on validation loss, the shared best-weights
    checkpoint, the CSV log (appended across stages), the tracked run's per-epoch metrics,
    if asked TensorBoard, then ``extra``."""
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, config.patience // 2), min_lr=1e-7
        ),
        checkpoint,
        keras.callbacks.CSVLogger(str(out_dir / HISTORY_FILE), append=True),
        run.keras_callback(),
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

    A backup of an unfinished training in ``out_dir`` (a killed run) is resumed from its
    last finished epoch; one made with other settings or data raises
    :class:`~mammo_utils.resume.ResumeRefused`. In a ``multi-worker`` run every worker
    calls this; only the chief writes ``out_dir`` (the others leave it as they found it).
    """
    if not isinstance(config, TrainingConfig):
        raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
    started = time.perf_counter()
    classes = pipeline.output_classes(config.label_scheme, config.class_order)
    repeatable = seed_everything(config.seed, config.deterministic)
    # One strategy for the whole run, made before TensorFlow starts its devices: every
    # stage builds and compiles under it, and the card records it.
    strategy = choose_strategy(config.distribute)
    where = distribute.placement(strategy)
    manifest = pipeline.load_manifest(data_dir)
    assert_no_patient_leakage(manifest.frame)
    image_size = manifest.image_size
    out_dir = Path(out_dir)
    work_dir = where.work_dir(out_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    manifest_sha256 = sha256_file(manifest.source) if manifest.source else None
    backup = Backup(work_dir, {"settings": config.to_dict(), "manifest_sha256": manifest_sha256,
                               "replicas": where.replicas, "workers": where.workers})
    resume = backup.load()
    if resume is None:
        (work_dir / HISTORY_FILE).unlink(missing_ok=True)
    else:
        logger.info("resuming %s after epoch %d", work_dir, resume.epochs)
        truncate_history(work_dir, resume.epochs)
    # Only the chief records an MLflow run; the other workers' is a disabled one.
    run = (tracking.start_training_run(out_dir, config, manifest, model_name or out_dir.name)
           if where.chief else tracking.TrackedRun())
    # A crash or an interrupt closes the run as failed instead of leaving it RUNNING.
    with run:
        train_rows, val_rows = manifest.split("train"), manifest.split("val")
        common = {"label_scheme": config.label_scheme, "classes": classes,
                  "image_size": image_size, "seed": config.seed}
        weights_by_class = (
            pipeline.class_weights(train_rows["label"], config.label_scheme, classes)
            if config.balance == "class_weight" else None
        )
        # Each worker's pipeline yields batches of one replica; a step takes one per replica.
        per_step = config.batch_size * where.local_replicas
        steps = pipeline.steps_per_epoch(manifest, "train", per_step, shards=where.workers)

        def train_data(start: int):
            return distribute.training_data(where, lambda shard: pipeline.make_dataset(
                manifest, "train", balance=config.balance, training=True,
                augmentation=(pipeline.Augmentation() if config.augment
                              else pipeline.Augmentation.none()),
                batch_size=config.batch_size, class_weight=weights_by_class, shard=shard,
                start=start, **common,
            ))

        val_data = distribute.evaluation_data(pipeline.make_dataset(
            manifest, "val", training=False, batch_size=config.batch_size * where.replicas,
            **common,
        ))
        val_labels = pipeline.encode_labels(val_rows["label"], config.label_scheme, classes)

        stages = config.stages()
        checkpoint = keras.callbacks.ModelCheckpoint(
            str(work_dir / _CHECKPOINT_FILE), monitor="val_loss", save_best_only=True,
            save_weights_only=True,
        )
        with strategy.scope():
            model = _build(config, manifest, len(classes))
            lineage = (transfer.initialise_from(model, config.init_from,
                                                architecture=config.architecture, classes=classes)
                       if config.init_from else {})
            if where.distributed:
                distribute.synchronize_batch_norm(model)
                distribute.fit_without_symbolic_build(model, strategy)
            if resume is not None:
                _restore(model, stages[resume.stage], config, len(classes), backup, resume,
                         checkpoint)
        epochs_done = resume.epochs if resume is not None else 0
        first_stage = 0 if resume is None else resume.stage + int(resume.ended)
        # Where each stage began; a stage finished before a resume began at 0 (there are at
        # most two stages, and only the first can have finished then).
        starts = [0] * len(stages)
        for index in range(first_stage, len(stages)):
            resuming = resume if resume is not None and index == resume.stage else None
            if resuming is None:
                with strategy.scope():
                    _prepare(model, stages[index], config, len(classes))
                stage_start = epochs_done
            else:
                stage_start = resuming.stage_start
            # A stage that early stopping ended runs no more epochs when resumed.
            starts[index] = stage_start
            end = (epochs_done if resuming and resuming.stopped
                   else stage_start + stages[index]["epochs"])
            stage_callbacks = _callbacks(work_dir, config, checkpoint, run, callbacks)
            watched = {"early_stopping": stage_callbacks[0], "reduce_lr": stage_callbacks[1],
                       "checkpoint": checkpoint}
            backup_callback = BackupCallback(backup, index, stage_start, watched, restore=resuming)
            # The stream restarts with each stage; a resumed one skips what was drawn.
            drawn = (epochs_done - stage_start) * steps * per_step
            with strategy.scope():
                model.fit(train_data(drawn), validation_data=val_data, steps_per_epoch=steps,
                          epochs=end, initial_epoch=epochs_done, shuffle=False, verbose=verbose,
                          callbacks=[*stage_callbacks, backup_callback])
            epochs_done = backup_callback.position.epochs
        for index, stage in enumerate(stages):
            stage["epochs_run"] = (starts[index + 1] if index + 1 < len(stages)
                                   else epochs_done) - starts[index]
        with warnings.catch_warnings():
            # The checkpoint may hold the other stage's optimizer state; only layers matter here.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(str(work_dir / _CHECKPOINT_FILE))
        (work_dir / _CHECKPOINT_FILE).unlink()

        history = pd.read_csv(work_dir / HISTORY_FILE)
        best_epoch = int(history.loc[history["val_loss"].idxmin(), "epoch"]) + 1
        # Every worker evaluates (its replicas take part in each step); only the chief writes.
        with strategy.scope():
            validation_metrics = _validation_metrics(model, val_data, val_labels, classes)
        if where.chief:
            _save_portable(model, out_dir / MODEL_FILE)
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
                "manifest_sha256": manifest_sha256,
                "split_sha256": split_sha256(manifest.frame),
                "counts": {
                    split: {str(k): int(v) for k, v in rows["label"].value_counts().items()}
                    for split, rows in manifest.frame.groupby("split")
                },
            },
            training={
                **config.to_dict(),
                "stages": stages,
                "epochs_run": len(history),
                "class_weight": ({classes[i]: w for i, w in weights_by_class.items()}
                                 if weights_by_class else None),
                "strategy": type(strategy).__name__,
                "replicas": where.replicas,
                "workers": where.workers,
                "global_batch_size": config.batch_size * where.replicas,
                "resumed_after_epoch": resume.epochs if resume is not None else None,
                "repeatable": repeatable,
                "training_time_s": round(time.perf_counter() - started, 2),
            },
            lineage=lineage,
            best_epoch=best_epoch,
            validation_metrics=validation_metrics,
            training_range=training_range(manifest.frame, data_dir),
            parameter_count=models.parameter_count(model),
            seed=config.seed,
        )
        if where.chief:
            card.save(out_dir)
            backup.remove()
            tracking.finish_training_run(run, model, card,
                                         [out_dir / CARD_FILE, out_dir / HISTORY_FILE])
            logger.info("wrote %s, %s and %s to %s", MODEL_FILE, CARD_FILE, HISTORY_FILE, out_dir)
        else:
            where.clean_up(out_dir)
        return TrainResult(model_dir=out_dir, model=model, card=card, history=history,
                           chief=where.chief)


def _restore(model: keras.Model, stage: dict, config: TrainingConfig, num_classes: int,
             backup: Backup, position: Position, checkpoint) -> None:
    """Put ``model`` (under the run's strategy) where the backup left it: ``stage``'s
    frozen layers and optimizer, every variable, and the checkpoint's best so far."""
    _prepare(model, stage, config, num_classes)
    model.optimizer.build(model.trainable_variables)
    backup.restore_variables(model)
    backup.restore_callbacks(position, {"checkpoint": checkpoint})
