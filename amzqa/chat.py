"""Chat templates shipped with amzqa, for base models whose tokenizer has none.

Training (trl renders prompt + answer) and inference (:func:`amzqa.prompt.render`) both go through the tokenizer's
chat template, so a model must carry one: the model's own where its tokenizer has it, else the one its recipe names
(``chat_template: mistral | zephyr | phi3`` or a path to a ``.jinja`` file). The tokenizer saved beside an adapter
keeps it, so the fine-tuned model answers in the format it was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from amzqa.errors import ConfigError

log = logging.getLogger(__name__)
TEMPLATE_DIR = Path(__file__).parent / "chat_templates"
SHIPPED = {"mistral": "Mistral [INST]", "zephyr": "TinyLlama / Zephyr <|user|>", "phi3": "Phi-3 <|user|> ... <|end|>"}


def load_template(name_or_path: str) -> str:
    """A shipped template by name, or a template file."""
    if name_or_path in SHIPPED:
        return (TEMPLATE_DIR / f"{name_or_path}.jinja").read_text(encoding="utf-8")
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    raise ConfigError(f"chat_template {name_or_path!r}: neither a shipped template ({', '.join(SHIPPED)}) nor a file")


def ensure_chat_template(tokenizer, fallback: str | None) -> str:
    """Give ``tokenizer`` the ``fallback`` template when it has none; return which one it uses ('own' or the name).
    Refuses a tokenizer with no template and no fallback: training would render prompts inference cannot match."""
    if getattr(tokenizer, "chat_template", None):
        if fallback:
            log.info("the tokenizer has its own chat template; %r is not used", fallback)
        return "own"
    if not fallback:
        raise ConfigError(f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has no chat template; name one in the "
                          f"recipe (chat_template: {' | '.join(SHIPPED)} | path/to/template.jinja)")
    tokenizer.chat_template = load_template(fallback)
    return fallback
