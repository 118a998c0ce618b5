"""Ingest a data set into three tables: ``index`` (one row per image), ``lesions`` (one row
per abnormality) and ``rejects`` (every input row or file left out, with its reason).

Each adapter (:mod:`.cbis_ddsm`, :mod:`.mias`, :mod:`.folder`) returns an
:class:`IngestResult` without splits; :func:`ingest` runs one adapter and assigns
patient-grouped splits, and :func:`combine` merges several results and recomputes the
splits on the union. Every result carries a reconciliation table in which, for each
input and unit (CSV rows, table rows, images, files), ``total == kept + rejected``. The
three counts are taken independently: ``total`` from what was read, ``kept`` from what is
in ``index`` or ``lesions``, ``rejected`` from ``rejects``; so a row lost between reading
and writing breaks the equality, and :meth:`IngestResult.check_reconciliation` says where.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mammo_utils.files import atomic_write_csv
from mammo_utils.splits import assert_no_patient_leakage, assign_splits

INDEX_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_id",
    "dataset",
    "official_split",
    "split",
    "laterality",
    "view",
    "label",
    "abnormality_types",
    "n_abnormalities",
    "breast_density",
    "image_path",
)
LESION_COLUMNS: tuple[str, ...] = (
    "image_id",
    "abnormality_id",
    "type",
    "pathology",
    "assessment",
    "subtlety",
    "mass_shape",
    "mass_margins",
    "calc_type",
    "calc_distribution",
    "mask_path",
    "crop_path",
    "center_x",
    "center_y",
    "radius",
)
REJECT_COLUMNS: tuple[str, ...] = ("source", "reason")
RECONCILIATION_COLUMNS: tuple[str, ...] = ("dataset", "source", "unit", "total", "kept", "rejected")

#: The files :meth:`IngestResult.save` writes into ``data/interim/<dataset>/``; every stage
#: that reads them takes the names from here.
INDEX_FILE = "index.csv"
LESIONS_FILE = "lesions.csv"
REJECTS_FILE = "rejects.csv"
RECONCILIATION_FILE = "reconciliation.csv"
#: Header cache of a DICOM tree (``dicom_index``), kept beside the ingest outputs.
HEADER_CACHE_FILE = "dicom_headers.csv"

#: Separator of ``abnormality_types`` (e.g. ``calcification|mass``).
TYPE_SEPARATOR = "|"

#: Adapter module of each data set name accepted by :func:`ingest`.
ADAPTERS: dict[str, str] = {
    "cbis-ddsm": "mammo_utils.ingest.cbis_ddsm",
    "mias": "mammo_utils.ingest.mias",
    "folder": "mammo_utils.ingest.folder",
}


class ReconciliationError(AssertionError):
    """Rows or images an ingest read but neither kept nor rejected (or counted twice).

    This is a fault of the ingest code, not of the data: every input must end up in the
    tables or in ``rejects`` with its reason.
    """


def _frame(records: Iterable[dict] | pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A frame holding exactly ``columns`` in order (missing ones empty)."""
    frame = pd.DataFrame(records) if not isinstance(records, pd.DataFrame) else records.copy()
    for column in columns:
        if column not in frame.columns:
            frame[column] = ""
    return frame[list(columns)].reset_index(drop=True)


