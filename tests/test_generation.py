import pytest

from amzqa.errors import ArtifactError, ConfigError
from amzqa.generation import ExtractiveGenerator, GenerationConfig, Generator, load_generator
from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt
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
    (tmp_path / "config.json").write_text("{}")  # a whole model (a full fine-tune's model/) passed as an adapter
    with pytest.raises(ArtifactError, match="whole model .* pass it as the model"):
        check_adapter(tmp_path, "unused")


def test_adapter_trained_on_another_prompt_format_is_reported(tmp_path, caplog):
    import json

    from amzqa.generation.hf import check_adapter
    from amzqa.generation.prompt import template_fingerprint
    from amzqa.io.layout import ADAPTER_PROVENANCE

    (tmp_path / "adapter_config.json").write_text("{}")
    for template, warned in (("0123456789abcdef", True), (template_fingerprint(), False)):
        (tmp_path / ADAPTER_PROVENANCE).write_text(json.dumps({"data": {"prompt": {"template": template}}}))
        caplog.clear()
        with caplog.at_level("WARNING", logger="amzqa.generation.hf"):
            check_adapter(tmp_path, str(tmp_path / "no-such-base"))
        assert ("another prompt format" in caplog.text) is warned


def _model_with_stop_ids(tmp_path, extra: list[int]):
    """The packaged SmolLM2 folder (files linked) whose generation_config lists extra end-of-turn ids, as Phi-3's
    and Llama-3's do."""
    import json

    from amzqa.models import default_generator_path

    src, dst = default_generator_path(), tmp_path / "smollm2-stops"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "generation_config.json":
            (dst / f.name).symlink_to(f)
    cfg = json.loads((src / "generation_config.json").read_text())
    cfg["eos_token_id"] = [cfg["eos_token_id"], *extra]
    (dst / "generation_config.json").write_text(json.dumps(cfg))
    return dst


def test_every_end_of_turn_id_the_model_lists_stops_generation(tmp_path):
    from amzqa.generation import HFGenerator

    prompt = build_prompt("Is the toaster good for bagels?", P)
    plain = HFGenerator(GenerationConfig(max_new_tokens=24))
    tokens = list(plain._decode(plain._encode(prompt)))
    assert len(tokens) > 4
    stop = tokens[3]  # pretend the model's 4th token ends its turn
    gen = HFGenerator(GenerationConfig(model=str(_model_with_stop_ids(tmp_path, [stop])), max_new_tokens=24))
    assert stop in gen.stop_ids and plain.tokenizer.eos_token_id in gen.stop_ids
    expected = plain.tokenizer.decode(tokens[:tokens.index(stop)], skip_special_tokens=True).strip()
    assert gen.generate(prompt) == expected
    assert "".join(gen.stream(prompt)) == expected


@pytest.mark.parametrize("text", [
    "Hand wash only, dry promptly.", "  A caixa de som é à prova d'água: até 1 metro, por 30 minutos!",
    "Ages 4–99 🧱 · 790 pièces, 10 couleurs", "防水 IPX7 スピーカー", "Price:  $19.99\n\nTwo  spaces.",
])
def test_streamed_pieces_join_to_the_full_decode(text):
    """The incremental detokeniser (tokenizers' DecodeStream) against one decode of all ids: nothing lost or added,
    multi-byte characters never split."""
    from transformers import AutoTokenizer

    from amzqa.generation.abstention import stream_text
    from amzqa.models import default_generator_path

    tok = AutoTokenizer.from_pretrained(default_generator_path())
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = list(stream_text(tok, iter(ids)))
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True).strip()
    assert all("\ufffd" not in p for p in pieces) and len(pieces) > 1


def test_the_abstention_opening_is_banned_in_every_spelling_and_nothing_else():
    """A fine-tuned model kept from abstaining once wrote "The catalogue does not answer this question." when only the
    message's own second token was banned: every spelling of its opening is banned, a normal "The ..." start is not."""
    import torch
    from transformers import AutoTokenizer

    from amzqa.generation.abstention import abstention_opening
    from amzqa.generation.hf import OpeningBan
    from amzqa.models import default_generator_path

    tok = AutoTokenizer.from_pretrained(default_generator_path())
    firsts, seconds = abstention_opening(tok)

    def opening(text):
        return tok(text, add_special_tokens=False)["input_ids"][:2]

    for text in (ABSTAIN_MESSAGE, "The catalogue does not answer this question.", "The Catalog has nothing.",
                 "the catalogs say nothing", "The catalogs"):
        first, second = opening(text)
        assert first in firsts and second in seconds, text
    for text in ("The cat tree is 32 inches tall.", "The case is hand wash only.", "The category is toys.",
                 "The capacity is 5 quarts.", "The cable is 6 feet long."):
        first, second = opening(text)
        assert first in firsts and second not in seconds, text

    prompt_len, (the, catalogue), (_, cable) = 3, opening("The catalogue"), opening("The cable")
    ban = OpeningBan(prompt_len, firsts, seconds)
    scores = torch.zeros(1, len(tok))
    assert torch.isinf(ban(torch.tensor([[7, 8, 9, the]]), scores.clone())[0, catalogue])
    assert not torch.isinf(ban(torch.tensor([[7, 8, 9, the]]), scores.clone())[0, cable])
    # mid-answer the words are free
    assert not torch.isinf(ban(torch.tensor([[7, 8, 9, 5, the]]), scores.clone())[0, catalogue])
