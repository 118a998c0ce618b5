"""``mammo report``: regenerate every notebook report of a run with papermill."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mammo_utils import tracking

NAME = "report"
HELP = "Run notebooks 01-06 headlessly into reports/<name>/ (notebooks, HTML, figures, metrics)."
ORDER = 70


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params/default.yaml"),
                        help="parameters YAML (name, common, notebooks); default %(default)s")
    parser.add_argument("--name", default=None, help="run name (default: the file's `name`)")
    parser.add_argument("--project-dir", type=Path, default=Path("."),
                        help="project folder holding notebooks/, data/, models/, reports/")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    parser.add_argument("--no-track", action="store_true",
                        help="record no MLflow run (default: the project's store, or "
                        "MLFLOW_TRACKING_URI)")


def run(args: argparse.Namespace) -> int:
    if args.no_track:
        tracking.turn_off()
    from mammo_utils.report import ReportError, run_report

    # The notebook kernels inherit this: TensorFlow's start-up chatter stays out of reports.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    params = args.params if args.params.is_absolute() else args.project_dir / args.params
    try:
        result = run_report(params, args.name, project_dir=args.project_dir,
                            kernel_name=args.kernel)
    except ReportError as err:
        print(f"mammo report: {err}", file=sys.stderr)
        return 1
    print(f"report {result.name}: {len(result.executed)} notebooks in {result.run_dir}")
    print(f"index: {result.index_html}")
    return 0