@dataclass
class IngestResult:
    """The three ingest tables, plus a reconciliation table and warning counts."""

    index: pd.DataFrame
    lesions: pd.DataFrame
    rejects: pd.DataFrame
    reconciliation: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=list(RECONCILIATION_COLUMNS))
    )
    warnings: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = _frame(self.index, INDEX_COLUMNS)
        self.lesions = _frame(self.lesions, LESION_COLUMNS)
        self.rejects = _frame(self.rejects, REJECT_COLUMNS)
        self.reconciliation = _frame(self.reconciliation, RECONCILIATION_COLUMNS)

    @property
    def datasets(self) -> list[str]:
        """Data set names present in the index, in order of first appearance."""
        return list(dict.fromkeys(self.index["dataset"]))

    def check_reconciliation(self) -> None:
        """Raise :class:`ReconciliationError` naming every input (data set, file, unit)
        where the rows or images read differ from those kept plus those rejected."""
        table = self.reconciliation
        broken = table[table["total"] != table["kept"] + table["rejected"]]
        if broken.empty:
            return
        lines = []
        for row in broken.itertuples(index=False):
            gap = row.total - row.kept - row.rejected
            lost = (
                f"{gap} read but neither kept nor rejected"
                if gap > 0
                else f"{-gap} more kept or rejected than read"
            )
            lines.append(
                f"{row.dataset} {row.source} ({row.unit}): {row.total} read, "
                f"{row.kept} kept, {row.rejected} rejected; {lost}"
            )
        raise ReconciliationError(
            "ingest counts do not reconcile (a fault of the ingest code):\n" + "\n".join(lines)
        )

    def summary(self) -> str:
        """Human-readable reconciliation and warning counts (what ``mammo ingest`` prints)."""
        lines = [self.reconciliation.to_string(index=False)]
        lines += [f"warning: {count} {what}" for what, count in self.warnings.items() if count]
        lines.append(
            f"{len(self.index)} images, {len(self.lesions)} lesions, {len(self.rejects)} rejects"
        )
        return "\n".join(lines)

    def save(self, out_dir: str | Path) -> Path:
        """Write ``index.csv``, ``lesions.csv``, ``rejects.csv`` and ``reconciliation.csv``
        into ``out_dir`` (each written atomically); returns ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tables = {
            INDEX_FILE: self.index,
            LESIONS_FILE: self.lesions,
            REJECTS_FILE: self.rejects,
            RECONCILIATION_FILE: self.reconciliation,
        }
        for name, table in tables.items():
            atomic_write_csv(out / name, table)
        return out

    @classmethod
    def load(cls, out_dir: str | Path) -> IngestResult:
        """Read back the tables :meth:`save` wrote."""
        out = Path(out_dir)

        def read(name: str) -> pd.DataFrame:
            return pd.read_csv(out / name, dtype=str, keep_default_na=False)

        reconciliation = read(RECONCILIATION_FILE)
        for column in ("total", "kept", "rejected"):
            reconciliation[column] = reconciliation[column].astype(int)
        return cls(read(INDEX_FILE), read(LESIONS_FILE), read(REJECTS_FILE), reconciliation)


def check_unique_ids(index: pd.DataFrame) -> None:
    """Raise ``ValueError`` naming both image paths when two images share an image id.

    Ids key every later stage (done records, output names, predictions); two images
    under one id would silently become one.
    """
    clashes = index[index["image_id"].duplicated(keep=False)]
    if clashes.empty:
        return
    image_id, group = next(iter(clashes.groupby("image_id", sort=False)))
    first, second = group["image_path"].iloc[:2]
    raise ValueError(
        f"image id {image_id!r} is given to two images: {first or '(no path)'} and "
        f"{second or '(no path)'}" + (
            f" ({clashes['image_id'].nunique() - 1} more ids clash)"
            if clashes["image_id"].nunique() > 1 else ""
        )
    )


def with_splits(
    result: IngestResult, val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0
) -> IngestResult:
    """The result with its ``split`` column (re)computed and checked for patient leakage."""
    index = assign_splits(result.index, val_fraction, test_fraction, seed)
    assert_no_patient_leakage(index)
    return IngestResult(
        index, result.lesions, result.rejects, result.reconciliation, result.warnings
    )


def ingest(
    dataset: str,
    root: str | Path,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
    **options,
) -> IngestResult:
    """Ingest one data set (``cbis-ddsm``, ``mias`` or ``folder``) found at ``root``.

    ``options`` go to the adapter's ``ingest`` function (e.g. ``csv_dir``, ``views``,
    ``cache_path``, ``require_images`` for CBIS-DDSM; ``views`` for all). The synthetic
    data set is ingested as ``cbis-ddsm``; its ``dataset`` column then reads ``synthetic``.
    """
    if dataset not in ADAPTERS:
        raise ValueError(f"unknown data set {dataset!r}; choose one of {', '.join(ADAPTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{dataset} root {root} is not a folder")
    adapter = importlib.import_module(ADAPTERS[dataset])
    result = adapter.ingest(root, **options)
    result.check_reconciliation()
    check_unique_ids(result.index)
    return with_splits(result, val_fraction, test_fraction, seed)


def combine(
    results: Sequence[IngestResult],
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> IngestResult:
    """Merge several ingests into one, splits recomputed on the union.

    The ``dataset`` column keeps each row's source, and patient ids become
    ``<dataset>:<patient_id>`` so two data sets' ``P_00001`` stay two women. Image ids
    must be unique across the results (a ``ValueError`` names two images sharing one).
    """
    if not results:
        raise ValueError("combine() needs at least one IngestResult")
    index = pd.concat([result.index for result in results], ignore_index=True)
    check_unique_ids(index)
    index["patient_id"] = index["dataset"].astype(str) + ":" + index["patient_id"].astype(str)
    warnings: dict[str, int] = {}
    for result in results:
        for what, count in result.warnings.items():
            warnings[what] = warnings.get(what, 0) + count
    merged = IngestResult(
        index,
        pd.concat([result.lesions for result in results], ignore_index=True),
        pd.concat([result.rejects for result in results], ignore_index=True),
        pd.concat([result.reconciliation for result in results], ignore_index=True),
        warnings,
    )
    return with_splits(merged, val_fraction, test_fraction, seed)
