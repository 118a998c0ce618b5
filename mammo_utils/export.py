"""Export a trained model to ONNX, LiteRT or a TensorFlow SavedModel, with proof of parity.

:func:`export_model` converts a model directory's ``model.keras`` with Keras' own
``Model.export`` (ONNX through tf2onnx, LiteRT through the TensorFlow Lite converter, the
SavedModel natively). The exported model takes what ``model.keras`` takes,
``float32 [batch, size, size, 1]`` in [0, 1], and returns the same class probabilities.

Before the file is put in place, the export is run in its own runtime (ONNX Runtime,
the LiteRT interpreter, TensorFlow for the SavedModel) on real preprocessed inputs
(:func:`parity_inputs`): patches or images from the training manifest the card names,
and the model inputs inference makes of any image files given. The largest absolute
difference from Keras' probabilities is recorded; above :data:`PARITY_TOLERANCE` the
export fails (:class:`ExportParityError`) and nothing is written.

Beside the model goes its sidecar (``<file>.json``, see
:mod:`mammo_utils.inference.exported`): the model card's sealed fields (class order,
label scheme, task, input and working size), the preprocessing settings, the tensors,
the file's sha256 and the parity measured, so a consumer needs nothing else.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from mammo_utils.files import atomic_write_text, sha256_file
from mammo_utils.inference import Classifier, load_source, scan_patches
from mammo_utils.inference.exported import SIDECAR_FORMAT, OnnxModel, sidecar_path
from mammo_utils.model_card import ModelCard, load_model_dir
from mammo_utils.versions import installed_versions, library_versions

#: Export formats and the file name ending of each (a SavedModel is a folder).
FORMATS: dict[str, str] = {"onnx": ".onnx", "litert": ".tflite", "savedmodel": ""}
#: Largest absolute difference allowed between an export's probabilities and Keras'.
#: float32 conversions differ by rounding (about 1e-7 measured for ONNX, 1e-6 for LiteRT
#: on the baseline); a wrong conversion differs by far more.
PARITY_TOLERANCE = 1e-4
#: Training-manifest images used for the parity check, spread over the manifest.
MANIFEST_SAMPLES = 16
#: Most model inputs taken from one image file given for the parity check.
INPUTS_PER_IMAGE = 32
#: Converters and runtimes whose versions a sidecar records, beside the card's libraries.
EXPORT_DISTRIBUTIONS: tuple[str, ...] = ("onnx", "tf2onnx", "onnxruntime", "ai-edge-litert")


class ExportParityError(RuntimeError):
    """An exported model whose outputs differ from Keras' by more than the tolerance."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float
    tolerance: float
    n_inputs: int
    seconds: float


def default_export_path(model_dir: str | Path, fmt: str) -> Path:
    """``<model_dir>/model.onnx``, ``model.tflite`` or the folder ``model_savedmodel``."""
    suffix = _suffix(fmt)
    return Path(model_dir) / (f"model{suffix}" if suffix else "model_savedmodel")


