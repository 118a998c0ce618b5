"""``mammo ui``: the MLflow UI over the project's tracking store, on this machine only."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from mammo_utils import tracking
from mammo_utils.cli._ranges import integer

NAME = "ui"
HELP = "Serve the MLflow UI over the runs of this project (127.0.0.1; Ctrl-C stops it)."
ORDER = 90


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-dir", type=Path, default=Path("."),
                        help="project folder whose reports/mlflow/mlflow.db is served "
                        "(MLFLOW_TRACKING_URI, when set, is served instead)")
    parser.add_argument("--port", type=integer(1, 65535), default=5000, help="port (default 5000)")


def run(args: argparse.Namespace) -> int:
    print(f"MLflow UI over {tracking.store_uri(args.project_dir)}: "
          f"http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    server = tracking.start_ui(args.project_dir, port=args.port)
    try:
        return server.wait()
    except KeyboardInterrupt:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        return 0
