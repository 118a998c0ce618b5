"""Write synthetic images as DICOM files the way CBIS-DDSM stores them.

CBIS-DDSM files are Secondary Capture objects with Modality MG, PatientID set to
the folder name (``Mass-Test_P_00820_LEFT_CC``, ``..._1`` for ROI files) and
SeriesDescription ``full mammogram images``, ``ROI mask images`` or ``cropped
images``. The encoding varies on purpose (photometric interpretation, bits
stored, window tags, RLE Lossless or Explicit VR Little Endian) so the reader is
tested on the variety real archives hold. Nothing written depends on the clock.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    RLELossless,
    SecondaryCaptureImageStorage,
)

from .plan import DicomStyle

FULL_DESCRIPTION = "full mammogram images"
MASK_DESCRIPTION = "ROI mask images"
CROP_DESCRIPTION = "cropped images"

#: The fixed study date of every synthetic file (CBIS-DDSM's own curation date).
STUDY_DATE = "20160720"


def to_stored(image: np.ndarray, style: DicomStyle) -> np.ndarray:
    """Quantize a [0, 1] dense-is-bright image to the stored pixel values of
    ``style`` (inverted for MONOCHROME1)."""
    top = (1 << style.bits_stored) - 1
    stored = np.round(np.clip(image, 0.0, 1.0) * top).astype(np.uint16)
    return top - stored if style.photometric == "MONOCHROME1" else stored


def window_for(stored: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """WindowCenter and WindowWidth spanning the stored values inside ``region``
    (the breast), widened a little, the way a display preset is set."""
    values = stored[region] if region.any() else stored.ravel()
    low, high = np.percentile(values, [0.5, 99.5])
    width = max(16.0, 1.1 * float(high - low))
    return round(float(low + high) / 2.0, 1), round(width, 1)


def _dataset(
    pixels: np.ndarray,
    *,
    photometric: str,
    bits_stored: int,
    sop_uid: str,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = STUDY_DATE
    ds.Modality = "MG"
    ds.ConversionType = "WSD"
    ds.BodyPartExamined = "BREAST"
    ds.StudyID = "DDSM"
    ds.SeriesNumber = 1
    ds.set_pixel_data(pixels, photometric, bits_stored, generate_instance_uid=False)
    return ds


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    series_description: str,
    instance_number: int,
    photometric: str,
    bits_stored: int,
    rle: bool,
    window: tuple[float, float] | None = None,
    laterality_tags: tuple[str, str, str] | None = None,
) -> int:
    """Write one DICOM file atomically (temp name, then rename); return its size.

    ``laterality_tags`` is ``(style, laterality, view)`` with style ``cbis``
    (Laterality + PatientOrientation) or ``image`` (ImageLaterality +
    ViewPosition); None or style ``none`` writes neither.
    """
    ds = _dataset(pixels, photometric=photometric, bits_stored=bits_stored, sop_uid=sop_uid)
    ds.PatientName = patient_id
    ds.PatientID = patient_id
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if laterality_tags is not None:
        style, laterality, view = laterality_tags
        if style == "cbis":
            ds.Laterality = laterality[0]
            ds.PatientOrientation = view
        elif style == "image":
            ds.ImageLaterality = laterality[0]
            ds.ViewPosition = view
    if rle:
        ds.compress(RLELossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    ds.save_as(temp, enforce_file_format=True)
    os.replace(temp, path)
    return path.stat().st_size
