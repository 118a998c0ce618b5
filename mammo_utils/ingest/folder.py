"""A user's ``<root>/<CLASS>/*.{dcm,png,jpg,jpeg,pgm}`` tree into index and rejects.

Class folders are matched by :func:`mammo_utils.classes.normalize_label`, so case and
separators do not matter (``Benign_Without_Callback``, ``benign-no-callback``). Every
file in a folder that names no class is rejected, as is every file that is not a
supported image, so the files counted in equal the images kept plus the files rejected.
The patient is the file stem unless ``<root>/patients.csv`` (columns ``file``,
``patient_id``; ``file`` is the path relative to the root or the bare file name) maps it.
Every file is checked readable as an image before it is indexed (its header, without
decoding the pixels: :func:`mammo_utils.reader.check_image`); one that is empty, text,
truncated, without pixel data or oversized is rejected with the reader's reason. DICOM
files give laterality and view from their headers; other formats leave them empty.
Image ids are the relative paths (``MALIGNANT/case 1.png``): unique by construction, where
any shortening (dropping the suffix, joining folders with ``__``) would let two files
(``a/b.png`` and ``a__b.png``, ``x.png`` and ``x.dcm``) share one id.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from mammo_utils.classes import UnknownLabelError, normalize_label
from mammo_utils.ingest import IngestResult
from mammo_utils.ingest.dicom_index import printable
from mammo_utils.reader import ImageReadError, check_image

IMAGE_SUFFIXES = frozenset({".dcm", ".png", ".jpg", ".jpeg", ".pgm"})
PATIENTS_CSV = "patients.csv"


def read_patient_map(root: Path) -> dict[str, str]:
    """``file -> patient_id`` from ``<root>/patients.csv`` (empty when there is none)."""
    path = Path(root) / PATIENTS_CSV
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = {"file", "patient_id"} - set(table.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    return dict(zip(table["file"].str.strip(), table["patient_id"].str.strip(), strict=True))


def _files(root: Path) -> list[Path]:
    """Every non-hidden file under ``root`` except ``patients.csv``, symbolic links included
    (a broken one is then rejected, so it is counted rather than silently skipped)."""
    return sorted(
        path
        for path in root.rglob("*")
        if (path.is_file() or path.is_symlink())
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.relative_to(root).as_posix() != PATIENTS_CSV
    )


def _image_tags(path: Path) -> tuple[str, str, str]:
    """(laterality, view, reject reason) of a file, checked readable as an image without
    decoding its pixels (:func:`~mammo_utils.reader.check_image`); laterality and view
    come from DICOM headers only."""
    try:
        metadata = check_image(path)
    except ImageReadError as error:
        return "", "", error.reason
    if metadata["format"] != "dicom":
        return "", "", ""
    return metadata["laterality"] or "", metadata["view"] or "", ""


def _classify(path: Path, root: Path, follow_symlinks: bool = False) -> tuple[str, str]:
    """(label, reject reason) of one file from its class folder and suffix."""
    relative = path.relative_to(root)
    if printable(str(relative)) != str(relative):
        return "", "file name is not valid UTF-8; rename it"
    # realpath, unlike Path.resolve, does not raise on a link loop (rejected below as broken)
    if not follow_symlinks and not Path(os.path.realpath(path)).is_relative_to(root):
        return "", "symbolic link to a file outside the data root (--follow-symlinks includes it)"
    if not path.is_file():
        return "", "broken symbolic link"
    if len(relative.parts) < 2:
        return "", "file not inside a class folder"
    try:
        label = normalize_label(relative.parts[0])
    except UnknownLabelError:
        return "", f"unknown class folder {relative.parts[0]!r}"
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return "", f"unsupported file type {path.suffix or '(none)'!r}"
    return label, ""


def ingest(
    root: Path, *, views: Iterable[str] | None = None, follow_symlinks: bool = False
) -> IngestResult:
    """Ingest a folder-per-class image tree. With ``views``, a DICOM whose view is known
    and not selected is rejected; images of unknown view are kept. A symbolic link
    leading out of ``root`` (to the file itself or through a linked folder) is rejected
    unless ``follow_symlinks``: a data root never pulls in other files unasked."""
    root = Path(root).resolve()
    patients = read_patient_map(root)
    views_set = {view.strip().upper() for view in views} if views else None
    files = _files(root)
    index_records, rejects = [], []
    for path in tqdm(files, desc="folder images", unit="file"):
        relative = printable(path.relative_to(root).as_posix())
        label, reason = _classify(path, root, follow_symlinks)
        laterality, view = "", ""
        if not reason:
            laterality, view, reason = _image_tags(path)
        if not reason and views_set is not None and view and view not in views_set:
            reason = f"view {view!r} not selected ({','.join(sorted(views_set))})"
        if reason:
            rejects.append({"source": relative, "reason": reason})
            continue
        index_records.append(
            {
                "image_id": relative,
                "patient_id": patients.get(relative, patients.get(path.name, path.stem)),
                "dataset": "folder",
                "official_split": "none",
                "laterality": laterality,
                "view": view,
                "label": label,
                "abnormality_types": "",
                "n_abnormalities": 0 if label == "NORMAL" else "",
                "image_path": str(path),
            }
        )
    reconciliation = [
        {
            "dataset": "folder",
            "source": str(root),
            "unit": "files",
            "total": len(files),
            "kept": len(index_records),
            "rejected": len(rejects),
        }
    ]
    return IngestResult(
        pd.DataFrame(index_records),
        pd.DataFrame(columns=["image_id"]),
        pd.DataFrame(rejects),
        pd.DataFrame(reconciliation),
    )
