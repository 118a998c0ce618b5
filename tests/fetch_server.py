"""A real HTTP server on 127.0.0.1 that mimics TCIA's NBIA API, TCIA's CSV downloads and
the mini-MIAS archive, with failure injection, for the ``mammo fetch`` tests.

The served CBIS-DDSM data come from an NBIA-shaped source tree (``metadata.csv`` plus
``CBIS-DDSM/<subject>/<study>/<series>/*.dcm`` and the case-description CSVs), built by
:func:`write_tiny_cbis_tree` with tiny synthetic DICOMs shaped like CBIS-DDSM's. The server
binds port 0 on loopback only, counts every request, and shuts itself down after
``lifetime`` seconds even if a test forgets to.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
import threading
import urllib.parse
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,"
    "abnormality type,mass shape,mass margins,assessment,pathology,subtlety,"
    "image file path,cropped image file path,ROI mask file path"
)
CALC_HEADER = (
    "patient_id,breast density,left or right breast,image view,abnormality id,"
    "abnormality type,calc type,calc distribution,assessment,pathology,subtlety,"
    "image file path,cropped image file path,ROI mask file path"
)
# (subject prefix, patient, side, view, pathology, case-description CSV)
CASES = (
    ("Mass-Training", "P_00001", "LEFT", "CC", "MALIGNANT", "mass_case_description_train_set.csv"),
    ("Mass-Training", "P_00004", "RIGHT", "MLO", "BENIGN", "mass_case_description_train_set.csv"),
    ("Mass-Test", "P_00016", "LEFT", "MLO", "BENIGN", "mass_case_description_test_set.csv"),
    ("Calc-Training", "P_00005", "RIGHT", "CC", "MALIGNANT", "calc_case_description_train_set.csv"),
    (
        "Calc-Test",
        "P_00038",
        "LEFT",
        "CC",
        "BENIGN_WITHOUT_CALLBACK",
        "calc_case_description_test_set.csv",
    ),
)
SOURCE_COLUMNS = (
    "Series UID", "Subject ID", "Study UID", "Series Description", "Manufacturer",
    "Modality", "Number of Images", "File Size", "File Location",
)  # fmt: skip


def _uid(*parts: object) -> str:
    """A deterministic DICOM UID from ``parts``."""
    return generate_uid(entropy_srcs=[str(part) for part in parts])


def _write_dicom(path: Path, subject: str, study: str, series: str, description: str,
                 pixels: np.ndarray) -> None:  # fmt: skip
    """A minimal secondary-capture DICOM holding ``pixels`` (uint8 or uint16)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = _uid(series, path.name)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.PatientID, ds.PatientName = subject, subject
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SeriesDescription, ds.Modality = description, "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def _case_images(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tiny full image, its binary ROI mask (same size) and a crop (smaller)."""
    full = rng.integers(0, 4096, size=(48, 40), dtype=np.uint16)
    mask = np.zeros((48, 40), dtype=np.uint8)
    mask[20:28, 15:23] = 255
    return full, mask, full[16:32, 11:27].copy()


