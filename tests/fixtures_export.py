"""Export fixtures: the shared tiny trained model exported to every format once.

``exported_models`` exports ``permuted_known_answer_model`` (the baseline trained on the
known-answer patches, output order permuted) to ONNX through :func:`export_model` with a
real CBIS-DDSM DICOM among the parity inputs, and to LiteRT and a SavedModel through
``mammo export`` (about 40 s on 2 cores, most of it tf2onnx and the TFLite converter).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def exported_models(permuted_known_answer_model, real_mammograms, tmp_path_factory):
    """``{format: ExportResult or path}`` plus ``"model_dir"`` and ``"folder"``."""
    from mammo_utils.cli import main as mammo
    from mammo_utils.export import export_model
    from mammo_utils.inference import sidecar_path

    model_dir = permuted_known_answer_model.model_dir
    folder = tmp_path_factory.mktemp("exported")
    onnx = export_model(model_dir, "onnx", folder / "baseline.onnx",
                        check_images=[real_mammograms[0]])
    outputs = {"model_dir": model_dir, "folder": folder, "onnx": onnx.path}
    for fmt, name in (("litert", "baseline.tflite"), ("savedmodel", "baseline_savedmodel")):
        assert mammo(["export", "--model", str(model_dir), "--format", fmt,
                      "--out", str(folder / name)]) == 0
        outputs[fmt] = folder / name
        assert sidecar_path(folder / name).is_file()
    return outputs
