"""CBIS-DDSM from The Cancer Imaging Archive (TCIA), in the layout NBIA's Data Retriever
writes and ``mammo ingest`` reads::

    <out>/CBIS-DDSM/<Subject ID>/<Study UID>/<Series UID>/1-1.dcm ...
    <out>/metadata.csv                         NBIA's columns, one row per series
    <out>/{mass,calc}_case_description_{train,test}_set.csv
    <out>/fetch_manifest.json                  sizes and sha256 of everything completed

Endpoints (public collections need no login). The NBIA search API lists a collection's
series with ``getSeries?Collection=CBIS-DDSM`` (a JSON list of objects with
``SeriesInstanceUID``, ``StudyInstanceUID``, ``PatientID``, ``SeriesDescription``,
``Modality``, ``Manufacturer``, ``ImageCount``, ``FileSize``, ...) and serves one series as
a zip with ``getImage?NewFileNames=Yes&SeriesInstanceUID=...`` (``NewFileNames`` names the
members ``1-1.dcm``, ``1-2.dcm`` as the Data Retriever does). TCIA's own client
(``tcia_utils``, module ``nbia_v4``) uses ``.../nbia-api/services/v4/`` without
authentication since TCIA stopped hosting controlled data in NBIA; ``.../services/v1/`` is
the older path of the same calls. Both are one ``base_url`` away. The case-description
CSVs moved with TCIA's website from the wiki to ``www.cancerimagingarchive.net/
wp-content/uploads/``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from mammo_utils.fetch.base import (
    TMP_DIR,
    ArchiveError,
    ByteProgress,
    FetchReport,
    remove_if_empty,
)
from mammo_utils.fetch.http import (
    FetchError,
    RetryPolicy,
    build_url,
    download,
    get_json,
)
from mammo_utils.fetch.manifest import Manifest, file_record

COLLECTION = "CBIS-DDSM"
DEFAULT_BASE_URL = "https://services.cancerimagingarchive.net/nbia-api/services/v4"
DEFAULT_CSV_BASE_URL = "https://www.cancerimagingarchive.net/wp-content/uploads"
COLLECTION_PAGE = "https://www.cancerimagingarchive.net/collection/cbis-ddsm/"
MANUAL_HINT = (
    "Manual route: install the NBIA Data Retriever, open the CBIS-DDSM .tcia manifest and "
    f"download the case-description CSVs from {COLLECTION_PAGE} (README: 'Real data')."
)

# subset name -> (Subject ID prefix, case-description CSV)
SUBSETS: dict[str, tuple[str, str]] = {
    "mass-train": ("Mass-Training", "mass_case_description_train_set.csv"),
    "mass-test": ("Mass-Test", "mass_case_description_test_set.csv"),
    "calc-train": ("Calc-Training", "calc_case_description_train_set.csv"),
    "calc-test": ("Calc-Test", "calc_case_description_test_set.csv"),
}

METADATA_COLUMNS = (
    "Series UID", "Collection", "3rd Party Analysis", "Data Description URI", "Subject ID",
    "Study UID", "Study Description", "Study Date", "Series Description", "Manufacturer",
    "Modality", "SOP Class Name", "SOP Class UID", "Number of Images", "File Size",
    "File Location", "Download Timestamp",
)  # fmt: skip

SUBJECT = re.compile(
    r"^(?P<prefix>(?:Mass|Calc)-(?:Training|Test))_(?P<patient>P_\d+)_"
    r"(?:LEFT|RIGHT)_(?:CC|MLO)(?:_\d+)?$"
)
NBIA_FILE_NAME = re.compile(r"^\d+-\d+\.dcm$")


@dataclass(frozen=True)
class SeriesInfo:
    """One series of the NBIA listing, with the fields metadata.csv needs."""

    uid: str
    study_uid: str
    subject: str
    description: str = ""
    modality: str = ""
    manufacturer: str = ""
    image_count: int = 0
    file_size: int = 0
    study_date: str = ""
    study_description: str = ""
    third_party: str = "NO"
    collection_uri: str = ""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> SeriesInfo:
        """Build from one ``getSeries`` object (missing optional fields become empty)."""
        return cls(
            uid=item["SeriesInstanceUID"],
            study_uid=item["StudyInstanceUID"],
            subject=item["PatientID"],
            description=item.get("SeriesDescription") or "",
            modality=item.get("Modality") or "",
            manufacturer=item.get("Manufacturer") or "",
            image_count=int(item.get("ImageCount") or 0),
            file_size=int(item.get("FileSize") or 0),
            study_date=item.get("StudyDate") or "",
            study_description=item.get("StudyDesc") or item.get("StudyDescription") or "",
            third_party=item.get("ThirdPartyAnalysis") or "NO",
            collection_uri=item.get("CollectionURI") or "",
        )

    @property
    def location(self) -> Path:
        """Folder of the series relative to the output root."""
        return Path(COLLECTION) / self.subject / self.study_uid / self.uid


def list_series(base_url: str, policy: RetryPolicy) -> list[SeriesInfo]:
    """Every series of the collection, as NBIA's ``getSeries`` lists it."""
    url = build_url(base_url, "getSeries", {"Collection": COLLECTION})
    items = get_json(url, policy, MANUAL_HINT)
    if not isinstance(items, list):
        raise FetchError(f"{url} answered {type(items).__name__}, not a list. {MANUAL_HINT}")
    return [SeriesInfo.from_json(item) for item in items]


