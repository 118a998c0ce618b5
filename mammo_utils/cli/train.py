"""``mammo train``: train one model on a processed folder and write its model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammo_utils import tracking
from mammo_utils.classes import LABEL_SCHEMES
from mammo_utils.cli._ranges import integer
from mammo_utils.training_config import (
    ARCHITECTURES,
    BALANCE_MODES,
    DISTRIBUTE_MODES,
    TrainingConfig,
)

NAME = "train"
HELP = "Train a baseline CNN or a transfer-learning backbone: model.keras, model_card.json."
ORDER = 40


def configure(parser: argparse.ArgumentParser) -> None:
    defaults = TrainingConfig()
    parser.add_argument("--data", type=Path, required=True,
                        help="processed folder holding manifest.csv and preprocess_config.json")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--model", default=None, choices=ARCHITECTURES,
                        help=f"architecture (default: the --init-from model's, else "
                        f"{defaults.architecture})")
    parser.add_argument("--init-from", type=Path, default=None, metavar="MODEL_DIR",
                        help="start from this model's convolutional trunk (same architecture "
                        "and classes, any task and input size) under new top layers; trains "
                        "the new layers for --epochs on the frozen trunk, then the top "
                        "--fine-tune-fraction of the trunk for --fine-tune-epochs; the card "
                        "records the lineage")
    parser.add_argument("--stem-steps", type=integer(0), default=None, metavar="N",
                        help="baseline: strided convolutions halving the input before its "
                        "blocks (default: sized to the input, 224 px -> 2; an --init-from "
                        "model keeps its source's)")
    parser.add_argument("--top-blocks", type=integer(0), default=None, metavar="N",
                        help="new convolution blocks between trunk and pooling (default: "
                        "0 for patches, 2 for whole breasts, after Shen et al. 2019)")
    parser.add_argument("--weights", default=defaults.weights,
                        help="backbone weights: none, imagenet, or a weights file path "
                        "(a Keras *_notop.h5 or a .weights.h5 from save_backbone_weights)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="epochs (pretrained or --init-from: of the head stage)")
    parser.add_argument("--fine-tune-epochs", type=int, default=defaults.fine_tune_epochs,
                        help="pretrained or --init-from: epochs fine-tuning the top of the "
                        "trunk")
    parser.add_argument("--fine-tune-fraction", type=float,
                        default=defaults.fine_tune_fraction,
                        help="share of the backbone's layers unfrozen for fine-tuning")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--fine-tune-learning-rate", type=float,
                        default=defaults.fine_tune_learning_rate)
    parser.add_argument("--balance", default=defaults.balance, choices=BALANCE_MODES,
                        help=f"class imbalance handling (default: {defaults.balance})")
    parser.add_argument("--no-augment", dest="augment", action="store_false",
                        help="train on the images as they are (no rotation, flip, zoom, ...)")
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--l2", type=float, default=defaults.l2,
                        help="L2 weight penalty of the dense layers")
    parser.add_argument("--label-scheme", default=defaults.label_scheme, choices=LABEL_SCHEMES)
    parser.add_argument("--class-order", type=_class_list, default=None, metavar="A,B,...",
                        help="output order: a comma-separated permutation of the label "
                        "scheme's classes (default: the scheme's order); kept in the card")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="early-stopping patience in epochs on validation loss")
    parser.add_argument("--nondeterministic", dest="deterministic", action="store_false",
                        help="let TensorFlow pick faster, nondeterministic ops (a seed then "
                        "no longer fixes the weights)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard logs under OUT/tensorboard")
    parser.add_argument("--no-track", action="store_true",
                        help="record no MLflow run (default: the project's store, or "
                        "MLFLOW_TRACKING_URI)")
    parser.add_argument("--distribute", default=defaults.distribute, choices=DISTRIBUTE_MODES,
                        help="auto: every GPU when there are several, else one device; "
                        "mirrored: every GPU (or CPU device) of this machine; multi-worker: "
                        "the machines listed in TF_CONFIG, one process each (default: "
                        f"{defaults.distribute}); --batch-size is per replica")
    parser.add_argument("--cpu-devices", type=integer(1), default=None, metavar="N",
                        help="split the CPU into N logical devices (try 'mirrored' on a "
                        "machine without GPUs)")


def _class_list(text: str) -> list[str]:
    """``"MALIGNANT, NORMAL"`` -> ``["MALIGNANT", "NORMAL"]`` (checked by TrainingConfig)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _architecture(args: argparse.Namespace) -> str:
    """``--model``, else the ``--init-from`` model's architecture (read from its card
    alone, without TensorFlow), else the default."""
    if args.model:
        return args.model
    if args.init_from is not None:
        from mammo_utils.model_card import ModelCard

        return ModelCard.load(args.init_from).architecture
    return TrainingConfig().architecture


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The :class:`TrainingConfig` the parsed arguments describe (checked on creation)."""
    return TrainingConfig(
        architecture=_architecture(args), weights=args.weights,
        init_from=None if args.init_from is None else str(args.init_from), epochs=args.epochs,
        batch_size=args.batch_size, label_scheme=args.label_scheme,
        class_order=args.class_order, seed=args.seed, learning_rate=args.learning_rate,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate,
        fine_tune_fraction=args.fine_tune_fraction, balance=args.balance,
        augment=args.augment, patience=args.patience, dropout=args.dropout, l2=args.l2,
        tensorboard=args.tensorboard, deterministic=args.deterministic,
        distribute=args.distribute, stem_steps=args.stem_steps,
        top_blocks=args.top_blocks,
    )


def run(args: argparse.Namespace) -> int:
    config = training_config(args)  # bad settings fail here, before TensorFlow starts
    if args.no_track:
        tracking.turn_off()
    if args.cpu_devices:
        from mammo_utils.distribute import split_cpu

        split_cpu(args.cpu_devices)
    from mammo_utils.train import train

    result = train(args.data, args.out, config, verbose=1)
    metrics = result.card.validation_metrics
    auc = metrics["macro_roc_auc"]
    print(f"{result.card.model_name}: best epoch {result.card.best_epoch}, validation "
          f"accuracy {metrics['accuracy']:.3f}, "
          f"macro ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'}")
    print(f"wrote {result.model_dir}" if result.chief
          else "trained as a worker: the chief wrote the model")
    return 0
