"""A processed synthetic folder in the workspace layout, and the training range it gives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mammo_utils.domain import training_range
from mammo_utils.ingest import INDEX_FILE
from mammo_utils.preprocess import CONFIG_FILE, MANIFEST_FILE


@pytest.fixture(scope="session")
def workspace_roi_data(synthetic_roi_data, synthetic_ingest, tmp_path_factory) -> Path:
    """``data/processed/synthetic/roi-64/`` (manifest and config) beside
    ``data/interim/synthetic/index.csv``, copied from the synthetic fixtures."""
    project = tmp_path_factory.mktemp("project")
    interim = project / "data" / "interim" / "synthetic"
    processed = project / "data" / "processed" / "synthetic" / "roi-64"
    interim.mkdir(parents=True)
    processed.mkdir(parents=True)
    shutil.copy(Path(synthetic_ingest) / INDEX_FILE, interim / INDEX_FILE)
    for name in (MANIFEST_FILE, CONFIG_FILE):
        shutil.copy(synthetic_roi_data / name, processed / name)
    return processed


@pytest.fixture(scope="session")
def synthetic_training_range(workspace_roi_data) -> dict:
    """The training range of the synthetic roi folder, as training records it."""
    import pandas as pd

    return training_range(pd.read_csv(workspace_roi_data / MANIFEST_FILE), workspace_roi_data)
