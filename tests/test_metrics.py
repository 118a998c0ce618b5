"""Metrics against scikit-learn and hand-made known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mammo_utils.metrics import (
    binary_auc,
    compute_metrics,
    expected_calibration_error,
    sensitivity_at_specificity,
    write_metrics,
)

CLASSES = ["NORMAL", "BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT"]


def _random_case(n: int = 200, k: int = 4, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    patients = rng.integers(0, n // 2, size=n)
    return y, proba, patients


def _one_hot(y: np.ndarray, k: int) -> np.ndarray:
    return np.eye(k)[y]


def test_matches_scikit_learn():
    y, proba, patients = _random_case()
    m = compute_metrics(y, proba, CLASSES, patients, n_bootstrap=50)
    pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=range(4)).tolist()
    assert m["macro"]["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["weighted"]["f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["macro"]["precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["weighted"]["recall"] == pytest.approx(recall_score(y, pred, average="weighted"))
    assert m["macro"]["roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    per_class_f1 = f1_score(y, pred, average=None)
    for k, name in enumerate(CLASSES):
        assert m["per_class"][name]["f1"] == pytest.approx(per_class_f1[k])
        assert m["per_class"][name]["roc_auc"] == pytest.approx(
            roc_auc_score(y == k, proba[:, k])
        )
        assert m["per_class"][name]["support"] == int((y == k).sum())
    assert m["malignant_vs_rest_auc"] == pytest.approx(roc_auc_score(y == 3, proba[:, 3]))
    assert m["n_images"] == 200
    assert m["n_patients"] == np.unique(patients).size


def test_known_confusion_matrix_and_auc():
    # 2 NORMAL (one called MALIGNANT), 2 MALIGNANT (both right).
    classes = ["NORMAL", "MALIGNANT"]
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])
    m = compute_metrics(y, proba, classes, n_bootstrap=20)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["confusion_matrix_normalized"] == [[0.5, 0.5], [0.0, 1.0]]
    assert m["accuracy"] == 0.75
    assert m["per_class"]["MALIGNANT"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["NORMAL"]["recall"] == 0.5
    # Malignant scores 0.7, 0.8 beat both normal scores 0.1, 0.6: AUC 1.
    assert m["malignant_vs_rest_auc"] == 1.0
    assert binary_auc(np.array([1, 0, 1, 0]), np.array([0.2, 0.5, 0.8, 0.5])) == 0.5


def test_perfect_classifier():
    y = np.repeat(np.arange(4), 10)
    m = compute_metrics(y, _one_hot(y, 4), CLASSES, np.arange(40) // 2, n_bootstrap=100)
    assert m["accuracy"] == 1.0
    assert m["macro"]["roc_auc"] == 1.0
    assert m["malignant_vs_rest_auc"] == 1.0
    assert m["sensitivity_at_90_specificity"]["sensitivity"] == 1.0
    assert m["ece"] == pytest.approx(0.0)
    assert m["bootstrap"]["intervals"]["accuracy"] == {"lower": 1.0, "upper": 1.0, "n_valid": 100}


def test_chance_classifier_auc_near_half():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=4000)
    proba = rng.dirichlet(np.ones(4), size=4000)
    m = compute_metrics(y, proba, CLASSES, n_bootstrap=10)
    assert m["macro"]["roc_auc"] == pytest.approx(0.5, abs=0.03)
    assert m["malignant_vs_rest_auc"] == pytest.approx(0.5, abs=0.03)


def test_ece_of_calibrated_predictions_is_near_zero():
    rng = np.random.default_rng(4)
    n = 20000
    confidence = rng.uniform(0.5, 1.0, size=n)
    correct = rng.uniform(size=n) < confidence
    y = np.where(correct, 0, 1)  # predicted class is always 0
    proba = np.column_stack([confidence, 1 - confidence])
    assert expected_calibration_error(y, proba) < 0.02
    overconfident = np.column_stack([np.full(n, 0.99), np.full(n, 0.01)])
    assert expected_calibration_error(y, overconfident) > 0.15


def test_sensitivity_at_specificity_known_answer():
    positive = np.array([0] * 10 + [1] * 4, dtype=bool)
    # One negative outscores every positive; the rest are below two positives.
    scores = np.array([0.1] * 9 + [0.95] + [0.9, 0.8, 0.05, 0.02])
    result = sensitivity_at_specificity(positive, scores, 0.9)
    assert result["specificity"] >= 0.9
    assert result["sensitivity"] == 0.5


def test_every_interval_contains_its_point_estimate():
    y, proba, patients = _random_case(n=60, seed=7)
    m = compute_metrics(y, proba, CLASSES, patients, n_bootstrap=200, seed=5)
    point = {
        "accuracy": m["accuracy"],
        "macro_f1": m["macro"]["f1"],
        "macro_auc": m["macro"]["roc_auc"],
        "malignant_auc": m["malignant_vs_rest_auc"],
    }
    for key, estimate in point.items():
        interval = m["bootstrap"]["intervals"][key]
        assert interval["lower"] <= estimate <= interval["upper"], key
        assert interval["lower"] < interval["upper"], key


def test_bootstrap_is_seeded():
    y, proba, patients = _random_case(n=50, seed=2)
    first = compute_metrics(y, proba, CLASSES, patients, n_bootstrap=100, seed=9)
    second = compute_metrics(y, proba, CLASSES, patients, n_bootstrap=100, seed=9)
    assert first["bootstrap"] == second["bootstrap"]


def test_absent_class_and_tiny_data_give_none_not_nan(tmp_path):
    y = np.array([0, 0, 2])  # no BENIGN_WITHOUT_CALLBACK, no MALIGNANT
    proba = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.1, 0.6, 0.1], [0.1, 0.1, 0.7, 0.1]])
    m = compute_metrics(y, proba, CLASSES, ["a", "a", "b"], n_bootstrap=30)
    assert m["per_class"]["MALIGNANT"]["roc_auc"] is None
    assert m["per_class"]["MALIGNANT"]["recall"] is None
    assert m["per_class"]["BENIGN_WITHOUT_CALLBACK"]["precision"] is None
    assert m["malignant_vs_rest_auc"] is None
    assert m["sensitivity_at_90_specificity"]["sensitivity"] is None
    assert m["bootstrap"]["intervals"]["malignant_auc"]["lower"] is None
    assert m["confusion_matrix_normalized"][3] == [None] * 4
    path = write_metrics(m, tmp_path / "metrics.json")
    assert "NaN" not in path.read_text()
    assert json.loads(path.read_text())["n_patients"] == 2


@pytest.mark.parametrize("n", [0, 1])
def test_single_image_or_empty(n):
    y = np.zeros(n, dtype=int)
    proba = np.full((n, 4), 0.25)
    m = compute_metrics(y, proba, CLASSES, n_bootstrap=10)
    assert m["macro"]["roc_auc"] is None
    assert m["n_images"] == n
    json.dumps(m, allow_nan=False)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="columns"):
        compute_metrics([0, 1], np.full((2, 3), 1 / 3), CLASSES)
    with pytest.raises(ValueError, match="outside"):
        compute_metrics([0, 7], np.full((2, 4), 0.25), CLASSES)
