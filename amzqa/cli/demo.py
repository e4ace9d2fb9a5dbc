"""The demo job behind ``make demo``: the main flow end to end on the bundled sample catalog."""

from __future__ import annotations

import dataclasses
import logging
import os
from importlib import import_module
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]  # the repository: the demo reads its recipes from configs/
SAMPLE_DIR = Path(import_module("amzqa.indexing").__file__).resolve().parent / "sample"  # indexing/ in a checkout
SAMPLE = SAMPLE_DIR / "trn.json"
# 64 questions about one fact of a product, with the fact as its description states it, plus 10 about products the
# catalog does not have; written by hand, never used for training (amzqa eval ... --questions takes the same format).
FACT_QUESTIONS = SAMPLE_DIR / "fact_questions.jsonl"
# Shopper-phrased sets over other products (partial names, a third or more describing the product), written by hand
# and never used for training: the shopper set (125, read to tune the selector's candidates), then a validation (66)
# and a test set (72) over products no other set asks about. docs/trust.md says which set judged which change.
SHOPPER_SETS = tuple(SAMPLE_DIR / f"fact_questions_{name}.jsonl" for name in ("shopper", "validation", "test"))
SFT_RECIPE = "sft-select-cpu.yaml"  # evidence selection: the model picks the sentence, the pipeline cites it
TRAIN_RECIPE = "smollm2-135m-select.yaml"
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
    """Collect the models a finished step dropped, and hand freed heap back to the OS (glibc keeps it otherwise)."""
    import gc

    from amzqa.runtime.allocator import release_heap

    gc.collect()
    release_heap()


# Each stage runs in its own process, one after another: the demo's memory is the largest stage's, not the sum of
# every engine, import and heap the stages leave behind (one process: 3.2 GB peak; docs/benchmarks.md).
BASE_STAGES = ("prepare", "index", "search", "ask")
FINETUNE_STAGES = ("sft-data", "train", "export", "compare", "retrieval", "eval", "facts")
STAGES = BASE_STAGES + FINETUNE_STAGES


@dataclasses.dataclass(frozen=True)
class DemoDirs:
    """Where each stage reads and writes: every stage finds the earlier ones' results here."""

    workdir: Path
    reports: Path = Path("reports")

    corpus = property(lambda self: self.workdir / "corpus")
    artifacts = property(lambda self: self.workdir / "artifacts")
    qa_settings = property(lambda self: self.workdir / "qa.json")  # the calibrated gate, outside the sealed index
    sft = property(lambda self: self.workdir / "sft")
    run = property(lambda self: self.workdir / "train")
    adapter = property(lambda self: self.workdir / "train" / "adapter")
    export = property(lambda self: self.workdir / "export-openvino")


def run_demo(workdir: Path, progress: bool | None = None, finetune: bool = True, eval_n: int = 24,
             reports: Path = Path("reports")) -> None:
    """Every stage, each as ``amzqa demo --stage NAME`` in a child process."""
    import time

    stages = STAGES if finetune else BASE_STAGES
    peaks: dict[str, tuple[float, float]] = {}
    start = time.perf_counter()
    for stage in stages:
        peaks[stage] = run_stage_process(stage, workdir, progress, eval_n, reports)
    banner(f"done in {time.perf_counter() - start:.0f} s: peak memory of each stage's process (MiB)")
    for stage, (own, tree) in peaks.items():
        print(f"  {stage:<9} {own:>7,.0f} resident (largest process)   {tree:>7,.0f} PSS (with its children)")
    print(f"\nDemo artifacts are in {workdir}. Try: amzqa ask \"is the JBL Flip 5 waterproof?\" --artifacts "
          f"{DemoDirs(workdir).artifacts}" + (f" --adapter {DemoDirs(workdir).adapter}" if finetune else ""))


