"""Experiment tracking: every training, evaluation and report recorded as an MLflow run.

A :class:`TrackedRun` is one MLflow run written through an explicit ``MlflowClient``
(no process-wide active run): parameters, tags, per-epoch metrics (:meth:`keras_callback`),
final metrics, artifacts and the model itself as an MLflow model of the ``keras``
flavour, which ``mlflow.keras.load_model`` and ``mlflow.pyfunc.load_model`` load back.
Tracking never costs the work it records: the first failure of a run (a locked or
unreachable store, say) is one :class:`TrackingWarning`, and the run then does nothing.

Where runs go (:func:`store_uri`): ``MLFLOW_TRACKING_URI`` when set (a team's server, a
database), else one SQLite file in the project, ``reports/mlflow/mlflow.db``, with the
artifacts beside it in ``reports/mlflow/artifacts/``. ``MAMMO_TRACKING=off`` turns
tracking off (``--no-track`` on the command line sets it). A run of ``models/<run>/``
or ``reports/<run>/`` goes to the experiment ``<run>``; a run started while
``MAMMO_TRACKING_PARENT`` names a run (the report sets it for its notebooks) is that
run's child, in its experiment.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Set to ``off`` (or ``0``, ``false``, ``no``) to record nothing.
SWITCH_VARIABLE = "MAMMO_TRACKING"
#: MLflow's own variable: the store to use instead of the project's SQLite file.
URI_VARIABLE = "MLFLOW_TRACKING_URI"
#: The run id of a parent run (a report) whose children are started in other processes.
PARENT_VARIABLE = "MAMMO_TRACKING_PARENT"
#: The project's default store, relative to the project folder.
STORE_DIR = Path("reports") / "mlflow"
STORE_FILE = "mlflow.db"
#: Artifacts of a SQLite store's experiments live beside the database file, in this folder.
ARTIFACTS_DIR = "artifacts"
#: In ``reports/<run>/``: the MLflow run ids of that report (parent and children).
RUNS_FILE = "mlflow_runs.json"
#: Artifact folder of the logged MLflow model.
MODEL_ARTIFACT = "model"
#: The tag MLflow reads to nest a run under its parent.
PARENT_TAG = "mlflow.parentRunId"
#: The tag MLflow's UI shows as the source version.
COMMIT_TAG = "mlflow.source.git.commit"
#: The experiment tag that makes MLflow's UI open an experiment on its runs (model
#: training) rather than on GenAI traces.
EXPERIMENT_KIND_TAGS = {"mlflow.experimentKind": "custom_model_development"}

_OFF = {"off", "0", "false", "no"}
_MAX_PARAMS_PER_CALL = 100


class TrackingWarning(UserWarning):
    """Tracking stopped for one run; the work it was recording goes on."""


def enabled() -> bool:
    """Whether runs are recorded (``MAMMO_TRACKING`` is not ``off``)."""
    return os.environ.get(SWITCH_VARIABLE, "on").strip().lower() not in _OFF


def turn_off() -> None:
    """Record nothing from here on, in this process and those it starts (``--no-track``)."""
    os.environ[SWITCH_VARIABLE] = "off"


def store_uri(project_dir: str | Path = ".") -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the project's SQLite file."""
    uri = os.environ.get(URI_VARIABLE, "").strip()
    if uri:
        return uri
    return "sqlite:///" + str((Path(project_dir) / STORE_DIR / STORE_FILE).resolve())


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for any other store)."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]).resolve() if uri.startswith(prefix) else None


def project_of(path: str | Path) -> Path:
    """The project folder of a run folder in the workspace layout (``<project>/models/
    <run>/<model>`` or ``<project>/reports/<run>``); the working folder for any other."""
    path = Path(path).resolve()
    if len(path.parents) > 2 and path.parents[1].name == "models":
        return path.parents[2]
    if len(path.parents) > 1 and path.parent.name == "reports":
        return path.parents[1]
    return Path.cwd()


