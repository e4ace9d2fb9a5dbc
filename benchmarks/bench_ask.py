"""Issue #4: latency of ``QA.ask`` per stage, and time to first token, with the default model on this CPU.

    python benchmarks/bench_ask.py [--sample runs/demo/artifacts] [--large runs/bench/artifacts-full] [--n 20] [--baseline]

``--baseline`` also runs transformers' stock decoding (bf16 weights, DynamicCache, SDPA: what ``HFGenerator`` did
before the int8 + fast-decode path) on the same questions and prints the speed-up. Questions come from the evaluation's question generator (held-out products); each is asked once through
``QA.stream`` (which records the first-token time) with at most ``--max-new-tokens`` new tokens.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, table  # noqa: E402


def measure(artifacts: Path, n: int, max_new_tokens: int, generator, k: int = 5, excerpt_chars: int = 300) -> dict[str, list[float]]:
    from amzqa.evaluation.questions import make_questions
    from amzqa.evaluation.retrieval_eval import heldout_products
    from amzqa.pipeline import QA
    from amzqa.retrieval import RetrieverSet

    rset = RetrieverSet(artifacts)
    from amzqa.pipeline import QAConfig

    qa = QA(rset, generator, QAConfig(k=k, excerpt_chars=excerpt_chars))
    products = heldout_products(rset.store, 0.15, n, seed=1)
    questions = [q for q in make_questions(products, seed=1) if q.kind == "title"][:n]
    qa.ask(questions[0].text)  # warm-up
    stages: dict[str, list[float]] = {}
    for q in questions:
        t = time.perf_counter()
        stream = qa.stream(q.text)
        for _ in stream:
            pass
        answer = stream.answer
        answer.timings["total_s"] = time.perf_counter() - t
        answer.timings["new_tokens"] = len(generator.tokenizer(answer.raw_text or answer.text)["input_ids"])
        for k_, v in answer.timings.items():
            stages.setdefault(k_, []).append(v)
    return stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, default=ROOT / "runs" / "demo" / "artifacts")
    ap.add_argument("--large", type=Path, default=ROOT / "runs" / "bench" / "artifacts-full")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--k", type=int, default=5, help="sources per prompt")
    ap.add_argument("--excerpt-chars", type=int, default=300, help="description characters per source")
    ap.add_argument("--baseline", action="store_true", help="also time transformers' stock decoding and print the ratio")
    args = ap.parse_args()

    import numpy as np

    from amzqa.generation import GenerationConfig, HFGenerator

    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens)
    variants = [("amzqa (int8, fast decode)", cfg)]
    if args.baseline:
        variants.append(("stock (bf16, DynamicCache, SDPA)", cfg.replace(weight_quant="none", fast_decode=False)))
    rows, ratios, p50 = [], [], {}
    for name, path in (("sample (313 products)", args.sample), ("synthetic full (>= 1M products)", args.large)):
        if not (path / "manifest.json").is_file():
            print(f"skipping {name}: no artifact at {path}")
            continue
        for label, gen_cfg in variants:
            gen = HFGenerator(gen_cfg)
            stages = measure(path, args.n, args.max_new_tokens, gen, args.k, args.excerpt_chars)
            del gen
            for stage in ("retrieve_s", "relevance_s", "prompt_s", "first_token_s", "generate_s", "total_s"):
                if stage in stages:
                    v = np.array(stages[stage]) * 1000
                    p50[(name, label, stage)] = np.percentile(v, 50)
                    rows.append([name, label, stage.removesuffix("_s"), f"{np.percentile(v, 50):,.0f}",
                                 f"{np.percentile(v, 95):,.0f}", len(v)])
            # Per generated token, since the two paths may write answers of different lengths.
            per_tok = np.array(stages["generate_s"]) / np.maximum(np.array(stages["new_tokens"]), 1) * 1000
            p50[(name, label, "ms_per_token")] = float(np.median(per_tok))
        if args.baseline:
            ours, stock = (lab for lab, _ in variants)
            for stage in ("first_token_s", "total_s", "ms_per_token"):
                ratios.append([name, stage.removesuffix("_s"), f"{p50[(name, stock, stage)]:,.1f}",
                               f"{p50[(name, ours, stage)]:,.1f}", f"{p50[(name, stock, stage)] / p50[(name, ours, stage)]:.2f}x"])
    print(f"k={args.k} sources x {args.excerpt_chars} characters, max_new_tokens={args.max_new_tokens}\n")
    print(table(["index", "generator", "stage", "p50 ms", "p95 ms", "questions"], rows))
    if ratios:
        print("\nspeed-up of p50 over transformers' stock decoding (ms per token = generate time / tokens written)\n")
        print(table(["index", "p50 of", "stock", "amzqa", "speed-up"], ratios))


if __name__ == "__main__":
    main()
