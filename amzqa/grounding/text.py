"""Small text helpers shared by generation, citation checking and evaluation."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+(?:[.'-][a-z0-9]+)*")
STOPWORDS = frozenset(
    "a an and are as at be but by can do does for from has have how i if in into is it its me my of on or our "
    "so than that the their them then there these they this to was we what when where which who why will with "
    "you your yes no not any about tell please want need looking find something anything item product".split()
)
# Split after sentence punctuation (and after a citation marker that follows it), never before a marker:
# "Ages 4 to 99. [1] Storage box included. [1]" is two sentences, each with its own [1].
_SENTENCE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?]\]))\s+(?=[A-Z0-9\"'(])|(?<=\])\s+(?=[A-Z0-9\"'(])")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def stem(w: str) -> str:  # light plural folding: "kettles" ~ "kettle", "dishes" ~ "dish"
    if len(w) > 4 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def content_words(text: str) -> set[str]:
    return {stem(w) for w in words(text) if w not in STOPWORDS and len(w) > 1}


_ABBREVIATION = re.compile(r"(?:\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|No|Vol|vs|Inc|Ltd|Co|approx|e\.g|i\.e)|\b[A-Z])\.$")


def split_sentences(text: str) -> list[str]:
    out: list[str] = []
    for piece in (s.strip() for s in _SENTENCE.split(text.strip())):
        if not piece:
            continue
        if out and _ABBREVIATION.search(out[-1]):  # "Mr. Darcy", "J. R. R. Tolkien": not a sentence end
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out
