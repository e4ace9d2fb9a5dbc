"""Shipped chat templates (Mistral, TinyLlama/Zephyr, Phi-3) and the GPU recipes that use them."""

from __future__ import annotations

import pytest

from amzqa.errors import ConfigError
from amzqa.generation.chat import (
    SHIPPED,
    check_prompt_prefix,
    ensure_chat_template,
    load_template,
    prompt_prefix_mismatch,
)
from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt, render
from amzqa.records import Product
from tests.conftest import ROOT

MARKERS = {"mistral": ("[INST] ", "[/INST]"), "zephyr": ("<|system|>\n", "<|user|>\n", "<|assistant|>\n"),
           "phi3": ("<|system|>\n", "<|user|>\n", "<|end|>\n", "<|assistant|>\n"),
           "gemma": ("<start_of_turn>user\n", "<end_of_turn>\n", "<start_of_turn>model\n")}
SOURCES = [Product(0, "B07QXV6N1B", "JBL Flip 5 Waterproof Portable Bluetooth Speaker", "IPX7 waterproof. 12 hours of playtime.")]


# The chat templates the real models' tokenizers carry (their tokenizer_config.json / chat_template.jinja), verbatim.
# Mistral-7B-Instruct-v0.3: mistralai's "v3" template (as in llama.cpp's tests/test-chat-template.cpp): the system
# text goes into the user turn only when that turn is the last message, i.e. only when no answer follows it.
MISTRAL_V03 = (
    '{%- if messages[0]["role"] == "system" %}\n    {%- set system_message = messages[0]["content"] %}\n'
    '    {%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n'
    '{%- if not tools is defined %}\n    {%- set tools = none %}\n{%- endif %}\n'
    '{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}\n\n'
    '{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}\n'
    '{%- set ns = namespace() %}\n{%- set ns.index = 0 %}\n{%- for message in loop_messages %}\n'
    '    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and '
    'message.tool_calls is not none)) %}\n'
    '        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}\n'
    '            {{- raise_exception("After the optional system message, conversation roles must alternate '
    'user/assistant/user/assistant/...") }}\n'
    '        {%- endif %}\n        {%- set ns.index = ns.index + 1 %}\n    {%- endif %}\n{%- endfor %}\n\n'
    '{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message["role"] == "user" %}\n'
    '        {%- if tools is not none and (message == user_messages[-1]) %}\n'
    '            {{- "[AVAILABLE_TOOLS] [" }}\n            {%- for tool in tools %}\n'
    '                {%- set tool = tool.function %}\n'
    '                {{- \'{"type": "function", "function": {\' }}\n'
    '                {%- for key, val in tool.items() if key != "return" %}\n'
    '                    {%- if val is string %}\n'
    '                        {{- \'"\' + key + \'": "\' + val + \'"\' }}\n'
    '                    {%- else %}\n'
    '                        {{- \'"\' + key + \'": \' + val|tojson }}\n'
    '                    {%- endif %}\n                    {%- if not loop.last %}\n'
    '                        {{- ", " }}\n                    {%- endif %}\n                {%- endfor %}\n'
    '                {{- "}}" }}\n                {%- if not loop.last %}\n                    {{- ", " }}\n'
    '                {%- else %}\n                    {{- "]" }}\n                {%- endif %}\n'
    '            {%- endfor %}\n            {{- "[/AVAILABLE_TOOLS]" }}\n            {%- endif %}\n'
    '        {%- if loop.last and system_message is defined %}\n'
    '            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}\n'
    '        {%- else %}\n            {{- "[INST] " + message["content"] + "[/INST]" }}\n        {%- endif %}\n'
    '    {%- elif message.tool_calls is defined and message.tool_calls is not none %}\n'
    '        {{- "[TOOL_CALLS] [" }}\n        {%- for tool_call in message.tool_calls %}\n'
    '            {%- set out = tool_call.function|tojson %}\n            {{- out[:-1] }}\n'
    '            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}\n'
    '                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
    '            {%- endif %}\n            {{- \', "id": "\' + tool_call.id + \'"}\' }}\n'
    '            {%- if not loop.last %}\n                {{- ", " }}\n            {%- else %}\n'
    '                {{- "]" + eos_token }}\n            {%- endif %}\n        {%- endfor %}\n'
    '    {%- elif message["role"] == "assistant" %}\n        {{- " " + message["content"]|trim + eos_token}}\n'
    '    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}\n'
    '        {%- if message.content is defined and message.content.content is defined %}\n'
    '            {%- set content = message.content.content %}\n        {%- else %}\n'
    '            {%- set content = message.content %}\n        {%- endif %}\n'
    '        {{- \'[TOOL_RESULTS] {"content": \' + content|string + ", " }}\n'
    '        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}\n'
    '            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}\n'
    '        {%- endif %}\n'
    '        {{- \'"call_id": "\' + message.tool_call_id + \'"}[/TOOL_RESULTS]\' }}\n    {%- else %}\n'
    '        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial '
    'optional system message!") }}\n    {%- endif %}\n{%- endfor %}\n')
