"""Settings of the language-model generator (``configs/generation*.yaml``)."""

from __future__ import annotations

import dataclasses

from amzqa.config import Config, doc
from amzqa.errors import ConfigError

BACKENDS = ("auto", "hf", "openvino", "openai", "extractive")
SERVER_KINDS = ("auto", "vllm", "llamacpp", "generic")


@dataclasses.dataclass
class GenerationConfig(Config):
    """How a generator backend loads and runs its model: ``hf`` (transformers, the reference), ``openvino`` (the
    in-process CPU engine), ``openai`` (a client of an OpenAI-compatible server such as ``amzqa serve``)."""

    backend: str = doc("'auto' = openvino where its extra is installed and the model is exported (amzqa models fetch "
                       "exports the default model; amzqa export an adapter), else hf, else extractive; or one of "
                       "hf, openvino, openai, extractive.", "auto")
    model: str = doc("Causal LM folder (an OpenVINO export for backend openvino) or hub id; 'smollm2' = the provisioned SmolLM2-135M-Instruct. (amzqa ask/app --generator openai --model NAME: "
                     "the name to request on the server, i.e. served_model.)", "smollm2")
    adapter: str | None = doc("PEFT LoRA adapter folder (from amzqa train) applied on top of the model.", None)
    chat_template: str | None = doc("Chat template used when the model's tokenizer has none: mistral, zephyr, phi3 (shipped) "
                                    "or a .jinja file, as in the training recipe (an adapter's tokenizer carries its own).", None)
    load_in_4bit: bool = doc("Load the base weights in 4-bit NF4 with double quantisation (bitsandbytes).", False)
    dtype: str = doc("Weights dtype: float32, bfloat16, float16 (GPU only), or auto = bfloat16 on a GPU and on CPUs "
                     "with native bf16 instructions (AVX512-BF16/AMX: faster prefill, same decode), else float32.",
                     "auto")
    device: str = doc("'cpu', 'cuda' or 'auto' (accelerate's device_map).", "cpu")
    strategy: str = doc("'generate' = the model writes the answer (checked sentence by sentence against its sources); "
                        "'select' = the model chooses which numbered source sentence answers, or none, and that "
                        "sentence is the answer, cited to its source (amzqa.generation.select; needs a backend that "
                        "scores: hf, openvino or a vLLM server; the extractive backend ignores it).", "generate")
    select_candidates: int = doc("strategy 'select': source sentences numbered for the model to choose from (1-8).", 8)
    select_sentences: int = doc("strategy 'select': sentences shown: the chosen one, then the next best by the fused "
                                "score whose lexical score is at least 0.6 of the best candidate's (the extractive "
                                "baseline's rule), up to this many.", 2)
    select_none: str = doc("strategy 'select': what may answer 'none of these'. 'gate' = not the model: QA's calibrated "
                           "relevance gate and the support check decide abstention (the cut on the model's log P('0'), "
                           "fitted on templated SFT questions, refused 4.5-7% of shopper-phrased answerable questions "
                           "with the demo's selector and up to 34% with better-trained ones, while the gate alone "
                           "abstained as often on absent products: docs/trust.md); 'threshold' = the model too, when "
                           "log P('0') reaches that fitted cut.", "gate")
    select_similarity: float = doc("strategy 'select': weight of each candidate's cosine (the index's MiniLM) to the "
                                   "question's asking clause, added to its lexical score before the fitted prior "
                                   "weight applies (so off for a model without a fitted prior weight, and where the index "
                                   "has no MiniLM: a static index without a re-scorer); 0 = off. 1.0 was the best of "
                                   "0-1.25 on the seven read fact-question sets (docs/trust.md).", 1.0)
    max_new_tokens: int = doc("Upper bound on generated tokens; generation also stops at EOS.", 96)
    temperature: float = doc("0 = greedy decoding (default, reproducible); > 0 samples.", 0.0)
    top_p: float = doc("Nucleus sampling mass when temperature > 0.", 0.9)
    repetition_penalty: float = doc("Penalty > 1 discourages loops, common in small models.", 1.1)
    threads: int = doc("CPU threads of the in-process backend (0 = the engine's default: all cores).", 0)
    calibrated_abstention: bool = doc("With an adapter (or merged/exported model) that carries a fitted abstention threshold "
                                      "(amzqa train writes amzqa_abstention.json): abstain exactly when "
                                      "log P(abstention message) reaches it, else answer with that message suppressed. "
                                      "Costs one extra prompt pass.", True)
    base_url: str | None = doc("backend 'openai': the server's OpenAI-compatible URL, e.g. http://127.0.0.1:8000/v1 "
                               "(amzqa serve prints it).", None)
    served_model: str | None = doc("backend 'openai': the model name to request (a LoRA adapter's name selects it); "
                                   "null = the base model the server serves.", None)
    api_key_env: str = doc("backend 'openai': environment variable holding the API key (unset = no key).", "OPENAI_API_KEY")
    timeout_s: float = doc("backend 'openai': seconds to wait for the server (connect, and between streamed pieces) "
                           "before failing with an error naming the URL and model.", 60.0)
    max_retries: int = doc("backend 'openai': retries of a failed request that has not started streaming "
                           "(connection errors, 5xx, 429), with backoff.", 2)
    server_kind: str = doc("backend 'openai': the engine that answers, which decides the request's features: vllm "
                           "(repetition_penalty, the abstention ban, calibrated abstention and evidence selection from "
                           "log-probabilities), llamacpp (repeat_penalty), generic (plain OpenAI parameters only), or "
                           "auto = from /v1/models' owned_by (vllm or llamacpp; anything else is generic, with a "
                           "warning). Behind a proxy such as LiteLLM (owned_by 'openai') name the engine behind it "
                           "(for vllm the proxy must pass /tokenize and vLLM's extra parameters through, or requests "
                           "fail with an error).",
                           "auto")

    def __post_init__(self) -> None:
        if self.strategy not in ("generate", "select"):
            raise ConfigError(f"strategy must be generate or select, got {self.strategy!r}")
        if not 1 <= self.select_candidates <= 8:
            raise ConfigError("select_candidates must be between 1 and 8")
        if self.select_none not in ("gate", "threshold"):
            raise ConfigError(f"select_none must be gate or threshold, got {self.select_none!r}")
        if self.select_similarity < 0:
            raise ConfigError("select_similarity must be 0 or more")
        if self.select_sentences < 1:
            raise ConfigError("select_sentences must be at least 1")
        if self.max_new_tokens < 1:
            raise ConfigError("max_new_tokens must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("temperature must be >= 0 and top_p in (0, 1]")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ConfigError(f"dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be cpu, cuda or auto, got {self.device!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "openai" and not self.base_url:
            raise ConfigError("backend 'openai' needs base_url (e.g. http://127.0.0.1:8000/v1; amzqa serve prints it)")
        if self.server_kind not in SERVER_KINDS:
            raise ConfigError(f"server_kind must be one of {', '.join(SERVER_KINDS)}, got {self.server_kind!r}")
        if self.timeout_s <= 0 or self.max_retries < 0:
            raise ConfigError("timeout_s must be > 0 and max_retries >= 0")
        if self.threads < 0:
            raise ConfigError("threads must be >= 0")
        if self.dtype == "float16" and self.device == "cpu":
            raise ConfigError("float16 is not supported for CPU inference; use float32 or bfloat16")
