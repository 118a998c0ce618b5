"""DICOM to a float32 [0, 1] image: header checks, decoding, modality and VOI transforms.

Order (PS3.3 C.11): modality LUT or rescale, then the VOI LUT or the first window,
else the full range the stored values can take; MONOCHROME1 is inverted last, so
dense tissue is always bright.

Choices, so a reader of the code need not guess:
- Full range means the range ``BitsStored`` allows (after rescale), not the data's
  own min and max: intensities stay comparable across images and one bright label
  pixel cannot change the contrast of the breast.
- Multi-frame files give their first frame, with a warning.
- Every refusal happens as early as the header allows: missing pixel data, an
  oversized header and an undecodable transfer syntax are refused before decoding.
"""

from __future__ import annotations

import io
import re
import struct

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder, pixel_array
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from mammo_utils.reader.errors import ImageReadError, describe_exception, ensure_pixel_count
from mammo_utils.reader.intensity import scale_to_unit, to_grayscale, window_to_unit
from mammo_utils.reader.metadata import (
    allowed_words,
    laterality_code,
    new_metadata,
    parse_laterality_view,
)

#: Plugins preferred over pydicom's default order where they are much faster:
#: pylibjpeg-rle decodes 16-bit RLE mammograms about 4x faster than pydicom's numpy decoder.
_PREFERRED_PLUGINS: dict[str, str] = {RLELossless: "pylibjpeg"}
#: Uncompressed transfer syntaxes by (implicit VR, little endian), for raw data sets.
_NATIVE_SYNTAXES: dict[tuple[bool, bool], UID] = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
#: Offset of the file meta header: after the 128-byte preamble and the ``DICM`` marker.
_META_START = 132
_REQUIRED_PIXEL_TAGS = ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation")
#: Photometric interpretations read: grayscale, and colour models pydicom decodes to RGB.
#: PALETTE COLOR is refused: its stored values are palette indices, not intensities.
_SUPPORTED_PHOTOMETRIC = frozenset(
    {"MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"}
)
#: Bits per LUT entry that pydicom's LUT functions accept (PS3.3 C.11.1.1.1, C.8.11.3.1.5).
_LUT_BITS: dict[str, frozenset[int]] = {
    "ModalityLUTSequence": frozenset({8, 16}),
    "VOILUTSequence": frozenset({8, *range(10, 17)}),
}


def read_dicom(
    data: bytes, label: str, *, name: str | None, allow_color: bool, raw: bool = False
) -> tuple[np.ndarray, dict]:
    """Read one DICOM file held in ``data``.

    ``raw`` reads a data set written without the 128-byte preamble and ``DICM`` marker.
    ``name`` (the file or upload name) is one more source for laterality and view.
    """
    ds = _parse(data, label, raw=raw)
    metadata = _header_metadata(ds, name)
    plugin = _check_decodable(ds, label, metadata["warnings"])
    pixels = _decode_first_frame(ds, label, plugin)
    if pixels.ndim == 3:
        pixels = to_grayscale(
            pixels, channel_order="RGB", allow_color=allow_color, label=label,
            warnings=metadata["warnings"],
        )
        low, high = _stored_range(ds)
        metadata["voi_source"] = "full_range"
        return scale_to_unit(pixels, low, high), metadata
    image = _to_unit(pixels, ds, metadata)
    if metadata["photometric_interpretation"] == "MONOCHROME1":
        np.subtract(np.float32(1.0), image, out=image)
    return image, metadata


def check_dicom(data: bytes, label: str, *, name: str | None, raw: bool = False) -> dict:
    """The header metadata of a DICOM file that :func:`read_dicom` would go on to decode;
    raises :class:`ImageReadError` for everything refused before decoding (truncation,
    no or short pixel data, an oversized or incomplete header, no decoder)."""
    ds = _parse(data, label, raw=raw)
    metadata = _header_metadata(ds, name)
    _check_decodable(ds, label, metadata["warnings"])
    return metadata


