"""The ``image`` task: the whole breast, cropped, flipped, padded square and resized."""

from __future__ import annotations

import numpy as np

from mammo_utils.breast import prepare_and_fit
from mammo_utils.preprocess.job import ImageJob, TaskOutput, to_uint16


def cut_image(image: np.ndarray, job: ImageJob, sha256: str) -> TaskOutput:
    """One ``size`` x ``size`` PNG of the breast, labelled with the image's index label.

    The crop keeps its aspect: it is padded with zeros to a square (columns on the right,
    away from the chest wall; rows split above and below) and resized once with
    ``cv2.INTER_AREA``. ``working_size`` plays no part in this task.
    """
    size = job.config.size
    canvas, _, geometry = prepare_and_fit(image, (size, size))
    output = TaskOutput()
    output.add(job.image_id, job.index_row["label"], to_uint16(canvas),
               job.base_row(sha256, geometry))
    return output
