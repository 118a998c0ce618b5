"""``mammo evaluate``: predictions, metrics and figures of one model on one split."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammo_utils.cli._ranges import integer

NAME = "evaluate"
HELP = "Evaluate a trained model on a split: predictions.csv, metrics.json and figures."
ORDER = 50


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True,
                        help="model directory (model.keras + model_card.json)")
    parser.add_argument("--data", type=Path, required=True,
                        help="processed folder holding manifest.csv")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path, required=True,
                        help="run report folder; writes metrics/<model>/ and figures/<model>/")
    parser.add_argument("--batch-size", type=integer(1), default=32)
    parser.add_argument("--bootstrap", type=integer(0), default=1000,
                        help="patient-level bootstrap replicates for the intervals")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")


def run(args: argparse.Namespace) -> int:
    from mammo_utils.evaluate import evaluate_model
    from mammo_utils.metrics import BOOTSTRAP_METRICS

    result = evaluate_model(
        args.model, args.data, args.split, args.out, batch_size=args.batch_size,
        n_bootstrap=args.bootstrap, seed=args.seed, make_figures=not args.no_figures,
    )
    m = result.metrics
    shown = ", ".join(
        f"{name} {'n/a' if m[name] is None else f'{m[name]:.3f}'}" for name in BOOTSTRAP_METRICS
    )
    print(f"{result.model_name} on {args.split} ({m['n_images']} images, "
          f"{m['n_patients']} patients): {shown}")
    print(f"wrote {result.predictions_path}, {result.metrics_path}, "
          f"{len(result.figures)} figures")
    return 0
