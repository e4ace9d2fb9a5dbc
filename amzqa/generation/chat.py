"""Chat templates shipped with amzqa, for base models whose tokenizer has none or one unfit for training.

Training (trl renders prompt + answer) and inference (:func:`amzqa.generation.prompt.render`) both go through the tokenizer's
chat template, so a model must carry one: the model's own where its tokenizer has it, else the one its recipe names
(``chat_template: mistral | zephyr | phi3 | gemma`` or a path to a ``.jinja`` file). Training forces the recipe's template
over the model's own (``override=True``), and refuses any template under which the prompt alone is not a prefix of the
prompt followed by its answer (:func:`check_prompt_prefix`): trl masks the loss from where the two diverge, so such a
template trains on a prompt inference never shows (Mistral-7B-Instruct-v0.3's own template puts the system text only
in a last user turn). The tokenizer saved beside an adapter keeps the template, so the fine-tuned model answers in
the format it was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from amzqa.errors import ConfigError

log = logging.getLogger(__name__)
TEMPLATE_DIR = Path(__file__).parent / "chat_templates"
SHIPPED = {"mistral": "Mistral [INST]", "zephyr": "TinyLlama / Zephyr <|user|>", "phi3": "Phi-3 <|user|> ... <|end|>",
           "gemma": "Gemma 3 <start_of_turn>user ... <end_of_turn> (for the base model, which carries none)"}


def load_template(name_or_path: str) -> str:
    """A shipped template by name, or a template file."""
    if name_or_path in SHIPPED:
        return (TEMPLATE_DIR / f"{name_or_path}.jinja").read_text(encoding="utf-8")
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"chat_template {name_or_path!r}: neither a shipped template ({', '.join(SHIPPED)}) nor a file")


def ensure_chat_template(tokenizer, fallback: str | None, override: bool = False) -> str:
    """Give ``tokenizer`` the ``fallback`` template when it has none, or always with ``override`` (training: the
    recipe's template wins over the model's own); return which one it uses ('own' or the name).
    Refuses a tokenizer with no template and no fallback: training would render prompts inference cannot match."""
    name = getattr(tokenizer, "name_or_path", None) or "the tokenizer"
    if getattr(tokenizer, "chat_template", None) and not (override and fallback):
        if fallback:
            log.info("the tokenizer has its own chat template; %r is not used", fallback)
        return "own"
    if not fallback:
        raise ConfigError(f"{name} has no chat template; name one in the "
                          f"recipe (chat_template: {' | '.join(SHIPPED)} | path/to/template.jinja)")
    template = load_template(fallback)
    if getattr(tokenizer, "chat_template", None) and tokenizer.chat_template != template:
        log.info("%s: the recipe's chat template %r replaces the tokenizer's own", name, fallback)
    tokenizer.chat_template = template
    return fallback


PROBE = [{"role": "system", "content": "Answer from the sources."},
         {"role": "user", "content": "Is it waterproof?\n\nSources:\n[1] Speaker: IPX7 waterproof."}]
PROBE_ANSWER = "Yes, it is IPX7 waterproof [1]."


def prompt_prefix_mismatch(tokenizer, messages: list[dict] | None = None, answer: str | None = None) -> str | None:
    """Where the rendered prompt (with the generation prompt, as inference and trl render it) stops being a prefix
    of the rendered prompt + answer (as trl renders a training example); None when it is one."""
    messages = list(messages or PROBE)
    answer = PROBE_ANSWER if answer is None else answer
    asked = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    trained = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    if trained.startswith(asked):
        return None
    at = next((i for i, (a, b) in enumerate(zip(asked, trained)) if a != b), min(len(asked), len(trained)))
    return (f"from character {at} the prompt reads {asked[max(0, at - 30):at + 50]!r} but the training text reads "
            f"{trained[max(0, at - 30):at + 50]!r}")


def check_prompt_prefix(tokenizer, model: str, template: str, messages: list[dict] | None = None,
                        answer: str | None = None) -> None:
    """Refuse a chat template under which render(prompt) is not a prefix of render(prompt, answer): trl's completion
    mask starts where the two diverge, so the model would be trained on a prompt inference never shows it (and short
    answers could lose every label). ``template`` is what :func:`ensure_chat_template` returned."""
    where = prompt_prefix_mismatch(tokenizer, messages, answer)
    if where is None:
        return
    which = "its own chat template" if template == "own" else f"the chat template {template!r}"
    raise ConfigError(f"{model}: {which} renders the prompt differently once an answer follows it ({where}); "
                      f"training would learn from a prompt inference never shows. Name a template whose prompt is a "
                      f"prefix of the training text in the recipe (chat_template: {' | '.join(SHIPPED)} | "
                      f"path/to/template.jinja); it replaces the model's own")
