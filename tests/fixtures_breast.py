"""Two-view (``breast`` task) fixtures: a toy ingest index of small PNG mammograms.

Each file is named ``<patient>_<LEFT|RIGHT>_<CC|MLO>.png``, the way CBIS-DDSM names its
series, so the reader and the pairing check find laterality and view in the name.
Patients P1 to P6 have both views of their left breast (spread over train, val and
test); P7 has a right MLO only, the single-view breast the options decide about.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

#: Canvas side of the toy breast set: small enough to train in seconds.
BREAST_SIZE = 32

#: patient, split, laterality, view, label
TOY_VIEWS: tuple[tuple[str, str, str, str, str], ...] = (
    ("P1", "train", "LEFT", "CC", "MALIGNANT"),
    ("P1", "train", "LEFT", "MLO", "NORMAL"),
    ("P2", "train", "LEFT", "CC", "NORMAL"),
    ("P2", "train", "LEFT", "MLO", "NORMAL"),
    ("P3", "train", "LEFT", "CC", "BENIGN"),
    ("P3", "train", "LEFT", "MLO", "BENIGN"),
    ("P4", "train", "LEFT", "CC", "NORMAL"),
    ("P4", "train", "LEFT", "MLO", "MALIGNANT"),
    ("P5", "val", "LEFT", "CC", "MALIGNANT"),
    ("P5", "val", "LEFT", "MLO", "MALIGNANT"),
    ("P6", "test", "LEFT", "CC", "NORMAL"),
    ("P6", "test", "LEFT", "MLO", "NORMAL"),
    ("P7", "train", "RIGHT", "MLO", "BENIGN"),
)


def write_toy_breast_index(root: Path) -> Path:
    """Write the PNGs of :data:`TOY_VIEWS` and their ingest-shaped ``index.csv``."""
    # Imported here: a fixture module imported while plugins load escapes pytest's
    # assertion rewriting.
    from fixtures_preprocess import make_breast, plant_disk, write_png16

    rows = []
    for number, (patient, split, side, view, label) in enumerate(TOY_VIEWS):
        image = make_breast((160, 128), seed=number, label=False)
        if label != "NORMAL":
            image = plant_disk(image, (40, 80), 10)
        if side == "RIGHT":
            image = image[:, ::-1]
        image_id = f"{patient}_{side}_{view}"
        path = write_png16(root / "images" / f"{image_id}.png", image)
        rows.append({
            "image_id": image_id, "patient_id": patient, "dataset": "toy",
            "official_split": "none", "split": split, "laterality": side, "view": view,
            "label": label, "abnormality_types": "", "n_abnormalities": 0,
            "breast_density": "", "image_path": str(path),
        })
    index = root / "interim" / "index.csv"
    index.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(index, index=False)
    return index


@pytest.fixture(scope="session")
def toy_breast_index(tmp_path_factory) -> Path:
    """``index.csv`` of the toy two-view set (:data:`TOY_VIEWS`)."""
    return write_toy_breast_index(tmp_path_factory.mktemp("toy_breast"))


@pytest.fixture(scope="session")
def toy_breast_data(toy_breast_index) -> Path:
    """The toy set preprocessed by the ``breast`` task (single view duplicated), in the
    workspace layout ``data/processed/<key>/breast-32`` beside ``data/interim/<key>``."""
    from mammo_utils.preprocess import PreprocessConfig, run_preprocess

    root = toy_breast_index.parent.parent / "data"
    interim = root / "interim" / "toy"
    interim.mkdir(parents=True)
    index = interim / "index.csv"
    index.write_bytes(toy_breast_index.read_bytes())
    out = root / "processed" / "toy" / f"breast-{BREAST_SIZE}"
    config = PreprocessConfig(task="breast", size=BREAST_SIZE, single_view="duplicate")
    run_preprocess(index, out, config, progress=False)
    return out


@pytest.fixture(scope="session")
def toy_breast_model(toy_breast_data, tmp_path_factory):
    """The baseline two-view model trained one epoch on :func:`toy_breast_data`."""
    from mammo_utils.train import train
    from mammo_utils.training_config import TrainingConfig

    config = TrainingConfig(epochs=1, batch_size=2, seed=0, augment=True)
    out = tmp_path_factory.mktemp("breast_models") / "baseline_two_view"
    return train(toy_breast_data, out, config, verbose=0)


def toy_view_file(index: Path, image_id: str) -> Path:
    """The PNG of one toy view."""
    return index.parent.parent / "images" / f"{image_id}.png"

