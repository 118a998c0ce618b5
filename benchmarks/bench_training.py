"""Training throughput: the real tf.data pipeline against the same batch from memory.

For the baseline CNN and MobileNetV2 (random weights), images per second of ``fit`` fed
by :func:`mammo_utils.pipeline.make_dataset` (decode from cache, augment, shuffle,
batch, prefetch) are compared with ``fit`` fed one fixed batch already in memory.
``pipeline_efficiency`` is their ratio: at 1.0 the input pipeline costs nothing, the
target is at least 0.9.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammo_utils.classes import CLASSES
from mammo_utils.preprocess import MANIFEST_FILE

SIZE = 64
IMAGES = 512
BATCH = 32
STEPS = 16
ROUNDS = 3
ARCHITECTURES = ("baseline", "mobilenetv2")


def _write_images(folder: Path, seed: int = 0) -> Path:
    """Textured 16-bit PNGs with a manifest (reused when already there)."""
    manifest = folder / MANIFEST_FILE
    if manifest.is_file():
        return folder
    rng = np.random.default_rng(seed)
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(IMAGES):
        coarse = rng.random((SIZE // 8, SIZE // 8), dtype=np.float32)
        image = cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        name = f"patches/{number:05d}.png"
        cv2.imwrite(str(folder / name), (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        rows.append({"path": name, "item_id": f"{number:05d}", "patient_id": f"P{number:05d}",
                     "split": "train", "label": CLASSES[number % len(CLASSES)]})
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return folder


def _images_per_second(model, dataset, steps: int) -> float:
    started = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
    return steps * BATCH / (time.perf_counter() - started)


def _measure(architecture: str, data_dir: Path) -> dict:
    import keras
    import tensorflow as tf

    from mammo_utils import models, pipeline

    keras.utils.set_random_seed(0)
    model = models.build_model(architecture, len(CLASSES), SIZE)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    real = pipeline.make_dataset(data_dir, "train", batch_size=BATCH, seed=0)
    batch = next(iter(real))
    memory = tf.data.Dataset.from_tensors(batch).repeat()
    # Warm-up: trace the train step and fill the decode cache (one pass over the images).
    _images_per_second(model, real, IMAGES // BATCH)
    _images_per_second(model, memory, 2)
    # Alternate the two feeds and keep the medians: the CPU is shared, timings drift.
    rounds = [(_images_per_second(model, memory, STEPS), _images_per_second(model, real, STEPS))
              for _ in range(ROUNDS)]
    from_memory = float(np.median([memory_rate for memory_rate, _ in rounds]))
    from_pipeline = float(np.median([pipeline_rate for _, pipeline_rate in rounds]))
    return {
        "pipeline_images_per_s": round(from_pipeline, 1),
        "memory_images_per_s": round(from_memory, 1),
        "pipeline_efficiency": round(from_pipeline / from_memory, 3),
        "parameters": models.parameter_count(model),
    }


def run(context: dict) -> dict:
    """Throughput per architecture at 64x64, batch 32, augmentation on (median of rounds)."""
    data_dir = _write_images(Path(context["work"]) / "patches")
    results = {name: _measure(name, data_dir) for name in ARCHITECTURES}
    return {"image_size": SIZE, "batch_size": BATCH, "steps": STEPS, "rounds": ROUNDS, **results,
            "target_pipeline_efficiency": 0.9}
