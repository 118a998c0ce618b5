"""Training-stage fixtures: ROI data sets with a known answer.

``synthetic_known_answer_roi_data`` is the project's synthetic CBIS-DDSM set run through
ingest and preprocessing, large enough for a stable validation AUC: the issue's known
answer, which catches label-order and pipeline bugs end to end.

``known_answer_roi_data`` is hand-drawn and small, for fast tests (``tiny_roi_data``, the
same drawings for a handful of patients, for tests that train large backbones). Each class draws a
shape a small CNN learns in seconds, on the same noisy tissue background: NORMAL is
tissue alone, BENIGN_WITHOUT_CALLBACK scattered bright dots, BENIGN a round blob,
MALIGNANT a spiky (stellate) blob. A model that scores poorly on it has a label-order
or pipeline bug, not a hard problem. Both layouts match the preprocess stage's output
(manifest.csv, preprocess_config.json, 16-bit PNGs).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammo_utils.classes import CLASSES
from mammo_utils.training_config import TrainingConfig

KNOWN_ANSWER_SIZE = 32


def _tissue(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth low-contrast background noise around mid grey."""
    coarse = rng.normal(0.0, 1.0, (size // 4, size // 4)).astype(np.float32)
    smooth = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    return 0.35 + 0.04 * smooth + rng.normal(0.0, 0.01, (size, size)).astype(np.float32)


def _draw(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    image = _tissue(rng, size)
    canvas = np.zeros((size, size), np.float32)
    centre = rng.uniform(size * 0.4, size * 0.6, 2)
    cx, cy = int(centre[0]), int(centre[1])
    if label == "BENIGN_WITHOUT_CALLBACK":
        for x, y in rng.integers(4, size - 4, (int(rng.integers(6, 10)), 2)):
            cv2.circle(canvas, (int(x), int(y)), 1, 1.0, -1)
    elif label == "BENIGN":
        cv2.circle(canvas, (cx, cy), int(rng.integers(6, 9)), 1.0, -1)
        canvas = cv2.GaussianBlur(canvas, (5, 5), 1.5)
    elif label == "MALIGNANT":
        cv2.circle(canvas, (cx, cy), 3, 1.0, -1)
        for angle in rng.uniform(0, 2 * np.pi, int(rng.integers(6, 9))):
            length = rng.uniform(10, 14)
            tip = (int(cx + length * np.cos(angle)), int(cy + length * np.sin(angle)))
            cv2.line(canvas, (cx, cy), tip, 1.0, 1)
    return np.clip(image + 0.45 * canvas, 0.0, 1.0)


def write_known_answer_dataset(
    out_dir: Path, patients: dict[str, int], size: int = KNOWN_ANSWER_SIZE, seed: int = 0
) -> Path:
    """Write one patch per class per patient, patients grouped into splits.

    ``patients`` maps a split name to its number of patients. Returns the folder holding
    ``manifest.csv`` and ``preprocess_config.json``.
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    patient = 0
    for split, count in patients.items():
        for _ in range(count):
            patient += 1
            for label in CLASSES:
                item_id = f"P_{patient:05d}_{label}"
                name = f"patches/{item_id}.png"
                (out_dir / "patches").mkdir(exist_ok=True)
                pixels = np.round(_draw(label, rng, size) * 65535).astype(np.uint16)
                cv2.imwrite(str(out_dir / name), pixels)
                rows.append({
                    "path": name, "item_id": item_id, "image_id": f"P_{patient:05d}_LEFT_CC",
                    "patient_id": f"P_{patient:05d}", "split": split, "label": label,
                    "dataset": "known-answer", "kind": "normal" if label == "NORMAL" else "lesion",
                })
    pd.DataFrame(rows).to_csv(out_dir / "manifest.csv", index=False)
    config = {"task": "roi", "size": size, "working_size": [320, 256], "normal_per_image": 1,
              "jitter": 0, "seed": seed, "index_sha256": "known-answer",
              "datasets": ["known-answer"]}
    (out_dir / "preprocess_config.json").write_text(json.dumps(config, indent=2))
    return out_dir


#: The synthetic set of the known-answer test. The shared ``synthetic_roi_data`` (16
#: patients) leaves two or fewer validation patches for some classes; 120 patients with a
#: quarter of them in validation give 12 to 18 per lesion class.
KNOWN_ANSWER_SYNTHETIC = {"patients": 120, "seed": 0, "size": "small"}
KNOWN_ANSWER_VAL_FRACTION = 0.25
#: 64 pixel patches, cut at 640x512 rather than the 320x256 smoke size: a lesion then
#: fills a third to all of the patch. Three jittered views per lesion triple the scarce
#: lesion examples (all in the lesion's split).
KNOWN_ANSWER_PREPROCESS = {"task": "roi", "size": 64, "working_size": (640, 512),
                           "normal_per_image": 1, "patches_per_lesion": 3, "seed": 0}


@pytest.fixture(scope="session")
def synthetic_known_answer_roi_data(tmp_path_factory) -> Path:
    """Processed ``roi`` folder of a 120-patient synthetic set (about 30 s on 2 cores)."""
    from mammo_utils.ingest import ingest
    from mammo_utils.preprocess import PreprocessConfig, run_preprocess
    from mammo_utils.synth import generate_dataset

    root = tmp_path_factory.mktemp("synthetic_known_answer")
    generate_dataset(root / "synthetic", progress=False, **KNOWN_ANSWER_SYNTHETIC)
    interim = root / "interim"
    interim.mkdir()
    ingest("cbis-ddsm", root / "synthetic", val_fraction=KNOWN_ANSWER_VAL_FRACTION,
           seed=KNOWN_ANSWER_SYNTHETIC["seed"], cache_path=interim / "dicom_headers.csv",
           ).save(interim)
    out = root / "roi-64"
    run_preprocess(interim / "index.csv", out, PreprocessConfig(**KNOWN_ANSWER_PREPROCESS),
                   progress=False)
    return out


@pytest.fixture(scope="session")
def known_answer_baseline(synthetic_known_answer_roi_data, tmp_path_factory):
    """The baseline trained once on the 120-patient synthetic roi set (about 1.5 min on 2
    cores), shared by the patch-level and the image-level known-answer tests."""
    from mammo_utils.train import train
    from mammo_utils.training_config import TrainingConfig

    config = TrainingConfig(epochs=20, batch_size=32, seed=0, patience=20, augment=False)
    out = tmp_path_factory.mktemp("known_answer_baseline") / "baseline"
    return train(synthetic_known_answer_roi_data, out, config, verbose=0)


@pytest.fixture(scope="session")
def known_answer_roi_data(tmp_path_factory) -> Path:
    """Processed folder of known-answer patches: 48 train, 12 val, 8 test patients,
    one 32x32 patch per class each."""
    out = tmp_path_factory.mktemp("known_answer_roi")
    return write_known_answer_dataset(out, {"train": 48, "val": 12, "test": 8})


@pytest.fixture(scope="session")
def tiny_roi_data(tmp_path_factory) -> Path:
    """Known-answer patches of 4 train, 2 val and 1 test patients (16, 8 and 4 patches):
    two batches of 8 per epoch, so a backbone's training time is mostly graph building."""
    out = tmp_path_factory.mktemp("tiny_roi")
    return write_known_answer_dataset(out, {"train": 4, "val": 2, "test": 1})


#: A derangement of the four-class order (no class keeps its unit, and it is not the
#: reversal), so a pipeline that ignored the requested order could not pass by luck.
PERMUTED_CLASSES: tuple[str, ...] = ("BENIGN", "MALIGNANT", "NORMAL", "BENIGN_WITHOUT_CALLBACK")


#: How ``permuted_known_answer_model`` is trained.
PERMUTED_CONFIG = TrainingConfig(epochs=12, batch_size=16, class_order=PERMUTED_CLASSES,
                                 seed=0, patience=8)


@pytest.fixture(scope="session")
def permuted_known_answer_model(known_answer_roi_data, tmp_path_factory):
    """The baseline trained on the known-answer patches as :data:`PERMUTED_CONFIG` says,
    output order :data:`PERMUTED_CLASSES` (a ``TrainResult``; about 20 s on 2 cores)."""
    from mammo_utils.train import train

    out = tmp_path_factory.mktemp("models") / "permuted_baseline"
    return train(known_answer_roi_data, out, PERMUTED_CONFIG, verbose=0)


#: The real-scale known answer: the issue's commands, every setting at its default
#: (224-pixel patches cut at 1152x896, the default recipe). ``mammo synth --patients 40
#: --seed 11``, ``mammo ingest cbis-ddsm``, ``mammo preprocess --task roi``, ``mammo train
#: --seed REAL_SCALE_TRAIN_SEED``.
REAL_SCALE_SYNTH_ARGS = ("--patients", "40", "--seed", "11")
REAL_SCALE_TRAIN_SEED = 1


@pytest.fixture(scope="session")
def real_scale_baseline(tmp_path_factory):
    """The baseline trained by the issue's commands at the real working scale, through the
    ``mammo`` CLI with its defaults (about 4 min on 2 idle cores); its model card."""
    from mammo_utils.cli import main as mammo
    from mammo_utils.model_card import ModelCard

    root = tmp_path_factory.mktemp("real_scale")
    steps = [
        ["synth", "--out", str(root / "raw"), "--quiet", *REAL_SCALE_SYNTH_ARGS],
        ["ingest", "cbis-ddsm", "--root", str(root / "raw"), "--out", str(root / "interim")],
        ["preprocess", "--index", str(root / "interim" / "index.csv"), "--task", "roi",
         "--out", str(root / "roi"), "--workers", "2"],
        ["train", "--data", str(root / "roi"), "--out", str(root / "baseline"),
         "--model", "baseline", "--weights", "none", "--seed", str(REAL_SCALE_TRAIN_SEED)],
    ]
    for argv in steps:
        assert mammo(argv) == 0, argv
    return ModelCard.load(root / "baseline")