def run_stage_process(stage: str, workdir: Path, progress: bool | None, eval_n: int, reports: Path) -> tuple[float, float]:
    """Run one stage in a child process; (its peak RSS, the peak of its whole process tree) in MiB."""
    import os
    import subprocess
    import sys

    from amzqa.cli.memory import TreeSampler
    from amzqa.runtime.allocator import ENV

    cmd = [sys.executable, "-m", "amzqa", "demo", "--stage", stage, "--workdir", str(workdir), "--eval-n", str(eval_n),
           "--reports", str(reports)] + (["--no-progress"] if progress is False else [])
    env = dict(os.environ)
    if stage == "train":  # mimalloc keeps training's peak within the demo's 2 GB (amzqa/allocator.py); system opts out
        env.setdefault(ENV, "mimalloc")
    proc = subprocess.Popen(cmd, env=env)
    with TreeSampler(proc.pid) as tree:
        _, status, usage = os.wait4(proc.pid, 0)  # the kernel's count of the child's peak, as /usr/bin/time reads it
    code = os.waitstatus_to_exitcode(status)
    if code:
        raise SystemExit(f"demo stage {stage!r} exited with {code}: {' '.join(cmd)}")
    return usage.ru_maxrss / 1024, tree.peak_mib


def run_stage(stage: str, workdir: Path, progress: bool | None = None, eval_n: int = 24,
              reports: Path = Path("reports")) -> None:
    """One stage of the demo in this process (``amzqa demo --stage NAME``); the earlier stages' results must exist."""
    dirs = DemoDirs(workdir, reports)
    needs = {"index": dirs.corpus, "search": dirs.artifacts, "ask": dirs.artifacts, "sft-data": dirs.qa_settings,
             "train": dirs.sft, "export": dirs.adapter, "compare": dirs.adapter, "retrieval": dirs.artifacts, "eval": dirs.adapter, "facts": dirs.adapter}
    if stage in needs and not needs[stage].exists():
        from amzqa.errors import ConfigError

        raise ConfigError(f"demo stage {stage!r} needs {needs[stage]}: run the earlier stages first (amzqa demo)")
    workdir.mkdir(parents=True, exist_ok=True)
    {"prepare": stage_prepare, "index": stage_index, "search": stage_search, "ask": stage_ask,
     "sft-data": stage_sft_data, "train": stage_train, "export": lambda d, p: export_for_engine(d.adapter, d.export),
     "compare": stage_compare, "retrieval": stage_retrieval,
     "eval": lambda d, p: stage_eval(d, p, eval_n), "facts": lambda d, p: stage_facts(d, p, eval_n)}[stage](dirs, progress)
    print(f"[{stage}] {peak_rss()}", flush=True)


