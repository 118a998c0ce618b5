"""Synthetic-data fixtures shared by every stage's tests.

``synthetic_root`` is one small synthetic CBIS-DDSM set generated once per test
session: stage tests (ingest, preprocess, training smoke tests) build on it
instead of on a download.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo_utils.synth import generate_dataset

#: Parameters of the shared set: 16 patients, seed 0, small images.
SYNTHETIC_PARAMETERS = {"patients": 16, "seed": 0, "size": "small"}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a generated synthetic CBIS-DDSM set (CSVs, metadata.csv, CBIS-DDSM/)."""
    out = tmp_path_factory.mktemp("synthetic") / "synthetic"
    generate_dataset(out, progress=False, **SYNTHETIC_PARAMETERS)
    return out
