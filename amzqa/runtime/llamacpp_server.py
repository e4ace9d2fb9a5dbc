"""llama.cpp's OpenAI-compatible server from the ``xllamacpp`` wheel, as a process (``amzqa serve --engine
llamacpp`` runs ``python -m amzqa.runtime.llamacpp_server``): one GGUF model under one name, ``--parallel`` slots.
With an API key (``LLAMA_API_KEY`` in the environment, as llama-server reads it; ``amzqa serve`` passes it so), requests
must send ``Authorization: Bearer KEY``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, help="GGUF file")
    ap.add_argument("--alias", default="base", help="model name clients request")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--ctx", type=int, default=4096, help="context tokens per slot")
    ap.add_argument("--parallel", type=int, default=8, help="parallel slots (continuous batching)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--api-key", default=os.environ.get("LLAMA_API_KEY") or None,
                    help="key clients must send (default: $LLAMA_API_KEY; prefer the variable: argv shows in ps)")
    args = ap.parse_args(argv)
    try:
        import xllamacpp
    except ImportError:
        print("amzqa: error: the llamacpp engine needs xllamacpp: pip install 'amzqa[serve]'", file=sys.stderr)
        return 2
    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.model_alias = {args.alias}
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx * args.parallel  # llama.cpp splits the context between slots
    p.hostnames = [args.host]
    p.port = args.port
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = args.threads
    if args.api_key:
        p.api_keys = [args.api_key]
    server = xllamacpp.Server(p)  # serves from its own threads
    print(f"llama.cpp serving {args.model} as {args.alias!r} on {server.listening_address}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    # End now: xllamacpp's destructor waits for the main loop, which an answer in flight holds (a TERM mid-stream then
    # stalled until the KILL). The process is ending anyway; the OS frees the model and the sockets.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
