"""CBIS-DDSM (and the project's synthetic copy of it) into index, lesions and rejects.

Every upstream quirk of the official case-description CSVs is handled here:

* column names differ between files (``breast_density`` vs ``breast density``): all
  names are lower-cased with spaces turned into underscores;
* quoted path cells end with a newline: every cell is stripped;
* CSV paths end in ``000000.dcm`` while a TCIA download holds ``1-1.dcm``: images are
  joined on ``PatientID`` (the path's first folder), study and series UIDs read from the
  DICOM headers, never on file names;
* the crop and ROI-mask columns are swapped for some rows: both series are pooled and a
  file is the mask when it has the full image's size and binary pixels, else the crop;
* one CSV row per abnormality: the index has one row per image, labelled by its most
  severe pathology, with ``n_abnormalities`` and the joined ``abnormality_types``;
* a patient in both the official train and test files: handled by the splits, which put
  every patient with an official test image wholly in test.

Decisions: a row whose full image is not found is rejected (``image not found: <series
uid>``); a lesion whose ROI mask or crop is not found is kept with an empty path and
counted under ``warnings``. ``normal_case_description.csv`` (written by the synthetic
generator) adds NORMAL images without lesions. The reject ``source`` is
``<csv file>:<data row number>`` (1 = the first row after the header).

Reconciliation, per CSV: the rows read from the file, the rows found again in the output
(each lesion traced back to its row by image, abnormality type and id; each NORMAL row by
its image in the index) and the rows named in ``rejects``; per image: the full images the
rows reference, the index rows, and the images all of whose rows are rejected.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from mammo_utils.classes import UnknownLabelError, most_severe, normalize_label
from mammo_utils.ingest import TYPE_SEPARATOR, IngestResult
from mammo_utils.ingest.dicom_index import index_dicom_tree

#: Official file names: (abnormality kind, official split) by regular expression.
CSV_PATTERN = re.compile(r"^(mass|calc)_case_description_(train|test)_set\.csv$")
NORMAL_CSV = "normal_case_description.csv"
SYNTH_MARKER = "synth_manifest.json"

#: Warning names counted in :attr:`IngestResult.warnings`.
NO_MASK = "lesions without an ROI mask (kept, mask_path empty)"
NO_CROP = "lesions without a cropped image (kept, crop_path empty)"
EXTRA_FILES = "image series holding more than one file (first file used)"

#: Normalized CSV columns this module reads (absent ones are treated as empty).
CSV_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "breast_density",
    "left_or_right_breast",
    "image_view",
    "abnormality_id",
    "abnormality_type",
    "mass_shape",
    "mass_margins",
    "calc_type",
    "calc_distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image_file_path",
    "cropped_image_file_path",
    "roi_mask_file_path",
)

#: Columns without which a CSV is refused: ``normal_case_description.csv`` has no lesions.
NORMAL_REQUIRED: tuple[str, ...] = ("patient_id", "image_file_path")
LESION_REQUIRED: tuple[str, ...] = (
    *NORMAL_REQUIRED, "abnormality_id", "abnormality_type", "pathology"
)
#: One abnormality: a second CSV row with the same key is a duplicate and rejected.
LESION_KEY: tuple[str, ...] = ("image_id", "abnormality_type", "abnormality_id")

_Key = tuple[str, str, str]


def find_case_csvs(csv_dir: Path) -> list[Path]:
    """The case-description CSVs present in ``csv_dir`` (any subset of the official four,
    plus ``normal_case_description.csv``); raises ``FileNotFoundError`` when there are none."""
    found = sorted(
        path
        for path in Path(csv_dir).iterdir()
        if CSV_PATTERN.match(path.name) or path.name == NORMAL_CSV
    )
    if not found:
        raise FileNotFoundError(
            f"no CBIS-DDSM case-description CSV in {csv_dir} "
            "(expected e.g. mass_case_description_train_set.csv)"
        )
    return found


def normalize_column(name: str) -> str:
    """``'breast density'`` and ``'breast_density'`` -> ``'breast_density'``."""
    return re.sub(r"\s+", "_", name.strip().lower())


def read_case_csv(path: Path) -> pd.DataFrame:
    """One case-description CSV with normalized column names and stripped cells, plus
    ``source`` (file and data row number) and ``official_split`` (``train|test|none``).

    A file that is not a readable UTF-8 CSV, or lacks a column every row needs, raises
    ``ValueError`` naming the file: such a file is the wrong file, not a set of bad rows.
    """
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        cause = " ".join(str(err).split())
        raise ValueError(f"{path}: not a readable UTF-8 CSV ({cause})") from err
    frame.columns = [normalize_column(column) for column in frame.columns]
    required = NORMAL_REQUIRED if path.name == NORMAL_CSV else LESION_REQUIRED
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    match = CSV_PATTERN.match(path.name)
    frame["official_split"] = match.group(2) if match else "none"
    if path.name == NORMAL_CSV:
        frame["pathology"] = "NORMAL"
    frame["source"] = [f"{path.name}:{row}" for row in range(1, len(frame) + 1)]
    return frame


def parse_dicom_path(text: str) -> _Key:
    """``Folder/<study uid>/<series uid>/000000.dcm`` -> ``(folder, study uid, series uid)``."""
    parts = [part for part in str(text).strip().replace("\\", "/").split("/") if part]
    if len(parts) < 4:
        raise ValueError(f"expected folder/study/series/file, got {text!r}")
    return parts[-4], parts[-3], parts[-2]


def dataset_name(root: Path) -> str:
    """``synthetic`` for a tree the project generated (it holds ``synth_manifest.json``)."""
    return "synthetic" if (Path(root) / SYNTH_MARKER).is_file() else "cbis-ddsm"


class _Files:
    """Header index lookups: DICOM files by (PatientID, study UID, series UID)."""

    def __init__(self, headers: pd.DataFrame) -> None:
        usable = headers[headers["error"] == ""]
        self._by_key: dict[_Key, list[dict]] = {}
        for record in usable.to_dict("records"):
            key = (record["patient_id"], record["study_uid"], record["series_uid"])
            self._by_key.setdefault(key, []).append(record)
        self._mask_cache: dict[str, bool] = {}

    def get(self, key: _Key) -> list[dict]:
        return self._by_key.get(key, [])

    def is_mask(self, record: dict, full: dict) -> bool:
        """A mask has the full image's size and only two pixel values (by content, not name)."""
        if (record["rows"], record["columns"]) != (full["rows"], full["columns"]):
            return False
        path = record["path"]
        if path not in self._mask_cache:
            self._mask_cache[path] = _is_binary(path)
        return self._mask_cache[path]


