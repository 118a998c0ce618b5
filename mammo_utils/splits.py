"""Patient-grouped, label-stratified, seeded train/val/test splits.

Images of one woman are strongly correlated (two views, two breasts, the same
acquisition), so every split is drawn over patients, never over images, and
``assert_no_patient_leakage`` is the single check that ingest, preprocessing and
training all run before they trust a ``split`` column.

Rules of :func:`assign_splits`:

* a patient with any image whose ``official_split`` is ``test`` goes wholly to
  ``test`` (CBIS-DDSM keeps its official test set; a patient listed in both the
  official training and test files, such as ``P_00041``, lands in test);
* the remaining patients officially in ``train`` are split into ``train`` and
  ``val`` only when the frame has an official test set, so the official test is
  the one test set;
* patients without an official split (MIAS, a folder, synthetic normals) are split
  into ``train``, ``val`` and ``test`` by the fractions;
* within each pool, patients are ordered by their most severe label and shuffled
  with the seed, then drawn by systematic sampling, so every label keeps its share
  in every split and each split gets the floor or the ceiling of its target count.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo_utils.classes import CLASSES, most_severe

SPLITS: tuple[str, ...] = ("train", "val", "test")


class PatientLeakageError(ValueError):
    """Images of one patient found in more than one split."""

    def __init__(self, leaks: dict[str, list[str]]) -> None:
        self.leaks = leaks
        shown = "; ".join(f"{patient}: {', '.join(splits)}" for patient, splits in leaks.items())
        super().__init__(f"{len(leaks)} patient(s) appear in more than one split: {shown}")


def assert_no_patient_leakage(
    frame: pd.DataFrame, patient_col: str = "patient_id", split_col: str = "split"
) -> None:
    """Raise :class:`PatientLeakageError` naming every patient found in several splits."""
    for column in (patient_col, split_col):
        if column not in frame.columns:
            raise KeyError(f"cannot check patient leakage: no column {column!r}")
    splits_per_patient = frame.groupby(patient_col)[split_col].unique()
    leaks = {
        str(patient): sorted(str(split) for split in splits)
        for patient, splits in splits_per_patient.items()
        if len(splits) > 1
    }
    if leaks:
        raise PatientLeakageError(leaks)


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"val_fraction + test_fraction must leave patients for training, "
            f"got {val_fraction} + {test_fraction}"
        )


def _systematic_pick(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask picking ``floor`` or ``ceil`` of ``n * fraction`` items spread evenly."""
    if n == 0 or fraction <= 0.0:
        return np.zeros(n, dtype=bool)
    start = rng.random()
    edges = np.floor(np.arange(n + 1) * fraction + start)
    return np.diff(edges) > 0


def _stratified_order(patients: pd.Series, rng: np.random.Generator) -> list[str]:
    """Patient ids ordered by label severity, shuffled within each label."""
    order: list[str] = []
    for label in CLASSES:
        members = [str(patient) for patient in patients.index[patients == label]]
        order.extend(members[i] for i in rng.permutation(len(members)))
    return order


def _split_pool(
    patients: pd.Series, fractions: dict[str, float], rng: np.random.Generator
) -> dict[str, str]:
    """Assign a pool of patients (index: id, value: label) to splits by ``fractions``."""
    remaining = _stratified_order(patients, rng)
    assignment: dict[str, str] = {}
    left = 1.0
    for split, fraction in fractions.items():
        picked = _systematic_pick(len(remaining), fraction / left, rng)
        assignment.update(
            {patient: split for patient, hit in zip(remaining, picked, strict=True) if hit}
        )
        remaining = [patient for patient, hit in zip(remaining, picked, strict=True) if not hit]
        left -= fraction
    assignment.update({patient: "train" for patient in remaining})
    return assignment


def assign_splits(
    index: pd.DataFrame,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    *,
    patient_col: str = "patient_id",
    label_col: str = "label",
) -> pd.DataFrame:
    """Return a copy of ``index`` with a ``split`` column (``train|val|test``).

    Patients are the unit of the draw and each patient is stratified by its most
    severe label; see the module docstring for the official-split rules. Works on
    any number of patients (one patient simply goes to train).
    """
    _check_fractions(val_fraction, test_fraction)
    frame = index.copy()
    if frame.empty:
        frame["split"] = pd.Series(dtype=str)
        return frame
    official = (
        frame["official_split"].fillna("none").astype(str).str.lower()
        if "official_split" in frame.columns
        else pd.Series("none", index=frame.index)
    )
    patient_label = frame.groupby(patient_col)[label_col].agg(most_severe)
    official_by_patient = official.groupby(frame[patient_col]).agg(set)
    pinned_test = official_by_patient.map(lambda splits: "test" in splits)
    official_train = official_by_patient.map(lambda splits: "train" in splits) & ~pinned_test
    has_official_test = bool(pinned_test.any())

    rng = np.random.default_rng(seed)
    assignment = {str(patient): "test" for patient in pinned_test.index[pinned_test]}
    if has_official_test:
        pools = [
            (patient_label[official_train], {"val": val_fraction / (1.0 - test_fraction)}),
            (
                patient_label[~official_train & ~pinned_test],
                {"test": test_fraction, "val": val_fraction},
            ),
        ]
    else:
        pools = [(patient_label[~pinned_test], {"test": test_fraction, "val": val_fraction})]
    for patients, fractions in pools:
        assignment.update(_split_pool(patients, fractions, rng))
    frame["split"] = frame[patient_col].astype(str).map(assignment)
    return frame


def split_summary(frame: pd.DataFrame, label_col: str = "label") -> pd.DataFrame:
    """Image counts per split (rows) and label (columns), with totals."""
    table = pd.crosstab(frame["split"], frame[label_col], margins=True, margins_name="total")
    order = [split for split in (*SPLITS, "total") if split in table.index]
    return table.loc[order]
