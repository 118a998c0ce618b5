"""A prediction on a DICOM mammogram, written back as DICOM a viewer opens (highdicom).

:func:`write_dicom_outputs` writes two objects into the source image's study:

* a **Comprehensive 3D SR** holding a **TID 1500 Measurement Report**: one TID 1501
  measurement group that references the source image (its SOP Class and Instance UIDs;
  the report's evidence lists its Study, Series and SOP Instance UIDs), with the predicted
  class as a qualitative evaluation and every class probability as a measurement (unit
  UCUM ``1``), each tied to the algorithm identification (TID 4019: model name, version,
  parameters);
* a **fractional Segmentation** (``PROBABILITY``, 8 bits: 255 is 1.0) on the source
  image's pixel grid, one segment: a ``roi`` model's suspicion map (per pixel, the largest
  non-normal class probability of the scanned patches covering it) or an ``image``
  model's Grad-CAM map (relative, 1.0 at its peak). The map is laid back through the
  crop, flip and resize inference made, so a viewer overlays it on the mammogram; no
  threshold is applied.

Class names and the predicted-class concept use the local coding scheme
:data:`CODING_SCHEME` (DICOM's ``99`` prefix marks a private scheme); the concepts that
have standard codes use them (DCM, SCT, UCUM).

What is copied from the source: highdicom copies the Patient module (Patient's Name,
Patient ID, Patient's Birth Date, Patient's Sex) and the General Study module (Study
Instance UID, Study Date, Study Time, Referring Physician's Name, Study ID, Accession
Number) so that both objects join the source's study, as DICOM requires of derived
objects; the SR's evidence and the segmentation's source reference hold the Study,
Series and SOP Instance UIDs. Nothing else of the source is copied, and nothing is made
up: the source's Patient Orientation is not valid DICOM in CBIS-DDSM (``CC``), so the
segmentation's (required, may be empty) is left empty.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

import mammo_utils
from mammo_utils.breast import BreastGeometry

#: The local coding scheme of the class concepts (``99``: private, per DICOM PS3.16).
CODING_SCHEME = "99MAMMO"
#: Manufacturer written into every object.
MANUFACTURER = "mammo-utils"
#: Largest stored value of the fractional segmentation (stands for probability 1.0).
MAX_FRACTIONAL_VALUE = 255
#: Series numbers of the report and of the heat map.
SR_SERIES_NUMBER = 9001
SEG_SERIES_NUMBER = 9002

MAMMOGRAPHY = CodedConcept("71651007", "SCT", "Mammography")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
PREDICTED_CLASS = CodedConcept("PREDICTED_CLASS", CODING_SCHEME, "Predicted class")
LESION = CodedConcept("52988006", "SCT", "Lesion")
ALTERED_STRUCTURE = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")


class DicomOutputError(ValueError):
    """A source for which no DICOM output can be made; ``str(err)`` names it and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class ModelIdentity:
    """How the outputs name the algorithm: the card's (or sidecar's) model name, a version
    made of the package version and the model file's sha256, and its parameters."""

    name: str
    version: str
    task: str
    parameters: tuple[str, ...]

    @classmethod
    def from_card(cls, card: Mapping, *, runtime: str) -> ModelIdentity:
        """From a model card or an export sidecar (which records its source model)."""
        digest = (card.get("model_file") or card.get("source_model") or {}).get("sha256") or ""
        return cls(
            name=f"{card['model_name']} ({card.get('architecture', 'model')})"[:64],
            version=f"{mammo_utils.__version__} sha256:{digest[:16]}"[:64],
            task=str(card["task"]),
            parameters=(f"task={card['task']}", f"image_size={card['image_size']}",
                        f"runtime={runtime}"),
        )

    @property
    def serial(self) -> str:
        """The model file's sha256 prefix, the device serial number of its outputs."""
        return self.version.rsplit("sha256:", 1)[-1] or "unknown"


@dataclass(frozen=True)
class DicomOutputs:
    """The files :func:`write_dicom_outputs` wrote."""

    report: Path
    heatmap: Path | None


