"""Issue #25: seconds per LoRA training example on this CPU, the selection target against the written answer, and
which instruction set MKL's GEMMs ran (the AVX2 stand-in caps ATen and oneDNN, not MKL).

    python benchmarks/bench_step.py [--sft runs/demo/sft] [--repeats 3]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/bench_step.py

One forward+backward of SmolLM2-135M with LoRA r=16 on all linear layers (fp32, 2 threads), on a selection prompt
(~330 tokens, one label token) and on a generative RAFT prompt with a written answer (~450 tokens), median of
``--repeats``. MKL reports its code path with MKL_VERBOSE=1 (printed once at the first GEMM); the line is shown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import print_machine  # noqa: E402


def mkl_path() -> str:
    """MKL's own statement of the instruction set it dispatches to, from a child with MKL_VERBOSE=1."""
    code = "import torch; a = torch.randn(256, 256); (a @ a).sum()"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "MKL_VERBOSE": "1"}, capture_output=True,
                         text=True, timeout=120).stdout
    line = next((ln for ln in out.splitlines() if "MKL_VERBOSE" in ln and ("Intel" in ln or "ISA" in ln or "AVX" in ln)), "")
    return line.strip()[:200] or "(MKL printed nothing: the GEMM did not go through MKL)"


def step_seconds(model, tok, messages, repeats: int) -> tuple[float, int]:
    import torch

    ids = tok.apply_chat_template(messages, return_dict=True, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    torch.set_num_threads(torch.get_num_threads())
    return statistics.median(times[1:]), ids.shape[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from amzqa.generation.prompt import build_prompt
    from amzqa.generation.select import selection_prompt
    from amzqa.models import resolve_model
    from amzqa.records import Product

    torch.set_num_threads(args.threads)
    print_machine()
    print(f"MKL: {mkl_path()}")
    print(f"torch CPU capability: {torch.backends.cpu.get_cpu_capability()}; ONEDNN_MAX_CPU_ISA="
          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', '-')}; MKL_ENABLE_INSTRUCTIONS={os.environ.get('MKL_ENABLE_INSTRUCTIONS', '-')}")
    path = resolve_model("smollm2")
    tok = AutoTokenizer.from_pretrained(path)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0))
    desc = ("Rugged Bluetooth speaker rated IP67 dustproof and waterproof. Up to 12 hours of playtime. Includes a USB-C "
            "cable; wall charger sold separately. Pairs two speakers for stereo. Floats in water. Five colours. ")
    products = [Product(i, f"U{i}", f"Boomtone Go {i} Portable Speaker", desc * 2) for i in range(3)]
    question = "how many hours does the boomtone go 1 play on a charge?"
    sel, _ = selection_prompt(question, products)
    gen = build_prompt(question, products, 300)
    rows = [("selection (label target)", list(sel.messages) + [{"role": "assistant", "content": "2"}]),
            ("written answer (RAFT target)", list(gen.messages) + [{"role": "assistant", "content":
             "Boomtone Go 1 Portable Speaker [2]: Up to 12 hours of playtime [2]. Floats in water [2]."}])]
    print("\n| example | tokens | s per forward+backward (median) |\n|---|---|---|")
    for name, messages in rows:
        seconds, n = step_seconds(model, tok, messages, args.repeats)
        print(f"| {name} | {n} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