def write_tiny_cbis_tree(root: Path, seed: int = 0) -> Path:
    """An NBIA-shaped CBIS-DDSM source tree: one full image series and one ROI series
    (mask ``1-1.dcm``, crop ``1-2.dcm``) per case, metadata.csv and the four CSVs."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {}
    metadata = []
    for prefix, patient, side, view, pathology, csv_name in CASES:
        subject = f"{prefix}_{patient}_{side}_{view}"
        full, mask, crop = _case_images(rng)
        study, series = _uid(subject, "study"), _uid(subject, "series")
        roi_study, roi_series = _uid(subject, "roi-study"), _uid(subject, "roi-series")
        full_dir = Path("CBIS-DDSM", subject, study, series)
        roi_dir = Path("CBIS-DDSM", f"{subject}_1", roi_study, roi_series)
        _write_dicom(root / full_dir / "1-1.dcm", subject, study, series,
                     "full mammogram images", full)  # fmt: skip
        for name, pixels in (("1-1.dcm", mask), ("1-2.dcm", crop)):
            _write_dicom(root / roi_dir / name, f"{subject}_1", roi_study, roi_series,
                         "ROI mask images", pixels)  # fmt: skip
        for folder, sub, stu, ser, desc in (
            (full_dir, subject, study, series, "full mammogram images"),
            (roi_dir, f"{subject}_1", roi_study, roi_series, "ROI mask images"),
        ):
            files = list((root / folder).iterdir())
            size = sum(f.stat().st_size for f in files)
            location = f"./{folder.as_posix()}"
            metadata.append([ser, sub, stu, desc, "HOLOGIC", "MG", len(files), size, location])
        mass = csv_name.startswith("mass")
        kind = ("mass", "OVAL", "CIRCUMSCRIBED")
        if not mass:
            kind = ("calcification", "PLEOMORPHIC", "CLUSTERED")
        full_path = f"{subject}/{study}/{series}/000000.dcm"
        crop_path = f"{subject}_1/{roi_study}/{roi_series}/000000.dcm"
        mask_path = f'"{subject}_1/{roi_study}/{roi_series}/000001.dcm\n"'  # upstream quirk
        rows.setdefault(csv_name, []).append(",".join([
            patient, "2", side, view, "1", *kind, "4", pathology, "3", full_path, crop_path,
            mask_path,
        ]))  # fmt: skip
    for csv_name in sorted({case[5] for case in CASES}):
        header = MASS_HEADER if csv_name.startswith("mass") else CALC_HEADER
        (root / csv_name).write_text("\n".join([header, *rows[csv_name]]) + "\n")
    with open(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SOURCE_COLUMNS)
        writer.writerows(metadata)
    return root


def _pgm(width: int, height: int, rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 256, size=(height, width), dtype=np.uint8)
    return f"P5\n{width} {height}\n255\n".encode() + pixels.tobytes()


def build_mias_archive(images: int = 4, info_in_readme: bool = False, seed: int = 0) -> bytes:
    """A mini-MIAS-shaped all-mias.tar.gz: ``mdb001.pgm`` ..., Info.txt (prose around the
    table, as published; or the table inside README), README and Licence.txt."""
    rng = np.random.default_rng(seed)
    table = ["mdb001 G CIRC B 535 425 197", "mdb002 G CIRC B 522 280 69", "mdb003 D NORM"]
    table += [f"mdb{n:03d} F NORM" for n in range(4, images + 1)]
    info = "MIAS database\n\nREFNUM BG CLASS SEVERITY X Y RADIUS\n" + "\n".join(table) + "\n"
    members = {f"mdb{n:03d}.pgm": _pgm(64, 64, rng) for n in range(1, images + 1)}
    members["README"] = ("The mini-MIAS database.\n" + (info if info_in_readme else "")).encode()
    members["Licence.txt"] = b"Research use.\n"
    if not info_in_readme:
        members["Info.txt"] = info.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for name, data in sorted(members.items()):
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            bundle.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for path in sorted(folder.iterdir()):
            bundle.write(path, path.name)
    return buffer.getvalue()


def corrupted(data: bytes) -> bytes:
    """``data`` with bytes flipped in the middle (a zip then fails its CRC check)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


