"""Whether two files are the CC and MLO views of one breast, before a two-view model
sees them.

A two-view model given the views of two different breasts would answer confidently
about a breast that does not exist, so the pair is checked from what the files say:

* laterality and view: the reader's metadata (DICOM ``ImageLaterality``/``Laterality``
  and ``ViewPosition``, else the words of the file name, ``..._LEFT_CC``);
* patient: the DICOM ``PatientID`` (read from the header only, compared and never
  shown: it may identify a person), else the file's recorded name: a CBIS-DDSM
  patient token (``P_00001``) or the text before ``_LEFT_``/``_RIGHT_`` in the file or
  folder name (``P1_LEFT_CC.png``; CBIS-DDSM keeps it in the folder,
  ``Mass-Training_P_00001_LEFT_CC/.../1-1.dcm``).

Two known values that differ refuse the pair with :class:`BreastMismatchError`, naming
both files; a value unknown for either file is a warning, not a refusal.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

#: A CBIS-DDSM patient token, anywhere in a name.
_CBIS_PATIENT = re.compile(r"(?<![A-Za-z0-9])P_\d+(?![0-9])")
#: ``<patient>_<LEFT|RIGHT>_<view>`` at the start of a file or folder name.
_NAMED_BREAST = re.compile(r"^(?P<patient>[A-Za-z0-9-]+?)_(?:LEFT|RIGHT)_", re.IGNORECASE)
#: Folders above a file searched for a recorded name (CBIS-DDSM: series, study, case).
_FOLDERS_SEARCHED = 3


class BreastMismatchError(ValueError):
    """Two files that are not the views of one breast; the message names both."""


@dataclass(frozen=True)
class ViewFacts:
    """What one file says about the breast it shows (``None``: it does not say)."""

    label: str
    laterality: str | None
    view: str | None
    patient: str | None
    #: Where ``patient`` came from: ``DICOM PatientID`` or ``file name``.
    patient_source: str | None


def patient_from_name(text: str) -> str | None:
    """The patient a file or folder name records: a CBIS-DDSM ``P_<digits>`` token, else
    the text before ``_LEFT_``/``_RIGHT_`` (``P1_LEFT_CC.png`` -> ``P1``), else None."""
    found = _CBIS_PATIENT.search(text)
    if found:
        return found.group(0)
    named = _NAMED_BREAST.match(text)
    return named.group("patient") if named else None


def _dicom_patient(data: bytes) -> str | None:
    """The header's ``PatientID``, normalised as a name is (``Mass-Training_P_00001_LEFT_CC``,
    the CBIS-DDSM form, gives ``P_00001``); None for a non-DICOM or untagged file."""
    import pydicom

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                 specific_tags=["PatientID"])
    except Exception:  # not DICOM, or a header pydicom refuses: the name may still say
        return None
    value = str(header.get("PatientID") or "").strip()
    return (patient_from_name(value) or value) if value else None


def view_facts(source, label: str, metadata: dict) -> ViewFacts:
    """What ``source`` (a path, bytes or array, already read as ``metadata``) says about
    its breast; ``label`` names it in messages."""
    patient, origin = None, None
    data = None
    if isinstance(source, (str, Path)):
        try:
            data = Path(source).read_bytes() if metadata.get("format") == "dicom" else None
        except OSError:
            data = None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    if data is not None and metadata.get("format") == "dicom":
        patient = _dicom_patient(data)
        origin = "DICOM PatientID" if patient else None
    if patient is None:
        names = [Path(label).name, *(part.name for part in Path(label).parents)]
        for name in names[: 1 + _FOLDERS_SEARCHED]:
            patient = patient_from_name(name)
            if patient:
                origin = "file name"
                break
    return ViewFacts(label, metadata.get("laterality"), metadata.get("view"), patient, origin)


def check_same_breast(first: ViewFacts, second: ViewFacts) -> list[str]:
    """Raise :class:`BreastMismatchError` naming both files when they record different
    patients or sides; return warnings for what could not be checked."""
    problems = []
    if first.patient and second.patient and first.patient != second.patient:
        shown = (f" ({first.patient} and {second.patient})"
                 if first.patient_source == second.patient_source == "file name" else "")
        problems.append(f"different patients{shown}")
    if first.laterality and second.laterality and first.laterality != second.laterality:
        problems.append(f"different sides ({first.laterality} and {second.laterality})")
    if problems:
        raise BreastMismatchError(
            f"{first.label} and {second.label} are not two views of one breast: "
            f"{'; '.join(problems)}. A two-view model needs the CC and MLO of the same "
            "patient and side."
        )
    warnings = []
    if not (first.patient and second.patient):
        warnings.append(f"could not confirm that {first.label} and {second.label} are one "
                        "patient (no DICOM PatientID or recorded name): check the pair")
    if not (first.laterality and second.laterality):
        warnings.append(f"could not confirm that {first.label} and {second.label} are one "
                        "side (laterality unknown): check the pair")
    return warnings


def order_views(first: ViewFacts, second: ViewFacts) -> tuple[int, int, list[str]]:
    """Which of the two files is the CC and which the MLO: ``(cc, mlo, warnings)`` as
    positions 0 and 1. Files given MLO first are swapped; two files of one view are
    refused (:class:`BreastMismatchError`); unknown views keep the given order."""
    views = (first.view, second.view)
    if views == ("MLO", "CC"):
        return 1, 0, []
    if views[0] and views[0] == views[1]:
        raise BreastMismatchError(
            f"{first.label} and {second.label} are both {views[0]} views; a two-view model "
            "needs one CC and one MLO of the same breast"
        )
    if views == ("CC", "MLO"):
        return 0, 1, []
    return 0, 1, [f"view of {first.label if not views[0] else second.label} unknown: "
                  f"{first.label} taken as CC and {second.label} as MLO"]
