"""DICOM outputs: a TID 1500 Structured Report and a fractional Segmentation heat map for
a real CBIS-DDSM DICOM, read back with pydicom and highdicom and checked by dciodvfy."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import _missing
from fixtures_inference import synthetic_breast

from mammo_utils.cli import main as mammo
from mammo_utils.dicom_output import CODING_SCHEME, MAX_FRACTIONAL_VALUE, heatmap_on_source
from mammo_utils.inference import Classifier

#: Values an output may share with its source: the references, the Patient and General
#: Study modules that put it in the source's study, and the character set.
MAY_BE_COPIED = {
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "SpecificCharacterSet",
}
#: Value representations of names, identifiers, dates and free text (not image geometry,
#: which the heat map shares with its source by design).
IDENTIFYING_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "DA", "TM", "DT", "AS", "UI"}


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dciodvfy (dicom3tools) reports as errors for ``path``."""
    tool = shutil.which("dciodvfy")
    if tool is None:
        _missing("dciodvfy not found: install Debian's dicom3tools (.ci/run does)")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("Error")]


@pytest.mark.slow
def test_report_and_heatmap_for_a_real_cbis_ddsm_dicom(permuted_known_answer_model,
                                                       real_mammograms, tmp_path, capsys):
    source = real_mammograms[0]
    original = pydicom.dcmread(source, stop_before_pixels=True)
    status = mammo(["predict", str(source), "--model",
                    str(permuted_known_answer_model.model_dir), "--dicom-out", str(tmp_path),
                    "--json"])
    assert status == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    report_path, seg_path = (Path(item) for item in record["dicom_outputs"])
    assert (report_path.name, seg_path.name) == (f"{original.SOPInstanceUID}.sr.dcm",
                                                 f"{original.SOPInstanceUID}.seg.dcm")

    report = hd.sr.srread(report_path)
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == original.StudyInstanceUID == report.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == original.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    (group,) = report.content.get_image_measurement_groups()
    (image,) = group.source_images
    assert image.referenced_sop_instance_uid == original.SOPInstanceUID
    probabilities = {item.name.meaning.removeprefix("Probability of "): item.value
                     for item in group.get_measurements()}
    assert list(probabilities) == list(record["probabilities"])  # the card's order
    for name, value in record["probabilities"].items():
        assert probabilities[name] == pytest.approx(value, abs=1e-6)
    (verdict,) = group.get_qualitative_evaluations()
    assert verdict.value == hd.sr.CodedConcept(record["label"], CODING_SCHEME, record["label"])
    assert "permuted_baseline (baseline)" in json.dumps(report.to_json_dict())  # TID 4019

    seg = hd.seg.segread(seg_path)
    assert (seg.SegmentationType, seg.SegmentationFractionalType) == ("FRACTIONAL",
                                                                      "PROBABILITY")
    assert (seg.Rows, seg.Columns) == (original.Rows, original.Columns)
    assert seg.StudyInstanceUID == original.StudyInstanceUID
    assert seg.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID
    fraction = seg.pixel_array.astype(np.float32) / MAX_FRACTIONAL_VALUE
    assert fraction.shape == (original.Rows, original.Columns)
    # The scan's suspicion lies on the breast; the background outside its crop is 0.
    assert fraction.max() > 0 and fraction[:, -1].max() == 0

    for output in (report, seg):
        shared = {element.keyword for element in output
                  if element.VR in IDENTIFYING_VRS and element.keyword in original
                  and element.value not in ("", None)
                  and original[element.tag].value == element.value}
        assert shared <= MAY_BE_COPIED, shared - MAY_BE_COPIED
    for path in (report_path, seg_path):
        assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("chest_wall", ["left", "right"])
def test_heatmap_lies_on_the_lesion_in_source_pixels(bright_roi_model_dir, chest_wall):
    """Laid back through crop, flip and resize, the scan's hottest source pixels hold the
    lesion, whichever side the chest wall is on."""
    image, (x, y) = synthetic_breast(chest_wall=chest_wall)
    prediction = Classifier.from_dir(bright_roi_model_dir).predict(image, input_kind="mammogram")
    assert prediction.geometry is not None and prediction.label == "MALIGNANT"
    on_source = heatmap_on_source(prediction.heatmap, prediction.geometry, image.shape)
    assert on_source.shape == image.shape
    assert on_source[y, x] >= 0.95 * on_source.max()
    assert on_source[image == 0].mean() < on_source[y, x] / 2


def test_dicom_out_refuses_a_non_dicom_input(bright_roi_model_dir, breast_png, tmp_path,
                                             capsys):
    status = mammo(["predict", str(breast_png), "--model", str(bright_roi_model_dir),
                    "--dicom-out", str(tmp_path / "out")])
    assert status == 1
    error = capsys.readouterr().err
    assert f"{breast_png}: DICOM outputs need a DICOM input" in error
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
