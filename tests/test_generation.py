import pytest

from amzqa.errors import ArtifactError, ConfigError
from amzqa.generation import ExtractiveGenerator, GenerationConfig, Generator, load_generator
from amzqa.prompt import ABSTAIN_MESSAGE, build_prompt
from amzqa.records import Product

P = [
    Product(0, "U1", "Lodge Cast Iron Skillet", "Pre-seasoned with vegetable oil. Hand wash only, dry promptly."),
    Product(1, "U2", "Acme Toaster", "Two slots with bagel setting. Crumb tray slides out."),
]


def test_extractive_answers_from_the_named_product_with_citations():
    gen = ExtractiveGenerator()
    assert isinstance(gen, Generator)
    text = gen.generate(build_prompt("how do I wash the lodge skillet?", P))
    assert "Hand wash only" in text and "[1]" in text and "[2]" not in text
    assert "".join(gen.stream(build_prompt("how do I wash the lodge skillet?", P))) == text


def test_extractive_abstains_when_nothing_matches():
    assert ExtractiveGenerator().generate(build_prompt("petrol lawn mower horsepower", P)) == ABSTAIN_MESSAGE


def test_hf_stream_holds_the_lock_only_during_a_step(hf_generator):
    """Between pieces the lock is free: a stream left half-read cannot block anyone (no lock across a yield)."""
    stream = hf_generator.stream(build_prompt("Tell me about the Lodge skillet.", P))
    assert next(stream)
    assert hf_generator._lock.acquire(timeout=1)
    hf_generator._lock.release()
    stream.close()


def test_hf_generate_and_stream_agree(hf_generator):
    prompt = build_prompt("How should I clean the Lodge skillet?", P)
    text = hf_generator.generate(prompt)
    pieces = list(hf_generator.stream(prompt))
    assert text and len(pieces) > 1
    assert "".join(pieces).strip() == text


def test_stream_decodes_exactly_the_tokens_generate_picks():
    import torch

    from amzqa.generation import HFGenerator

    gen = HFGenerator(GenerationConfig(max_new_tokens=40))
    for question in ("Is the toaster good for bagels?", "Reply with one word: is a skillet a pan?"):
        enc = gen._encode(build_prompt(question, P))
        with torch.inference_mode():
            reference = gen.model.generate(**enc, **gen._gen_kwargs())[0, enc["input_ids"].shape[1]:].tolist()
            stepped = list(gen._decode(enc))
        eos = gen.tokenizer.eos_token_id
        assert stepped == [t for t in reference if t != eos][: len(stepped)] and len(stepped) >= len(reference) - 1
        assert "".join(gen.stream(build_prompt(question, P))) == gen.generate(build_prompt(question, P))


def test_hf_stops_at_eos():
    from amzqa.generation import HFGenerator

    gen = HFGenerator(GenerationConfig(max_new_tokens=200))
    prompt = build_prompt("Reply with one word: is a toaster a kitchen appliance?", P)
    enc = gen._encode(prompt)
    import torch

    with torch.inference_mode():
        out = gen.model.generate(**enc, **gen._gen_kwargs())
    new = out[0, enc["input_ids"].shape[1]:]
    assert len(new) < 200 and new[-1].item() == gen.tokenizer.eos_token_id


def test_load_generator_by_name_and_default():
    from amzqa.generation.openvino import find_export, openvino_available

    assert load_generator("extractive").name == "extractive"
    assert load_generator("hf").name == "hf"  # the model is provisioned by make test
    # The default: the in-process engine where installed and exported (make test's models fetch does both).
    assert load_generator(None).name == ("openvino" if openvino_available() and find_export("smollm2") else "hf")
    with pytest.raises(ConfigError):
        load_generator("gpt-17")
    with pytest.raises(ConfigError, match="needs base_url"):
        GenerationConfig(backend="openai")


def test_generation_config_contradictions():
    with pytest.raises(ConfigError):
        GenerationConfig(dtype="float16", device="cpu")
    with pytest.raises(ConfigError):
        GenerationConfig(max_new_tokens=0)


def test_auto_dtype_follows_the_hardware(monkeypatch):
    import torch

    from amzqa.generation import hf

    assert hf.resolve_dtype("float32", "cpu") is torch.float32
    assert hf.resolve_dtype("auto", "cuda") is torch.bfloat16
    monkeypatch.setattr(hf, "cpu_has_native_bf16", lambda: False)
    assert hf.resolve_dtype("auto", "cpu") is torch.float32  # emulated bf16 would be slower than fp32
    monkeypatch.setattr(hf, "cpu_has_native_bf16", lambda: True)
    assert hf.resolve_dtype("auto", "cpu") is torch.bfloat16


def test_adapter_folder_is_checked(tmp_path):
    from amzqa.generation.hf import check_adapter

    with pytest.raises(ArtifactError, match="not a LoRA adapter"):
        check_adapter(tmp_path, "unused")


def test_adapter_trained_on_another_prompt_format_is_reported(tmp_path, caplog):
    import json

    from amzqa.generation.hf import check_adapter
    from amzqa.layout import ADAPTER_PROVENANCE
    from amzqa.prompt import template_fingerprint

    (tmp_path / "adapter_config.json").write_text("{}")
    for template, warned in (("0123456789abcdef", True), (template_fingerprint(), False)):
        (tmp_path / ADAPTER_PROVENANCE).write_text(json.dumps({"data": {"prompt": {"template": template}}}))
        caplog.clear()
        with caplog.at_level("WARNING", logger="amzqa.generation.hf"):
            check_adapter(tmp_path, str(tmp_path / "no-such-base"))
        assert ("another prompt format" in caplog.text) is warned
