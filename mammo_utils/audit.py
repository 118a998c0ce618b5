"""Shortcut audit: can acquisition alone, with no anatomy, predict the label?

When the images of one class come from another source (NORMAL from MIAS films,
lesions from CBIS-DDSM scans), a network can learn the scanner instead of the
disease: bit depth, image size, the grey level of the background. This module
describes every image by such acquisition features only (source data set, rows,
columns, bits stored, photometric interpretation, view, and intensity statistics
of the background *outside* the breast) and fits a logistic regression on them,
cross-validated by patient. A class that these features separate with a
one-vs-rest AUC of 0.8 or more is flagged: a high score of a model on that class
may measure acquisition, not pathology.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from tqdm.auto import tqdm

from mammo_utils.breast import breast_mask
from mammo_utils.classes import CLASSES
from mammo_utils.metrics import roc_auc, to_jsonable

logger = logging.getLogger(__name__)

#: One-vs-rest AUC from acquisition features at or above which a class is flagged.
SHORTCUT_AUC = 0.8
#: Longest side of the downsampled image the background statistics are taken from.
FEATURE_MAX_SIDE = 256

CATEGORICAL_FEATURES: tuple[str, ...] = ("dataset", "photometric_interpretation", "view")
NUMERIC_FEATURES: tuple[str, ...] = (
    "rows",
    "columns",
    "bits_stored",
    "background_fraction",
    "background_mean",
    "background_std",
    "background_p05",
    "background_p50",
    "background_p95",
    "background_levels",
)


def _stride_downsample(image: np.ndarray, max_side: int) -> np.ndarray:
    """Every n-th pixel: cheap, and keeps the original grey levels (no averaging), so the
    quantization of an 8-bit source stays visible in ``background_levels``."""
    step = max(1, int(np.ceil(max(image.shape) / max_side)))
    return image[::step, ::step]


def background_statistics(image: np.ndarray, max_side: int = FEATURE_MAX_SIDE) -> dict:
    """Intensity statistics of the pixels outside the breast mask (image in [0, 1]).

    ``background_levels`` is log10 of the number of distinct grey levels in the
    background: a film digitized at 8 bits shows far fewer than a 12-bit detector.
    """
    small = _stride_downsample(np.asarray(image, dtype=np.float32), max_side)
    outside = small[~breast_mask(small)]
    if outside.size == 0:
        return {name: np.nan for name in NUMERIC_FEATURES if name.startswith("background_")} | {
            "background_fraction": 0.0
        }
    p05, p50, p95 = np.percentile(outside, [5, 50, 95])
    return {
        "background_fraction": float(outside.size / small.size),
        "background_mean": float(outside.mean()),
        "background_std": float(outside.std()),
        "background_p05": float(p05),
        "background_p50": float(p50),
        "background_p95": float(p95),
        "background_levels": float(np.log10(np.unique(outside).size)),
    }


def image_features(image: np.ndarray, metadata: dict, dataset: str, view: str | None) -> dict:
    """Acquisition features of one image from its pixels and reader metadata."""
    features = {
        "dataset": dataset,
        "photometric_interpretation": metadata.get("photometric_interpretation") or "NONE",
        "view": view or metadata.get("view") or "NONE",
        "rows": float(metadata.get("rows") or image.shape[0]),
        "columns": float(metadata.get("columns") or image.shape[1]),
        "bits_stored": float(metadata.get("bits_stored") or np.nan),
    }
    return features | background_statistics(image)


def extract_features(
    index: pd.DataFrame,
    *,
    reader: Callable[[Path], tuple[np.ndarray, dict]] | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Acquisition features for every row of an ``index.csv`` table, keyed by ``image_id``.

    Returns ``(features, rejects)``: an image that cannot be read is recorded in
    ``rejects`` (``source, reason``) and the others go on.
    """
    if reader is None:
        from mammo_utils.reader import read_image as reader
    rows, rejects = [], []
    records = index.drop_duplicates("image_id").to_dict("records")
    for row in tqdm(records, desc="audit features", disable=not progress):
        try:
            image, metadata = reader(Path(row["image_path"]))
        except (ValueError, OSError) as err:  # ImageReadError is a ValueError
            rejects.append({"source": str(row["image_path"]), "reason": str(err)})
            continue
        view = row.get("view") if isinstance(row.get("view"), str) else None
        features = image_features(image, metadata, str(row.get("dataset", "unknown")), view)
        rows.append({"image_id": row["image_id"]} | features)
    features = pd.DataFrame(rows, columns=["image_id", *CATEGORICAL_FEATURES, *NUMERIC_FEATURES])
    return features.set_index("image_id"), pd.DataFrame(rejects, columns=["source", "reason"])


