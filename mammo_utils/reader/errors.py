"""Refusals: the one error type a reader raises, and the size limit it enforces.

Every file the reader cannot turn into a trustworthy image ends in an
:class:`ImageReadError` naming the file and the reason, so batch stages can record
the rejection and go on with the next file.
"""

from __future__ import annotations

import functools
import re

#: Largest image (rows x columns of one frame) the reader decodes. Full-field
#: mammograms are 10 to 30 megapixels; a header claiming more is refused before any
#: pixel is decoded, so a hostile header cannot make the reader allocate gigabytes.
MAX_PIXELS: int = 100_000_000


class ImageReadError(ValueError):
    """A file could not be read as a mammogram.

    Parameters
    ----------
    path : str
        The file path, or the upload name for bytes input.
    reason : str
        Why the file was refused, in words a user can act on.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        # Rebuild from (path, reason) so the error survives worker-process pickling.
        return (type(self), (self.path, self.reason))


#: A quoted value or byte string inside an exception message: what a parser read from
#: the file (a header value, the bytes it choked on), never repeated in a reason.
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" r'|b?"(?:[^"\\]|\\.)*"')
_NUMBER = re.compile(r"[-+]?\d{1,6}(?:\.\d{1,6})?")
#: Longest exception message kept in a reason.
MAX_CAUSE = 200


def _mask(match: re.Match) -> str:
    """A quoted number or DICOM attribute name stays (it says which value was wrong);
    anything else may be the file's content and is masked."""
    quoted = match.group(0)
    inner = quoted.lstrip("b")[1:-1]
    if _NUMBER.fullmatch(inner) or inner in _attribute_names():
        return quoted
    return "<value>"


@functools.cache
def _attribute_names() -> frozenset[str]:
    """The names of the DICOM data dictionary (``Bits Stored``, ...)."""
    from pydicom.datadict import DicomDictionary

    return frozenset(entry[2] for entry in DicomDictionary.values())


def describe_exception(error: BaseException) -> str:
    """``"TypeName: message"`` with every quoted value masked and the length capped.

    Library exceptions often quote what they failed to parse; a refusal reason goes into
    ``rejects.csv`` and logs, so it names the cause and never the file's content.
    """
    message = _QUOTED.sub(_mask, " ".join(str(error).split()))
    if len(message) > MAX_CAUSE:
        message = message[:MAX_CAUSE] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def ensure_pixel_count(rows: int, columns: int, label: str) -> None:
    """Refuse a header whose dimensions are empty or exceed :data:`MAX_PIXELS`.

    Called with the dimensions read from the header, before decoding.
    """
    if rows <= 0 or columns <= 0:
        raise ImageReadError(label, f"header gives an empty image ({rows} x {columns} pixels)")
    if rows * columns > MAX_PIXELS:
        raise ImageReadError(
            label,
            f"header claims {rows} x {columns} = {rows * columns / 1e6:.0f} megapixels, "
            f"more than the {MAX_PIXELS / 1e6:.0f} megapixel limit; not decoded",
        )