# TinyLlama-1.1B-Chat-v1.0 (Zephyr format).
TINYLLAMA = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
             "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}"
             "\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
             "{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}")
# Phi-3-mini-4k-instruct.
PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + "
        "'<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif "
        "message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
# recipe's shipped template -> the template the real model's own tokenizer carries
OWN = {"mistral": MISTRAL_V03, "zephyr": TINYLLAMA, "phi3": PHI3, "gemma": None}  # Gemma-3-270M base carries none


def tokenizer_with(template: str | None = None):
    """The provisioned SmolLM2 tokenizer (with its own template), or carrying ``template`` as its own, like the real
    model's files."""
    from transformers import AutoTokenizer

    from amzqa.models import default_generator_path

    tok = AutoTokenizer.from_pretrained(default_generator_path())
    if template is not None:
        tok.chat_template = template
    return tok


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_training_and_inference_render_the_same_prompt(name):
    """trl trains on render(prompt + answer) with the loss on what follows render(prompt); inference answers
    render(prompt). The prompt must therefore be a byte-identical prefix of the training text. The tokenizer carries
    the real model's own template; training forces the recipe's shipped one over it."""
    tok = tokenizer_with(OWN[name])
    assert ensure_chat_template(tok, name, override=True) == name and tok.chat_template == load_template(name)
    prompt = build_prompt("Is the JBL Flip 5 waterproof?", SOURCES)
    answer = "JBL Flip 5 [1]: IPX7 waterproof [1]."
    asked, trained = render(tok, prompt), render(tok, prompt, answer)
    assert trained.startswith(asked), (asked[-80:], trained[len(asked) - 80:])
    assert trained[len(asked):].lstrip().startswith(answer)
    system = prompt.messages[0]["content"]
    assert system in asked and "Is the JBL Flip 5 waterproof?" in asked  # the system text survives (Mistral has no system role)
    for marker in MARKERS[name]:
        assert marker in trained, marker


def test_the_models_own_template_wins_unless_overridden_and_none_at_all_is_refused(tmp_path):
    own = tokenizer_with()
    before = own.chat_template
    assert ensure_chat_template(own, "mistral") == "own" and own.chat_template == before  # inference's fallback
    assert ensure_chat_template(own, None, override=True) == "own" and own.chat_template == before  # nothing named
    assert ensure_chat_template(own, "mistral", override=True) == "mistral" != before  # training: the recipe's wins
    assert own.chat_template == load_template("mistral")
    bare = tokenizer_with()
    bare.chat_template = None  # the condition under test: a model whose files carry no template
    with pytest.raises(ConfigError, match="has no chat template"):
        ensure_chat_template(bare, None)
    custom = tmp_path / "t.jinja"
    custom.write_text(load_template("phi3"))
    assert ensure_chat_template(bare, str(custom)) == str(custom)
    with pytest.raises(ConfigError, match="neither a shipped template"):
        load_template("llama-9")


