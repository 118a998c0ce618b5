"""Every number in ``metrics.json``: classification, ranking, calibration and uncertainty.

Only numpy and scikit-learn, so metrics can be computed and tested without a model.
Small or lopsided test sets are the norm in mammography (a handful of malignant
patients, a class missing from a split), so every quantity that is undefined on the
data at hand is reported as ``None`` rather than NaN or an exception:

* a one-vs-rest AUC needs at least one positive and one negative example;
* recall and F1 need the class in the ground truth; precision needs it predicted;
* macro averages run over the classes present in the ground truth (so an absent class
  neither helps nor hurts), weighted averages weight by support.

Confidence intervals resample *patients*, not images, because the images of one
patient (two views, two breasts) are correlated; resampling images would make the
intervals too narrow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

#: Class scored by the malignant-vs-rest AUC and the sensitivity at fixed specificity.
MALIGNANT = "MALIGNANT"
#: Specificity at which sensitivity is reported (a screening operating point).
TARGET_SPECIFICITY = 0.90
#: Equal-width confidence bins of the expected calibration error.
ECE_BINS = 15
#: Metrics that get a patient-level bootstrap interval.
BOOTSTRAP_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "macro_auc", "malignant_auc")


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC of ``scores`` for a boolean ``positive`` array (Mann-Whitney, ties count half).

    Returns ``None`` when there are no positives or no negatives.
    """
    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def one_vs_rest_auc(y_true: np.ndarray, proba: np.ndarray) -> list[float | None]:
    """Per-class one-vs-rest ROC-AUC, ``None`` for a class absent from or alone in ``y_true``."""
    return [binary_auc(y_true == k, proba[:, k]) for k in range(proba.shape[1])]


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class."""
    flat = np.asarray(y_true) * n_classes + np.asarray(y_pred)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def row_normalize(counts: np.ndarray) -> list[list[float | None]]:
    """Each row divided by its total (the per-class recall profile); ``None`` for empty rows."""
    rows = []
    for row in counts:
        total = row.sum()
        rows.append([float(v / total) for v in row] if total else [None] * len(row))
    return rows


def _per_class_prf(counts: np.ndarray) -> tuple[list, list, list]:
    """Precision, recall and F1 per class from a confusion matrix (``None`` where undefined)."""
    true_positive = np.diag(counts)
    predicted = counts.sum(axis=0)
    support = counts.sum(axis=1)
    precision, recall, f1 = [], [], []
    for tp, pred, sup in zip(true_positive, predicted, support, strict=True):
        p = float(tp / pred) if pred else None
        r = float(tp / sup) if sup else None
        precision.append(p)
        recall.append(r)
        if r is None:
            f1.append(None)
        elif not p or not r:
            f1.append(0.0)
        else:
            f1.append(2 * p * r / (p + r))
    return precision, recall, f1


def _average(values: Sequence[float | None], support: np.ndarray, weighted: bool) -> float | None:
    """Macro or support-weighted mean over classes present in the ground truth.

    An undefined value of a present class (precision of a class never predicted) counts
    as 0, the scikit-learn convention, so never predicting a class is penalized.
    """
    present = support > 0
    if not present.any():
        return None
    filled = np.array([0.0 if v is None else v for v in values])[present]
    weights = support[present] if weighted else np.ones(int(present.sum()))
    return float(np.average(filled, weights=weights))


def _defined_mean(values: Sequence[float | None], weights: Sequence[float] | None = None):
    """Mean of the defined values (optionally weighted); ``None`` if none is defined."""
    keep = [i for i, v in enumerate(values) if v is not None]
    if not keep:
        return None
    w = None if weights is None else [weights[i] for i in keep]
    if w is not None and sum(w) == 0:
        return None
    return float(np.average([values[i] for i in keep], weights=w))


def sensitivity_at_specificity(
    positive: np.ndarray, scores: np.ndarray, specificity: float = TARGET_SPECIFICITY
) -> dict[str, float | None]:
    """Highest sensitivity whose specificity is at least ``specificity``, and its threshold."""
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return {"sensitivity": None, "specificity": None, "threshold": None}
    fpr, tpr, thresholds = roc_curve(positive, scores)
    allowed = fpr <= 1.0 - specificity + 1e-12
    best = int(np.flatnonzero(allowed)[np.argmax(tpr[allowed])])
    threshold = float(thresholds[best]) if np.isfinite(thresholds[best]) else None
    return {
        "sensitivity": float(tpr[best]),
        "specificity": float(1.0 - fpr[best]),
        "threshold": threshold,
    }


def calibration_bins(
    y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS
) -> list[dict[str, float | int | None]]:
    """Top-label reliability table: per equal-width confidence bin, count, confidence, accuracy."""
    confidence = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    table = []
    for b in range(n_bins):
        in_bin = which == b
        count = int(in_bin.sum())
        table.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[in_bin].mean()) if count else None,
                "accuracy": float(correct[in_bin].mean()) if count else None,
            }
        )
    return table


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, n_bins: int = ECE_BINS
) -> float | None:
    """Top-label ECE: the count-weighted mean gap between confidence and accuracy per bin."""
    if len(y_true) == 0:
        return None
    total = 0.0
    for row in calibration_bins(y_true, proba, n_bins):
        if row["count"]:
            total += row["count"] * abs(row["accuracy"] - row["confidence"])
    return float(total / len(y_true))


def _headline(y_true: np.ndarray, proba: np.ndarray, malignant: int | None) -> dict:
    """The bootstrapped metrics, computed fast enough to repeat a thousand times."""
    n_classes = proba.shape[1]
    counts = confusion_counts(y_true, proba.argmax(axis=1), n_classes)
    _, _, f1 = _per_class_prf(counts)
    aucs = one_vs_rest_auc(y_true, proba)
    return {
        "accuracy": float(np.trace(counts) / counts.sum()) if counts.sum() else None,
        "macro_f1": _average(f1, counts.sum(axis=1), weighted=False),
        "macro_auc": _defined_mean(aucs),
        "malignant_auc": None if malignant is None else aucs[malignant],
    }


def patient_bootstrap(
    statistic: Callable[[np.ndarray], dict[str, float | None]],
    patient_ids: Sequence,
    point: dict[str, float | None],
    n_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Percentile intervals of ``statistic(indices)`` over patients resampled with replacement.

    Each replicate draws as many patients as there are, with replacement, and keeps all
    images of every drawn patient. Replicates where a metric is undefined (a class
    missing from the resample) are dropped for that metric, and their number is
    reported. An interval is widened to include its point estimate, which a percentile
    interval can miss on a handful of patients.
    """
    groups: dict[Any, list[int]] = {}
    for i, pid in enumerate(patient_ids):
        groups.setdefault(pid, []).append(i)
    members = [np.asarray(v) for v in groups.values()]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {key: [] for key in point}
    for _ in range(n_bootstrap if members else 0):
        drawn = rng.integers(0, len(members), size=len(members))
        values = statistic(np.concatenate([members[d] for d in drawn]))
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                samples[key].append(value)
    alpha = (1.0 - confidence) / 2
    intervals = {}
    for key, estimate in point.items():
        values = np.asarray(samples[key])
        if estimate is None or values.size == 0:
            intervals[key] = {"lower": None, "upper": None, "n_valid": int(values.size)}
            continue
        lower, upper = np.quantile(values, [alpha, 1.0 - alpha])
        intervals[key] = {
            "lower": float(min(lower, estimate)),
            "upper": float(max(upper, estimate)),
            "n_valid": int(values.size),
        }
    return intervals


