"""The papermill report runner on throwaway notebooks, and the real smoke report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from mammo_utils import tracking
from mammo_utils.cli import main
from mammo_utils.provenance import data_source_text
from mammo_utils.report import (
    TEST_RUN_NAMES,
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
    assert "<th>accuracy</th><th>malignant_roc_auc</th>" in page
    assert "<td>0.750 [0.600, 0.900]</td><td>0.812</td>" in page  # no interval: value alone
    assert "<th>ece</th>" not in page  # no interval: not a headline number
    assert 'href="run4/01_first.html"' in page
    assert "not clinical results" in page
    assert "alpha: 5" in page and "library versions" in page and "duration " in page


def test_index_puts_the_newest_run_first_and_test_runs_last_marked(tmp_path):
    finished = {"older": "2026-01-01T10:00:00+00:00", "smoke": "2026-03-01T10:00:00+00:00",
                "newer": "2026-02-01T10:00:00+00:00"}
    for name, when in finished.items():
        run_dir = tmp_path / "reports" / name
        run_dir.mkdir(parents=True)
        (run_dir / "params.yaml").write_text(f"name: {name}\n")
        (run_dir / "status.json").write_text(json.dumps({"finished": when, "duration_s": 61}))
    page = write_index(tmp_path / "reports").read_text()
    assert "duration 1 min 1 s" in page
    assert page.index("<h2>newer") < page.index("<h2>older") < page.index("<h2>smoke")
    assert "smoke" in TEST_RUN_NAMES
    smoke = page[page.index("<h2>smoke"):]
    assert smoke.startswith('<h2>smoke <span class="marker">test run')
    assert "test run" not in page[:page.index("<h2>smoke")]


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
def test_smoke_report_produces_every_file(smoke_report):
    """`mammo report --params params/smoke.yaml` end to end on the real notebooks."""
    result, project = smoke_report
    notebooks = sorted((REPO / "notebooks").glob("0[1-6]_*.ipynb"))
    assert len(notebooks) == 6, f"expected notebooks 01-06, found {[p.name for p in notebooks]}"
    run_dir = project / "reports" / "smoke"
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
    assert result.index_html == project / "reports" / "index.html"
    assert "smoke" in result.index_html.read_text()
    cards = sorted((project / "models" / "smoke").glob("*/model_card.json"))
    assert cards
    for card in cards:  # training recorded the range the demo checks uploads against
        trained = json.loads(card.read_text())["training_range"]
        assert trained["datasets"] == ["synthetic"] and trained["synthetic"] is True
        assert trained["formats"] == ["dicom"] and trained["headers_read"] > 0
        assert trained["breast_rows"] and trained["image_rows"] and trained["views"]
    # The report is an MLflow run (in the session's throwaway store, tests/conftest.py)
    # with the trainings of 03 and 04 and the evaluations of 05 as its children.
    runs = tracking.read_runs_file(run_dir)
    kinds = sorted(child["kind"] for child in runs["children"])
    assert kinds == ["evaluation", "evaluation", "training", "training"], runs
    assert all(child["status"] == "FINISHED" for child in runs["children"])
    assert runs["parent_run_id"] in result.index_html.read_text()
    assert not (project / "reports" / "mlflow").exists()  # not the project's own store


#: Text that must never reach a report: TensorFlow/absl/oneDNN start-up lines and the
#: kernel's own transport warnings.
NOISE = re.compile(
    r"oneDNN|absl::|cpu_feature_guard|TensorFlow binary is optimized|"
    r"cuda_|Unable to register cu|without encryption|IPKernelApp|Debugger warning",
    re.IGNORECASE,
)


def _output_texts(output) -> list[str]:
    if output.get("output_type") == "stream":
        return [output.get("text", "")]
    if output.get("output_type") == "error":
        return ["\n".join(output.get("traceback", []))]
    data = output.get("data", {})
    return [str(data[key]) for key in ("text/plain", "text/html", "text/markdown") if key in data]


@pytest.mark.slow
def test_smoke_report_outputs_are_free_of_start_up_noise(smoke_report):
    """Every output of every executed notebook, and every HTML copy: no stderr block,
    no TensorFlow/absl/oneDNN start-up text, no kernel transport warning."""
    _, project = smoke_report
    run_dir = project / "reports" / "smoke"
    executed = sorted(run_dir.glob("*.ipynb"))
    assert len(executed) == 6
    checked = 0
    for path in executed:
        notebook = nbformat.read(str(path), as_version=4)
        for number, cell in enumerate(notebook.cells):
            for output in cell.get("outputs", []):
                checked += 1
                where = f"{path.name} cell {number}"
                assert output.get("name") != "stderr", f"{where}: {output.get('text', '')[:300]}"
                for text in _output_texts(output):
                    assert not NOISE.search(text), f"{where}: {NOISE.search(text).group(0)}"
    assert checked > 20
    for page in [*sorted(run_dir.glob("*.html")), project / "reports" / "index.html"]:
        text = page.read_text()
        assert not NOISE.search(text), f"{page.name}: {NOISE.search(text).group(0)}"
        assert "output_stderr" not in text, page.name


@pytest.mark.slow
def test_smoke_index_lists_the_comparison_thumbnails_and_run_facts(smoke_report):
    _, project = smoke_report
    page = (project / "reports" / "index.html").read_text()
    run_dir = project / "reports" / "smoke"
    models = sorted(p.name for p in (run_dir / "metrics").iterdir() if p.is_dir())
    assert models
    assert 'class="comparison"' in page and "<th>image_malignant_roc_auc</th>" in page
    for model in models:
        for figure in ("confusion_matrix", "roc"):
            link = f"smoke/figures/{model}/{figure}.png"
            assert f'<a href="{link}"><img class="thumbnail" src="{link}"' in page
            assert (project / "reports" / link).is_file()
    assert "test run" in page and "synthetic" in page and "protocol: " in page
    assert "duration " in page and "duration unknown" not in page
    assert "library versions" in page and "tensorflow" in page
    assert "parameters" in page and "synth_patients: 24" in page
    assert "http://" not in page and "https://" not in page
