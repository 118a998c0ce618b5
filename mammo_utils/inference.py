"""Classify one mammogram or lesion crop with a trained model directory.

:class:`Classifier` reads a model directory's card and repeats the preprocessing the
model was trained with, through the very function preprocessing calls: decode
(:func:`mammo_utils.reader.read_image`), then :func:`mammo_utils.breast.prepare_and_fit`
(breast mask, crop, canonical flip, pad and resize) to the card's canvas, rounded to the
16-bit steps of the training PNGs (:meth:`Classifier.fit_canvas`). An ``image`` model's
input is therefore exactly the PNG preprocessing writes for the same file, and a ``roi``
model scans exactly the working canvas its training patches were cut from.

* An ``image`` model sees the whole breast once; its heat map is a Grad-CAM map of the
  last convolution layer (nested backbones such as ``keras.applications`` models are
  followed into).
* A ``roi`` (patch) model scans the breast at the card's working resolution with
  overlapping patches of its training size, and each class gets a probability map.
  The *decisive patch* is the most suspicious one: the patch with the highest
  probability of any non-normal class. The image's probabilities are that patch's
  probabilities, and its label is their most probable class, so the label and the
  probability bars always agree (a patch can be the most suspicious and still be
  most probably NORMAL).
* ``input_kind="crop"`` classifies a lesion crop directly (resized to the model input).

Every kind ends with the same verdict (:meth:`Classifier.verdict`): the label is the
most probable class and the confidence its probability. An optional ``threshold``
makes a non-normal label demand at least that probability; below it the label is the
normal class, the confidence is the normal probability, and a warning names the most
suspicious class and its probability ("no patch reached the threshold ...").

The class names and their order come from the model card and nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo_utils.breast import BreastGeometry, fit_to_shape, prepare_and_fit
from mammo_utils.reader import ImageReadError, read_image

INPUT_KINDS: tuple[str, ...] = ("auto", "mammogram", "crop")

#: Classes that mean "nothing suspicious" under the label schemes.
BACKGROUND_CLASSES: tuple[str, ...] = ("NORMAL", "NOT_MALIGNANT")

#: Metadata keys a prediction may carry: acquisition facts, never a patient identifier.
SAFE_METADATA_KEYS: tuple[str, ...] = (
    "format", "modality", "laterality", "view", "rows", "columns",
    "photometric_interpretation", "bits_stored", "transfer_syntax",
)

#: Longest side of the breast image shown for an image model or a crop.
DISPLAY_MAX_SIDE = 1024

Source = Any  # a path, bytes, a numpy array or an ipywidgets FileUpload value


@dataclass(frozen=True)
class Prediction:
    """What a model says about one image.

    ``probabilities`` follows the model card's class order; ``heatmap`` is a 2-D float
    map in [0, 1] over ``image`` (the preprocessed breast as displayed: cropped, flipped
    to the chest wall on the left and fitted to the model's canvas); ``metadata`` holds
    only non-identifying acquisition fields.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    heatmap: np.ndarray
    image: np.ndarray
    input_kind: str
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


class Classifier:
    """A trained model and its card, ready to classify images.

    Parameters
    ----------
    model : keras.Model
        Takes ``float32 [batch, size, size, 1]`` in [0, 1], returns class probabilities.
    card : ModelCard or mapping
        The model card (a :class:`~mammo_utils.model_card.ModelCard` or its dict):
        ``classes`` (output order), ``task`` (``roi`` or ``image``), ``image_size`` and,
        for ``roi``, ``working_size`` ([height, width]).
    stride : int, optional
        Step between scanned patches in working-resolution pixels; default ``size // 2``.
    threshold : float, optional
        Smallest probability a non-normal label needs; a weaker one gives the normal
        class and a warning (see :meth:`verdict`). Default ``None``: the most probable
        class, whatever its probability.
    min_tissue : float, optional
        Fraction of breast pixels a patch needs to be scanned (background is skipped);
        default the card's ``preprocessing.min_breast_fraction`` (what its NORMAL
        training patches needed), else 0.5.
    batch_size : int
        Patches per forward pass.
    """

    def __init__(
        self,
        model,
        card: Mapping[str, Any],
        *,
        stride: int | None = None,
        threshold: float | None = None,
        min_tissue: float | None = None,
        batch_size: int = 64,
    ) -> None:
        self.model = model
        card = dict(card) if isinstance(card, Mapping) else dataclasses.asdict(card)
        self.card = card
        self.classes: tuple[str, ...] = tuple(card["classes"])
        self.task: str = card["task"]
        self.image_size = int(card["image_size"])
        working = card.get("working_size")
        self.working_size = tuple(int(v) for v in working) if working else None
        if self.task not in ("roi", "image"):
            raise ValueError(f"model card task must be 'roi' or 'image', not {self.task!r}")
        if self.task == "roi" and self.working_size is None:
            raise ValueError("a roi model card needs working_size ([height, width])")
        self.stride = int(stride) if stride else max(1, self.image_size // 2)
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.threshold = None if threshold is None else float(threshold)
        if min_tissue is None:
            min_tissue = (card.get("preprocessing") or {}).get("min_breast_fraction", 0.5)
        self.min_tissue = float(min_tissue)
        self.batch_size = int(batch_size)
        self.background = next((c for c in self.classes if c in BACKGROUND_CLASSES), None)
        self._cam: Callable | None = None
        self._cam_checked = False

    @classmethod
    def from_dir(cls, model_dir: str | Path, **options) -> Classifier:
        """Load ``model.keras`` and ``model_card.json`` from a model directory."""
        from mammo_utils.model_card import load_model_dir

        model, card = load_model_dir(Path(model_dir))
        return cls(model, card, **options)

    # ------------------------------------------------------------------ public API
    def predict(
        self, source: Source, *, name: str | None = None, input_kind: str = "auto"
    ) -> Prediction:
        """Classify a path, raw bytes, a numpy image or an ipywidgets upload value.

        Raises :class:`~mammo_utils.reader.ImageReadError` for a file that cannot be
        read or holds no breast, and ``ValueError`` for an unusable argument.
        """
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {', '.join(INPUT_KINDS)}")
        image, metadata, label = load_source(source, name=name)
        warnings = list(metadata.get("warnings") or [])
        if metadata.get("view") is None:
            warnings.append("view unknown (no CC/MLO tag): check this is a mammogram")
        kind = self._resolve_kind(input_kind, image, metadata)
        if kind == "crop":
            result = self._predict_crop(image, warnings)
        else:
            try:
                canvas, mask, geometry = self.fit_canvas(image)
            except ValueError as exc:
                raise ImageReadError(label, str(exc)) from None
            if self.task == "roi":
                result = self._predict_scan(canvas, mask, geometry, warnings)
            else:
                result = self._predict_whole(image, canvas, geometry, warnings)
        safe = {key: metadata.get(key) for key in SAFE_METADATA_KEYS if key in metadata}
        return Prediction(**result, input_kind=kind, warnings=warnings, metadata=safe)

    @property
    def canvas_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the canvas a mammogram is fitted to: the preprocess
        config's ``working_size`` for a ``roi`` model, ``size`` x ``size`` for an ``image``
        model (the card copies them as ``working_size`` and ``image_size``)."""
        if self.task == "roi":
            return self.working_size
        return self.image_size, self.image_size

    def fit_canvas(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, BreastGeometry]:
        """A [0, 1] mammogram on this model's canvas, as preprocessing wrote it.

        Calls :func:`~mammo_utils.breast.prepare_and_fit` with the shape preprocessing
        used (:attr:`canvas_shape`) and rounds the canvas to 16-bit steps, so an ``image``
        model's input equals the training PNG and a ``roi`` scan runs over the canvas the
        training patches were cut from. Returns the canvas, its boolean breast mask and
        the geometry; raises ``ValueError`` when no breast is found.
        """
        canvas, mask, geometry = prepare_and_fit(image, self.canvas_shape)
        return as_trained(canvas), mask, geometry

    def verdict(
        self, probabilities: np.ndarray, shortfall: str = "the image did not reach"
    ) -> tuple[str, float, str | None]:
        """The label, its confidence and an optional warning for one probability vector.

        The label is the most probable class and the confidence its probability, so a
        label always matches the tallest probability bar. With a ``threshold``, a
        non-normal label below it becomes the normal class with the normal probability as
        confidence, and the warning, opening with ``shortfall`` (e.g. "no patch
        reached"), names the class that fell short and its probability.
        """
        index = int(np.argmax(probabilities))
        label = self.classes[index]
        if (self.threshold is None or self.background is None or label == self.background
                or probabilities[index] >= self.threshold):
            return label, float(probabilities[index]), None
        normal = self.classes.index(self.background)
        warning = (
            f"{shortfall} the {self.threshold:.1%} threshold for a finding: the most "
            f"suspicious class is {label} at {probabilities[index]:.1%}, so it is called "
            f"{self.background}"
        )
        return self.background, float(probabilities[normal]), warning

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for ``[n, size, size, 1]`` inputs, in batches."""
        outputs = [
            self.model.predict_on_batch(batch[start : start + self.batch_size])
            for start in range(0, len(batch), self.batch_size)
        ]
        return np.concatenate(outputs).astype(np.float64)

    # ------------------------------------------------------------------ input kinds
    def _resolve_kind(self, input_kind: str, image: np.ndarray, metadata: Mapping) -> str:
        """``auto``: a crop when the series says so or the image is at most two patches wide."""
        if input_kind != "auto":
            return input_kind
        description = str(metadata.get("series_description") or "").lower()
        if "crop" in description or max(image.shape) <= 2 * self.image_size:
            return "crop"
        return "mammogram"

    def _probabilities(self, vector: np.ndarray) -> dict[str, float]:
        return {name: float(p) for name, p in zip(self.classes, vector, strict=True)}

    def _small_input_warning(self, shape: tuple[int, int], target: Sequence[int], what: str):
        if shape[0] < target[0] or shape[1] < target[1]:
            return (
                f"{what} is {shape[0]}x{shape[1]} pixels, smaller than the "
                f"{target[0]}x{target[1]} the model was trained at: it was upsampled"
            )
        return None

    def _predict_crop(self, image: np.ndarray, warnings: list[str]) -> dict:
        size = self.image_size
        note = self._small_input_warning(image.shape, (size, size), "the crop")
        if note:
            warnings.append(note)
        model_input = as_trained(cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
        display = _fit_display(image)
        return self._single_pass(model_input, display, warnings)

    def _predict_whole(
        self, image: np.ndarray, model_input: np.ndarray, geometry: BreastGeometry,
        warnings: list[str],
    ) -> dict:
        size = self.image_size
        x0, y0, x1, y1 = geometry.box
        crop = image[y0:y1, x0:x1]  # a view: the display is fitted without a full copy
        note = self._small_input_warning(crop.shape, (size, size), "the breast")
        if note:
            warnings.append(note)
        side = max(size, min(DISPLAY_MAX_SIDE, max(crop.shape)))
        display, _, _ = fit_to_shape(crop, (side, side), mirror=geometry.flipped)
        return self._single_pass(model_input, display, warnings)

    def _single_pass(self, model_input: np.ndarray, display: np.ndarray, warnings) -> dict:
        """One forward pass with a Grad-CAM map of the winning class."""
        batch = model_input[np.newaxis, :, :, np.newaxis].astype(np.float32)
        cam = self._cam_function()
        if cam is None:
            probabilities = self.forward(batch)[0]
            heatmap = np.zeros(display.shape, dtype=np.float32)
            warnings.append("heat map unavailable: no convolution layer could be tapped")
        else:
            probabilities, small_map = cam(batch)
            heatmap = cv2.resize(small_map, display.shape[::-1], interpolation=cv2.INTER_LINEAR)
        return self._outcome(probabilities, np.clip(heatmap, 0.0, 1.0).astype(np.float32),
                             display.astype(np.float32), warnings)

    def _outcome(
        self, probabilities: np.ndarray, heatmap: np.ndarray, image: np.ndarray,
        warnings: list[str], shortfall: str = "the image did not reach",
    ) -> dict:
        """The prediction fields for one deciding probability vector (see :meth:`verdict`)."""
        label, confidence, warning = self.verdict(probabilities, shortfall)
        if warning:
            warnings.append(warning)
        return {
            "label": label,
            "confidence": confidence,
            "probabilities": self._probabilities(probabilities),
            "heatmap": heatmap,
            "image": image,
        }

    # ------------------------------------------------------------------ patch scan
    def _predict_scan(
        self, canvas: np.ndarray, mask: np.ndarray, geometry: BreastGeometry,
        warnings: list[str],
    ) -> dict:
        x0, y0, x1, y1 = geometry.box
        note = self._small_input_warning((y1 - y0, x1 - x0), self.working_size, "the breast")
        if note:
            warnings.append(note)
        scan = scan_patches(self, canvas, mask, stride=self.stride, min_tissue=self.min_tissue)
        if scan.used_all:
            warnings.append("no patch lies mostly on breast tissue: every patch was scanned")
        vector = scan.probabilities[self.decisive_patch(scan.probabilities)]
        return self._outcome(vector, self._suspicion_map(scan.class_maps), canvas, warnings,
                             "no patch reached")

    def decisive_patch(self, patch_probabilities: np.ndarray) -> int:
        """Row of the most suspicious patch: the highest probability of a non-normal
        class (of any class when the card has no normal class)."""
        suspicious = [i for i, c in enumerate(self.classes) if c != self.background]
        return int(np.argmax(patch_probabilities[:, suspicious].max(axis=1)))

    def _suspicion_map(self, class_maps: np.ndarray) -> np.ndarray:
        """Per pixel, the highest non-normal class probability."""
        keep = [i for i, c in enumerate(self.classes) if c != self.background]
        return class_maps[..., keep].max(axis=-1).astype(np.float32)

    # ------------------------------------------------------------------ Grad-CAM
    def _cam_function(self) -> Callable | None:
        if not self._cam_checked:
            self._cam = grad_cam_function(self.model, self.image_size)
            self._cam_checked = True
        return self._cam


@dataclass(frozen=True)
class PatchScan:
    """The result of scanning a canvas: one probability vector per scanned patch,
    their top-left corners, and per-pixel class probabilities averaged over the patches
    covering each pixel (zero where no scanned patch lies)."""

    probabilities: np.ndarray  # [patches, classes]
    corners: np.ndarray  # [patches, 2] as (y, x)
    class_maps: np.ndarray  # [height, width, classes]
    used_all: bool


def patch_corners(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of ``size`` windows every ``stride`` pixels, the last flush with the end."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def scan_patches(
    classifier: Classifier,
    canvas: np.ndarray,
    mask: np.ndarray,
    *,
    stride: int,
    min_tissue: float,
) -> PatchScan:
    """Classify overlapping ``image_size`` patches of ``canvas`` that lie on the breast.

    Patches are batched through the model. A canvas smaller than a patch is zero-padded.
    """
    size = classifier.image_size
    height, width = canvas.shape
    padded_h, padded_w = max(height, size), max(width, size)
    canvas = _pad_to(canvas, padded_h, padded_w)
    tissue = cv2.integral(_pad_to(mask.astype(np.uint8), padded_h, padded_w))
    corners = np.array(
        [(y, x) for y in patch_corners(padded_h, size, stride)
         for x in patch_corners(padded_w, size, stride)]
    )
    ys, xs = corners[:, 0], corners[:, 1]
    covered = (
        tissue[ys + size, xs + size] - tissue[ys, xs + size]
        - tissue[ys + size, xs] + tissue[ys, xs]
    ) / float(size * size)
    keep = covered >= min_tissue
    used_all = not keep.any()
    if not used_all:
        corners = corners[keep]
    batch = np.stack([canvas[y : y + size, x : x + size] for y, x in corners])
    probabilities = classifier.forward(batch[..., np.newaxis].astype(np.float32))
    sums = np.zeros((padded_h, padded_w, len(classifier.classes)), dtype=np.float64)
    counts = np.zeros((padded_h, padded_w, 1), dtype=np.float64)
    for (y, x), vector in zip(corners, probabilities, strict=True):
        sums[y : y + size, x : x + size] += vector
        counts[y : y + size, x : x + size] += 1
    class_maps = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return PatchScan(
        probabilities=probabilities, corners=corners,
        class_maps=class_maps[:height, :width], used_all=used_all,
    )


def as_trained(image: np.ndarray) -> np.ndarray:
    """Round a [0, 1] image to 16-bit steps, as the training PNGs stored it."""
    return (np.rint(np.clip(image, 0.0, 1.0) * 65535.0) / 65535.0).astype(np.float32)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape == (height, width):
        return image
    out = np.zeros((height, width), dtype=image.dtype)
    out[: image.shape[0], : image.shape[1]] = image
    return out


def _fit_display(image: np.ndarray) -> np.ndarray:
    """The image scaled down (never up) so its longest side is at most DISPLAY_MAX_SIDE."""
    factor = DISPLAY_MAX_SIDE / max(image.shape)
    if factor >= 1:
        return image.astype(np.float32)
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------- sources
def load_source(source: Source, *, name: str | None = None) -> tuple[np.ndarray, dict, str]:
    """Decode any accepted source to ``(float32 [0, 1] image, metadata, label)``.

    ``label`` names the source in messages (the path or upload name).
    """
    if isinstance(source, Mapping) or (
        isinstance(source, (tuple, list)) and source and isinstance(source[0], Mapping)
    ):
        content, upload_name = upload_content(source)
        return _read(content, name or upload_name)
    if isinstance(source, (tuple, list)) and not source:
        raise ValueError("no file was uploaded")
    if isinstance(source, np.ndarray):
        image, metadata = array_image(source)
        return image, metadata, name or "array"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read(bytes(source), name or "upload")
    if isinstance(source, (str, Path)):
        return _read(Path(source), name)
    raise ValueError(
        f"cannot classify a {type(source).__name__}: give a path, bytes, a numpy array "
        "or an ipywidgets FileUpload value"
    )


def _read(source: bytes | Path, name: str | None) -> tuple[np.ndarray, dict, str]:
    if isinstance(source, Path):
        image, metadata = read_image(source)
        return image, metadata, str(source)
    image, metadata = read_image(source, name=name)
    return image, metadata, str(name)


def upload_content(value: Mapping | Sequence[Mapping]) -> tuple[bytes, str]:
    """The bytes and file name of an ipywidgets 8 FileUpload value (one file)."""
    files = [value] if isinstance(value, Mapping) else list(value)
    if len(files) != 1:
        raise ValueError(f"upload one file at a time ({len(files)} given)")
    entry = files[0]
    if "content" not in entry:
        raise ValueError("the upload value has no 'content' (expected an ipywidgets 8 value)")
    return bytes(entry["content"]), str(entry.get("name") or "upload")


def array_image(array: np.ndarray) -> tuple[np.ndarray, dict]:
    """A numpy image as float32 [0, 1] grayscale, with warnings for what was changed.

    Integer images are divided by their type's maximum; float images outside [0, 1]
    are stretched to it; colour images (H x W x 3 or 4) are converted to grayscale.
    """
    warnings: list[str] = []
    image = np.asarray(array)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
        warnings.append("colour image converted to grayscale")
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"expected a 2-D grayscale or colour image, got shape {array.shape}")
    if np.issubdtype(image.dtype, np.integer):
        image = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    else:
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise ValueError("the image holds NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            image = (image - low) / (high - low) if high > low else np.zeros_like(image)
            warnings.append(f"values in [{low:g}, {high:g}] were stretched to [0, 1]")
    metadata = {
        "format": "array", "modality": None, "laterality": None, "view": None,
        "rows": int(image.shape[0]), "columns": int(image.shape[1]), "warnings": warnings,
    }
    return np.ascontiguousarray(image, dtype=np.float32), metadata


# ---------------------------------------------------------------------- Grad-CAM
def _is_conv(layer) -> bool:
    import keras

    conv_types = (keras.layers.Conv2D, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D)
    if isinstance(layer, conv_types):
        return True
    return isinstance(layer, keras.Model) and any(_is_conv(inner) for inner in layer.layers)


def feature_map_tensor(model):
    """The symbolic 4-D feature map Grad-CAM taps, in ``model``'s own graph.

    That is the output of the last convolution layer when it sits in ``model`` itself,
    or the output of the nested model holding it (a ``keras.applications`` backbone,
    whose output is its last convolution block). ``None`` without any convolution.
    """
    for layer in reversed(model.layers):
        if _is_conv(layer):
            # A nested model's own ``output`` lives in its inner graph; the tensor it
            # produced in the enclosing graph is the output of its call node there.
            return layer._inbound_nodes[0].output_tensors[0]
    return None


def grad_cam_function(model, size: int) -> Callable | None:
    """A function ``batch -> (probabilities, map in [0, 1])`` for a one-image batch.

    The map is the Grad-CAM of the most probable class at :func:`feature_map_tensor`,
    resized to ``size`` x ``size``; the probabilities come from the same forward pass.
    Returns ``None`` when the model has no convolution layer or the tapped graph does
    not reproduce the model's output (checked once on a test input).
    """
    import keras
    import tensorflow as tf

    features = feature_map_tensor(model)
    if features is None:
        return None
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    tapped = keras.Model(inputs, [features, model.output])

    @tf.function(reduce_retracing=True)
    def graph(x):
        # Traced once per input shape: eager back-propagation through a backbone is
        # several times slower than the forward pass it explains.
        with tf.GradientTape() as tape:
            features, probabilities = tapped(x, training=False)
            score = tf.reduce_max(probabilities, axis=-1)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        return probabilities, tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))

    def call(batch: np.ndarray):
        probabilities, cam = graph(tf.convert_to_tensor(batch))
        cam = cam[0].numpy()
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else np.zeros_like(cam)
        cam = cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
        return np.asarray(probabilities[0], dtype=np.float64), cam

    probe = np.random.default_rng(0).random((1, size, size, 1), dtype=np.float32)
    reference = np.asarray(model(probe, training=False))[0]
    got, _ = call(probe)
    return call if np.allclose(got, reference, atol=1e-5) else None
