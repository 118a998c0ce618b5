"""``python -m benchmarks``: run every ``bench_*.py`` module and merge their results.

Each module defines ``run(context) -> dict`` (``context``: ``work``, its scratch folder,
and ``budget_minutes``, the learning curves' training budget or None); its dict is stored
under the module's short name in ``reports/bench/bench.json`` together with the library
versions, so speed and memory targets are measured numbers, never asserted in timed tests.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

import benchmarks
from mammo_utils.versions import library_versions


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/bench.json"))
    parser.add_argument("--work", type=Path, default=Path("data/bench"),
                        help="scratch folder for generated inputs (reused between runs)")
    parser.add_argument("--only", nargs="*", default=None, help="module short names to run")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="training minutes per model for the learning curves "
                             "(default: bench_learning's own, 15)")
    args = parser.parse_args()

    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    names = sorted(
        info.name for info in pkgutil.iter_modules(benchmarks.__path__)
        if info.name.startswith("bench_")
    )
    failed = []
    for name in names:
        short = name.removeprefix("bench_")
        if args.only and short not in args.only:
            continue
        print(f"== benchmark {short}", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        started = time.perf_counter()
        try:
            results[short] = module.run({"work": args.work / short,
                                         "budget_minutes": args.budget_minutes})
        except Exception as exc:  # a failing benchmark is reported, the others still run
            failed.append(short)
            results[short] = {"error": f"{type(exc).__name__}: {exc}"}
        results[short]["wall_s"] = round(time.perf_counter() - started, 2)
        print(json.dumps(results[short], indent=2), flush=True)
    results["versions"] = library_versions()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
