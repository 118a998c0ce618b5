"""Figures draw like scikit-learn's displays: into a given ax, returning the figure,
leaving the backend and the file system to the caller."""

from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import auc, average_precision_score, precision_recall_curve

from mammo_utils import figures

CLASSES = ["NORMAL", "BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT"]


@pytest.fixture
def case():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, size=80)
    logits = rng.normal(size=(80, 4))
    logits[np.arange(80), y] += 0.8
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_import_leaves_the_backend_alone():
    code = (
        "import matplotlib; matplotlib.use('svg'); "
        "import mammo_utils.figures, mammo_utils.evaluate; print(matplotlib.get_backend())"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True)
    assert out.stdout.strip() == "svg"


@pytest.mark.parametrize("plot", [figures.plot_roc_curves, figures.plot_precision_recall])
def test_single_panel_plot_draws_into_the_given_ax(plot, case):
    y, proba = case
    fig = Figure()
    left, right = fig.subplots(1, 2)
    assert plot(y, proba, CLASSES, ax=right) is fig
    assert len(right.lines) >= 4 and not left.lines
    assert len(fig.axes) == 2


def test_multi_panel_plot_lays_out_inside_the_given_figure(case):
    y, proba = case
    fig = Figure()
    assert figures.plot_reliability(y, proba, fig=fig) is fig
    assert len(fig.axes) == 2


def test_plot_functions_write_no_file(case, tmp_path, monkeypatch):
    y, proba = case
    monkeypatch.chdir(tmp_path)
    table = pd.DataFrame({"true_label": np.asarray(CLASSES)[y], "path": "missing.png"})
    for k, name in enumerate(CLASSES):
        table[f"p_{name}"] = proba[:, k]
    history = pd.DataFrame({"epoch": [0, 1], "loss": [1.0, 0.8], "val_loss": [1.1, 0.9]})
    drawn = [
        figures.plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["NORMAL", "MALIGNANT"]),
        figures.plot_roc_curves(y, proba, CLASSES),
        figures.plot_precision_recall(y, proba, CLASSES),
        figures.plot_reliability(y, proba),
        figures.plot_training_curves(history),
        figures.plot_confident_mistakes(table, CLASSES),
        figures.plot_learning_curves(pd.DataFrame(
            {"model": ["baseline"] * 2, "minutes": [1.0, 2.0], "val_macro_auc": [0.6, 0.8]})),
    ]
    assert all(isinstance(fig, Figure) and fig.axes for fig in drawn)
    assert list(tmp_path.iterdir()) == []


def test_precision_recall_legend_gives_average_precision_not_trapezoid_area(case):
    """The legend's AP is scikit-learn's average precision (the step-wise area), which
    differs here from the trapezoidal area under the same curve."""
    y, proba = case
    fig = Figure()
    ax = fig.subplots()
    figures.plot_precision_recall(y, proba, CLASSES, ax=ax)
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    differs = 0
    for k, label in enumerate(legend):
        ap = average_precision_score(y == k, proba[:, k])
        precision, recall, _ = precision_recall_curve(y == k, proba[:, k])
        assert f"AP {ap:.3f}," in label
        differs += f"{ap:.3f}" != f"{auc(recall, precision):.3f}"
    assert differs >= 2


def test_learning_curves_draw_each_model_into_the_given_ax():
    """One solid line per model (and a dashed one where the image level was measured),
    with the target, into the caller's ax."""
    curves = pd.DataFrame({
        "model": ["baseline", "baseline", "mobilenetv2", "mobilenetv2"],
        "minutes": [1.0, 2.0, 1.5, 3.0],
        "val_macro_auc": [0.6, 0.8, 0.5, 0.7],
        "image_malignant_auc": [0.7, 0.9, None, None],
    })
    fig = Figure()
    ax = fig.subplots()
    assert figures.plot_learning_curves(curves, target=0.85, ax=ax) is fig
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["baseline: patch macro AUC", "baseline: image malignant AUC",
                      "mobilenetv2: patch macro AUC", "target 0.85"]
    assert list(ax.get_lines()[0].get_xdata()) == [1.0, 2.0]