def experiment_of(path: str | Path) -> str:
    """The experiment of a run folder: ``<run>`` of ``models/<run>/<model>`` or
    ``reports/<run>``, else the folder's own name."""
    path = Path(path).resolve()
    if len(path.parents) > 2 and path.parents[1].name == "models":
        return path.parent.name
    return path.name


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout this package runs from, or ``None`` outside git."""
    try:
        done = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and commit else None


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow parameters: ``{"a": {"b": 1}}`` gives ``{"a.b": "1"}``."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = str(list(value) if isinstance(value, tuple) else value)
    return flat


def data_tags(datasets: list[str] | tuple[str, ...], task: str | None) -> dict[str, str]:
    """The tags every run carries: data set, task, synthetic or real, project commit."""
    names = sorted({str(name) for name in datasets})
    tags = {"dataset": "+".join(names) or "unknown",
            "synthetic": str(any(name.startswith("synthetic") for name in names)).lower()}
    if task:
        tags["task"] = str(task)
    commit = git_commit()
    if commit:
        tags[COMMIT_TAG] = commit
    return tags


class TrackedRun:
    """One MLflow run, or nothing (tracking off, or stopped by a failure). No method
    raises: the first failure warns once and turns the run off."""

    def __init__(self, client=None, run_id: str | None = None, uri: str | None = None,
                 experiment_id: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id

    @property
    def active(self) -> bool:
        """Whether this run still records."""
        return self.run_id is not None

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        """A block that raises (a crash, Ctrl-C) closes the run as failed, so the store
        does not keep it RUNNING; the error goes on. A block that ends normally leaves
        the run open for its owner to finish."""
        if kind is not None:
            self.finish(failed=True)
        return False

    @classmethod
    def start(cls, kind: str, experiment: str, *, name: str, project_dir: str | Path = ".",
              tags: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
              parent_id: str | None = None) -> TrackedRun:
        """Open a run of ``kind`` (``training``, ``evaluation``, ``report``) named ``name``
        in ``experiment``, or under ``parent_id`` (default: ``MAMMO_TRACKING_PARENT``) in
        the parent's experiment. A disabled run when tracking is off or the store fails."""
        if not enabled():
            return cls()
        uri = store_uri(project_dir)
        run = cls(uri=uri)
        parent_id = parent_id or os.environ.get(PARENT_VARIABLE) or None
        with run._guard("start a run"):
            from mlflow.tracking import MlflowClient

            database = sqlite_path(uri)
            if database is not None:
                database.parent.mkdir(parents=True, exist_ok=True)
            client = MlflowClient(tracking_uri=uri)
            if parent_id:
                experiment_id = client.get_run(parent_id).info.experiment_id
            else:
                experiment_id = _experiment_id(client, experiment, database)
            all_tags = {"kind": kind, **(tags or {})}
            if parent_id:
                all_tags[PARENT_TAG] = parent_id
            created = client.create_run(experiment_id, tags=all_tags, run_name=name)
            run.client, run.run_id = client, created.info.run_id
            run.experiment_id = experiment_id
        if params:
            run.log_params(params)
        return run

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception as err:  # any store failure: one warning, then the run stops
            warnings.warn(
                f"experiment tracking stopped ({what} in {self.uri}): "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}. "
                "The work itself goes on and writes its files as usual.",
                TrackingWarning, stacklevel=4)
            self.run_id = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log settings, flattened (``training.epochs``), each value as text."""
        if not self.active:
            return
        from mlflow.entities import Param

        flat = [Param(key, value) for key, value in flatten(params).items()]
        with self._guard("log parameters"):
            for start in range(0, len(flat), _MAX_PARAMS_PER_CALL):
                self.client.log_batch(self.run_id, params=flat[start:start + _MAX_PARAMS_PER_CALL])

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Log the finite numbers of ``metrics`` at ``step``; others (``None``, text) are
        left out."""
        if not self.active:
            return
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), stamp, int(step)) for key, value in metrics.items()
                 if _is_number(value)]
        with self._guard("log metrics"):
            for start in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[start:start + 1000])

    def log_artifacts(self, paths: list[str | Path], artifact_path: str | None = None) -> None:
        """Copy files and folders (those that exist) into the run's artifacts."""
        if not self.active:
            return
        with self._guard("log artifacts"):
            for path in map(Path, paths):
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path),
                                              _join(artifact_path, path.name))
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path), artifact_path)

    def keras_callback(self):
        """A Keras callback logging every epoch's ``logs`` (loss, metrics, validation
        metrics, learning rate) at step = epoch."""
        import keras

        return keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: self.log_metrics(logs or {}, step=epoch))

    def log_keras_model(self, model, image_size: int, classes: list[str]) -> None:
        """Log ``model`` as an MLflow model (``keras`` flavour, with a pyfunc face) under
        ``model/``: an uncompiled copy, so it loads without this package's training
        metric, taking ``float32 [batch, size, size, 1]`` and giving one probability per
        class in ``classes`` order."""
        if not self.active:
            return
        with self._guard("log the model"):
            import keras
            import mlflow.keras
            import numpy as np
            from mlflow.models import ModelSignature
            from mlflow.types import Schema, TensorSpec

            inference = keras.models.clone_model(model)
            inference.set_weights(model.get_weights())
            signature = ModelSignature(
                inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, image_size, image_size, 1),
                                          "image")]),
                outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(classes)),
                                           "probabilities")]),
            )
            with tempfile.TemporaryDirectory() as folder:
                local = Path(folder) / MODEL_ARTIFACT
                mlflow.keras.save_model(inference, str(local), signature=signature,
                                        pip_requirements=_model_requirements(),
                                        metadata={"classes": list(classes)})
                self.client.log_artifacts(self.run_id, str(local), MODEL_ARTIFACT)

    def finish(self, failed: bool = False) -> None:
        """Close the run as finished (or failed)."""
        if not self.active:
            return
        with self._guard("close the run"):
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _experiment_id(client, name: str, database: Path | None) -> str:
    """The id of experiment ``name``, created if missing (a SQLite store's artifacts go
    beside its database file; another store chooses its own place)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = (database.parent / ARTIFACTS_DIR).as_uri() if database is not None else None
    try:
        return client.create_experiment(name, artifact_location=location,
                                        tags=EXPERIMENT_KIND_TAGS)
    except Exception:  # another process created it meanwhile
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _is_number(value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool) and math.isfinite(number)


def _join(prefix: str | None, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _model_requirements() -> list[str]:
    """What a logged model needs: Keras and TensorFlow at the versions that saved it."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("keras", "tensorflow", "tensorflow-cpu"):
        try:
            requirements.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return requirements


