"""mini-MIAS from its own distribution address, verified and unpacked for ``mammo ingest``.

The Mammographic Image Analysis Society's archive ``all-mias.tar.gz`` (linked from
http://peipa.essex.ac.uk/info/mias.html) holds ``mdb001.pgm`` ... ``mdb322.pgm`` (binary
PGM, 1024x1024), the ground-truth table ``Info.txt`` and a ``README`` (plus a licence
file). Everything lands flat in ``<out>``: the PGMs and ``Info.txt``; when an archive has
no ``Info.txt`` its table is taken from the README's ``mdbNNN <tissue> <class> ...`` lines.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tarfile
import zlib
from pathlib import Path

from mammo_utils.fetch.base import (
    TMP_DIR,
    ArchiveError,
    ByteProgress,
    FetchReport,
    remove_if_empty,
)
from mammo_utils.fetch.http import FetchError, RetryPolicy, download
from mammo_utils.fetch.manifest import Manifest, file_record

DEFAULT_URL = "http://peipa.essex.ac.uk/pix/mias/all-mias.tar.gz"
INFO_PAGE = "http://peipa.essex.ac.uk/info/mias.html"
MANUAL_HINT = (
    f"Manual route: download all-mias.tar.gz from {INFO_PAGE} and unpack its PGMs and "
    "Info.txt into the output folder (README: 'Real data')."
)
KEY = "mini-mias"
PGM_NAME = re.compile(r"^mdb\d{3}\.pgm$", re.IGNORECASE)
PGM_FIELD = re.compile(rb"\s*(#[^\n]*\n\s*)*(\S+)")
INFO_LINE = re.compile(r"^\s*(mdb\d{3})\s+[FGD]\s+(?:CALC|CIRC|SPIC|MISC|ARCH|ASYM|NORM)\b")
KEPT_TEXT = {"info.txt": "Info.txt", "readme": "README", "licence.txt": "Licence.txt"}


def check_pgm(path: Path) -> tuple[int, int]:
    """Return ``(width, height)`` of a binary PGM whose pixel bytes are all there;
    raise ArchiveError naming the file otherwise."""
    data = path.read_bytes()
    fields: list[bytes] = []
    position = 0
    while len(fields) < 4:
        match = PGM_FIELD.match(data, position)
        if match is None:
            raise ArchiveError(f"{path.name}: truncated PGM header")
        fields.append(match.group(2))
        position = match.end()
    if fields[0] != b"P5" or not all(field.isdigit() for field in fields[1:]):
        raise ArchiveError(f"{path.name}: not a binary PGM (header {fields!r})")
    width, height, maxval = (int(field) for field in fields[1:])
    expected = width * height * (1 if maxval < 256 else 2)
    if len(data) - position - 1 < expected:
        raise ArchiveError(f"{path.name}: {len(data) - position - 1} pixel bytes, need {expected}")
    return width, height


def _check_gzip(archive: Path) -> None:
    """Read a gzip archive to its end, so its CRC and length trailer are checked (tarfile
    stops at the last member and would miss damage past it or in its data)."""
    with open(archive, "rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            return
    with gzip.open(archive) as stream:
        while stream.read(1 << 20):
            continue


def _extract(archive: Path, staging: Path) -> None:
    """Write the archive's PGMs and text files flat into ``staging`` (regular files only,
    base names only: no member can escape the folder)."""
    staging.mkdir(parents=True)
    with tarfile.open(archive, "r:*") as bundle:
        for member in bundle:
            name = Path(member.name).name
            if not member.isfile():
                continue
            if PGM_NAME.match(name):
                target = staging / name.lower()
            elif name.lower() in KEPT_TEXT:
                target = staging / KEPT_TEXT[name.lower()]
            else:
                continue
            source = bundle.extractfile(member)
            if source is None:
                raise ArchiveError(f"{member.name}: cannot be read")
            with source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)


def _ensure_info(staging: Path) -> None:
    """Make sure ``Info.txt`` exists and names only images that are present."""
    info = staging / "Info.txt"
    if not info.exists():
        readme = staging / "README"
        text = readme.read_text(errors="replace") if readme.exists() else ""
        lines = [line.rstrip() for line in text.splitlines() if INFO_LINE.match(line)]
        if not lines:
            raise ArchiveError("holds neither Info.txt nor a README with the mdbNNN table")
        info.write_text("\n".join(lines) + "\n")
    images = {path.stem for path in staging.glob("mdb*.pgm")}
    named = {m.group(1) for m in map(INFO_LINE.match, info.read_text().splitlines()) if m}
    if not named:
        raise ArchiveError("Info.txt holds no mdbNNN row")
    missing = sorted(named - images)
    if missing:
        raise ArchiveError(f"Info.txt names {missing[:5]} (of {len(missing)}) with no PGM")


def unpack_mias(archive: Path, staging: Path) -> list[Path]:
    """Verify ``archive`` (gzip and tar integrity, each PGM whole, Info.txt consistent) while
    unpacking into ``staging``; return the unpacked files."""
    try:
        _check_gzip(archive)
        _extract(archive, staging)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise ArchiveError(f"unreadable tar.gz ({error})") from error
    pgms = sorted(staging.glob("mdb*.pgm"))
    if not pgms:
        raise ArchiveError("holds no mdbNNN.pgm image")
    for pgm in pgms:
        check_pgm(pgm)
    _ensure_info(staging)
    return sorted(staging.iterdir())


def fetch_mini_mias(
    out: Path | str,
    *,
    url: str = DEFAULT_URL,
    sha256: str | None = None,
    policy: RetryPolicy | None = None,
    progress: bool = True,
) -> FetchReport:
    """Download, verify and unpack mini-MIAS into ``out``; skipped when already complete.

    ``sha256``, when given, must match the archive. A corrupt archive leaves nothing
    behind but raises :class:`FetchError` naming it.
    """
    out = Path(out)
    policy = policy or RetryPolicy()
    out.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(out)
    report = FetchReport(out=out)
    if manifest.is_complete(KEY):
        report.skipped.append(KEY)
        return report
    tmp = out / TMP_DIR
    archive, staging = tmp / "all-mias.tar.gz", tmp / "mini-mias.unpacked"
    shutil.rmtree(staging, ignore_errors=True)
    bar = ByteProgress(0, progress, "mini-MIAS", 1)
    try:
        size, digest = download(url, archive, policy, MANUAL_HINT, bar.add_bytes)
    finally:
        bar.close()
    try:
        if sha256 and digest != sha256.lower():
            raise ArchiveError(f"sha256 {digest} differs from the expected {sha256}")
        files = unpack_mias(archive, staging)
    except (ArchiveError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        remove_if_empty(tmp)
        raise FetchError(f"{url}: corrupt archive: {error}. {MANUAL_HINT}") from error
    archive.unlink()
    placed = []
    for path in files:
        target = out / path.name
        path.replace(target)
        placed.append(file_record(out, target))
    staging.rmdir()
    remove_if_empty(tmp)
    manifest.record(KEY, placed, url=url, archive_size=size, archive_sha256=digest)
    report.downloaded.append(KEY)
    return report
