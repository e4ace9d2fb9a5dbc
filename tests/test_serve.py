"""``amzqa serve`` lifecycle, authentication and the client's server kind, against real child processes and tiny
fake HTTP servers on 127.0.0.1 (no vLLM or llama.cpp needed).

The fake "engine" is a small Python HTTP server script started exactly as ``start`` starts an engine (its own
process group, the environment :func:`amzqa.runtime.serve.command` builds), with one worker child in its group, so what
``stop`` has to clean up is what a real engine leaves: a group, not one process."""

from __future__ import annotations

import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from amzqa.errors import AmzqaError, ConfigError
from amzqa.records import Product
from amzqa.runtime import serve
from tests.conftest import free_port

ENGINE = r'''
import http.server, json, os, subprocess, sys, time
host, port, pidfile, body, key_env = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # in our process group
with open(pidfile + ".tmp", "w") as f:
    f.write(f"{os.getpid()} {worker.pid}")
os.replace(pidfile + ".tmp", pidfile)
if body == "-":  # an engine still loading: never answers
    time.sleep(600)
key = os.environ.get(key_env) if key_env != "-" else None

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self.send_response(401); self.end_headers(); self.wfile.write(b'{"error": "Unauthorized"}'); return
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer((host, port), H).serve_forever()
'''

MODELS_OK = json.dumps({"object": "list", "data": [{"id": "base", "object": "model", "owned_by": "llamacpp"}]})


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    return _state(pid) not in (None, "Z", "X")  # a zombie is dead, waiting only for its parent to reap it


def _all_gone(pids, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _read_pids(pidfile: Path, within: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within
    while not pidfile.is_file():
        assert time.monotonic() < deadline, "the fake engine never started"
        time.sleep(0.02)
    return [int(p) for p in pidfile.read_text().split()]


@pytest.fixture
def engine(tmp_path, monkeypatch):
    """Replace the engine's argv by the fake engine (keeping the environment the real ``command`` builds); returns a
    function ``(body, key_env="-", host="127.0.0.1") -> (cfg kwargs, pidfile)``. Whatever it started and left
    alive is killed at teardown (by pid: only these processes)."""
    script = tmp_path / "fake_engine.py"
    script.write_text(ENGINE)
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")  # gguf_for accepts a .gguf file as it is: the real command() runs, argv swapped
    pidfiles: list[Path] = []
    real_command = serve.command

    def use(body: str, key_env: str = "-", host: str = "127.0.0.1"):
        pidfile = tmp_path / f"engine{len(pidfiles)}.pid"
        pidfiles.append(pidfile)

        def command(cfg):
            _, env = real_command(cfg)
            return [sys.executable, str(script), cfg.host, str(cfg.port), str(pidfile), body, key_env], env

        monkeypatch.setattr(serve, "command", command)
        return dict(engine="llamacpp", model=str(gguf), host=host, port=free_port()), pidfile

    yield use
    for pidfile in pidfiles:
        if pidfile.is_file():
            for pid in (int(p) for p in pidfile.read_text().split()):
                if _alive(pid):
                    os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- lifecycle: interrupts during start-up


CHILD = r'''
import signal, sys
# Ctrl-C as a terminal delivers it: a test run launched in the background by a shell without job control inherits
# SIGINT ignored (POSIX), which would leave this child deaf to the interrupt the test sends.
signal.signal(signal.SIGINT, signal.default_int_handler)
from amzqa.runtime import serve
from amzqa.cli.main import main

script, pidfile, port, gguf, how = sys.argv[1:6]
real = serve.command


def command(cfg):  # the real command's environment, the fake engine's argv
    _, env = real(cfg)
    return [sys.executable, script, cfg.host, str(cfg.port), pidfile, "-", "-"], env


serve.command = command
if how == "start":
    try:
        serve.start(serve.ServeConfig(engine="llamacpp", model=gguf, port=int(port), startup_timeout_s=60))
    except KeyboardInterrupt:
        sys.exit(42)
    sys.exit(1)


class Reached(Exception):
    pass


def outer(*_):  # what TERM does if cmd_serve has no handler yet: not kill the process, but show the failure
    raise Reached


signal.signal(signal.SIGTERM, outer)
rc = main(["serve", "--engine", "llamacpp", "--model", gguf, "--port", port, "--startup-timeout-s", "60"])
sys.exit(rc if signal.getsignal(signal.SIGTERM) is outer else 99)  # cmd_serve restores the handler it replaced
'''


@pytest.mark.parametrize("how, sig, code", [("start", signal.SIGINT, 42), ("cli", signal.SIGTERM, 0)],
                         ids=["ctrl-c during start", "TERM to amzqa serve during start-up"])
def test_an_interrupt_during_startup_stops_the_engine_and_its_group(tmp_path, how, sig, code):
    """A process of its own, as a user's ``amzqa serve`` is: Ctrl-C (KeyboardInterrupt out of ``start``) or TERM (exit
    0 from the CLI) while the engine is still loading takes the engine and its workers down, within a bound."""
    (tmp_path / "fake_engine.py").write_text(ENGINE)
    (tmp_path / "child.py").write_text(CHILD)
    gguf, pidfile = tmp_path / "model.gguf", tmp_path / "engine.pid"
    gguf.write_bytes(b"GGUF")
    proc = subprocess.Popen([sys.executable, str(tmp_path / "child.py"), str(tmp_path / "fake_engine.py"), str(pidfile),
                             str(free_port()), str(gguf), how], start_new_session=True)
    pids = []
    try:
        pids = _read_pids(pidfile, within=60)
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == code and time.monotonic() - started < 30
        assert _all_gone(pids), "an interrupt during start-up left the engine (or its worker) running"
    finally:
        for pid in [proc.pid, *pids]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- lifecycle: whose server answers


class _Models(http.server.BaseHTTPRequestHandler):
    body = MODELS_OK.encode()
    key: str | None = None
    posts: list = []

    def do_GET(self):
        if self.key and self.headers.get("Authorization") != f"Bearer {self.key}":
            self.send_response(401)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def do_POST(self):  # a streamed chat completion: one piece, then [DONE]
        self.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "base",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hand wash only [1]."},
                              "finish_reason": None}]}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode())

    def log_message(self, *a):
        pass


