"""The verdict rule: which patch decides, and what label and confidence it gives.

Pure numpy over probability vectors in a model card's class order, so the rule is the
same for a live prediction and for an evaluation that replays stored probabilities.

* The *decisive patch* of a scan is the most suspicious one: the patch with the
  highest probability of any non-normal class. Its probabilities are the image's.
* The label is the most probable class and the confidence its probability, so a
  label always matches the tallest probability bar (a patch can be the most
  suspicious and still be most probably normal).
* An optional ``threshold`` makes a non-normal label demand at least that
  probability; below it the label is the normal class, the confidence the normal
  probability, and a warning names the class that fell short and its probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

#: Classes that mean "nothing suspicious" under the label schemes.
BACKGROUND_CLASSES: tuple[str, ...] = ("NORMAL", "NOT_MALIGNANT")


class Verdict(NamedTuple):
    """A label, its confidence, and a warning when a threshold changed the label."""

    label: str
    confidence: float
    warning: str | None


class VerdictRule:
    """The verdict rule for one class order and an optional threshold.

    Parameters
    ----------
    classes : sequence of str
        Class names in the model's output order.
    threshold : float, optional
        Smallest probability a non-normal label needs, in [0, 1]; ``None`` (default)
        gives the most probable class whatever its probability.
    """

    def __init__(self, classes: Sequence[str], threshold: float | None = None) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        self.classes: tuple[str, ...] = tuple(classes)
        self.threshold = None if threshold is None else float(threshold)
        #: The class meaning "nothing suspicious", or ``None`` when the order has none.
        self.background: str | None = next(
            (name for name in self.classes if name in BACKGROUND_CLASSES), None
        )
        #: Columns of the classes that count as findings (all when there is no background).
        self.suspicious: list[int] = [
            i for i, name in enumerate(self.classes) if name != self.background
        ]

    def decide(
        self, probabilities: np.ndarray, shortfall: str = "the image did not reach"
    ) -> Verdict:
        """The verdict for one probability vector.

        ``shortfall`` opens the threshold warning (e.g. "no patch reached").
        """
        index = int(np.argmax(probabilities))
        label = self.classes[index]
        if (self.threshold is None or self.background is None or label == self.background
                or probabilities[index] >= self.threshold):
            return Verdict(label, float(probabilities[index]), None)
        normal = self.classes.index(self.background)
        warning = (
            f"{shortfall} the {self.threshold:.1%} threshold for a finding: the most "
            f"suspicious class is {label} at {probabilities[index]:.1%}, so it is called "
            f"{self.background}"
        )
        return Verdict(self.background, float(probabilities[normal]), warning)

    def decisive_patch(self, patch_probabilities: np.ndarray) -> int:
        """Row of the most suspicious patch in a ``[patches, classes]`` table."""
        return int(np.argmax(patch_probabilities[:, self.suspicious].max(axis=1)))

    def suspicion(self, probabilities: np.ndarray) -> np.ndarray:
        """The highest non-normal probability along the last axis (a per-pixel map for
        ``[height, width, classes]`` class maps), as float32."""
        return probabilities[..., self.suspicious].max(axis=-1).astype(np.float32)
