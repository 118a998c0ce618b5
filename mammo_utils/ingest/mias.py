"""mini-MIAS (``Info.txt`` plus ``mdbNNN.pgm``) into index, lesions and rejects.

``Info.txt`` as published holds prose and a header around a table of
``REFNUM BG CLASS SEVERITY X Y RADIUS``. Facts from the database's own notes:

* NORM rows have no severity and no coordinates; widely spread calcifications have a
  class and severity but no coordinates; an image with several lesions has several rows;
* coordinates are measured from the bottom-left corner of the 1024x1024 image, so the
  top-based centre is ``center_y = 1024 - y``;
* films come in pairs, the right breast with an odd number and the left with the even
  number after it, so ``mdb001``/``mdb002`` are one woman (patient ``W001``);
* every image is a medio-lateral oblique view.

Lines starting with ``mdb`` are table rows; a row that does not parse is rejected with its
line number (source ``Info.txt:<line>``). ``breast_density`` keeps the MIAS background
tissue code (``F`` fatty, ``G`` fatty-glandular, ``D`` dense-glandular).
"""

from __future__ import annotations

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
    r"(?:\s+(?P<x>\d+)\s+(?P<y>\d+)(?:\s+(?P<radius>\d+))?)?\s*$"
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


def parse_info(path: Path) -> tuple[pd.DataFrame, list[dict]]:
    """Table rows of ``Info.txt`` (one per lesion or NORM image) and the rejected rows."""
    rows, rejects = [], []
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        text = line.strip()
        if not text.lower().startswith("mdb"):
            continue
        match = _ROW.match(text)
        source = f"{Path(path).name}:{number}"
        if match is None:
            rejects.append({"source": source, "reason": f"unparsable Info.txt row: {text!r}"})
        elif match["cls"] != "NORM" and match["severity"] is None:
            rejects.append({"source": source, "reason": f"abnormality without severity: {text!r}"})
        else:
            rows.append({"source": source, **match.groupdict()})
    columns = ["source", "refnum", "tissue", "cls", "severity", "x", "y", "radius"]
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


def ingest(root: Path, *, views: Iterable[str] | None = None) -> IngestResult:
    """Ingest a mini-MIAS folder: ``Info.txt`` and the ``mdbNNN.pgm`` images beside it
    (or in any sub-folder). ``views`` other than MLO reject every image."""
    root = Path(root)
    info = find_info(root)
    table, bad_rows = parse_info(info)
    rejects = list(bad_rows)
    images = {path.stem.lower(): path for path in root.rglob("*.pgm")}
    selected = views is None or "MLO" in {view.strip().upper() for view in views}

    index_records, lesion_records = [], []
    image_rejects: set[str] = set()
    rows_rejected = len(bad_rows)
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
            image_rejects.add(refnum)
            rows_rejected += len(rows)
            continue
        lesions = rows[rows["cls"] != "NORM"]
        lesion_records.extend(_lesion(row, i) for i, (_, row) in enumerate(lesions.iterrows(), 1))
        index_records.append(
            {
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
        )
    unlisted = sorted(set(images) - set(table["refnum"]))
    rejects.extend(
        {"source": str(images[stem]), "reason": f"no usable row in {info.name}"}
        for stem in unlisted
    )
    n_rows = len(table) + len(bad_rows)
    referenced = set(table["refnum"]) | set(images)
    reconciliation = [
        {
            "dataset": "mias",
            "source": info.name,
            "unit": "table rows",
            "total": n_rows,
            "kept": n_rows - rows_rejected,
            "rejected": rows_rejected,
        },
        {
            "dataset": "mias",
            "source": str(root),
            "unit": "images",
            "total": len(referenced),
            "kept": len(index_records),
            "rejected": len(image_rejects) + len(unlisted),
        },
    ]
    return IngestResult(
        pd.DataFrame(index_records),
        pd.DataFrame(lesion_records),
        pd.DataFrame(rejects),
        pd.DataFrame(reconciliation),
    )