@pytest.fixture
def fake_server():
    """A fake OpenAI-compatible server in a thread: ``(port, handler class)``; set ``body``/``key`` on the class."""
    handler = type("Handler", (_Models,), {"posts": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


def test_start_refuses_a_port_another_process_already_owns(engine, fake_server):
    port, _ = fake_server  # answers /v1/models with the expected name: today start() takes it for our engine
    kw, pidfile = engine(MODELS_OK)
    cfg = serve.ServeConfig(**{**kw, "port": port}, startup_timeout_s=20)
    server = None
    try:
        with pytest.raises(AmzqaError, match=f"127.0.0.1:{port} is already in use"):
            server = serve.start(cfg)
    finally:
        if server is not None:
            server.stop()
    assert not pidfile.exists(), "the engine was started on a port already taken"


def test_ready_only_when_the_expected_models_are_listed(engine, tmp_path):
    kw, pidfile = engine(json.dumps({"data": [{"id": "someone-else"}]}))
    log_path = tmp_path / "engine.log"
    server = None
    try:
        with pytest.raises(AmzqaError, match="'base'") as failure:
            server = serve.start(serve.ServeConfig(**kw, startup_timeout_s=3), log_path=log_path)
    finally:
        if server is not None:
            server.stop()
    assert _all_gone(_read_pids(pidfile))
    assert failure.value is not None and _log_fds(log_path) == []  # the error's frames must not keep the log open


def _log_fds(log_path: Path) -> list[str]:
    return [fd for fd in os.listdir("/proc/self/fd") if _readlink(f"/proc/self/fd/{fd}") == str(log_path)]


@pytest.mark.parametrize("body", ["not json", '{"data": [{"name": "base"}]}', "[1, 2]", '{"data": 5}', '{"data": [7]}'])
def test_a_malformed_models_body_is_not_ready_and_stops_the_engine(engine, body):
    kw, pidfile = engine(body)
    started = time.monotonic()
    with pytest.raises(AmzqaError, match="unexpected"):
        serve.start(serve.ServeConfig(**kw, startup_timeout_s=2))
    assert time.monotonic() - started < 15
    assert _all_gone(_read_pids(pidfile)), "a malformed /v1/models body orphaned the engine"


def test_start_serves_and_closes_its_log_file_in_the_parent(engine, tmp_path):
    kw, pidfile = engine(MODELS_OK)
    log_path = tmp_path / "engine.log"
    with serve.start(serve.ServeConfig(**kw, startup_timeout_s=20), log_path=log_path) as server:
        assert server.models() == ["base"]
        assert _log_fds(log_path) == [], "the parent keeps the engine's log file open"
    assert _all_gone(_read_pids(pidfile))


def _readlink(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


# ---------------------------------------------------------------- lifecycle: stop()

GROUP = r'''
import os, signal, subprocess, sys, time
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
worker = subprocess.Popen([sys.executable, "-c", stubborn if sys.argv[2] == "stubborn" else "import time; time.sleep(600)"])
time.sleep(0.3)  # the worker has installed its handler
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(worker.pid))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
if sys.argv[3] == "leader-exits":
    sys.exit(0)
time.sleep(600)
'''


@pytest.mark.parametrize("worker,leader", [("plain", "leader-exits"), ("stubborn", "leader-stays"),
                                           ("stubborn", "leader-exits")])
def test_stop_kills_the_whole_group_within_a_bound(tmp_path, worker, leader):
    pidfile = tmp_path / "worker.pid"
    process = subprocess.Popen([sys.executable, "-c", GROUP, str(pidfile), worker, leader], start_new_session=True)
    try:
        (worker_pid,) = _read_pids(pidfile)
        if leader == "leader-exits":
            process.wait(10)
        server = serve.Server(serve.ServeConfig(), process, None)
        started = time.monotonic()
        server.stop(timeout=1.0)
        assert time.monotonic() - started < 10
        assert _all_gone([worker_pid, process.pid], within=2), "stop() left a process of the engine's group running"
        server.stop(timeout=1.0)  # twice is harmless
    finally:
        for pid in (process.pid, *([int(pidfile.read_text())] if pidfile.is_file() else [])):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        process.poll()


# ---------------------------------------------------------------- authentication


def test_readiness_and_models_send_the_api_key(fake_server, monkeypatch):
    port, handler = fake_server
    handler.key = "s3cret"
    monkeypatch.setenv("AMZQA_TEST_SERVE_KEY", "s3cret")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    try:
        keyed = serve.Server(serve.ServeConfig(port=port, api_key_env="AMZQA_TEST_SERVE_KEY", startup_timeout_s=10),
                             sleeper, None)
        assert keyed.wait_ready() is keyed and keyed.models() == ["base"]

        started = time.monotonic()
        with pytest.raises(AmzqaError, match="API key"):  # no key: a clear error at once, not a silent timeout
            serve.Server(serve.ServeConfig(port=port, startup_timeout_s=30), sleeper, None).wait_ready()
        assert time.monotonic() - started < 10
        assert sleeper.poll() is not None  # a failed wait_ready stops the process it waited for
    finally:
        if sleeper.poll() is None:
            os.killpg(sleeper.pid, signal.SIGKILL)
            sleeper.wait()


def test_the_engine_gets_the_key_from_its_environment_and_readiness_uses_it(engine, monkeypatch):
    monkeypatch.setenv("AMZQA_TEST_SERVE_KEY", "s3cret-2")
    kw, pidfile = engine(MODELS_OK, key_env="LLAMA_API_KEY")  # the fake engine enforces what llama.cpp would
    with serve.start(serve.ServeConfig(**kw, api_key_env="AMZQA_TEST_SERVE_KEY", startup_timeout_s=20)) as server:
        assert server.models() == ["base"]
    assert _all_gone(_read_pids(pidfile))


def test_the_key_goes_to_the_engine_by_environment_never_argv(tmp_path, monkeypatch):
    from amzqa import models
    from amzqa.runtime import engines

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("AMZQA_TEST_SERVE_KEY", "s3cret-3")
    argv, env = serve.command(serve.ServeConfig(engine="llamacpp", model=str(gguf), api_key_env="AMZQA_TEST_SERVE_KEY"))
    assert env["LLAMA_API_KEY"] == "s3cret-3" and not any("s3cret" in a for a in argv)

    monkeypatch.setattr(models, "resolve_model", lambda name: str(tmp_path))
    monkeypatch.setattr(engines, "executable", lambda venv: Path(sys.executable))
    monkeypatch.setattr(serve, "_cuda", lambda: False)
    argv, env = serve.command(serve.ServeConfig(api_key_env="AMZQA_TEST_SERVE_KEY"))
    assert env["VLLM_API_KEY"] == "s3cret-3" and not any("s3cret" in a for a in argv)

    monkeypatch.delenv("AMZQA_TEST_SERVE_KEY")
    with pytest.raises(ConfigError, match="AMZQA_TEST_SERVE_KEY"):  # named but unset: refused, not served open
        serve.command(serve.ServeConfig(api_key_env="AMZQA_TEST_SERVE_KEY"))


def test_the_engines_use_the_cpus_this_process_may_run_on(tmp_path, monkeypatch):
    from amzqa import models
    from amzqa.runtime import engines

    assert serve.cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and serve.cpu_list([3]) == "3"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(models, "resolve_model", lambda name: str(tmp_path))
    monkeypatch.setattr(engines, "executable", lambda venv: Path(sys.executable))
    monkeypatch.setattr(serve, "_cuda", lambda: False)
    before = os.sched_getaffinity(0)
    last = max(before)
    os.sched_setaffinity(0, {last})  # as a container limited to one CPU that is not CPU 0
    try:
        argv, _ = serve.command(serve.ServeConfig(engine="llamacpp", model=str(gguf)))
        _, env = serve.command(serve.ServeConfig())
    finally:
        os.sched_setaffinity(0, before)
    assert argv[argv.index("--threads") + 1] == "1" and env["VLLM_CPU_OMP_THREADS_BIND"] == str(last)


def test_concurrent_gguf_conversions_never_share_a_file(tmp_path, monkeypatch):
    from amzqa.runtime import engines

    monkeypatch.setenv("AMZQA_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    outs, started = [], threading.Barrier(2)

    def convert(src, out, outtype):  # the converter writes its output file in pieces
        outs.append(Path(out))
        with open(out, "wb") as f:
            f.write(b"GG")
            started.wait(10)
            f.write(b"UF")
        return Path(out)

    monkeypatch.setattr(engines, "convert_to_gguf", convert)
    got = []
    threads = [threading.Thread(target=lambda: got.append(serve.gguf_for(str(source)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(outs)) == 2 and len(got) == 2 and got[0] == got[1] and got[0].read_bytes() == b"GGUF"
    assert sorted(p.name for p in got[0].parent.iterdir()) == [got[0].name]  # no temporary file left


def test_the_llamacpp_launcher_reads_its_key_from_the_environment(monkeypatch, tmp_path):
    import types

    from amzqa.runtime import llamacpp_server

    seen = {}

    class Params:
        def __init__(self):
            self.model = types.SimpleNamespace()
            self.cpuparams = types.SimpleNamespace()
            self.cpuparams_batch = types.SimpleNamespace()

    class FakeServer:
        listening_address = "fake"

        def __init__(self, p):
            seen["api_keys"] = list(getattr(p, "api_keys", []))
            raise SystemExit(0)  # the real one serves until TERM

    monkeypatch.setitem(sys.modules, "xllamacpp", types.SimpleNamespace(CommonParams=Params, Server=FakeServer))
    monkeypatch.setenv("LLAMA_API_KEY", "s3cret-4")
    with pytest.raises(SystemExit):
        llamacpp_server.main(["--model", str(tmp_path / "m.gguf")])
    assert seen["api_keys"] == ["s3cret-4"]


def test_serving_beyond_loopback_without_a_key_warns(engine, caplog):
    kw, _ = engine(MODELS_OK, host="0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="amzqa.runtime.serve"), serve.start(serve.ServeConfig(**kw, startup_timeout_s=20)):
        pass
    assert any("0.0.0.0" in r.getMessage() and "api_key_env" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- the client: server kind


def _generator(port: int, **kw):
    from amzqa.generation import GenerationConfig
    from amzqa.generation.openai_client import OpenAIGenerator

    return OpenAIGenerator(GenerationConfig(backend="openai", base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5,
                                            max_retries=0, **kw))


def _adapter(tmp_path: Path) -> Path:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "amzqa_abstention.json").write_text(json.dumps({"threshold": -3.5}))
    return adapter


def test_server_kind_vllm_behind_a_proxy_keeps_penalty_ban_and_calibrated_abstention(fake_server, tmp_path):
    from amzqa.generation.prompt import build_prompt

    port, handler = fake_server
    handler.body = json.dumps({"object": "list", "data": [{"id": "base", "object": "model", "created": 0,
                                                           "owned_by": "openai"}]}).encode()  # what LiteLLM says
    gen = _generator(port, server_kind="vllm", adapter=str(_adapter(tmp_path)))
    assert gen.abstain_threshold is not None and gen.abstain_threshold.default == -3.5
    assert gen._request(True)["extra_body"]["bad_words"]

    plain = _generator(port, server_kind="vllm", calibrated_abstention=False)
    prompt = build_prompt("How do I clean the skillet?", [Product(0, "U1", "Lodge Skillet", "Hand wash only.")])
    assert "".join(plain.stream(prompt)) == "Hand wash only [1]."
    assert handler.posts[-1]["repetition_penalty"] == 1.1  # what went over the wire


def test_server_kind_auto_warns_naming_the_setting_when_owned_by_is_unknown(fake_server, tmp_path, caplog):
    port, handler = fake_server
    handler.body = json.dumps({"object": "list", "data": [{"id": "base", "object": "model", "created": 0,
                                                           "owned_by": "openai"}]}).encode()
    with caplog.at_level(logging.WARNING, logger="amzqa.generation.openai_client"):
        gen = _generator(port, adapter=str(_adapter(tmp_path)))
    assert gen.abstain_threshold is None and gen._request(True)["extra_body"] == {}  # auto: as before, but said
    assert any("server_kind" in r.getMessage() and "openai" in r.getMessage() for r in caplog.records)

    handler.body = json.dumps({"object": "list", "data": [{"id": "base", "object": "model", "created": 0,
                                                           "owned_by": "vllm"}]}).encode()
    (tmp_path / "second").mkdir()
    assert _generator(port, adapter=str(_adapter(tmp_path / "second"))).abstain_threshold is not None  # vLLM itself


def test_server_kind_is_validated():
    from amzqa.generation import GenerationConfig

    with pytest.raises(ConfigError, match="server_kind"):
        GenerationConfig(server_kind="litellm")