def _parse(data: bytes, label: str, *, raw: bool) -> Dataset:
    """Parse the whole data set, every value included; any parser failure becomes a refusal.

    A raw data set has no file meta, so its transfer syntax is the encoding pydicom
    detected while parsing it.
    """
    if not raw and len(data) < _META_START + 12:
        raise ImageReadError(label, "truncated: the file ends inside its file meta header")
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=raw)
        truncated = _meta_truncation(ds, data) or _truncation(ds, len(data))
        if truncated is None:
            # pydicom parses values lazily, on first access: parse every one now, inside
            # the try.
            for _ in (*ds.file_meta.iterall(), *ds.iterall()):
                pass
    except struct.error as exc:  # a length field itself cut off by the end of the file
        raise ImageReadError(label, "truncated: the file ends inside a data element") from exc
    except Exception as exc:  # hostile bytes can fail anywhere in the parser
        reason = f"not a readable DICOM file ({describe_exception(exc)})"
        raise ImageReadError(label, reason) from exc
    if truncated is not None:
        raise ImageReadError(label, truncated)
    if not isinstance(ds.file_meta.get("TransferSyntaxUID", ""), str):
        raise ImageReadError(label, "the file meta Transfer Syntax UID is not a UID string")
    if raw and "TransferSyntaxUID" not in ds.file_meta:
        implicit_vr, little_endian = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = _NATIVE_SYNTAXES[(implicit_vr, little_endian)]
    return ds


def _meta_truncation(ds: Dataset, data: bytes) -> str | None:
    """Why the file meta header is cut short, from its group length, or ``None``."""
    group_length = ds.file_meta.get("FileMetaInformationGroupLength")
    if data[128:132] != b"DICM" or not isinstance(group_length, int):
        return _truncation(ds.file_meta, len(data))
    if len(data) < _META_START + 12 + group_length:
        return "truncated: the file ends inside its file meta header"
    return None


def _truncation(ds: Dataset, size: int) -> str | None:
    """Why a parsed data set is cut short, or ``None``.

    pydicom stops silently at the end of the file, inside an element's header or value,
    so a truncated file would otherwise look like a complete one that lacks its later
    elements (Pixel Data, most often). The last element, still raw (unparsed), says
    where the data set should end.
    """
    if not ds:
        return None
    tag = max(ds.keys())
    last = ds.get_item(tag)
    length = getattr(last, "length", 0)
    position = getattr(last, "value_tell", None)
    if position is None or length == 0xFFFFFFFF:  # undefined length: ends with a delimiter
        return None
    end = position + length
    if end > size:
        element = "pixel data" if tag == 0x7FE00010 else f"element {tag}"
        return (
            f"{element} truncated: {length} bytes declared, the file ends "
            f"{end - size} bytes short"
        )
    if end < size and size - end < 8:
        return f"truncated: the file ends inside the header of the element after {tag}"
    return None


def _header_metadata(ds: Dataset, name: str | None) -> dict:
    """The allow-listed metadata, read from the header only."""
    parsed_laterality, parsed_view = parse_laterality_view(
        (ds.get("PatientID"), ds.get("SeriesDescription"), name)
    )
    laterality = (
        laterality_code(ds.get("ImageLaterality"))
        or laterality_code(ds.get("Laterality"))
        or parsed_laterality
    )
    view = str(ds.get("ViewPosition") or "").strip().upper() or parsed_view
    ts = ds.file_meta.get("TransferSyntaxUID")
    metadata = new_metadata(
        "dicom",
        modality=str(ds.get("Modality") or "").strip() or None,
        laterality=laterality,
        view=view,
        photometric_interpretation=str(ds.get("PhotometricInterpretation") or "").strip() or None,
        bits_stored=_int_or_none(ds.get("BitsStored") or ds.get("BitsAllocated")),
        rows=_int_or_none(ds.get("Rows")),
        columns=_int_or_none(ds.get("Columns")),
        transfer_syntax=UID(ts).name if ts else None,
        window_center=_first_number(ds.get("WindowCenter")),
        window_width=_first_number(ds.get("WindowWidth")),
        series_description=allowed_words(ds.get("SeriesDescription")),
    )
    return metadata


