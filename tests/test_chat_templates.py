"""Shipped chat templates (Mistral, TinyLlama/Zephyr, Phi-3) and the GPU recipes that use them."""

from __future__ import annotations

import pytest

from amzqa.chat import SHIPPED, ensure_chat_template, load_template
from amzqa.errors import ConfigError
from amzqa.prompt import build_prompt, render
from amzqa.records import Product
from tests.conftest import ROOT

MARKERS = {"mistral": ("[INST] ", "[/INST]"), "zephyr": ("<|system|>\n", "<|user|>\n", "<|assistant|>\n"),
           "phi3": ("<|system|>\n", "<|user|>\n", "<|end|>\n", "<|assistant|>\n")}
SOURCES = [Product(0, "B07QXV6N1B", "JBL Flip 5 Waterproof Portable Bluetooth Speaker", "IPX7 waterproof. 12 hours of playtime.")]


def bare_tokenizer():
    """The provisioned SmolLM2 tokenizer with its chat template taken away (like Mistral's or TinyLlama's files
    without one)."""
    from transformers import AutoTokenizer

    from amzqa.models import default_generator_path

    tok = AutoTokenizer.from_pretrained(default_generator_path())
    tok.chat_template = None
    return tok


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_training_and_inference_render_the_same_prompt(name):
    """trl trains on render(prompt + answer) with the loss on what follows render(prompt); inference answers
    render(prompt). The prompt must therefore be a byte-identical prefix of the training text."""
    tok = bare_tokenizer()
    assert ensure_chat_template(tok, name) == name
    prompt = build_prompt("Is the JBL Flip 5 waterproof?", SOURCES)
    answer = "JBL Flip 5 [1]: IPX7 waterproof [1]."
    asked, trained = render(tok, prompt), render(tok, prompt, answer)
    assert trained.startswith(asked), (asked[-80:], trained[len(asked) - 80:])
    assert trained[len(asked):].lstrip().startswith(answer)
    system = prompt.messages[0]["content"]
    assert system in asked and "Is the JBL Flip 5 waterproof?" in asked  # the system text survives (Mistral has no system role)
    for marker in MARKERS[name]:
        assert marker in trained, marker


def test_the_models_own_template_wins_and_none_at_all_is_refused(tmp_path):
    from transformers import AutoTokenizer

    from amzqa.models import default_generator_path

    own = AutoTokenizer.from_pretrained(default_generator_path())
    before = own.chat_template
    assert ensure_chat_template(own, "mistral") == "own" and own.chat_template == before
    with pytest.raises(ConfigError, match="has no chat template"):
        ensure_chat_template(bare_tokenizer(), None)
    custom = tmp_path / "t.jinja"
    custom.write_text(load_template("phi3"))
    assert ensure_chat_template(bare_tokenizer(), str(custom)) == str(custom)
    with pytest.raises(ConfigError, match="neither a shipped template"):
        load_template("llama-9")


ARCHITECTURES = {  # recipe -> (transformers config class, tiny sizes with the real attention layout)
    "mistral-7b-instruct-v0.3-qlora.yaml": ("MistralConfig", {"num_key_value_heads": 2, "sliding_window": 32}),
    "tinyllama-1.1b-chat-qlora.yaml": ("LlamaConfig", {"num_key_value_heads": 1}),
    "phi-3-mini-4k-instruct-qlora.yaml": ("Phi3Config", {"num_key_value_heads": 4, "pad_token_id": 0, "eos_token_id": 1,
                                                         "bos_token_id": 1}),
}


@pytest.mark.parametrize("recipe", sorted(ARCHITECTURES))
def test_every_lora_target_of_a_recipe_is_a_linear_layer_of_its_architecture(recipe):
    """A tiny randomly initialised model of the recipe's architecture: each named target module exists as a Linear
    layer (Phi-3's fused qkv_proj / gate_up_proj included), and every Linear layer but the LM head is targeted."""
    import torch
    import transformers

    from training.config import TrainConfig

    cfg = TrainConfig.from_yaml(ROOT / "configs" / "train" / recipe)
    config_name, extra = ARCHITECTURES[recipe]
    config = getattr(transformers, config_name)(vocab_size=256, hidden_size=64, intermediate_size=128,
                                                num_hidden_layers=2, num_attention_heads=4, **extra)
    model = transformers.AutoModelForCausalLM.from_config(config)
    linear = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = set(cfg.target_modules.split(","))
    assert targets <= linear, targets - linear
    assert linear - targets == {"lm_head"}
    assert cfg.chat_template in SHIPPED and cfg.load_in_4bit and cfg.double_quant and cfg.gradient_checkpointing
