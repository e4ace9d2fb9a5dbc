"""Issue #5: training tokens/s of our batching vs trl's default padded batching, same data and steps, one run.

    python benchmarks/bench_train.py [--data runs/demo/sft] [--steps 4] [--batch 8]

Throughput counts real (non-padding) tokens. Rows: trl's default (random order, each batch padded to its
longest example), ours on CPU (length-grouped batches), and padding-free (one flattened sequence per batch,
what we use with FlashAttention on a GPU; on a CPU its attention spans the whole flattened batch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import ROOT, table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "runs" / "demo" / "sft")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()

    from training.config import TrainConfig
    from training.train import build_trainer

    rows, base = [], None
    for label, batching in (("trl default: padded, random order", "padded"), ("amzqa on CPU: length-grouped", "length_grouped"),
                            ("padding-free (GPU path), on CPU", "padding_free")):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = TrainConfig(data=args.data, out=Path(tmp), batching=batching, max_steps=args.steps, device="cpu",
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
