"""The ``breast`` task: the CC and MLO views of one breast, paired into one manifest row.

Each source image is written by the ``image`` task's code (crop, flip, pad, resize to
one ``size`` x ``size`` canvas), so both views of a breast share one canvas. Then
:func:`pair_views` groups the written views by patient and laterality (from the
ingest index) into breasts: one row per breast with both view files, labelled with
the most severe label of its views (:func:`mammo_utils.classes.most_severe`), in the
split of its patient (splits are drawn by patient, so both views share it).

A breast with one usable view follows the run's ``single_view`` option: ``exclude``
leaves it out (its image is rejected with the reason), ``duplicate`` gives the one view
as both CC and MLO (``views`` then reads ``CC`` or ``MLO`` alone). Every written view is
accounted for: in a breast row, or rejected for a reason (:data:`UNPAIRED_REASONS`).
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from mammo_utils.classes import most_severe

#: The views a breast row holds, in the order of the two-view model's inputs.
VIEWS: tuple[str, ...] = ("CC", "MLO")
#: The two-view model's input names, one per view (the pipeline's dict keys).
VIEW_INPUTS: tuple[str, ...] = tuple(view.lower() for view in VIEWS)
#: Manifest columns of the ``breast`` task: ``item_id`` is the breast
#: (``<patient>_<laterality>``); ``<view>_path`` and ``<view>_image_id`` its two views.
BREAST_COLUMNS: tuple[str, ...] = (
    "item_id", "patient_id", "laterality", "split", "label", "dataset", "views",
    "cc_path", "mlo_path", "cc_image_id", "mlo_image_id",
)
#: Manifest columns holding a file path, resolved against the manifest's folder.
BREAST_PATH_COLUMNS: tuple[str, ...] = ("cc_path", "mlo_path")

NO_LATERALITY = "laterality unknown"
OTHER_VIEW = "view not CC or MLO"
EXTRA_VIEW = "another image of the same view of this breast"
SINGLE_VIEW_EXCLUDED = "single view excluded (single_view: exclude)"
#: Why a written view is in no breast row.
UNPAIRED_REASONS: tuple[str, ...] = (NO_LATERALITY, OTHER_VIEW, EXTRA_VIEW, SINGLE_VIEW_EXCLUDED)


def _known(values: pd.Series) -> pd.Series:
    text = values.fillna("").astype(str).str.strip()
    return (text != "") & (text.str.lower() != "nan")


def pair_views(
    images: pd.DataFrame, single_view: str = "exclude"
) -> tuple[pd.DataFrame, list[dict], dict]:
    """Pair written views into breasts.

    Parameters
    ----------
    images : DataFrame
        One row per written view: ``path``, ``image_id``, ``patient_id``, ``laterality``,
        ``view``, ``split``, ``label``, ``dataset``, and ``image_path`` (the source, for
        rejects).
    single_view : str
        ``exclude`` or ``duplicate`` (see the module docstring).

    Returns
    -------
    breasts : DataFrame
        One row per breast (:data:`BREAST_COLUMNS`), in order of first appearance.
    rejects : list of dict
        ``source, reason`` for every view in no breast row.
    counts : dict
        ``breasts_in`` (patient and laterality pairs with a CC or MLO view),
        ``breasts_paired`` (both views), ``breasts_duplicated`` and
        ``breasts_excluded`` (one view, by the option), ``views_in``, ``views_paired``
        and ``views_unpaired`` by reason. Raises ``AssertionError`` when breasts in !=
        paired + duplicated + excluded or views in != paired + unpaired.
    """
    if single_view not in ("exclude", "duplicate"):
        raise ValueError(f"unknown single_view option {single_view!r}")
    images = images.reset_index(drop=True)
    view = images["view"].fillna("").astype(str).str.strip().str.upper()
    unpaired: Counter = Counter()
    rejects: list[dict] = []

    def reject(rows: pd.DataFrame, reason: str, detail: str = "") -> None:
        unpaired[reason] += len(rows)
        rejects.extend(
            {"source": str(row["image_path"]),
             "reason": f"{reason}: image {row['image_id']}{detail}"}
            for row in rows.to_dict("records")
        )

    sided = _known(images["laterality"])
    reject(images[~sided], NO_LATERALITY)
    other = sided & ~view.isin(VIEWS)
    reject(images[other], OTHER_VIEW)
    usable = images[sided & ~other].assign(view=view[sided & ~other])

    rows, kinds = [], Counter()
    for (patient, laterality), group in usable.groupby(
        ["patient_id", "laterality"], sort=False
    ):
        breast_id = f"{patient}_{laterality}"
        chosen = {}
        for name in VIEWS:
            candidates = group[group["view"] == name].sort_values("image_id", kind="stable")
            if len(candidates):
                chosen[name] = candidates.iloc[0]
                reject(candidates.iloc[1:], EXTRA_VIEW,
                       f" ({breast_id} {name} is {candidates.iloc[0]['image_id']})")
        if len(chosen) == 1 and single_view == "exclude":
            kinds["excluded"] += 1
            reject(pd.DataFrame([next(iter(chosen.values()))]), SINGLE_VIEW_EXCLUDED,
                   f" (breast {breast_id})")
            continue
        kinds["paired" if len(chosen) == 2 else "duplicated"] += 1
        cc = chosen.get("CC", chosen.get("MLO"))
        mlo = chosen.get("MLO", cc)
        rows.append({
            "item_id": breast_id,
            "patient_id": patient,
            "laterality": laterality,
            "split": cc["split"],
            "label": most_severe(str(row["label"]) for row in (cc, mlo)),
            "dataset": cc["dataset"],
            "views": "+".join(sorted(chosen)),
            "cc_path": cc["path"],
            "mlo_path": mlo["path"],
            "cc_image_id": cc["image_id"],
            "mlo_image_id": mlo["image_id"],
        })
    breasts = pd.DataFrame(rows, columns=BREAST_COLUMNS)
    counts = {
        "breasts_in": int(usable.groupby(["patient_id", "laterality"]).ngroups),
        "breasts_paired": kinds["paired"],
        "breasts_duplicated": kinds["duplicated"],
        "breasts_excluded": kinds["excluded"],
        "views_in": len(images),
        "views_paired": int(kinds["paired"] * 2 + kinds["duplicated"]),
        "views_unpaired": dict(+unpaired),
    }
    _check_counts(counts)
    return breasts, rejects, counts


def _check_counts(counts: dict) -> None:
    """Breasts in = out + excluded; views in = paired + unpaired (else a fault here)."""
    breasts_out = counts["breasts_paired"] + counts["breasts_duplicated"]
    if counts["breasts_in"] != breasts_out + counts["breasts_excluded"]:
        raise AssertionError(f"breast counts do not reconcile: {counts}")
    if counts["views_in"] != counts["views_paired"] + sum(counts["views_unpaired"].values()):
        raise AssertionError(f"view counts do not reconcile: {counts}")


def breast_summary(counts: dict) -> str:
    """One line of breast counts for :meth:`PreprocessResult.summary`."""
    unpaired = "".join(
        f", {count} {reason}" for reason, count in sorted(counts["views_unpaired"].items())
    )
    return (
        f"{counts['breasts_in']} breasts in: {counts['breasts_paired']} with CC and MLO, "
        f"{counts['breasts_duplicated']} single view duplicated, "
        f"{counts['breasts_excluded']} single view excluded; {counts['views_in']} views: "
        f"{counts['views_paired']} paired{unpaired}"
    )
