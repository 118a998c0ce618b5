"""From patches to images to breasts: the aggregation rules of the evaluation levels.

Breast-imaging papers report one number per mammogram (*image* level) or per breast
(*breast* level, the CC and MLO views of one breast of one patient), not per patch.
This module turns probability tables of one level into the next, with named rules, so
that every number says how it was made. Pure numpy and pandas: the patch
probabilities come from the caller (the whole-breast scan of
:mod:`mammo_utils.inference.scan`), and the rules can be tested on hand-made tables.

Which patch or view is "most suspicious" follows the inference verdict
(:meth:`mammo_utils.inference.verdict.VerdictRule.decisive_patch`): the one with the
highest probability of any class listed as ``suspicious`` (the non-normal classes).

* ``max``: the probabilities of the most suspicious patch (what inference shows);
* ``topk_mean``: the mean probability vector of the ``k`` most suspicious patches,
  smoother than one patch, so a single noisy patch weighs less.

A breast is scored by ``mean`` (the mean of its view vectors) or ``max`` (the vector
of its most suspicious view). Its true label is the most severe label of its views.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

#: Evaluation levels, finest first.
LEVELS: tuple[str, ...] = ("patch", "image", "breast")
#: How the patch probabilities of one image become the image's.
PATCH_AGGREGATIONS: tuple[str, ...] = ("max", "topk_mean")
#: How the view probabilities of one breast become the breast's.
VIEW_AGGREGATIONS: tuple[str, ...] = ("mean", "max")
#: Patches averaged by ``topk_mean`` unless told otherwise.
DEFAULT_TOP_K = 3

#: Predictions file of one level in a model's metrics folder.
PREDICTIONS_FILE_PATTERN = "predictions_{level}.csv"


def predictions_file(level: str) -> str:
    """``predictions_<level>.csv``, the predictions table of ``level``."""
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of {', '.join(LEVELS)}")
    return PREDICTIONS_FILE_PATTERN.format(level=level)


def suspicion(probabilities: np.ndarray, suspicious: Sequence[int]) -> np.ndarray:
    """Per row, the highest probability of the ``suspicious`` columns."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    return probabilities[:, list(suspicious)].max(axis=1)


def aggregate_patches(
    probabilities: np.ndarray,
    suspicious: Sequence[int],
    rule: str = "max",
    k: int = DEFAULT_TOP_K,
) -> np.ndarray:
    """One image's probability vector from its ``[patches, classes]`` table.

    ``rule`` is one of :data:`PATCH_AGGREGATIONS`; ``k`` (``topk_mean`` only) is capped
    at the number of patches. Ties keep the earlier patch, as the inference verdict does.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"need a non-empty [patches, classes] table, got {probabilities.shape}")
    scores = suspicion(probabilities, suspicious)
    if rule == "max":
        return probabilities[int(np.argmax(scores))]
    if rule == "topk_mean":
        if k < 1:
            raise ValueError(f"topk_mean needs k >= 1, got {k}")
        order = np.argsort(-scores, kind="stable")[:k]
        return probabilities[order].mean(axis=0)
    raise ValueError(f"unknown patch aggregation {rule!r}; choose one of "
                     f"{', '.join(PATCH_AGGREGATIONS)}")


def aggregation_name(rule: str, k: int = DEFAULT_TOP_K) -> str:
    """The recorded name of a patch rule: ``max`` or ``topk_mean`` with its k (``top3_mean``)."""
    if rule not in PATCH_AGGREGATIONS:
        raise ValueError(f"unknown patch aggregation {rule!r}; choose one of "
                         f"{', '.join(PATCH_AGGREGATIONS)}")
    if rule == "topk_mean" and k < 1:
        raise ValueError(f"topk_mean needs k >= 1, got {k}")
    return "max" if rule == "max" else f"top{k}_mean"


def pair_breasts(
    images: pd.DataFrame,
    classes: Sequence[str],
    severity: Sequence[str],
    suspicious: Sequence[int],
    rule: str = "mean",
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Combine the image predictions of each breast into one breast prediction.

    Parameters
    ----------
    images : DataFrame
        One row per image: ``image_id``, ``patient_id``, ``laterality``, ``view``,
        ``true_label`` and ``p_<class>`` for every class of ``classes``.
    classes : sequence of str
        The probability columns' class order.
    severity : sequence of str
        The same classes from least to most severe; a breast's label is the most
        severe label of its views.
    suspicious : sequence of int
        Columns (into ``classes``) of the non-normal classes, for ``max``.
    rule : str
        ``mean`` of the view vectors or the vector of the most suspicious view (``max``).

    Returns
    -------
    breasts : DataFrame
        One row per patient and laterality, in order of first appearance:
        ``breast_id`` (``<patient>_<laterality>``), ``patient_id``, ``laterality``,
        ``views`` (sorted, joined by ``+``), ``image_ids``, ``n_views``, ``true_label``,
        the ``p_<class>`` columns and ``predicted_label``.
    counts : dict
        ``images`` in, ``breasts``, ``two_or_more_views``, ``single_view`` (a breast
        scored on the one view it has) and ``no_laterality`` (images left out because
        their laterality is unknown). images = images in breasts + no_laterality.
    """
    if rule not in VIEW_AGGREGATIONS:
        raise ValueError(f"unknown view aggregation {rule!r}; choose one of "
                         f"{', '.join(VIEW_AGGREGATIONS)}")
    columns = [f"p_{name}" for name in classes]
    rank = {name: position for position, name in enumerate(severity)}
    known = images["laterality"].notna() & (images["laterality"].astype(str).str.len() > 0)
    rows = []
    for (patient, laterality), group in images[known].groupby(
        ["patient_id", "laterality"], sort=False
    ):
        vectors = group[columns].to_numpy(dtype=np.float64)
        if rule == "mean":
            vector = vectors.mean(axis=0)
        else:
            vector = vectors[int(np.argmax(suspicion(vectors, suspicious)))]
        row = {
            "breast_id": f"{patient}_{laterality}",
            "patient_id": patient,
            "laterality": laterality,
            "views": "+".join(sorted(group["view"].fillna("unknown").astype(str))),
            "image_ids": " ".join(group["image_id"].astype(str)),
            "n_views": len(group),
            "true_label": max(group["true_label"], key=rank.__getitem__),
        }
        row.update(zip(columns, vector, strict=True))
        row["predicted_label"] = classes[int(np.argmax(vector))]
        rows.append(row)
    breasts = pd.DataFrame(rows, columns=[
        "breast_id", "patient_id", "laterality", "views", "image_ids", "n_views",
        "true_label", *columns, "predicted_label"])
    single = int((breasts["n_views"] == 1).sum())
    counts = {
        "images": len(images),
        "breasts": len(breasts),
        "two_or_more_views": len(breasts) - single,
        "single_view": single,
        "no_laterality": int((~known).sum()),
    }
    return breasts, counts
