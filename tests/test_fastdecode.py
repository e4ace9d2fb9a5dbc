"""The CPU decode path: int8 weight-only layers and the growing KV cache with one-row GQA attention."""

import pytest
import torch
from torch import nn

from amzqa.errors import ConfigError
from amzqa.generation import GenerationConfig
from amzqa.prompt import build_prompt
from amzqa.records import Product

P = [
    Product(0, "U1", "Lodge Cast Iron Skillet", "Pre-seasoned with vegetable oil. Hand wash only, dry promptly."),
    Product(1, "U2", "Acme Toaster", "Two slots with bagel setting. Crumb tray slides out."),
]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("rows", [1, 3, 40])  # <= 16 rows: int8 kernel; more: dequantised matmul
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_matches_the_float_layer(rows, dtype):
    from amzqa.generation.quant import Int8Linear, int8_supported

    if not int8_supported():
        pytest.skip("this torch has no CPU int8 weight-only kernel")
    torch.manual_seed(0)
    lin = nn.Linear(96, 48, bias=True).to(dtype)
    q = Int8Linear(lin)
    x = torch.randn(2, rows, 96, dtype=dtype)
    with torch.inference_mode():
        ref, got = lin(x), q(x)
    assert got.shape == ref.shape and got.dtype == dtype
    assert _rel(got, ref) < 0.02  # per-channel int8: ~0.5-1% here
    assert q.qweight.dtype == torch.int8 and q.qweight.element_size() * q.qweight.numel() == 96 * 48


def test_quantize_int8_keeps_lora_matrices_exact():
    from peft import LoraConfig, get_peft_model

    from amzqa.generation.quant import Int8Linear, quantize_int8

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["0"], init_lora_weights=False))
    lora = {n: p.detach().clone() for n, p in peft_model.named_parameters() if "lora_" in n}
    x = torch.randn(3, 32)
    with torch.inference_mode():
        ref = peft_model(x)
    assert quantize_int8(peft_model) == 2  # the LoRA layer's base and the plain second layer
    kinds = {n: type(m).__name__ for n, m in peft_model.named_modules()}
    assert any(n.endswith("0.base_layer") and k == "Int8Linear" for n, k in kinds.items())
    assert all(k == "Linear" for n, k in kinds.items() if n.endswith(("lora_A.default", "lora_B.default")))
    after = dict(peft_model.named_parameters())
    assert all(torch.equal(after[n], p) for n, p in lora.items())
    with torch.inference_mode():
        assert _rel(peft_model(x), ref) < 0.02
    assert isinstance(peft_model.base_model.model[2], Int8Linear)


def test_fast_decode_gives_the_stock_tokens(monkeypatch):
    """Same fp32 weights: the growing cache + one-row attention pick exactly transformers' tokens."""
    from amzqa.generation import HFGenerator
    from amzqa.generation.fastdecode import GrowingLayer

    monkeypatch.setattr(GrowingLayer, "chunk", 8)  # grow (and copy) the buffer several times within 40 tokens
    cfg = GenerationConfig(max_new_tokens=40, dtype="float32", weight_quant="none")
    fast, stock = HFGenerator(cfg), HFGenerator(cfg.replace(fast_decode=False))
    assert fast.fast_decode and not stock.fast_decode
    assert fast.model.config._attn_implementation == "amzqa_decode"
    for question in ("How should I clean the Lodge skillet?", "Does the toaster take bagels?"):
        prompt = build_prompt(question, P)
        with torch.inference_mode():
            tokens = list(fast._decode(fast._encode(prompt)))
            reference = list(stock._decode(stock._encode(prompt)))
        assert len(tokens) > 8 and tokens == reference
        assert fast.generate(prompt) == stock.generate(prompt)  # model.generate with the growing cache too


def test_default_cpu_generator_uses_int8(hf_generator):
    from amzqa.generation.quant import Int8Linear, int8_supported

    if not int8_supported():
        pytest.skip("this torch has no CPU int8 weight-only kernel")
    assert hf_generator.weight_quant == "int8"
    layers = [m for m in hf_generator.model.modules() if isinstance(m, Int8Linear)]
    assert len(layers) == 1 + 7 * hf_generator.model.config.num_hidden_layers  # lm_head + q,k,v,o,gate,up,down
    assert not any(type(m) is nn.Linear for m in hf_generator.model.modules())
    text = hf_generator.generate(build_prompt("How should I clean the Lodge skillet?", P))
    assert len(text.split()) >= 3


def test_int8_config_contradictions():
    with pytest.raises(ConfigError, match="load_in_4bit"):
        GenerationConfig(weight_quant="int8", load_in_4bit=True)
    with pytest.raises(ConfigError, match="weight_quant"):
        GenerationConfig(weight_quant="int4")
