"""The smoke report: `mammo report --params params/smoke.yaml` once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mammo_utils import tracking
from mammo_utils.report import run_report

REPO = Path(__file__).resolve().parents[1]
TF_LOG_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


@pytest.fixture(scope="session")
def smoke_report(tmp_path_factory):
    """``(result, project_dir)`` of the smoke report run end to end on the real notebooks
    in a fresh project folder (minutes: depend on it only from ``slow`` tests).

    It runs without the caller's ``TF_CPP_MIN_LOG_LEVEL`` (``make`` exports one), as
    ``mammo report`` typed in a fresh shell does: the runner alone must keep the
    notebooks clean. Tracking is on, into the session's throwaway store
    (tests/conftest.py), so the report's MLflow runs can be checked.
    """
    project = tmp_path_factory.mktemp("smoke_project")
    saved = os.environ.pop(TF_LOG_VARIABLE, None)
    switch = os.environ.get(tracking.SWITCH_VARIABLE)
    os.environ[tracking.SWITCH_VARIABLE] = "on"
    try:
        result = run_report(REPO / "params" / "smoke.yaml", "smoke", project_dir=project,
                            notebooks_dir=REPO / "notebooks", progress=False)
    finally:
        os.environ.pop(TF_LOG_VARIABLE, None)
        os.environ.pop(tracking.SWITCH_VARIABLE, None)
        if switch is not None:
            os.environ[tracking.SWITCH_VARIABLE] = switch
        if saved is not None:
            os.environ[TF_LOG_VARIABLE] = saved
    return result, project
