"""What a model was trained on, and how far a new image strays from it.

At training time :func:`training_range` summarises the training split of a processed
folder into the model card's ``training_range``: the data set names, the source
format and bit depth, the pixel grid of the source images (these files carry no
reliable pixel spacing, so the grid size stands for the scanning resolution), the
breast's extent in source pixels (the manifest's ``crop_box``) and the views. At
prediction time :func:`domain_differences` compares one image's reader metadata and
breast extent with that range and names every difference in words: an 8-bit PGM shown
to a model that only saw 16-bit DICOMs, or a breast far larger than any in training,
gets an answer that means little, and the user must be told.

Pure pandas and the reader's header check: no TensorFlow, so training records the
range and inference checks it without loading anything else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils.files import sha256_file
from mammo_utils.ingest import INDEX_FILE
from mammo_utils.preprocess import CONFIG_FILE
from mammo_utils.provenance import is_synthetic
from mammo_utils.reader import ImageReadError, check_image

#: Most source images whose header is read to record the range (evenly spread, in
#: ``image_id`` order): enough to see every format and bit depth of a data set, cheap
#: on a CBIS-DDSM download of thousands of 14 MB files.
MAX_HEADERS = 200
#: A size is far outside the training range when it is more than this factor below the
#: smallest or above the largest seen in training.
SIZE_FACTOR = 1.5


def source_index_path(data_dir: str | Path) -> Path | None:
    """The ingest index of a processed folder in the workspace layout:
    ``data/interim/<key>/index.csv`` for ``data/processed/<key>/<folder>/`` (``None``
    when the folder is not that deep)."""
    resolved = Path(data_dir).resolve()
    if len(resolved.parents) < 3:
        return None
    return resolved.parents[2] / "interim" / resolved.parent.name / INDEX_FILE


def _span(values: Iterable[float]) -> list[int] | None:
    numbers = [int(v) for v in values if v is not None and not pd.isna(v)]
    return [min(numbers), max(numbers)] if numbers else None


def _sorted_set(values: Iterable) -> list:
    return sorted({v for v in values if v is not None and not pd.isna(v)})


def _breast_sides(crop_boxes: pd.Series) -> tuple[list[int], list[int]]:
    """Heights and widths of ``x0 y0 x1 y1`` crop boxes (source pixels)."""
    heights, widths = [], []
    for text in crop_boxes.dropna().astype(str):
        x0, y0, x1, y1 = (int(float(part)) for part in text.split())
        heights.append(y1 - y0)
        widths.append(x1 - x0)
    return heights, widths


def _one_row_per_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Manifest rows with an ``image_id`` column: as they are, or for a ``breast``
    manifest (``cc_image_id``, ``mlo_image_id``) one row per view of each breast."""
    if "image_id" in rows:
        return rows
    view_columns = [column for column in rows if column.endswith("_image_id")]
    return pd.concat([rows.assign(image_id=rows[column]) for column in view_columns],
                     ignore_index=True)


def _index_rows(data_dir: Path) -> pd.DataFrame | None:
    """The ingest index the folder was made from, when it is where the workspace puts
    it and unchanged since preprocessing (its sha256 matches ``index_sha256``)."""
    path = source_index_path(data_dir)
    if path is None or not path.is_file():
        return None
    config_path = data_dir / CONFIG_FILE
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    expected = config.get("index_sha256")
    if expected and sha256_file(path) != expected:
        return None
    return pd.read_csv(path)


def _headers(paths: Sequence[str]) -> list[dict]:
    """Reader header metadata of at most :data:`MAX_HEADERS` of ``paths``, evenly spread."""
    if len(paths) > MAX_HEADERS:
        picks = np.linspace(0, len(paths) - 1, MAX_HEADERS).round().astype(int)
        paths = [paths[i] for i in sorted(set(picks))]
    headers = []
    for path in paths:
        try:
            headers.append(check_image(path))
        except (ImageReadError, OSError):
            continue  # the range describes what was readable; training read the PNGs
    return headers


