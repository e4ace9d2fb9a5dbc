"""Pure rendering helpers for the page: product text is data, so it is escaped before any Markdown is built.

Streamlit renders Markdown (not raw HTML unless asked); we still escape Markdown syntax and angle brackets so a
description can neither inject markup nor forge links, images or headings. Our own citation links are added
after escaping.
"""

from __future__ import annotations

import re

from amzqa.prompt import excerpt  # noqa: F401 - re-exported for the page
from amzqa.records import Answer

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape(text: str) -> str:
    """Text that Markdown shows literally: HTML-escaped angle brackets and ampersands, Markdown syntax escaped."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", " ")


def answer_markdown(answer: Answer) -> str:
    """The answer with every ``[n]`` turned into a link to source card n (anchors ``source-n``)."""
    escaped = escape(answer.text)
    valid = {c.marker for c in answer.citations} | set(range(1, len(answer.sources) + 1))

    def link(m: re.Match) -> str:
        n = int(m.group(1))
        return f"[\\[{n}\\]](#source-{n})" if n in valid else ""

    return re.sub(r"\\\[(\d+)\\\]", link, escaped)


def card_title(n: int, title: str) -> str:
    return f"[{n}] {title}"



def highlighted(content: str, sentence: str, limit: int = 600) -> str:
    """The description (escaped, cut to ``limit`` around the sentence) with ``sentence`` highlighted; the sentence
    alone, highlighted, when it is not in the description (the title supported it)."""
    sentence = sentence.strip()
    mark = lambda t: f":orange-background[**{escape(t)}**]"  # noqa: E731 - Streamlit's highlight on escaped text
    at = content.find(sentence) if sentence else -1
    if at < 0:
        return mark(sentence) if sentence else escape(excerpt(content, limit))
    start = max(0, at - (limit - len(sentence)) // 2)
    before, after = content[start:at], content[at + len(sentence):][: max(0, limit - len(sentence) - (at - start))]
    return ("… " if start else "") + escape(before) + mark(sentence) + escape(after) + (
        " …" if at + len(sentence) + len(after) < len(content) else "")
