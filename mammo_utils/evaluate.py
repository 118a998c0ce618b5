"""Evaluate one trained model on one split, at every level it supports.

The model directory's card decides the class order, the input size and the label
scheme; the processed folder's manifest decides which images form the split. Levels
(:data:`mammo_utils.levels.LEVELS`):

* ``patch`` (``roi`` models): the manifest's patches, predicted through
  :mod:`mammo_utils.pipeline` in manifest order (no augmentation, no shuffling);
* ``image``: one prediction per mammogram of the split. An ``image`` model's manifest
  rows are the mammograms. A ``roi`` model scans each whole source image through the
  inference code path (:meth:`Classifier.fit_canvas` and :meth:`Classifier.scan`) and
  a named rule (:func:`mammo_utils.levels.aggregate_patches`) turns the patch
  probabilities into the image's;
* ``breast``: the views of one breast combined (:func:`mammo_utils.levels.pair_breasts`).
  A two-view (``breast``) model's manifest rows are the breasts: it is scored at this
  level only, directly, and its ``patch`` and ``image`` levels are not applicable.

The source images, their laterality and view come from the ingest index the folder was
made from (:func:`find_source_index`): ``data/interim/<key>/index.csv`` beside
``data/processed/<key>/<folder>/``, checked against the ``index_sha256`` that
``preprocess_config.json`` recorded. A level that cannot be computed is recorded as not
applicable, with the reason; so is a metric undefined on the data (a class the data set
lacks), under ``not_applicable_metrics``.

A folder made from another ingest index than the model's training data is an
*external* validation: its results go to ``metrics/<model>/external/<key>-<folder>/``
with ``internal_vs_external.md``, comparing them with the model's internal
``metrics.json`` (:mod:`mammo_utils.external`). Outputs follow the run layout of
``reports/<run>/``::

    <out_dir>/metrics/<model>/predictions.csv (the manifest's level, as before),
                              predictions_<level>.csv, metrics.json
    <out_dir>/figures/<model>/confusion_matrix.png, roc.png, precision_recall.png,
                              reliability.png, training_curves.png, mistakes.png,
                              image_confusion_matrix.png, image_roc.png (roi models)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from mammo_utils import external, figures, levels, tracking
from mammo_utils.classes import UnknownLabelError, map_label, scheme_classes
from mammo_utils.files import sha256_file
from mammo_utils.ingest import INDEX_FILE
from mammo_utils.metrics import compute_metrics, write_metrics
from mammo_utils.preprocess import CONFIG_FILE
from mammo_utils.reader import ImageReadError, read_image

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"
METRICS_FILE = "metrics.json"
#: Run facts that differ between two runs of one commit (seconds, throughput), kept out
#: of ``metrics.json`` so that file is a function of the model and the data alone.
TIMING_FILE = "timing.json"
#: Resolution of every saved figure.
FIGURE_DPI = 150
#: The breast rule recorded for a two-view model: the model joins the views itself.
TWO_VIEW_RULE = "two_view_model"


@dataclass
class EvaluationResult:
    """What :func:`evaluate_model` wrote and measured for one model."""

    model_name: str
    metrics: dict[str, Any]
    predictions: pd.DataFrame
    metrics_dir: Path
    timing: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    #: Predictions of every level computed, keyed by level.
    level_predictions: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def metrics_path(self) -> Path:
        return self.metrics_dir / METRICS_FILE

    @property
    def predictions_path(self) -> Path:
        return self.metrics_dir / PREDICTIONS_FILE


def predict_split(model, dataset, n_images: int, progress: bool = True):
    """Probabilities for every batch of ``dataset`` and the model-only images per second.

    The first batch is run once untimed, so graph tracing is not counted as throughput.
    """
    batches, seconds, warmed = [], 0.0, False
    for images, _ in tqdm(dataset, desc="predict", disable=not progress):
        if not warmed:
            model.predict_on_batch(images)
            warmed = True
        started = time.perf_counter()
        batches.append(np.asarray(model.predict_on_batch(images), dtype=np.float64))
        seconds += time.perf_counter() - started
    proba = np.concatenate(batches) if batches else np.zeros((0, model.output_shape[-1]))
    if len(proba) != n_images:
        raise RuntimeError(f"predicted {len(proba)} images but the split holds {n_images}")
    return proba, (n_images / seconds if seconds > 0 else None)


def _predictions_table(rows: pd.DataFrame, y_true: np.ndarray, proba, classes) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "image_id": rows["image_id"],
            "patient_id": rows["patient_id"],
            "dataset": rows["dataset"] if "dataset" in rows else "unknown",
            "true_label": np.asarray(classes)[y_true],
        }
    )
    for k, name in enumerate(classes):
        table[f"p_{name}"] = proba[:, k]
    table["predicted_label"] = np.asarray(classes)[proba.argmax(axis=1)]
    table["item_id"] = rows["item_id"] if "item_id" in rows else rows["image_id"]
    table["path"] = rows["path"]
    return table


def _breast_table(rows: pd.DataFrame, y_true: np.ndarray, proba, classes) -> pd.DataFrame:
    """A two-view model's predictions, one row per breast, in the breast level's columns
    (those of :func:`mammo_utils.levels.pair_breasts`), plus ``dataset`` and the view
    files (``path`` is the CC, shown by the mistakes figure)."""
    two_views = rows["cc_image_id"].astype(str) != rows["mlo_image_id"].astype(str)
    image_ids = rows["cc_image_id"].astype(str).where(
        ~two_views, rows["cc_image_id"].astype(str) + " " + rows["mlo_image_id"].astype(str))
    table = pd.DataFrame({
        "breast_id": rows["item_id"],
        "patient_id": rows["patient_id"],
        "laterality": rows["laterality"],
        "views": rows["views"],
        "image_ids": image_ids,
        "n_views": np.where(two_views, 2, 1),
        "true_label": np.asarray(classes)[y_true],
        "dataset": rows["dataset"] if "dataset" in rows else "unknown",
    })
    for k, name in enumerate(classes):
        table[f"p_{name}"] = proba[:, k]
    table["predicted_label"] = np.asarray(classes)[proba.argmax(axis=1)]
    table["path"] = rows["cc_path"]
    table["mlo_path"] = rows["mlo_path"]
    return table


def _breast_model_levels(table: pd.DataFrame, metrics: dict, single_view) -> dict[str, dict]:
    """The ``levels`` section of a two-view model: breast from its own predictions."""
    reason = "a two-view model predicts breasts (their CC and MLO together), not {}"
    single = int((table["n_views"] == 1).sum())
    counts = {"breasts": len(table), "two_views": len(table) - single,
              "single_view": single, "single_view_option": single_view}
    return {
        "patch": {"not_applicable": reason.format("patches")},
        "image": {"not_applicable": reason.format("single mammograms")},
        "breast": {**{key: value for key, value in metrics.items()
                      if key not in ("model", "data", "inference")},
                   "counts": counts, "aggregation": TWO_VIEW_RULE},
    }


def _breast_images(table: pd.DataFrame) -> pd.DataFrame:
    """The distinct mammograms of a two-view model's breasts (for the protocol)."""
    images = table.assign(image_id=table["image_ids"].str.split(" ")).explode("image_id")
    return images[["image_id", "patient_id", "dataset"]].drop_duplicates("image_id")


