"""Publication-quality evaluation figures, saved as PNG.

Each function draws one figure from plain arrays or tables, saves it at
:data:`DPI` and closes it (so a loop over twenty models does not pile up open
figures), and returns the path. The Agg backend is selected here, so figures are
drawn the same way headless (papermill, CI) as in a notebook, where the saved PNG
is then displayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import cv2  # noqa: E402 - after the backend is chosen
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import auc, precision_recall_curve, roc_curve  # noqa: E402

from mammo_utils.metrics import MALIGNANT, calibration_bins  # noqa: E402

#: Resolution of every saved figure.
DPI = 150


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _short(name: str) -> str:
    """Class names short enough for an axis tick."""
    return "BENIGN_WO_CB" if name == "BENIGN_WITHOUT_CALLBACK" else name


def plot_confusion_matrix(
    counts: np.ndarray, classes: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Counts (left) and row-normalized rates (right) side by side."""
    counts = np.asarray(counts)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape, float), where=totals > 0)
    labels = [_short(c) for c in classes]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
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
    return _save(fig, path)


def plot_roc_curves(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: str | Path, title=""
) -> Path:
    """One-vs-rest ROC curve per class (AUC in the legend), malignant-vs-rest in bold."""
    fig, ax = plt.subplots(figsize=(6, 6))
    for k, name in enumerate(classes):
        positive = np.asarray(y_true) == k
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, proba[:, k])
        bold = name == MALIGNANT
        label = f"{'malignant vs rest' if bold else _short(name)} (AUC {auc(fpr, tpr):.3f})"
        ax.plot(fpr, tpr, lw=3 if bold else 1.5, label=label, color="black" if bold else None)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(title or "ROC curves (one vs rest)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_aspect("equal")
    return _save(fig, path)


def plot_precision_recall(
    y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str], path: str | Path, title=""
) -> Path:
    """Precision-recall curve per class; the legend gives the area and the class prevalence."""
    fig, ax = plt.subplots(figsize=(6, 6))
    for k, name in enumerate(classes):
        positive = np.asarray(y_true) == k
        if not positive.any():
            continue
        precision, recall, _ = precision_recall_curve(positive, proba[:, k])
        ax.plot(
            recall,
            precision,
            lw=3 if name == MALIGNANT else 1.5,
            label=f"{_short(name)} (AP {auc(recall, precision):.3f}, prev. {positive.mean():.2f})",
        )
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    ax.set_title(title or "Precision-recall curves")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_reliability(y_true: np.ndarray, proba: np.ndarray, path: str | Path, title="") -> Path:
    """Reliability diagram (top-label accuracy per confidence bin) over a count histogram."""
    bins = calibration_bins(np.asarray(y_true), np.asarray(proba))
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"]
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(6, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
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
    return _save(fig, path)


def plot_training_curves(history: pd.DataFrame | str | Path, path: str | Path, title="") -> Path:
    """Loss and every other metric of ``history.csv``, training against validation."""
    history = pd.read_csv(history) if not isinstance(history, pd.DataFrame) else history
    epochs = history["epoch"] if "epoch" in history else pd.Series(range(len(history)))
    names = [c for c in history.columns if c != "epoch" and not c.startswith("val_")]
    names = [c for c in names if c != "learning_rate" and c != "lr"]
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(4.5 * max(len(names), 1), 3.8))
    for ax, name in zip(np.atleast_1d(axes), names, strict=False):
        ax.plot(epochs + 1, history[name], marker="o", label="train")
        if f"val_{name}" in history:
            ax.plot(epochs + 1, history[f"val_{name}"], marker="o", label="validation")
        ax.set(xlabel="epoch", title=name)
        ax.legend()
    fig.suptitle(title or "Training curves")
    return _save(fig, path)


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
    path: str | Path,
    n: int = 12,
    title: str = "",
    image_root: str | Path | None = None,
) -> Path:
    """Grid of the wrong predictions made with the highest confidence.

    ``predictions`` needs ``true_label``, ``p_<CLASS>`` columns and ``path`` (absolute,
    or relative to ``image_root``, the manifest's folder).
    """
    columns = [f"p_{c}" for c in classes]
    table = predictions.assign(
        predicted=np.asarray(classes)[predictions[columns].to_numpy().argmax(axis=1)],
        confidence=predictions[columns].to_numpy().max(axis=1),
    )
    wrong = table[table["predicted"] != table["true_label"]].nlargest(n, "confidence")
    cols = 4
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, wrong.itertuples(), strict=False):
        ax.imshow(_thumbnail(Path(image_root or "") / row.path), cmap="gray", vmin=0, vmax=1)
        ax.set_title(
            f"true {_short(row.true_label)}\npred {_short(row.predicted)} ({row.confidence:.2f})",
            fontsize=8,
        )
    if wrong.empty:
        axes.flat[0].text(0.5, 0.5, "no mistakes", ha="center", va="center", fontsize=14)
    fig.suptitle(title or "Most confident mistakes")
    return _save(fig, path)
