"""Issue #5: training tokens/s of our batching vs trl's default padded batching, same data and steps, one run.

    python benchmarks/bench_train.py [--data runs/demo/sft] [--steps 4] [--batch 8]

Throughput counts real (non-padding) tokens. Rows: trl's default (random order, each batch padded to its
longest example, trl's fused LM head over every position), each of our two changes alone — length-grouped batches,
and the LM head run only at answer positions (on devices without Triton trl scores every position and masks the
prompt afterwards) — then both together (what `amzqa train` does on CPU), the CPU recipe as shipped (plus bf16 where
the CPU has native bf16: precision, not batching, shown separately), and padding-free (one flattened sequence per
batch, what we use with FlashAttention on a GPU; on a CPU its attention spans the whole flattened batch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, print_machine, table  # noqa: E402


def padding_ceiling(data: Path, batch: int, seed: int = 0) -> dict[str, float]:
    """Share of trl's default batches that is padding, and so the most any batching can gain over it.

    Batching changes which tokens are computed, not how fast each is: removing all padding speeds training up
    by at most 1 / (1 - padding share). Measured on the tokenised training examples, random order as trl's
    default sampler, versus length-sorted batches.
    """
    import numpy as np
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from amzqa.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    ds = load_from_disk(str(data / "dataset"))["train"]
    texts = [tok.apply_chat_template(list(e["prompt"]) + list(e["completion"]), tokenize=False) for e in ds]
    lengths = np.array([len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]])

    def pad_share(order):
        groups = [lengths[order[i:i + batch]] for i in range(0, len(order) - batch + 1, batch)]
        return 1 - sum(g.sum() for g in groups) / sum(g.max() * len(g) for g in groups)

    random_pad = pad_share(np.random.default_rng(seed).permutation(len(lengths)))
    sorted_pad = pad_share(np.argsort(lengths, kind="stable"))
    return {"examples": len(lengths), "p50": float(np.median(lengths)), "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()), "random_pad": random_pad, "sorted_pad": sorted_pad,
            "ceiling": (1 - sorted_pad) / (1 - random_pad)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "sft")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ceiling-only", action="store_true", help="only the padding analysis (no training)")
    ap.add_argument("--padding-free", action="store_true", help="also time padding-free batching (the GPU path) on this CPU")
    args = ap.parse_args()
    print_machine()

    c = padding_ceiling(args.data, args.batch)
    print(f"{c['examples']} examples, tokens p50 {c['p50']:.0f} / p95 {c['p95']:.0f} / max {c['max']}; padding in "
          f"trl's default batches of {args.batch}: {c['random_pad']:.1%}, length-sorted: {c['sorted_pad']:.1%}; "
          f"most any batching can gain: {c['ceiling']:.2f}x", flush=True)
    if args.ceiling_only:
        return

    from amzqa.training.config import TrainConfig
    from amzqa.training.train import build_trainer

    rows, base = [], None
    # (label, batching, answer-only head, bf16)
    variants = [("trl default: padded, random order, head on every position, fp32", "padded", False, False),
                ("length-grouped batches only, fp32", "length_grouped", False, False),
                ("answer-only LM head only, fp32", "padded", True, False),
                ("amzqa on CPU: length-grouped + answer-only head, fp32", "length_grouped", True, False),
                ("padding-free (GPU path) + answer-only head, on CPU, fp32", "padding_free", True, False)]
    if not args.padding_free:
        # On CPU the flattened batch runs masked attention over all of it: slower, and at batch 8 it was killed for
        # memory on this 24 GiB machine. Opt in with --padding-free.
        variants = [v for v in variants if v[1] != "padding_free"]
    if TrainConfig(bf16="auto", device="cpu").use_bf16("cpu"):
        variants.insert(4, ("amzqa CPU recipe: the above + bf16 (native)", "length_grouped", True, True))
    # Warm-up (discarded): the first training run in a process pays one-time costs (kernel selection, allocator).
    with tempfile.TemporaryDirectory() as tmp:
        warm, _ = build_trainer(TrainConfig(data=args.data, out=Path(tmp), max_steps=1, device="cpu", save_steps=10_000,
                                            per_device_train_batch_size=2, seed=0), progress=False)
        warm.train()
        del warm
    for label, batching, answer_head, bf16 in variants:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(data=args.data, out=Path(tmp), batching=batching, max_steps=args.steps, device="cpu", bf16=bf16,
                              answer_only_head=answer_head,
                              per_device_train_batch_size=args.batch, save_steps=10_000, logging_steps=1, seed=0)
            trainer, _ = build_trainer(cfg, progress=False)
            t = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - t
            tokens = trainer.state.num_input_tokens_seen
            tps = tokens / seconds
            base = base or tps
            rows.append([label, args.steps, args.batch, f"{tokens:,}", f"{seconds:.0f}", f"{tps:,.0f}", f"{tps / base:.2f}×"])
            print("row:", " | ".join(str(c) for c in rows[-1]), flush=True)
            del trainer
    print(table(["batching", "steps", "batch", "real tokens", "seconds", "real tokens/s", "vs trl default"], rows))


if __name__ == "__main__":
    main()