@dataclass
class AuditResult:
    """Out-of-fold AUC of acquisition features per class, and the classes they give away."""

    classes: list[str]
    per_class_roc_auc: dict[str, float | None]
    flagged: list[str]
    threshold: float
    n_samples: int
    n_patients: int
    n_folds: int
    features: list[str] = field(default_factory=list)

    @property
    def has_shortcut(self) -> bool:
        return bool(self.flagged)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self) | {"has_shortcut": self.has_shortcut})

    def summary(self) -> str:
        """One plain sentence: the verdict a reader needs."""
        if self.has_shortcut:
            listed = ", ".join(f"{c} (AUC {self.per_class_roc_auc[c]:.2f})" for c in self.flagged)
            return (
                f"SHORTCUT WARNING: {listed} separable without anatomy: a likely shortcut. "
                "Acquisition features alone (source, size, bit depth, background) predict "
                "these labels, so a model's score on them may measure the scanner, not disease."
            )
        best = max((v for v in self.per_class_roc_auc.values() if v is not None), default=None)
        best_text = "n/a" if best is None else f"{best:.2f}"
        return (
            f"No shortcut found: acquisition features alone reach at most AUC {best_text} "
            f"(threshold {self.threshold:.2f}) on any class."
        )

    def banner_markdown(self) -> str:
        """A Markdown block for a notebook: impossible to miss when a class is flagged."""
        if self.has_shortcut:
            return f"> ## ⚠️ {self.summary()}\n"
        return f"> ✅ {self.summary()}\n"

    def banner_html(self) -> str:
        """The same verdict as a coloured HTML box (survives the code-free HTML report)."""
        colour, border = ("#fde2e1", "#c0392b") if self.has_shortcut else ("#e6f4ea", "#2e7d32")
        size = "1.3em" if self.has_shortcut else "1em"
        return (
            f'<div style="background:{colour};border:3px solid {border};padding:12px;'
            f'font-size:{size};font-weight:bold">{html.escape(self.summary())}</div>'
        )

    def _repr_markdown_(self) -> str:
        return self.banner_markdown()


def present_classes(labels: pd.Series) -> list[str]:
    """The labels that occur, in the canonical order of :data:`~mammo_utils.classes.CLASSES`
    (least to most severe, as every report lists them); a label outside it (another label
    scheme's class) follows, alphabetically."""
    found = set(labels.dropna().astype(str))
    canonical = [name for name in CLASSES if name in found]
    return canonical + sorted(found.difference(CLASSES))


def _audit_pipeline(categorical: Sequence[str], numeric: Sequence[str], seed: int):
    encode = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(categorical)),
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                list(numeric),
            ),
        ]
    )
    return make_pipeline(encode, LogisticRegression(max_iter=2000, random_state=seed))


def shortcut_audit(
    samples: pd.DataFrame,
    features: pd.DataFrame,
    *,
    classes: Sequence[str] | None = None,
    threshold: float = SHORTCUT_AUC,
    n_folds: int = 5,
    seed: int = 0,
) -> AuditResult:
    """Cross-validated (by patient) one-vs-rest AUC of acquisition features per class.

    ``classes`` defaults to the labels present, in canonical order (:func:`present_classes`).
    ``samples`` has one row per training example (an image for the ``image`` task, a
    patch for ``roi``) with ``image_id``, ``patient_id`` and ``label``; ``features`` is
    :func:`extract_features` output indexed by ``image_id``. Patches of one image share
    its features, which is the point: patches cut from the same images cannot be told
    apart by acquisition.
    """
    table = samples[["image_id", "patient_id", "label"]].join(features, on="image_id", how="inner")
    if len(table) < len(samples):
        logger.warning("%d samples have no audit features", len(samples) - len(table))
    classes = list(classes) if classes is not None else present_classes(table["label"])
    table = table[table["label"].isin(classes)]
    categorical = [c for c in CATEGORICAL_FEATURES if table[c].nunique() > 1]
    numeric = [c for c in NUMERIC_FEATURES if table[c].notna().any() and table[c].nunique() > 1]
    n_patients = int(table["patient_id"].nunique())
    folds = min(n_folds, n_patients)
    present = table["label"].nunique()
    auc: dict[str, float | None] = {name: None for name in classes}
    if folds >= 2 and present >= 2 and (categorical or numeric):
        y = table["label"].map({name: k for k, name in enumerate(classes)}).to_numpy()
        proba = cross_val_predict(
            _audit_pipeline(categorical, numeric, seed),
            table[categorical + numeric],
            y,
            groups=table["patient_id"].to_numpy(),
            cv=GroupKFold(n_splits=folds),
            method="predict_proba",
        )
        fitted_classes = np.unique(y)
        for column, k in enumerate(fitted_classes):
            auc[classes[k]] = roc_auc(y == k, proba[:, column])
    elif present >= 2:
        logger.warning("shortcut audit skipped: %d patients, no varying feature", n_patients)
    flagged = [name for name, value in auc.items() if value is not None and value >= threshold]
    return AuditResult(
        classes=classes,
        per_class_roc_auc=auc,
        flagged=flagged,
        threshold=threshold,
        n_samples=int(len(table)),
        n_patients=n_patients,
        n_folds=folds,
        features=categorical + numeric,
    )


def audit_manifest(
    manifest: pd.DataFrame | str | Path,
    index: pd.DataFrame | str | Path,
    *,
    classes: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[AuditResult, pd.DataFrame]:
    """Audit a preprocessed data set: labels from ``manifest.csv``, features from the
    source images listed in ``index.csv``. Returns the result and the unreadable files."""
    manifest = pd.read_csv(manifest) if not isinstance(manifest, pd.DataFrame) else manifest
    index = pd.read_csv(index) if not isinstance(index, pd.DataFrame) else index
    used = index[index["image_id"].isin(manifest["image_id"])]
    features, rejects = extract_features(used, progress=progress)
    return shortcut_audit(manifest, features, classes=classes, seed=seed), rejects
