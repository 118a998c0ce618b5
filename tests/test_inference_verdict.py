"""The verdict rule on toy probability tables: decisive patch, label, threshold."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mammo_utils.classes import CLASSES
from mammo_utils.inference.verdict import Verdict, VerdictRule

#: Rows are patches, columns CLASSES (NORMAL, BENIGN_WITHOUT_CALLBACK, BENIGN, MALIGNANT).
TABLE = np.array([
    [0.90, 0.04, 0.03, 0.03],  # clearly normal
    [0.30, 0.35, 0.35, 0.00],  # argmax non-normal, but less suspicious ...
    [0.50, 0.00, 0.05, 0.45],  # ... than this one, which is still most probably normal
    [0.23, 0.25, 0.204, 0.316],  # a weak finding
])


def test_the_most_suspicious_patch_decides_and_its_top_class_is_the_label():
    rule = VerdictRule(CLASSES)
    assert rule.background == "NORMAL" and rule.suspicious == [1, 2, 3]
    assert rule.decisive_patch(TABLE[:3]) == 2
    assert rule.decide(TABLE[2]) == Verdict("NORMAL", 0.5, None)
    assert rule.decisive_patch(TABLE) == 2
    assert rule.decide(TABLE[3]) == ("MALIGNANT", 0.316, None)
    assert rule.suspicion(TABLE).tolist() == pytest.approx([0.04, 0.35, 0.45, 0.316])


def test_threshold_turns_a_weak_finding_normal_and_says_why():
    rule = VerdictRule(CLASSES, threshold=0.5)
    label, confidence, warning = rule.decide(TABLE[3], "no patch reached")
    assert (label, confidence) == ("NORMAL", 0.23)
    assert warning == ("no patch reached the 50.0% threshold for a finding: the most "
                       "suspicious class is MALIGNANT at 31.6%, so it is called NORMAL")
    assert rule.decide(TABLE[0]) == ("NORMAL", 0.9, None)  # normal needs no threshold
    assert VerdictRule(CLASSES, threshold=0.3).decide(TABLE[3]).label == "MALIGNANT"
    assert VerdictRule(CLASSES, threshold=1.0).decide(np.array([0, 0, 0, 1.0])).label \
        == "MALIGNANT"
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="threshold must lie in"):
            VerdictRule(CLASSES, threshold=bad)


def test_scheme_background_and_orders_without_one():
    rule = VerdictRule(["MALIGNANT", "NOT_MALIGNANT"], threshold=0.9)
    assert rule.background == "NOT_MALIGNANT" and rule.suspicious == [0]
    label, confidence, warning = rule.decide(np.array([0.6, 0.4]))
    assert (label, confidence) == ("NOT_MALIGNANT", 0.4) and "MALIGNANT at 60.0%" in warning
    # No background class: every class is a finding and no threshold can apply.
    plain = VerdictRule(["BENIGN", "MALIGNANT"], threshold=0.9)
    assert plain.background is None and plain.suspicious == [0, 1]
    assert plain.decisive_patch(np.array([[0.6, 0.4], [0.05, 0.95]])) == 1
    assert plain.decide(np.array([0.6, 0.4])) == ("BENIGN", 0.6, None)


def test_the_rule_is_pure_numpy():
    code = ("import sys, mammo_utils.inference.verdict; "
            "print([m for m in ('tensorflow', 'keras') if m in sys.modules])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == "[]"
