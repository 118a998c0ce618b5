"""The comparison table across the models of a run, from their ``metrics.json`` files.

One row per model: first the malignant-vs-rest ROC-AUC at each level
(``image_malignant_roc_auc``, the run's headline, then ``breast_`` and ``patch_``, each
with ``_lower`` and ``_upper``; empty where a level does not apply), then the metrics
of the manifest's level under their ``metrics.json`` names, each bootstrapped one
followed by ``<name>_lower`` and ``<name>_upper`` (its patient-level interval), then the
parameter count, the training time from the model card and the measured inference
throughput. Written as CSV (for code, and for ``reports/index.html``) and as Markdown
(for the notebook and a reader): a levels table, then the full table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mammo_utils.evaluate import TIMING_FILE
from mammo_utils.metrics import BOOTSTRAP_METRICS, SENSITIVITY_AT_TARGET

#: The comparison table of a run's metrics folder, as CSV and as Markdown.
COMPARISON_FILE = "comparison.csv"
COMPARISON_MARKDOWN_FILE = "comparison.md"

#: The ``metrics.json`` keys the table shows, in order.
TABLE_METRICS: tuple[str, ...] = (
    *BOOTSTRAP_METRICS,
    "malignant_average_precision",
    SENSITIVITY_AT_TARGET,
    "ece",
)
#: The metric compared across levels; ``image`` first, the run's headline.
LEVEL_METRIC = "malignant_roc_auc"
#: ``levels.LEVELS`` in the order a reader compares them: the headline, then coarser, then finer.
LEVEL_ORDER: tuple[str, ...] = ("image", "breast", "patch")


def level_column(level: str) -> str:
    """``<level>_malignant_roc_auc``: the table column of :data:`LEVEL_METRIC` at ``level``."""
    return f"{level}_{LEVEL_METRIC}"


def _level_cells(metrics: dict) -> dict:
    """:data:`LEVEL_METRIC` and its interval at every level; ``None`` where it does not
    apply (or the file predates levels)."""
    sections = metrics.get("levels", {})
    cells = {}
    for level in LEVEL_ORDER:
        section = sections.get(level, {})
        interval = section.get("bootstrap", {}).get("intervals", {}).get(LEVEL_METRIC, {})
        column = level_column(level)
        cells[column] = section.get(LEVEL_METRIC)
        cells[f"{column}_lower"] = interval.get("lower")
        cells[f"{column}_upper"] = interval.get("upper")
        cells[f"{level}_n"] = section.get("n_images")
    return cells


def comparison_row(metrics: dict, timing: dict | None = None) -> dict:
    """One table row from one model's ``metrics.json`` and ``timing.json`` content."""
    model = metrics.get("model", {})
    intervals = metrics["bootstrap"]["intervals"]
    row = {
        "model": model.get("model_name", "unknown"),
        "architecture": model.get("architecture"),
        "weights": model.get("weights"),
        "split": metrics.get("split"),
        "n_images": metrics["n_images"],
        "n_patients": metrics["n_patients"],
        **_level_cells(metrics),
        "protocol": metrics.get("protocol"),
    }
    for name in TABLE_METRICS:
        row[name] = metrics[name]
        if name in intervals:
            row[f"{name}_lower"] = intervals[name]["lower"]
            row[f"{name}_upper"] = intervals[name]["upper"]
    row["parameter_count"] = model.get("parameter_count")
    timing = timing or {}
    row["training_time_s"] = timing.get("training_time_s")
    row["inference_images_per_s"] = timing.get("inference_images_per_second")
    return row


def compare_metrics(metrics_dir: str | Path) -> pd.DataFrame:
    """Rows for every ``<metrics_dir>/<model>/metrics.json``, best image-level malignant
    ROC-AUC first.

    A file without one of the table's metrics (written by an older version) is an
    error naming the file and the missing keys.
    """
    rows = []
    for path in sorted(Path(metrics_dir).glob("*/metrics.json")):
        metrics = json.loads(path.read_text())
        missing = [name for name in (*TABLE_METRICS, "bootstrap") if name not in metrics]
        if missing:
            raise ValueError(
                f"{path}: no {', '.join(missing)}; written by an older version? "
                "Evaluate the model again."
            )
        timing_path = path.with_name(TIMING_FILE)
        timing = json.loads(timing_path.read_text()) if timing_path.is_file() else None
        rows.append(comparison_row(metrics, timing))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(
        [level_column("image"), "malignant_roc_auc", "macro_roc_auc"], ascending=False,
        na_position="last"
    ).reset_index(drop=True)


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _with_interval(row: dict, name: str) -> str:
    """``value [lower, upper]``, or the value alone when the interval is undefined."""
    value = _cell(row.get(name))
    lower = row.get(f"{name}_lower")
    if value != "n/a" and lower is not None and not pd.isna(lower):
        value += f" [{_cell(lower)}, {_cell(row[f'{name}_upper'])}]"
    return value


def levels_markdown(table: pd.DataFrame) -> str:
    """Malignant-vs-rest ROC-AUC with its interval at each level, one row per model."""
    header = ["model", *(f"{level} {LEVEL_METRIC}" for level in LEVEL_ORDER)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [_cell(row["model"])]
        for level in LEVEL_ORDER:
            count = row.get(f"{level}_n")
            text = _with_interval(row, level_column(level))
            if text != "n/a" and count is not None and not pd.isna(count):
                text += f" (n={int(count)})"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table: metrics as ``value [lower, upper]``, sizes and speeds rounded."""
    header = ["model", "architecture", *TABLE_METRICS, "parameters", "train s", "images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [_cell(row["model"]), _cell(row.get("architecture"))]
        for name in TABLE_METRICS:
            cells.append(_with_interval(row, name))
        params = row.get("parameter_count")
        cells.append("n/a" if params is None or pd.isna(params) else f"{int(params):,}")
        cells.append(_cell(row.get("training_time_s"), 1))
        cells.append(_cell(row.get("inference_images_per_s"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(metrics_dir: str | Path) -> pd.DataFrame:
    """Write ``comparison.csv`` and ``comparison.md`` into ``metrics_dir``; return the table."""
    metrics_dir = Path(metrics_dir)
    table = compare_metrics(metrics_dir)
    metrics_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(metrics_dir / COMPARISON_FILE, index=False)
    protocols = sorted({p for p in table.get("protocol", pd.Series(dtype=object)).dropna()})
    text = "".join(f"Protocol: {protocol}\n\n" for protocol in protocols)
    text += levels_markdown(table) + "\n" + to_markdown(table)
    (metrics_dir / COMPARISON_MARKDOWN_FILE).write_text(text)
    return table
