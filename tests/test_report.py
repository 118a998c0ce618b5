"""The papermill report runner on throwaway notebooks, and the real smoke report."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml

from mammo_utils import tracking
from mammo_utils.cli import main
from mammo_utils.provenance import data_source_text
from mammo_utils.report import (
    ReportError,
    load_params,
    run_report,
    write_index,
)

REPO = Path(__file__).resolve().parents[1]


def _notebook(path: Path, parameters: str, *cells: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    first = nbformat.v4.new_code_cell(parameters)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), first]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, str(path))


LOG = (
    "from pathlib import Path\n"
    "import json\n"
    "log = Path(project_dir) / 'order.log'\n"
    "log.write_text(log.read_text() + '{name} ' if log.exists() else '{name} ')\n"
    "Path(project_dir, '{name}.json').write_text(json.dumps({params}))\n"
    "print('cwd', Path.cwd().name)\n"
)


@pytest.fixture
def project(tmp_path) -> Path:
    """A project with three notebooks: 02 writes a comparison table, 03 declares fewer params."""
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    _notebook(nb_dir / "01_first.ipynb",
              "project_dir = '..'\nrun_name = 'x'\ndataset = 'synthetic'\nalpha = 1",
              LOG.format(name="01", params="dict(alpha=alpha, dataset=dataset)"),
              "SECRET_SOURCE_TOKEN = alpha * 2\nprint('visible output', SECRET_SOURCE_TOKEN)")
    _notebook(nb_dir / "02_second.ipynb",
              "project_dir = '..'\nrun_name = 'x'\nbeta = 'b'",
              LOG.format(name="02", params="dict(beta=beta, run_name=run_name)"),
              "from mammo_utils.workspace import Workspace\n"
              "ws = Workspace(project_dir, run_name)\n"
              "ws.metrics_dir.mkdir(parents=True, exist_ok=True)\n"
              "(ws.metrics_dir / 'comparison.csv').write_text("
              "'model,accuracy,accuracy_lower,accuracy_upper,malignant_roc_auc,"
              "malignant_roc_auc_lower,malignant_roc_auc_upper,ece\\n"
              "cnn,0.75,0.6,0.9,0.8125,,,0.1\\n')")
    _notebook(nb_dir / "03_third.ipynb", "project_dir = '..'",
              LOG.format(name="03", params="dict(project_dir=project_dir)"))
    return tmp_path


def _params(**notebooks) -> dict:
    return {"name": "t", "common": {"dataset": "synthetic", "alpha": 5}, "notebooks": notebooks}


def test_runs_in_order_with_filtered_parameters(project):
    params = _params(**{"02_second": {"beta": "given"}})
    params["common"]["unused_key"] = 1
    with pytest.warns(UserWarning, match="unused_key"):
        result = run_report(params, "run1", project_dir=project, progress=False)
    assert (project / "order.log").read_text() == "01 02 03 "
    assert json.loads((project / "01.json").read_text()) == {"alpha": 5, "dataset": "synthetic"}
    assert json.loads((project / "02.json").read_text()) == {"beta": "given", "run_name": "run1"}
    # project_dir reaches every notebook as an absolute path.
    assert json.loads((project / "03.json").read_text()) == {"project_dir": str(project)}
    run_dir = project / "reports" / "run1"
    assert [p.name for p in result.executed] == ["01_first.ipynb", "02_second.ipynb",
                                                 "03_third.ipynb"]
    executed = nbformat.read(str(run_dir / "01_first.ipynb"), as_version=4)
    assert "cwd notebooks" in json.dumps(executed.cells[-2].outputs)
    assert yaml.safe_load((run_dir / "params.yaml").read_text())["name"] == "run1"
    assert "python" in json.loads((run_dir / "versions.json").read_text())
    assert json.loads((run_dir / "status.json").read_text())["status"] == "complete"


def test_html_has_outputs_but_no_code(project):
    run_report(_params(), "run2", project_dir=project, progress=False)
    page = (project / "reports" / "run2" / "01_first.html").read_text()
    assert "visible output 10" in page
    assert "SECRET_SOURCE_TOKEN" not in page


def test_unknown_notebook_parameter_warns(project):
    with pytest.warns(UserWarning, match="03_third does not declare parameter 'gamma'"):
        run_report(_params(**{"03_third": {"gamma": 1}}), "run3", project_dir=project,
                   progress=False)


def test_index_lists_runs_with_headline_numbers(project):
    run_report(_params(), "run4", project_dir=project, progress=False)
    (project / "reports" / "empty").mkdir()
    page = write_index(project / "reports").read_text()
    assert "run4" in page and "empty" not in page
    assert "accuracy 0.750 [0.600, 0.900]" in page
    assert "malignant_roc_auc 0.812," not in page and "malignant_roc_auc 0.812</li>" in page
    assert "ece 0.1" not in page  # no interval: not a headline number
    assert 'href="run4/01_first.html"' in page
    assert "not clinical results" in page


def test_failing_notebook_stops_with_name_and_cell(project):
    nb_dir = project / "notebooks"
    _notebook(nb_dir / "02_second.ipynb", "project_dir = '..'",
              LOG.format(name="02", params="{}"),
              "raise ValueError('planted failure')")
    with pytest.raises(ReportError) as info:
        run_report(_params(), "bad", project_dir=project, progress=False)
    message = str(info.value)
    assert "02_second.ipynb" in message
    assert "cell" in message and "planted failure" in message
    assert "raise ValueError" in message
    run_dir = project / "reports" / "bad"
    assert (run_dir / "01_first.ipynb").is_file() and (run_dir / "01_first.html").is_file()
    assert not (run_dir / "03_third.ipynb").exists()
    assert (project / "order.log").read_text() == "01 02 "
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and status["completed_notebooks"] == ["01_first.ipynb"]
    assert "planted failure" in (project / "reports" / "index.html").read_text()


def test_cli_report_exit_status(project, capsys):
    _notebook(project / "notebooks" / "03_third.ipynb", "project_dir = '..'", "1 / 0")
    params = project / "p.yaml"
    params.write_text(yaml.safe_dump({"name": "cli", "common": {"alpha": 2}}))
    status = main(["report", "--params", str(params), "--project-dir", str(project)])
    assert status == 1
    assert "03_third.ipynb" in capsys.readouterr().err
    assert (project / "reports" / "cli" / "02_second.html").is_file()


def test_load_params_refuses_bad_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncomon: {}\n")
    with pytest.raises(ReportError, match="unknown top-level keys"):
        load_params(bad)


@pytest.mark.parametrize("path", sorted((REPO / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_params_files_load(path):
    params = load_params(path)
    assert params["name"] and params["common"]["dataset"]


def test_data_source_text():
    assert "not clinical results" in data_source_text("synthetic")
    assert "CBIS-DDSM" in data_source_text("cbis-ddsm")
    assert "shortcut audit" in data_source_text("cbis-ddsm+mias")


@pytest.mark.slow
def test_smoke_report_produces_every_file(tmp_path, monkeypatch):
    """`mammo report --params params/smoke.yaml` end to end on the real notebooks."""
    monkeypatch.setenv(tracking.SWITCH_VARIABLE, "on")  # into the session's throwaway store
    notebooks = sorted((REPO / "notebooks").glob("0[1-6]_*.ipynb"))
    assert len(notebooks) == 6, f"expected notebooks 01-06, found {[p.name for p in notebooks]}"
    result = run_report(REPO / "params" / "smoke.yaml", "smoke", project_dir=tmp_path,
                        notebooks_dir=REPO / "notebooks", progress=False)
    run_dir = tmp_path / "reports" / "smoke"
    for notebook in notebooks:
        assert (run_dir / notebook.name).is_file()
        assert (run_dir / notebook.with_suffix(".html").name).is_file()
    for name in ("params.yaml", "versions.json", "status.json", "metrics/comparison.csv",
                 "metrics/comparison.md", "metrics/audit.json"):
        assert (run_dir / name).is_file(), name
    assert list(run_dir.glob("metrics/*/metrics.json"))
    assert list(run_dir.glob("metrics/*/predictions.csv"))
    assert list(run_dir.glob("figures/*/confusion_matrix.png"))
    assert list(run_dir.glob("figures/*/roc.png"))
    assert result.index_html == tmp_path / "reports" / "index.html"
    assert "smoke" in result.index_html.read_text()
    # The report is an MLflow run (in the session's throwaway store, tests/conftest.py)
    # with the trainings of 03 and 04 and the evaluations of 05 as its children.
    runs = tracking.read_runs_file(run_dir)
    kinds = sorted(child["kind"] for child in runs["children"])
    assert kinds == ["evaluation", "evaluation", "training", "training"], runs
    assert all(child["status"] == "FINISHED" for child in runs["children"])
    assert runs["parent_run_id"] in result.index_html.read_text()
    assert not (tmp_path / "reports" / "mlflow").exists()  # not the project's own store
