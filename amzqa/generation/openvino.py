"""The in-process CPU engine: OpenVINO GenAI on a model exported with ``amzqa export --format openvino``.

Chosen by measurement on a 2-core AVX2 CPU (docs/benchmarks.md): with fp16 weights and an f32 KV cache it keeps
transformers' greedy tokens (tested on the demo's questions) at about twice its speed, and its thread pool does not
collapse when another process holds a core. Generation runs in ``openvino_genai.LLMPipeline``; calibrated
abstention scores the abstention message with the ``openvino`` runtime on the same IR (full logits, which the
pipeline does not expose), and the same pass gives the first two tokens when the answer must not open with that
message (the pipeline has no bad-words option, so the opening is chosen here exactly as transformers'
``NoBadWordsLogitsProcessor`` would, and the pipeline continues from it).
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from amzqa.errors import ArtifactError, MissingExtraError
from amzqa.generation.abstention import abstention_opening, load_threshold, stop_ids, stream_text
from amzqa.generation.config import GenerationConfig
from amzqa.generation.prompt import ABSTAIN_MESSAGE, Prompt, render, shows_asked_fact, template_fingerprint
from amzqa.io.layout import EXPORT_MANIFEST

log = logging.getLogger(__name__)
MODEL_XML = "openvino_model.xml"
# f32 keys/values: the CPU default (u8) changed greedy tokens within the first 40 on the demo's prompts.
# f32 compute: on a CPU with AVX512-BF16/AMX OpenVINO otherwise computes in bf16 (greedy tokens drift from the
# transformers reference, and it fails outright when oneDNN is capped at AVX2); AVX2 CPUs compute in f32 anyway.
PIPELINE_PROPERTIES = {"KV_CACHE_PRECISION": "f32", "INFERENCE_PRECISION_HINT": "f32"}


def openvino_available() -> bool:
    try:
        import openvino_genai  # noqa: F401
    except ImportError:
        return False
    return True


def find_export(model: str | Path) -> Path | None:
    """The OpenVINO export for ``model``: the folder itself, or the export ``amzqa models fetch`` made of a
    provisioned short name ("smollm2"); None where there is none."""
    from amzqa.models import default_export_path

    path = Path(str(model))
    if (path / MODEL_XML).is_file():
        return path
    export = default_export_path(str(model))
    return export if export is not None and (export / MODEL_XML).is_file() else None


def check_export(path: Path) -> dict:
    """The export's manifest; warn when it was made for another prompt format (answers may then cite poorly)."""
    manifest_path = path / EXPORT_MANIFEST
    if not manifest_path.is_file():
        log.warning("%s has no %s: cannot tell which model and prompt format it was exported from", path, EXPORT_MANIFEST)
        return {}
    manifest = json.loads(manifest_path.read_text())
    trained_on = manifest.get("prompt_template")
    if trained_on and trained_on != template_fingerprint():
        log.warning("%s was fine-tuned on another prompt format (template %s, now %s): re-export from a retrained "
                    "adapter", path, trained_on, template_fingerprint())
    return manifest


class _Streamer:
    """Feeds the pipeline's tokens to a queue; cancels the generation once the consumer has gone."""

    def __init__(self, og, tokens: queue.Queue, cancelled: threading.Event) -> None:
        class Impl(og.StreamerBase):
            def write(inner, token):  # noqa: N805 - pybind11 subclass
                for t in (token if isinstance(token, (list, tuple)) else [token]):
                    tokens.put(int(t))
                return og.StreamingStatus.CANCEL if cancelled.is_set() else og.StreamingStatus.RUNNING

            def end(inner):  # noqa: N805
                pass

        self.impl = Impl()


KEEP = "logits_to_keep"


def read_export(path: Path):
    """(the model's XML text, its weights as one tensor over the memory-mapped .bin). The generation pipeline and
    the scorer are built from these same weights: read from the path, each maps the file again and the process
    holds two copies (a second model's worth of peak memory; same tokens, same logits)."""
    import numpy as np
    import openvino as ov

    xml = (path / MODEL_XML).read_text(encoding="utf-8")
    # copy-on-write mapping: writeable as the binding requires, never written, so never copied
    weights = np.memmap(path / MODEL_XML.replace(".xml", ".bin"), dtype=np.uint8, mode="c")
    return xml, ov.Tensor(weights, shared_memory=True)


