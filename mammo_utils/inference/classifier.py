"""The classifier: a model directory applied to one source, the way it was trained.

:class:`Classifier` reads a model directory's card and repeats the preprocessing the
model was trained with, through the very function preprocessing calls: decode
(:mod:`~mammo_utils.inference.sources`), then :func:`mammo_utils.breast.prepare_and_fit`
(breast mask, crop, canonical flip, pad and resize) to the card's canvas, rounded to the
16-bit steps of the training PNGs (:meth:`Classifier.fit_canvas`). Then, by input kind:

* ``image`` model, whole breast: one forward pass with a Grad-CAM heat map
  (:mod:`~mammo_utils.inference.gradcam`);
* ``roi`` model, whole breast: the patch scan (:mod:`~mammo_utils.inference.scan`),
  whose most suspicious patch decides;
* ``crop``: the lesion crop resized to the model input, one pass with Grad-CAM;
* ``breast`` (two-view) model: :meth:`Classifier.predict_breast` takes the CC and MLO
  of one breast (checked to be one patient and side by
  :mod:`~mammo_utils.inference.pairing`), fits each to the canvas and makes one pass
  with a Grad-CAM map per view (on the shared trunk's output for each view, scaled
  together). One file alone is refused or given as both views, as the model's
  preprocessing ``single_view`` option was when it trained.

Every kind ends with the same verdict (:mod:`~mammo_utils.inference.verdict`). The class
names and their order come from the model card and nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mammo_utils.breast import BreastGeometry, fit_to_shape, prepare_and_fit
from mammo_utils.domain import domain_differences
from mammo_utils.inference.exported import OnnxModel, load_onnx
from mammo_utils.inference.gradcam import GradCam, grad_cam_function
from mammo_utils.inference.pairing import check_same_breast, order_views, view_facts
from mammo_utils.inference.scan import (
    MAX_SCAN_PATCHES,
    PatchScan,
    scan_patch_count,
    scan_patches,
)
from mammo_utils.inference.sources import Source, load_source
from mammo_utils.inference.verdict import VerdictRule
from mammo_utils.preprocess.breast_task import VIEW_INPUTS
from mammo_utils.reader import ImageReadError

INPUT_KINDS: tuple[str, ...] = ("auto", "mammogram", "crop")

#: Metadata keys a prediction may carry: acquisition facts, never a patient identifier.
SAFE_METADATA_KEYS: tuple[str, ...] = (
    "format", "modality", "laterality", "view", "rows", "columns",
    "photometric_interpretation", "bits_stored", "transfer_syntax",
)

#: Longest side of the breast image shown for an image model or a crop.
DISPLAY_MAX_SIDE = 1024
#: Tasks a classifier serves: patches scanned, whole images, or breasts (two views).
TASKS: tuple[str, ...] = ("roi", "image", "breast")
#: How the warning of a prediction without a heat map (all zeros) begins.
NO_HEATMAP = "heat map unavailable"


@dataclass(frozen=True)
class Prediction:
    """What a model says about one image.

    ``probabilities`` follows the model card's class order; ``heatmap`` is a 2-D float
    map in [0, 1] over ``image`` (the preprocessed breast as displayed: cropped, flipped
    to the chest wall on the left and fitted to the model's canvas); ``metadata`` holds
    only non-identifying acquisition fields. ``breast_box`` is the breast's ``x0 y0 x1
    y1`` in source pixels (``None`` for a crop); ``out_of_domain`` names each way the
    image differs from the card's ``training_range``
    (:func:`mammo_utils.domain.domain_differences`), empty when none was found.
    ``geometry`` says how the source image was cropped, flipped and fitted to make
    ``image`` (``None`` for a crop, which is only resized), so the heat map can be laid
    back onto the source.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    heatmap: np.ndarray
    image: np.ndarray
    input_kind: str
    warnings: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    breast_box: tuple[int, int, int, int] | None = None
    out_of_domain: list[str] = field(default_factory=list)
    geometry: BreastGeometry | None = None

    @property
    def has_heatmap(self) -> bool:
        """Whether ``heatmap`` holds a map (else it is all zeros and a warning says why)."""
        return not any(warning.startswith(NO_HEATMAP) for warning in self.warnings)


class Classifier:
    """A trained model and its card, ready to classify images.

    Parameters
    ----------
    model : keras.Model or OnnxModel
        Takes ``float32 [batch, size, size, 1]`` in [0, 1], returns class probabilities
        (``predict_on_batch``). An :class:`~mammo_utils.inference.exported.OnnxModel`
        runs without TensorFlow and gives no Grad-CAM heat map.
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
    max_patches : int
        Most patches a ``roi`` model's scan may cut from one image
        (:data:`~mammo_utils.inference.scan.MAX_SCAN_PATCHES`); a ``stride`` that would cut
        more is refused here, before any image is read.
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
        max_patches: int = MAX_SCAN_PATCHES,
    ) -> None:
        self.model = model
        card = dict(card) if isinstance(card, Mapping) else dataclasses.asdict(card)
        self.card = card
        self.classes: tuple[str, ...] = tuple(card["classes"])
        self.task: str = card["task"]
        self.image_size = int(card["image_size"])
        working = card.get("working_size")
        self.working_size = tuple(int(v) for v in working) if working else None
        if self.task not in TASKS:
            raise ValueError(
                f"model card task must be one of {', '.join(TASKS)}, not {self.task!r}"
            )
        if self.task == "roi" and self.working_size is None:
            raise ValueError("a roi model card needs working_size ([height, width])")
        if stride is not None and int(stride) < 1:
            raise ValueError(f"stride must be at least 1 pixel, got {stride}")
        self.stride = max(1, self.image_size // 2) if stride is None else int(stride)
        if self.task == "roi":
            patches = scan_patch_count(self.working_size, self.image_size, self.stride)
            if patches > max_patches:
                raise ValueError(
                    f"a scan at stride {self.stride} cuts {patches} patches per image, more "
                    f"than the limit of {max_patches}; choose a larger stride or raise the "
                    "limit (max_patches, mammo predict --max-patches)"
                )
        self.rule = VerdictRule(self.classes, threshold)
        if min_tissue is None:
            min_tissue = (card.get("preprocessing") or {}).get("min_breast_fraction", 0.5)
        self.min_tissue = float(min_tissue)
        self.batch_size = int(batch_size)
        #: A breast model's answer to one file: ``exclude`` (refused) or ``duplicate``
        #: (the view given twice), as preprocessing treated single views for training.
        self.single_view: str | None = (
            (card.get("preprocessing") or {}).get("single_view", "exclude")
            if self.task == "breast" else None
        )

    @classmethod
    def from_dir(cls, model_dir: str | Path, **options) -> Classifier:
        """Load ``model.keras`` and ``model_card.json`` from a model directory, or an
        exported ``.onnx`` file and its sidecar (ONNX Runtime; TensorFlow is not imported)."""
        path = Path(model_dir)
        if path.suffix == ".onnx":
            model, card = load_onnx(path)
            return cls(model, card, **options)
        from mammo_utils.model_card import load_model_dir

        model, card = load_model_dir(path)
        return cls(model, card, **options)

    # ------------------------------------------------------------------ public API
    def predict(
        self, source: Source, *, name: str | None = None, input_kind: str = "auto"
    ) -> Prediction:
        """Classify a path, raw bytes, a numpy image or an ipywidgets upload value.

        Raises :class:`~mammo_utils.reader.ImageReadError` for a file that cannot be
        read or holds no breast, and ``ValueError`` for an unusable argument. A
        ``breast`` model takes one file here as :meth:`predict_breast` does.
        """
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {', '.join(INPUT_KINDS)}")
        if self.task == "breast":
            return self.predict_breast(source, names=(name, None))
        image, metadata, label = load_source(source, name=name)
        warnings = list(metadata.get("warnings") or [])
        if metadata.get("view") is None:
            warnings.append("view unknown (no CC/MLO tag): check this is a mammogram")
        kind = self._resolve_kind(input_kind, image, metadata)
        box = None
        if kind == "crop":
            result = self._predict_crop(image, warnings)
        else:
            try:
                canvas, mask, geometry = self.fit_canvas(image)
            except ValueError as exc:
                raise ImageReadError(label, str(exc)) from None
            box = tuple(int(v) for v in geometry.box)
            if self.task == "roi":
                result = self._predict_scan(canvas, mask, geometry, warnings)
            else:
                result = self._predict_whole(image, canvas, geometry, warnings)
        safe = {key: metadata.get(key) for key in SAFE_METADATA_KEYS if key in metadata}
        differences = domain_differences(self.card.get("training_range"), metadata, box)
        result.setdefault("geometry", None)
        return Prediction(**result, input_kind=kind, warnings=warnings, metadata=safe,
                          breast_box=box, out_of_domain=differences)

    def predict_breast(
        self, first: Source, second: Source | None = None, *,
        names: tuple[str | None, str | None] = (None, None),
    ) -> Prediction:
        """Classify one breast from its CC and MLO files (a ``breast`` model only).

        The files may come in either order (the views' tags decide, else the order
        given is CC, MLO). Raises
        :class:`~mammo_utils.inference.pairing.BreastMismatchError` (a ``ValueError``)
        naming both files when they record different patients or sides, or the same
        view twice; with one file, ``ValueError`` unless the model was trained with
        ``single_view: duplicate``, which gives that view as both. The prediction's
        ``image`` shows the two fitted views side by side, CC left, and ``heatmap`` the
        Grad-CAM map of each view over it (scaled together, so the view that drove the
        answer is the brighter).
        """
        if self.task != "breast":
            raise ValueError(f"predict_breast needs a breast (two-view) model, not a "
                             f"{self.task} model; use predict()")
        loaded, warnings = self._breast_views(first, second, names)
        canvases = []
        for image, metadata, label in loaded:
            warnings += [note for note in (metadata.get("warnings") or []) if note not in warnings]
            try:
                canvas, _, _ = self.fit_canvas(image)
            except ValueError as exc:
                raise ImageReadError(label, str(exc)) from None
            canvases.append(canvas)
        batch = [canvas[np.newaxis, :, :, np.newaxis].astype(np.float32) for canvas in canvases]
        display = np.hstack(canvases).astype(np.float32)
        cam = self.grad_cam
        if cam is None:
            probabilities = np.asarray(self.model.predict_on_batch(
                dict(zip(VIEW_INPUTS, batch, strict=True))), dtype=np.float64)[0]
            heatmap = np.zeros_like(display)
            warnings.append("heat map unavailable: no convolution layer could be tapped")
        else:
            probabilities, maps = cam(batch)
            heatmap = np.hstack(list(maps))
        result = self._outcome(probabilities, np.clip(heatmap, 0.0, 1.0).astype(np.float32),
                               display, warnings)
        metadata = loaded[0][1]
        safe = {key: metadata.get(key) for key in SAFE_METADATA_KEYS if key in metadata}
        safe["view"] = "CC+MLO" if second is not None else metadata.get("view")
        return Prediction(**result, input_kind="breast", warnings=warnings, metadata=safe)

    def _breast_views(self, first: Source, second: Source | None, names) -> tuple[list, list]:
        """The decoded ``(image, metadata, label)`` of the CC and the MLO, in that order,
        and the warnings of the pairing (see :meth:`predict_breast`)."""
        loaded = [load_source(first, name=names[0])]
        if second is None:
            label = loaded[0][2]
            if self.single_view != "duplicate":
                raise ValueError(
                    f"{label}: this two-view model needs the CC and MLO of one breast (it "
                    "was trained with single_view: exclude); give both files"
                )
            return [loaded[0], loaded[0]], [
                f"one view only: {label} given as both CC and MLO, as the model was "
                "trained (single_view: duplicate)"]
        loaded.append(load_source(second, name=names[1]))
        facts = [view_facts(source, label, metadata) for source, (_, metadata, label)
                 in zip((first, second), loaded, strict=True)]
        warnings = check_same_breast(*facts)
        cc, mlo, notes = order_views(*facts)
        return [loaded[cc], loaded[mlo]], warnings + notes

    @property
    def threshold(self) -> float | None:
        """Smallest probability a non-normal label needs (``None``: no minimum)."""
        return self.rule.threshold

    @property
    def canvas_shape(self) -> tuple[int, int]:
        """``(height, width)`` of the canvas a mammogram is fitted to: the preprocess
        config's ``working_size`` for a ``roi`` model, ``size`` x ``size`` for an ``image``
        model (the card copies them as ``working_size`` and ``image_size``)."""
        if self.task == "roi":
            return self.working_size
        return self.image_size, self.image_size  # image and breast models alike

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

    def scan(self, canvas: np.ndarray, mask: np.ndarray | None = None) -> PatchScan:
        """The patch scan of a canvas from :meth:`fit_canvas` with this model, at its
        ``stride``, skipping patches with less than ``min_tissue`` of ``mask``."""
        return scan_patches(canvas, self.forward, size=self.image_size, stride=self.stride,
                            mask=mask, min_tissue=self.min_tissue, batch_size=self.batch_size)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for ``[n, size, size, 1]`` inputs, in batches."""
        outputs = [
            self.model.predict_on_batch(batch[start : start + self.batch_size])
            for start in range(0, len(batch), self.batch_size)
        ]
        return np.concatenate(outputs).astype(np.float64)

    @cached_property
    def grad_cam(self) -> GradCam | None:
        """This model's Grad-CAM function, built on first use (``None`` when it has no
        convolution to tap, or for an ONNX model, whose gradients Keras cannot reach; see
        :func:`~mammo_utils.inference.gradcam.grad_cam_function`;
        a two-view model's gives one map per view)."""
        if isinstance(self.model, OnnxModel):
            return None
        return grad_cam_function(self.model, self.image_size)

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
        display, pad_top, scale = fit_to_shape(crop, (side, side), mirror=geometry.flipped)
        shown = dataclasses.replace(geometry, shape=(side, side), pad_top=pad_top, scale=scale)
        return {**self._single_pass(model_input, display, warnings), "geometry": shown}

    def _single_pass(self, model_input: np.ndarray, display: np.ndarray, warnings) -> dict:
        """One forward pass with a Grad-CAM map of the winning class."""
        batch = model_input[np.newaxis, :, :, np.newaxis].astype(np.float32)
        cam = self.grad_cam
        if cam is None:
            probabilities = self.forward(batch)[0]
            heatmap = np.zeros(display.shape, dtype=np.float32)
            warnings.append(
                f"{NO_HEATMAP}: Grad-CAM needs the Keras model (model.keras), not an ONNX "
                "export" if isinstance(self.model, OnnxModel)
                else f"{NO_HEATMAP}: no convolution layer could be tapped"
            )
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
        label, confidence, warning = self.rule.decide(probabilities, shortfall)
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
        scan = self.scan(canvas, mask)
        if scan.used_all:
            warnings.append("no patch lies mostly on breast tissue: every patch was scanned")
        vector = scan.probabilities[self.rule.decisive_patch(scan.probabilities)]
        return {**self._outcome(vector, self.rule.suspicion(scan.class_maps), canvas, warnings,
                                "no patch reached"), "geometry": geometry}


def as_trained(image: np.ndarray) -> np.ndarray:
    """Round a [0, 1] image to 16-bit steps, as the training PNGs stored it."""
    return (np.rint(np.clip(image, 0.0, 1.0) * 65535.0) / 65535.0).astype(np.float32)


def _fit_display(image: np.ndarray) -> np.ndarray:
    """The image scaled down (never up) so its longest side is at most DISPLAY_MAX_SIDE."""
    factor = DISPLAY_MAX_SIDE / max(image.shape)
    if factor >= 1:
        return image.astype(np.float32)
    size = (max(1, round(image.shape[1] * factor)), max(1, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
