"""Typed records that cross every boundary of the library: products, hits, citations and answers."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Product:
    """One cleaned catalog record.

    ``row_id`` is the stable integer id given by ``amzqa prepare`` (position among kept records);
    ``uid`` is the Amazon ASIN from ``trn.json``.
    """

    row_id: int
    uid: str
    title: str
    content: str = ""

    @property
    def has_content(self) -> bool:
        return bool(self.content)


@dataclass(frozen=True, slots=True)
class Hit:
    """A retrieved product with its fused score, 1-based rank and the retrievers that found it."""

    product: Product
    score: float
    rank: int
    found_by: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def uid(self) -> str:
        return self.product.uid


@dataclass(frozen=True, slots=True)
class Citation:
    """A source cited by an answer.

    ``marker`` is the ``n`` of ``[n]``; ``attributed`` is True when the model wrote no marker and the
    pipeline attached the citation afterwards to the source that supports the sentence.
    """

    marker: int
    uid: str
    title: str
    attributed: bool = False
    reattributed: bool = False  # the model cited another source, which does not say it; this one does
    sentence: str = ""  # the source's sentence (or title) that supports the cited sentence


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the catalog does say closest to a question it could not answer: source ``marker``'s ``sentence``."""

    marker: int
    uid: str
    title: str
    sentence: str


@dataclass(slots=True)
class Answer:
    """What :meth:`amzqa.QA.ask` returns."""

    question: str
    text: str
    citations: list[Citation]
    sources: list[Hit]
    abstained: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    removed_citations: int = 0
    unsupported: list[str] = field(default_factory=list)  # removed, never shown: no source says them, or not what was asked
    raw_text: str = ""
    hedges: list[str] = field(default_factory=list)  # "no information about X" sentences dropped from the text
    language: str = "en"  # the question's language as detected ("pt" answers are translated)
    question_en: str | None = None  # a translated question: what retrieval and the model were given
    text_en: str | None = None  # a translated answer: the model's checked English text the citations were checked on
    evidence: Evidence | None = None  # an abstention after the check: the sources' sentence closest to the question
    unsupported_reasons: list[str] = field(default_factory=list)  # why each of ``unsupported`` was removed
    retrieved: list[Hit] = field(default_factory=list)  # every retrieved product (``sources``: those the model read)

    @property
    def unsupported_sentences(self) -> list[str]:
        """The former name of :attr:`unsupported`."""
        return self.unsupported
