"""Resume a killed training where it stopped: the backup written after every epoch.

A training is a sequence of stages (``full``, or ``head`` then ``finetune``), each one
``fit`` of consecutive epochs. After every epoch, and when a stage ends,
:class:`BackupCallback` writes one file, ``<work dir>/backup/state.npz``, atomically:

- the position: stage, epochs finished, the epoch the stage began, whether early
  stopping ended it, whether it has ended;
- every variable of the model (weights, batch-norm statistics, the dropout layers'
  random state) and of the optimizer (moments, step count, learning rate);
- the state of the callbacks that look back: early stopping (its wait, best value and
  best weights), learning-rate reduction (its wait, best, cool-down) and the
  best-weights checkpoint (its best value);
- the fingerprint of the run: every training setting, the manifest's SHA-256 and the
  replicas and workers (which fix the global batch).

The input pipeline needs no saved random state: its stream is a function of the seed
and of how many examples were drawn (see :mod:`mammo_utils.pipeline`), so the resumed
stage starts its stream that many examples in. Rerunning a killed command therefore
continues with the next epoch and, when the run is deterministic, ends with exactly
the weights and history of a run never killed. A backup whose fingerprint differs from
the new run's is refused (:class:`ResumeRefused` names what changed); a finished
training removes its backup.
"""

from __future__ import annotations

import io
import json
import numbers
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

from mammo_utils.files import atomic_write_bytes
from mammo_utils.model_card import HISTORY_FILE

#: The backup folder inside a training's working folder.
BACKUP_DIR = "backup"
#: The one file of a backup.
BACKUP_FILE = "state.npz"

_STATE_KEY = "state_json"


class ResumeRefused(ValueError):
    """A backup made by another run (other settings or data): the message names the
    backup, each difference and how to start over."""


@dataclass
class Position:
    """Where a training stands: ``epochs`` finished in all, ``stage`` (an index) begun
    at epoch ``stage_start``; ``stopped`` when early stopping ended the stage, ``ended``
    once the stage's ``fit`` returned."""

    stage: int = 0
    stage_start: int = 0
    epochs: int = 0
    stopped: bool = False
    ended: bool = False
    callbacks: dict = field(default_factory=dict)


class Backup:
    """The backup of one training in ``work_dir/backup``, tied to its ``fingerprint``."""

    def __init__(self, work_dir: Path, fingerprint: dict) -> None:
        self.folder = Path(work_dir) / BACKUP_DIR
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back
        self._arrays: dict[str, np.ndarray] = {}

    @property
    def path(self) -> Path:
        return self.folder / BACKUP_FILE

    def load(self) -> Position | None:
        """The position of the backup, ``None`` when there is none; :class:`ResumeRefused`
        when it was made by another run."""
        if not self.path.is_file():
            return None
        with np.load(self.path) as stored:
            arrays = {name: stored[name] for name in stored.files}
        saved = json.loads(arrays.pop(_STATE_KEY).tobytes().decode("utf-8"))
        changes = _differences(saved["fingerprint"], self.fingerprint)
        if changes:
            raise ResumeRefused(
                f"{self.path}: this backup of an unfinished training was made by another "
                f"run, so it cannot be resumed ({'; '.join(changes)}). Rerun with the "
                f"original settings and data to resume, or delete {self.folder} to start over."
            )
        self._arrays = arrays
        return Position(**saved["position"])

    def save(self, position: Position, model: keras.Model, watched: dict) -> None:
        """Write ``position``, the model's and optimizer's variables and the ``watched``
        callbacks' state (see :func:`callback_state`) in one atomic write."""
        arrays = _numbered("model", model.variables)
        arrays.update(_numbered("optimizer", model.optimizer.variables))
        position.callbacks = {}
        for name, callback in watched.items():
            state, weights = callback_state(callback)
            position.callbacks[name] = state
            if weights is not None:
                arrays.update(_numbered(f"{name}_best", weights))
        text = json.dumps({"fingerprint": self.fingerprint, "position": asdict(position)})
        arrays[_STATE_KEY] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, buffer.getvalue())

    def restore_variables(self, model: keras.Model) -> None:
        """Set the model's and its (built) optimizer's variables as the loaded backup
        holds them."""
        _assign("model", model.variables, self._arrays)
        _assign("optimizer", model.optimizer.variables, self._arrays)

    def restore_callbacks(self, position: Position, watched: dict) -> None:
        """Give the ``watched`` callbacks the state the loaded backup holds (call after
        their ``on_train_begin``, which resets it)."""
        for name, callback in watched.items():
            if name in position.callbacks:
                weights = _collect(f"{name}_best", self._arrays)
                set_callback_state(callback, position.callbacks[name], weights or None)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class BackupCallback(keras.callbacks.Callback):
    """Writes the backup after every epoch and when the stage ends; when resuming
    (``restore`` given), first hands the ``watched`` callbacks their saved state.

    Put it last among the callbacks, so it runs after the ones it watches."""

    def __init__(self, backup: Backup, stage: int, stage_start: int, watched: dict,
                 restore: Position | None = None) -> None:
        super().__init__()
        self.backup = backup
        self.watched = watched
        self.position = Position(stage=stage, stage_start=stage_start, epochs=stage_start)
        self.restore = restore

    def on_train_begin(self, logs=None):
        if self.restore is not None:
            self.backup.restore_callbacks(self.restore, self.watched)
            self.position.epochs = self.restore.epochs
            self.position.stopped = self.restore.stopped

    def on_epoch_end(self, epoch, logs=None):
        self.position.epochs = epoch + 1
        self.position.stopped = bool(self.model.stop_training)
        self.backup.save(self.position, self.model, self.watched)

    def on_train_end(self, logs=None):
        self.position.ended = True
        self.backup.save(self.position, self.model, self.watched)


