"""What pip installs: one top-level package, ``amzqa``, with the repository's indexing/, training/ and apps/ inside it
(pyproject.toml's package-dir), its data files, and a page that ``amzqa app`` serves from any folder. The editable
install (``make``'s) is what every other test runs on; here a wheel is built and used without it."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port, wait_for_page

MAPPED = {"amzqa.indexing": "indexing", "amzqa.training": "training", "amzqa.apps": "apps"}


def test_the_package_list_names_every_package_folder():
    """pyproject.toml lists the packages (the mapped folders cannot be found by name): a new subpackage missing from
    the list would be left out of every wheel."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == MAPPED
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "amzqa").rglob("__init__.py")}
    for name, folder in MAPPED.items():
        folders |= {name + "".join(f".{x}" for x in p.parent.relative_to(ROOT / folder).parts)
                    for p in (ROOT / folder).rglob("__init__.py")}
    assert set(tool["packages"]) == folders


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(out)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("amzqa-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:  # a pure-Python wheel: unpacking it is installing it
        names = z.namelist()
        z.extractall(site)
    return site, names


def test_the_wheel_puts_only_amzqa_at_the_top(wheel_site):
    _, names = wheel_site
    assert {n.split("/")[0] for n in names} == {"amzqa", next(n.split("/")[0] for n in names if ".dist-info/" in n)}
    for needed in ("amzqa/indexing/build.py", "amzqa/training/train.py", "amzqa/apps/streamlit_app.py",
                   "amzqa/indexing/sample/trn.json", "amzqa/indexing/sample/fact_questions.jsonl",
                   "amzqa/generation/chat_templates/zephyr.jinja"):
        assert needed in names


def _env(site: Path, **extra) -> dict:
    # The wheel's amzqa first on the path: the editable install's finder only answers what the path does not.
    return dict(os.environ, PYTHONPATH=str(site), **extra)


def test_amzqa_app_serves_the_page_from_the_wheel_in_another_folder(wheel_site, sample_artifacts, tmp_path):
    site, _ = wheel_site
    env = _env(site, AMZQA_ARTIFACTS=str(sample_artifacts),
               AMZQA_GENERATION='{"backend": "extractive", "adapter": "%s"}' % (sample_artifacts / "no-adapter"))
    where = subprocess.run([sys.executable, "-c", "import amzqa.apps, amzqa.indexing; print(amzqa.apps.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site)
    # The page script itself, as Streamlit runs it, from the wheel.
    page = ("from streamlit.testing.v1 import AppTest; import amzqa.apps, pathlib; "
            "at = AppTest.from_file(str(pathlib.Path(amzqa.apps.__file__).parent / 'streamlit_app.py'), "
            "default_timeout=120); at.run(); assert not at.exception, at.exception; print(len(at.markdown))")
    proc = subprocess.run([sys.executable, "-c", page], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # And amzqa app: the server comes up from this folder, with no working-directory change.
    port = free_port()
    app = subprocess.Popen([sys.executable, "-m", "amzqa", "app", "--artifacts", str(sample_artifacts), "--port",
                            str(port), "--address", "127.0.0.1", "--generator", "extractive"], cwd=tmp_path, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_page(port, app)
    finally:
        app.terminate()
        app.wait(timeout=60)
