"""The model card: what a trained model is, how it was made, and how to load it safely.

A model directory holds ``model.keras``, ``model_card.json`` and ``history.csv``. The card
is the only source of the class order (output unit ``i`` is ``classes[i]``), the input
size and the preprocessing a model expects. The order is the label scheme's by default;
a model may be trained on any permutation of it (``TrainingConfig(class_order=...)``), so
nothing downstream may assume the scheme's order. The ``training`` section holds the
model's :class:`~mammo_utils.training_config.TrainingConfig` with what happened at run
time; :meth:`ModelCard.training_config` rebuilds the config from it. A model started from
another model's trunk (``init_from``) records where it came from in ``lineage``: the
source's name, folder, card sha256, task and architecture, and the layers copied.
:func:`load_model_dir` refuses a directory whose card is missing, malformed or disagrees
with the saved model, so a model can never be read with the wrong labels.

Every field is checked against limits when a card is built or read (a ``working_size``
of ``[0, 0]`` or ``[100000, 100000]`` is refused, not allocated). :meth:`ModelCard.save`
ties the card to the model file beside it: ``model_file`` records the file's sha256, its
size in bytes, the number of output units, and a seal over the fields that say how the
outputs are read (classes, label scheme, task, sizes). Loading recomputes all of them,
so a replaced model file or a card whose classes were reordered by hand is refused.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from mammo_utils.classes import LABEL_SCHEMES, check_class_order
from mammo_utils.files import atomic_write_text, sha256_file
from mammo_utils.preprocess.config import MAX_WORKING_SIDE, TASKS
from mammo_utils.training_config import TrainingConfig
from mammo_utils.versions import library_versions

MODEL_FILE = "model.keras"
CARD_FILE = "model_card.json"
HISTORY_FILE = "history.csv"

#: Largest model input side a card may declare (the backbones take 224 to 512).
MAX_IMAGE_SIZE = 2048
#: Training settings added after cards were first written, with the value their absence
#: means, so :meth:`ModelCard.training_config` still reads an older card.
_LATER_SETTINGS: dict[str, object] = {
    "init_from": None, "stem_steps": None, "top_blocks": None}
#: What a card's ``lineage`` records when the model started from another model.
LINEAGE_KEYS: tuple[str, ...] = (
    "source_model", "source_dir", "source_card_sha256", "source_task",
    "source_architecture", "source_image_size", "layers_copied",
)
#: Card fields that decide how a model's outputs are read; the seal covers them.
SEALED_FIELDS: tuple[str, ...] = ("classes", "label_scheme", "task", "image_size", "working_size")


class ModelDirectoryError(RuntimeError):
    """A model directory that cannot be used; ``str(err)`` names the folder and reason."""

    def __init__(self, folder: str | Path, reason: str) -> None:
        self.folder = Path(folder)
        self.reason = reason
        super().__init__(f"{self.folder}: {reason}")


@dataclass
class ModelCard:
    """Everything needed to use, compare and reproduce one trained model."""

    model_name: str
    architecture: str
    classes: list[str]
    label_scheme: str
    task: str
    image_size: int
    working_size: list[int] | None = None
    preprocessing: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    best_epoch: int | None = None
    validation_metrics: dict = field(default_factory=dict)
    training_range: dict = field(default_factory=dict)
    parameter_count: int = 0
    seed: int | None = None
    versions: dict = field(default_factory=library_versions)
    created: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    model_file: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("model_name", "architecture"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not isinstance(self.classes, (list, tuple)):
            raise ValueError(f"classes must be a list of class names, got {self.classes!r}")
        self.classes = list(self.classes)
        if self.label_scheme not in LABEL_SCHEMES:
            raise ValueError(
                f"unknown label scheme {self.label_scheme!r}; expected one of {LABEL_SCHEMES}"
            )
        check_class_order(self.classes, self.label_scheme)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, got {self.task!r}")
        _check_integer("image_size", self.image_size, 8, MAX_IMAGE_SIZE)
        if self.working_size is not None:
            self.working_size = _checked_working_size(self.working_size, self.image_size)
        for name in ("preprocessing", "data", "training", "lineage", "validation_metrics",
                     "training_range", "versions", "model_file"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"{name} must be a JSON object, got {getattr(self, name)!r}")
        if self.lineage and set(self.lineage) != set(LINEAGE_KEYS):
            raise ValueError(
                f"lineage must hold exactly {', '.join(LINEAGE_KEYS)}, got "
                f"{', '.join(sorted(self.lineage))}"
            )
        fraction = self.preprocessing.get("min_breast_fraction", 0.5)
        if not _is_number(fraction) or not 0 <= fraction <= 1:
            raise ValueError(
                f"preprocessing.min_breast_fraction must be in [0, 1], got {fraction!r}"
            )
        _check_integer("parameter_count", self.parameter_count, 0)
        if self.best_epoch is not None:
            _check_integer("best_epoch", self.best_epoch, 0)
        if self.seed is not None:
            _check_integer("seed", self.seed, 0)

    def seal(self, model_sha256: str) -> str:
        """sha256 over the model file's checksum and the :data:`SEALED_FIELDS`."""
        sealed = {name: getattr(self, name) for name in SEALED_FIELDS}
        text = json.dumps({"model_sha256": model_sha256, **sealed}, sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def training_config(self) -> TrainingConfig:
        """The settings the model was trained with, from the ``training`` section (which
        also holds run-time facts: epochs run, stages, strategy, time). ``ValueError``
        when a setting is missing, as in a card written before settings were recorded."""
        names = [spec.name for spec in fields(TrainingConfig)]
        recorded = {**_LATER_SETTINGS, **self.training}
        missing = [name for name in names if name not in recorded]
        if missing:
            raise ValueError(
                f"model card of {self.model_name!r} does not record the training "
                f"setting(s) {', '.join(missing)}"
            )
        return TrainingConfig(**{name: recorded[name] for name in names})

    def to_json(self) -> str:
        """The card as indented JSON (keys in field order)."""
        return json.dumps(asdict(self), indent=2, default=_json_default) + "\n"

    @classmethod
    def from_json(cls, text: str | dict) -> ModelCard:
        """Parse a card; unknown keys are refused so a typo cannot pass unnoticed."""
        values = json.loads(text) if isinstance(text, str) else dict(text)
        if not isinstance(values, dict):
            raise ValueError("a model card must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model card fields: {', '.join(unknown)}")
        return cls(**values)

    def save(self, model_dir: str | Path) -> Path:
        """Write ``model_card.json`` into ``model_dir`` atomically, tied to the
        ``model.keras`` there when there is one (``model_file``: its sha256, size, output
        units and the seal; save the model first)."""
        folder = Path(model_dir)
        model_path = folder / MODEL_FILE
        if model_path.is_file():
            digest = sha256_file(model_path)
            self.model_file = {
                "sha256": digest, "bytes": model_path.stat().st_size,
                "output_units": len(self.classes), "seal": self.seal(digest),
            }
        path = folder / CARD_FILE
        atomic_write_text(path, self.to_json())
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelCard:
        """Read the card of a model directory, or raise :class:`ModelDirectoryError`."""
        folder = Path(model_dir)
        path = folder / CARD_FILE
        if not path.is_file():
            raise ModelDirectoryError(folder, f"no {CARD_FILE}")
        try:
            return cls.from_json(path.read_text())
        except (ValueError, TypeError) as exc:
            raise ModelDirectoryError(folder, f"invalid {CARD_FILE}: {exc}") from exc


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_integer(name: str, value, least: int, most: int | None = None) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer in ``[least, most]``."""
    inside = (
        isinstance(value, numbers.Integral) and not isinstance(value, bool)
        and value >= least and (most is None or value <= most)
    )
    if not inside:
        rule = f">= {least}" if most is None else f"in [{least}, {most}]"
        raise ValueError(f"{name} must be an integer {rule}, got {value!r}")


def _checked_working_size(value, image_size: int) -> list[int]:
    """``[height, width]``, each side an integer from ``image_size`` to the largest
    working side preprocessing allows."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"working_size must be [height, width], got {value!r}")
    for side in value:
        _check_integer("working_size side", side, image_size, MAX_WORKING_SIDE)
    return [int(side) for side in value]


def check_model_file(card: ModelCard, model_path: Path, folder: str | Path) -> None:
    """Raise :class:`ModelDirectoryError` unless ``model_path`` is the file the card was
    saved with and the card's sealed fields are those it was saved with."""
    record = card.model_file
    if not {"sha256", "bytes", "output_units", "seal"} <= set(record):
        raise ModelDirectoryError(
            folder, f"{CARD_FILE} does not record its {MODEL_FILE} (checksum, size, seal); "
            "save the card again beside its model (ModelCard.save) or retrain",
        )
    if model_path.stat().st_size != record["bytes"] or sha256_file(model_path) != record["sha256"]:
        raise ModelDirectoryError(
            folder, f"{MODEL_FILE} is not the file its card was saved with (size or sha256 "
            "differs): it was replaced or damaged",
        )
    if record["output_units"] != len(card.classes) or record["seal"] != card.seal(
        record["sha256"]
    ):
        raise ModelDirectoryError(
            folder, f"{CARD_FILE} was changed after the model was saved: its "
            f"{', '.join(SEALED_FIELDS)} no longer match the seal",
        )


def _json_default(value):
    """numpy scalars and paths written by training code."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def check_model_matches_card(model, card: ModelCard, folder: str | Path = "model") -> None:
    """Raise :class:`ModelDirectoryError` when the model's input or output shape disagrees
    with the card (``[batch, image_size, image_size, 1]`` in, one such input per view for
    a ``breast`` model, ``len(classes)`` out)."""
    expected_input = (card.image_size, card.image_size, 1)
    expected = [expected_input] * (2 if card.task == "breast" else 1)
    actual = [tuple(tensor.shape[1:]) for tensor in model.inputs]
    if actual != expected:
        shown = actual[0] if len(actual) == 1 else actual
        wanted = expected_input if len(expected) == 1 else expected
        raise ModelDirectoryError(
            folder, f"model input {shown} disagrees with the card's {wanted}"
        )
    units = model.output_shape[-1]
    if units != len(card.classes):
        raise ModelDirectoryError(
            folder, f"model has {units} output units but the card lists "
            f"{len(card.classes)} classes {card.classes}",
        )


def load_model_dir(model_dir: str | Path):
    """Load ``(model, card)`` from a model directory, checking that they agree.

    The model file must be the one the card was saved with (:func:`check_model_file`),
    checked before Keras reads it; the model is read with ``safe_mode=True`` (no
    arbitrary code) and ``compile=False`` (inference only).
    """
    import keras  # deferred: reading a card alone must not start TensorFlow

    folder = Path(model_dir)
    if not folder.is_dir():
        raise ModelDirectoryError(folder, "model directory does not exist")
    card = ModelCard.load(folder)
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise ModelDirectoryError(folder, f"no {MODEL_FILE}")
    check_model_file(card, model_path, folder)
    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        raise ModelDirectoryError(folder, f"cannot load {MODEL_FILE}: {exc}") from exc
    check_model_matches_card(model, card, folder)
    return model, card


def find_model_dirs(folder: str | Path, names: Sequence[str] | None = None) -> list[Path]:
    """Every model directory (a folder holding a card) at any depth under ``folder``,
    sorted by path: ``models/<run>`` lists one run, ``models`` every run.

    ``names`` selects models by folder name, in that order; a name with no folder is a
    ``FileNotFoundError`` that lists what exists.
    """
    folder = Path(folder)
    found = sorted(card.parent for card in folder.rglob(CARD_FILE))
    if not names:
        return found
    by_name = {path.name: path for path in found}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no model named {', '.join(missing)}; found {sorted(by_name) or 'none'}"
        )
    return [by_name[name] for name in names]
