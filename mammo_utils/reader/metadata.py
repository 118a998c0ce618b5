"""The reader's metadata: an allow-list of non-identifying fields, and laterality/view parsing.

Only the keys in :data:`METADATA_KEYS` ever leave the reader. Patient-identifying tags
(name, ID, birth date, accession number, institution, UIDs...) are read at most to
parse laterality and view from CBIS-DDSM style identifiers such as
``Mass-Test_P_00820_LEFT_CC``; the identifier itself is never returned. The one free-text
field kept, ``series_description``, is reduced to the words of
:data:`DESCRIPTION_WORDS` (laterality, view and image kind) by :func:`allowed_words`,
so a description such as ``L CC Jane Doe 1965-04-12 mrn 99812345`` comes out as ``L CC``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Every key of the metadata dict, in a stable order; nothing else is returned.
METADATA_KEYS: tuple[str, ...] = (
    "format",
    "modality",
    "laterality",
    "view",
    "photometric_interpretation",
    "bits_stored",
    "rows",
    "columns",
    "transfer_syntax",
    "window_center",
    "window_width",
    "voi_source",
    "series_description",
    "warnings",
)

#: DICOM keywords whose values identify a patient, a study or a site. Their values
#: must never appear in the metadata (tests check this on real files).
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "PatientBirthDate",
    "PatientAddress",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StationName",
    "StudyID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "DeviceSerialNumber",
)

_LATERALITY_CODES = {"L": "LEFT", "R": "RIGHT", "LEFT": "LEFT", "RIGHT": "RIGHT"}
#: Mammographic view codes recognised inside free text (file names, CBIS-DDSM IDs).
_VIEW_TOKENS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO"})
_TOKEN_SPLIT = re.compile(r"[^A-Z0-9]+")
#: The words a free-text DICOM field may keep: laterality, view, and the image kinds
#: CBIS-DDSM series describe (``full mammogram images``, ``ROI mask images``, ``cropped
#: images``; inference tells a crop from a mammogram by them). Anything else is dropped.
DESCRIPTION_WORDS = frozenset(
    {*_LATERALITY_CODES, *_VIEW_TOKENS,
     "FULL", "MAMMOGRAM", "MAMMOGRAPHY", "IMAGE", "IMAGES", "ROI", "MASK", "CROP", "CROPPED"}
)
_WORD = re.compile(r"[A-Za-z0-9]+")


def allowed_words(text: object) -> str | None:
    """The words of ``text`` found in :data:`DESCRIPTION_WORDS`, in order, joined by
    spaces (``None`` when none is): free text reduced to what cannot identify anyone."""
    words = [word for word in _WORD.findall(str(text or "")) if word.upper() in DESCRIPTION_WORDS]
    return " ".join(words) or None


def new_metadata(fmt: str, **values) -> dict:
    """Metadata with every allowed key present (``None`` when unknown).

    Raises ``KeyError`` for a key outside the allow-list: a programming error that
    would otherwise leak an unvetted field.
    """
    unknown = set(values) - set(METADATA_KEYS)
    if unknown:
        raise KeyError(f"metadata keys outside the allow-list: {sorted(unknown)}")
    metadata: dict = dict.fromkeys(METADATA_KEYS)
    metadata.update(format=fmt, warnings=[])
    metadata.update(values)
    return metadata


def laterality_code(value: object) -> str | None:
    """``LEFT``/``RIGHT`` from a DICOM laterality code (``L``, ``R``); else ``None``."""
    return _LATERALITY_CODES.get(str(value or "").strip().upper())


def parse_laterality_view(texts: Iterable[str | None]) -> tuple[str | None, str | None]:
    """Laterality and view named in free text, e.g. ``Mass-Test_P_00820_LEFT_CC``.

    Each text is split into alphanumeric tokens. ``LEFT``/``RIGHT`` count anywhere;
    a bare ``L``/``R`` only right before a view token (``..._L_CC``), where it cannot
    be part of something else. The first text that names a field wins.
    """
    laterality = view = None
    for text in texts:
        tokens = [token for token in _TOKEN_SPLIT.split(str(text or "").upper()) if token]
        for position, token in enumerate(tokens):
            next_is_view = position + 1 < len(tokens) and tokens[position + 1] in _VIEW_TOKENS
            if laterality is None and (
                token in ("LEFT", "RIGHT") or (token in ("L", "R") and next_is_view)
            ):
                laterality = _LATERALITY_CODES[token]
            if view is None and token in _VIEW_TOKENS:
                view = token
    return laterality, view
