"""Generators behind one interface (``generate`` / ``stream``):

* :class:`HFGenerator` — transformers, the reference (training parity, GPUs; LoRA adapters, NF4);
* :class:`OpenVINOGenerator` — the in-process CPU engine (OpenVINO GenAI on an exported model), the CPU default;
* :class:`OpenAIGenerator` — a client of an OpenAI-compatible server (``amzqa serve``: vLLM or llama.cpp);
* :class:`ExtractiveGenerator` — no model: cited description sentences;
* :class:`~amzqa.generation.select.SelectingGenerator` — any scoring backend choosing a source sentence
  (``strategy: select``).
"""

from __future__ import annotations

from amzqa.generation.base import Generator
from amzqa.generation.config import GenerationConfig
from amzqa.generation.extractive import ExtractiveGenerator

__all__ = ["ExtractiveGenerator", "GenerationConfig", "Generator", "HFGenerator", "OpenAIGenerator",
           "OpenVINOGenerator", "load_generator"]
# backend name -> (module, class); imported on use only (torch, openvino, openai are heavy or optional)
_BACKENDS = {"hf": ("amzqa.generation.hf", "HFGenerator"), "openvino": ("amzqa.generation.openvino", "OpenVINOGenerator"),
             "openai": ("amzqa.generation.openai_client", "OpenAIGenerator")}
_LAZY = {cls: module for module, cls in _BACKENDS.values()}


def __getattr__(name: str):
    if name in _LAZY:  # heavy imports (torch, openvino, openai): only on use
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


def hf_available(model: str = "smollm2") -> bool:
    from amzqa.errors import AmzqaError
    from amzqa.models import resolve_model

    try:
        resolve_model(model)
        import transformers  # noqa: F401
    except (AmzqaError, ImportError):
        return False
    return True


def resolve_backend(cfg: GenerationConfig) -> str:
    """The backend ``auto`` stands for: openvino where installed and the model has an export (exact LoRA on top of
    a base needs transformers, so an adapter not yet exported uses hf), else hf where the model is there, else
    extractive."""
    if cfg.backend != "auto":
        return cfg.backend
    from amzqa.generation.openvino import find_export, openvino_available

    if openvino_available() and not cfg.adapter and find_export(cfg.model) is not None:
        return "openvino"
    return "hf" if hf_available(cfg.model) else "extractive"


def load_generator(spec: str | Generator | None = None, adapter: str | None = None, config: GenerationConfig | None = None) -> Generator:
    """A generator from a backend name (hf, openvino, openai, extractive, auto), an instance, or None (the
    config's backend, ``auto`` by default)."""
    from amzqa.errors import ConfigError
    from amzqa.generation.config import BACKENDS

    if spec is not None and not isinstance(spec, str):
        return spec
    cfg = config or GenerationConfig()
    if adapter:
        cfg = cfg.replace(adapter=str(adapter))
    if spec is not None:
        if spec not in BACKENDS:
            raise ConfigError(f"unknown generator {spec!r}; use one of {', '.join(BACKENDS)} or a Generator instance")
        cfg = cfg.replace(backend=spec)
    backend = resolve_backend(cfg)
    if backend == "extractive":
        return ExtractiveGenerator()
    import importlib

    module, cls = _BACKENDS[backend]
    generator = getattr(importlib.import_module(module), cls)(cfg)
    from amzqa.generation.select import SelectingGenerator, trained_to_select

    if cfg.strategy == "select" or trained_to_select(cfg.adapter) or trained_to_select(cfg.model):
        return SelectingGenerator(generator, cfg.select_candidates, cfg.select_sentences, cfg.select_none,
                                  cfg.select_similarity)
    return generator