def _save(fig: Figure, figures_dir: Path, name: str) -> Path:
    """Write ``fig`` as ``<figures_dir>/<name>.png`` at :data:`FIGURE_DPI` and close it
    (a loop over many models must not pile up open figures)."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"{name}.png"
    fig.savefig(path, dpi=FIGURE_DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _labels_and_probabilities(table: pd.DataFrame, classes: list[str]):
    """A predictions table's true class indices and ``p_<class>`` columns, in card order."""
    y_true = np.array([classes.index(label) for label in table["true_label"]], dtype=int)
    return y_true, table[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)


def _headline_figures(
    table: pd.DataFrame, metrics: dict, classes: list[str], figures_dir: Path, title: str,
    prefix: str = "",
) -> dict[str, Path]:
    """The confusion matrix and one-vs-rest ROC curves of one level, as
    ``<prefix>confusion_matrix.png`` and ``<prefix>roc.png``."""
    y_true, proba = _labels_and_probabilities(table, classes)
    counts = np.asarray(metrics["confusion_matrix"])
    return {
        f"{prefix}confusion_matrix": _save(
            figures.plot_confusion_matrix(counts, classes, title=f"{title}: confusion matrix"),
            figures_dir, f"{prefix}confusion_matrix",
        ),
        f"{prefix}roc": _save(
            figures.plot_roc_curves(y_true, proba, classes, title=f"{title}: ROC (one vs rest)"),
            figures_dir, f"{prefix}roc",
        ),
    }


