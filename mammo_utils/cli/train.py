"""``mammo train``: train one model on a processed folder and write its model directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammo_utils.classes import LABEL_SCHEMES

NAME = "train"
HELP = "Train a baseline CNN or a transfer-learning backbone: model.keras, model_card.json."
ORDER = 40

#: ``mammo_utils.models.ARCHITECTURES``, repeated so ``mammo --help`` does not start
#: TensorFlow (tests/test_train.py checks the two agree).
ARCHITECTURES = ("baseline", "vgg16", "resnet50", "mobilenetv2", "densenet121")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True,
                        help="processed folder holding manifest.csv and preprocess_config.json")
    parser.add_argument("--model", default="baseline", choices=ARCHITECTURES,
                        help="architecture (default: baseline)")
    parser.add_argument("--weights", default="none",
                        help="backbone weights: none, imagenet, or a weights file path "
                        "(a Keras *_notop.h5 or a .weights.h5 from save_backbone_weights)")
    parser.add_argument("--epochs", type=int, default=20,
                        help="epochs (for backbones: of the head stage)")
    parser.add_argument("--fine-tune-epochs", type=int, default=0,
                        help="backbones: epochs fine-tuning the top of the backbone")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--fine-tune-learning-rate", type=float, default=1e-5)
    parser.add_argument("--balance", default="class_weight",
                        choices=("class_weight", "oversample", "none"),
                        help="class imbalance handling (default: class_weight)")
    parser.add_argument("--label-scheme", default="four_class", choices=LABEL_SCHEMES)
    parser.add_argument("--class-order", type=_class_list, default=None, metavar="A,B,...",
                        help="output order: a comma-separated permutation of the label "
                        "scheme's classes (default: the scheme's order); kept in the card")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patience", type=int, default=5,
                        help="early-stopping patience in epochs on validation loss")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also write TensorBoard logs under OUT/tensorboard")


def _class_list(text: str) -> list[str]:
    """``"MALIGNANT, NORMAL"`` -> ``["MALIGNANT", "NORMAL"]`` (checked later, by train)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def run(args: argparse.Namespace) -> int:
    from mammo_utils.train import train

    result = train(
        args.data, args.model, args.weights, args.epochs, args.batch_size, args.out,
        label_scheme=args.label_scheme, class_order=args.class_order, seed=args.seed,
        learning_rate=args.learning_rate,
        fine_tune_epochs=args.fine_tune_epochs,
        fine_tune_learning_rate=args.fine_tune_learning_rate, balance=args.balance,
        patience=args.patience, tensorboard=args.tensorboard, verbose=1,
    )
    metrics = result.card.validation_metrics
    auc = metrics["macro_roc_auc"]
    print(f"{result.card.model_name}: best epoch {result.card.best_epoch}, validation "
          f"accuracy {metrics['accuracy']:.3f}, "
          f"macro ROC-AUC {'n/a' if auc is None else f'{auc:.3f}'}")
    print(f"wrote {result.model_dir}")
    return 0
