"""The import graph: the layers (shells -> build time -> evaluation -> query-time core) and the absence of circles
are import-linter contracts in pyproject.toml, checked by ``make lint`` and here, so ``make test`` and CI hold them
too. The contracts must see lazy imports inside functions: a lazy back-edge is still a back-edge."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("amzqa", "indexing", "training", "apps")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The console script of the installed import-linter, with the tree at ``root`` first on the path.
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def test_the_import_contracts_hold():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.fixture()
def tree(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "sample"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


@pytest.mark.parametrize("module, code, broken", [
    # a core module reaching up to a shell inside a function
    ("amzqa/text.py", "def _late():\n    from amzqa.cli import main\n    return main", "query-time core"),
    # the evaluation reaching up to build time
    ("amzqa/evaluation/metrics.py", "def _late():\n    import training.train\n    return training", "query-time core"),
    # two core modules importing each other
    ("amzqa/citations.py", "def _late():\n    from amzqa import pipeline\n    return pipeline", "no import circles"),
    # a new module of amzqa that no layer names
    ("amzqa/newthing.py", "X = 1", "every module of amzqa belongs to a layer"),
])
def test_a_planted_violation_breaks_a_contract(tree, module, code, broken):
    path = tree / module
    if path.exists():
        _append(path, code)
    else:
        path.write_text(code + "\n", encoding="utf-8")
    proc = lint_imports(tree)
    assert proc.returncode != 0, proc.stdout
    assert f"{broken}" in proc.stdout and "BROKEN" in proc.stdout, proc.stdout
