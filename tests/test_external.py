"""Internal-versus-external comparison and the reasons for undefined metrics."""

from __future__ import annotations

from mammo_utils.external import compare_levels, comparison_markdown, undefined_reasons


def _metrics(auc, lower, upper, supports, **extra) -> dict:
    section = {
        "classes": list(supports), "n_images": sum(supports.values()),
        "per_class": {name: {"support": n} for name, n in supports.items()},
        "accuracy": 0.7, "macro_f1": 0.6, "macro_roc_auc": 0.8, "malignant_roc_auc": auc,
        "malignant_average_precision": auc,
        "bootstrap": {"intervals": {
            "malignant_roc_auc": {"lower": lower, "upper": upper},
            "accuracy": {"lower": 0.6, "upper": 0.8}}},
        **extra,
    }
    return {"levels": {"image": section, "patch": {"not_applicable": "image model"}}}


def test_a_drop_beyond_the_internal_interval_is_said_in_words():
    internal = _metrics(0.85, 0.80, 0.90, {"NORMAL": 10, "MALIGNANT": 5})
    external = _metrics(0.62, 0.50, 0.74, {"NORMAL": 20, "MALIGNANT": 8})
    rows = compare_levels(internal, external)
    assert {row["level"] for row in rows} == {"image"}  # patch: not applicable internally
    auc = next(row for row in rows if row["metric"] == "malignant_roc_auc")
    assert auc["drop"] == 0.85 - 0.62 and auc["beyond_interval"] is True
    assert auc["statement"] == ("image malignant_roc_auc fell from 0.850 to 0.620: a drop of "
                                "0.230, larger than the internal interval [0.800, 0.900] allows")
    accuracy = next(row for row in rows if row["metric"] == "accuracy")
    assert accuracy["beyond_interval"] is False and "within or above" in accuracy["statement"]
    table = comparison_markdown(rows, "A test split", "B test split")
    assert "| image | malignant_roc_auc | 0.850 [0.800, 0.900] | 0.620 [0.500, 0.740] | " \
           "0.230 | yes |" in table


def test_undefined_metrics_get_a_reason():
    only_normal = {"classes": ["NORMAL", "MALIGNANT"], "n_images": 4,
                   "per_class": {"NORMAL": {"support": 4}, "MALIGNANT": {"support": 0}},
                   "malignant_roc_auc": None, "malignant_average_precision": None,
                   "macro_roc_auc": None, "weighted_roc_auc": None, "accuracy": 1.0,
                   "macro_f1": 1.0}
    reasons = undefined_reasons(only_normal, "MIAS")
    assert reasons["malignant_roc_auc"] == "no MALIGNANT images in MIAS"
    assert reasons["macro_roc_auc"] == "MIAS holds one class only (NORMAL)"
    assert reasons["per_class.MALIGNANT.roc_auc"] == "no MALIGNANT images in MIAS"
    assert "accuracy" not in reasons
    all_malignant = {**only_normal, "per_class": {"NORMAL": {"support": 0},
                                                  "MALIGNANT": {"support": 4}}}
    assert undefined_reasons(all_malignant, "X")["malignant_roc_auc"] == \
        "every image of X is MALIGNANT: no negatives"
    defined = {**only_normal, "malignant_roc_auc": 0.7, "malignant_average_precision": 0.5,
               "macro_roc_auc": 0.7, "weighted_roc_auc": 0.7,
               "per_class": {"NORMAL": {"support": 2}, "MALIGNANT": {"support": 2}}}
    assert undefined_reasons(defined) == {}
