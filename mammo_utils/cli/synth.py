"""``mammo synth``: generate the synthetic CBIS-DDSM data set."""

from __future__ import annotations

import argparse

from mammo_utils.cli._ranges import integer, number
from mammo_utils.synth import DEFAULT_NORMAL_FRACTION, IMAGE_SIZES, generate_dataset
from mammo_utils.workspace import Workspace

NAME = "synth"
HELP = "Generate the synthetic CBIS-DDSM data set (the default data, no download needed)."
ORDER = 10


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=None,
        help="output folder (default: data/raw/synthetic under the project folder)",
    )
    parser.add_argument("--project-dir", default=".", help="project folder (default: .)")
    parser.add_argument("--patients", type=integer(1), default=12,
                        help="number of patients (default: 12)")
    parser.add_argument("--seed", type=integer(0), default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--size",
        choices=sorted(IMAGE_SIZES),
        default="small",
        help="small: about 1024x640 per image; full: about 4000x3000 (default: small)",
    )
    parser.add_argument(
        "--normal-fraction",
        type=number(0, 1),
        default=DEFAULT_NORMAL_FRACTION,
        help=f"share of patients without abnormality (default: {DEFAULT_NORMAL_FRACTION})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a set generated with other parameters in the output folder",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    out = args.out or Workspace(args.project_dir).synthetic_dir
    summary = generate_dataset(
        out,
        patients=args.patients,
        seed=args.seed,
        size=args.size,
        normal_fraction=args.normal_fraction,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    state = "already complete, reused" if summary.reused else "generated"
    pathologies = ", ".join(f"{name} {count}" for name, count in summary.pathology_counts.items())
    print(
        f"synthetic set {state}: {summary.out}\n"
        f"  {summary.n_patients} patients, {summary.n_images} full images "
        f"({summary.n_normals} normal), {summary.n_abnormalities} abnormalities ({pathologies})"
    )
    return 0
