"""Learning curves: validation ROC-AUC against minutes of training on the CPU, from scratch.

The baseline CNN and MobileNetV2 (``weights="none"``: no download) train with the default
recipe (:class:`~mammo_utils.training_config.TrainingConfig` and the preprocessing
defaults: 224-pixel patches cut at 1152x896) on a synthetic set, each for a budget of
training minutes. After every epoch the validation patch macro ROC-AUC and the
image-level malignant ROC-AUC (each validation image's patches aggregated by the
``max`` rule of :mod:`mammo_utils.levels`) are recorded against the minutes spent in
``fit`` so far; the time spent measuring them is not counted. A run ends when its budget
is spent or early stopping ends it. The target the README states: a validation macro
ROC-AUC of at least 0.85 within 15 minutes on 2 cores.

``python -m benchmarks --only learning --budget-minutes 2`` is a quick run; the default
budget is :data:`BUDGET_MINUTES` per model. Writes ``learning_curves.csv`` and
``learning_curves.png`` beside ``bench.json``'s work folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

PATIENTS = 40
SYNTH_SEED = 11
SYNTH_SIZE = "small"
ARCHITECTURES = ("baseline", "mobilenetv2")
BUDGET_MINUTES = 15.0
TARGET_AUC = 0.85
#: More epochs than any budget here allows: the budget (or early stopping) ends a run.
MAX_EPOCHS = 1000


def _processed(work: Path) -> Path:
    """The synthetic set through ingest and preprocessing, at the default working scale."""
    from mammo_utils.preprocess import PreprocessConfig
    from mammo_utils.workflow import DataSettings, ensure_processed

    defaults = PreprocessConfig()
    settings = DataSettings(project_dir=work, run_name="bench", synth_patients=PATIENTS,
                            synth_seed=SYNTH_SEED, synth_size=SYNTH_SIZE)
    result = ensure_processed(settings, "roi", defaults.size, defaults.working_size, workers=2)
    return Path(result.out_dir)


def _image_malignant_auc(rows: pd.DataFrame, probabilities: np.ndarray,
                         classes: tuple[str, ...]) -> float | None:
    """ROC-AUC of MALIGNANT per image, each image's patches aggregated by the max rule."""
    from mammo_utils.classes import most_severe
    from mammo_utils.levels import aggregate_patches
    from mammo_utils.metrics import roc_auc

    malignant = classes.index("MALIGNANT")
    truth, scores = [], []
    for _, positions in rows.reset_index(drop=True).groupby("image_id").groups.items():
        positions = np.asarray(positions)
        image = aggregate_patches(probabilities[positions], [malignant], rule="max")
        truth.append(most_severe(rows["label"].iloc[positions]) == "MALIGNANT")
        scores.append(image[malignant])
    return roc_auc(np.asarray(truth), np.asarray(scores))


def _recorder(data_dir: Path, config, budget_s: float, points: list):
    """A Keras callback appending one learning-curve point per epoch and stopping the
    run once ``budget_s`` seconds of training (its own measuring excluded) are spent."""
    import keras

    from mammo_utils import pipeline
    from mammo_utils.metrics import macro_roc_auc

    classes = pipeline.output_classes(config.label_scheme, config.class_order)
    rows = pipeline.load_manifest(data_dir).split("val")
    labels = pipeline.encode_labels(rows["label"], config.label_scheme, classes)
    val = pipeline.make_dataset(data_dir, "val", label_scheme=config.label_scheme,
                                classes=classes, batch_size=config.batch_size, training=False)

    class LearningCurve(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.trained_s = 0.0
            self.since = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.trained_s += time.perf_counter() - self.since
            probabilities = self.model.predict(val, verbose=0)
            points.append({
                "model": config.architecture, "epoch": epoch + 1,
                "minutes": round(self.trained_s / 60, 3),
                "val_macro_auc": macro_roc_auc(labels, probabilities),
                "image_malignant_auc": _image_malignant_auc(rows, probabilities, classes),
            })
            if self.trained_s >= budget_s:
                self.model.stop_training = True
            self.since = time.perf_counter()

    return LearningCurve()


def _curve(architecture: str, data_dir: Path, out_dir: Path, budget_s: float) -> list[dict]:
    from mammo_utils.train import train
    from mammo_utils.training_config import TrainingConfig

    config = TrainingConfig(architecture=architecture, epochs=MAX_EPOCHS)
    points: list[dict] = []
    train(data_dir, out_dir / architecture, config, verbose=0,
          callbacks=[_recorder(data_dir, config, budget_s, points)])
    return points


def _summary(points: pd.DataFrame) -> dict:
    reached = points[points["val_macro_auc"] >= TARGET_AUC]
    return {
        "epochs": int(len(points)),
        "minutes": float(points["minutes"].max()),
        "best_val_macro_auc": float(points["val_macro_auc"].max()),
        "final_val_macro_auc": float(points["val_macro_auc"].iloc[-1]),
        "minutes_to_target": float(reached["minutes"].iloc[0]) if len(reached) else None,
    }


def run(context: dict) -> dict:
    """Learning curves of each architecture within ``context["budget_minutes"]``
    (default :data:`BUDGET_MINUTES`) of training each; JSON, CSV and figure."""
    import matplotlib

    matplotlib.use("Agg")
    from mammo_utils.figures import plot_learning_curves

    work = Path(context["work"])
    budget = float(context.get("budget_minutes") or BUDGET_MINUTES)
    data_dir = _processed(work)
    curves = pd.DataFrame(
        [point for name in ARCHITECTURES
         for point in _curve(name, data_dir, work / "models", budget * 60)]
    )
    curves.to_csv(work / "learning_curves.csv", index=False)
    fig = plot_learning_curves(curves, target=TARGET_AUC,
                               title=f"From scratch, {PATIENTS} synthetic patients")
    fig.savefig(work / "learning_curves.png", dpi=120)
    return {
        "patients": PATIENTS, "synth_seed": SYNTH_SEED, "synth_size": SYNTH_SIZE,
        "budget_minutes": budget, "target_val_macro_auc": TARGET_AUC,
        "curves": {name: {**_summary(rows), "points": rows.drop(columns="model").to_dict(
            "records")} for name, rows in curves.groupby("model", sort=False)},
        "figure": str(work / "learning_curves.png"),
    }