def compile_scorer(xml: str, weights, props: dict):
    """The exported model compiled for scoring, its LM head applied to the last ``logits_to_keep`` positions only
    (a new input). Scoring needs the logits of the few answer positions; the full head over a ~600-token prompt
    is a prompt-by-vocabulary logits tensor, a large share of a small model's pass in time and memory (same logits).
    openvino_genai's pipeline slices the same way for generation. A graph of another shape is compiled whole."""
    import numpy as np
    import openvino as ov
    from openvino import opset13 as ops

    core = ov.Core()
    model = core.read_model(xml, weights)
    head = model.output("logits").get_node().input_value(0).get_node()
    while head.get_type_name() in ("Convert", "Multiply", "Divide", "Tanh") and head.get_input_size():
        head = head.input_value(0).get_node()  # past a logit cast, scale or soft-cap to the head's MatMul
    if head.get_type_name() != "MatMul" or head.input_value(0).get_partial_shape().rank.get_length() != 3:
        log.info("LM head not found as a MatMul over [batch, positions, hidden]; scoring with full logits")
        return core.compile_model(model, "CPU", props)
    keep = ops.parameter([1], ov.Type.i64, name=KEEP)
    keep.output(0).get_tensor().set_names({KEEP})
    last = ops.slice(head.input_value(0), ops.negative(keep), ops.constant(np.array([np.iinfo(np.int64).max])),
                     ops.constant(np.array([1])), ops.constant(np.array([1])))
    head.input(0).replace_source_output(last.output(0))
    model.add_parameters([keep])
    model.validate_nodes_and_infer_types()
    return core.compile_model(model, "CPU", props)