def _validate(y_true, proba, classes) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=int).ravel()
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape[0] != y_true.size:
        raise ValueError(
            f"proba must be (n_images, n_classes) = ({y_true.size}, {len(classes)}); "
            f"got shape {proba.shape}"
        )
    if proba.shape[1] != len(classes):
        raise ValueError(f"proba has {proba.shape[1]} columns but {len(classes)} classes given")
    if y_true.size and (y_true.min() < 0 or y_true.max() >= len(classes)):
        raise ValueError(f"y_true holds indices outside 0..{len(classes) - 1}")
    if not np.isfinite(proba).all():
        raise ValueError("proba holds NaN or infinite values")
    return y_true, proba


def compute_metrics(
    y_true: Sequence[int],
    proba: np.ndarray,
    classes: Sequence[str],
    patient_ids: Sequence | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Every metric of one model on one split, as a JSON-ready dict.

    ``y_true`` holds class indices into ``classes`` (the model card's output order),
    ``proba`` the predicted probabilities, one column per class. ``patient_ids`` groups
    images for the bootstrap; without it every image is its own patient.
    """
    classes = list(classes)
    y_true, proba = _validate(y_true, proba, classes)
    n_classes = len(classes)
    if patient_ids is None:
        patient_ids = np.arange(y_true.size)
    patient_ids = np.asarray(patient_ids)
    if patient_ids.size != y_true.size:
        raise ValueError(f"{patient_ids.size} patient ids for {y_true.size} images")

    y_pred = proba.argmax(axis=1)
    counts = confusion_counts(y_true, y_pred, n_classes)
    support = counts.sum(axis=1)
    precision, recall, f1 = _per_class_prf(counts)
    aucs = one_vs_rest_auc(y_true, proba)
    malignant = classes.index(MALIGNANT) if MALIGNANT in classes else None

    per_class = {
        name: {
            "precision": precision[k],
            "recall": recall[k],
            "f1": f1[k],
            "support": int(support[k]),
            "roc_auc": aucs[k],
        }
        for k, name in enumerate(classes)
    }
    averages = {
        kind: {
            "precision": _average(precision, support, weighted),
            "recall": _average(recall, support, weighted),
            "f1": _average(f1, support, weighted),
            "roc_auc": _defined_mean(aucs, support.tolist() if weighted else None),
        }
        for kind, weighted in (("macro", False), ("weighted", True))
    }
    point = _headline(y_true, proba, malignant)
    operating_point = (
        sensitivity_at_specificity(y_true == malignant, proba[:, malignant])
        if malignant is not None
        else {"sensitivity": None, "specificity": None, "threshold": None}
    )
    intervals = patient_bootstrap(
        lambda idx: _headline(y_true[idx], proba[idx], malignant),
        patient_ids,
        point,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    return to_jsonable(
        {
            "classes": classes,
            "n_images": int(y_true.size),
            "n_patients": int(np.unique(patient_ids).size),
            "accuracy": point["accuracy"],
            "per_class": per_class,
            "macro": averages["macro"],
            "weighted": averages["weighted"],
            "malignant_vs_rest_auc": point["malignant_auc"],
            "sensitivity_at_90_specificity": operating_point,
            "confusion_matrix": counts.tolist(),
            "confusion_matrix_normalized": row_normalize(counts),
            "ece": expected_calibration_error(y_true, proba),
            "calibration_bins": calibration_bins(y_true, proba),
            "bootstrap": {
                "n_bootstrap": int(n_bootstrap),
                "seed": int(seed),
                "unit": "patient",
                "confidence": 0.95,
                "intervals": intervals,
            },
        }
    )


def to_jsonable(value: Any) -> Any:
    """Plain Python types for ``json.dump``: numpy scalars unwrapped, NaN and inf to ``None``."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


def write_metrics(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write ``metrics`` as strict JSON (no NaN) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(metrics), indent=2, allow_nan=False) + "\n")
    return path


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a comparison table shows, each with its 95% interval."""
    intervals = metrics["bootstrap"]["intervals"]
    row: dict[str, Any] = {"n_images": metrics["n_images"], "n_patients": metrics["n_patients"]}
    sources = {
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro"]["f1"],
        "macro_auc": metrics["macro"]["roc_auc"],
        "malignant_auc": metrics["malignant_vs_rest_auc"],
    }
    for key, value in sources.items():
        row[key] = value
        row[f"{key}_lower"] = intervals.get(key, {}).get("lower")
        row[f"{key}_upper"] = intervals.get(key, {}).get("upper")
    row["sensitivity_at_90_specificity"] = metrics["sensitivity_at_90_specificity"]["sensitivity"]
    row["ece"] = metrics["ece"]
    return row
