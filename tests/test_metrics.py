"""Metrics against scikit-learn and hand-made known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from mammo_utils.metrics import (
    BOOTSTRAP_METHOD,
    BOOTSTRAP_METRICS,
    CONFIDENCE_LEVEL,
    SENSITIVITY_AT_TARGET,
    TARGET_SPECIFICITY,
    _replicate_statistics,
    compute_metrics,
    expected_calibration_error,
    macro_roc_auc,
    patient_bootstrap,
    roc_auc,
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
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["macro_precision"] == pytest.approx(precision_score(y, pred, average="macro"))
    assert m["weighted_recall"] == pytest.approx(recall_score(y, pred, average="weighted"))
    assert m["macro_roc_auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr"))
    assert m["weighted_roc_auc"] == pytest.approx(
        roc_auc_score(y, proba, multi_class="ovr", average="weighted")
    )
    per_class_f1 = f1_score(y, pred, average=None)
    for k, name in enumerate(CLASSES):
        assert m["per_class"][name]["f1"] == pytest.approx(per_class_f1[k])
        assert m["per_class"][name]["roc_auc"] == pytest.approx(
            roc_auc_score(y == k, proba[:, k])
        )
        assert m["per_class"][name]["average_precision"] == pytest.approx(
            average_precision_score(y == k, proba[:, k])
        )
        assert m["per_class"][name]["support"] == int((y == k).sum())
    assert m["malignant_roc_auc"] == pytest.approx(roc_auc_score(y == 3, proba[:, 3]))
    assert m["malignant_average_precision"] == pytest.approx(
        average_precision_score(y == 3, proba[:, 3])
    )
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
    assert m["malignant_roc_auc"] == 1.0
    assert m["malignant_average_precision"] == 1.0
    assert roc_auc(np.array([1, 0, 1, 0]), np.array([0.2, 0.5, 0.8, 0.5])) == 0.5


def test_perfect_classifier():
    y = np.repeat(np.arange(4), 10)
    m = compute_metrics(y, _one_hot(y, 4), CLASSES, np.arange(40) // 2, n_bootstrap=100)
    assert m["accuracy"] == 1.0
    assert m["macro_roc_auc"] == 1.0
    assert m["malignant_roc_auc"] == 1.0
    assert m[SENSITIVITY_AT_TARGET] == 1.0
    assert m["ece"] == pytest.approx(0.0)
    assert m["bootstrap"]["intervals"]["accuracy"] == {"lower": 1.0, "upper": 1.0, "n_valid": 100}


def test_chance_classifier_auc_near_half():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=4000)
    proba = rng.dirichlet(np.ones(4), size=4000)
    m = compute_metrics(y, proba, CLASSES, n_bootstrap=10)
    assert m["macro_roc_auc"] == pytest.approx(0.5, abs=0.03)
    assert m["malignant_roc_auc"] == pytest.approx(0.5, abs=0.03)


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


def test_each_metric_has_one_name_in_the_json_and_the_bootstrap():
    y, proba, patients = _random_case(n=60, seed=7)
    m = compute_metrics(y, proba, CLASSES, patients, n_bootstrap=20)
    assert set(m["bootstrap"]["intervals"]) == set(BOOTSTRAP_METRICS)
    for name in BOOTSTRAP_METRICS:
        assert isinstance(m[name], float), name
    assert m["bootstrap"]["method"] == BOOTSTRAP_METHOD == "percentile"
    assert m["bootstrap"]["confidence"] == CONFIDENCE_LEVEL
    assert str(round(100 * TARGET_SPECIFICITY)) in SENSITIVITY_AT_TARGET
    assert m[SENSITIVITY_AT_TARGET] is not None
    assert m["operating_point"]["target_specificity"] == TARGET_SPECIFICITY
    assert m["operating_point"]["specificity"] >= TARGET_SPECIFICITY


def test_percentile_interval_is_reported_even_when_it_misses_the_estimate():
    """The share of distinct patients in a resample is 1 on the data and about 1 - 1/e in
    every replicate: a skewed statistic whose percentile interval lies below its estimate.
    The interval is reported as the method gives it, not stretched to reach 1."""
    patients = np.repeat(np.arange(40), 2)

    def distinct_share(indices):
        return {"distinct": np.unique(patients[indices]).size / 40}

    intervals = patient_bootstrap(distinct_share, patients, {"distinct": 1.0}, n_bootstrap=300)
    interval = intervals["distinct"]
    assert interval["n_valid"] == 300
    assert 0.5 < interval["lower"] < interval["upper"] < 0.8


def test_patient_bootstrap_resamples_patients_not_images():
    """20 patients with 10 images each, all right or all wrong per patient: the patient
    interval is as wide as 20 independent draws, far wider than one over 200 images."""
    rng = np.random.default_rng(11)
    correct = np.repeat(rng.uniform(size=20) < 0.6, 10)
    y = np.zeros(200, dtype=int)
    proba = np.where(correct[:, None], [0.9, 0.1], [0.1, 0.9])
    classes = ["NORMAL", "MALIGNANT"]
    by_patient = compute_metrics(y, proba, classes, np.repeat(np.arange(20), 10), n_bootstrap=400)
    by_image = compute_metrics(y, proba, classes, n_bootstrap=400)
    width = {
        name: m["bootstrap"]["intervals"]["accuracy"]["upper"]
        - m["bootstrap"]["intervals"]["accuracy"]["lower"]
        for name, m in (("patient", by_patient), ("image", by_image))
    }
    p = by_image["accuracy"]
    assert width["image"] == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 200), rel=0.25)
    assert width["patient"] == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 20), rel=0.25)


@pytest.mark.parametrize("seed", range(6))
def test_bootstrap_fast_path_matches_scikit_learn(seed):
    """Each replicate's metrics (from a confusion matrix and ranks) equal the
    scikit-learn point estimates on the same resample, ties, duplicates and absent
    classes included."""
    rng = np.random.default_rng(seed)
    y, proba, _ = _random_case(n=30, seed=seed)
    proba = np.round(proba, 1)  # ties in the scores
    if seed % 2:
        y[y == 1] = 0  # BENIGN_WITHOUT_CALLBACK absent
    for _ in range(5):
        idx = rng.integers(0, y.size, size=y.size)
        expected = compute_metrics(y[idx], proba[idx], CLASSES, n_bootstrap=0)
        fast = _replicate_statistics(y[idx], proba[idx], CLASSES.index("MALIGNANT"))
        assert set(fast) == set(BOOTSTRAP_METRICS)
        for name in BOOTSTRAP_METRICS:
            assert fast[name] == pytest.approx(expected[name], abs=1e-12), name


def test_macro_roc_auc_skips_classes_without_both_outcomes():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0]])
    assert macro_roc_auc(labels, probabilities) == 1.0
    assert macro_roc_auc(np.zeros(4, dtype=int), probabilities) is None


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
    assert m["per_class"]["MALIGNANT"]["average_precision"] is None
    assert m["per_class"]["BENIGN"]["average_precision"] == 1.0
    assert m["malignant_roc_auc"] is None
    assert m["malignant_average_precision"] is None
    assert m[SENSITIVITY_AT_TARGET] is None
    assert m["bootstrap"]["intervals"]["malignant_roc_auc"]["lower"] is None
    assert m["confusion_matrix_normalized"][3] == [None] * 4
    path = write_metrics(m, tmp_path / "metrics.json")
    assert "NaN" not in path.read_text()
    assert json.loads(path.read_text())["n_patients"] == 2


@pytest.mark.parametrize("n", [0, 1])
def test_single_image_or_empty(n):
    y = np.zeros(n, dtype=int)
    proba = np.full((n, 4), 0.25)
    m = compute_metrics(y, proba, CLASSES, n_bootstrap=10)
    assert m["macro_roc_auc"] is None
    assert m["n_images"] == n
    json.dumps(m, allow_nan=False)


def test_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="columns"):
        compute_metrics([0, 1], np.full((2, 3), 1 / 3), CLASSES)
    with pytest.raises(ValueError, match="outside"):
        compute_metrics([0, 7], np.full((2, 4), 0.25), CLASSES)
