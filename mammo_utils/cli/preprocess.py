"""``mammo preprocess``: crops (``image``), patches (``roi``) or paired CC and MLO views
(``breast``) as 16-bit PNGs + manifest.

Exit status: 0 when every image and lesion gave its outputs; 1 when anything was
rejected (listed in ``rejects.csv``; ``--allow-rejects`` accepts a run with rejects as
long as it wrote something) and always when nothing was written; 130 when Ctrl-C or
SIGTERM stopped the run (its workers with it; rerun to resume).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from mammo_utils.cli._ranges import integer

NAME = "preprocess"
HELP = "Crop, flip and cut mammograms into 16-bit PNGs with a manifest (resumable)."
ORDER = 30


def configure(parser: argparse.ArgumentParser) -> None:
    from mammo_utils.preprocess import PreprocessConfig
    from mammo_utils.preprocess.config import SINGLE_VIEW_OPTIONS, TASKS

    defaults = PreprocessConfig()
    parser.add_argument("--index", type=Path, required=True, help="ingest index.csv")
    parser.add_argument("--lesions", type=Path, default=None,
                        help="lesions.csv for the roi task (default: beside the index)")
    parser.add_argument("--task", choices=TASKS, default=defaults.task,
                        help="roi: patches; image: whole breasts; breast: the CC and MLO of "
                        "each breast paired, for two-view models")
    parser.add_argument("--single-view", choices=SINGLE_VIEW_OPTIONS,
                        default=defaults.single_view,
                        help="breast task: a breast with one view is excluded (and rejected) "
                        "or given its view as both CC and MLO; recorded for the model "
                        f"(default: {defaults.single_view})")
    parser.add_argument("--size", type=integer(8), default=defaults.size,
                        help="patch (roi) or image side in pixels")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--workers", type=integer(1), default=1, help="worker processes")
    parser.add_argument("--working-size", default="x".join(map(str, defaults.working_size)),
                        help="HEIGHTxWIDTH the breast is fitted to before cutting patches")
    parser.add_argument("--normal-per-image", type=integer(0), default=defaults.normal_per_image,
                        help="NORMAL patches drawn from each image (roi)")
    parser.add_argument("--patches-per-lesion", type=integer(1),
                        default=defaults.patches_per_lesion,
                        help="jittered patches cut around each abnormality (roi)")
    parser.add_argument("--jitter", type=integer(0), default=None,
                        help="largest lesion-centre shift in working pixels (default size/8)")
    parser.add_argument("--seed", type=integer(0), default=defaults.seed)
    parser.add_argument("--wait", action="store_true",
                        help="wait for another run writing the same output folder to end "
                        "(default: fail at once, naming its process id)")
    parser.add_argument("--allow-rejects", action="store_true",
                        help="exit 0 although images or lesions were rejected (a run that "
                        "wrote nothing still fails)")


def _interrupt(signum, frame) -> None:
    """SIGTERM ends a run as Ctrl-C does: workers stopped, finished images kept."""
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    from mammo_utils.ingest import REJECTS_FILE
    from mammo_utils.preprocess import PreprocessConfig, parse_working_size, run_preprocess

    config = PreprocessConfig(
        task=args.task, size=args.size, working_size=parse_working_size(args.working_size),
        normal_per_image=args.normal_per_image, patches_per_lesion=args.patches_per_lesion,
        jitter=args.jitter, seed=args.seed, single_view=args.single_view,
    )
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if in_main_thread else None
    try:
        result = run_preprocess(
            args.index, args.out, config, lesions=args.lesions, workers=args.workers,
            wait_for_lock=args.wait,
        )
    except KeyboardInterrupt:
        print(f"mammo preprocess: interrupted; the images finished so far are kept in "
              f"{args.out}; run the same command again to resume", file=sys.stderr)
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(result.summary())
    rejects = result.out_dir / REJECTS_FILE
    if result.manifest.empty:
        print(f"mammo preprocess: error: nothing was written; {len(result.rejects)} rejects "
              f"in {rejects}", file=sys.stderr)
        return 1
    if len(result.rejects) and not args.allow_rejects:
        print(f"mammo preprocess: error: {len(result.rejects)} rejects "
              f"({result.images_rejected} of {result.images_in} images), listed in {rejects}; "
              "--allow-rejects accepts them", file=sys.stderr)
        return 1
    return 0
