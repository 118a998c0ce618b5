"""Classify one mammogram, lesion crop or breast (CC and MLO) with a trained model directory.

``Classifier.from_dir(model_dir).predict(source)`` gives a :class:`Prediction`: label,
confidence, per-class probabilities, a heat map over the preprocessed breast, warnings
and non-identifying metadata. One job per module:

=================  ==================================================================
``classifier``     :class:`Classifier` and :class:`Prediction`: the card's preprocessing,
                   the input kinds, and how their parts are put together
``verdict``        the decisive-patch and threshold rule (pure numpy)
``scan``           the whole-breast patch scan of a patch (``roi``) model, batched
``sources``        a path, bytes, numpy array or ipywidgets upload value, decoded by
                   :func:`mammo_utils.reader.read_image`
``gradcam``        Grad-CAM heat maps from the last convolution (public Keras API only),
                   one per view for a two-view model
``pairing``        whether two files are the CC and MLO of one breast (patient, side)
``exported``       the sidecar of an exported model, and :class:`OnnxModel` (ONNX Runtime)
=================  ==================================================================
"""

from mammo_utils.inference.classifier import (
    DISPLAY_MAX_SIDE,
    INPUT_KINDS,
    NO_HEATMAP,
    SAFE_METADATA_KEYS,
    Classifier,
    Prediction,
    as_trained,
)
from mammo_utils.inference.exported import (
    SIDECAR_SUFFIX,
    ExportedModelError,
    OnnxModel,
    load_onnx,
    read_sidecar,
    sidecar_path,
)
from mammo_utils.inference.gradcam import grad_cam_function, last_convolution_layer
from mammo_utils.inference.pairing import BreastMismatchError
from mammo_utils.inference.scan import (
    MAX_SCAN_PATCHES,
    PatchScan,
    patch_corners,
    scan_patch_count,
    scan_patches,
)
from mammo_utils.inference.sources import load_source, upload_content
from mammo_utils.inference.verdict import BACKGROUND_CLASSES, Verdict, VerdictRule

__all__ = [
    "BACKGROUND_CLASSES",
    "BreastMismatchError",
    "DISPLAY_MAX_SIDE",
    "INPUT_KINDS",
    "MAX_SCAN_PATCHES",
    "NO_HEATMAP",
    "SAFE_METADATA_KEYS",
    "SIDECAR_SUFFIX",
    "Classifier",
    "ExportedModelError",
    "OnnxModel",
    "PatchScan",
    "Prediction",
    "Verdict",
    "VerdictRule",
    "as_trained",
    "grad_cam_function",
    "last_convolution_layer",
    "load_onnx",
    "load_source",
    "patch_corners",
    "scan_patch_count",
    "read_sidecar",
    "scan_patches",
    "sidecar_path",
    "upload_content",
]
