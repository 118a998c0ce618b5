"""Range-checked argument types: a number out of range stops the command before any work,
with one ``mammo COMMAND: error: argument --NAME: ...`` line naming the argument.

Used as ``parser.add_argument("--workers", type=integer(1))``; argparse turns the
``ArgumentTypeError`` into that line and exit status 2.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def integer(least: int, most: int | None = None) -> Callable[[str], int]:
    """An ``int`` argument type accepting ``least <= value`` (``<= most`` when given)."""
    rule = f">= {least}" if most is None else f"in [{least}, {most}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {rule}, got {text!r}") from None
        if value < least or (most is not None and value > most):
            raise argparse.ArgumentTypeError(f"must be an integer {rule}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def number(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A finite ``float`` argument type within ``low``..``high`` (ends open when asked)."""
    rule = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if high == math.inf:
        rule = f"{'>' if low_open else '>='} {low}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number {rule}, got {text!r}") from None
        inside = (
            math.isfinite(value)
            and (value > low if low_open else value >= low)
            and (value < high if high_open else value <= high)
        )
        if not inside:
            raise argparse.ArgumentTypeError(f"must be a number {rule}, got {text}")
        return value

    parse.__name__ = "number"
    return parse