def write_figures(
    result_table: pd.DataFrame,
    metrics: dict,
    classes: list[str],
    figures_dir: Path,
    history_path: Path | None,
    title: str,
) -> dict[str, Path]:
    """Draw and save every per-model figure, from the predictions table and metrics."""
    y_true, proba = _labels_and_probabilities(result_table, classes)
    paths = _headline_figures(result_table, metrics, classes, figures_dir, title)
    paths.update({
        "precision_recall": _save(
            figures.plot_precision_recall(y_true, proba, classes, title=f"{title}: PR"),
            figures_dir, "precision_recall",
        ),
        "reliability": _save(
            figures.plot_reliability(y_true, proba, title=f"{title}: calibration"),
            figures_dir, "reliability",
        ),
        "mistakes": _save(
            figures.plot_confident_mistakes(result_table, classes, title=f"{title}: mistakes"),
            figures_dir, "mistakes",
        ),
    })
    if history_path is not None and history_path.is_file():
        paths["training_curves"] = _save(
            figures.plot_training_curves(history_path, title=f"{title}: training"),
            figures_dir, "training_curves",
        )
    return paths


class NotApplicable(Exception):
    """A level that cannot be computed on this data; the message says why."""


def find_source_index(data_dir: str | Path, index: str | Path | None = None) -> pd.DataFrame:
    """The ingest index a processed folder was made from, one row per source image.

    Without ``index``, looks for ``data/interim/<key>/index.csv`` for the folder
    ``data/processed/<key>/<name>/`` (the :class:`~mammo_utils.workspace.Workspace`
    layout). The file must be the one preprocessing read: its sha256 must equal the
    ``index_sha256`` of ``preprocess_config.json``. Raises :class:`NotApplicable`
    naming the file and the reason when no such index is found.
    """
    data_dir = Path(data_dir)
    config_path = data_dir / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    if index is None:
        if len(data_dir.resolve().parents) < 3:
            raise NotApplicable(f"{data_dir}: not under data/processed/<key>/, no ingest index")
        resolved = data_dir.resolve()
        index = resolved.parents[2] / "interim" / resolved.parent.name / INDEX_FILE
    index = Path(index)
    if not index.is_file():
        raise NotApplicable(f"{index}: ingest index not found (the source images of "
                            f"{data_dir} are listed there)")
    expected = config.get("index_sha256")
    if expected and sha256_file(index) != expected:
        raise NotApplicable(f"{index}: changed since {config_path} was made "
                            "(index_sha256 differs); preprocess again")
    return pd.read_csv(index)


def _scheme_labels(labels: pd.Series, scheme: str) -> tuple[pd.Series, pd.Series]:
    """Labels under ``scheme`` and a mask of those that have one (others are excluded)."""
    mapped = []
    for label in labels:
        try:
            mapped.append(map_label(str(label), scheme))
        except UnknownLabelError:
            mapped.append(None)
    mapped = pd.Series(mapped, index=labels.index, dtype=object)
    return mapped, mapped.notna()


def _source_images(rows: pd.DataFrame, index: pd.DataFrame) -> pd.DataFrame:
    """The split's mammograms (first appearance in the manifest) with their index rows."""
    ids = pd.DataFrame({"image_id": rows["image_id"].astype(str).drop_duplicates()})
    index = index.assign(image_id=index["image_id"].astype(str))
    columns = ["image_id", "patient_id", "dataset", "official_split", "laterality", "view",
               "label", "image_path"]
    return ids.merge(index[[c for c in columns if c in index]], on="image_id", how="left")


