"""mini-MIAS (``Info.txt`` plus ``mdbNNN.pgm``) into index, lesions and rejects.

``Info.txt`` as published holds prose and a header around a table of
``REFNUM BG CLASS SEVERITY X Y RADIUS``. Facts from the database's own notes:

* NORM rows have no severity and no coordinates; calcifications without one centre have a
  class and severity but no coordinates, or a reference to one of the file's notes
  (``*NOTE 3*``) in their place; an image with several lesions has several rows;
* coordinates are measured from the bottom-left corner of the 1024x1024 image, so the
  top-based centre is ``center_y = 1024 - y``;
* films come in pairs, the right breast with an odd number and the left with the even
  number after it, so ``mdb001``/``mdb002`` are one woman (patient ``W001``);
* every image is a medio-lateral oblique view.

Lines starting with ``mdb`` are table rows; a row that does not parse is rejected with its
line number (source ``Info.txt:<line>``). An abnormality without coordinates keeps its image
in the index, labelled by its severity, and its row in ``lesions`` with an empty centre and
radius (its location is unknown; counted under ``warnings``). ``breast_density`` keeps the
MIAS background tissue code (``F`` fatty, ``G`` fatty-glandular, ``D`` dense-glandular).

Reconciliation: the table rows counted in ``Info.txt`` against the lesions and NORMAL
images in the output plus the row rejects; the images named by the table or found on disk
against the index rows plus the images rejected.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from mammo_utils.classes import most_severe
from mammo_utils.ingest import TYPE_SEPARATOR, IngestResult

MIAS_SIZE = 1024
INFO_NAMES = ("Info.txt", "info.txt", "INFO.TXT")

_ROW = re.compile(
    r"^(?P<refnum>mdb\d{3})\s+(?P<tissue>[FGD])\s+(?P<cls>CALC|CIRC|SPIC|MISC|ARCH|ASYM|NORM)"
    r"(?:\s+(?P<severity>[BM]))?"
    r"(?:\s+(?P<x>\d+)\s+(?P<y>\d+)(?:\s+(?P<radius>\d+))?)?"
    r"(?:\s+(?P<note>\*\s*(?i:note)\s*\d+\s*\*))?\s*$"
)
#: Warning counted in :attr:`IngestResult.warnings` for rows without coordinates.
NO_LOCATION = (
    "abnormalities without a location (kept with an empty centre; the roi task cuts no "
    "patch from their image)"
)
_TYPES = {
    "CALC": "calcification",
    "CIRC": "mass",
    "SPIC": "mass",
    "MISC": "mass",
    "ARCH": "architectural distortion",
    "ASYM": "asymmetry",
}
_MARGINS = {"CIRC": "CIRCUMSCRIBED", "SPIC": "SPICULATED", "MISC": "ILL_DEFINED"}
_SEVERITY = {"B": "BENIGN", "M": "MALIGNANT"}


def find_info(root: Path) -> Path:
    """The ``Info.txt`` of a mini-MIAS folder; ``FileNotFoundError`` names the folder."""
    for name in INFO_NAMES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    raise FileNotFoundError(f"no Info.txt in {root}; is it a mini-MIAS folder?")


def table_lines(path: Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every table row of ``Info.txt`` (lines starting ``mdb``)."""
    lines = Path(path).read_text(errors="replace").splitlines()
    return [
        (number, line.strip())
        for number, line in enumerate(lines, 1)
        if line.strip().lower().startswith("mdb")
    ]


