"""Exported models: the sidecar contract, and an ONNX model run by ONNX Runtime.

``mammo export`` writes a model file (``.onnx``, ``.tflite`` or a SavedModel folder) and
beside it a sidecar, the same name plus ``.json``, holding what a consumer needs to use
it: the class order, task, input size, working size and preprocessing settings (the
model card's sealed fields), the input and output tensors, the file's sha256 and the
parity measured at export. This module owns that contract (:func:`sidecar_path`,
:func:`read_sidecar`) so that inference can read what export writes.

:class:`OnnxModel` offers the one method :class:`~mammo_utils.inference.Classifier`
calls on a model, ``predict_on_batch``: preprocessing, the patch scan and the verdict
then run without TensorFlow. Grad-CAM needs the Keras model's gradients, so an ONNX
model gives no Grad-CAM heat map (a ``roi`` model's scan map needs none).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mammo_utils.files import sha256_file

#: Appended to an exported model's path to name its sidecar (``baseline.onnx.json``).
SIDECAR_SUFFIX = ".json"
#: Version of the sidecar layout; a reader refuses another.
SIDECAR_FORMAT = 1
#: Fields a sidecar must hold for :class:`~mammo_utils.inference.Classifier`.
REQUIRED_FIELDS: tuple[str, ...] = (
    "sidecar_format", "format", "sha256", "model_name", "classes", "label_scheme", "task",
    "image_size", "working_size", "preprocessing", "input", "output",
)


class ExportedModelError(RuntimeError):
    """An exported model that cannot be used; ``str(err)`` names the file and reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def sidecar_path(model_path: str | Path) -> Path:
    """The sidecar beside an exported model: its path plus :data:`SIDECAR_SUFFIX`."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(model_path: str | Path, *, verify: bool = True) -> dict:
    """The sidecar of ``model_path``, checked: every required field present and, when
    ``verify``, the model file's sha256 the one recorded at export (a single file only)."""
    model_path = Path(model_path)
    path = sidecar_path(model_path)
    if not path.is_file():
        raise ExportedModelError(model_path, f"no sidecar {path.name} beside it (mammo export "
                                 "writes one; it holds the class order and input size)")
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportedModelError(model_path, f"unreadable sidecar {path.name}: {exc}") from None
    missing = [name for name in REQUIRED_FIELDS if name not in sidecar]
    if not isinstance(sidecar, dict) or missing:
        raise ExportedModelError(model_path, f"sidecar {path.name} lacks {', '.join(missing)}")
    if sidecar["sidecar_format"] != SIDECAR_FORMAT:
        raise ExportedModelError(
            model_path, f"sidecar format {sidecar['sidecar_format']!r}, expected {SIDECAR_FORMAT}"
        )
    if verify and model_path.is_file() and sha256_file(model_path) != sidecar["sha256"]:
        raise ExportedModelError(model_path, "the file is not the one its sidecar was written "
                                 "for (sha256 differs): it was replaced or damaged")
    return sidecar


class OnnxModel:
    """An exported ONNX classifier run by ONNX Runtime on the CPU.

    Takes ``float32 [batch, size, size, 1]`` in [0, 1] and returns class probabilities,
    like the Keras model it was exported from.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise ExportedModelError(path, "running an ONNX model needs onnxruntime "
                                     "(pip install 'mammo-utils[export]')") from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.path = Path(path)
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @property
    def input_shape(self) -> tuple:
        """``(None, height, width, channels)`` as the ONNX graph declares it."""
        shape = self.session.get_inputs()[0].shape
        return tuple(side if isinstance(side, int) else None for side in shape)

    @property
    def output_shape(self) -> tuple:
        """``(None, classes)`` as the ONNX graph declares it."""
        shape = self.session.get_outputs()[0].shape
        return tuple(side if isinstance(side, int) else None for side in shape)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for one batch."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(None, {self.input_name: batch})[0]


def load_onnx(path: str | Path) -> tuple[OnnxModel, dict]:
    """``(OnnxModel, sidecar)`` for an exported ``.onnx`` file, checked against each
    other: the file's sha256, its input size and its number of outputs."""
    path = Path(path)
    if not path.is_file():
        raise ExportedModelError(path, "no such ONNX file")
    sidecar = read_sidecar(path)
    if sidecar["format"] != "onnx":
        raise ExportedModelError(path, f"its sidecar describes a {sidecar['format']} export")
    model = OnnxModel(path)
    size = int(sidecar["image_size"])
    if model.input_shape[1:] != (size, size, 1):
        raise ExportedModelError(path, f"model input {model.input_shape[1:]} disagrees with "
                                 f"the sidecar's {(size, size, 1)}")
    if model.output_shape[-1] != len(sidecar["classes"]):
        raise ExportedModelError(path, f"model has {model.output_shape[-1]} outputs but the "
                                 f"sidecar lists {len(sidecar['classes'])} classes")
    return model, sidecar