# --- the three kinds of run -------------------------------------------------------------

def start_training_run(out_dir: str | Path, config, manifest, model_name: str) -> TrackedRun:
    """The run of one training into ``out_dir``: the training config, the preprocessing
    config and the data's checksums as parameters; data set, task and architecture as tags."""
    datasets = (list(manifest.frame["dataset"].astype(str).unique())
                if "dataset" in manifest.frame else list(manifest.config.get("datasets", [])))
    params = {
        "training": config.to_dict(),
        "preprocessing": manifest.config,
        "data": {"manifest": str(manifest.source), "rows": len(manifest.frame)},
    }
    tags = {**data_tags(datasets, manifest.config.get("task")),
            "architecture": config.architecture, "model_name": model_name}
    return TrackedRun.start("training", experiment_of(out_dir), name=model_name,
                            project_dir=project_of(out_dir), tags=tags, params=params)


def finish_training_run(run: TrackedRun, model, card, files: list[Path]) -> None:
    """Close a training run: the card's results as metrics, ``files`` (card, history) and
    the model as artifacts."""
    training = card.training
    run.log_params({"data": {"manifest_sha256": card.data.get("manifest_sha256"),
                             "split_sha256": card.data.get("split_sha256")},
                    "classes": list(card.classes)})
    validation = card.validation_metrics or {}
    run.log_metrics({
        "best_epoch": card.best_epoch, "epochs_run": training.get("epochs_run"),
        "training_time_s": training.get("training_time_s"),
        "parameter_count": card.parameter_count,
        **{f"validation.{key}": value for key, value in validation.items()},
        **{f"validation.roc_auc.{name}": value
           for name, value in (validation.get("roc_auc_per_class") or {}).items()},
    })
    run.log_artifacts(files)
    run.log_keras_model(model, card.image_size, list(card.classes))
    run.finish()


