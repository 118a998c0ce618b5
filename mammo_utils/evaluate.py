"""Evaluate one trained model on one split: predictions, metrics and figures.

The model directory's card decides the class order, the input size and the label
scheme; the processed folder's manifest decides which images form the split. The
split is predicted through :mod:`mammo_utils.pipeline` in manifest order (no
augmentation, no shuffling), so row ``i`` of ``predictions.csv`` is row ``i`` of the
split. Outputs follow the run layout of ``reports/<run>/``::

    <out_dir>/metrics/<model>/predictions.csv, metrics.json
    <out_dir>/figures/<model>/confusion_matrix.png, roc.png, precision_recall.png,
                              reliability.png, training_curves.png, mistakes.png
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from mammo_utils import figures
from mammo_utils.metrics import compute_metrics, write_metrics

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
#: Run facts that differ between two runs of one commit (seconds, throughput), kept out
#: of ``metrics.json`` so that file is a function of the model and the data alone.
TIMING_FILE = "timing.json"
#: Resolution of every saved figure.
FIGURE_DPI = 150


@dataclass
class EvaluationResult:
    """What :func:`evaluate_model` wrote and measured for one model."""

    model_name: str
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    metrics_dir: Path
    timing: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        return self.metrics_dir / METRICS_FILE

    @property
    def predictions_path(self) -> Path:
        return self.metrics_dir / PREDICTIONS_FILE


def predict_split(model, dataset, n_images: int, progress: bool = True):
    """Probabilities for every batch of ``dataset`` and the model-only images per second.

    The first batch is run once untimed, so graph tracing is not counted as throughput.
    """
    batches, seconds, warmed = [], 0.0, False
    for images, _ in tqdm(dataset, desc="predict", disable=not progress):
        if not warmed:
            model.predict_on_batch(images)
            warmed = True
        started = time.perf_counter()
        batches.append(np.asarray(model.predict_on_batch(images), dtype=np.float64))
        seconds += time.perf_counter() - started
    proba = np.concatenate(batches) if batches else np.zeros((0, model.output_shape[-1]))
    if len(proba) != n_images:
        raise RuntimeError(f"predicted {len(proba)} images but the split holds {n_images}")
    return proba, (n_images / seconds if seconds > 0 else None)


def _predictions_table(rows: pd.DataFrame, y_true: np.ndarray, proba, classes) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "image_id": rows["image_id"],
            "patient_id": rows["patient_id"],
            "dataset": rows["dataset"] if "dataset" in rows else "unknown",
            "true_label": np.asarray(classes)[y_true],
        }
    )
    for k, name in enumerate(classes):
        table[f"p_{name}"] = proba[:, k]
    table["predicted_label"] = np.asarray(classes)[proba.argmax(axis=1)]
    table["item_id"] = rows["item_id"] if "item_id" in rows else rows["image_id"]
    table["path"] = rows["path"]
    return table


def _save(fig: Figure, figures_dir: Path, name: str) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` at :data:`FIGURE_DPI` and close it
    (a loop over many models must not pile up open figures)."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"{name}.png"
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def write_figures(
    result_table: pd.DataFrame,
    metrics: dict,
    classes: list[str],
    figures_dir: Path,
    history_path: Path | None,
    title: str,
) -> dict[str, Path]:
    """Draw and save every per-model figure, from the predictions table and metrics."""
    y_true = np.array([classes.index(label) for label in result_table["true_label"]], dtype=int)
    proba = result_table[[f"p_{c}" for c in classes]].to_numpy()
    counts = np.asarray(metrics["confusion_matrix"])
    paths = {
        "confusion_matrix": _save(
            figures.plot_confusion_matrix(counts, classes, title=f"{title}: confusion matrix"),
            figures_dir, "confusion_matrix",
        ),
        "roc": _save(
            figures.plot_roc_curves(y_true, proba, classes, title=f"{title}: ROC (one vs rest)"),
            figures_dir, "roc",
        ),
        "precision_recall": _save(
            figures.plot_precision_recall(y_true, proba, classes, title=f"{title}: PR"),
            figures_dir, "precision_recall",
        ),
        "reliability": _save(
            figures.plot_reliability(y_true, proba, title=f"{title}: calibration"),
            figures_dir, "reliability",
        ),
        "mistakes": _save(
            figures.plot_confident_mistakes(result_table, classes, title=f"{title}: mistakes"),
            figures_dir, "mistakes",
        ),
    }
    if history_path is not None and history_path.is_file():
        paths["training_curves"] = _save(
            figures.plot_training_curves(history_path, title=f"{title}: training"),
            figures_dir, "training_curves",
        )
    return paths


def evaluate_model(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    out_dir: str | Path = "reports/default",
    *,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
    seed: int = 0,
    make_figures: bool = True,
    progress: bool = True,
) -> EvaluationResult:
    """Predict ``split`` of the processed folder ``data_dir`` with the model in
    ``model_dir``; write predictions, metrics and figures under ``out_dir``.

    Labels are mapped to the card's label scheme and class order, so a ``three_class``
    model is scored against three classes, and a model trained with a permuted class
    order is scored against its own output units.
    """
    from mammo_utils import pipeline
    from mammo_utils.model_card import HISTORY_FILE, load_model_dir

    model_dir = Path(model_dir)
    model, card = load_model_dir(model_dir)
    manifest = pipeline.load_manifest(data_dir)
    rows = manifest.split(split)
    classes = list(card.classes)
    y_true = pipeline.encode_labels(rows["label"], card.label_scheme, classes)
    dataset = pipeline.make_dataset(
        manifest,
        split,
        label_scheme=card.label_scheme,
        classes=classes,
        batch_size=batch_size,
        image_size=card.image_size,
        training=False,
        cache=False,
    )
    logger.info("evaluating %s on %d %s images", card.model_name, len(rows), split)
    proba, images_per_second = predict_split(model, dataset, len(rows), progress=progress)
    table = _predictions_table(rows, y_true, proba, classes)

    metrics = compute_metrics(
        y_true, proba, classes, rows["patient_id"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed
    )
    metrics["split"] = split
    metrics["model"] = {
        "model_name": card.model_name,
        "architecture": card.architecture,
        "task": card.task,
        "label_scheme": card.label_scheme,
        "image_size": card.image_size,
        "parameter_count": card.parameter_count,
        "weights": card.training.get("weights"),
        "model_dir": str(model_dir.resolve()),
    }
    metrics["data"] = {"manifest": str(manifest.source), "split": split}
    timing = {"training_time_s": card.training.get("training_time_s"),
              "inference_images_per_second": images_per_second, "batch_size": batch_size}

    out_dir = Path(out_dir)
    metrics_dir = out_dir / "metrics" / card.model_name
    metrics_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(metrics_dir / PREDICTIONS_FILE, index=False)
    write_metrics(metrics, metrics_dir / METRICS_FILE)
    write_metrics(timing, metrics_dir / TIMING_FILE)
    paths = {}
    if make_figures:
        paths = write_figures(
            table,
            metrics,
            classes,
            out_dir / "figures" / card.model_name,
            model_dir / HISTORY_FILE,
            card.model_name,
        )
    return EvaluationResult(
        model_name=card.model_name,
        metrics=metrics,
        predictions=table,
        metrics_dir=metrics_dir,
        timing=timing,
        figures=paths,
    )
