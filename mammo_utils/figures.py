"""Evaluation figures, drawn the way scikit-learn's display objects draw them.

Each function draws from plain arrays or tables and returns the figure. A
single-panel plot takes an optional ``ax`` and draws into it; a multi-panel plot takes
an optional ``fig`` and lays its panels out inside it; without either, a new pyplot
figure is made. Nothing here chooses the matplotlib backend or writes a file: a
notebook shows the figure its backend displays, and
:func:`mammo_utils.evaluate.write_figures` saves and closes each one.

The numbers in legends come from :mod:`mammo_utils.metrics`, so a curve's AUC or
average precision is the one ``metrics.json`` reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_curve

from mammo_utils.metrics import MALIGNANT, average_precision, calibration_bins, roc_auc


def _short(name: str) -> str:
    """Class names short enough for an axis tick."""
    return "BENIGN_WO_CB" if name == "BENIGN_WITHOUT_CALLBACK" else name


def _figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    """``fig``, or a new pyplot figure of ``figsize`` when none is given."""
    return plt.figure(figsize=figsize, layout="constrained") if fig is None else fig


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax``, or the axes of a new pyplot figure of ``figsize`` when none is given."""
    return _figure(None, figsize).subplots() if ax is None else ax


def plot_confusion_matrix(
    counts: np.ndarray, classes: Sequence[str], *, title: str = "", fig: Figure | None = None
) -> Figure:
    """Counts (left) and row-normalized rates (right) side by side."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    labels = [_short(c) for c in classes]
    fig = _figure(fig, (11, 4.8))
    axes = fig.subplots(1, 2)
    for ax, values, fmt, name in (
        (axes[0], counts, "d", "counts"),
        (axes[1], rates, ".2f", "row-normalized (recall)"),
    ):
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(), 1e-9))
        for (i, j), value in np.ndenumerate(values):
            colour = "white" if value > 0.6 * values.max() else "black"
            ax.text(j, i, format(value, fmt), ha="center", va="center", color=colour)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(title or "Confusion matrix")
    return fig


def plot_roc_curves(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """One-vs-rest ROC curve per class (ROC-AUC in the legend), malignant-vs-rest in bold."""
    ax = _axes(ax, (6, 6))
    y_true = np.asarray(y_true)
    for k, name in enumerate(classes):
        positive = y_true == k
        area = roc_auc(positive, proba[:, k])
        if area is None:
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        bold = name == MALIGNANT
        label = f"{'malignant vs rest' if bold else _short(name)} (AUC {area:.3f})"
        ax.plot(fpr, tpr, lw=3 if bold else 1.5, label=label, color="black" if bold else None)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title or "ROC curves (one vs rest)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect("equal")
    return ax.figure


def plot_precision_recall(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: Sequence[str],
    *,
    title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Precision-recall curve per class, drawn as the step function whose area is the
    average precision (AP, in the legend with the class prevalence, the AP of chance)."""
    ax = _axes(ax, (6, 6))
    y_true = np.asarray(y_true)
    for k, name in enumerate(classes):
        positive = y_true == k
        ap = average_precision(positive, proba[:, k])
        if ap is None:
            continue
        precision, recall, _ = precision_recall_curve(positive, proba[:, k])
        ax.plot(
            recall,
            precision,
            drawstyle="steps-post",
            lw=3 if name == MALIGNANT else 1.5,
            label=f"{_short(name)} (AP {ap:.3f}, prevalence {positive.mean():.2f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    ax.set_title(title or "Precision-recall curves")
    ax.legend(loc="lower left", fontsize=8)
    return ax.figure


def plot_reliability(
    y_true: np.ndarray, proba: np.ndarray, *, title: str = "", fig: Figure | None = None
) -> Figure:
    """Reliability diagram (top-label accuracy per confidence bin) over a count histogram."""
    bins = calibration_bins(np.asarray(y_true), np.asarray(proba))
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    fig = _figure(fig, (6, 7))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in bins if b["count"]]
    ax.bar(
        [(b["lower"] + b["upper"]) / 2 for b in filled],
        [b["accuracy"] for b in filled],
        width=width,
        edgecolor="black",
        label="accuracy",
    )
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect calibration")
    ax.set(ylim=(0, 1), ylabel="accuracy")
    ax.set_title(title or "Reliability diagram (top label)")
    ax.legend(loc="upper left")
    hist.bar(centres, [b["count"] for b in bins], width=width, color="grey", edgecolor="black")
    hist.set(xlim=(0, 1), xlabel="confidence", ylabel="images")
    return fig


