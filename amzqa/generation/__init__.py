"""Generators: :class:`HFGenerator` (transformers LM, optional LoRA / NF4) and :class:`ExtractiveGenerator`."""

from __future__ import annotations

from amzqa.generation.base import Generator
from amzqa.generation.config import GenerationConfig
from amzqa.generation.extractive import ExtractiveGenerator

__all__ = ["ExtractiveGenerator", "GenerationConfig", "Generator", "HFGenerator", "load_generator"]


def __getattr__(name: str):
    if name == "HFGenerator":  # imports torch/transformers: only on use
        from amzqa.generation.hf import HFGenerator

        return HFGenerator
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


def load_generator(spec: str | Generator | None = None, adapter: str | None = None, config: GenerationConfig | None = None) -> Generator:
    """A generator from a name ("hf", "extractive"), an instance, or None (hf when available, else extractive)."""
    from amzqa.errors import ConfigError

    if spec is not None and not isinstance(spec, str):
        return spec
    cfg = config or GenerationConfig()
    if adapter:
        cfg = cfg.replace(adapter=str(adapter))
    if spec is None:
        spec = "hf" if hf_available(cfg.model) else "extractive"
    if spec == "hf":
        from amzqa.generation.hf import HFGenerator

        return HFGenerator(cfg)
    if spec == "extractive":
        return ExtractiveGenerator()
    raise ConfigError(f"unknown generator {spec!r}; use 'hf', 'extractive' or a Generator instance")