def record_evaluation(metrics: dict, folders: list[Path], out_dir: str | Path,
                      settings: Mapping[str, Any], datasets: list[str]) -> TrackedRun:
    """One finished run per evaluation: ``settings`` as parameters, every computed level's
    final metrics (``<level>.<name>``, with ``_lower``/``_upper`` for bootstrap intervals,
    ``<level>.roc_auc.<class>``) and ``folders`` (metrics, figures) as artifacts."""
    model = metrics.get("model", {})
    tags = {**data_tags(datasets, model.get("task")),
            "architecture": str(model.get("architecture")),
            "model_name": str(model.get("model_name")), "split": str(metrics.get("split"))}
    run = TrackedRun.start("evaluation", experiment_of(out_dir),
                           name=f"{model.get('model_name')}-{metrics.get('split')}",
                           project_dir=project_of(out_dir), tags=tags, params=settings)
    values: dict[str, Any] = {}
    for level, section in metrics.get("levels", {}).items():
        if "not_applicable" in section:
            continue
        values |= {f"{level}.{name}": value for name, value in section.items()}
        for name, interval in section.get("bootstrap", {}).get("intervals", {}).items():
            values[f"{level}.{name}_lower"] = interval.get("lower")
            values[f"{level}.{name}_upper"] = interval.get("upper")
        for name, scores in section.get("per_class", {}).items():
            values[f"{level}.roc_auc.{name}"] = scores.get("roc_auc")
    run.log_metrics(values)
    run.log_artifacts(folders)
    run.finish()
    return run


