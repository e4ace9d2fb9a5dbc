"""The demo job behind ``make demo``: the main flow end to end on the bundled sample catalog."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "indexing" / "sample" / "trn.json"
# 64 questions about one fact of a product, with the fact as its description states it, plus 10 about products the
# catalog does not have; written by hand, never used for training (amzqa eval ... --questions takes the same format).
FACT_QUESTIONS = ROOT / "indexing" / "sample" / "fact_questions.jsonl"
CONFIGS = ROOT / "configs"
SEARCHES = ["cordless electric kettle", "book about a boy wizard at a school of magic", "waterproof speaker for the pool"]
QUESTIONS = [
    "Is the Lodge cast iron skillet dishwasher safe?",
    "How long does the battery of the Sony WH-1000XM4 headphones last?",
    "What ages is the LEGO Classic brick box for?",
    "Who illustrated Goodnight Moon?",
    "Do you sell a petrol lawn mower with a 21 inch deck?",  # not in the catalog: the answer must abstain
    "A caixa de som JBL Flip 5 é à prova d'água?",  # Portuguese: answered in Portuguese (pt extra)
]


def sample_catalog() -> Path:
    """Path of the bundled hand-written sample catalog (trn.json format, messy on purpose)."""
    return SAMPLE


def banner(text: str) -> None:
    print(f"\n{'=' * 100}\n== {text}\n{'=' * 100}", flush=True)


def peak_rss() -> str:
    """This process's peak resident memory so far (printed after each stage: where the memory goes)."""
    import resource

    return f"peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB"


