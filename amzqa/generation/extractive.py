"""A generator without a language model: the description sentences that best match the question, cited.

It is the fallback where no model is installed, and the baseline the fine-tuned model must beat.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from amzqa.generation.prompt import ABSTAIN_MESSAGE, Prompt, sanitize
from amzqa.grounding.facts import answers, asked_facts
from amzqa.grounding.text import content_words

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class ExtractiveGenerator:
    name = "extractive"

    def __init__(self, max_sentences: int = 2, min_overlap: float = 0.2) -> None:
        self.max_sentences = max_sentences
        self.min_overlap = min_overlap

    def _candidates(self, prompt: Prompt) -> list[tuple[float, int, str]]:
        q = content_words(prompt.question)
        if not q:
            return []
        facts = asked_facts(prompt.question)
        out = []
        for n, product in enumerate(prompt.sources, 1):
            title_overlap = len(q & content_words(product.title)) / len(q)
            sentences = [s for s in _SENTENCE.split(sanitize(product.content)) if s] or [product.title]
            for s in sentences:
                overlap = len(q & content_words(s)) / len(q)
                # The named product's sentences win ties, the more so when one states the kind of fact asked for
                # ("Hand wash only." for "dishwasher safe?"); earlier sources slightly preferred.
                out.append((overlap + title_overlap * (1 + 0.5 * answers(s, facts)) - 0.02 * (n - 1), n, s))
        out.sort(key=lambda t: -t[0])
        return out

    def generate(self, prompt: Prompt) -> str:
        ranked = self._candidates(prompt)
        if not ranked or ranked[0][0] < self.min_overlap:
            return ABSTAIN_MESSAGE
        best = ranked[0][0]
        chosen = [c for c in ranked if c[0] >= 0.6 * best][: self.max_sentences]
        return " ".join(f"{s.rstrip()} [{n}]" for _, n, s in chosen)

    def stream(self, prompt: Prompt) -> Iterator[str]:
        words = self.generate(prompt).split(" ")
        for i, w in enumerate(words):
            yield w if i == 0 else " " + w
