"""The comparison table across the models of a run, from their ``metrics.json`` files.

One row per model: headline metrics with their patient-level 95% intervals, the
parameter count, the training time from the model card and the measured inference
throughput. Written as CSV (for code, and for ``reports/index.html``) and as a
Markdown table (for the notebook and a reader).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mammo_utils.metrics import headline

#: Metrics shown as ``value [lower, upper]`` in the Markdown table.
INTERVAL_METRICS: tuple[str, ...] = ("accuracy", "macro_f1", "macro_auc", "malignant_auc")


def comparison_row(metrics: dict) -> dict:
    """One table row from one model's ``metrics.json`` content."""
    model = metrics.get("model", {})
    row = {
        "model": model.get("model_name", "unknown"),
        "architecture": model.get("architecture"),
        "weights": model.get("weights"),
        "split": metrics.get("split"),
    }
    row |= headline(metrics)
    row["parameter_count"] = model.get("parameter_count")
    row["training_time_s"] = model.get("training_time_s")
    row["inference_images_per_s"] = metrics.get("inference", {}).get("images_per_second")
    return row


def compare_metrics(metrics_dir: str | Path) -> pd.DataFrame:
    """Rows for every ``<metrics_dir>/<model>/metrics.json``, best malignant AUC first."""
    paths = sorted(Path(metrics_dir).glob("*/metrics.json"))
    rows = [comparison_row(json.loads(p.read_text())) for p in paths]
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(
        ["malignant_auc", "macro_auc"], ascending=False, na_position="last"
    ).reset_index(drop=True)


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table: metrics as ``value [lower, upper]``, sizes and speeds rounded."""
    header = ["model", "architecture", *INTERVAL_METRICS, "ECE", "sens@90%spec", "parameters",
              "train s", "images/s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.to_dict("records"):
        cells = [_cell(row["model"]), _cell(row.get("architecture"))]
        for key in INTERVAL_METRICS:
            value = _cell(row[key])
            if value != "n/a" and row.get(f"{key}_lower") is not None:
                value += f" [{_cell(row[f'{key}_lower'])}, {_cell(row[f'{key}_upper'])}]"
            cells.append(value)
        cells.append(_cell(row.get("ece")))
        cells.append(_cell(row.get("sensitivity_at_90_specificity")))
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
    table.to_csv(metrics_dir / "comparison.csv", index=False)
    (metrics_dir / "comparison.md").write_text(to_markdown(table))
    return table