def scan_images(
    classifier, images: pd.DataFrame, rule: str, k: int, progress: bool = True
) -> tuple[np.ndarray, dict[str, int]]:
    """Image probabilities of a ``roi`` classifier: each ``image_path`` read, fitted to
    the canvas and scanned as inference does, its patches aggregated by ``rule``.

    Returns ``[images, classes]`` (NaN rows for images that could not be read) and the
    failures by reason.
    """
    proba = np.full((len(images), len(classifier.classes)), np.nan)
    failures: dict[str, int] = {}
    for row, path in enumerate(tqdm(images["image_path"], desc="scan", disable=not progress)):
        try:
            image, _ = read_image(path)
            canvas, mask, _ = classifier.fit_canvas(image)
        except (ImageReadError, ValueError) as exc:
            logger.warning("image level: %s left out: %s", path, exc)
            reason = "no breast found" if isinstance(exc, ValueError) else "unreadable"
            failures[reason] = failures.get(reason, 0) + 1
            continue
        scan = classifier.scan(canvas, mask)
        proba[row] = levels.aggregate_patches(scan.probabilities, classifier.rule.suspicious,
                                              rule, k)
    return proba, failures


def _level_table(images: pd.DataFrame, proba: np.ndarray, classes: list[str]) -> pd.DataFrame:
    table = pd.DataFrame({
        "image_id": images["image_id"].to_numpy(),
        "patient_id": images["patient_id"].to_numpy(),
        "dataset": images["dataset"].to_numpy() if "dataset" in images else "unknown",
        "laterality": images["laterality"].to_numpy() if "laterality" in images else None,
        "view": images["view"].to_numpy() if "view" in images else None,
        "true_label": images["true_label"].to_numpy(),
    })
    for k, name in enumerate(classes):
        table[f"p_{name}"] = proba[:, k]
    table["predicted_label"] = np.asarray(classes)[proba.argmax(axis=1)]
    if "image_path" in images:
        table["image_path"] = images["image_path"].to_numpy()
    return table


