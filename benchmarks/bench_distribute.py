"""Training throughput on one device, mirrored over two devices, and over two workers.

``mammo train`` runs the baseline CNN in fresh processes, as a user would: with
``--distribute none``, with ``mirrored`` over two logical CPU devices, and with
``multi-worker`` as two local processes (``TF_CONFIG`` on 127.0.0.1), always on the
same global batch. Each setting trains once for ``SHORT`` and once for ``LONG`` epochs;
the difference of the two training times (the card's ``training_time_s``) is the time
of ``LONG - SHORT`` epochs without start-up and graph building. ``overhead`` is the
single device's throughput over the setting's minus 1: what the distributed path costs
on hardware that gains nothing from it (two logical devices share the same cores).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mammo_utils.classes import CLASSES
from mammo_utils.model_card import CARD_FILE
from mammo_utils.preprocess import CONFIG_FILE, MANIFEST_FILE

SIZE = 32
TRAIN_IMAGES = 256
VAL_IMAGES = 64
GLOBAL_BATCH = 32
SHORT, LONG = 1, 4
REPO = Path(__file__).resolve().parents[1]


def _write_images(folder: Path, seed: int = 0) -> Path:
    """Textured 16-bit PNGs, one patient each, with a manifest (reused when there)."""
    if (folder / MANIFEST_FILE).is_file():
        return folder
    rng = np.random.default_rng(seed)
    (folder / "patches").mkdir(parents=True, exist_ok=True)
    rows = []
    for number in range(TRAIN_IMAGES + VAL_IMAGES):
        coarse = rng.random((SIZE // 8, SIZE // 8), dtype=np.float32)
        image = cv2.resize(coarse, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        name = f"patches/{number:05d}.png"
        cv2.imwrite(str(folder / name), (np.clip(image, 0, 1) * 65535).astype(np.uint16))
        rows.append({"path": name, "item_id": f"{number:05d}", "patient_id": f"P{number:05d}",
                     "split": "train" if number < TRAIN_IMAGES else "val",
                     "label": CLASSES[number % len(CLASSES)]})
    pd.DataFrame(rows).to_csv(folder / MANIFEST_FILE, index=False)
    (folder / CONFIG_FILE).write_text(json.dumps({"task": "roi", "size": SIZE}))
    return folder


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


def _training_time(data: Path, out: Path, epochs: int, setting: str) -> float:
    """Seconds of training that the chief's card records for one run of ``setting``."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "mammo_utils", "train", "--data", str(data),
               "--epochs", str(epochs), "--patience", str(LONG), "--no-augment"]
    if setting == "one_device":
        runs = [(out, ["--distribute", "none", "--batch-size", str(GLOBAL_BATCH)], env)]
    elif setting == "mirrored_2_devices":
        runs = [(out, ["--distribute", "mirrored", "--cpu-devices", "2",
                       "--batch-size", str(GLOBAL_BATCH // 2)], env)]
    else:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
        runs = [
            (out if index == 0 else out.with_name(f"{out.name}-worker{index}"),
             ["--distribute", "multi-worker", "--batch-size", str(GLOBAL_BATCH // 2)],
             {**env, "TF_CONFIG": json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": index}})})
            for index in range(2)
        ]
    processes = [
        subprocess.Popen([*command, "--out", str(folder), *options], env=run_env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for folder, options, run_env in runs
    ]
    for process in processes:
        _, errors = process.communicate(timeout=900)
        if process.returncode != 0:
            raise RuntimeError(f"{setting}: mammo train failed: {errors[-2000:]}")
    return float(json.loads((out / CARD_FILE).read_text())["training"]["training_time_s"])


def run(context: dict) -> dict:
    """Images per second of training epochs for each setting (median-free: one run each,
    on a shared CPU these drift by about 10 %)."""
    work = Path(context["work"])
    data = _write_images(work / "patches")
    steps = TRAIN_IMAGES // GLOBAL_BATCH
    results = {}
    for setting in ("one_device", "mirrored_2_devices", "two_workers"):
        short = _training_time(data, work / "models" / f"{setting}-{SHORT}", SHORT, setting)
        long = _training_time(data, work / "models" / f"{setting}-{LONG}", LONG, setting)
        seconds = long - short
        results[setting] = {
            "images_per_s": round((LONG - SHORT) * steps * GLOBAL_BATCH / seconds, 1),
            "epoch_s": round(seconds / (LONG - SHORT), 3),
            "startup_and_first_epoch_s": round(short, 2),
        }
    single = results["one_device"]["images_per_s"]
    for setting in ("mirrored_2_devices", "two_workers"):
        results[setting]["overhead"] = round(single / results[setting]["images_per_s"] - 1, 3)
    return {"architecture": "baseline", "image_size": SIZE, "train_images": TRAIN_IMAGES,
            "global_batch_size": GLOBAL_BATCH, "cpu_count": os.cpu_count(), **results}