def training_range(manifest: pd.DataFrame, data_dir: str | Path,
                   split: str = "train") -> dict:
    """The range of images a model trained on ``split`` of the processed folder saw.

    ``manifest`` is the folder's ``manifest.csv`` table. Returns ``datasets``,
    ``synthetic``, ``n_images`` (source images), ``breast_rows`` and ``breast_columns``
    (``[min, max]`` of the breast's extent in source pixels), and, from the headers of
    the source images listed in the folder's ingest index (``headers_read`` of them):
    ``formats``, ``bits_stored``, ``image_rows``, ``image_columns`` and ``views``
    (the index's view, else the header's). A facet that could not be read is ``None``
    and is not checked later.
    """
    rows = _one_row_per_view(manifest[manifest["split"] == split])
    images = rows.drop_duplicates("image_id")
    datasets = _sorted_set(rows["dataset"]) if "dataset" in rows else []
    heights, widths = _breast_sides(images["crop_box"]) if "crop_box" in images else ([], [])
    record: dict = {
        "split": split,
        "datasets": datasets,
        "synthetic": is_synthetic(datasets),
        "n_images": int(len(images)),
        "breast_rows": _span(heights),
        "breast_columns": _span(widths),
        "headers_read": 0,
        "formats": None, "bits_stored": None, "image_rows": None, "image_columns": None,
        "views": None,
    }
    index = _index_rows(Path(data_dir))
    if index is None:
        return record
    sources = index[index["image_id"].astype(str).isin(set(images["image_id"].astype(str)))]
    sources = sources.drop_duplicates("image_id").sort_values("image_id")
    headers = _headers(list(sources["image_path"].astype(str)))
    views = sources["view"] if "view" in sources else pd.Series(dtype=object)
    record.update(
        headers_read=len(headers),
        formats=_sorted_set(h.get("format") for h in headers) or None,
        bits_stored=_sorted_set(h.get("bits_stored") for h in headers) or None,
        image_rows=_span(h.get("rows") for h in headers),
        image_columns=_span(h.get("columns") for h in headers),
        views=_sorted_set([*views, *(h.get("view") for h in headers)]) or None,
    )
    return record


def _words(values: Sequence) -> str:
    values = [str(v) for v in values]
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _outside(value: float, span: Sequence[float]) -> bool:
    return not span[0] / SIZE_FACTOR <= value <= span[1] * SIZE_FACTOR


def _pixels(span: Sequence[int]) -> str:
    return f"{span[0]} to {span[1]}" if span[0] != span[1] else f"{span[0]}"


def domain_differences(
    trained: Mapping | None,
    metadata: Mapping,
    breast_box: Sequence[int] | None = None,
) -> list[str]:
    """Each way an image differs from a model's ``training_range``, in words.

    ``metadata`` is the image's reader metadata (``format``, ``bits_stored``, ``rows``,
    ``columns``, ``view``); ``breast_box`` its breast's ``x0 y0 x1 y1`` in source
    pixels. Checked: a format or bit depth never seen in training, a view never seen,
    an image height or width (standing for the pixel spacing) or a breast height or
    width more than :data:`SIZE_FACTOR` outside the training range. A facet unknown on
    either side is not checked. An empty list: nothing found out of range.
    """
    if not trained:
        return []
    found = []
    fmt = metadata.get("format")
    if fmt and trained.get("formats") and fmt not in trained["formats"]:
        found.append(f"a {str(fmt).upper()} file; the model was trained only on "
                     f"{_words([f.upper() for f in trained['formats']])} files")
    bits = metadata.get("bits_stored")
    if bits and trained.get("bits_stored") and int(bits) not in trained["bits_stored"]:
        found.append(f"{int(bits)}-bit pixels; the model was trained on "
                     f"{_words(trained['bits_stored'])}-bit images")
    view = metadata.get("view")
    if view and trained.get("views") and view not in trained["views"]:
        found.append(f"a {view} view, which the model never saw "
                     f"(trained on {_words(trained['views'])})")
    rows, columns = metadata.get("rows"), metadata.get("columns")
    if rows and columns and trained.get("image_rows") and trained.get("image_columns") and (
            _outside(rows, trained["image_rows"]) or _outside(columns, trained["image_columns"])):
        found.append(
            f"an image of {rows} x {columns} pixels, far from the training images' "
            f"{_pixels(trained['image_rows'])} x {_pixels(trained['image_columns'])}: "
            "another pixel spacing or scanner resolution"
        )
    if breast_box is not None and trained.get("breast_rows") and trained.get("breast_columns"):
        x0, y0, x1, y1 = (int(v) for v in breast_box)
        height, width = y1 - y0, x1 - x0
        if _outside(height, trained["breast_rows"]) or _outside(width, trained["breast_columns"]):
            found.append(
                f"a breast of {height} x {width} pixels, far from the training breasts' "
                f"{_pixels(trained['breast_rows'])} x {_pixels(trained['breast_columns'])}"
            )
    return found
