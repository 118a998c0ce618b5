"""Aggregation rules and breast pairing (mammo_utils.levels) on hand-made tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_utils.inference.verdict import VerdictRule
from mammo_utils.levels import aggregate_patches, aggregation_name, pair_breasts, predictions_file

CLASSES = ["NORMAL", "BENIGN", "MALIGNANT"]
SUSPICIOUS = [1, 2]
#: Suspicion (highest non-normal probability) per row: 0.1, 0.6, 0.3, 0.5.
PATCHES = np.array([
    [0.9, 0.05, 0.1],
    [0.3, 0.1, 0.6],
    [0.5, 0.3, 0.2],
    [0.4, 0.5, 0.1],
])


def test_max_is_the_most_suspicious_patch_as_inference_picks_it():
    np.testing.assert_array_equal(aggregate_patches(PATCHES, SUSPICIOUS, "max"), PATCHES[1])
    decisive = VerdictRule(CLASSES).decisive_patch(PATCHES)
    np.testing.assert_array_equal(aggregate_patches(PATCHES, SUSPICIOUS, "max"),
                                  PATCHES[decisive])


def test_topk_mean_averages_the_k_most_suspicious_patches():
    # k=2: rows 1 (0.6) and 3 (0.5).
    np.testing.assert_allclose(aggregate_patches(PATCHES, SUSPICIOUS, "topk_mean", k=2),
                               [0.35, 0.3, 0.35])
    # k=3 adds row 2 (0.3).
    np.testing.assert_allclose(aggregate_patches(PATCHES, SUSPICIOUS, "topk_mean", k=3),
                               [0.4, 0.3, 0.3])
    # k beyond the patch count: every patch.
    np.testing.assert_allclose(aggregate_patches(PATCHES, SUSPICIOUS, "topk_mean", k=10),
                               PATCHES.mean(axis=0))
    assert aggregation_name("topk_mean", 3) == "top3_mean"
    assert aggregation_name("max", 3) == "max"


def test_topk_mean_breaks_ties_in_scan_order():
    tied = np.array([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8], [0.2, 0.8, 0.0]])
    np.testing.assert_allclose(aggregate_patches(tied, SUSPICIOUS, "topk_mean", k=1), tied[1])


def test_unknown_rules_and_empty_scans_are_refused():
    with pytest.raises(ValueError, match="unknown patch aggregation 'median'"):
        aggregate_patches(PATCHES, SUSPICIOUS, "median")
    with pytest.raises(ValueError, match="non-empty"):
        aggregate_patches(np.zeros((0, 3)), SUSPICIOUS)
    with pytest.raises(ValueError, match="k >= 1"):
        aggregate_patches(PATCHES, SUSPICIOUS, "topk_mean", k=0)
    with pytest.raises(ValueError, match="unknown level"):
        predictions_file("exam")
    assert predictions_file("breast") == "predictions_breast.csv"


def _images() -> pd.DataFrame:
    rows = [
        # P1 LEFT: both views; P1 RIGHT: CC only; P2 LEFT: both views (same laterality as
        # P1 LEFT, another patient); one image without laterality.
        ("a", "P1", "LEFT", "CC", "NORMAL", [0.8, 0.1, 0.1]),
        ("b", "P1", "LEFT", "MLO", "MALIGNANT", [0.2, 0.2, 0.6]),
        ("c", "P1", "RIGHT", "CC", "BENIGN", [0.3, 0.6, 0.1]),
        ("d", "P2", "LEFT", "MLO", "BENIGN", [0.6, 0.3, 0.1]),
        ("e", "P2", "LEFT", "CC", "NORMAL", [0.7, 0.1, 0.2]),
        ("f", "P3", None, "CC", "NORMAL", [0.9, 0.05, 0.05]),
    ]
    table = pd.DataFrame(
        [(i, p, lat, v, lab, *proba) for i, p, lat, v, lab, proba in rows],
        columns=["image_id", "patient_id", "laterality", "view", "true_label",
                 *[f"p_{c}" for c in CLASSES]])
    return table


def test_breast_pairing_mean():
    breasts, counts = pair_breasts(_images(), CLASSES, CLASSES, SUSPICIOUS, "mean")
    assert breasts["breast_id"].tolist() == ["P1_LEFT", "P1_RIGHT", "P2_LEFT"]
    assert breasts["views"].tolist() == ["CC+MLO", "CC", "CC+MLO"]
    assert breasts["n_views"].tolist() == [2, 1, 2]
    assert breasts["image_ids"].tolist() == ["a b", "c", "d e"]
    # Label: the most severe of the views.
    assert breasts["true_label"].tolist() == ["MALIGNANT", "BENIGN", "BENIGN"]
    np.testing.assert_allclose(breasts.loc[0, ["p_NORMAL", "p_BENIGN", "p_MALIGNANT"]]
                               .to_numpy(float), [0.5, 0.15, 0.35])
    np.testing.assert_allclose(breasts.loc[1, ["p_NORMAL", "p_BENIGN", "p_MALIGNANT"]]
                               .to_numpy(float), [0.3, 0.6, 0.1])
    np.testing.assert_allclose(breasts.loc[2, ["p_NORMAL", "p_BENIGN", "p_MALIGNANT"]]
                               .to_numpy(float), [0.65, 0.2, 0.15])
    assert breasts["predicted_label"].tolist() == ["NORMAL", "BENIGN", "NORMAL"]
    assert counts == {"images": 6, "breasts": 3, "two_or_more_views": 2, "single_view": 1,
                      "no_laterality": 1}


def test_breast_pairing_max_takes_the_most_suspicious_view():
    breasts, _ = pair_breasts(_images(), CLASSES, CLASSES, SUSPICIOUS, "max")
    columns = ["p_NORMAL", "p_BENIGN", "p_MALIGNANT"]
    np.testing.assert_allclose(breasts.loc[0, columns].to_numpy(float), [0.2, 0.2, 0.6])
    # P2 LEFT: view d (0.3) against e (0.2): d.
    np.testing.assert_allclose(breasts.loc[2, columns].to_numpy(float), [0.6, 0.3, 0.1])
    with pytest.raises(ValueError, match="unknown view aggregation"):
        pair_breasts(_images(), CLASSES, CLASSES, SUSPICIOUS, "median")