def _check_decodable(ds: Dataset, label: str, warnings: list[str]) -> str:
    """Refuse what cannot be decoded, before decoding; return the plugin to use ('' = default).

    Checks, in order: pixel data present, pixel module complete, a supported
    photometric interpretation, size within
    :data:`MAX_PIXELS`, a decoder registered and installed for the transfer syntax,
    uncompressed pixel data as long as the header says.
    """
    if "PixelData" not in ds:
        raise ImageReadError(label, "no Pixel Data element (7FE0,0010): not an image")
    missing = [keyword for keyword in _REQUIRED_PIXEL_TAGS if ds.get(keyword) in (None, "")]
    if missing:
        raise ImageReadError(label, f"pixel module incomplete: missing {', '.join(missing)}")
    photometric = str(ds.PhotometricInterpretation).strip().upper()
    if photometric not in _SUPPORTED_PHOTOMETRIC:
        raise ImageReadError(
            label,
            f"photometric interpretation {_code_string(photometric)} is not supported "
            "(grayscale MONOCHROME1/2, or RGB/YBR colour)",
        )
    ensure_pixel_count(int(ds.Rows), int(ds.Columns), label)
    ts = ds.file_meta.get("TransferSyntaxUID")
    if not ts:
        raise ImageReadError(label, "file meta has no Transfer Syntax UID; cannot decode")
    ts = UID(ts)
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise ImageReadError(label, f"no decoder exists for transfer syntax {ts.name}") from exc
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise ImageReadError(
            label, f"transfer syntax {ts.name} needs a decoder that is not installed ({needs})"
        )
    frames = _int_or_none(ds.get("NumberOfFrames")) or 1
    if not ts.is_encapsulated:
        _check_native_length(ds, frames, label)
    if frames > 1:
        warnings.append(f"multi-frame image ({frames} frames): only the first frame was read")
    preferred = _PREFERRED_PLUGINS.get(ts, "")
    return preferred if preferred in decoder.available_plugins else ""


def _check_native_length(ds: Dataset, frames: int, label: str) -> None:
    """Refuse uncompressed pixel data shorter than rows x columns x samples x bits."""
    samples = _int_or_none(ds.get("SamplesPerPixel")) or 1
    bits = int(ds.BitsAllocated) * int(ds.Rows) * int(ds.Columns) * samples * frames
    expected = (bits + 7) // 8
    if ds.PhotometricInterpretation == "YBR_FULL_422":
        expected = expected * 2 // 3  # chroma subsampled 2:1 horizontally
    actual = len(ds.PixelData)
    if actual < expected:
        raise ImageReadError(
            label, f"pixel data truncated: {actual} bytes present, the header needs {expected}"
        )


def _decode_first_frame(ds: Dataset, label: str, plugin: str) -> np.ndarray:
    """Decode frame 0; a codec failure becomes a refusal naming the transfer syntax."""
    try:
        return pixel_array(ds, index=0, decoding_plugin=plugin)
    except Exception as exc:  # codec plugins raise RuntimeError, ValueError, ...
        ts = UID(ds.file_meta.TransferSyntaxUID)
        plugins = plugin or ", ".join(get_decoder(ts).available_plugins)
        decoders = f" by the installed decoders ({plugins})" if plugins else ""
        cause = describe_exception(exc)
        raise ImageReadError(
            label,
            f"{ds.get('BitsStored', '?')}-bit {ts.name} pixel data could not be "
            f"decoded{decoders}: {cause}",
        ) from exc


def _to_unit(pixels: np.ndarray, ds: Dataset, metadata: dict) -> np.ndarray:
    """Modality transform, then VOI LUT, first window or full range, onto [0, 1]."""
    warnings = metadata["warnings"]
    values, low, high = _modality(pixels, ds, warnings)
    voi_entries = _usable_lut(ds, "VOILUTSequence", warnings)
    if voi_entries is not None:
        metadata["voi_source"] = "voi_lut"
        mapped = apply_voi_lut(values, ds, prefer_lut=True)
        return scale_to_unit(mapped, float(voi_entries.min()), float(voi_entries.max()))
    center, width = metadata["window_center"], metadata["window_width"]
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if center is not None and width is not None:
        minimum_width = 1.0 if function == "LINEAR" else np.finfo(np.float32).tiny
        if np.isfinite(center) and np.isfinite(width) and width >= minimum_width:
            metadata["voi_source"] = "window"
            return window_to_unit(values, center, width, function)
        warnings.append(
            f"window width {width} (center {center}) is invalid for {function}; full range used"
        )
    metadata["voi_source"] = "full_range"
    return scale_to_unit(values, low, high)