PROMPT = build_prompt("Is the JBL Flip 5 waterproof?", SOURCES)
ANSWERS = ("JBL Flip 5 [1]: IPX7 waterproof [1].", ABSTAIN_MESSAGE)  # an answer, and the (short) abstention


def test_mistral_v03s_own_template_is_refused_and_the_shipped_one_fixes_it():
    """Mistral-7B-Instruct-v0.3's own template drops the system text from a user turn an answer follows: the prompt
    inference renders is not a prefix of the training text, so trl's completion mask would be shifted (an abstention,
    shorter than the system text, would lose every label). Refused by name; forcing the shipped 'mistral' fixes it."""
    tok = tokenizer_with(MISTRAL_V03)
    tok.name_or_path = "mistralai/Mistral-7B-Instruct-v0.3"
    assert ensure_chat_template(tok, None) == "own"
    asked, trained = render(tok, PROMPT), render(tok, PROMPT, ANSWERS[0])
    system = PROMPT.messages[0]["content"]
    assert system in asked and system not in trained and not trained.startswith(asked)  # the real condition
    assert prompt_prefix_mismatch(tok, list(PROMPT.messages), ABSTAIN_MESSAGE) is not None
    with pytest.raises(ConfigError, match=r"mistralai/Mistral-7B-Instruct-v0\.3: its own chat template renders the "
                                          r"prompt differently.*chat_template: mistral"):
        check_prompt_prefix(tok, tok.name_or_path, "own", list(PROMPT.messages), ANSWERS[0])
    with pytest.raises(ConfigError, match="chat_template"):
        check_prompt_prefix(tok, tok.name_or_path, "own")  # the built-in probe finds it too

    assert ensure_chat_template(tok, "mistral", override=True) == "mistral"
    for answer in ANSWERS:
        assert render(tok, PROMPT, answer).startswith(render(tok, PROMPT))
        check_prompt_prefix(tok, tok.name_or_path, "mistral", list(PROMPT.messages), answer)
    assert system in render(tok, PROMPT, ANSWERS[0])


@pytest.mark.parametrize("own", ["TINYLLAMA", "PHI3", "smollm2"])
def test_prefix_stable_own_templates_pass_the_check(own):
    """TinyLlama's, Phi-3's and SmolLM2's own templates render the prompt as a prefix of the training text: kept."""
    tok = tokenizer_with(globals().get(own))
    assert ensure_chat_template(tok, None) == "own"
    for answer in ANSWERS:
        assert prompt_prefix_mismatch(tok, list(PROMPT.messages), answer) is None
        check_prompt_prefix(tok, own, "own", list(PROMPT.messages), answer)
    check_prompt_prefix(tok, own, "own")


def test_a_shipped_template_that_is_not_prefix_stable_is_refused_by_name(tmp_path):
    """A recipe's own .jinja file gets the same check (here: the system text only in a last user turn)."""
    custom = tmp_path / "last-turn.jinja"
    custom.write_text("{%- for m in messages -%}{%- if m['role'] == 'system' and loop.last != true and "
                      "messages|length == 2 -%}{{- m['content'] + '\\n' -}}{%- elif m['role'] != 'system' -%}"
                      "{{- '<' + m['role'] + '>' + m['content'] + '\\n' -}}{%- endif -%}{%- endfor -%}"
                      "{%- if add_generation_prompt -%}{{- '<assistant>' -}}{%- endif -%}")
    tok = tokenizer_with()
    assert ensure_chat_template(tok, str(custom), override=True) == str(custom)
    with pytest.raises(ConfigError, match=f"tiny-model: the chat template '{custom}' renders"):
        check_prompt_prefix(tok, "tiny-model", str(custom))


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

    from amzqa.training.config import TrainConfig

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
