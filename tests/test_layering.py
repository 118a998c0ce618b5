"""The layering of docs/architecture.md is a checked contract, and the two agree."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout


def test_architecture_document_lists_the_checked_layers():
    """docs/architecture.md shows the layers contract verbatim, top layer first."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"```text\n# layers, top to bottom\n(.*?)```", text, re.DOTALL)
    assert block, "docs/architecture.md has no '# layers, top to bottom' block"
    assert block.group(1).strip().splitlines() == layers


def test_every_top_level_module_is_in_the_architecture_table():
    text = (ROOT / "docs" / "architecture.md").read_text()
    modules = {path.stem if path.is_file() else path.name
               for path in (ROOT / "mammo_utils").iterdir()
               if (path.suffix == ".py" or (path / "__init__.py").is_file())
               and not path.name.startswith("__")}
    documented = set(re.findall(r"^\| `(\w+)/?` \|", text, re.MULTILINE))
    assert modules == documented


def test_notebooks_never_import_the_report_runner_or_the_cli():
    """papermill runs the notebooks; what it runs must not import the runner back."""
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
        assert not re.search(r"mammo_utils(\.report|\.cli)\b", code), notebook.name


#: File names that are contracts between stages (what one writes and another reads).
CONTRACT_FILE = re.compile(
    r"""["'](?:model\.keras|(?:model_card|preprocess_config|metrics|status|versions)\.json"""
    r"""|(?:manifest|index|lesions|rejects|history|predictions|comparison|reconciliation"""
    r"""|dicom_headers)\.csv)["']"""
)


def test_each_contract_file_name_is_typed_once():
    """One owner per contract: the owning module names the file, everyone else imports it."""
    sources = [*(ROOT / "mammo_utils").rglob("*.py"), *(ROOT / "benchmarks").glob("*.py"),
               *(ROOT / "notebooks").glob("*.ipynb")]
    seen: dict[str, list[str]] = {}
    for path in sources:
        for match in CONTRACT_FILE.finditer(path.read_text(encoding="utf-8")):
            seen.setdefault(match.group(0).strip("\"'"), []).append(path.name)
    repeated = {name: places for name, places in seen.items() if len(places) > 1}
    assert not repeated
    assert len(seen) == 15  # every name above has its one owner
