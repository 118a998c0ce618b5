"""``mammo export --model DIR --format onnx|litert|savedmodel``: a portable model file.

Writes the model (default ``DIR/model.onnx``, ``DIR/model.tflite`` or the folder
``DIR/model_savedmodel``) and its sidecar JSON, after checking that its probabilities
match ``model.keras`` on real preprocessed inputs; prints the largest difference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mammo_utils.cli._ranges import number
from mammo_utils.export import FORMATS, PARITY_TOLERANCE, export_model

NAME = "export"
HELP = "Export a trained model to ONNX, LiteRT or a SavedModel, checked for parity."
ORDER = 65


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, type=Path, metavar="DIR",
                        help="model directory (model.keras + model_card.json)")
    parser.add_argument("--format", required=True, choices=FORMATS, dest="fmt",
                        help="onnx (ONNX Runtime), litert (.tflite) or savedmodel (TensorFlow)")
    parser.add_argument("--out", type=Path, default=None, metavar="PATH",
                        help="where to write (default: model.onnx, model.tflite or "
                        "model_savedmodel inside the model directory)")
    parser.add_argument("--check-image", type=Path, action="append", default=[],
                        metavar="FILE", help="a mammogram whose model inputs join the parity "
                        "check (repeatable); the training manifest's images always do")
    parser.add_argument("--tolerance", type=number(0, 1), default=None,
                        help="largest absolute probability difference accepted "
                        f"(default: {PARITY_TOLERANCE:g})")


def run(args: argparse.Namespace) -> int:
    tolerance = PARITY_TOLERANCE if args.tolerance is None else args.tolerance
    result = export_model(args.model, args.fmt, args.out, check_images=args.check_image,
                          tolerance=tolerance)
    print(f"wrote {result.path} and {result.sidecar.name} ({result.seconds:.1f} s)")
    print(f"parity: max |{result.format} - keras| = {result.max_abs_diff:.3g} on "
          f"{result.n_inputs} real preprocessed inputs (tolerance {result.tolerance:g})")
    return 0
