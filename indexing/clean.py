"""Text cleaning for catalog titles and descriptions.

The real file mixes HTML entities (sometimes encoded twice: ``&amp;amp;``), tags, non-NFC Unicode, control
characters and runs of whitespace. Most records need none of this, so a cheap check lets them through
untouched; that fast path is where most of the corpus pipeline's speed comes from.
"""

from __future__ import annotations

import html
import re
import unicodedata

# A tag starts with a letter (or "/" or "!--") right after "<", so "a < b" and "<3" survive.
_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]{0,500}>", re.S)
# C0/C1 controls except tab/newline/CR (folded as whitespace later) and the zero-width space: they separate words.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b]")
# Characters that sit inside a word and show nothing (zero-width non-joiner/joiner, word joiner, BOM, soft hyphen):
# deleted, not made spaces, so "ig\u200dnore" reads "ignore" to everything downstream, the injection filter included.
_INVISIBLE = re.compile(r"[\u200c\u200d\u2060\u00ad\ufeff]")
# Anything that means the slow path is needed for an ASCII string.
_NEEDS_WORK = re.compile(r"[&<\x00-\x1f\x7f]|\s\s")
_MAX_UNESCAPE_ROUNDS = 3  # "&amp;amp;#8217;" needs three rounds; more is never seen in practice


def clean_text(text: str) -> str:
    """Decode entities (repeatedly), strip tags, NFC-normalise, drop controls, collapse whitespace."""
    if not text:
        return ""
    if text.isascii() and _NEEDS_WORK.search(text) is None and text == text.strip():
        return text
    if "&" in text:
        for _ in range(_MAX_UNESCAPE_ROUNDS):
            decoded = html.unescape(text)
            if decoded == text:
                break
            text = decoded
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = _INVISIBLE.sub("", _CONTROL.sub(" ", text))
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def dedup_key(title: str, content: str) -> str:
    """The normalised form two records must share to count as duplicates by (title, content)."""
    return f"{title.casefold()}\x00{content.casefold()}"