def select_series(
    series: Iterable[SeriesInfo], subsets: Sequence[str], patients: int | None
) -> list[SeriesInfo]:
    """Series of the chosen subsets; with ``patients``, only the first N patients (sorted
    by id) of each subset, with all their full, ROI-mask and cropped series."""
    unknown = sorted(set(subsets) - set(SUBSETS))
    if unknown:
        raise ValueError(f"unknown subset(s) {unknown}; choose from {sorted(SUBSETS)}")
    prefixes = {SUBSETS[name][0] for name in subsets}
    by_patient: dict[tuple[str, str], list[SeriesInfo]] = {}
    for item in series:
        match = SUBJECT.match(item.subject)
        if match and match["prefix"] in prefixes:
            by_patient.setdefault((match["prefix"], match["patient"]), []).append(item)
    chosen: list[SeriesInfo] = []
    for prefix in sorted(prefixes):
        keys = sorted(key for key in by_patient if key[0] == prefix)
        for key in keys[:patients] if patients is not None else keys:
            chosen.extend(sorted(by_patient[key], key=lambda s: (s.subject, s.uid)))
    return chosen


def _member_names(members: list[zipfile.ZipInfo]) -> list[str]:
    """NBIA file names for the DICOM members: kept when already ``1-N.dcm``, else
    numbered in archive order (so a zip of SOP-UID names still lands as 1-1.dcm ...)."""
    names = [Path(member.filename).name for member in members]
    if all(NBIA_FILE_NAME.match(name) for name in names) and len(set(names)) == len(names):
        return names
    return [f"1-{index}.dcm" for index in range(1, len(members) + 1)]


def unpack_series(archive: Path, staging: Path, expected_images: int) -> str:
    """Check ``archive`` and unpack its DICOMs flat into ``staging``; return the SOP Class
    UID of the first image. Raises ArchiveError or zipfile.BadZipFile."""
    with zipfile.ZipFile(archive) as bundle:
        broken = bundle.testzip()
        if broken is not None:
            raise ArchiveError(f"member {broken} fails its CRC check")
        members = [
            m for m in bundle.infolist() if not m.is_dir() and m.filename.lower().endswith(".dcm")
        ]
        if not members:
            raise ArchiveError("holds no .dcm file")
        if expected_images and len(members) != expected_images:
            raise ArchiveError(f"holds {len(members)} images, the listing says {expected_images}")
        staging.mkdir(parents=True)
        for member, name in zip(members, _member_names(members), strict=True):
            (staging / name).write_bytes(bundle.read(member))
    first = sorted(staging.iterdir())[0]
    try:
        header = pydicom.dcmread(first, stop_before_pixels=True)
    except InvalidDicomError as error:
        raise ArchiveError(f"{first.name} is not DICOM ({error})") from error
    return str(header.get("SOPClassUID", ""))