class MockServer:
    """NBIA + CSV + mini-MIAS endpoints over a source tree, with failure injection.

    ``fail_next(n)`` answers the next ``n`` requests with HTTP 500; ``cut(key, after)``
    closes the next response for ``key`` (a series UID, CSV name or ``mias``) after
    ``after`` bytes of body; ``corrupt`` holds series UIDs served as damaged zips.
    ``requests`` counts requests by key (``getSeries``, a series UID, a CSV name, ``mias``)
    and ``ranges`` lists the Range header (or None) each request of a key carried.
    """

    def __init__(self, tree: Path, mias: bytes = b"", lifetime: float = 60.0) -> None:
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.ranges: dict[str, list[str | None]] = {}
        self.failures_left, self.cuts, self.corrupt = 0, {}, set()
        self.listing, self.zips = self._load(tree)
        self.files = {p.name: p.read_bytes() for p in tree.glob("*_case_description_*.csv")}
        self.files["mias"] = mias
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime, self._http.shutdown)
        self._timer.daemon = True

    @staticmethod
    def _load(tree: Path) -> tuple[list[dict], dict[str, bytes]]:
        listing, zips = [], {}
        with open(tree / "metadata.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                listing.append({
                    "SeriesInstanceUID": row["Series UID"], "StudyInstanceUID": row["Study UID"],
                    "Modality": row["Modality"], "ProtocolName": "",
                    "SeriesDescription": row["Series Description"], "BodyPartExamined": "BREAST",
                    "SeriesNumber": 1, "Collection": "CBIS-DDSM", "PatientID": row["Subject ID"],
                    "Manufacturer": row["Manufacturer"],
                    "ImageCount": int(row["Number of Images"]), "FileSize": int(row["File Size"]),
                    "CollectionURI": "https://doi.org/10.7937/K9/TCIA.2016.7O02S9CY",
                })  # fmt: skip
                zips[row["Series UID"]] = _zip_folder(tree / row["File Location"])
        return listing, zips

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/nbia-api/services/v4"

    @property
    def csv_base_url(self) -> str:
        return f"{self.url}/wp-content/uploads"

    @property
    def mias_url(self) -> str:
        return f"{self.url}/pix/mias/all-mias.tar.gz"

    def fail_next(self, count: int) -> None:
        with self.lock:
            self.failures_left = count

    def cut(self, key: str, after: int) -> None:
        with self.lock:
            self.cuts[key] = after

    def __enter__(self) -> MockServer:
        self._thread.start()
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self._http.shutdown()
        self._http.server_close()
        self._thread.join(timeout=5)

    def _route(self, path: str, query: dict[str, str]) -> tuple[str, bytes | None, str]:
        """(request key, body or None for 404, content type) of one GET."""
        if path.endswith("/getSeries"):
            body = json.dumps(self.listing if query.get("Collection") == "CBIS-DDSM" else [])
            return "getSeries", body.encode(), "application/json"
        if path.endswith("/getImage"):
            uid = query.get("SeriesInstanceUID", "")
            data = self.zips.get(uid)
            if data is not None and uid in self.corrupt:
                data = corrupted(data)
            return uid, data, "application/zip"
        if path == "/pix/mias/all-mias.tar.gz":
            return "mias", self.files["mias"], "application/gzip"
        name = path.rsplit("/", 1)[-1]
        found = self.files.get(name) if path.startswith("/wp-content/uploads/") else None
        return name, found, "text/csv"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read counters, not logs."""

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                key, body, kind = server._route(parts.path, query)
                with server.lock:
                    server.requests[key] += 1
                    server.ranges.setdefault(key, []).append(self.headers.get("Range"))
                    fail = server.failures_left > 0
                    server.failures_left -= fail
                    cut = server.cuts.pop(key, None)
                if fail:
                    self.send_error(500, "injected failure")
                elif body is None:
                    self.send_error(404, "no such resource")
                else:
                    self._send(body, kind, cut)

            def _send(self, body: bytes, kind: str, cut: int | None) -> None:
                start = 0
                header = self.headers.get("Range", "")
                if header.startswith("bytes=") and header.endswith("-"):
                    start = int(header[6:-1])
                    if start >= len(body):
                        self.send_error(416, "range not satisfiable")
                        return
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                self.wfile.write(body[start:] if cut is None else body[start : start + cut])
                self.close_connection = cut is not None

        return Handler
