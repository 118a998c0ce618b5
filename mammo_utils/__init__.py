"""Mammography research workbench.

The stages, one module each, follow the data flow: ``reader`` (DICOM/PNG/JPEG/PGM to
a [0, 1] image), ``synth`` (the synthetic CBIS-DDSM default), ``ingest`` and
``splits`` (index and patient-grouped splits), ``breast`` and ``preprocess``
(crops and patches), ``pipeline``, ``models`` and ``train`` (TensorFlow), ``evaluate``
with ``metrics`` and ``audit``, ``inference`` and ``demo``, ``report`` and ``fetch``.
Importing this package stays light: TensorFlow loads only with the training stages.
"""

from mammo_utils.classes import CLASSES, LABEL_SCHEMES
from mammo_utils.reader import ImageReadError, read_image

__version__ = "0.1.0"

__all__ = ["CLASSES", "LABEL_SCHEMES", "ImageReadError", "__version__", "read_image"]