def _modality(pixels: np.ndarray, ds: Dataset, warnings: list[str]):
    """Apply the modality LUT or rescale; return the values and the range they can take."""
    low, high = _stored_range(ds)
    lut_entries = _usable_lut(ds, "ModalityLUTSequence", warnings)
    if lut_entries is not None:
        return apply_modality_lut(pixels, ds), float(lut_entries.min()), float(lut_entries.max())
    slope, intercept = _rescale(ds, warnings)
    if slope == 1.0 and intercept == 0.0:
        return pixels, low, high
    values = np.multiply(pixels, np.float32(slope), dtype=np.float32)
    values += np.float32(intercept)
    ends = sorted((low * slope + intercept, high * slope + intercept))
    return values, ends[0], ends[1]


def _rescale(ds: Dataset, warnings: list[str]) -> tuple[float, float]:
    """Rescale slope and intercept; ``(1, 0)`` when absent or unusable.

    A slope that is zero, not a number or infinite (and a non-finite intercept) would
    turn every pixel into one value or NaN, so the rescale is ignored with a warning:
    the stored values still carry the image.
    """
    raw_slope, raw_intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    slope = 1.0 if raw_slope in (None, "") else _first_number(raw_slope)
    intercept = 0.0 if raw_intercept in (None, "") else _first_number(raw_intercept)
    if slope is None or intercept is None or not np.isfinite([slope, intercept]).all() or not slope:
        warnings.append(
            f"rescale slope {raw_slope!s} / intercept {raw_intercept!s} is unusable; ignored"
        )
        return 1.0, 0.0
    return slope, intercept


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """The range of values ``BitsStored`` and ``PixelRepresentation`` allow."""
    bits = int(ds.get("BitsStored") or ds.BitsAllocated)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _usable_lut(ds: Dataset, keyword: str, warnings: list[str]) -> np.ndarray | None:
    """The output values of a LUT sequence's first item, or ``None`` when there is none.

    A malformed LUT (descriptor not three values, unsupported entry size, data shorter
    or longer than the descriptor says, values the entry size cannot hold) is ignored
    with a warning, so the next transform in line applies: the pixels themselves are
    intact, and pydicom would fail on such a LUT with an arbitrary exception.
    """
    sequence = ds.get(keyword)
    if not sequence:
        return None
    little_endian = UID(ds.file_meta.TransferSyntaxUID).is_little_endian
    entries, problem = _lut_entries(sequence[0], _LUT_BITS[keyword], little_endian)
    if problem:
        warnings.append(f"{keyword} ignored: {problem}")
        return None
    return entries


def _lut_entries(
    item: Dataset, allowed_bits: frozenset[int], little_endian: bool
) -> tuple[np.ndarray | None, str | None]:
    """(the LUT's output values, None), or (None, what is wrong with the LUT).

    Raw OW bytes are 16-bit words in the data set's byte order, as pydicom reads them.
    """
    descriptor, data = item.get("LUTDescriptor"), item.get("LUTData")
    if descriptor is None or data is None or (isinstance(data, bytes) and not data):
        return None, "no LUT descriptor or data"
    descriptor = list(descriptor) if isinstance(descriptor, (MultiValue, list)) else [descriptor]
    if len(descriptor) != 3:
        return None, f"LUT descriptor has {len(descriptor)} values, 3 expected"
    count, _, bits = (int(value) for value in descriptor)
    count = count or 2**16
    if bits not in allowed_bits:
        return None, f"{bits} bits per LUT entry is not supported"
    if isinstance(data, bytes):
        if len(data) != 2 * count:
            return None, f"LUT data has {len(data)} bytes, the descriptor needs {2 * count}"
        entries = np.frombuffer(data, dtype="<u2" if little_endian else ">u2")
    else:
        entries = np.atleast_1d(np.asarray(data))
    if entries.size != count:
        return None, f"LUT data has {entries.size} entries, the descriptor says {count}"
    if entries.min() < 0 or entries.max() >= 2 ** (8 if bits == 8 else 16):
        return None, f"LUT values do not fit its {bits}-bit entries"
    return entries, None


def _code_string(value: str) -> str:
    """A DICOM code string (upper case, digits, ``_``, space, at most 16) quoted, else a
    note that it is none: a header's free text is never repeated in a reason."""
    if re.fullmatch(r"[A-Z0-9_ ]{1,16}", value):
        return repr(value)
    return "(not a valid code string)"


def _first_number(value: object) -> float | None:
    """First value of a possibly multi-valued numeric tag (window centre, width)."""
    if isinstance(value, (MultiValue, list, tuple)):
        value = value[0] if len(value) else None
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _int_or_none(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
