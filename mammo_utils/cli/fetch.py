"""``mammo fetch``: download CBIS-DDSM (TCIA) or mini-MIAS into the layout ingest reads."""

from __future__ import annotations

import argparse
import sys

from mammo_utils.fetch import SUBSETS, FetchError, RetryPolicy, fetch_cbis_ddsm, fetch_mini_mias
from mammo_utils.fetch.mias import DEFAULT_URL as MIAS_URL
from mammo_utils.fetch.tcia import DEFAULT_BASE_URL, DEFAULT_CSV_BASE_URL

NAME = "fetch"
HELP = "Download CBIS-DDSM from TCIA or mini-MIAS (resumable, verified)."
ORDER = 15


def _subsets(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SUBSETS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SUBSETS)}; got {text!r}")
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    cbis = datasets.add_parser("cbis-ddsm", help="CBIS-DDSM series from TCIA's NBIA API")
    cbis.add_argument("--out", required=True, help="output folder (NBIA layout)")
    cbis.add_argument(
        "--subset",
        type=_subsets,
        default=list(SUBSETS),
        help=f"comma-separated subsets (default all: {','.join(SUBSETS)})",
    )
    cbis.add_argument("--patients", type=_positive, default=None,
                      help="only the first N patients of each subset")  # fmt: skip
    cbis.add_argument("--workers", type=_positive, default=4, help="parallel series downloads")
    cbis.add_argument("--base-url", default=DEFAULT_BASE_URL, help="NBIA search API base URL")
    cbis.add_argument("--csv-base-url", default=DEFAULT_CSV_BASE_URL,
                      help="where the case-description CSVs are published")  # fmt: skip
    mias = datasets.add_parser("mini-mias", help="the mini-MIAS archive (PGMs + Info.txt)")
    mias.add_argument("--out", required=True, help="output folder")
    mias.add_argument("--url", default=MIAS_URL, help="all-mias.tar.gz address")
    mias.add_argument("--sha256", default=None, help="expected sha256 of the archive")
    for sub in (cbis, mias):
        sub.add_argument("--retries", type=_positive, default=5, help="attempts per request")
        sub.add_argument("--timeout", type=float, default=60.0, help="socket timeout, seconds")
        sub.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    policy = RetryPolicy(attempts=args.retries, timeout=args.timeout)
    try:
        if args.dataset == "cbis-ddsm":
            report = fetch_cbis_ddsm(
                args.out, subsets=args.subset, patients=args.patients, workers=args.workers,
                base_url=args.base_url, csv_base_url=args.csv_base_url, policy=policy,
                progress=not args.no_progress,
            )  # fmt: skip
        else:
            report = fetch_mini_mias(
                args.out, url=args.url, sha256=args.sha256, policy=policy,
                progress=not args.no_progress,
            )  # fmt: skip
    except FetchError as error:
        print(f"mammo fetch: error: {error}", file=sys.stderr)
        return 1
    for name, reason in report.failed:
        print(f"mammo fetch: failed: {name}: {reason}", file=sys.stderr)
    print(f"mammo fetch {args.dataset}: {report.summary()}")
    return 0 if report.ok else 1
