"""The six notebooks as one set: shared parameters, setup cell, stripped outputs, params files.

These checks read the notebooks without running them (nbval and the smoke report do that).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from mammo_utils.report import load_params, plan_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("0[1-6]_*.ipynb"))

#: Every notebook declares these, with these defaults.
SHARED = {
    "project_dir": '".."', "run_name": '"notebook"', "dataset": '"synthetic"', "data_root": '""',
    "synth_patients": "24", "synth_seed": "0", "synth_size": '"small"', "seed": "0",
}
#: Notebooks 02 to 06 work on processed data and also declare these.
TASK = {"task": '"roi"', "size": "64", "working_size": "[320, 256]"}
#: The data-building code that lives in mammo_utils.workflow, not in a notebook.
FALLBACK_CALLS = ("generate_dataset(", "run_preprocess(", "ingest(", "PreprocessConfig(")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _code(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def test_there_are_six_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_shared_parameters_have_one_name_and_default(path):
    declared = papermill.inspect_notebook(str(path))
    expected = SHARED | (TASK if path.stem >= "02" else {})
    if path.stem >= "03":
        expected["label_scheme"] = '"four_class"'
    assert {name: declared[name]["default"] for name in expected if name in declared} == expected


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cell_builds_settings_and_shows_the_banner(path):
    first, second = _code(_read(path))[:2]
    assert first.metadata.get("tags") == ["parameters"]
    assert "settings = DataSettings(" in second.source
    assert "ws = settings.workspace" in second.source
    assert second.source.rstrip().endswith("data_source_banner(dataset)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_and_stripped(path):
    nb = _read(path)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in _code(nb):
        assert not cell.outputs and cell.execution_count is None, cell.source[:60]
        for call in FALLBACK_CALLS:
            assert call not in cell.source, (call, cell.source)
    assert sum(cell.cell_type == "markdown" for cell in nb.cells) >= 4


@pytest.mark.parametrize("path", sorted((REPO / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_params_files_only_use_declared_names(path):
    _, problems = plan_parameters(NOTEBOOKS, load_params(path),
                                  {"project_dir": str(REPO), "run_name": "check"})
    assert problems == []
