"""Why the transformers backend streams with its own step loop (issue #28): what a second asker waits while a first
stream is left half-read, with our loop against stock ``generate`` + a streamer thread.

Stock: ``model.generate(streamer=...)`` in a worker thread holding the model's lock for the whole answer (the lock
keeps two generations from running their forward passes at once on a small CPU). Ours: ``HFGenerator.stream``, which
holds the lock for one step at a time. The first asker reads one piece and then stops reading without closing its
stream (a slow client, a page the user left open); the second asker's whole answer is timed.

    python benchmarks/bench_stream_lock.py [--tokens 96] [--runs 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import threading
import time

from common import table


def stock_stream(gen, prompt):
    """``generate`` + ``TextIteratorStreamer`` in a thread that holds the model's lock, as the stock recipe does."""
    import torch
    from transformers import TextIteratorStreamer

    enc = gen._encode(prompt)
    streamer = TextIteratorStreamer(gen.tokenizer, skip_prompt=True, skip_special_tokens=True)

    def work():
        with gen._lock, torch.inference_mode():
            gen.model.generate(**enc, **gen._gen_kwargs(), streamer=streamer)

    threading.Thread(target=work, daemon=True).start()
    return iter(streamer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=96, help="max_new_tokens of both answers")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.generation.prompt import build_prompt
    from amzqa.records import Product

    sources = [Product(0, "U1", "Lodge Cast Iron Skillet", "Pre-seasoned with vegetable oil. Hand wash only, dry "
                       "promptly. Works on gas, electric and induction cooktops, in the oven and over a campfire."),
               Product(1, "U2", "Acme Toaster", "Two slots with bagel setting. Crumb tray slides out.")]
    # A long answer for the first asker (no repetition stop), a short one for the second.
    gen = HFGenerator(GenerationConfig(max_new_tokens=args.tokens, calibrated_abstention=False))
    first = build_prompt("Tell me everything about the Lodge skillet and how to use and clean it.", sources)
    second = build_prompt("Is the toaster good for bagels?", sources)
    gen.generate(second)  # warm-up
    rows = []
    for name, open_stream in (("ours: step loop, lock per step", lambda: gen.stream(first)),
                              ("stock: generate + streamer thread", lambda: stock_stream(gen, first))):
        alone, waited = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            gen.generate(second)
            alone.append(time.perf_counter() - t)
            stream = open_stream()
            next(stream)  # the first asker reads one piece, then stops reading
            t = time.perf_counter()
            gen.generate(second)
            waited.append(time.perf_counter() - t)
            for _ in stream:  # drain, so the next run starts clean
                pass
        rows.append([name, f"{statistics.median(alone):.2f}", f"{statistics.median(waited):.2f}"])
    print(f"# second asker's answer while a first stream is half-read; {platform.processor() or platform.machine()}, "
          f"max_new_tokens {args.tokens}, median of {args.runs}\n")
    print(table(["first asker's stream", "second answer alone (s)", "second answer beside it (s)"], rows))


if __name__ == "__main__":
    main()
