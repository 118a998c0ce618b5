"""``mammo ingest``: index a data set into index.csv, lesions.csv and rejects.csv."""

from __future__ import annotations

import argparse
from pathlib import Path

from mammo_utils.cli._ranges import integer, number
from mammo_utils.ingest import (
    ADAPTERS,
    HEADER_CACHE_FILE,
    INDEX_FILE,
    LESIONS_FILE,
    RECONCILIATION_FILE,
    REJECTS_FILE,
    IngestResult,
    combine,
    ingest,
)
from mammo_utils.splits import split_summary

NAME = "ingest"
HELP = "Index CBIS-DDSM, mini-MIAS or an image folder, with patient-level splits."
ORDER = 20



def _also(text: str) -> tuple[str, Path]:
    dataset, sep, root = text.partition(":")
    if not sep or dataset not in ADAPTERS or not root:
        raise argparse.ArgumentTypeError(
            f"expected DATASET:ROOT with DATASET in {', '.join(ADAPTERS)}, got {text!r}"
        )
    return dataset, Path(root)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dataset", choices=sorted(ADAPTERS), help="data set kind (the synthetic set is cbis-ddsm)"
    )
    parser.add_argument("--root", type=Path, required=True, help="data set folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (interim)")
    parser.add_argument(
        "--csv-dir", type=Path, help="CBIS-DDSM case-description CSVs (default: --root)"
    )
    parser.add_argument("--val-fraction", type=number(0, 1, high_open=True), default=0.15)
    parser.add_argument("--test-fraction", type=number(0, 1, high_open=True), default=0.15)
    parser.add_argument("--seed", type=integer(0), default=0)
    parser.add_argument(
        "--views", type=lambda text: [v for v in text.split(",") if v], help="e.g. MLO,CC"
    )
    parser.add_argument(
        "--csv-only",
        action="store_true",
        help="CBIS-DDSM: index the CSV rows without looking for images (image_path empty)",
    )
    parser.add_argument(
        "--follow-symlinks",
        action="store_true",
        help="folder: include files that symbolic links bring in from outside --root "
        "(by default they are rejected)",
    )
    parser.add_argument(
        "--also",
        type=_also,
        action="append",
        default=[],
        metavar="DATASET:ROOT",
        help="ingest another data set too and combine (splits recomputed on the union)",
    )


def _options(dataset: str, args: argparse.Namespace, cache_name: str) -> dict:
    options: dict = {"views": args.views}
    if dataset == "folder":
        options["follow_symlinks"] = args.follow_symlinks
    if dataset == "cbis-ddsm":
        options["cache_path"] = args.out / cache_name
        options["require_images"] = not args.csv_only
    return options


def run(args: argparse.Namespace) -> int:
    """Ingest, print the summary and write the tables. A data problem (a missing folder,
    an unreadable or incomplete CSV, bad split fractions) raises, and the ``mammo`` entry
    point turns it into one error line and exit status 1."""
    result = _ingest_all(args)
    result.save(args.out)
    print(result.summary())
    print(split_summary(result.index).to_string())
    print(f"wrote {args.out / INDEX_FILE}, {LESIONS_FILE}, {REJECTS_FILE}, {RECONCILIATION_FILE}")
    return 0


def _ingest_all(args: argparse.Namespace) -> IngestResult:
    """The data set, combined with every ``--also`` one."""
    fractions = {
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
    }
    first = _options(args.dataset, args, HEADER_CACHE_FILE)
    if args.dataset == "cbis-ddsm":
        first["csv_dir"] = args.csv_dir
    results = [ingest(args.dataset, args.root, **first, **fractions)]
    for position, (dataset, root) in enumerate(args.also, 1):
        options = _options(dataset, args, f"dicom_headers_{position}.csv")
        results.append(ingest(dataset, root, **options, **fractions))
    return results[0] if len(results) == 1 else combine(results, **fractions)
