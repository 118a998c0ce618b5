"""``mammo predict FILE... --model DIR``: classify mammograms or lesion crops.

One line (or, with ``--json``, one JSON object) per file. A file that cannot be read
gets an error line naming it and the reason; the other files are still predicted and
the exit status is 1. ``--model`` also takes an exported ``.onnx`` file (its sidecar
beside it), run by ONNX Runtime without TensorFlow. ``--dicom-out DIR`` writes, for each
DICOM input, a TID 1500 Structured Report and the heat map as a fractional
Segmentation (see :mod:`mammo_utils.dicom_output`).

A two-view (``breast``) model classifies one breast: ``mammo predict CC.dcm MLO.dcm
--model DIR`` prints one line for the pair. Two files of different patients or sides
are refused naming both (exit status 1); one file is refused, or given as both views
when the model was trained with ``single_view: duplicate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from mammo_utils.cli._ranges import integer, number

NAME = "predict"
HELP = "Classify mammograms (DICOM, PNG, JPEG, PGM) with a trained model."
ORDER = 60


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE",
                        help="images to classify (a two-view model: the CC and MLO of "
                        "one breast)")
    parser.add_argument("--model", required=True, type=Path, metavar="DIR",
                        help="model directory (model.keras + model_card.json), or an "
                        "exported .onnx file with its sidecar (runs without TensorFlow)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per file instead of a line of text")
    parser.add_argument("--input-kind", choices=("auto", "mammogram", "crop"), default="auto",
                        help="whole mammogram or lesion crop (auto: guess from the image)")
    parser.add_argument("--stride", type=integer(1), default=None,
                        help="patch-scan stride in working pixels (roi models; default size/2)")
    parser.add_argument("--max-patches", type=integer(1), default=None,
                        help="most patches a roi model's scan may cut from one image "
                        "(default: 10000); a smaller stride that needs more is refused")
    parser.add_argument("--threshold", type=number(0, 1), default=None,
                        help="smallest probability a non-normal label needs; below it the "
                        "image is called NORMAL with a warning (default: none, the top class)")
    parser.add_argument("--dicom-out", type=Path, default=None, metavar="DIR",
                        help="for each DICOM input, write a Structured Report (TID 1500) and "
                        "the heat map (fractional Segmentation) into DIR")


def _record(path: Path, prediction, written: Sequence[Path] = ()) -> dict:
    return {
        "file": str(path),
        "label": prediction.label,
        "confidence": prediction.confidence,
        "probabilities": prediction.probabilities,
        "input_kind": prediction.input_kind,
        "warnings": prediction.warnings,
        "out_of_domain": prediction.out_of_domain,
        "metadata": prediction.metadata,
        **({"dicom_outputs": [str(item) for item in written]} if written else {}),
    }


def _line(path: Path, prediction, written: Sequence[Path] = ()) -> str:
    ranked = ", ".join(f"{name} {p:.1%}" for name, p in prediction.probabilities.items())
    shown = [*(f"out of domain: {text}" for text in prediction.out_of_domain),
             *prediction.warnings]
    notes = f"  [{'; '.join(shown)}]" if shown else ""
    wrote = f"  wrote {', '.join(str(item) for item in written)}" if written else ""
    return f"{path}: {prediction.label} ({prediction.confidence:.1%})  {ranked}{notes}{wrote}"


def _dicom_writer(args: argparse.Namespace, classifier):
    """``path, prediction -> written files`` for ``--dicom-out``, else ``None``."""
    if args.dicom_out is None:
        return None
    from mammo_utils.dicom_output import ModelIdentity, write_dicom_outputs
    from mammo_utils.inference import OnnxModel

    runtime = "onnxruntime" if isinstance(classifier.model, OnnxModel) else "keras"
    identity = ModelIdentity.from_card(classifier.card, runtime=runtime)

    def write(path: Path, prediction) -> list[Path]:
        outputs = write_dicom_outputs(path, prediction, identity, args.dicom_out)
        return [item for item in (outputs.report, outputs.heatmap) if item is not None]

    return write


def run(args: argparse.Namespace) -> int:
    from mammo_utils.inference import Classifier
    from mammo_utils.reader import ImageReadError

    limits = {} if args.max_patches is None else {"max_patches": args.max_patches}
    classifier = Classifier.from_dir(
        args.model, stride=args.stride, threshold=args.threshold, **limits
    )
    if classifier.task == "breast":
        if args.dicom_out is not None:
            print("mammo predict: error: --dicom-out writes outputs for one image; a "
                  "two-view (breast) model's prediction covers two", file=sys.stderr)
            return 1
        return _run_breast(classifier, args)
    write_dicom = _dicom_writer(args, classifier)
    failed = 0
    for path in args.files:
        try:
            prediction = classifier.predict(path, input_kind=args.input_kind)
            written = write_dicom(path, prediction) if write_dicom else []
        except (ImageReadError, OSError, ValueError) as exc:
            failed += 1
            reason = str(exc) if str(path) in str(exc) else f"{path}: {exc}"
            if args.json:
                print(json.dumps({"file": str(path), "error": reason}), flush=True)
            else:
                print(f"mammo predict: error: {reason}", file=sys.stderr, flush=True)
            continue
        text = (json.dumps(_record(path, prediction, written)) if args.json
                else _line(path, prediction, written))
        print(text, flush=True)
    if failed:
        print(f"{failed} of {len(args.files)} files failed", file=sys.stderr)
    return 1 if failed else 0


def _run_breast(classifier, args: argparse.Namespace) -> int:
    """One prediction for the breast whose one or two views are ``args.files``."""
    from mammo_utils.reader import ImageReadError

    files = list(args.files)
    label = " + ".join(str(path) for path in files)
    try:
        if len(files) > 2:
            raise ValueError(f"a two-view model classifies one breast: give its CC and MLO "
                             f"files, not {len(files)} files ({label})")
        prediction = classifier.predict_breast(*files)
    except (ImageReadError, OSError, ValueError) as exc:
        if args.json:
            print(json.dumps({"file": label, "error": str(exc)}), flush=True)
        else:
            print(f"mammo predict: error: {exc}", file=sys.stderr, flush=True)
        return 1
    print(json.dumps(_record(label, prediction)) if args.json else _line(label, prediction),
          flush=True)
    return 0