def read_source(path: str | Path) -> pydicom.Dataset:
    """The source DICOM's header (no pixel data); :class:`DicomOutputError` for a
    non-DICOM file or one lacking the UIDs the outputs must reference."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except (pydicom.errors.InvalidDicomError, OSError) as exc:
        raise DicomOutputError(path, f"DICOM outputs need a DICOM input ({exc})") from None
    missing = [name for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                 "SOPClassUID", "Rows", "Columns") if name not in dataset]
    if missing:
        raise DicomOutputError(path, f"the DICOM lacks {', '.join(missing)}")
    return dataset


def heatmap_on_source(heatmap: np.ndarray, geometry: BreastGeometry | None,
                      shape: tuple[int, int]) -> np.ndarray:
    """``heatmap`` (over the prediction's image) resampled onto the source pixel grid.

    With ``geometry`` (a mammogram), each source pixel inside the breast crop is mapped
    through :meth:`~mammo_utils.breast.BreastGeometry.map_points` onto the canvas, scaled
    to the heat map, and sampled bilinearly; outside the crop the map is 0. Without it (a
    crop, which is only resized) the map is resized to ``shape``.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if geometry is None:
        return cv2.resize(heatmap, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    x0, y0, x1, y1 = geometry.box
    xs, ys = np.meshgrid(np.arange(x0, x1), np.arange(y0, y1))
    mapped = geometry.map_points(np.stack([xs.ravel(), ys.ravel()], axis=1))
    factor_y = heatmap.shape[0] / geometry.shape[0]
    factor_x = heatmap.shape[1] / geometry.shape[1]
    map_x = ((mapped[:, 0] + 0.5) * factor_x - 0.5).reshape(xs.shape).astype(np.float32)
    map_y = ((mapped[:, 1] + 0.5) * factor_y - 0.5).reshape(xs.shape).astype(np.float32)
    out = np.zeros(shape, dtype=np.float32)
    out[y0:y1, x0:x1] = cv2.remap(heatmap, map_x, map_y, cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return np.clip(out, 0.0, 1.0)


def heatmap_label(task: str, input_kind: str) -> str:
    """What the heat map's values are: the scan's suspicion for a ``roi`` model on a
    mammogram, else (an ``image`` model, or any crop) Grad-CAM."""
    if task == "roi" and input_kind == "mammogram":
        return "suspicion: non-normal probability"
    return "Grad-CAM saliency, relative"


def write_dicom_outputs(source: str | Path, prediction, identity: ModelIdentity,
                        out_dir: str | Path) -> DicomOutputs:
    """Write the SR and the heat-map segmentation of ``prediction`` on ``source``.

    ``prediction`` is a :class:`~mammo_utils.inference.Prediction` of ``source``. Files
    are named by the source's SOP Instance UID (``<uid>.sr.dcm``, ``<uid>.seg.dcm``);
    a prediction without a heat map (an ONNX image model: no Grad-CAM) gets the report
    alone.
    """
    dataset = read_source(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = str(dataset.SOPInstanceUID)
    with warnings.catch_warnings():
        # highdicom warns about the single-component names of de-identified data sets.
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        report = measurement_report(dataset, prediction, identity)
        segmentation = (
            heatmap_segmentation(dataset, prediction, identity,
                                 heatmap_label(identity.task, prediction.input_kind))
            if prediction.has_heatmap else None
        )
    outputs = DicomOutputs(report=out_dir / f"{stem}.sr.dcm",
                           heatmap=out_dir / f"{stem}.seg.dcm" if segmentation else None)
    report.save_as(outputs.report, enforce_file_format=True)
    if segmentation is not None:
        segmentation.save_as(outputs.heatmap, enforce_file_format=True)
    return outputs


def measurement_report(dataset: pydicom.Dataset, prediction,
                       identity: ModelIdentity) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 report of ``prediction`` on the image ``dataset``."""
    algorithm = hd.sr.AlgorithmIdentification(
        name=identity.name, version=identity.version, parameters=list(identity.parameters)
    )
    probabilities = [
        hd.sr.Measurement(
            name=CodedConcept(f"P_{name}", CODING_SCHEME, f"Probability of {name}"),
            value=float(probability), unit=NO_UNITS, algorithm_id=algorithm,
        )
        for name, probability in prediction.probabilities.items()
    ]
    verdict = hd.sr.QualitativeEvaluation(
        name=PREDICTED_CLASS,
        value=CodedConcept(prediction.label, CODING_SCHEME, prediction.label),
    )
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier="whole-image classification"
        ),
        measurements=probabilities,
        qualitative_evaluations=[verdict],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(dataset)],
        algorithm_id=algorithm,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=pydicom.uid.generate_uid(entropy_srcs=[identity.name, identity.version]),
            name=identity.name, manufacturer_name=MANUFACTURER, model_name=identity.name,
        ),
    )
    content = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=MAMMOGRAPHY,
        imaging_measurements=[group],
        title=codes.cid7021.ImagingMeasurementReport,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[dataset], content=content, series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        series_description=f"AI classification: {identity.name}"[:64],
        coding_schemes=[CodingSchemeIdentificationItem(
            CODING_SCHEME, name="mammo-utils class names", responsible_organization=MANUFACTURER,
        )],
    )


def heatmap_segmentation(dataset: pydicom.Dataset, prediction, identity: ModelIdentity,
                         label: str) -> hd.seg.Segmentation:
    """The heat map of ``prediction`` as a fractional segmentation of ``dataset``."""
    shape = (int(dataset.Rows), int(dataset.Columns))
    fraction = heatmap_on_source(prediction.heatmap, prediction.geometry, shape)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=identity.name, version=identity.version,
        family=codes.cid7162.ArtificialIntelligence,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=label[:64],
        segmented_property_category=ALTERED_STRUCTURE, segmented_property_type=LESION,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    segmentation = hd.seg.Segmentation(
        source_images=[dataset], pixel_array=fraction,
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=MAX_FRACTIONAL_VALUE, segment_descriptions=[segment],
        series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=identity.name, software_versions=identity.version,
        device_serial_number=identity.serial,
        series_description=f"AI heat map: {label}"[:64],
    )
    # General Image: Type 2C for an image without Image Orientation (Patient). The
    # source's value is not valid DICOM in CBIS-DDSM, so it stays empty, not guessed.
    segmentation.PatientOrientation = ""
    return segmentation