@contextlib.contextmanager
def report_run(name: str, project_dir: str | Path, params: Mapping[str, Any],
               dataset: str) -> Iterator[TrackedRun]:
    """The parent run of a report. While it is open, the environment the notebooks'
    kernels inherit holds the parameters file's ``tracking`` settings (``enabled: false``,
    ``uri``), the store's URI and ``MAMMO_TRACKING_PARENT``, so the runs the notebooks
    start become its children. Closed as failed when the body raises; the environment
    is restored either way."""
    settings = dict(params.get("tracking") or {})
    changes = {}
    if settings.get("enabled") is False:
        changes[SWITCH_VARIABLE] = "off"
    if settings.get("uri"):
        changes[URI_VARIABLE] = str(settings["uri"])
    saved = {key: os.environ.get(key) for key in (*changes, PARENT_VARIABLE, URI_VARIABLE)}
    os.environ.update(changes)
    try:
        run = TrackedRun.start(
            "report", name, name=name, project_dir=project_dir,
            tags=data_tags([dataset], params.get("common", {}).get("task")),
            params={key: value for key, value in params.items() if key != "name"})
        if run.active:
            os.environ.update({PARENT_VARIABLE: run.run_id, URI_VARIABLE: run.uri})
        with run:
            yield run
        run.finish()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_settings(settings: Any, source: str) -> dict:
    """A parameters file's ``tracking`` section, checked: a mapping of ``enabled`` (bool)
    and ``uri`` (text); raises ``ValueError`` naming ``source`` otherwise."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        raise ValueError(f"{source}: `tracking` must be a mapping (enabled, uri)")
    unknown = sorted(set(settings) - {"enabled", "uri"})
    if unknown:
        raise ValueError(f"{source}: tracking: unknown keys {unknown}; use enabled, uri")
    if not isinstance(settings.get("enabled", True), bool):
        raise ValueError(f"{source}: tracking.enabled must be true or false")
    return dict(settings)


def record_report(run: TrackedRun, run_dir: str | Path, files: list[Path]) -> Path | None:
    """Log a report's ``files`` (parameters, status, HTML, comparison table) to its run
    and write ``<run_dir>/mlflow_runs.json``: the store, the experiment, the report's run
    id and its children's (id, name, kind, status). Nothing when the run did not record."""
    run.log_artifacts(files)
    if not run.active:
        return None
    with run._guard("list the report's runs"):
        children = run.client.search_runs(
            [run.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{run.run_id}'",
            order_by=["attributes.start_time ASC"])
        record = {
            "tracking_uri": run.uri,
            "experiment_id": run.experiment_id,
            "parent_run_id": run.run_id,
            "children": [{"run_id": child.info.run_id, "name": child.info.run_name,
                          "kind": child.data.tags.get("kind"), "status": child.info.status}
                         for child in children],
        }
        path = Path(run_dir) / RUNS_FILE
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path
    return None


def runs_html(run_dir: str | Path) -> str:
    """One HTML line naming a report's MLflow runs, for its ``reports/index.html`` entry
    (empty when the report recorded none)."""
    import html

    runs = read_runs_file(run_dir)
    if not runs:
        return ""
    children = ", ".join(f"{html.escape(str(child['name']))} <code>{child['run_id']}</code>"
                         for child in runs.get("children", []))
    return (f"<p>MLflow (<code>make ui</code>): run <code>{runs['parent_run_id']}</code> in "
            f"experiment {runs['experiment_id']}; child runs: {children or 'none'}</p>")


def read_runs_file(run_dir: str | Path) -> dict | None:
    """The report's run ids (see :func:`record_report`), or ``None`` when it has none."""
    path = Path(run_dir) / RUNS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --- reading runs back ------------------------------------------------------------------

def runs_table(experiment: str, project_dir: str | Path = ".",
               metrics: tuple[str, ...] = ("image.malignant_roc_auc", "validation.macro_roc_auc",
                                           "best_epoch")):
    """The runs of ``experiment`` as a table (``MlflowClient.search_runs``), newest first:
    name, kind, status, start, parent and the ``metrics`` columns. Empty when tracking is
    off, or the store has no such experiment (a missing SQLite file is not created)."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    columns = ["run_id", "name", "kind", "status", "start", "parent", *metrics]
    uri = store_uri(project_dir)
    database = sqlite_path(uri)
    if not enabled() or (database is not None and not database.is_file()):
        return pd.DataFrame(columns=columns)  # nothing recorded: create no store to say so
    try:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        runs = ([] if found is None else
                client.search_runs([found.experiment_id], order_by=["attributes.start_time DESC"]))
    except Exception as err:  # a broken store: say so, show nothing
        warnings.warn(f"cannot list the runs of {uri}: {type(err).__name__}: {err}",
                      TrackingWarning, stacklevel=2)
        return pd.DataFrame(columns=columns)
    rows = [{
        "run_id": run.info.run_id, "name": run.info.run_name, "kind": run.data.tags.get("kind"),
        "status": run.info.status,
        "start": pd.Timestamp(run.info.start_time, unit="ms", tz="UTC"),
        "parent": run.data.tags.get(PARENT_TAG),
        **{name: run.data.metrics.get(name) for name in metrics},
    } for run in runs]
    return pd.DataFrame(rows, columns=columns)


def start_ui(project_dir: str | Path = ".", host: str = "127.0.0.1",
             port: int = 5000, **popen) -> subprocess.Popen:
    """Start the MLflow UI over the project's store on ``host:port``, in a session of its
    own (so one signal to its group stops the server and its workers), with one worker
    and without MLflow's background job runner (GenAI jobs this project has none of)."""
    uri = store_uri(project_dir)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", host, "--port", str(port), "--workers", "1"]
    database = sqlite_path(uri)
    if database is not None:
        artifacts = (database.parent / ARTIFACTS_DIR).as_uri()
        database.parent.mkdir(parents=True, exist_ok=True)
        command += ["--default-artifact-root", artifacts, "--artifacts-destination", artifacts]
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=environment, start_new_session=True, **popen)
