"""The ``mammo`` command line: a thin face over the stage functions.

Each subcommand lives in its own module in this package and defines

* ``NAME`` (the subcommand), ``HELP`` (one line) and ``ORDER`` (its place in ``--help``),
* ``configure(parser)`` adding its arguments,
* ``run(args) -> int`` calling into ``mammo_utils`` and returning the exit status.

Modules are discovered, so ``mammo --help`` lists exactly the subcommands that exist.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence


def _command_modules() -> list:
    modules = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(modules, key=lambda module: (module.ORDER, module.NAME))


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one subparser per discovered command module."""
    parser = argparse.ArgumentParser(
        prog="mammo",
        description="Mammography research workbench: synthesize, ingest, preprocess, "
        "train, evaluate, predict and report.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _command_modules():
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(sub)
        sub.set_defaults(handler=module.run)
    return parser


def _is_user_facing(error: Exception) -> bool:
    """Errors that describe bad input or a missing resource, not a bug: data and usage
    errors (``ValueError``, ``OSError``) and the package's own ``RuntimeError`` kinds
    (a model folder that disagrees with its card, weights that cannot be had, ...)."""
    if isinstance(error, (ValueError, OSError)):
        return True
    return isinstance(error, RuntimeError) and type(error).__module__.startswith("mammo_utils.")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mammo`` console script.

    Bad input ends in one ``mammo COMMAND: error: ...`` line and exit status 1; any
    other exception is a bug and keeps its traceback.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except Exception as error:
        if not _is_user_facing(error):
            raise
        print(f"mammo {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
