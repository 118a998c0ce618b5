"""What a classifier accepts: a path, bytes, a numpy array or an ipywidgets upload value.

Every source is decoded by :func:`mammo_utils.reader.read_image`, the reader
preprocessing uses, so a file gives the same pixels whether it arrives as a path, as
bytes, as an upload or as the array the reader made of it. This module only unwraps
an upload value and names the source for messages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mammo_utils.reader import read_image

Source = Any  # a path, bytes, a numpy array or an ipywidgets FileUpload value


def load_source(source: Source, *, name: str | None = None) -> tuple[np.ndarray, dict, str]:
    """Decode any accepted source to ``(float32 [0, 1] image, metadata, label)``.

    ``label`` names the source in messages: the path, else ``name``, the upload's file
    name, or ``"upload"`` / ``"array"``. Raises
    :class:`~mammo_utils.reader.ImageReadError` for what the reader refuses and
    ``ValueError`` for a source of no accepted kind.
    """
    if _is_upload_value(source):
        source, upload_name = upload_content(source)
        name = name or upload_name
    elif isinstance(source, (tuple, list)) and not source:
        raise ValueError("no file was uploaded")
    if isinstance(source, (str, os.PathLike)):
        label = str(Path(source))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name = name or "upload"
    elif isinstance(source, np.ndarray):
        label = name = name or "array"
    else:
        raise ValueError(
            f"cannot classify a {type(source).__name__}: give a path, bytes, a numpy array "
            "or an ipywidgets FileUpload value"
        )
    image, metadata = read_image(source, name=name)
    return image, metadata, label


def upload_content(value: Mapping | Sequence[Mapping]) -> tuple[bytes, str]:
    """The bytes and file name of an ipywidgets 8 FileUpload value (one file)."""
    files = [value] if isinstance(value, Mapping) else list(value)
    if len(files) != 1:
        raise ValueError(f"upload one file at a time ({len(files)} given)")
    entry = files[0]
    if "content" not in entry:
        raise ValueError("the upload value has no 'content' (expected an ipywidgets 8 value)")
    return bytes(entry["content"]), str(entry.get("name") or "upload")


def _is_upload_value(source: Source) -> bool:
    """An ipywidgets 8 FileUpload value: a mapping, or a non-empty sequence of them."""
    return isinstance(source, Mapping) or (
        isinstance(source, (tuple, list)) and bool(source) and isinstance(source[0], Mapping)
    )