class OpenVINOGenerator:
    name = "openvino"

    def __init__(self, config: GenerationConfig | None = None, **overrides) -> None:
        cfg = (config or GenerationConfig()).replace(**overrides) if overrides else (config or GenerationConfig())
        try:
            import openvino_genai as og
        except ImportError:
            raise MissingExtraError("the openvino backend needs the engine: pip install 'amzqa[openvino]'") from None
        from transformers import AutoTokenizer

        if cfg.adapter:
            raise ArtifactError("the openvino backend runs merged weights: export the adapter first "
                                f"(amzqa export --adapter {cfg.adapter} --format openvino --out DIR) and pass model=DIR")
        path = find_export(cfg.model)
        if path is None:
            raise ArtifactError(f"no OpenVINO export of {cfg.model!r} (no {MODEL_XML}): run amzqa models fetch for the "
                                "default model, or amzqa export --format openvino --out DIR and pass model=DIR")
        self.config, self.path, self._og = cfg, path, og
        self.manifest = check_export(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.stop_ids = stop_ids(self.tokenizer, path)
        props = dict(PIPELINE_PROPERTIES)
        if cfg.threads:
            props["INFERENCE_NUM_THREADS"] = cfg.threads
        self._props = props
        self._xml, self._weights = read_export(path)
        self.pipe = og.LLMPipeline(self._xml, self._weights, og.Tokenizer(str(path)), "CPU", None, **props)
        self._scorer = None  # the raw compiled model, for log-probabilities: compiled on first use
        self._scorer_lock = threading.Lock()  # two first askers must not compile it twice (memory, seconds)
        self.abstain_threshold = load_threshold(path) if cfg.calibrated_abstention else None
        self._abstain_ids = self.tokenizer(ABSTAIN_MESSAGE, add_special_tokens=False)["input_ids"]
        self._abstain_start = abstention_opening(self.tokenizer)
        # One generation at a time per pipeline (it holds one KV state); an abandoned stream cancels its generation
        # at the next token, so it never holds this for longer than one token.
        self._lock = threading.Lock()

    # ------------------------------------------------------------ scoring (openvino runtime, full logits)

    def _encode(self, prompt: Prompt) -> list[int]:
        return self.tokenizer(render(self.tokenizer, prompt), add_special_tokens=False)["input_ids"]

    def scorer(self):
        """The compiled scoring model, compiled once however many threads ask first."""
        with self._scorer_lock:
            if self._scorer is None:
                self._scorer = compile_scorer(self._xml, self._weights, self._props)
            return self._scorer

    def _logits(self, ids: list[int], keep: int):
        """Logits of the last ``keep`` positions of ``ids`` (numpy, float32), one stateless pass."""
        import numpy as np

        request = self.scorer().create_infer_request()  # its own KV state: safe beside the pipeline
        n = len(ids)
        inputs = {"input_ids": np.asarray([ids], dtype=np.int64), "attention_mask": np.ones((1, n), np.int64),
                  "position_ids": np.arange(n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}
        if any(KEEP in port.get_names() for port in self._scorer.inputs):
            inputs[KEEP] = np.array([keep], dtype=np.int64)
        request.infer(inputs)
        return np.array(request.get_tensor("logits").data[0, -keep:], dtype=np.float32)

    def answer_logprob(self, prompt: Prompt, answer: str) -> float:
        """log P(answer | prompt), teacher-forced, as :meth:`HFGenerator.answer_logprob` computes it."""
        return self._score(self._encode(prompt), self.tokenizer(answer, add_special_tokens=False)["input_ids"])[0]

    def first_token_logprobs(self, prompt: Prompt, labels: list[str]) -> list[float]:
        """log P(label | prompt) of single-token labels, from one pass (evidence selection's constrained choice)."""
        import numpy as np

        from amzqa.generation.hf import label_ids

        ids = label_ids(self.tokenizer, labels)
        logits = self._logits(self._encode(prompt), 1)[-1]
        m = logits.max()
        logp = logits - m - np.log(np.exp(logits - m).sum())
        return [float(logp[i]) for i in ids]

    def _score(self, ids: list[int], answer: list[int]):
        import numpy as np

        logits = self._logits(ids + answer, len(answer) + 1)
        m = logits[:-1].max(-1, keepdims=True)
        logp = logits[:-1] - m - np.log(np.exp(logits[:-1] - m).sum(-1, keepdims=True))
        return float(logp[np.arange(len(answer)), answer].sum()), logits

    def _opening(self, ids: list[int], logits) -> list[int]:
        """The first tokens when the answer must not open with the abstention message: what transformers' greedy
        decoding with the message's opening banned (``OpeningBan``) picks (empty = no constraint binds)."""
        import torch

        from amzqa.generation.hf import logits_processors

        firsts, seconds = self._abstain_start
        procs = logits_processors(self.config)
        scores = procs(torch.tensor([ids]), torch.from_numpy(logits[0:1]))
        first = self._pick(scores)
        if first not in firsts:
            return []
        after = logits[1:2] if first == self._abstain_ids[0] else self._logits(ids + [first], 1)  # e.g. " The"
        scores = procs(torch.tensor([ids + [first]]), torch.from_numpy(after))
        scores[0, sorted(seconds)] = -float("inf")
        return [first, self._pick(scores)]

    def _pick(self, scores) -> int:
        import torch

        if self.config.temperature > 0:
            return int(torch.multinomial(torch.softmax(scores, -1), 1)[0, 0])
        return int(scores.argmax(-1)[0])

    def abstains(self, prompt: Prompt) -> bool | None:
        return self._plan(prompt, self._encode(prompt))[0]

    def _plan(self, prompt: Prompt, ids: list[int]) -> tuple[bool | None, list[int]]:
        """(calibrated decision, forced opening tokens)."""
        if self.abstain_threshold is None or self.abstain_threshold.message != ABSTAIN_MESSAGE or not prompt.catalog:
            return None, []  # none fitted, fitted for selection's "0" (SelectingGenerator applies that one), or not ours
        logprob, logits = self._score(ids, self._abstain_ids)
        if not shows_asked_fact(prompt) and logprob >= self.abstain_threshold.for_question(prompt.question):
            return True, []
        return False, self._opening(ids, logits)

    # ------------------------------------------------------------ generation (openvino_genai pipeline)

    def _generation_config(self, budget: int):
        cfg, gc = self.config, self._og.GenerationConfig()
        gc.max_new_tokens = budget
        gc.repetition_penalty = cfg.repetition_penalty
        gc.apply_chat_template = False  # the prompt is rendered (and tokenised) exactly as for transformers
        gc.eos_token_id = self.tokenizer.eos_token_id
        gc.stop_token_ids = set(self.stop_ids)  # every end-of-turn id the model lists, not the tokenizer's EOS alone
        if cfg.temperature > 0:
            gc.do_sample, gc.temperature, gc.top_p = True, cfg.temperature, cfg.top_p
        return gc

    def _inputs(self, ids: list[int]):
        import numpy as np
        import openvino as ov

        return self._og.TokenizedInputs(ov.Tensor(np.asarray([ids], dtype=np.int64)),
                                        ov.Tensor(np.ones((1, len(ids)), dtype=np.int64)))

    def generate(self, prompt: Prompt) -> str:
        ids = self._encode(prompt)
        decision, opening = self._plan(prompt, ids)
        if decision:
            return ABSTAIN_MESSAGE
        budget = self.config.max_new_tokens - len(opening)
        tokens: list[int] = []
        if budget > 0:
            with self._lock:
                tokens = list(self.pipe.generate(self._inputs(ids + opening), self._generation_config(budget)).tokens[0])
        out = list(itertools.takewhile(lambda t: t not in self.stop_ids, opening + tokens))
        return self.tokenizer.decode(out, skip_special_tokens=True).strip()

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """Yield text pieces as the pipeline produces tokens (it runs in a worker thread; leaving the loop early
        cancels it at its next token)."""
        ids = self._encode(prompt)
        decision, opening = self._plan(prompt, ids)
        if decision:
            yield ABSTAIN_MESSAGE
            return
        budget = self.config.max_new_tokens - len(opening)
        rest = self._tokens(ids + opening, budget) if budget > 0 else iter(())
        yield from stream_text(self.tokenizer, itertools.chain(opening, rest), self.stop_ids)

    def _tokens(self, ids: list[int], budget: int) -> Iterator[int]:
        tokens: queue.Queue = queue.Queue()
        cancelled, done = threading.Event(), object()
        streamer = _Streamer(self._og, tokens, cancelled)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock:
                    if not cancelled.is_set():
                        self.pipe.generate(self._inputs(ids), self._generation_config(budget), streamer.impl)
            except BaseException as exc:  # handed to the consumer below
                errors.append(exc)
            finally:
                tokens.put(done)

        worker = threading.Thread(target=work, name="amzqa-openvino-generate", daemon=True)
        worker.start()
        try:
            while (token := tokens.get()) is not done:
                yield token
            if errors:
                raise errors[0]
        finally:
            cancelled.set()  # the consumer stopped early or finished: a running generation ends at its next token
