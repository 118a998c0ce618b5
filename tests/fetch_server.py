"""A real HTTP server on 127.0.0.1 that mimics TCIA's NBIA API, TCIA's CSV downloads and
the mini-MIAS archive, with failure injection, for the ``mammo fetch`` tests.

The served CBIS-DDSM collection is a synthetic set from :func:`mammo_utils.synth.
generate_dataset`: :func:`collection_from_synth` turns its metadata.csv and DICOM headers
into a ``getSeries`` listing, zips each series folder the way ``getImage`` delivers it and
keeps the four case-description CSVs. The server binds port 0 on loopback only, counts
every request, and shuts itself down after ``lifetime`` seconds even if a test forgets to.
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
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom

#: The case-description CSVs TCIA publishes (the synthetic set's normal CSV is the
#: project's own addition and is not served).
CASE_CSVS = (
    "mass_case_description_train_set.csv",
    "mass_case_description_test_set.csv",
    "calc_case_description_train_set.csv",
    "calc_case_description_test_set.csv",
)
#: A fixed member time, so that a series zips to the same bytes on every run.
ZIP_DATE = (2016, 7, 20, 0, 0, 0)


@dataclass(frozen=True)
class Collection:
    """What the mock serves: ``listing`` (getSeries objects), ``archives`` (getImage zip
    per series UID) and ``csvs`` (case-description CSV bytes per file name)."""

    listing: list[dict]
    archives: dict[str, bytes]
    csvs: dict[str, bytes]


def zip_series(folder: Path) -> bytes:
    """The series' DICOMs as one stored (uncompressed) zip, members named as on disk."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted(folder.glob("*.dcm")):
            bundle.writestr(zipfile.ZipInfo(path.name, date_time=ZIP_DATE), path.read_bytes())
    return buffer.getvalue()


def _series_item(row: dict[str, str], folder: Path) -> dict:
    """One getSeries object: identity and description from metadata.csv, acquisition
    fields from the first DICOM header, count and size from the files themselves."""
    files = sorted(folder.glob("*.dcm"))
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    return {
        "SeriesInstanceUID": row["Series UID"], "StudyInstanceUID": row["Study UID"],
        "Modality": header.Modality, "ProtocolName": "",
        "SeriesDescription": row["Series Description"],
        "BodyPartExamined": header.get("BodyPartExamined", ""),
        "SeriesNumber": int(header.get("SeriesNumber", 1)), "Collection": row["Collection"],
        "PatientID": header.PatientID, "Manufacturer": row["Manufacturer"],
        "ImageCount": len(files), "FileSize": sum(path.stat().st_size for path in files),
        "ThirdPartyAnalysis": row["3rd Party Analysis"],
        "CollectionURI": row["Data Description URI"],
    }  # fmt: skip


def collection_from_synth(root: Path) -> Collection:
    """The collection held by a synthetic CBIS-DDSM set generated under ``root``."""
    listing, archives = [], {}
    with open(root / "metadata.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            folder = root / row["File Location"]
            listing.append(_series_item(row, folder))
            archives[row["Series UID"]] = zip_series(folder)
    csvs = {name: (root / name).read_bytes() for name in CASE_CSVS}
    return Collection(listing, archives, csvs)


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


def corrupted(data: bytes) -> bytes:
    """``data`` with bytes flipped in the middle (a zip then fails its CRC check)."""
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]


class MockServer:
    """NBIA + CSV + mini-MIAS endpoints over a :class:`Collection`, with failure injection.

    ``fail_next(n)`` answers the next ``n`` requests with HTTP 500; ``cut(key, after)``
    closes the next response for ``key`` (a series UID, CSV name or ``mias``) after
    ``after`` bytes of body; ``corrupt`` holds series UIDs served as damaged zips.
    ``requests`` counts requests by key (``getSeries``, a series UID, a CSV name, ``mias``)
    and ``ranges`` lists the Range header (or None) each request of a key carried.
    """

    def __init__(self, collection: Collection, mias: bytes = b"", lifetime: float = 60.0) -> None:
        self.lock = threading.Lock()
        self.requests: Counter = Counter()
        self.ranges: dict[str, list[str | None]] = {}
        self.failures_left, self.cuts, self.corrupt = 0, {}, set()
        self.listing, self.archives = collection.listing, collection.archives
        self.files = {**collection.csvs, "mias": mias}
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._timer = threading.Timer(lifetime, self._http.shutdown)
        self._timer.daemon = True

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
            data = self.archives.get(uid)
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
