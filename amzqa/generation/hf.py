"""A transformers causal LM as a :class:`~amzqa.generation.base.Generator`.

Stock transformers (no subclassing of its internals): the reference backend for training parity and for GPUs.
Optional PEFT LoRA adapter, optional 4-bit NF4 base (bitsandbytes), greedy by default, token streaming.
The default model is the provisioned SmolLM2-135M-Instruct; on a GPU box the same class loads
``mistralai/Mistral-7B-Instruct-v0.3`` plus our adapter (``device="auto"``, ``dtype="bfloat16"``).
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from amzqa.errors import ArtifactError, ConfigError
from amzqa.generation.abstention import abstention_opening, decide, load_threshold, stop_ids, stream_text
from amzqa.generation.chat import ensure_chat_template
from amzqa.generation.config import GenerationConfig
from amzqa.generation.prompt import ABSTAIN_MESSAGE, Prompt, render
from amzqa.io.layout import ADAPTER_PROVENANCE
from amzqa.models import resolve_model

log = logging.getLogger(__name__)
__all__ = ["HFGenerator", "check_adapter", "resolve_dtype"]


def check_adapter(adapter: str | Path, base_path: str) -> dict:
    """Refuse an adapter trained on another base model (its provenance records the base's fingerprint)."""
    from amzqa.retrieval.embedding import model_fingerprint

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        if (adapter / "config.json").is_file():
            raise ArtifactError(f"{adapter} is a whole model (a full fine-tune or a merge), not a LoRA adapter: pass it "
                                "as the model (GenerationConfig.model, --model), not as the adapter")
        raise ArtifactError(f"{adapter}: not a LoRA adapter folder (no adapter_config.json); train one with amzqa train")
    prov_path = adapter / ADAPTER_PROVENANCE
    if not prov_path.is_file():
        log.warning("%s has no %s: cannot check which base model it was trained on", adapter, ADAPTER_PROVENANCE)
        return {}
    prov = json.loads(prov_path.read_text())
    from amzqa.generation.prompt import template_fingerprint

    trained_on = prov.get("data", {}).get("prompt", {}).get("template")
    if trained_on != template_fingerprint():
        log.warning("%s was trained on another prompt format (template %s, now %s): its answers may cite poorly; "
                    "rebuild the SFT data and retrain", adapter, trained_on or "unrecorded", template_fingerprint())
    if Path(base_path).is_dir():
        got = model_fingerprint(base_path)
        if prov.get("base_fingerprint") and prov["base_fingerprint"] != got:
            raise ArtifactError(f"{adapter} was trained on {prov.get('base_model')!r} (fingerprint {prov['base_fingerprint']}), "
                                f"not on {base_path} (fingerprint {got})")
    return prov


def label_ids(tokenizer, labels: list[str]) -> list[int]:
    """The token id of each label, which must be one token (as it starts an answer)."""
    out = []
    for label in labels:
        ids = tokenizer(label, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ConfigError(f"label {label!r} is {len(ids)} tokens for this tokenizer; evidence selection needs one")
        out.append(ids[0])
    return out


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 matmuls natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow.
    False too where torch was told to use AVX2 kernels only (``ATEN_CPU_CAPABILITY=avx2``: the AVX2 machine stand-in)."""
    import torch

    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, p, lambda: False)() for p in probes)


def resolve_dtype(name: str, device: str):
    """The torch dtype for a config's ``dtype``; ``auto`` picks bf16 where it is fast (GPU, native-bf16 CPU)."""
    import torch

    if name == "auto":
        name = "bfloat16" if device != "cpu" or cpu_has_native_bf16() else "float32"
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def logits_processors(cfg: GenerationConfig):
    """transformers' processors for a config (repetition penalty, temperature, top-p): shared with the OpenVINO
    backend, which chooses the answer's opening itself."""
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if cfg.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(cfg.repetition_penalty))
    if cfg.temperature > 0:
        procs.extend([TemperatureLogitsWarper(cfg.temperature), TopPLogitsWarper(cfg.top_p)])
    return procs


class OpeningBan:
    """A logits processor that bans the ``seconds`` right after one of the ``firsts`` at the answer's opening only (a
    prompt of ``prompt_len`` tokens): the abstention message's opening in any spelling (``abstention_opening``).
    Mid-answer "The catalog ..." stays allowed, as in the OpenVINO backend, which picks the opening itself."""

    def __init__(self, prompt_len: int, firsts: frozenset[int], seconds: frozenset[int]) -> None:
        self.prompt_len, self.firsts, self.seconds = prompt_len, firsts, sorted(seconds)

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.prompt_len + 1 and int(input_ids[0, -1]) in self.firsts:
            scores[:, self.seconds] = -float("inf")
        return scores


class HFGenerator:
    name = "hf"

    def __init__(self, config: GenerationConfig | None = None, **overrides) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from amzqa.progress import quiet_transformers

        quiet_transformers()
        self.config = cfg = (config or GenerationConfig()).replace(**overrides) if overrides else (config or GenerationConfig())
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("device='cuda' but no CUDA GPU is available; use device='cpu'")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.path = resolve_model(cfg.model)
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.adapter if cfg.adapter and Path(cfg.adapter, "tokenizer.json").is_file() else self.path)
        ensure_chat_template(self.tokenizer, cfg.chat_template)  # refuses a model with none, naming the setting
        self.dtype = resolve_dtype(cfg.dtype, cfg.device)
        kwargs: dict = {"dtype": self.dtype}
        if cfg.load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=self.dtype)
        if cfg.device != "cpu":  # placed while loading: a 4-bit model cannot be moved afterwards
            kwargs["device_map"] = "auto" if cfg.device == "auto" else {"": torch.cuda.current_device()}
        model = AutoModelForCausalLM.from_pretrained(self.path, **kwargs)
        self.adapter_provenance: dict = {}
        if cfg.adapter:
            from peft import PeftModel

            self.adapter_provenance = check_adapter(cfg.adapter, self.path)
            model = PeftModel.from_pretrained(model, cfg.adapter)
        self.model = model.eval()
        self.stop_ids = stop_ids(self.tokenizer, self.path)
        self.device = next(self.model.parameters()).device
        # Beside the adapter, or in a merged model's folder (amzqa merge copies it there).
        self.abstain_threshold = load_threshold(cfg.adapter or self.path) if cfg.calibrated_abstention else None
        # Suppressing the message's opening keeps the answer from starting it ("The" alone is a fine start).
        self._abstain_start = abstention_opening(self.tokenizer)
        # Held for one forward pass at a time, never across a yield: an abandoned stream cannot block other askers,
        # and two askers never run torch's thread pool twice over on the same cores.
        self._lock = threading.Lock()

    def _encode(self, prompt: Prompt):
        text = render(self.tokenizer, prompt)
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        return {k: v.to(self.device) for k, v in enc.items()}

    def _gen_kwargs(self) -> dict:
        cfg = self.config
        kw = {"max_new_tokens": cfg.max_new_tokens, "repetition_penalty": cfg.repetition_penalty,
              "eos_token_id": sorted(self.stop_ids),
              "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id}
        if cfg.temperature > 0:
            kw.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p, top_k=None)  # as logits_processors
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kw

    def abstains(self, prompt: Prompt) -> bool | None:
        """The calibrated decision (True = abstain), or None where the model decides while generating."""
        return decide(self, prompt)

    def generate(self, prompt: Prompt) -> str:
        import torch

        decision = self.abstains(prompt)
        if decision:
            return ABSTAIN_MESSAGE
        kwargs = self._gen_kwargs()
        enc = self._encode(prompt)
        if decision is False:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([OpeningBan(enc["input_ids"].shape[1], *self._abstain_start)])
        with self._lock, torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        # generate() keeps the stop token it ended on, which a listed end-of-turn id need not be a special token
        new = list(itertools.takewhile(lambda t: t not in self.stop_ids, new))
        return self.tokenizer.decode(new, skip_special_tokens=True).strip()

    def answer_logprob(self, prompt: Prompt, answer: str) -> float:
        """log P(answer | prompt) under the model, teacher-forced (e.g. how ready it is to abstain)."""
        import torch

        enc = self._encode(prompt)
        ans = self.tokenizer(answer, return_tensors="pt", add_special_tokens=False)["input_ids"].to(self.device)
        ids = torch.cat([enc["input_ids"], ans], dim=1)
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=ids).logits[0, enc["input_ids"].shape[1] - 1:-1].float()
        return float(torch.log_softmax(logits, -1).gather(1, ans[0][:, None]).sum())

    def first_token_logprobs(self, prompt: Prompt, labels: list[str]) -> list[float]:
        """log P(label | prompt) of single-token labels, from one pass (evidence selection's constrained choice)."""
        import torch

        ids = label_ids(self.tokenizer, labels)
        enc = self._encode(prompt)
        with self._lock, torch.inference_mode():
            logits = self.model(**enc, logits_to_keep=1).logits[0, -1].float()
        logp = torch.log_softmax(logits, -1)
        return [float(logp[i]) for i in ids]

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """Yield text pieces as tokens are decoded, in the caller's thread.

        Kept over ``generate`` + a streamer thread: that thread holds the model's lock for the whole answer, so a
        stream a client stopped reading (without closing it) blocks every other asker until its last token; this
        loop holds the lock for one step at a time, stops with its consumer, and gives exactly ``generate``'s
        greedy tokens (both tested in tests/test_generation.py).
        """
        decision = self.abstains(prompt)
        if decision:
            yield ABSTAIN_MESSAGE
            return
        yield from stream_text(self.tokenizer, self._decode(self._encode(prompt), suppress_abstention=decision is False),
                               self.stop_ids)

    def _processors(self, prompt_len: int, suppress_abstention: bool = False):
        procs = logits_processors(self.config)
        if suppress_abstention:  # a banned token scores -inf, so its place in the list changes nothing
            procs.insert(0, OpeningBan(prompt_len, *self._abstain_start))
        return procs

    def _decode(self, enc, suppress_abstention: bool = False) -> Iterator[int]:
        """Token ids one at a time (greedy or sampled as configured), stopping at EOS or max_new_tokens.

        Each step holds the lock and inference mode only for its own forward pass and logits processing.
        """
        import torch
        from transformers import DynamicCache

        ids, mask = enc["input_ids"], enc["attention_mask"]
        procs, cfg = self._processors(ids.shape[1], suppress_abstention), self.config
        cache = DynamicCache()
        step_ids = ids
        for _ in range(cfg.max_new_tokens):
            with self._lock, torch.inference_mode():
                out = self.model(input_ids=step_ids, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
                scores = procs(ids, out.logits[:, -1, :].float())
                nxt = (torch.multinomial(torch.softmax(scores, -1), 1) if cfg.temperature > 0
                       else scores.argmax(-1, keepdim=True))
                ids = torch.cat([ids, nxt], dim=1)
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
            token = int(nxt[0, 0])
            if token in self.stop_ids:
                return
            yield token
            step_ids = nxt
