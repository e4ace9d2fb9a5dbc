"""Issue #17: the Mistral-7B QLoRA recipe on a GPU, end to end, reported as one markdown table.

    python benchmarks/gpu_check.py --model /models/Mistral-7B-Instruct-v0.3 [--steps 200] [--synth 2248619]
    python benchmarks/gpu_check.py --model PATH --corpus runs/full/corpus   # the real trn.json, prepared
    python benchmarks/gpu_check.py --model PATH --artifacts runs/full/artifacts --corpus runs/full/corpus

Steps, each reused when its output already exists in --workdir: (1) the catalog — a prepared corpus, or the seeded
synthetic one at full scale (2.2M records) prepared; (2) the index; (3) RAFT SFT data (configs/sft.yaml) from
--sft-products products; (4) ``amzqa train`` with the recipe (only model, data, out and max_steps changed; --set
KEY=VALUE for anything else) — tokens/s, peak GPU memory, eval loss; (5) the generation evaluation, base vs
fine-tuned, on the same questions. Writes the table to --report (default reports/gpu-check.md) and prints it.
The machine's facts (amzqa doctor) head the report, so figures always name the GPU and CPU they came from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, table  # noqa: E402

RECIPE = ROOT / "configs" / "train" / "mistral-7b-instruct-v0.3-qlora.yaml"
MEASURES = ("stated_and_cited", "states_answer", "refused", "cites_gold", "cites_only_given", "support", "rouge_l",
            "abstain_accuracy", "abstain_recall", "latency_s")


def catalog(args, work: Path) -> Path:
    from amzqa.indexing.corpus import PrepareConfig, prepare
    from amzqa.indexing.synth import SynthConfig, synth

    if args.corpus:
        return args.corpus
    corpus = work / "corpus"
    if not (corpus / "stats.json").is_file():
        raw = work / "trn.json"
        if not raw.is_file():
            synth(SynthConfig(n=args.synth, out=raw))
        prepare(PrepareConfig(input=raw, out=corpus))
    return corpus


def index(args, corpus: Path, work: Path) -> Path:
    from amzqa.indexing.build import IndexConfig, build_index
    from amzqa.io.layout import MANIFEST

    out = args.artifacts or work / "artifacts"
    if not (out / MANIFEST).is_file():
        build_index(IndexConfig.from_yaml(ROOT / "configs" / "index.yaml", corpus=corpus, out=out))
    return out


def sft(args, corpus: Path, artifacts: Path, work: Path) -> Path:
    from amzqa.io.layout import MANIFEST
    from amzqa.training.sft_data import SFTDataConfig, build_sft_data

    out = work / "sft"
    if not (out / MANIFEST).is_file():
        build_sft_data(SFTDataConfig.from_yaml(ROOT / "configs" / "sft.yaml", corpus=corpus, artifacts=artifacts,
                                               out=out, max_products=args.sft_products))
    return out


def overrides(pairs: list[str]) -> dict[str, str]:
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise SystemExit(f"--set takes KEY=VALUE, got {bad}")
    return dict(p.split("=", 1) for p in pairs)


def train(args, data: Path, work: Path) -> tuple[dict, float | None]:
    import torch

    from amzqa.training.config import TrainConfig
    from amzqa.training.train import train as run

    cfg = TrainConfig.from_yaml(args.recipe, model=args.model, data=data, out=work / "train", max_steps=args.steps,
                                **overrides(args.set))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    prov = run(cfg)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return prov, peak


def evaluate(args, artifacts: Path, adapter: Path, prov: dict) -> dict:
    """Base and fine-tuned answer the same prompts; the base renders them with the recipe's template if its tokenizer
    has none (the fine-tuned adapter's tokenizer carries the one it was trained with)."""
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation
    from amzqa.generation import GenerationConfig, load_generator

    cfg = GenerationEvalConfig(artifacts=artifacts, n=args.eval_n, bootstrap=200, abstention_auc=False,
                               systems=f"base,adapter:{adapter}")
    device = prov["device"]
    gen = GenerationConfig(model=args.model, device=device, load_in_4bit=prov["qlora"]["load_in_4bit"] and device == "cuda",
                           dtype="bfloat16" if device == "cuda" else "float32", max_new_tokens=cfg.max_new_tokens,
                           chat_template=prov["config"]["chat_template"])
    systems = (("base", load_generator("hf", config=gen)), ("fine-tuned", load_generator("hf", adapter=str(adapter), config=gen)))
    return evaluate_generation(cfg, systems=systems)


def report(args, machine: str, prov: dict, peak: float | None, ev: dict, seconds: float) -> str:
    m = prov["metrics"]
    tokens_s = prov["train_tokens"] / prov["train_seconds"] if prov.get("train_tokens") else None
    setup = table(["measure", "value"], [
        ["recipe", Path(args.recipe).name], ["model", args.model], ["steps", prov["steps"]],
        ["device / batching", f"{prov['device']} / {prov['batching']}"],
        ["train tokens/s (non-padding)", f"{tokens_s:,.0f}" if tokens_s else "n/a"],
        ["peak GPU memory (GiB)", f"{peak:.1f}" if peak is not None else "n/a (no GPU)"],
        ["train loss / eval loss", f"{m.get('train_loss')} / {m.get('eval_loss')}"],
        ["wall time (min)", f"{seconds / 60:.1f}"]])
    rows = []
    for key in MEASURES:
        cells = []
        for name in ("base", "fine-tuned"):
            s = ev["systems"][name].get(key)
            cells.append("–" if s is None else f"{s['value']:.3f} [{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]")
        d = ev["differences"]["fine-tuned - base"].get(key)
        rows.append([key, *cells, "–" if d is None else f"{d['value']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"])
    compare = table(["measure (95% interval)", "base", "fine-tuned", "difference"], rows)
    return (f"# GPU check — {Path(args.recipe).stem}\n\n{machine}\n\n{setup}\n\n"
            f"Generation evaluation, {ev['n_questions']} questions ({ev['abstention_cases']} should abstain), "
            f"same prompts for both:\n\n{compare}\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local checkpoint of the recipe's base model (no hub access)")
    ap.add_argument("--recipe", type=Path, default=RECIPE)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--corpus", type=Path, help="a prepared corpus (amzqa prepare); default: synthesise --synth records")
    ap.add_argument("--synth", type=int, default=2_248_619, help="synthetic records when no --corpus (trn.json's size)")
    ap.add_argument("--artifacts", type=Path, help="an index of that corpus (default: built in --workdir)")
    ap.add_argument("--sft-products", type=int, default=20_000, help="products the SFT data is written from")
    ap.add_argument("--eval-n", type=int, default=200, help="generation evaluation questions")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "gpu-check")
    ap.add_argument("--report", type=Path, default=ROOT / "reports" / "gpu-check.md")
    args = ap.parse_args()
    print_machine()
    from amzqa.runtime.machine import probe
    from amzqa.runtime.machine import report as machine_report

    machine = "```\n" + machine_report(probe()) + "\n```"
    started = time.perf_counter()
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = catalog(args, args.workdir)
    artifacts = index(args, corpus, args.workdir)
    data = sft(args, corpus, artifacts, args.workdir)
    prov, peak = train(args, data, args.workdir)
    ev = evaluate(args, artifacts, args.workdir / "train" / "adapter", prov)
    text = report(args, machine, prov, peak, ev, time.perf_counter() - started)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text, encoding="utf-8")
    print(text)
    print(f"report written to {args.report}")


if __name__ == "__main__":
    main()
