"""``amzqa sft-data``: RAFT-style supervised examples — a question, k retrieved sources, a cited answer.

For a product with a description: a shopper question about it (the evaluation's question generator: title-mention
and content-only, with noise), a context of k sources made with the shared prompt template from the product plus
hard-negative distractors retrieved from our own index (the product at a random position), and a target answer
drawn from the product's own description, citing its ``[n]``. Fact questions (an age range, a battery life, care
instructions... see :mod:`amzqa.grounding.facts`) are answered with the description sentence that states the fact, so the
model learns to answer the question asked rather than to recite the description. A share of examples (default 20%) leave the
product out: their target is the abstention message. Products are split train/eval by product; held-out
products (the evaluation split) are never used: not as golds, nor as distractors or abstention sources.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

from amzqa.config import Config, doc
from amzqa.data.questions import content_question, fact_questions, open_fact_questions, title_question
from amzqa.data.split import HELDOUT_RATE, HELDOUT_SALT, is_heldout
from amzqa.errors import ConfigError
from amzqa.generation.prompt import (
    ABSTAIN_MESSAGE,
    DEFAULT_EXCERPT_CHARS,
    SYSTEM,
    build_prompt,
    excerpt,
    focused_excerpt,
    sanitize,
    shows_asked_fact,
    template_fingerprint,
)
from amzqa.generation.select import NONE_LABEL, SELECT_SYSTEM, cite
from amzqa.grounding.text import content_words, split_sentences
from amzqa.io.atomic import atomic_dir, sha256_file, write_json_atomic
from amzqa.io.layout import MANIFEST, SFT_DATASET, SFT_FORMAT, SFT_HELDOUT
from amzqa.progress import bar
from amzqa.records import Product
from amzqa.retrieval.base import title_key

log = logging.getLogger(__name__)
EVAL_SALT = "amzqa-sft-eval-v1"


@dataclasses.dataclass
class SFTDataConfig(Config):
    """Settings of ``amzqa sft-data`` (``configs/sft.yaml``)."""

    corpus: Path | None = doc("Prepared corpus folder (amzqa prepare).", None)
    artifacts: Path | None = doc("Index artifact of that corpus (amzqa index); distractors come from it.", None)
    out: Path | None = doc("Output folder: dataset/ (datasets, Arrow), manifest.json, heldout.json.", None)
    max_products: int = doc("Products with a description to use at most (0 = all eligible).", 0)
    questions_per_product: int = doc("Questions written per product (title-mention and content-only alternate).", 2)
    fact_questions_per_product: int = doc("Fact questions per product whose description states a fact (amzqa.grounding.facts), "
                                          "answered with the sentence that states it.", 1)
    open_fact_questions_per_product: int = doc("Questions per product about a detail no fact kind names, asked with a word "
                                               "only its sentence has ('what insole?', 'any awards?'), answered with that "
                                               "sentence (amzqa.data.questions.open_fact_questions).", 0)
    describe_fraction: float = doc("Share of fact questions that describe the product from its description instead "
                                   "of naming it ('the novel about a marsh girl - how many pages?').", 0.0)
    k: int = doc("Sources per example; keep equal to the k used at inference (QAConfig.k).", 5)
    excerpt_chars: int = doc("Description characters per source; keep equal to QAConfig.excerpt_chars.", DEFAULT_EXCERPT_CHARS)
    abstain_fraction: float = doc("Share of examples without the gold source, answered with the abstention message.", 0.2)
    eval_fraction: float = doc("Share of products whose examples go to the eval split.", 0.1)
    max_answer_sentences: int = doc("Sentences of the gold description in a target answer.", 2)
    name_product: bool = doc("Start each answer by naming its product, cited ('Lodge Skillet [3]: ...'): the model "
                             "commits to the source matching the question before writing from it, and the shopper "
                             "sees which product the answer is about.", True)
    abstain_pairs: bool = doc("Give every abstention example an answerable twin: the same question over the same "
                              "distractors with the product among them, so the only difference between answering "
                              "and abstaining is whether the product is there.", False)
    target: str = doc("What the model learns to emit: 'answer' = a written answer citing [n] (the generative recipe), "
                      "'select' = the number of the source sentence that answers, 0 for none (evidence selection, "
                      "amzqa.generation.select: a one-token target, for small models and CPU budgets).", "answer")
    select_candidates: int = doc("target 'select': sentences numbered per prompt (GenerationConfig.select_candidates).", 8)
    heldout_rate: float = doc("Held-out (evaluation) split rate; must match the evaluation's.", HELDOUT_RATE)
    seed: int = doc("Seed for sampling, questions, distractor order and gold position.", 0)
    overwrite: bool = doc("Replace an existing output folder.", False)

    def __post_init__(self) -> None:
        if not 2 <= self.k <= 20:
            raise ConfigError("k must be between 2 and 20 (the gold plus at least one distractor)")
        if not 0 <= self.abstain_fraction < 1 or not 0 <= self.eval_fraction < 1:
            raise ConfigError("abstain_fraction and eval_fraction must be in [0, 1)")
        if not 0 <= self.describe_fraction <= 1:
            raise ConfigError("describe_fraction must be in [0, 1]")
        if self.fact_questions_per_product < 0 or self.open_fact_questions_per_product < 0:
            raise ConfigError("fact_questions_per_product and open_fact_questions_per_product must be >= 0")
        if self.questions_per_product < 1 or self.max_products < 0 or self.max_answer_sentences < 1:
            raise ConfigError("questions_per_product and max_answer_sentences must be >= 1, max_products >= 0")
        if self.excerpt_chars < 50:
            raise ConfigError("excerpt_chars must be >= 50")
        if self.target not in ("answer", "select"):
            raise ConfigError(f"target must be answer or select, got {self.target!r}")
        if not 1 <= self.select_candidates <= 8:
            raise ConfigError("select_candidates must be between 1 and 8")


def product_name(title: str, limit: int = 80) -> str:
    """How an answer names a product: its title as the prompt shows it (then ``[n]`` follows it in both places);
    a title over ``limit`` characters is cut at its first subtitle/edition mark, and to 60 characters."""
    title = sanitize(title).strip()
    if len(title) <= limit:
        return title
    for mark in (" (", " [", ": ", " - ", ", "):
        head = title.split(mark, 1)[0]
        if 12 <= len(head) < len(title):
            title = head
            break
    return excerpt(title, 60).removesuffix(" …")


def target_answer(question: str, gold: Product, n: int, max_sentences: int = 2, name_product: bool = False) -> str:
    """The answer, drawn faithfully from the gold description: its sentences most relevant to the question.

    With ``name_product`` it starts by naming the product: ``Lodge Skillet [3]: Hand wash only [3].``
    """
    sentences = [s for s in split_sentences(sanitize(gold.content)) if len(s) > 2]
    if not sentences:
        return cite(gold.title, n)
    body = _answer_body(question, sentences, n, max_sentences)
    return f"{product_name(gold.title)} [{n}]: {body}" if name_product else body


def _answer_body(question: str, sentences: list[str], n: int, max_sentences: int) -> str:
    q = content_words(question)
    ranked = sorted(range(len(sentences)), key=lambda i: (-len(q & content_words(sentences[i])), i))
    chosen = [ranked[0]]
    for i in ranked[1:max_sentences]:
        if len(q & content_words(sentences[i])) > 0 and sum(len(sentences[j]) for j in chosen) < 240:
            chosen.append(i)
    return " ".join(cite(sentences[i], n) for i in sorted(chosen))


def fact_answer(q, gold: Product, n: int, excerpt_chars: int, name_product: bool) -> str | None:
    """The answer to a fact question: the sentence that states the fact, cited (None if the prompt's excerpt of the
    description does not show that sentence: the model must never learn to answer from what it cannot see)."""
    sentence = sanitize(q.sentence)
    if not sentence or sentence not in focused_excerpt(q.text, sanitize(gold.content), excerpt_chars):
        return None
    body = cite(sentence, n)
    return f"{product_name(gold.title)} [{n}]: {body}" if name_product else body


def in_eval_split(uid: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.blake2b(f"{EVAL_SALT}:{uid}".encode(), digest_size=8).digest(), "little") / 2**64
    return h < fraction


def _select_example(q, gold: Product, sources: list[Product], position: int, cfg: SFTDataConfig) -> dict[str, Any] | None:
    """A selection example: the numbered candidate sentences, the label of the one stating what is asked (0 when
    the product is not among the sources); None when the product's sentence is not among the candidates."""
    from amzqa.generation.select import NONE_LABEL, gold_label, selection_prompt

    prompt, found = selection_prompt(q.text, sources, cfg.select_candidates)
    label = NONE_LABEL
    if position:
        n = gold_label(q.text, found, position, q.sentence if q.kind == "fact" else None)
        if n is None:
            return None
        label = str(n)
    return {"prompt": list(prompt.messages), "completion": [{"role": "assistant", "content": label}],
            "question": q.text, "kind": q.kind, "uid": gold.uid, "gold_position": position,
            "abstain": position == 0, "source_uids": [p.uid for p in sources],
            "priors": [c.prior for c in found]}  # the candidates' lexical scores, for the fitted prior weight


