"""Regenerate every report with one command: papermill over the numbered notebooks.

A run named ``<name>`` executes ``notebooks/01_*.ipynb`` ... ``06_*.ipynb`` in order,
each with the working directory ``notebooks/`` and ``project_dir`` passed as an
absolute path, and writes ``reports/<name>/``::

    01_ingest.ipynb ...       the executed notebooks, outputs included
    01_ingest.html ...        the same without code cells, for readers
    params.yaml               the parameters of the run
    versions.json             library versions
    status.json               which notebooks ran, and the failure if one failed
    mlflow_runs.json          the report's MLflow run and its children (mammo_utils.tracking)
    figures/  metrics/        written by the notebooks themselves (Workspace paths)

and then rewrites ``reports/index.html``, which lists every run with its headline
numbers. A parameters file looks like::

    name: default
    common:            # passed to every notebook that declares the parameter
      dataset: synthetic
      seed: 0
    notebooks:         # extra parameters per notebook (by file stem)
      04_transfer_learning: {backbones: [mobilenetv2, densenet121], weights: none}

A notebook only receives the parameters its ``parameters`` cell declares, so one
file can serve notebooks with different parameter sets; keys that no notebook
declares are reported as a warning (a typo would otherwise be silently ignored).
"""

from __future__ import annotations

import ast
import html
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mammo_utils import tracking
from mammo_utils.comparison import COMPARISON_FILE
from mammo_utils.provenance import data_source_text
from mammo_utils.versions import library_versions
from mammo_utils.workspace import Workspace, whole_image_names

logger = logging.getLogger(__name__)

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
STATUS_FILE = "status.json"
VERSIONS_FILE = "versions.json"

#: The environment every notebook's kernel starts with, unless the caller's sets the
#: variable: TensorFlow's C++ start-up text (oneDNN, CPU features, absl) stays out of
#: the executed notebooks, where it would show as stderr blocks.
KERNEL_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2"}
#: Kernel options: its own start-up warnings (TCP transport without encryption, on a
#: local kernel) are not the report's business.
KERNEL_ARGUMENTS = ("--IPKernelApp.log_level=ERROR",)


class ReportError(RuntimeError):
    """A report run that stopped; the message names the notebook and the failing cell."""


def load_params(path: str | Path) -> dict[str, Any]:
    """Read and check a parameters YAML file (``name``, ``common``, ``notebooks``)."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"{path}: cannot read parameters: {err}") from err
    if not isinstance(params, dict):
        raise ReportError(f"{path}: parameters must be a mapping, got {type(params).__name__}")
    unknown = sorted(set(params) - {"name", "common", "notebooks", "tracking"})
    if unknown:
        raise ReportError(f"{path}: unknown top-level keys {unknown}; use name, common, "
                          "notebooks, tracking")
    for key in ("common", "notebooks"):
        if not isinstance(params.get(key) or {}, dict):
            raise ReportError(f"{path}: `{key}` must be a mapping")
    try:
        tracking_settings = tracking.check_settings(params.get("tracking"), str(path))
    except ValueError as err:
        raise ReportError(str(err)) from err
    return {
        "name": params.get("name"),
        "common": dict(params.get("common") or {}),
        "notebooks": {k: dict(v or {}) for k, v in (params.get("notebooks") or {}).items()},
        "tracking": tracking_settings,
    }


def declared_parameters(notebook: str | Path) -> set[str]:
    """Names in a notebook's ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)))