def stage_prepare(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.indexing.corpus import PrepareConfig, format_stats, prepare

    banner(f"1. prepare: {SAMPLE} -> {dirs.corpus}")
    stats = prepare(PrepareConfig(input=SAMPLE, out=dirs.corpus, overwrite=True), progress=progress)
    print(format_stats(stats, dirs.corpus))


def stage_index(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.indexing.build import IndexConfig, build_index

    banner(f"2. index: {dirs.corpus} -> {dirs.artifacts}")
    man = build_index(IndexConfig(corpus=dirs.corpus, out=dirs.artifacts, overwrite=True), progress=progress)
    print(f"{man['counts']['products']} products; dense {man['dense']['type']} ({man['embedding']['backend']}, "
          f"dim {man['embedding']['dim']}); BM25 over {man['lexical']['fields']}")


def stage_search(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.retrieval import RetrieverSet

    banner("3. search: top hits of the hybrid retriever")
    rset = RetrieverSet(dirs.artifacts)
    for q in SEARCHES:
        print(f"\n? {q}")
        for h in rset.hybrid.retrieve(q, k=3):
            print(f"  {h.rank}. [{h.uid}] {h.product.title}  ({'+'.join(h.found_by)})")


def stage_ask(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.answer.pipeline import QA
    from amzqa.generation import ExtractiveGenerator, GenerationConfig, load_generator
    from amzqa.retrieval import RetrieverSet

    banner("4. ask: answers with citations (base SmolLM2-135M-Instruct and the extractive baseline)")
    rset = RetrieverSet(dirs.artifacts)
    qa = QA(rset, load_generator(None, config=GenerationConfig(max_new_tokens=64)))  # OpenVINO where exported
    qa.save(dirs.qa_settings)
    extractive = QA(rset, ExtractiveGenerator(), qa.config)
    print(f"abstention threshold {qa.config.abstain_threshold} ({qa.config.calibration['method']})")
    for q in QUESTIONS:
        print(f"\n? {q}")
        for name, pipeline in ((qa.generator.name, qa), ("extractive", extractive)):
            answer = pipeline.ask(q)
            print(f"\n--- {name}: " + answer.text)
            if answer.text_en:
                print(f"    (asked in Portuguese; searched as {answer.question_en!r}; English answer: {answer.text_en!r})")
            print(f"    citations: {citations(answer)}; abstained: {answer.abstained}; {answer.timings['total_s']:.1f}s")


def citations(answer) -> str:
    """The citations, then what was removed and what the catalog does say (the check's decisions, shown)."""
    out = ", ".join(f"[{c.marker}] {c.uid}{' (attributed)' if c.attributed else ' (re-attributed)' if c.reattributed else ''}"
                    for c in answer.citations) or "-"
    if answer.unsupported:
        out += f"; removed {len(answer.unsupported)} sentence(s) no source says: {answer.unsupported[0][:70]!r}"
    if answer.evidence is not None:
        out += f"; the catalog does say: {answer.evidence.sentence[:90]!r} [{answer.evidence.marker}]"
    return out


def sft_config(dirs: DemoDirs):
    from amzqa.cli.recipes import config_class

    return config_class("sft").from_yaml(CONFIGS / SFT_RECIPE, corpus=dirs.corpus, artifacts=dirs.artifacts,
                                         out=dirs.sft, overwrite=True)


def stage_sft_data(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.training.sft_data import build_sft_data

    banner(f"5. sft-data: RAFT-style examples from the sample index -> {dirs.sft}")
    man = build_sft_data(sft_config(dirs), progress=progress)
    print(f"{man['counts']} from {man['products']} products; {man['heldout_products']} held-out products never used")


def stage_train(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.runtime.allocator import reexec_with_mimalloc

    # The demo starts this stage with AMZQA_ALLOCATOR=mimalloc; the answering stages keep glibc's malloc (OpenVINO
    # aborts on mimalloc: "free(): invalid pointer")
    reexec_with_mimalloc()
    from amzqa.cli.recipes import config_class
    from amzqa.training.train import train

    banner(f"6. train: LoRA (top 15 layers) on SmolLM2-135M to select the answering sentence, CPU recipe -> {dirs.run}")
    cfg = config_class("train").from_yaml(CONFIGS / "train" / TRAIN_RECIPE, data=dirs.sft, out=dirs.run,
                                          overwrite=True)
    prov = train(cfg, progress=progress)
    print(f"{prov['steps']} steps in {prov['train_seconds']:.0f} s ({prov['train_tokens']} tokens, {prov['batching']}); "
          f"train loss {prov['metrics'].get('train_loss')}, eval loss {prov['metrics'].get('eval_loss')}, eval label loss "
          f"{(prov.get('abstention') or {}).get('eval_label_loss')}")


def tuned_generation(dirs: DemoDirs):
    """The fine-tuned generator's settings: the OpenVINO export where the train stage made one, else the adapter."""
    from amzqa.generation import GenerationConfig

    exported = (dirs.export / "openvino_model.xml").is_file()
    return GenerationConfig(max_new_tokens=64, adapter=None if exported else str(dirs.adapter), strategy="select",
                            model=str(dirs.export) if exported else "smollm2"), exported


def stage_compare(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.answer.pipeline import QA, QAConfig, load_settings
    from amzqa.generation import GenerationConfig, load_generator
    from amzqa.retrieval import RetrieverSet

    banner("7. compare: base (writes, checked) vs fine-tuned (selects a source sentence), same retrieval (3 sources)")
    rset = RetrieverSet(dirs.artifacts)
    saved = load_settings(dirs.qa_settings)
    saved.pop("index", None)
    sft = sft_config(dirs)
    qa_config = QAConfig.from_dict({**saved, "k": sft.k, "excerpt_chars": sft.excerpt_chars})
    answers: dict[str, list] = {}
    for name, gen_cfg in (("base", GenerationConfig(max_new_tokens=64)), ("fine-tuned", tuned_generation(dirs)[0])):
        pipeline = QA(rset, load_generator(None, config=gen_cfg), qa_config)  # one model at a time
        answers[name] = []
        for q in QUESTIONS:
            answers[name].append(pipeline.ask(q))
            release()  # as the evaluation does: glibc's heap would grow answer by answer
        pipeline = None
        release()
    for i, q in enumerate(QUESTIONS):
        print(f"\n? {q}")
        for name in answers:
            answer = answers[name][i]
            print(f"--- {name}: {answer.text}\n    citations: {citations(answer)}; abstained: {answer.abstained}")


def eval_config(dirs: DemoDirs, eval_n: int):
    from amzqa.evaluation.generation_eval import GenerationEvalConfig

    tuned, exported = tuned_generation(dirs)
    tuned_system = f"select:export:{tuned.model}" if exported else f"select:adapter:{dirs.adapter}"
    return GenerationEvalConfig(artifacts=dirs.artifacts, systems=f"base,{tuned_system},extractive", n=eval_n,
                                max_new_tokens=64, out=dirs.reports / "demo",  # prompt shape: the adapter's (3 x 150)
                                trim_heap=True)  # the demo's 2 GB budget


def stage_retrieval(dirs: DemoDirs, progress: bool | None) -> None:
    from amzqa.evaluation.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, markdown, write_report

    banner("8. eval retrieval: dense, lexical, hybrid on held-out products")
    out = dirs.reports / "demo"
    report = evaluate_retrieval(RetrievalEvalConfig(artifacts=dirs.artifacts, out=out), progress=progress)
    write_report(report, out)
    print(markdown(report).split("\n**")[0])  # the table; the paired differences are in the report
    print(f"report: {out / 'retrieval.md'}")


def stage_eval(dirs: DemoDirs, progress: bool | None, eval_n: int) -> None:
    from amzqa.evaluation.generation_eval import evaluate_generation, markdown, write_report

    banner("8b. eval generation: base, fine-tuned, extractive on held-out products")
    out = dirs.reports / "demo"
    report = evaluate_generation(eval_config(dirs, eval_n), progress=progress)
    write_report(report, out)
    print(markdown(report).split("## Example answers")[0])
    print(f"report: {out / 'report.md'} (plots: metrics.png, latency.png)")


def stage_facts(dirs: DemoDirs, progress: bool | None, eval_n: int) -> None:
    from amzqa.evaluation.generation_eval import evaluate_generation, markdown, write_report

    banner(f"9. eval on fact questions written by hand ({FACT_QUESTIONS.name}): does the answer state the fact asked?")
    out = dirs.reports / "demo" / "facts"
    cfg = eval_config(dirs, eval_n).replace(questions=FACT_QUESTIONS, out=out, abstention_auc=False)
    report = evaluate_generation(cfg, progress=progress)
    write_report(report, out)
    print(markdown(report).split("## Example answers")[0])
    print(f"report: {out / 'report.md'}")
    systems = cfg.systems.removeprefix("base,")  # the base model writes (~1 s a question): measured on the 74 above
    print("\nThe shopper-phrased sets (partial names, described products) are left out of the demo to keep it short; "
          "each takes 1-2 minutes on 2 cores (AVX2 stand-in):")
    for questions in SHOPPER_SETS:
        print(f"  amzqa eval generation --artifacts {dirs.artifacts} --questions {os.path.relpath(questions)} "
              f"--systems {systems} --max-new-tokens 64 --no-abstention-auc --out {dirs.reports / 'demo' / questions.stem}")


def export_for_engine(adapter: Path, out: Path) -> Path | None:
    """The fine-tuned model merged and exported for the in-process OpenVINO engine (None where it is not installed:
    the demo then answers with the adapter on transformers)."""
    from amzqa.generation.openvino import openvino_available

    if not openvino_available():
        import shutil

        from amzqa.io.atomic import check_replaceable

        check_replaceable(out)  # only an export amzqa wrote is removed
        shutil.rmtree(out, ignore_errors=True)  # an earlier run's export is not this adapter's
        print("OpenVINO is not installed: the fine-tuned model answers with the adapter on transformers")
        return None
    from amzqa.training.export import export_model

    banner(f"6b. export: the adapter merged into the base, fp16 OpenVINO IR -> {out}")
    man = export_model(out, "openvino", adapter=adapter, overwrite=True, trim_heap=True)
    print(f"{len(man['files'])} files; prompt format {man['prompt_template']}; abstention threshold "
          f"{'kept' if 'amzqa_abstention.json' in man['files'] else 'none'}; {peak_rss()}")
    return out
