"""Experiment tracking: what a training, an evaluation and a report record in MLflow,
the UI over the store, and trainings that survive a broken store.

Every run here goes to the session's throwaway store (tests/conftest.py) or to a store
made for one test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from mammo_utils import tracking
from mammo_utils.training_config import TrainingConfig

TINY = TrainingConfig(epochs=2, batch_size=8, seed=0, patience=5)


@pytest.fixture(scope="module", autouse=True)
def tracking_on():
    """Tracking on for this module (tests/conftest.py turns it off for the rest), still
    into the session's throwaway store."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(tracking.SWITCH_VARIABLE, "on")
        yield


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking.store_uri())


def _only_run(experiment: str, kind: str):
    client = _client()
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {tracking.store_uri()}"
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.kind = '{kind}'")
    assert len(runs) == 1, [run.info.run_name for run in runs]
    return runs[0]


@pytest.fixture(scope="module")
def tracked_training(tiny_roi_data, tmp_path_factory):
    """A two-epoch baseline trained into ``<project>/models/tracked/baseline``."""
    from mammo_utils.train import train

    project = tmp_path_factory.mktemp("tracked_project")
    return train(tiny_roi_data, project / "models" / "tracked" / "baseline", TINY, verbose=0)


def test_store_is_the_project_file_unless_a_uri_is_given(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.URI_VARIABLE)
    assert tracking.store_uri(tmp_path) == f"sqlite:///{tmp_path / 'reports/mlflow/mlflow.db'}"
    monkeypatch.setenv(tracking.URI_VARIABLE, "http://mlflow.example:5000")
    assert tracking.store_uri(tmp_path) == "http://mlflow.example:5000"


def test_run_folders_name_their_project_and_experiment(tmp_path):
    model_dir = tmp_path / "models" / "default" / "baseline"
    assert tracking.project_of(model_dir) == tmp_path
    assert tracking.experiment_of(model_dir) == "default"
    assert tracking.project_of(tmp_path / "reports" / "smoke") == tmp_path
    assert tracking.experiment_of(tmp_path / "reports" / "smoke") == "smoke"
    assert tracking.experiment_of(tmp_path / "elsewhere") == "elsewhere"


# pyfunc hands Keras the batch as a one-element list; Keras says so and predicts alike.
@pytest.mark.filterwarnings("ignore:The structure of `inputs` doesn't match")
def test_training_records_params_epochs_tags_artifacts_and_the_model(tracked_training,
                                                                      tiny_roi_data):
    import mlflow.keras
    import mlflow.pyfunc

    from mammo_utils.model_card import load_model_dir

    run = _only_run("tracked", "training")
    assert run.info.status == "FINISHED" and run.info.run_name == "baseline"
    experiment = _client().get_experiment(run.info.experiment_id)
    assert experiment.tags.items() >= tracking.EXPERIMENT_KIND_TAGS.items()  # UI: runs first
    params = run.data.params
    assert params["training.epochs"] == "2" and params["training.architecture"] == "baseline"
    assert params["training.seed"] == "0" and params["preprocessing.size"] == "32"
    assert params["data.split_sha256"] == tracked_training.card.data["split_sha256"]
    tags = run.data.tags
    assert tags["dataset"] == "known-answer" and tags["synthetic"] == "false"
    assert tags["task"] == "roi" and tags["architecture"] == "baseline"
    commit = tracking.git_commit()
    assert tags.get(tracking.COMMIT_TAG) == commit and (commit is None or len(commit) == 40)

    history = _client().get_metric_history(run.info.run_id, "val_loss")
    assert [point.step for point in history] == [0, 1]
    np.testing.assert_allclose([point.value for point in history],
                               tracked_training.history["val_loss"], rtol=1e-6)
    assert run.data.metrics["best_epoch"] == tracked_training.card.best_epoch

    names = {item.path for item in _client().list_artifacts(run.info.run_id)}
    assert {"model_card.json", "history.csv", "model"} <= names
    model, card = load_model_dir(tracked_training.model_dir)
    images = np.random.default_rng(0).random((5, card.image_size, card.image_size, 1),
                                             dtype=np.float32)
    expected = model.predict(images, verbose=0)
    uri = f"runs:/{run.info.run_id}/{tracking.MODEL_ARTIFACT}"
    np.testing.assert_allclose(mlflow.keras.load_model(uri).predict(images, verbose=0),
                               expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(mlflow.pyfunc.load_model(uri).predict(images)),
                               expected, rtol=1e-5, atol=1e-6)


