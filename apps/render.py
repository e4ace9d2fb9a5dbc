"""Pure rendering helpers for the page: product text is data, so it is escaped before any Markdown is built.

Streamlit renders Markdown (not raw HTML unless asked); we still escape Markdown syntax and angle brackets so a
description can neither inject markup nor forge links, images or headings. Our own citation links are added
after escaping.
"""

from __future__ import annotations

import re

from amzqa.generation.prompt import excerpt  # noqa: F401 - re-exported for the page
from amzqa.records import Answer

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


_WORD_JOINER = "\u2060"  # invisible: keeps ``:name:`` from matching Streamlit's emoji and icon shortcodes


def escape(text: str) -> str:
    """Text that Markdown shows literally: HTML-escaped angle brackets and ampersands, Markdown syntax escaped,
    ``$`` escaped (Streamlit renders ``$…$`` as LaTeX) and every ``:`` escaped and followed by a word joiner
    (``:smile:`` would be an emoji, ``:red[...]`` coloured text; the joiner is invisible)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text).replace("\n", " ")
    return text.replace("$", "\\$").replace(":", "\\:" + _WORD_JOINER)


def answer_markdown(answer: Answer) -> str:
    """The answer with every ``[n]`` turned into a link to source card n (anchors ``source-n``)."""
    escaped = escape(answer.text)
    valid = {c.marker for c in answer.citations} | set(range(1, len(answer.sources) + 1))

    def link(m: re.Match) -> str:
        n = int(m.group(1))
        return f"[\\[{n}\\]](#source-{n})" if n in valid else ""

    return re.sub(r"\\\[(\d+)\\\]", link, escaped)


def code_span(text: str) -> str:
    """``text`` as a Markdown code span, shown exactly as it is: nothing is escaped inside (a code span would show
    the backslashes), the fence is longer than any run of backticks in the text, and it is on one line."""
    text = " ".join(text.splitlines())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text[:1] == "`" or text[-1:] == "`" or (text[:1] == " " and text[-1:] == " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


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
