"""Header-only index of a DICOM tree, so images are found by what they are.

CBIS-DDSM paths in the official CSVs (``.../000000.dcm``) never match a TCIA
download (``1-1.dcm`` under descriptive folders), and the same file name means a
mask in one folder and a crop in the next. The join keys are DICOM content:
``PatientID`` (e.g. ``Mass-Test_P_00820_LEFT_CC``), ``StudyInstanceUID`` and
``SeriesInstanceUID``. Reading headers only (``stop_before_pixels``) keeps a full
download indexable in minutes; the index is cached as a CSV keyed by file path,
size and modification time, so a rerun reads only new or changed files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pydicom
from tqdm.auto import tqdm

from mammo_utils.files import atomic_write_csv
from mammo_utils.reader.errors import describe_exception

#: Columns of the header index (``path`` is absolute): only what ingest needs, the join
#: keys (``PatientID``, study and series UIDs), the image size, and the file's freshness
#: stamp and error. No free text (series description, names, dates) is cached; laterality
#: and view come from the case-description CSVs.
HEADER_COLUMNS: tuple[str, ...] = (
    "path",
    "size",
    "mtime_ns",
    "patient_id",
    "study_uid",
    "series_uid",
    "rows",
    "columns",
    "error",
)

#: NBIA ``metadata.csv`` columns this module relies on.
NBIA_LOCATION = "File Location"


def read_header(path: Path) -> dict[str, object]:
    """Header fields of one DICOM file; ``error`` names the problem for an unreadable file.

    Never raises for a bad file: a file name that is not UTF-8 (it could not be written
    to the UTF-8 tables), a missing file, a dangling symlink or a symlink loop is
    recorded as unreadable, and so is anything the DICOM parser fails on, since hostile
    bytes can make it fail with almost any exception type (values are parsed lazily,
    so reading the fields can fail too). Every column is present, so one unreadable
    file cannot turn the integer ``rows`` column into floats.
    """
    record: dict[str, object] = {**dict.fromkeys(HEADER_COLUMNS, ""), "rows": 0, "columns": 0}
    record["path"] = printable(str(path))
    if record["path"] != str(path):
        record["error"] = "file name is not valid UTF-8; rename it"
        return record
    try:
        stat = path.stat()
    except OSError as err:
        record["error"] = f"cannot be read: {err.strerror or err}"
        return record
    record.update(size=stat.st_size, mtime_ns=stat.st_mtime_ns)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        record.update(
            patient_id=str(ds.get("PatientID", "")),
            study_uid=str(ds.get("StudyInstanceUID", "")),
            series_uid=str(ds.get("SeriesInstanceUID", "")),
            rows=int(ds.get("Rows", 0) or 0),
            columns=int(ds.get("Columns", 0) or 0),
            error="",
        )
    except Exception as err:  # see the docstring: any parser failure means unreadable
        if isinstance(err, OSError) and err.strerror:
            record["error"] = f"cannot be read: {err.strerror}"
        else:
            record["error"] = f"not a readable DICOM file ({describe_exception(err)})"
    return record


def printable(text: str) -> str:
    """``text`` with undecodable file-name bytes shown as ``\\xNN`` escapes, safe to print
    and to write as UTF-8."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _load_cache(cache_path: Path | None) -> dict[str, dict]:
    if cache_path is None or not cache_path.is_file():
        return {}
    cached = pd.read_csv(cache_path, dtype=str, keep_default_na=False)
    if list(cached.columns) != list(HEADER_COLUMNS):
        return {}
    return {row["path"]: row for row in cached.to_dict("records")}


def _is_fresh(record: dict, path: Path) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return record["size"] == str(stat.st_size) and record["mtime_ns"] == str(stat.st_mtime_ns)


def index_files(
    files: Iterable[Path], cache_path: Path | None = None, *, desc: str = "DICOM headers"
) -> pd.DataFrame:
    """Header index of ``files``, reusing and then rewriting the CSV cache at ``cache_path``.

    Paths are made absolute with ``os.path.realpath``, which, unlike ``Path.resolve``,
    does not raise on a symlink loop: the loop is then recorded as unreadable.
    """
    cache = _load_cache(cache_path)
    records = []
    for path in tqdm(sorted({Path(os.path.realpath(f)) for f in files}), desc=desc, unit="file"):
        cached = cache.get(str(path))
        records.append(
            cached if cached is not None and _is_fresh(cached, path) else read_header(path)
        )
    frame = pd.DataFrame.from_records(records, columns=list(HEADER_COLUMNS)).fillna("")
    frame = frame.astype(str)
    frame[["rows", "columns"]] = frame[["rows", "columns"]].replace("", "0").astype(int)
    if cache_path is not None:
        atomic_write_csv(cache_path, frame)
    return frame


def find_dicom_files(root: Path) -> list[Path]:
    """Every ``*.dcm`` file (any case) under ``root``."""
    return sorted(path for path in Path(root).rglob("*") if path.suffix.lower() == ".dcm")


def nbia_files(metadata_csv: Path) -> list[Path]:
    """DICOM files in the series folders an NBIA ``metadata.csv`` lists.

    ``File Location`` is relative to the folder holding ``metadata.csv`` (``./CBIS-DDSM/...``);
    a listed folder that is missing is skipped here and shows up later as an image not found.
    """
    metadata = pd.read_csv(metadata_csv, dtype=str, keep_default_na=False)
    if NBIA_LOCATION not in metadata.columns:
        raise ValueError(
            f"{metadata_csv}: no {NBIA_LOCATION!r} column; is it an NBIA metadata.csv?"
        )
    base = Path(metadata_csv).parent
    files: list[Path] = []
    for location in metadata[NBIA_LOCATION]:
        folder = (base / location.strip().replace("\\", "/")).resolve()
        if folder.is_dir():
            files.extend(path for path in folder.iterdir() if path.suffix.lower() == ".dcm")
    return files


def index_dicom_tree(root: Path, cache_path: Path | None = None) -> pd.DataFrame:
    """Header index of the images under ``root``: via NBIA ``metadata.csv`` when present,
    otherwise by walking the tree."""
    root = Path(root)
    metadata_csv = root / "metadata.csv"
    files = nbia_files(metadata_csv) if metadata_csv.is_file() else find_dicom_files(root)
    return index_files(files, cache_path)