class _SeriesFetcher:
    """Downloads, verifies and places series; shared by the worker threads."""

    def __init__(
        self, out: Path, base_url: str, policy: RetryPolicy, manifest: Manifest, bar: ByteProgress
    ) -> None:
        self.out, self.base_url, self.policy = out, base_url, policy
        self.manifest, self.bar = manifest, bar
        self.tmp = out / TMP_DIR

    def __call__(self, series: SeriesInfo) -> bool:
        """Fetch one series; False when it was already complete."""
        key = f"series:{series.uid}"
        if self.manifest.is_complete(key):
            return False
        url = build_url(
            self.base_url, "getImage", {"NewFileNames": "Yes", "SeriesInstanceUID": series.uid}
        )
        archive = self.tmp / f"{series.uid}.zip"
        staging = self.tmp / f"{series.uid}.unpacked"
        shutil.rmtree(staging, ignore_errors=True)
        download(url, archive, self.policy, MANUAL_HINT, self.bar.add_bytes)
        try:
            sop_class = unpack_series(archive, staging, series.image_count)
        except (ArchiveError, zipfile.BadZipFile, zlib.error, OSError) as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise FetchError(
                f"series {series.uid} ({series.subject}): corrupt archive from {url}: {error}"
            ) from error
        finally:
            archive.unlink(missing_ok=True)
        self._place(series, staging, key, sop_class)
        return True

    def _place(self, series: SeriesInfo, staging: Path, key: str, sop_class: str) -> None:
        """Move the verified folder under its NBIA name and record it."""
        final = self.out / series.location
        self.manifest.forget(key)
        shutil.rmtree(final, ignore_errors=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        files = [file_record(self.out, path) for path in sorted(final.iterdir())]
        self.manifest.record(key, files, series=series.__dict__, sop_class_uid=sop_class)


def _run_parallel(
    fetcher: _SeriesFetcher, pending: list[SeriesInfo], workers: int, report: FetchReport
) -> None:
    """Fetch ``pending`` on ``workers`` threads; each failure is recorded, not raised."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(fetcher, series): series for series in pending}
        for future in as_completed(futures):
            series = futures[future]
            try:
                (report.downloaded if future.result() else report.skipped).append(series.uid)
            except FetchError as error:
                report.failed.append((series.uid, str(error)))
            fetcher.bar.item_done()


def fetch_case_descriptions(
    out: Path, names: Iterable[str], csv_base_url: str, policy: RetryPolicy,
    manifest: Manifest, report: FetchReport,
) -> None:  # fmt: skip
    """Download the case-description CSVs; a body that is not such a CSV (say, an HTML
    page from a moved website) is refused and removed."""
    for name in names:
        key = f"csv:{name}"
        if manifest.is_complete(key):
            report.skipped.append(name)
            continue
        url = build_url(csv_base_url, name)
        target = out / name
        try:
            download(url, target, policy, MANUAL_HINT)
            with open(target, newline="", encoding="utf-8", errors="replace") as handle:
                header = next(csv.reader(handle), [])
            if not header or header[0] != "patient_id":
                target.unlink()
                raise FetchError(f"{url} is not a case-description CSV. {MANUAL_HINT}")
        except FetchError as error:
            report.failed.append((name, str(error)))
            continue
        manifest.record(key, [file_record(out, target)], url=url)
        report.downloaded.append(name)


def write_metadata(out: Path, manifest: Manifest) -> Path:
    """NBIA's metadata.csv for every completed series in ``out`` (written atomically)."""
    rows = []
    for key in sorted(manifest.keys()):
        entry = manifest.entry(key)
        if not key.startswith("series:") or entry is None:
            continue
        info = SeriesInfo(**entry["series"])
        sop_class = entry.get("sop_class_uid", "")
        rows.append({
            "Series UID": info.uid, "Collection": COLLECTION,
            "3rd Party Analysis": info.third_party, "Data Description URI": info.collection_uri,
            "Subject ID": info.subject, "Study UID": info.study_uid,
            "Study Description": info.study_description, "Study Date": info.study_date,
            "Series Description": info.description, "Manufacturer": info.manufacturer,
            "Modality": info.modality,
            "SOP Class Name": pydicom.uid.UID(sop_class).name if sop_class else "",
            "SOP Class UID": sop_class, "Number of Images": len(entry["files"]),
            "File Size": sum(record["size"] for record in entry["files"]),
            "File Location": f"./{info.location.as_posix()}",
            "Download Timestamp": entry["completed"],
        })  # fmt: skip
    target = out / "metadata.csv"
    tmp = out / "metadata.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda row: (row["Subject ID"], row["Series UID"])))
    os.replace(tmp, target)
    return target


def fetch_cbis_ddsm(
    out: Path | str,
    *,
    subsets: Sequence[str] = tuple(SUBSETS),
    patients: int | None = None,
    workers: int = 4,
    base_url: str = DEFAULT_BASE_URL,
    csv_base_url: str = DEFAULT_CSV_BASE_URL,
    policy: RetryPolicy | None = None,
    progress: bool = True,
) -> FetchReport:
    """Fetch the chosen CBIS-DDSM subsets into ``out`` (resumable; see the module doc).

    A listing that cannot be had raises :class:`FetchError`; a series or CSV that fails is
    recorded in the report and the others go on. Nothing is written outside ``out``.
    """
    out = Path(out)
    policy = policy or RetryPolicy()
    if patients is not None and patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    chosen = select_series(list_series(base_url, policy), subsets, patients)
    if not chosen:
        raise FetchError(f"the listing at {base_url} holds no series of {list(subsets)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out)
    report = FetchReport(out=out)
    recorded = set(manifest.keys())
    pending_bytes = sum(s.file_size for s in chosen if f"series:{s.uid}" not in recorded)
    bar = ByteProgress(pending_bytes, progress, COLLECTION, len(chosen))
    try:
        _run_parallel(_SeriesFetcher(out, base_url, policy, manifest, bar), chosen, workers, report)
    finally:
        bar.close()
    csv_names = [SUBSETS[name][1] for name in subsets]
    fetch_case_descriptions(out, csv_names, csv_base_url, policy, manifest, report)
    write_metadata(out, manifest)
    remove_if_empty(out / TMP_DIR)
    return report
