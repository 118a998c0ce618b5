"""Refusals: the one error type a reader raises, and the size limit it enforces.

Every file the reader cannot turn into a trustworthy image ends in an
:class:`ImageReadError` naming the file and the reason, so batch stages can record
the rejection and go on with the next file.
"""

from __future__ import annotations

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
