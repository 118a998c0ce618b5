"""External validation: why a metric is undefined, and internal against external results.

A model trained on one data set and scored on another usually loses accuracy, and a
researcher needs to know whether the loss is more than the internal uncertainty.
This module reads two ``metrics.json`` contents (the model on its own test split and on
another data set's) and says, per level and metric, how far the external value fell and
whether it fell below the internal bootstrap interval. It also explains every metric
that is undefined on a data set (a class it lacks, no negatives), since an external set
often holds fewer classes than the model knows. Pure Python over JSON-ready dicts.
"""

from __future__ import annotations

from mammo_utils.metrics import BOOTSTRAP_METRICS, MALIGNANT

#: Where an external evaluation goes inside a model's metrics folder.
EXTERNAL_DIR = "external"
#: The internal-versus-external table, as Markdown, beside the external metrics.json.
EXTERNAL_TABLE_FILE = "internal_vs_external.md"
#: Metrics compared between internal and external results (each has an interval).
COMPARED_METRICS: tuple[str, ...] = BOOTSTRAP_METRICS
#: Metrics of the malignant-vs-rest question.
_MALIGNANT_METRICS = ("malignant_roc_auc", "malignant_average_precision")


def _support(metrics: dict, name: str) -> int:
    return int(metrics.get("per_class", {}).get(name, {}).get("support", 0))


def undefined_reasons(metrics: dict, dataset: str = "this data set") -> dict[str, str]:
    """For each headline metric that is ``None`` in ``metrics``, the reason in words.

    Keys are ``metrics.json`` names, with ``per_class.<CLASS>.roc_auc`` for a class's
    ROC-AUC. A metric that is defined gets no entry.
    """
    n = int(metrics.get("n_images", 0))
    classes = list(metrics.get("classes", []))
    present = [name for name in classes if _support(metrics, name)]
    missing = [name for name in classes if not _support(metrics, name)]
    reasons: dict[str, str] = {}
    if n == 0:
        return {name: f"no images in {dataset}" for name in COMPARED_METRICS}

    def class_reason(name: str) -> str | None:
        if name not in classes:
            return f"the model has no {name} class"
        if not _support(metrics, name):
            return f"no {name} images in {dataset}"
        if _support(metrics, name) == n:
            return f"every image of {dataset} is {name}: no negatives"
        return None

    for key in _MALIGNANT_METRICS:
        if metrics.get(key) is None:
            reasons[key] = class_reason(MALIGNANT) or "undefined on these scores"
    for key in ("macro_roc_auc", "weighted_roc_auc"):
        if metrics.get(key) is None:
            reasons[key] = (f"{dataset} holds one class only ({', '.join(present)})"
                            if len(present) < 2 else "undefined on these scores")
    for name in missing:
        reasons[f"per_class.{name}.roc_auc"] = class_reason(name)
    for key in ("macro_f1", "accuracy"):
        if metrics.get(key) is None:
            reasons[key] = "undefined on these predictions"
    return reasons


def _interval(metrics: dict, name: str) -> tuple[float | None, float | None]:
    interval = metrics.get("bootstrap", {}).get("intervals", {}).get(name, {})
    return interval.get("lower"), interval.get("upper")


def compare_levels(internal: dict, external: dict) -> list[dict]:
    """Rows ``level, metric, internal, internal_lower, internal_upper, external,
    external_lower, external_upper, drop, beyond_interval, statement`` for every level
    both results hold and every metric of :data:`COMPARED_METRICS`.

    ``drop`` is internal minus external; ``beyond_interval`` is true when the external
    value lies below the internal interval's lower bound (a loss larger than the
    internal uncertainty), false when inside or above it, ``None`` when undefined.
    """
    rows = []
    internal_levels, external_levels = internal.get("levels", {}), external.get("levels", {})
    external_reasons = {level: section.get("not_applicable_metrics", {})
                        for level, section in external_levels.items()}
    for level, inside in internal_levels.items():
        outside = external_levels.get(level, {})
        if "not_applicable" in inside or "not_applicable" in outside:
            continue
        for name in COMPARED_METRICS:
            value, other = inside.get(name), outside.get(name)
            lower, upper = _interval(inside, name)
            ext_lower, ext_upper = _interval(outside, name)
            drop = None if value is None or other is None else value - other
            beyond = None if other is None or lower is None else other < lower
            rows.append({
                "level": level, "metric": name, "internal": value, "internal_lower": lower,
                "internal_upper": upper, "external": other, "external_lower": ext_lower,
                "external_upper": ext_upper, "drop": drop, "beyond_interval": beyond,
                "statement": _statement(level, name, value, other, lower, upper, beyond,
                                        external_reasons.get(level, {}).get(name)),
            })
    return rows


def _statement(level, name, value, other, lower, upper, beyond, reason) -> str:
    if other is None:
        return f"{level} {name}: not applicable externally ({reason or 'undefined'})"
    if value is None:
        return f"{level} {name}: undefined internally; {other:.3f} externally"
    if beyond is None:
        return (f"{level} {name}: {value:.3f} internally, {other:.3f} externally "
                "(no internal interval to compare with)")
    if beyond:
        return (f"{level} {name} fell from {value:.3f} to {other:.3f}: a drop of "
                f"{value - other:.3f}, larger than the internal interval "
                f"[{lower:.3f}, {upper:.3f}] allows")
    return (f"{level} {name}: {value:.3f} internally, {other:.3f} externally, within or "
            f"above the internal interval [{lower:.3f}, {upper:.3f}]")


def _cell(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def comparison_markdown(rows: list[dict], internal_name: str, external_name: str) -> str:
    """The internal-versus-external table and its statements, as Markdown."""
    lines = [
        f"Internal: {internal_name}  ",
        f"External: {external_name}",
        "",
        "| level | metric | internal [95 % interval] | external [95 % interval] | drop | "
        "beyond internal interval |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        internal = _cell(row["internal"])
        if row["internal_lower"] is not None:
            internal += f" [{_cell(row['internal_lower'])}, {_cell(row['internal_upper'])}]"
        external = _cell(row["external"])
        if row["external_lower"] is not None:
            external += f" [{_cell(row['external_lower'])}, {_cell(row['external_upper'])}]"
        beyond = {True: "yes", False: "no", None: "n/a"}[row["beyond_interval"]]
        lines.append(f"| {row['level']} | {row['metric']} | {internal} | {external} | "
                     f"{_cell(row['drop'])} | {beyond} |")
    lines.append("")
    lines.extend(f"- {row['statement']}" for row in rows)
    return "\n".join(lines) + "\n"
