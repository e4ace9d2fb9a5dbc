"""The import graph: the layers and the absence of circles are import-linter contracts in pyproject.toml, checked
here (``make lint`` runs this file too, so ``make test`` and CI hold them). The contracts must see lazy imports inside
functions: a lazy back-edge is still a back-edge.

import-linter reads a package from one folder, so it is given the installed layout: amzqa/ with the repository's
indexing/, training/ and apps/ inside it, as pip installs them (pyproject.toml's package-dir)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = "-> foundations BROKEN"  # the end of the layers contract's name, as lint-imports reports it
CIRCLES = "no import circles between the modules of a package BROKEN"
MAPPED = ("indexing", "training", "apps")  # repository folders installed as amzqa.<name>


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The console script of the installed import-linter, with the tree at ``root`` first on the path.
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", str(root / "pyproject.toml")], cwd=root,
                          capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


def installed_layout(dest: Path) -> Path:
    skip = shutil.ignore_patterns("__pycache__", "sample")
    shutil.copytree(ROOT / "amzqa", dest / "amzqa", ignore=skip)
    for name in MAPPED:
        shutil.copytree(ROOT / name, dest / "amzqa" / name, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", dest)
    return dest


def test_the_import_contracts_hold(tmp_path):
    proc = lint_imports(installed_layout(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 kept, 0 broken" in proc.stdout


@pytest.fixture()
def tree(tmp_path):
    return installed_layout(tmp_path)


def _append(path: Path, code: str) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


@pytest.mark.parametrize("module, code, broken", [
    # a foundation module reaching up to a shell inside a function
    ("amzqa/grounding/text.py", "def _late():\n    from amzqa.cli.main import main\n    return main", LAYERS),
    # the evaluation reaching up to build time
    ("amzqa/evaluation/metrics.py", "def _late():\n    import amzqa.training.train\n    return amzqa", LAYERS),
    # two packages of one layer importing each other (generation imports retrieval's embedder)
    ("amzqa/retrieval/dense.py", "def _late():\n    from amzqa.generation import hf\n    return hf", CIRCLES),
    # a new module of amzqa that no layer names
    ("amzqa/newthing.py", "X = 1", "amzqa.newthing"),
])
def test_a_planted_violation_breaks_a_contract(tree, module, code, broken):
    path = tree / module
    if path.exists():
        _append(path, code)
    else:
        path.write_text(code + "\n", encoding="utf-8")
    proc = lint_imports(tree)
    assert proc.returncode != 0, proc.stdout
    assert broken in proc.stdout, proc.stdout