def plan_parameters(
    notebooks: list[Path], params: dict[str, Any], runner: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Parameters to pass to each notebook, and warnings about keys no notebook takes."""
    plan, used_common, problems = {}, set(), []
    known = {nb.stem for nb in notebooks}
    for name in sorted(set(params["notebooks"]) - known):
        problems.append(f"parameters given for {name!r}, which is not a notebook here")
    for nb in notebooks:
        declared = declared_parameters(nb)
        extra = params["notebooks"].get(nb.stem, {})
        passed = {k: v for k, v in params["common"].items() if k in declared}
        used_common |= set(passed)
        for key, value in extra.items():
            if key in declared:
                passed[key] = value
            else:
                problems.append(f"{nb.stem} does not declare parameter {key!r}; ignored")
        passed |= {k: v for k, v in runner.items() if k in declared}
        plan[nb.name] = passed
    for key in sorted(set(params["common"]) - used_common):
        problems.append(f"common parameter {key!r} is declared by no notebook; ignored")
    return plan, problems


#: The notebook that trains whole-breast and two-view models from models of the run, and
#: the notebook whose model they may also start from (notebook 03 trains ``baseline``).
_TRANSFER_NOTEBOOK = "04_transfer_learning"
_BASELINE_NOTEBOOK = "03_baseline_cnn"
#: The transfer notebook's parameters that say which stages run and what they start from.
_STAGE_PARAMETERS = ("backbones", "whole_image_size", "whole_image_from", "two_view_size",
                     "two_view_from")


def _unwired(parameter: str, source, kind: str, trained: list[str]) -> list[str]:
    """The problem of a stage starting from ``source`` when the run does not train it."""
    if source in trained:
        return []
    return [f"{_TRANSFER_NOTEBOOK}: {parameter} {source!r} is not {kind} this run trains "
            f"(it trains {', '.join(sorted(trained)) or 'none'})"]


def wiring_problems(notebooks: list[Path], plan: dict[str, dict[str, Any]]) -> list[str]:
    """Stages that start from a model no earlier stage of the run trains.

    ``plan`` is :func:`plan_parameters`' first result; a parameter a notebook is not
    given keeps its declared default. The whole-image stage must start from a patch
    model of the run (notebook 03's baseline or a backbone of notebook 04); the two-view
    stage, when ``two_view_from`` is not empty, from one of those or from a whole-image
    model of the run (:func:`~mammo_utils.workspace.whole_image_names`). A run that
    names a model it does not train would fail hours in, so :func:`run_report` refuses
    it first.
    """
    by_stem = {nb.stem: nb for nb in notebooks}
    if _TRANSFER_NOTEBOOK not in by_stem:
        return []
    notebook = by_stem[_TRANSFER_NOTEBOOK]
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    values = {name: ast.literal_eval(spec["default"]) for name, spec in declared.items()
              if name in _STAGE_PARAMETERS}
    values |= {k: v for k, v in plan[notebook.name].items() if k in values}
    trained = list(values.get("backbones") or [])
    if _BASELINE_NOTEBOOK in by_stem:
        trained.append("baseline")
    problems = []
    if values.get("whole_image_size"):
        source = values.get("whole_image_from")
        problems += _unwired("whole_image_from", source, "a patch model", trained)
        if source in trained:
            trained += whole_image_names(source, source)
    if values.get("two_view_size") and values.get("two_view_from"):
        problems += _unwired("two_view_from", values["two_view_from"], "a model", trained)
    return problems


def notebook_to_html(notebook: str | Path, html_path: str | Path) -> Path:
    """An HTML copy of an executed notebook without code cells (outputs and narration)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


@dataclass
class ReportResult:
    """What one ``mammo report`` run produced."""

    name: str
    run_dir: Path
    executed: list[Path] = field(default_factory=list)
    html: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    index_html: Path | None = None


def _failure_message(notebook: Path, err: Exception) -> str:
    cell = getattr(err, "cell_index", None)
    count = getattr(err, "exec_count", None)
    source = (getattr(err, "source", "") or "").strip().splitlines()
    first = source[0] if source else ""
    reason = f"{getattr(err, 'ename', type(err).__name__)}: {getattr(err, 'evalue', err)}"
    where = f"cell {cell}" if cell is not None else "before any cell ran"
    if count is not None:
        where += f" (execution count {count})"
    return f"notebook {notebook.name} failed at {where} `{first}`: {reason}"


def _write_status(run_dir: Path, params: dict, done: list[str], failure: str | None,
                  started: datetime) -> None:
    finished = datetime.now(timezone.utc)
    status = {
        "name": run_dir.name,
        "dataset": params["common"].get("dataset", "synthetic"),
        "status": "failed" if failure else "complete",
        "completed_notebooks": done,
        "failure": failure,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "duration_s": round((finished - started).total_seconds(), 1),
    }
    (run_dir / STATUS_FILE).write_text(json.dumps(status, indent=2) + "\n")


def run_report(
    params: str | Path | dict | None = None,
    name: str | None = None,
    *,
    project_dir: str | Path = ".",
    notebooks_dir: str | Path | None = None,
    kernel_name: str = "python3",
    progress: bool = True,
) -> ReportResult:
    """Execute every numbered notebook into ``reports/<name>/`` and refresh the index.

    ``params`` is a YAML path or an already-loaded mapping; ``name`` overrides its
    ``name`` (default ``default``). A failing notebook raises :class:`ReportError`
    naming it and its cell; what earlier notebooks wrote is kept, and the failed
    notebook's executed copy (with the traceback) is saved for inspection.
    """
    import papermill
    from tqdm.auto import tqdm

    started = datetime.now(timezone.utc)
    for variable, value in KERNEL_ENVIRONMENT.items():
        os.environ.setdefault(variable, value)  # kernels inherit the runner's environment
    project_dir = Path(project_dir).resolve()
    if params is None:
        params = {"name": None, "common": {}, "notebooks": {}}
    elif not isinstance(params, dict):
        params = load_params(params)
    name = name or params.get("name") or "default"
    params = {**params, "name": name}
    notebooks_dir = Path(notebooks_dir or project_dir / "notebooks").resolve()
    notebooks = sorted(notebooks_dir.glob(NOTEBOOK_PATTERN))
    if not notebooks:
        raise ReportError(f"{notebooks_dir}: no notebooks matching {NOTEBOOK_PATTERN}")

    workspace = Workspace(project_dir, run_name=name, dataset=params["common"].get("dataset",
                                                                                    "synthetic"))
    run_dir = workspace.reports_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (run_dir / VERSIONS_FILE).write_text(json.dumps(library_versions(), indent=2) + "\n")

    runner = {"project_dir": str(project_dir), "run_name": name}
    plan, problems = plan_parameters(notebooks, params, runner)
    unwired = wiring_problems(notebooks, plan)
    if unwired:
        raise ReportError("; ".join(unwired))
    for problem in problems:
        warnings.warn(problem, UserWarning, stacklevel=2)
    result = ReportResult(name=name, run_dir=run_dir, warnings=problems)
    # The report is the parent run of what its notebooks train and evaluate.
    with tracking.report_run(name, project_dir, params, workspace.dataset) as tracked:
        bar = tqdm(notebooks, desc="report", unit="notebook", disable=not progress)
        for notebook in bar:
            bar.set_description(f"report: {notebook.stem}")
            executed = run_dir / notebook.name
            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(executed),
                    parameters=plan[notebook.name],
                    kernel_name=kernel_name,
                    cwd=str(notebooks_dir),
                    progress_bar=progress,
                    extra_arguments=list(KERNEL_ARGUMENTS),
                )
            except Exception as err:  # papermill raises its own error or a kernel failure
                message = _failure_message(notebook, err)
                _write_status(run_dir, params, [p.name for p in result.executed], message,
                              started)
                tracking.record_report(tracked, run_dir, _tracked_files(workspace, result))
                if executed.is_file():
                    notebook_to_html(executed, executed.with_suffix(".html"))
                write_index(project_dir / "reports")
                raise ReportError(message) from err
            result.executed.append(executed)
            result.html.append(notebook_to_html(executed, executed.with_suffix(".html")))
        _write_status(run_dir, params, [p.name for p in result.executed], None, started)
        tracking.record_report(tracked, run_dir, _tracked_files(workspace, result))
    result.index_html = write_index(project_dir / "reports")
    return result


#: Runs made with the test suite's settings (``params/smoke.yaml``): listed last-marked,
#: their numbers are meaningless.
TEST_RUN_NAMES = frozenset({"smoke"})
#: Figures shown as thumbnails per model, in order (``<run>/figures/<model>/<name>.png``).
THUMBNAILS: tuple[tuple[str, str], ...] = (
    ("image_confusion_matrix", "image confusion matrix"), ("image_roc", "image ROC"),
    ("confusion_matrix", "confusion matrix"), ("roc", "ROC"),
)
#: Height in CSS pixels of a thumbnail (the full figure is one click away).
THUMBNAIL_HEIGHT = 160

_INDEX_CSS = """
body { font-family: sans-serif; max-width: 72em; margin: 2em auto; padding: 0 1em; color: #222; }
section { border-top: 1px solid #ccc; padding-top: 0.5em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.test-run { background: #f7f7f7; }
.marker { color: #8b4500; font-weight: bold; }
.failure { color: #c0392b; }
figure { display: inline-block; vertical-align: top; margin: 4px 8px 4px 0; text-align: center;
         font-size: 0.8em; }
figure img { border: 1px solid #ccc; display: block; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
"""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def _number(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3f}"


def _comparison_html(table: pd.DataFrame) -> str:
    """The comparison table as HTML: one row per model, every metric the table gives an
    interval (``<name>_lower``, ``<name>_upper``) as ``value [lower, upper]`` under its
    ``metrics.json`` name, in table order (the image-level malignant ROC-AUC first)."""
    names = [c for c in table.columns if f"{c}_lower" in table and f"{c}_upper" in table]
    header = "".join(f"<th>{html.escape(name)}</th>" for name in ["model", *names])
    rows = []
    for row in table.to_dict("records"):
        cells = [f"<td><b>{html.escape(str(row['model']))}</b></td>"]
        for name in names:
            text = _number(row[name])
            if text != "n/a" and not pd.isna(row[f"{name}_lower"]):
                text += f" [{_number(row[f'{name}_lower'])}, {_number(row[f'{name}_upper'])}]"
            cells.append(f"<td>{text}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="comparison"><tr>{header}</tr>{"".join(rows)}</table>'


def _thumbnails_html(run_dir: Path, models: list[str]) -> str:
    """Per model, small copies of its confusion matrices and ROC curves, each a link to
    the full figure (relative links: the page works wherever the folder is copied)."""
    blocks = []
    for model in models:
        figures = []
        for name, title in THUMBNAILS:
            path = Workspace(run_dir.parents[1], run_dir.name).figures_dir / model / f"{name}.png"
            if path.is_file():
                link = html.escape(f"{run_dir.name}/figures/{model}/{name}.png")
                figures.append(
                    f'<figure><a href="{link}"><img class="thumbnail" src="{link}" '
                    f'height="{THUMBNAIL_HEIGHT}" alt="{html.escape(model)}: {title}"></a>'
                    f"<figcaption>{title}</figcaption></figure>"
                )
        if figures:
            blocks.append(f"<h4>{html.escape(model)}</h4>{''.join(figures)}")
    return "".join(blocks)


def _tracked_files(workspace: Workspace, result: ReportResult) -> list[Path]:
    """What a report's MLflow run keeps: its parameters, versions, status, HTML pages and
    comparison table."""
    run_dir = workspace.reports_dir
    return [run_dir / "params.yaml", run_dir / VERSIONS_FILE, run_dir / STATUS_FILE,
            *result.html, workspace.metrics_dir / COMPARISON_FILE]


def _results_html(run_dir: Path) -> str:
    """The run's protocol, comparison table and figure thumbnails, from
    ``metrics/comparison.csv`` and ``figures/``."""
    path = Workspace(run_dir.parents[1], run_dir.name).metrics_dir / COMPARISON_FILE
    if not path.is_file():
        return "<p><em>no comparison table</em></p>"
    table = pd.read_csv(path)
    if table.empty:
        return "<p><em>no models evaluated</em></p>"
    protocols = sorted(set(table["protocol"].dropna())) if "protocol" in table else []
    stated = "".join(f"<p>protocol: {html.escape(str(text))}</p>" for text in protocols)
    models = [str(model) for model in table["model"]]
    return stated + _comparison_html(table) + _thumbnails_html(run_dir, models)


def _duration(seconds) -> str:
    if seconds is None:
        return "unknown"
    minutes, rest = divmod(round(float(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _run_entry(run_dir: Path) -> str:
    """One run's section of ``reports/index.html``: data source, status, date and
    duration, the results, the notebooks, the parameters and the library versions."""
    status = _read_json(run_dir / STATUS_FILE)
    state = status.get("status", "unknown")
    dataset = str(status.get("dataset", "unknown"))
    test_run = run_dir.name in TEST_RUN_NAMES
    marker = (' <span class="marker">test run: the test suite\'s settings, numbers '
              "meaningless</span>" if test_run else "")
    links = " · ".join(
        f'<a href="{html.escape(run_dir.name)}/{html.escape(p.name)}">{html.escape(p.stem)}</a>'
        for p in sorted(run_dir.glob(NOTEBOOK_PATTERN.replace(".ipynb", ".html")))
    )
    failure = ""
    if status.get("failure"):
        failure = f'<p class="failure">{html.escape(status["failure"])}</p>'
    params_path = run_dir / "params.yaml"
    params = params_path.read_text() if params_path.is_file() else ""
    versions = _read_json(run_dir / VERSIONS_FILE)
    version_rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td>"
                           "</tr>" for k, v in versions.items())
    css = "run test-run" if test_run else "run"
    return (
        f'<section class="{css}" id="run-{html.escape(run_dir.name)}">'
        f"<h2>{html.escape(run_dir.name)}{marker}</h2>"
        f"<p>{html.escape(_plain(data_source_text(dataset)))}</p>"
        f"<p>status: <b>{html.escape(str(state))}</b> · started "
        f"{html.escape(str(status.get('started', '?')))} · finished "
        f"{html.escape(str(status.get('finished', '?')))} · duration "
        f"{_duration(status.get('duration_s'))}</p>{failure}"
        f"{_results_html(run_dir)}"
        f"<p>notebooks: {links or '<em>no HTML reports</em>'}</p>"
        f"<details><summary>parameters</summary><pre>{html.escape(params)}</pre></details>"
        f"<details><summary>library versions</summary><table>{version_rows}</table></details>"
        f"{tracking.runs_html(run_dir)}</section>"
    )


def _plain(markdown: str) -> str:
    """Markdown emphasis and code marks removed (the data-source text in plain words)."""
    return markdown.replace("**", "").replace("`", "")


def _finished(run_dir: Path) -> str:
    """The sort key of a run: when it finished (ISO time; empty, hence last, if unknown)."""
    status = _read_json(run_dir / STATUS_FILE)
    return str(status.get("finished") or "")


def render_index(runs: list[Path]) -> str:
    """``reports/index.html`` for ``runs`` (already in display order): a static page with
    relative links only, so it makes no network request and can be forwarded as a folder."""
    body = "".join(_run_entry(run) for run in runs) or "<p>No reports yet.</p>"
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Mammography reports</title>"
        f"<style>{_INDEX_CSS}</style></head><body>"
        f"<h1>Mammography workbench reports</h1>{body}</body></html>\n"
    )


def write_index(reports_dir: str | Path) -> Path:
    """Rewrite ``reports/index.html``: every run (a folder with params.yaml), newest
    first, the test suite's runs (:data:`TEST_RUN_NAMES`) after the others and marked."""
    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    runs = sorted((p.parent for p in reports_dir.glob("*/params.yaml")), key=_finished,
                  reverse=True)
    runs.sort(key=lambda run: run.name in TEST_RUN_NAMES)
    path = reports_dir / "index.html"
    path.write_text(render_index(runs), encoding="utf-8")
    return path