def release() -> None:
    """Collect the models a finished stage dropped, and hand freed heap back to the OS (glibc keeps it otherwise)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def train_in_child(recipe: Path, data: Path, out: Path, progress: bool | None) -> dict:
    """``amzqa train`` in its own process: the demo's peak memory is then the larger of training alone and the rest,
    not their sum (the answering stages leave ~1 GiB of engines, imports and heap behind; measured in the README)."""
    import json
    import os
    import subprocess
    import sys

    from amzqa.layout import ADAPTER_PROVENANCE

    cmd = [sys.executable, "-m", "amzqa", "train", "--config", str(recipe), "--data", str(data), "--out", str(out),
           "--overwrite"] + (["--no-progress"] if progress is False else [])
    # the child's peak resident memory, as the kernel counted it (wait4), printed beside the parent's
    proc = subprocess.Popen(cmd, env=dict(os.environ))
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"amzqa train exited with {proc.returncode}: {' '.join(cmd)}")
    prov = json.loads((out / "adapter" / ADAPTER_PROVENANCE).read_text())
    return {**prov, "peak_rss_mib": usage.ru_maxrss / 1024}


def run_demo(workdir: Path, progress: bool | None = None, finetune: bool = True, eval_n: int = 24,
             reports: Path = Path("reports")) -> None:
    from amzqa.pipeline import QA
    from amzqa.retrieval import RetrieverSet
    from indexing.build import IndexConfig, build_index
    from indexing.corpus import PrepareConfig, format_stats, prepare

    workdir.mkdir(parents=True, exist_ok=True)
    corpus, artifacts = workdir / "corpus", workdir / "artifacts"

    banner(f"1. prepare: {SAMPLE} -> {corpus}")
    stats = prepare(PrepareConfig(input=SAMPLE, out=corpus, overwrite=True), progress=progress)
    print(format_stats(stats, corpus))

    banner(f"2. index: {corpus} -> {artifacts}")
    man = build_index(IndexConfig(corpus=corpus, out=artifacts, overwrite=True), progress=progress)
    print(f"{man['counts']['products']} products; dense {man['dense']['type']} ({man['embedding']['backend']}, "
          f"dim {man['embedding']['dim']}); BM25 over {man['lexical']['fields']}; {peak_rss()}")

    banner("3. search: top hits of the hybrid retriever")
    rset = RetrieverSet(artifacts)
    for q in SEARCHES:
        print(f"\n? {q}")
        for h in rset.hybrid.retrieve(q, k=3):
            print(f"  {h.rank}. [{h.uid}] {h.product.title}  ({'+'.join(h.found_by)})")

    banner("4. ask: answers with citations (base SmolLM2-135M-Instruct and the extractive baseline)")
    from amzqa.generation import ExtractiveGenerator, GenerationConfig, load_generator

    qa = QA(rset, load_generator(None, config=GenerationConfig(max_new_tokens=64)))  # OpenVINO where exported
    qa.save(workdir / "qa.json")  # the calibrated relevance gate, outside the sealed index
    extractive = QA(rset, ExtractiveGenerator(), qa.config)
    print(f"abstention threshold {qa.config.abstain_threshold} ({qa.config.calibration['method']})")
    for q in QUESTIONS:
        print(f"\n? {q}")
        for name, pipeline in ((qa.generator.name, qa), ("extractive", extractive)):
            answer = pipeline.ask(q)
            print(f"\n--- {name}: " + answer.text)
            if answer.text_en:
                print(f"    (asked in Portuguese; searched as {answer.question_en!r}; English answer: {answer.text_en!r})")
            cites = ", ".join(f"[{c.marker}] {c.uid}{' (attributed)' if c.attributed else ''}" for c in answer.citations)
            print(f"    citations: {cites or '-'}; abstained: {answer.abstained}; {answer.timings['total_s']:.1f}s")
    print(f"\n[{qa.generator.name}] {peak_rss()}")
    qa_config = qa.config
    qa = extractive = None
    release()
    if not finetune:
        return
    from amzqa.recipes import config_class
    from training.sft_data import build_sft_data

    sft, run = workdir / "sft", workdir / "train"
    banner(f"5. sft-data: RAFT-style examples from the sample index -> {sft}")
    sft_cfg = config_class("sft").from_yaml(CONFIGS / "sft-cpu.yaml", corpus=corpus, artifacts=artifacts, out=sft, overwrite=True)
    man = build_sft_data(sft_cfg, progress=progress, retrievers=rset)
    print(f"{man['counts']} from {man['products']} products; {man['heldout_products']} held-out products never used")

    banner(f"6. train: QLoRA (NF4 + LoRA all-linear) on SmolLM2-135M, CPU recipe -> {run}")
    prov = train_in_child(CONFIGS / "train" / "smollm2-135m-qlora.yaml", sft, run, progress)
    print(f"{prov['steps']} steps in {prov['train_seconds']:.0f} s ({prov['train_tokens']} tokens, {prov['batching']}); "
          f"train loss {prov['metrics'].get('train_loss')}, eval loss {prov['metrics'].get('eval_loss')}; "
          f"training process peak RSS {prov['peak_rss_mib']:,.0f} MiB; this process {peak_rss()}")
    adapter = run / "adapter"
    tuned_model = export_for_engine(adapter, workdir / "export-openvino")

    banner("7. compare: base vs fine-tuned, same prompts (the adapter's 3 sources x 150 characters)")
    shape = {"k": sft_cfg.k, "excerpt_chars": sft_cfg.excerpt_chars}
    tuned_cfg = GenerationConfig(max_new_tokens=64, adapter=None if tuned_model else str(adapter),
                                 model=str(tuned_model) if tuned_model else "smollm2")
    answers: dict[str, list] = {}
    for name, gen_cfg in (("base", GenerationConfig(max_new_tokens=64)), ("fine-tuned", tuned_cfg)):
        pipeline = QA(rset, load_generator(None, config=gen_cfg), qa_config.replace(**shape))  # one model at a time
        answers[name] = [pipeline.ask(q) for q in QUESTIONS]
        backend, pipeline = pipeline.generator.name, None
        release()
    for i, q in enumerate(QUESTIONS):
        print(f"\n? {q}")
        for name in answers:
            answer = answers[name][i]
            cites = ", ".join(f"[{c.marker}] {c.uid}{' (attributed)' if c.attributed else ''}" for c in answer.citations)
            print(f"--- {name}: {answer.text}\n    citations: {cites or '-'}; abstained: {answer.abstained}")
    print(f"\n[{backend}] {peak_rss()}")

    banner("8. eval all: retrieval + generation (base, fine-tuned, extractive) on held-out products")
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation, markdown, write_report
    from amzqa.evaluation.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval
    from amzqa.evaluation.retrieval_eval import write_report as write_retrieval

    out = reports / "demo"
    write_retrieval(evaluate_retrieval(RetrievalEvalConfig(artifacts=artifacts, out=out), rset=rset, progress=progress), out)
    tuned_system = f"export:{tuned_model}" if tuned_model else f"adapter:{adapter}"
    gen_cfg = GenerationEvalConfig(artifacts=artifacts, systems=f"base,{tuned_system},extractive", n=eval_n,
                                   max_new_tokens=64, out=out)  # prompt shape: the adapter's (3 x 150)
    report = evaluate_generation(gen_cfg, rset=rset, progress=progress)
    write_report(report, out)
    print(markdown(report).split("## Example answers")[0])
    print(f"report: {out / 'report.md'} (plots: metrics.png, latency.png); {peak_rss()}")

    banner(f"9. eval on fact questions written by hand ({FACT_QUESTIONS.name}): does the answer state the fact asked?")
    facts_out = out / "facts"
    report = evaluate_generation(gen_cfg.replace(questions=FACT_QUESTIONS, out=facts_out, abstention_auc=False),
                                 rset=rset, progress=progress)
    write_report(report, facts_out)
    print(markdown(report).split("## Example answers")[0])
    print(f"report: {facts_out / 'report.md'}; {peak_rss()}")
    print(f"\nDemo artifacts are in {workdir}. Try: amzqa ask \"is the JBL Flip 5 waterproof?\" --artifacts {artifacts} "
          f"--adapter {adapter}")


def export_for_engine(adapter: Path, out: Path) -> Path | None:
    """The fine-tuned model merged and exported for the in-process OpenVINO engine (None where it is not installed:
    the demo then answers with the adapter on transformers)."""
    from amzqa.generation.openvino import openvino_available

    if not openvino_available():
        return None
    from training.export import export_model

    banner(f"6b. export: the adapter merged into the base, fp16 OpenVINO IR -> {out}")
    man = export_model(out, "openvino", adapter=adapter, overwrite=True)
    print(f"{len(man['files'])} files; prompt format {man['prompt_template']}; abstention threshold "
          f"{'kept' if 'amzqa_abstention.json' in man['files'] else 'none'}; {peak_rss()}")
    return out