def _score(table: pd.DataFrame, classes: list[str], n_bootstrap: int, seed: int) -> dict:
    """The full metric set of one level's predictions table."""
    y_true = np.array([classes.index(label) for label in table["true_label"]], dtype=int)
    proba = table[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
    return compute_metrics(y_true, proba, classes, table["patient_id"].astype(str).to_numpy(),
                           n_bootstrap=n_bootstrap, seed=seed)


def _image_level(
    model, card, manifest, split: str, primary: pd.DataFrame, index: pd.DataFrame | None,
    *, aggregation: str, top_k: int, batch_size: int, progress: bool,
) -> tuple[pd.DataFrame, dict]:
    """The image-level predictions table and what was counted and chosen making it."""
    classes = list(card.classes)
    if card.task == "image":
        images = primary.drop(columns=["laterality", "view"], errors="ignore")
        if index is not None:
            sides = index.assign(image_id=index["image_id"].astype(str))
            images = images.assign(image_id=images["image_id"].astype(str)).merge(
                sides[["image_id", "laterality", "view"]], on="image_id", how="left")
        proba = images[[f"p_{c}" for c in classes]].to_numpy(dtype=np.float64)
        return _level_table(images, proba, classes), {
            "images": len(images), "method": "direct (an image model predicts each mammogram)"}
    if index is None:
        raise NotApplicable("a roi model needs the source images, listed by the ingest index")
    from mammo_utils.inference import Classifier

    rows = manifest.split(split)
    images = _source_images(rows, index)
    unindexed = int(images["image_path"].isna().sum())
    images = images[images["image_path"].notna()].copy()
    images["true_label"], has_label = _scheme_labels(images["label"], card.label_scheme)
    images = images[has_label].reset_index(drop=True)
    classifier = Classifier(model, card, batch_size=batch_size)
    proba, failures = scan_images(classifier, images, aggregation, top_k, progress)
    read = ~np.isnan(proba).any(axis=1)
    images, proba = images[read].reset_index(drop=True), proba[read]
    counts = {
        "images_in_split": int(rows["image_id"].nunique()),
        "images": len(images),
        "not_in_index": unindexed,
        "label_not_in_scheme": int((~has_label).sum()),
        "left_out": failures,
    }
    details = {
        **counts,
        "method": "whole-breast patch scan (Classifier.fit_canvas, Classifier.scan)",
        "aggregation": levels.aggregation_name(aggregation, top_k),
        "stride": classifier.stride,
        "min_tissue": classifier.min_tissue,
    }
    return _level_table(images, proba, classes), details


def _score_levels(
    model, card, manifest, split: str, table: pd.DataFrame, metrics: dict,
    source_index: pd.DataFrame | None, index_reason: str | None, timing: dict, *,
    aggregation: str, top_k: int, breast_rule: str, batch_size: int, n_bootstrap: int,
    seed: int, progress: bool,
) -> tuple[dict[str, pd.DataFrame], dict[str, dict]]:
    """The predictions table and the ``metrics.json`` section of every level: the
    manifest's level from ``table`` and ``metrics``, then image, then breast. The image
    scan's seconds go into ``timing`` (run facts stay out of ``metrics.json``)."""
    classes = list(card.classes)
    tables: dict[str, pd.DataFrame] = {}
    sections: dict[str, dict] = {}
    if card.task == "roi":
        tables["patch"] = table
        sections["patch"] = {key: value for key, value in metrics.items()
                             if key not in ("model", "data", "inference")}
    else:
        sections["patch"] = {"not_applicable": "an image model has no patch level"}
    try:
        started = time.perf_counter()
        image_table, details = _image_level(
            model, card, manifest, split, table, source_index, aggregation=aggregation,
            top_k=top_k, batch_size=batch_size, progress=progress)
        seconds = time.perf_counter() - started
        tables["image"] = image_table
        sections["image"] = {**_score(image_table, classes, n_bootstrap, seed),
                             "counts": details}
        timing["image_level_seconds"] = seconds
        if card.task == "roi":
            timing["image_level_images_per_second"] = (
                len(image_table) / seconds if seconds > 0 else None)
    except NotApplicable as exc:
        sections["image"] = {"not_applicable": str(exc) if index_reason is None
                             else f"{exc}: {index_reason}"}
    if "image" not in tables:
        sections["breast"] = {"not_applicable": "no image level to combine"}
    elif source_index is None:
        sections["breast"] = {"not_applicable": f"laterality unknown: {index_reason}"}
    else:
        breasts, counts = levels.pair_breasts(
            tables["image"], classes, _severity(classes, card.label_scheme),
            _suspicious(classes), breast_rule)
        tables["breast"] = breasts
        sections["breast"] = {**_score(breasts, classes, n_bootstrap, seed),
                              "counts": counts, "aggregation": breast_rule}
    return tables, sections


def protocol_statement(images: pd.DataFrame, split: str, n_breasts: int | None) -> str:
    """The test protocol in words: "official CBIS-DDSM test split, N images, M breasts,
    K patients". Official when every image's ``official_split`` is ``split``; when only
    some are, the statement says how many."""
    datasets = ", ".join(sorted(images["dataset"].astype(str).unique())) or "unknown"
    in_official = 0
    if "official_split" in images:
        in_official = int((images["official_split"].astype(str) == split).sum())
    official = len(images) > 0 and in_official == len(images)
    name = f"{'official ' if official else ''}{datasets} {split} split"
    if 0 < in_official < len(images):
        name += f" ({in_official} of its images in the official {split} set)"
    parts = [name, f"{len(images)} images"]
    if n_breasts is not None:
        parts.append(f"{n_breasts} breasts")
    parts.append(f"{images['patient_id'].nunique()} patients")
    return ", ".join(parts)


def evaluate_model(
    model_dir: str | Path,
    data_dir: str | Path,
    split: str = "test",
    out_dir: str | Path = "reports/default",
    *,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
    seed: int = 0,
    make_figures: bool = True,
    progress: bool = True,
    aggregation: str = "max",
    top_k: int = levels.DEFAULT_TOP_K,
    breast_rule: str = "mean",
    index: str | Path | None = None,
) -> EvaluationResult:
    """Predict ``split`` of the processed folder ``data_dir`` with the model in
    ``model_dir`` at every level it supports; write predictions, metrics and figures
    under ``out_dir``.

    Labels are mapped to the card's label scheme and class order, so a ``three_class``
    model is scored against three classes, and a model trained with a permuted class
    order is scored against its own output units. ``aggregation`` (with ``top_k``)
    names the patch rule of a ``roi`` model's image level, ``breast_rule`` the view
    rule of the breast level; ``index`` overrides where the source images are listed
    (see :func:`find_source_index`).

    ``metrics.json`` holds the manifest's level at its top level, as before, with
    ``level`` naming it, and ``levels``: for each of :data:`~mammo_utils.levels.LEVELS`
    either its full metric set (with its counts and rules) or ``not_applicable`` and
    the reason. The evaluation is also one MLflow run (:mod:`mammo_utils.tracking`) with
    every computed level's final metrics.
    """
    from mammo_utils import pipeline
    from mammo_utils.model_card import HISTORY_FILE, load_model_dir

    aggregation_label = levels.aggregation_name(aggregation, top_k)
    if breast_rule not in levels.VIEW_AGGREGATIONS:
        raise ValueError(f"unknown breast rule {breast_rule!r}; choose one of "
                         f"{', '.join(levels.VIEW_AGGREGATIONS)}")
    model_dir = Path(model_dir)
    model, card = load_model_dir(model_dir)
    manifest = pipeline.load_manifest(data_dir)
    rows = manifest.split(split)
    classes = list(card.classes)
    y_true = pipeline.encode_labels(rows["label"], card.label_scheme, classes)
    dataset = pipeline.make_dataset(
        manifest,
        split,
        label_scheme=card.label_scheme,
        classes=classes,
        batch_size=batch_size,
        image_size=card.image_size,
        training=False,
        cache=False,
    )
    logger.info("evaluating %s on %d %s rows", card.model_name, len(rows), split)
    proba, images_per_second = predict_split(model, dataset, len(rows), progress=progress)
    if card.task == "breast":
        table = _breast_table(rows, y_true, proba, classes)
    else:
        table = _predictions_table(rows, y_true, proba, classes)
    primary = {"roi": "patch", "image": "image", "breast": "breast"}[card.task]

    metrics = compute_metrics(
        y_true, proba, classes, rows["patient_id"].to_numpy(), n_bootstrap=n_bootstrap, seed=seed
    )
    metrics["level"] = primary
    metrics["split"] = split
    metrics["model"] = {
        "model_name": card.model_name,
        "architecture": card.architecture,
        "task": card.task,
        "label_scheme": card.label_scheme,
        "image_size": card.image_size,
        "parameter_count": card.parameter_count,
        "weights": card.training.get("weights"),
        "model_dir": str(model_dir.resolve()),
    }
    metrics["data"] = {"manifest": str(manifest.source), "split": split}
    timing = {"training_time_s": card.training.get("training_time_s"),
              "inference_images_per_second": images_per_second, "batch_size": batch_size}

    try:
        source_index = find_source_index(data_dir, index)
        index_reason = None
    except NotApplicable as exc:
        source_index, index_reason = None, str(exc)
    if card.task == "breast":
        tables = {"breast": table}
        sections = _breast_model_levels(table, metrics, card.preprocessing.get("single_view"))
    else:
        tables, sections = _score_levels(
            model, card, manifest, split, table, metrics, source_index, index_reason, timing,
            aggregation=aggregation, top_k=top_k, breast_rule=breast_rule,
            batch_size=batch_size, n_bootstrap=n_bootstrap, seed=seed, progress=progress)
    data_name = _data_name(rows, data_dir)
    metrics["not_applicable_metrics"] = external.undefined_reasons(metrics, data_name)
    for section in sections.values():
        if "not_applicable" not in section:
            section["not_applicable_metrics"] = external.undefined_reasons(section, data_name)
    if card.task == "breast":
        metrics["protocol"] = protocol_statement(
            _with_official(_breast_images(table), source_index), split, len(table))
        rules = {"image_aggregation": None, "breast_aggregation": TWO_VIEW_RULE}
    else:
        if "image" in tables:
            n_breasts = len(tables["breast"]) if "breast" in tables else None
            metrics["protocol"] = protocol_statement(
                _with_official(tables["image"], source_index), split, n_breasts)
        rules = {"image_aggregation": aggregation_label, "breast_aggregation": breast_rule}
    metrics["levels"] = sections
    metrics["rules"] = rules

    out_dir = Path(out_dir)
    metrics_dir = out_dir / "metrics" / card.model_name
    figures_dir = out_dir / "figures" / card.model_name
    if is_external(card.preprocessing, manifest.config):
        key = _data_key(data_dir)
        metrics["external"] = _external_section(metrics, metrics_dir / METRICS_FILE, data_name)
        metrics_dir = metrics_dir / external.EXTERNAL_DIR / key
        figures_dir = figures_dir / external.EXTERNAL_DIR / key
    metrics_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(metrics_dir / PREDICTIONS_FILE, index=False)
    for level, level_table in tables.items():
        level_table.to_csv(metrics_dir / levels.predictions_file(level), index=False)
    write_metrics(metrics, metrics_dir / METRICS_FILE)
    write_metrics(timing, metrics_dir / TIMING_FILE)
    if "external" in metrics and metrics["external"].get("rows") is not None:
        section = metrics["external"]
        (metrics_dir / external.EXTERNAL_TABLE_FILE).write_text(external.comparison_markdown(
            section["rows"], section["internal"], section["external"]))
    paths = {}
    if make_figures:
        paths = write_figures(
            table, metrics, classes, figures_dir, model_dir / HISTORY_FILE, card.model_name,
        )
        if primary == "patch" and "image" in tables:  # an image model's are the above
            paths.update(_headline_figures(
                tables["image"], sections["image"], classes, figures_dir,
                f"{card.model_name} (image level, {aggregation_label})", prefix="image_"))
    tracking.record_evaluation(
        metrics, [metrics_dir, figures_dir], out_dir,
        {"split": split, "n_bootstrap": n_bootstrap, "seed": seed, "aggregation": aggregation,
         "top_k": top_k, "breast_rule": breast_rule, "model_dir": str(model_dir.resolve()),
         "data_dir": str(Path(data_dir).resolve())},
        sorted(rows["dataset"].astype(str).unique()) if "dataset" in rows else [])
    return EvaluationResult(
        model_name=card.model_name,
        metrics=metrics,
        predictions=table,
        metrics_dir=metrics_dir,
        timing=timing,
        figures=paths,
        level_predictions=tables,
    )


def is_external(training_config: dict, data_config: dict) -> bool:
    """True when a processed folder comes from another ingest index than the model's
    training data (both ``preprocess_config.json`` contents record ``index_sha256``)."""
    trained, scored = training_config.get("index_sha256"), data_config.get("index_sha256")
    return bool(trained and scored and trained != scored)


def _data_name(rows: pd.DataFrame, data_dir: str | Path) -> str:
    """The data set's name for messages: the manifest's ``dataset`` values, else the folder."""
    if "dataset" in rows:
        return ", ".join(sorted(rows["dataset"].astype(str).unique()))
    return Path(data_dir).name


def _data_key(data_dir: str | Path) -> str:
    """``<key>-<folder>`` of ``data/processed/<key>/<folder>``: the external result's folder."""
    resolved = Path(data_dir).resolve()
    return f"{resolved.parent.name}-{resolved.name}"


def _external_section(metrics: dict, internal_path: Path, data_name: str) -> dict:
    """The internal-versus-external comparison, from the model's internal ``metrics.json``
    (its own test split, evaluated before into the same run folder)."""
    described = metrics.get("protocol") or f"{data_name} {metrics['split']} split"
    if not internal_path.is_file():
        return {"internal": None, "external": described, "rows": None,
                "reason": f"{internal_path}: no internal evaluation; evaluate the model on "
                          "its own test split into the same folder first"}
    internal = json.loads(internal_path.read_text())
    rows = external.compare_levels(internal, metrics)
    return {
        "internal": internal.get("protocol") or str(internal.get("data", {}).get("manifest")),
        "internal_metrics": str(internal_path),
        "external": described,
        "rows": rows,
    }


def _severity(classes: list[str], scheme: str) -> list[str]:
    """The card's classes from least to most severe (the scheme's order)."""
    return [name for name in scheme_classes(scheme) if name in classes]


def _suspicious(classes: list[str]) -> list[int]:
    """Columns of the non-normal classes, as the inference verdict picks them."""
    from mammo_utils.inference.verdict import VerdictRule

    return VerdictRule(classes).suspicious


def _with_official(images: pd.DataFrame, index: pd.DataFrame | None) -> pd.DataFrame:
    """``images`` with the index's ``official_split`` column, when there is one."""
    if index is None or "official_split" not in index or "official_split" in images:
        return images
    official = index.assign(image_id=index["image_id"].astype(str))[["image_id",
                                                                     "official_split"]]
    return images.assign(image_id=images["image_id"].astype(str)).merge(
        official, on="image_id", how="left")