def parse_info(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Table rows of ``Info.txt`` (one per lesion or NORM image) and the rejected rows.

    ``x``, ``y`` and ``radius`` are ``None`` where the row gives no coordinates; ``note``
    holds the note a row refers to (e.g. ``*NOTE 3*``), else ``None``.
    """
    rows, rejects = [], []
    for number, text in table_lines(path):
        match = _ROW.match(text)
        source = f"{Path(path).name}:{number}"
        if match is None:
            rejects.append({"source": source, "reason": f"unparsable Info.txt row: {text!r}"})
        elif match["cls"] != "NORM" and match["severity"] is None:
            rejects.append({"source": source, "reason": f"abnormality without severity: {text!r}"})
        else:
            rows.append({"source": source, **match.groupdict()})
    columns = ["source", "refnum", "tissue", "cls", "severity", "x", "y", "radius", "note"]
    return pd.DataFrame(rows, columns=columns), rejects


def patient_id(refnum: str) -> str:
    """``mdb001`` and ``mdb002`` -> ``W001`` (one woman per pair of films)."""
    number = int(refnum[3:])
    return f"W{(number + 1) // 2:03d}"


def laterality(refnum: str) -> str:
    """Odd film numbers are right breasts, even ones left (the MIAS notes)."""
    return "RIGHT" if int(refnum[3:]) % 2 else "LEFT"


def _label(row: pd.Series) -> str:
    return "NORMAL" if row["cls"] == "NORM" else _SEVERITY[row["severity"]]


def _lesion(row: pd.Series, abnormality_id: int) -> dict:
    has_centre = row["x"] is not None and not pd.isna(row["x"])
    has_radius = row["radius"] is not None and not pd.isna(row["radius"])
    return {
        "image_id": row["refnum"],
        "abnormality_id": abnormality_id,
        "type": _TYPES[row["cls"]],
        "pathology": _label(row),
        "mass_margins": _MARGINS.get(row["cls"], ""),
        "center_x": int(row["x"]) if has_centre else "",
        "center_y": MIAS_SIZE - int(row["y"]) if has_centre else "",
        "radius": int(row["radius"]) if has_radius else "",
    }


def _is_pgm(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) in (b"P2", b"P5")


def _by_name(files: list[Path]) -> tuple[dict[str, Path], list[dict]]:
    """``mdbNNN -> path`` of the PGM ``files``, and a reject for every further file with a
    name already taken (two ``mdb001.pgm`` in different folders)."""
    images: dict[str, Path] = {}
    rejects = []
    for path in files:
        stem = path.stem.lower()
        if stem in images:
            rejects.append({"source": str(path), "reason": f"same image name as {images[stem]}"})
        else:
            images[stem] = path
    return images, rejects


def _image_record(refnum: str, rows: pd.DataFrame, path: Path) -> dict:
    lesions = rows[rows["cls"] != "NORM"]
    return {
        "image_id": refnum,
        "patient_id": patient_id(refnum),
        "dataset": "mias",
        "official_split": "none",
        "laterality": laterality(refnum),
        "view": "MLO",
        "label": most_severe(_label(row) for _, row in rows.iterrows()),
        "abnormality_types": TYPE_SEPARATOR.join(sorted({_TYPES[c] for c in lesions.cls})),
        "n_abnormalities": len(lesions),
        "breast_density": rows["tissue"].iloc[0],
        "image_path": str(path.resolve()),
    }


def _reconciliation(
    info: Path, root: Path, table: pd.DataFrame, files: list[Path], result: IngestResult
) -> list[dict]:
    """Table rows and images read, kept and rejected, each count taken on its own: rows
    read are the table lines of ``info``, images read the names the table lists or the
    ``files`` found (a second file of one name is one more image)."""
    row_prefix = f"{info.name}:"
    rejected = result.rejects["source"]
    is_row = rejected.str.startswith(row_prefix)
    normal_rows = table[table["cls"] == "NORM"]
    normal_kept = int(normal_rows["refnum"].isin(result.index["image_id"]).sum())
    names = {path.stem.lower() for path in files}
    every_row_rejected = table["source"].isin(set(rejected)).groupby(table["refnum"]).all()
    return [
        {
            "dataset": "mias",
            "source": info.name,
            "unit": "table rows",
            "total": len(table_lines(info)),
            "kept": len(result.lesions) + normal_kept,
            "rejected": int(is_row.sum()),
        },
        {
            "dataset": "mias",
            "source": str(root),
            "unit": "images",
            "total": len(names | set(table["refnum"])) + len(files) - len(names),
            "kept": len(result.index),
            "rejected": int(every_row_rejected.sum()) + int((~is_row).sum()),
        },
    ]


def ingest(root: Path, *, views: Iterable[str] | None = None) -> IngestResult:
    """Ingest a mini-MIAS folder: ``Info.txt`` and the ``mdbNNN.pgm`` images beside it
    (or in any sub-folder). ``views`` other than MLO reject every image."""
    root = Path(root)
    info = find_info(root)
    table, rejects = parse_info(info)
    files = sorted(root.rglob("*.pgm"))
    images, same_name = _by_name(files)
    rejects += same_name
    selected = views is None or "MLO" in {view.strip().upper() for view in views}

    index_records, lesion_records = [], []
    for refnum, rows in table.groupby("refnum", sort=True):
        path = images.get(refnum)
        reason = ""
        if not selected:
            reason = "view 'MLO' not selected"
        elif path is None:
            reason = f"image not found: {refnum}.pgm"
        elif not _is_pgm(path):
            reason = f"not a PGM file: {path}"
        if reason:
            rejects.extend({"source": source, "reason": reason} for source in rows["source"])
            continue
        lesions = rows[rows["cls"] != "NORM"]
        lesion_records.extend(_lesion(row, i) for i, (_, row) in enumerate(lesions.iterrows(), 1))
        index_records.append(_image_record(refnum, rows, path))
    rejects.extend(
        {"source": str(images[stem]), "reason": f"no usable row in {info.name}"}
        for stem in sorted(set(images) - set(table["refnum"]))
    )
    unlocated = sum(lesion["center_x"] == "" for lesion in lesion_records)
    result = IngestResult(
        pd.DataFrame(index_records),
        pd.DataFrame(lesion_records),
        pd.DataFrame(rejects),
        warnings={NO_LOCATION: unlocated},
    )
    reconciliation = _reconciliation(info, root, table, files, result)
    return dataclasses.replace(result, reconciliation=pd.DataFrame(reconciliation))