def _example(q, gold: Product, sources: list[Product], position: int, target: str, cfg: SFTDataConfig) -> dict[str, Any]:
    if cfg.target == "select":
        return _select_example(q, gold, sources, position, cfg)
    prompt = build_prompt(q.text, sources, cfg.excerpt_chars)
    return {
        "prompt": list(prompt.messages),
        "completion": [{"role": "assistant", "content": target}],
        "question": q.text, "kind": q.kind, "uid": gold.uid, "gold_position": position,
        "abstain": position == 0, "source_uids": [p.uid for p in sources],
        # Calibrated abstention never gates a prompt that shows the asked fact, so its threshold is fitted without them.
        "shows_fact": shows_asked_fact(prompt),
    }


def build_sft_data(cfg: SFTDataConfig, progress: bool | None = None, retrievers=None) -> dict[str, Any]:
    from datasets import Dataset, DatasetDict

    from amzqa.retrieval import Artifacts, RetrieverSet

    if cfg.corpus is None or cfg.artifacts is None or cfg.out is None:
        raise ConfigError("sft-data needs corpus, artifacts and out")
    started = time.perf_counter()
    from amzqa.indexing.corpus import open_corpus

    arts = Artifacts.open(cfg.artifacts, corpus_fingerprint=open_corpus(cfg.corpus).fingerprint)  # refuses another corpus's index
    rset = retrievers or RetrieverSet(arts)
    store = rset.store
    r = random.Random(cfg.seed)
    uids = store.table.column("uid").to_pylist()
    has_content = [bool(c) for c in store.table.column("content").to_pylist()]
    heldout = [u for u in uids if is_heldout(u, cfg.heldout_rate)]
    eligible = [i for i, (u, c) in enumerate(zip(uids, has_content)) if c and not is_heldout(u, cfg.heldout_rate)]
    r.shuffle(eligible)
    if cfg.max_products:
        eligible = eligible[: cfg.max_products]
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    pool = cfg.k + 3 + math.ceil((cfg.k + 3) * cfg.heldout_rate)  # room for the held-out hits left out
    for row in bar(progress, iterable=sorted(eligible), desc="sft examples", unit="product"):
        gold = store.get(row)
        questions = [(content_question(gold, r) if j % 2 else None) or title_question(gold, r)
                     for j in range(cfg.questions_per_product)]
        facts = fact_questions(gold, r, cfg.fact_questions_per_product, cfg.describe_fraction)
        facts += open_fact_questions(gold, r, cfg.open_fact_questions_per_product, cfg.describe_fraction)
        for q in questions + facts:
            key = title_key(gold.title)
            hits = rset.hybrid.retrieve(q.text, k=pool)
            # Held-out products stay out of every prompt (the evaluation scores exactly those), distractors included.
            negatives = [h.product for h in hits if h.uid != gold.uid and title_key(h.product.title) != key
                         and not is_heldout(h.uid, cfg.heldout_rate)]
            abstain = r.random() < cfg.abstain_fraction
            split = "eval" if in_eval_split(gold.uid, cfg.eval_fraction) else "train"
            if abstain:
                example = _example(q, gold, negatives[: cfg.k], 0, ABSTAIN_MESSAGE, cfg)
                if example is not None:
                    splits[split].append(example)
            if not abstain or cfg.abstain_pairs:
                sources = negatives[: cfg.k - 1]
                position = r.randint(1, len(sources) + 1)
                sources.insert(position - 1, gold)
                if cfg.target == "select":  # the label is chosen among the candidates (_select_example)
                    target = NONE_LABEL
                else:
                    target = (fact_answer(q, gold, position, cfg.excerpt_chars, cfg.name_product) if q.kind == "fact"
                              else target_answer(q.text, gold, position, cfg.max_answer_sentences, cfg.name_product))
                example = _example(q, gold, sources, position, target, cfg) if target is not None else None
                if example is not None:
                    splits[split].append(example)
    if not splits["train"]:
        raise ConfigError("no training examples: the corpus has no eligible products with descriptions")
    with atomic_dir(cfg.out, overwrite=cfg.overwrite) as tmp:
        DatasetDict({k: Dataset.from_list(v) for k, v in splits.items() if v}).save_to_disk(str(tmp / SFT_DATASET))
        write_json_atomic(tmp / SFT_HELDOUT, {"rate": cfg.heldout_rate, "salt": HELDOUT_SALT, "uids": heldout})
        files = sorted(p for p in (tmp / SFT_DATASET).rglob("*") if p.is_file())
        checksum = hashlib.sha256("".join(sha256_file(p) for p in files).encode()).hexdigest()
        counts = {k: len(v) for k, v in splits.items()}
        counts["abstain"] = sum(e["abstain"] for v in splits.values() for e in v)
        counts["fact"] = sum(e["kind"] == "fact" for v in splits.values() for e in v)
        manifest = {
            "format": SFT_FORMAT, "counts": counts, "products": len(eligible), "heldout_products": len(heldout),
            "checksum": checksum, "target": cfg.target,
            "abstain_target": NONE_LABEL if cfg.target == "select" else ABSTAIN_MESSAGE,
            "prompt": {"k": cfg.k, "excerpt_chars": cfg.excerpt_chars, "target": cfg.target,
                       **({"select_candidates": cfg.select_candidates, "select_system_sha256": hashlib.sha256(
                           SELECT_SYSTEM.encode()).hexdigest()} if cfg.target == "select" else {}),
                                              "system_sha256": hashlib.sha256(SYSTEM.encode()).hexdigest(),
                                              "template": template_fingerprint()},
            "corpus_fingerprint": arts.manifest["corpus"]["fingerprint"], "config": cfg.to_dict(),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_json_atomic(tmp / MANIFEST, manifest)
    log.info("SFT data: %s", counts)
    return manifest


def load_sft_manifest(path: str | Path) -> dict[str, Any]:
    from amzqa.errors import ArtifactError

    man = Path(path) / MANIFEST
    if not man.is_file():
        raise ArtifactError(f"{path}: not an SFT data folder (no manifest.json); build one with amzqa sft-data")
    data = json.loads(man.read_text())
    if data.get("format") != SFT_FORMAT:
        raise ArtifactError(f"{path}: SFT data format {data.get('format')!r}, expected {SFT_FORMAT!r}")
    return data