def callback_state(callback: keras.callbacks.Callback) -> tuple[dict, list | None]:
    """What early stopping, learning-rate reduction or a checkpoint remember between
    epochs, as JSON values, and early stopping's best weights (else ``None``)."""
    names = _REMEMBERED[type(callback)]
    state = {name: _plain(getattr(callback, name, None)) for name in names}
    weights = getattr(callback, "best_weights", None)
    return state, (list(weights) if weights is not None else None)


def set_callback_state(callback: keras.callbacks.Callback, state: dict,
                       weights: list | None) -> None:
    for name, value in state.items():
        setattr(callback, name, value)
    if isinstance(callback, keras.callbacks.EarlyStopping):
        callback.best_weights = weights


def truncate_history(work_dir: Path, epochs: int) -> None:
    """Keep the first ``epochs`` rows of the history log (a kill between its line and
    the backup leaves one more)."""
    path = Path(work_dir) / HISTORY_FILE
    if path.is_file():
        lines = path.read_bytes().splitlines(keepends=True)  # as written: \r\n ends
        path.write_bytes(b"".join(lines[:1 + epochs]))


_REMEMBERED = {
    keras.callbacks.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "best", "cooldown_counter"),
    keras.callbacks.ModelCheckpoint: ("best",),
}


def _plain(value):
    """A Python number from a numpy one (floats exactly: JSON keeps their repr)."""
    if value is None:
        return None
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def _numbered(prefix: str, values) -> dict[str, np.ndarray]:
    return {f"{prefix}_{index:05d}": np.asarray(value) for index, value in enumerate(values)}


def _collect(prefix: str, arrays: dict) -> list[np.ndarray]:
    names = sorted(name for name in arrays if name.startswith(f"{prefix}_")
                   and name.removeprefix(f"{prefix}_").isdigit())
    return [arrays[name] for name in names]


def _assign(prefix: str, variables, arrays: dict) -> None:
    stored = _collect(prefix, arrays)
    if len(stored) != len(variables):
        raise ResumeRefused(
            f"backup holds {len(stored)} {prefix} variables, the run has {len(variables)}"
        )
    for variable, value in zip(variables, stored, strict=True):
        if tuple(variable.shape) != value.shape:
            raise ResumeRefused(f"backup's {prefix} variable {variable.path} has shape "
                                f"{value.shape}, the run's {tuple(variable.shape)}")
        variable.assign(value)


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """``name: backup X, now Y`` for each setting that differs (nested dicts flattened)."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        old, new = saved.get(key), current.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += _differences(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: backup {old!r}, now {new!r}")
    return changes