def _suffix(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


def manifest_inputs(card: ModelCard, limit: int = MANIFEST_SAMPLES) -> np.ndarray:
    """Up to ``limit`` model inputs read from the processed manifest the card names (its
    16-bit PNGs, as training read them), spread evenly over its rows; empty when the
    manifest is gone (a model copied without its data)."""
    manifest = (card.data or {}).get("manifest")
    if not manifest or not Path(manifest).is_file():
        return np.zeros((0, card.image_size, card.image_size, 1), np.float32)
    import pandas as pd

    rows = pd.read_csv(manifest)
    picks = np.unique(np.linspace(0, len(rows) - 1, num=min(limit, len(rows))).astype(int))
    images = []
    for relative in rows["path"].iloc[picks]:
        path = Path(manifest).parent / relative
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise FileNotFoundError(f"{path}: listed in {manifest} but cannot be read")
        scale = np.iinfo(pixels.dtype).max if pixels.dtype.kind == "u" else 1.0
        image = pixels.astype(np.float32) / scale
        size = card.image_size
        if image.shape != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        images.append(image)
    return np.stack(images)[..., np.newaxis]


def image_inputs(classifier: Classifier, source, limit: int = INPUTS_PER_IMAGE) -> np.ndarray:
    """The model inputs inference makes of one mammogram file: an ``image`` model's
    canvas, or up to ``limit`` of a ``roi`` model's scanned patches (evenly chosen)."""
    image, _, label = load_source(source)
    try:
        canvas, mask, _ = classifier.fit_canvas(image)
    except ValueError as exc:
        raise ValueError(f"{label}: {exc}") from None
    if classifier.task == "image":
        return canvas[np.newaxis, :, :, np.newaxis]
    seen = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return np.zeros((len(batch), len(classifier.classes)))

    scan_patches(canvas, record, size=classifier.image_size, stride=classifier.stride,
                 mask=mask, min_tissue=classifier.min_tissue)
    patches = np.concatenate(seen)
    picks = np.unique(np.linspace(0, len(patches) - 1, num=min(limit, len(patches))).astype(int))
    return patches[picks]


def parity_inputs(model, card: ModelCard, images: Sequence = ()) -> np.ndarray:
    """Real preprocessed inputs for the parity check: :func:`manifest_inputs` and
    :func:`image_inputs` of each of ``images``. ``ValueError`` when there are none."""
    classifier = Classifier(model, card)
    batches = [manifest_inputs(card)] + [image_inputs(classifier, image) for image in images]
    inputs = np.concatenate(batches).astype(np.float32)
    if not len(inputs):
        raise ValueError(
            f"no real input to check the export on: the training manifest "
            f"{(card.data or {}).get('manifest')!r} is not there; give mammograms to "
            "check on (mammo export --check-image FILE)"
        )
    return inputs


def exported_forward(path: str | Path, fmt: str):
    """``batch -> class probabilities`` of an exported model, in its own runtime: ONNX
    Runtime, the LiteRT interpreter, or TensorFlow for a SavedModel."""
    _suffix(fmt)
    if fmt == "onnx":
        return OnnxModel(path).predict_on_batch
    if fmt == "litert":
        return litert_runner(path)
    import tensorflow as tf

    served = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(batch: np.ndarray) -> np.ndarray:
        (output,) = served(tf.constant(batch, dtype=tf.float32)).values()
        return output.numpy()

    return run


def litert_runner(path: str | Path):
    """``batch -> probabilities`` through the LiteRT interpreter (``ai-edge-litert``)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise RuntimeError("running a LiteRT model needs ai-edge-litert "
                           "(pip install 'mammo-utils[export]')") from None
    runner = Interpreter(model_path=str(path)).get_signature_runner()

    (name,) = runner.get_input_details()

    def run(batch: np.ndarray) -> np.ndarray:
        (output,) = runner(**{name: np.ascontiguousarray(batch, dtype=np.float32)}).values()
        return output

    return run


def fold_captured_constants(path: Path, model) -> None:
    """Give back to an ONNX file the constants tf2onnx made graph inputs.

    Keras' ONNX export (tf2onnx ``from_function``) turns every tensor the traced model
    captures that is not a variable into an extra graph input: here the mean and
    variance of a backbone's ``Normalization`` layer, which ONNX Runtime then demands.
    The same model traced again captures the same tensors in the same order; each extra
    input becomes an initializer holding its value (shapes checked; parity checks the
    rest), or is dropped when no node reads it.
    """
    import onnx
    import tensorflow as tf

    proto = onnx.load(str(path))
    extra = list(proto.graph.input)[1:]
    if not extra:
        return
    size = model.input_shape[1]
    spec = tf.TensorSpec((None, size, size, 1), tf.float32)
    traced = tf.function(lambda image: model(image, training=False)).get_concrete_function(spec)
    constants = [value for value, _ in traced.graph.captures if value.dtype != tf.resource]
    if len(constants) != len(extra):
        raise RuntimeError(f"{path}: the ONNX graph has {len(extra)} inputs besides the "
                           f"image but the model captures {len(constants)} constants")
    read = {name for node in proto.graph.node for name in node.input}
    for graph_input, value in zip(extra, constants, strict=True):
        proto.graph.input.remove(graph_input)
        if graph_input.name not in read:
            continue
        array = value.numpy()
        declared = tuple(dim.dim_value or None
                         for dim in graph_input.type.tensor_type.shape.dim)
        if len(declared) != array.ndim or any(
                side not in (None, actual) for side, actual in zip(declared, array.shape,
                                                                   strict=True)):
            raise RuntimeError(f"{path}: input {graph_input.name} {declared} does not fit "
                               f"the captured constant of shape {array.shape}")
        proto.graph.initializer.append(onnx.numpy_helper.from_array(array, graph_input.name))
    onnx.save(proto, str(path))


def export_model(
    model_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    check_images: Sequence = (),
    tolerance: float = PARITY_TOLERANCE,
) -> ExportResult:
    """Export ``model_dir``'s model as ``fmt`` (``onnx``, ``litert`` or ``savedmodel``)
    to ``out`` (default :func:`default_export_path`), checked for parity first.

    ``check_images`` adds mammogram files to the parity inputs (see
    :func:`parity_inputs`). Raises :class:`ExportParityError` when the export's
    probabilities differ from Keras' by more than ``tolerance``; nothing is written then.
    """
    suffix = _suffix(fmt)
    started = time.perf_counter()
    model, card = load_model_dir(model_dir)
    out = Path(out) if out is not None else default_export_path(model_dir, fmt)
    if suffix and out.suffix != suffix:
        raise ValueError(f"{out}: a {fmt} export must end in {suffix}")
    inputs = parity_inputs(model, card, check_images)
    expected = _batched(model.predict_on_batch, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:
        staged = Path(scratch) / (out.name if suffix else "savedmodel")
        model.export(str(staged), format="tf_saved_model" if fmt == "savedmodel" else fmt,
                     verbose=False)
        if fmt == "onnx":
            fold_captured_constants(staged, model)
        got = _batched(exported_forward(staged, fmt), inputs)
        difference = float(np.max(np.abs(got - expected)))
        if not difference <= tolerance:
            raise ExportParityError(
                f"{out}: the {fmt} export differs from model.keras by up to {difference:.3g} "
                f"on {len(inputs)} real inputs, above the tolerance {tolerance:g}; "
                "nothing was written"
            )
        if out.is_dir():
            shutil.rmtree(out)
        staged.replace(out)
    result = ExportResult(
        path=out, sidecar=sidecar_path(out), format=fmt, max_abs_diff=difference,
        tolerance=tolerance, n_inputs=len(inputs),
        seconds=round(time.perf_counter() - started, 2),
    )
    atomic_write_text(result.sidecar, json.dumps(_sidecar(card, result), indent=2) + "\n")
    return result


def _batched(forward, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
    return np.concatenate([np.asarray(forward(inputs[start : start + batch_size]))
                           for start in range(0, len(inputs), batch_size)])


def _sidecar(card: ModelCard, result: ExportResult) -> dict:
    """The contract of an exported model (read by :func:`~mammo_utils.inference.read_sidecar`)."""
    size = card.image_size
    return {
        "sidecar_format": SIDECAR_FORMAT,
        "format": result.format,
        "file": result.path.name,
        "sha256": sha256_file(result.path) if result.path.is_file() else None,
        "model_name": card.model_name,
        "architecture": card.architecture,
        "classes": list(card.classes),
        "label_scheme": card.label_scheme,
        "task": card.task,
        "image_size": size,
        "working_size": card.working_size,
        "preprocessing": card.preprocessing,
        "input": {
            "shape": [None, size, size, 1], "dtype": "float32", "range": [0.0, 1.0],
            "meaning": "grayscale, dense tissue bright, breast cropped, chest wall on the "
                       "left, fitted to the working size (roi: patches of it), rounded to "
                       "16-bit steps; see preprocessing",
        },
        "output": {"shape": [None, len(card.classes)], "dtype": "float32",
                   "meaning": "softmax probabilities in the order of classes"},
        "parity": {"max_abs_diff": result.max_abs_diff, "tolerance": result.tolerance,
                   "n_inputs": result.n_inputs, "reference": "model.keras under Keras"},
        "source_model": {"sha256": card.model_file.get("sha256"),
                         "seal": card.model_file.get("seal"), "created": card.created},
        "versions": {**library_versions(), **installed_versions(EXPORT_DISTRIBUTIONS)},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