def plot_training_curves(
    history: pd.DataFrame | str | Path, *, title: str = "", fig: Figure | None = None
) -> Figure:
    """Loss and every other metric of ``history.csv``, training against validation."""
    history = pd.read_csv(history) if not isinstance(history, pd.DataFrame) else history
    epochs = history["epoch"] if "epoch" in history else pd.Series(range(len(history)))
    names = [c for c in history.columns if c != "epoch" and not c.startswith("val_")]
    names = [c for c in names if c != "learning_rate" and c != "lr"]
    panels = max(len(names), 1)
    fig = _figure(fig, (4.5 * panels, 3.8))
    for ax, name in zip(np.atleast_1d(fig.subplots(1, panels)), names, strict=False):
        ax.plot(epochs + 1, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs + 1, history[f"val_{name}"], marker="o", label="validation")
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    fig.suptitle(title or "Training curves")
    return fig


def plot_learning_curves(
    curves: pd.DataFrame, *, target: float | None = None, title: str = "",
    ax: Axes | None = None,
) -> Figure:
    """Validation AUC against minutes of training, one line per ``model``.

    ``curves`` has columns ``model``, ``minutes`` and ``val_macro_auc``, and optionally
    ``image_malignant_auc`` (drawn dashed in the model's colour). ``target`` draws a
    horizontal line at that AUC.
    """
    ax = _axes(ax, (6.0, 4.0))
    for model, rows in curves.groupby("model", sort=False):
        (line,) = ax.plot(rows["minutes"], rows["val_macro_auc"], marker="o",
                          label=f"{model}: patch macro AUC")
        if "image_malignant_auc" in rows and rows["image_malignant_auc"].notna().any():
            ax.plot(rows["minutes"], rows["image_malignant_auc"], linestyle="--", marker="x",
                    color=line.get_color(), label=f"{model}: image malignant AUC")
    if target is not None:
        ax.axhline(target, color="grey", linewidth=1, linestyle=":", label=f"target {target:g}")
    ax.set(xlabel="minutes of training", ylabel="validation ROC-AUC", ylim=(0.0, 1.0),
           title=title or "Learning curves")
    ax.legend(loc="lower right", fontsize="small")
    return ax.figure


def _thumbnail(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        return np.zeros((8, 8))
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return image.astype(np.float32) / np.iinfo(image.dtype).max


def plot_confident_mistakes(
    predictions: pd.DataFrame,
    classes: Sequence[str],
    *,
    n: int = 12,
    title: str = "",
    fig: Figure | None = None,
) -> Figure:
    """Grid of the wrong predictions made with the highest confidence.

    ``predictions`` needs ``true_label``, ``p_<CLASS>`` columns and the image ``path``
    (as ``predictions.csv`` holds them).
    """
    columns = [f"p_{c}" for c in classes]
    table = predictions.assign(
        predicted=np.asarray(classes)[predictions[columns].to_numpy().argmax(axis=1)],
        confidence=predictions[columns].to_numpy().max(axis=1),
    )
    wrong = table[table["predicted"] != table["true_label"]].nlargest(n, "confidence")
    cols = 4
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig = _figure(fig, (3 * cols, 3.7 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, wrong.itertuples(), strict=False):
        ax.imshow(_thumbnail(Path(row.path)), cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"true {_short(row.true_label)}\npred {_short(row.predicted)} ({row.confidence:.2f})",
            fontsize=8,
        )
    if wrong.empty:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    fig.suptitle(title or "Most confident mistakes")
    return fig
