"""Preprocess fixtures: tiny hand-made mammograms, and processed synthetic data sets.

``make_breast`` and ``tiny_dataset`` build inputs without any other stage, so the
preprocess tests never wait for synth or ingest; ``synthetic_roi_data`` and
``synthetic_image_data`` run preprocessing on the synthetic ingest output for the
later stages' tests.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from mammo_utils.preprocess import PreprocessConfig, run_preprocess

#: Smoke settings: a 64 pixel patch at 320x256 holds a whole synthetic lesion.
SMOKE_SIZE = 64
SMOKE_WORKING_SIZE = (320, 256)


def make_breast(
    shape: tuple[int, int] = (640, 512), *, seed: int = 0, label: bool = True
) -> np.ndarray:
    """A [0, 1] breast-like half ellipse against the left edge, textured, with a bright
    burned-in label rectangle in the top-right corner (a separate blob)."""
    height, width = shape
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, dtype=np.float32)
    cv2.ellipse(image, (0, height // 2), (int(width * 0.6), int(height * 0.42)), 0, -90, 90,
                0.45, thickness=-1)
    texture = cv2.GaussianBlur(rng.random(shape, dtype=np.float32), (0, 0), 4) * 0.3
    image = np.where(image > 0, image + texture, 0).astype(np.float32)
    if label:
        image[20:60, width - 110 : width - 20] = 1.0
    return np.clip(image, 0, 1)


def plant_disk(image: np.ndarray, center: tuple[int, int], radius: int) -> np.ndarray:
    """A copy of ``image`` with a bright disk of ``radius`` at ``center`` (x, y)."""
    out = image.copy()
    cv2.circle(out, center, radius, 1.0, thickness=-1)
    return out


def write_png16(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.rint(np.clip(image, 0, 1) * 65535).astype(np.uint16))
    return path


def tiny_dataset(root: Path, *, corrupt: bool = True) -> tuple[Path, pd.DataFrame]:
    """An ingest-shaped index.csv + lesions.csv over six small PNG mammograms.

    Two images carry a mask-outlined mass, one a MIAS-style centre and radius, two are
    NORMAL (one facing right), and optionally one file is not an image at all.
    Returns the index path and the lesion table (with source disk centres).
    """
    images, lesions = [], []
    shape = (640, 512)
    specs = [  # image id, patient, split, label, mirrored, lesion centre, kind
        ("IMG_A", "P1", "train", "MALIGNANT", False, (120, 300), "mask"),
        ("IMG_B", "P1", "train", "BENIGN", True, (100, 250), "mask"),
        ("IMG_C", "P2", "val", "BENIGN", False, (150, 380), "centre"),
        ("IMG_D", "P2", "val", "NORMAL", False, None, None),
        ("IMG_E", "P3", "test", "NORMAL", True, None, None),
    ]
    for number, (image_id, patient, split, label, mirrored, centre, kind) in enumerate(specs):
        image = make_breast(shape, seed=number)
        mask = np.zeros(shape, dtype=np.float32)
        if centre is not None:
            image = plant_disk(image, centre, 12)
            cv2.circle(mask, centre, 12, 1.0, thickness=-1)
        if mirrored:
            image, mask = image[:, ::-1], mask[:, ::-1]
        path = write_png16(root / "images" / f"{image_id}.png", image)
        images.append({"image_id": image_id, "patient_id": patient, "dataset": "tiny",
                       "official_split": "none", "split": split, "label": label,
                       "image_path": str(path)})
        if centre is None:
            continue
        x = shape[1] - 1 - centre[0] if mirrored else centre[0]
        row = {"image_id": image_id, "abnormality_id": "1", "type": "mass",
               "pathology": label, "mask_path": "", "center_x": "", "center_y": "",
               "radius": "", "source_x": x, "source_y": centre[1]}
        if kind == "mask":
            row["mask_path"] = str(write_png16(root / "masks" / f"{image_id}_1.png", mask))
        else:
            row.update(center_x=x, center_y=centre[1], radius=12)
        lesions.append(row)
    if corrupt:
        bad = root / "images" / "IMG_BAD.png"
        bad.write_bytes(b"this is not an image")
        images.append({"image_id": "IMG_BAD", "patient_id": "P4", "dataset": "tiny",
                       "official_split": "none", "split": "train", "label": "NORMAL",
                       "image_path": str(bad)})
    index_path = root / "index.csv"
    pd.DataFrame(images).to_csv(index_path, index=False)
    lesion_frame = pd.DataFrame(lesions)
    lesion_frame.drop(columns=["source_x", "source_y"]).to_csv(root / "lesions.csv", index=False)
    return index_path, lesion_frame


#: A mini-MIAS table: a located mass, a calcification whose coordinates are a note
#: (location unknown), and two normal films.
MIAS_INFO = """\
REFNUM BG CLASS SEVERITY X Y RADIUS
mdb001 G CIRC B 150 524 14
mdb002 G NORM
mdb233 G CALC M *NOTE 3*
mdb234 G NORM
"""
MIAS_SIZE = 1024


def tiny_mias(root: Path) -> Path:
    """A mini-MIAS folder (``Info.txt`` and 1024x1024 8-bit PGMs) for :data:`MIAS_INFO`;
    ``mdb001`` has a bright disk at its listed centre (150, 500 from the top)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Info.txt").write_text(MIAS_INFO)
    for number, refnum in enumerate(("mdb001", "mdb002", "mdb233", "mdb234")):
        image = make_breast((MIAS_SIZE, MIAS_SIZE), seed=number)
        if refnum == "mdb001":
            image = plant_disk(image, (150, MIAS_SIZE - 524), 14)
        pixels = np.rint(image * 255).astype(np.uint8)
        header = f"P5\n{MIAS_SIZE} {MIAS_SIZE}\n255\n".encode()
        (root / f"{refnum}.pgm").write_bytes(header + pixels.tobytes())
    return root


def _interim_dir(synthetic_ingest) -> Path:
    """The folder holding index.csv, whether the ingest fixture gives it or a result."""
    candidate = Path(getattr(synthetic_ingest, "out_dir", synthetic_ingest))
    if not (candidate / "index.csv").is_file():
        raise FileNotFoundError(f"no index.csv in the synthetic ingest output {candidate}")
    return candidate


@pytest.fixture(scope="session")
def synthetic_roi_data(synthetic_ingest, tmp_path_factory) -> Path:
    """Processed folder of the synthetic set, ``roi`` task at smoke settings (64 @ 320x256)."""
    out = tmp_path_factory.mktemp("processed") / f"roi-{SMOKE_SIZE}"
    config = PreprocessConfig(task="roi", size=SMOKE_SIZE, working_size=SMOKE_WORKING_SIZE,
                              normal_per_image=1, patches_per_lesion=1, seed=0)
    run_preprocess(_interim_dir(synthetic_ingest) / "index.csv", out, config, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_image_data(synthetic_ingest, tmp_path_factory) -> Path:
    """Processed folder of the synthetic set, ``image`` task at 64 pixels."""
    out = tmp_path_factory.mktemp("processed") / f"image-{SMOKE_SIZE}"
    config = PreprocessConfig(task="image", size=SMOKE_SIZE, seed=0)
    run_preprocess(_interim_dir(synthetic_ingest) / "index.csv", out, config, progress=False)
    return out