def _is_binary(path: str) -> bool:
    try:
        pixels = pydicom.dcmread(path).pixel_array
    except (OSError, ValueError, RuntimeError, AttributeError):
        return False
    low, high = pixels.min(), pixels.max()
    return not np.any((pixels != low) & (pixels != high))


def _roi_paths(row: pd.Series, full: dict, files: _Files, warnings: Counter) -> tuple[str, str]:
    """(mask path, crop path) for one lesion row, told apart by content."""
    candidates: dict[str, dict] = {}
    for column in ("cropped_image_file_path", "roi_mask_file_path"):
        try:
            key = parse_dicom_path(row[column])
        except ValueError:
            continue
        candidates.update((record["path"], record) for record in files.get(key))
    masks = [r["path"] for r in candidates.values() if files.is_mask(r, full)]
    crops = [path for path in candidates if path not in masks]
    warnings[NO_MASK] += not masks
    warnings[NO_CROP] += not crops
    return (masks[0] if masks else ""), (crops[0] if crops else "")


def _lesion_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The abnormality rows (those of ``normal_case_description.csv`` are not lesions)."""
    return rows[rows["pathology"] != "NORMAL"]


def _lesion(row: pd.Series, image_id: str, mask_path: str, crop_path: str) -> dict:
    return {
        "image_id": image_id,
        "abnormality_id": row["abnormality_id"],
        "type": row["abnormality_type"],
        "pathology": normalize_label(row["pathology"]),
        "assessment": row["assessment"],
        "subtlety": row["subtlety"],
        "mass_shape": row["mass_shape"],
        "mass_margins": row["mass_margins"],
        "calc_type": row["calc_type"],
        "calc_distribution": row["calc_distribution"],
        "mask_path": mask_path,
        "crop_path": crop_path,
    }


def _row_problem(row: pd.Series, views: set[str] | None, first_source: str) -> str:
    """Why a CSV row cannot be used, or ``''``; ``first_source`` is the source of the
    first row with the same :data:`LESION_KEY` (the row's own source when it is the first)."""
    try:
        parse_dicom_path(row["image_file_path"])
    except ValueError as err:
        return f"bad image file path: {err}"
    if not row["patient_id"]:
        return "empty patient_id"
    if first_source != row["source"]:
        return f"duplicate of {first_source} (same image, abnormality type and id)"
    try:
        normalize_label(row["pathology"])
    except UnknownLabelError as err:
        return f"unknown pathology: {err}"
    if views is not None and row["image_view"] not in views:
        return f"view {row['image_view']!r} not selected ({','.join(sorted(views))})"
    return ""


def _image_record(rows: pd.DataFrame, dataset: str, image_path: str) -> dict:
    first = rows.iloc[0]
    lesion_rows = _lesion_rows(rows)
    return {
        "image_id": parse_dicom_path(first["image_file_path"])[0],
        "patient_id": first["patient_id"],
        "dataset": dataset,
        "official_split": first["official_split"],
        "laterality": first["left_or_right_breast"],
        "view": first["image_view"],
        "label": most_severe(normalize_label(p) for p in rows["pathology"]),
        "abnormality_types": TYPE_SEPARATOR.join(sorted(set(lesion_rows["abnormality_type"]))),
        "n_abnormalities": len(lesion_rows),
        "breast_density": first["breast_density"],
        "image_path": image_path,
    }


def _csv_name(source: str) -> str:
    """``mass_case_description_train_set.csv:12`` -> the file name."""
    return source.rsplit(":", 1)[0]


def _keys(frame: pd.DataFrame, type_column: str) -> list[_Key]:
    """The :data:`LESION_KEY` of each row (the type column is named differently in the
    CSV rows and in the lesion table)."""
    columns = (frame["image_id"], frame[type_column], frame["abnormality_id"].astype(str))
    return list(zip(*columns, strict=True))


def _kept_sources(rows: pd.DataFrame, index: pd.DataFrame, lesions: pd.DataFrame) -> list[str]:
    """The CSV row behind each lesion in ``lesions`` and each NORMAL row whose image is in
    ``index``, found from the output tables alone (``''`` for a lesion no row explains).

    Only the first row of each :data:`LESION_KEY` can be behind an output row: a later one
    repeats it.
    """
    first = rows.drop_duplicates(list(LESION_KEY))
    lesion_rows = _lesion_rows(first)
    by_key = dict(zip(_keys(lesion_rows, "abnormality_type"), lesion_rows["source"], strict=True))
    sources = [by_key.get(key, "") for key in _keys(lesions, "type")]
    normal_rows = first[first["pathology"] == "NORMAL"]
    sources += normal_rows.loc[normal_rows["image_id"].isin(index["image_id"]), "source"].tolist()
    return sources


def _reconciliation(
    dataset: str, read_counts: dict[str, int], rows: pd.DataFrame, result: IngestResult
) -> list[dict]:
    """Rows read, kept and rejected per CSV, and images referenced, kept and rejected,
    each count taken on its own (see the module notes)."""
    kept_sources = _kept_sources(rows, result.index, result.lesions)
    kept = Counter(_csv_name(source) for source in kept_sources)
    rejected = Counter(_csv_name(source) for source in result.rejects["source"])
    records = [
        {"dataset": dataset, "source": name, "unit": "csv rows", "total": total,
         "kept": kept.pop(name, 0), "rejected": rejected.pop(name, 0)}
        for name, total in sorted(read_counts.items())
    ]
    for name in sorted(set(kept) | set(rejected)):  # output rows that no CSV explains
        source = name or "lesions traced to no CSV row"
        records.append({"dataset": dataset, "source": source, "unit": "csv rows", "total": 0,
                        "kept": kept[name], "rejected": rejected[name]})
    referenced = rows[rows["image_id"] != ""]
    all_rejected = referenced["source"].isin(set(result.rejects["source"]))
    images_rejected = all_rejected.groupby(referenced["image_id"]).all()
    records.append(
        {
            "dataset": dataset,
            "source": "full images referenced",
            "unit": "images",
            "total": referenced["image_id"].nunique(),
            "kept": len(result.index),
            "rejected": int(images_rejected.sum()),
        }
    )
    return records


def _image_ids(paths: Iterable[str]) -> list[str]:
    ids = []
    for path in paths:
        try:
            ids.append(parse_dicom_path(path)[0])
        except ValueError:
            ids.append("")
    return ids


def ingest(
    root: Path,
    *,
    csv_dir: Path | None = None,
    cache_path: Path | None = None,
    views: Iterable[str] | None = None,
    require_images: bool = True,
) -> IngestResult:
    """Ingest a CBIS-DDSM tree (NBIA download, CSV-path layout or the synthetic set).

    ``csv_dir`` holds the case-description CSVs (default ``root``); ``cache_path`` is where
    the DICOM header index is cached. With ``require_images=False`` the CSV table alone is
    indexed (``image_path`` empty, no image lookups), e.g. to study the official splits.
    """
    root = Path(root)
    dataset = dataset_name(root)
    views_set = {view.strip().upper() for view in views} if views else None
    csv_paths = find_case_csvs(Path(csv_dir or root))
    frames = [read_case_csv(path) for path in csv_paths]
    read_counts = {path.name: len(frame) for path, frame in zip(csv_paths, frames, strict=True)}
    rows = pd.concat(frames, ignore_index=True)
    if rows.empty:
        names = ", ".join(path.name for path in csv_paths)
        raise ValueError(f"{csv_dir or root}: the case-description CSVs ({names}) hold no rows")
    columns = list(dict.fromkeys([*rows.columns, *CSV_COLUMNS]))
    rows = rows.reindex(columns=columns, fill_value="").fillna("")
    rows["image_id"] = _image_ids(rows["image_file_path"])
    headers = index_dicom_tree(root, cache_path) if require_images else None
    files = _Files(headers) if headers is not None else None

    rejects: list[dict] = []
    usable = []
    first_sources = rows.groupby(list(LESION_KEY), sort=False)["source"].transform("first")
    for (_, row), first_source in zip(rows.iterrows(), first_sources, strict=True):
        problem = _row_problem(row, views_set, first_source)
        if problem:
            rejects.append({"source": row["source"], "reason": problem})
        else:
            usable.append(row)
    usable_rows = pd.DataFrame(usable, columns=rows.columns)

    warnings: Counter = Counter()
    index_records, lesion_records = [], []
    groups = usable_rows.groupby("image_id", sort=True)
    for image_id, group in tqdm(groups, desc=f"{dataset} images", unit="image"):
        full = None
        if files is not None:
            key = parse_dicom_path(group.iloc[0]["image_file_path"])
            matches = files.get(key)
            if not matches:
                rejects.extend(
                    {"source": source, "reason": f"image not found: {key[2]}"}
                    for source in group["source"]
                )
                continue
            warnings[EXTRA_FILES] += len(matches) > 1
            full = matches[0]
        index_records.append(_image_record(group, dataset, full["path"] if full else ""))
        for _, row in _lesion_rows(group).iterrows():
            mask, crop = _roi_paths(row, full, files, warnings) if full else ("", "")
            lesion_records.append(_lesion(row, image_id, mask, crop))

    result = IngestResult(
        index=pd.DataFrame(index_records),
        lesions=pd.DataFrame(lesion_records),
        rejects=pd.DataFrame(rejects),
        warnings=dict(warnings),
    )
    reconciliation = _reconciliation(dataset, read_counts, rows, result)
    return dataclasses.replace(result, reconciliation=pd.DataFrame(reconciliation))
