"""The synthetic CBIS-DDSM data set: the embedded default that lets every command
and notebook run on a fresh machine without a download.

It reproduces CBIS-DDSM's layout (NBIA folders, metadata.csv, DICOM tags, the four
case-description CSVs with their exact columns and quirks, ROI masks and crops)
around phantom mammograms whose lesions carry their pathology in the pixels.
Everything in it is synthetic; reports built on it say so.
"""

from .generate import DEFAULT_NORMAL_FRACTION, SynthSummary, generate_dataset
from .plan import IMAGE_SIZES, PATHOLOGIES

__all__ = [
    "DEFAULT_NORMAL_FRACTION",
    "IMAGE_SIZES",
    "PATHOLOGIES",
    "SynthSummary",
    "generate_dataset",
]