def test_evaluation_records_every_computed_level(tracked_training, tiny_roi_data):
    from mammo_utils.evaluate import evaluate_model

    out = tracked_training.model_dir.parents[2] / "reports" / "tracked"
    result = evaluate_model(tracked_training.model_dir, tiny_roi_data, "test", out,
                            n_bootstrap=20, make_figures=False, progress=False)
    run = _only_run("tracked", "evaluation")
    assert run.data.tags["split"] == "test" and run.data.params["n_bootstrap"] == "20"
    patch = result.metrics["levels"]["patch"]
    metrics = run.data.metrics
    assert metrics["patch.accuracy"] == pytest.approx(patch["accuracy"])
    assert metrics["patch.n_images"] == patch["n_images"]
    interval = patch["bootstrap"]["intervals"]["accuracy"]
    assert metrics["patch.accuracy_lower"] == pytest.approx(interval["lower"])
    # The known-answer patches have no ingest index: no image level, nothing logged for it.
    assert "not_applicable" in result.metrics["levels"]["image"]
    assert not any(name.startswith(("image.", "breast.")) for name in metrics)
    names = {item.path for item in _client().list_artifacts(run.info.run_id, "baseline")}
    assert "baseline/metrics.json" in names


def test_a_training_that_crashes_closes_its_run_as_failed(tiny_roi_data, tmp_path):
    """A crash mid-training leaves a FAILED run in the store, not one RUNNING forever."""
    import keras

    from mammo_utils.train import train

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        train(tiny_roi_data, tmp_path / "models" / "crashing" / "baseline", TINY, verbose=0,
              callbacks=[Crash()])
    run = _only_run(tracking.experiment_of(tmp_path / "models" / "crashing" / "baseline"),
                    "training")
    assert run.info.status == "FAILED"


