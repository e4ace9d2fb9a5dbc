"""Settings of the language-model generator (``configs/generation*.yaml``)."""

from __future__ import annotations

import dataclasses

from amzqa.config import Config, doc
from amzqa.errors import ConfigError


@dataclasses.dataclass
class GenerationConfig(Config):
    """How :class:`amzqa.generation.HFGenerator` loads and runs its model."""

    model: str = doc("Causal LM folder or hub id; 'smollm2' = the provisioned SmolLM2-135M-Instruct.", "smollm2")
    adapter: str | None = doc("PEFT LoRA adapter folder (from amzqa train) applied on top of the model.", None)
    load_in_4bit: bool = doc("Load the base weights in 4-bit NF4 with double quantisation (bitsandbytes).", False)
    dtype: str = doc("Weights dtype: float32, bfloat16, float16 (GPU only), or auto = bfloat16 on a GPU and on CPUs "
                     "with native bf16 instructions (AVX512-BF16/AMX: ~2x faster prefill, same decode), else float32.",
                     "auto")
    device: str = doc("'cpu', 'cuda' or 'auto' (accelerate's device_map).", "cpu")
    max_new_tokens: int = doc("Upper bound on generated tokens; generation also stops at EOS.", 96)
    temperature: float = doc("0 = greedy decoding (default, reproducible); > 0 samples.", 0.0)
    top_p: float = doc("Nucleus sampling mass when temperature > 0.", 0.9)
    repetition_penalty: float = doc("Penalty > 1 discourages loops, common in small models.", 1.1)
    threads: int = doc("torch CPU threads (0 = torch's default).", 0)
    fast_decode: bool = doc("CPU only: decode into a growing KV cache with one-row grouped-query attention (same tokens, "
                            "~1.4x faster per token here); False = transformers' stock DynamicCache + SDPA.", True)
    calibrated_abstention: bool = doc("With an adapter (or merged model) that carries a fitted abstention threshold "
                                      "(amzqa train writes amzqa_abstention.json): abstain exactly when "
                                      "log P(abstention message) reaches it, else answer with that message suppressed. "
                                      "Costs one extra prompt pass.", True)
    weight_quant: str = doc("'int8' = weight-only int8 linear layers (CPU decoding ~1.5x faster: it is memory-bound; "
                            "LoRA matrices stay exact), 'none', or 'auto' = int8 on CPU unless load_in_4bit, none on GPU.",
                            "auto")

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("temperature must be >= 0 and top_p in (0, 1]")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ConfigError(f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be cpu, cuda or auto, got {self.device!r}")
        if self.weight_quant not in ("auto", "int8", "none"):
            raise ConfigError(f"weight_quant must be auto, int8 or none, got {self.weight_quant!r}")
        if self.weight_quant == "int8" and (self.load_in_4bit or self.device != "cpu"):
            raise ConfigError("weight_quant='int8' is a CPU kernel for full-precision weights: it cannot be combined "
                              "with load_in_4bit or a GPU device; use weight_quant='none' (or 'auto')")
        if self.dtype == "float16" and self.device == "cpu":
            raise ConfigError("float16 is not supported for CPU inference; use float32 or bfloat16")
