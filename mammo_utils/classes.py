"""The one canonical class tuple and the label schemes derived from it.

Every other module takes its class names and their order from here, so a label
can never be mapped to the wrong output unit. A trained model records the order
it was trained with in its model card; inference reads it from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Canonical classes, ordered by severity (least to most severe).
CLASSES: tuple[str, ...] = ("NORMAL", "BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT")

#: Each scheme maps a canonical class to the scheme's class; the scheme's class
#: order is the order of first appearance when walking CLASSES.
_SCHEME_MAPS: dict[str, dict[str, str]] = {
    "four_class": {name: name for name in CLASSES},
    "three_class": {
        "NORMAL": "NORMAL",
        "BENIGN_WITHOUT_CALLBACK": "BENIGN",
        "BENIGN": "BENIGN",
        "MALIGNANT": "MALIGNANT",
    },
    "malignant_vs_rest": {
        "NORMAL": "NOT_MALIGNANT",
        "BENIGN_WITHOUT_CALLBACK": "NOT_MALIGNANT",
        "BENIGN": "NOT_MALIGNANT",
        "MALIGNANT": "MALIGNANT",
    },
}

LABEL_SCHEMES: tuple[str, ...] = tuple(_SCHEME_MAPS)

#: Spellings seen in data sets and user folders, keyed by their normalized form.
_ALIASES: dict[str, str] = {
    "NORMAL": "NORMAL",
    "NORM": "NORMAL",
    "BENIGNWITHOUTCALLBACK": "BENIGN_WITHOUT_CALLBACK",
    "BENIGNNOCALLBACK": "BENIGN_WITHOUT_CALLBACK",
    "BWC": "BENIGN_WITHOUT_CALLBACK",
    "BENIGN": "BENIGN",
    "B": "BENIGN",
    "MALIGNANT": "MALIGNANT",
    "MALIGN": "MALIGNANT",
    "M": "MALIGNANT",
    "CANCER": "MALIGNANT",
}


class UnknownLabelError(ValueError):
    """A label text that matches none of the canonical classes."""


def _check_scheme(scheme: str) -> dict[str, str]:
    try:
        return _SCHEME_MAPS[scheme]
    except KeyError:
        raise ValueError(
            f"unknown label scheme {scheme!r}; choose one of {', '.join(LABEL_SCHEMES)}"
        ) from None


def scheme_classes(scheme: str = "four_class") -> tuple[str, ...]:
    """Class names of a label scheme, in the output order a model trained on it uses."""
    mapping = _check_scheme(scheme)
    return tuple(dict.fromkeys(mapping[name] for name in CLASSES))


def map_label(label: str, scheme: str = "four_class") -> str:
    """Map a canonical class name to its class under ``scheme``."""
    mapping = _check_scheme(scheme)
    if label not in mapping:
        raise UnknownLabelError(f"{label!r} is not one of the canonical classes {CLASSES}")
    return mapping[label]


def normalize_label(text: str) -> str:
    """Match free text (a folder name, a CSV cell) to a canonical class.

    Case, spaces, hyphens and underscores are ignored, so ``Benign_Without_Callback``
    and ``benign-no-callback`` both give ``BENIGN_WITHOUT_CALLBACK``.
    """
    key = re.sub(r"[\s_\-]+", "", str(text)).upper()
    try:
        return _ALIASES[key]
    except KeyError:
        raise UnknownLabelError(
            f"{text!r} does not name a class; expected one of {', '.join(CLASSES)}"
        ) from None


def most_severe(labels: Iterable[str]) -> str:
    """The most severe of canonical class names (``MALIGNANT`` > ``BENIGN`` > ...)."""
    ranked = [CLASSES.index(label) for label in labels]
    if not ranked:
        raise ValueError("most_severe() needs at least one label")
    return CLASSES[max(ranked)]


def check_class_order(classes: Iterable[str], label_scheme: str) -> tuple[str, ...]:
    """``classes`` as a tuple when it is a permutation of ``label_scheme``'s classes.

    Raises ``ValueError`` naming the duplicated, missing and unknown class names, so a
    card or a training run can never have two units for one class or a class without one.
    """
    expected = scheme_classes(label_scheme)
    order = tuple(str(name) for name in classes)
    duplicated = sorted({name for name in order if order.count(name) > 1})
    missing = [name for name in expected if name not in order]
    unknown = [name for name in order if name not in expected]
    if duplicated or missing or unknown:
        problems = [f"{what} {', '.join(names)}" for what, names in
                    (("duplicated", duplicated), ("missing", missing), ("unknown", unknown))
                    if names]
        raise ValueError(
            f"classes {list(order)} are not an order of the {label_scheme} classes "
            f"{list(expected)}: {'; '.join(problems)}"
        )
    return order
