"""``mammo evaluate``: predictions, metrics and figures of one model on one split, at
the patch, image and breast levels."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammo_utils import tracking
from mammo_utils.cli._ranges import integer
from mammo_utils.levels import DEFAULT_TOP_K, LEVELS, PATCH_AGGREGATIONS, VIEW_AGGREGATIONS

NAME = "evaluate"
HELP = ("Evaluate a trained model on a split at every level (patch, image, breast): "
        "predictions_<level>.csv, metrics.json and figures.")
ORDER = 50


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True,
                        help="model directory (model.keras + model_card.json)")
    parser.add_argument("--data", type=Path, required=True,
                        help="processed folder holding manifest.csv; a folder made from "
                             "another data set than the model's is an external validation")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", type=Path, required=True,
                        help="run report folder; writes metrics/<model>/ and figures/<model>/")
    parser.add_argument("--batch-size", type=integer(1), default=32)
    parser.add_argument("--bootstrap", type=integer(0), default=1000,
                        help="patient-level bootstrap replicates for the intervals")
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--aggregation", default="max", choices=PATCH_AGGREGATIONS,
                        help="how a roi model's patch probabilities become an image's")
    parser.add_argument("--top-k", type=int, default=DEFAULT_TOP_K,
                        help="patches averaged by --aggregation topk_mean")
    parser.add_argument("--breast-rule", default="mean", choices=VIEW_AGGREGATIONS,
                        help="how the views of one breast are combined")
    parser.add_argument("--index", type=Path, default=None,
                        help="ingest index.csv listing the source images (default: "
                             "data/interim/<key>/index.csv beside the processed folder)")
    parser.add_argument("--no-track", action="store_true",
                        help="record no MLflow run (default: the project's store, or "
                        "MLFLOW_TRACKING_URI)")


def run(args: argparse.Namespace) -> int:
    if args.no_track:
        tracking.turn_off()
    from mammo_utils.evaluate import evaluate_model
    from mammo_utils.metrics import BOOTSTRAP_METRICS

    result = evaluate_model(
        args.model, args.data, args.split, args.out, batch_size=args.batch_size,
        n_bootstrap=args.bootstrap, seed=args.seed, make_figures=not args.no_figures,
        aggregation=args.aggregation, top_k=args.top_k, breast_rule=args.breast_rule,
        index=args.index,
    )
    m = result.metrics
    shown = ", ".join(
        f"{name} {'n/a' if m[name] is None else f'{m[name]:.3f}'}" for name in BOOTSTRAP_METRICS
    )
    print(f"{result.model_name} on {args.split} ({m['n_images']} images, "
          f"{m['n_patients']} patients): {shown}")
    for level in LEVELS:
        section = m["levels"][level]
        if "not_applicable" in section:
            print(f"  {level}: not applicable ({section['not_applicable']})")
        else:
            auc = section["malignant_roc_auc"]
            interval = section["bootstrap"]["intervals"]["malignant_roc_auc"]
            shown = "n/a" if auc is None else f"{auc:.3f}"
            if auc is not None and interval["lower"] is not None:
                shown += f" [{interval['lower']:.3f}, {interval['upper']:.3f}]"
            print(f"  {level}: {section['n_images']} rows, malignant_roc_auc {shown}")
    if "protocol" in m:
        print(f"protocol: {m['protocol']}")
    if "external" in m:
        section = m["external"]
        if section["rows"] is None:
            print(f"external validation, no comparison: {section['reason']}")
        else:
            print(f"external validation: {section['external']} against {section['internal']}")
            for row in section["rows"]:
                if row["metric"] == "malignant_roc_auc":
                    print(f"  {row['statement']}")
    print(f"wrote {result.predictions_path}, {result.metrics_path}, "
          f"{len(result.figures)} figures")
    return 0