def test_unreachable_store_warns_once_and_training_still_writes(tiny_roi_data, tmp_path,
                                                                monkeypatch):
    from mammo_utils.model_card import CARD_FILE, MODEL_FILE
    from mammo_utils.train import train

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(tracking.URI_VARIABLE, f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(tiny_roi_data, tmp_path / "model", dataclasses.replace(TINY, epochs=1),
                       verbose=0)
    tracking_warnings = [w for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(tracking_warnings) == 1, [str(w.message) for w in tracking_warnings]
    assert f"127.0.0.1:{port}" in str(tracking_warnings[0].message)
    assert (result.model_dir / MODEL_FILE).is_file() and (result.model_dir / CARD_FILE).is_file()


def test_locked_store_warns_once_and_the_run_goes_quiet(tmp_path, monkeypatch):
    database = tmp_path / "locked.db"
    database.write_text("this is not a SQLite database")
    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{database}")
    with pytest.warns(tracking.TrackingWarning, match="locked.db"):
        run = tracking.TrackedRun.start("training", "x", name="x", params={"a": 1})
    assert not run.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run.log_metrics({"loss": 1.0})
        run.finish()


def test_tracking_off_records_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{tmp_path / 'off.db'}")
    monkeypatch.setenv(tracking.SWITCH_VARIABLE, "off")
    run = tracking.TrackedRun.start("training", "x", name="x")
    assert not run.active and not (tmp_path / "off.db").exists()


def test_cli_no_track_turns_tracking_off_for_the_process(monkeypatch):
    from mammo_utils.cli import build_parser

    monkeypatch.setenv(tracking.SWITCH_VARIABLE, "on")  # restored afterwards
    assert tracking.enabled()
    args = build_parser().parse_args(["report", "--no-track", "--params", "missing.yaml"])
    monkeypatch.setattr("mammo_utils.report.run_report",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("stop here")))
    with pytest.raises(AssertionError, match="stop here"):
        args.handler(args)
    assert not tracking.enabled()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_ui_serves_the_store_and_its_rest_api_lists_the_runs(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{tmp_path / 'ui.db'}")
    run = tracking.TrackedRun.start("training", "ui-check", name="shown", params={"a": 1})
    run.log_metrics({"loss": 0.5}, step=0)
    run.finish()
    port = _free_port()
    server = tracking.start_ui(tmp_path, port=port, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(base + "/", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, "the MLflow UI exited"
                assert time.monotonic() < deadline, "the MLflow UI did not answer in 120 s"
                time.sleep(1)
        experiment = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name"
                          "?experiment_name=ui-check")["experiment"]
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            runs = json.loads(response.read())["runs"]
        assert [found["info"]["run_id"] for found in runs] == [run.run_id]
        assert runs[0]["info"]["run_name"] == "shown"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    with pytest.raises(OSError):  # nothing answers any more
        urllib.request.urlopen(base + "/", timeout=5)


def test_runs_table_lists_an_experiment(monkeypatch, tmp_path):
    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{tmp_path / 'table.db'}")
    parent = tracking.TrackedRun.start("report", "table", name="report")
    child = tracking.TrackedRun.start("training", "ignored", name="baseline",
                                      parent_id=parent.run_id)
    child.log_metrics({"best_epoch": 3})
    child.finish()
    parent.finish()
    table = tracking.runs_table("table", tmp_path)
    assert list(table["name"]) == ["baseline", "report"]
    assert table["parent"].iloc[0] == parent.run_id and table["parent"].isna().iloc[1]
    assert table.loc[table["name"] == "baseline", "best_epoch"].item() == 3
    assert tracking.runs_table("no-such-experiment", tmp_path).empty
    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{tmp_path / 'missing.db'}")
    assert tracking.runs_table("table", tmp_path).empty
    assert not (tmp_path / "missing.db").exists()


def test_report_env_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{tmp_path / 'r.db'}")
    monkeypatch.delenv(tracking.PARENT_VARIABLE, raising=False)
    params = {"name": "r", "common": {}, "notebooks": {}, "tracking": {"enabled": False}}
    with tracking.report_run("r", tmp_path, params, "synthetic") as run:
        assert not run.active and not tracking.enabled()
    assert tracking.enabled() and tracking.PARENT_VARIABLE not in os.environ
    assert Path(tmp_path / "r.db").exists() is False


def test_report_is_the_parent_of_the_runs_its_notebooks_start(tmp_path, monkeypatch):
    """The report's run id reaches the notebooks' kernels; their runs are its children,
    and the report folder and its index entry name them."""
    import nbformat

    from mammo_utils.report import run_report

    monkeypatch.setenv(tracking.URI_VARIABLE, f"sqlite:///{tmp_path / 'report.db'}")
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    parameters = nbformat.v4.new_code_cell("project_dir = '..'\ndataset = 'synthetic'")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(
        "from mammo_utils.tracking import TrackedRun\n"
        "TrackedRun.start('training', 'not-the-report', name='child').finish()")]
    nbformat.write(nb, str(notebooks / "01_child.ipynb"))
    run_report({"name": "parent", "common": {"dataset": "synthetic"}, "notebooks": {}},
               project_dir=tmp_path, progress=False)

    record = tracking.read_runs_file(tmp_path / "reports" / "parent")
    parent = _client().get_run(record["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["kind"] == "report"
    assert parent.data.tags["synthetic"] == "true"
    assert [child["name"] for child in record["children"]] == ["child"]
    child = _client().get_run(record["children"][0]["run_id"])
    assert child.data.tags[tracking.PARENT_TAG] == parent.info.run_id
    assert child.info.experiment_id == parent.info.experiment_id
    artifacts = {item.path for item in _client().list_artifacts(parent.info.run_id)}
    assert {"params.yaml", "status.json", "01_child.html"} <= artifacts
    index = (tmp_path / "reports" / "index.html").read_text()
    assert parent.info.run_id in index and child.info.run_id in index
    assert tracking.PARENT_VARIABLE not in os.environ
