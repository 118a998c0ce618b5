"""Whole-breast scan speed, the cost of an image-level evaluation of a roi model.

The image level scans every test mammogram through :meth:`Classifier.fit_canvas` and
:meth:`Classifier.scan` (:mod:`mammo_utils.evaluate`), so its speed decides how long
``mammo evaluate`` takes. On the real CBIS-DDSM DICOM of ``bench_inference``, with the
baseline roi model at the default 1152x896 working size (224 px patches, stride 112):

* ``scan_images_per_s``: mammograms fitted and scanned per second (reading excluded);
* ``scan_patches``: patches on breast tissue, each through the whole model;
* ``trunk_pass_s``: one forward pass over the canvas's pixels cut into non-overlapping
  patches (``ceil(H / 224) * ceil(W / 224)`` of them), what a scan without overlap
  would cost;
* ``scan_to_trunk_ratio``: scan time over that pass. A stride of half a patch computes
  each tissue pixel about four times, while the tissue rule skips background patches:
  above 1, the overlap costs more than the skipping saves and a fully convolutional
  pass over the canvas would be faster; below 1 (measured 0.33 on 2 busy CPU cores,
  8 tissue patches against 24 tiles), the patch scan is the cheaper of the two.

Timings are medians of ``REPEATS`` runs after a warm-up (see ``bench_inference``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.bench_inference import SIZE, WORKING, _median_time, _model_dir, _real_dicom
from mammo_utils.inference import Classifier
from mammo_utils.reader import read_image


def run(context: dict) -> dict:
    work = Path(context["work"])
    image, _ = read_image(_real_dicom())
    classifier = Classifier.from_dir(_model_dir(work / "baseline_roi", "baseline", "roi"))
    canvas, mask, _ = classifier.fit_canvas(image)

    def scan():
        fitted, tissue, _ = classifier.fit_canvas(image)
        return classifier.scan(fitted, tissue)

    scan_s = _median_time(scan)
    tiles = math.ceil(WORKING[0] / SIZE) * math.ceil(WORKING[1] / SIZE)
    batch = np.zeros((tiles, SIZE, SIZE, 1), dtype=np.float32)
    trunk_s = _median_time(lambda: classifier.forward(batch))
    return {
        "working_size": list(WORKING),
        "patch": SIZE,
        "stride": classifier.stride,
        "batch_size": classifier.batch_size,
        "scan_patches": len(classifier.scan(canvas, mask).probabilities),
        "scan_s": round(scan_s, 3),
        "scan_images_per_s": round(1.0 / scan_s, 3),
        "trunk_tiles": tiles,
        "trunk_pass_s": round(trunk_s, 3),
        "scan_to_trunk_ratio": round(scan_s / trunk_s, 2),
    }
