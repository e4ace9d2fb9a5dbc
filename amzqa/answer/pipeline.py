"""The QA pipeline: retrieve -> prompt -> generate -> check citations, with calibrated abstention.

    from amzqa import QA
    qa = QA.from_dir("runs/demo/artifacts")               # generator: "hf" if provisioned, else "extractive"
    answer = qa.ask("Is the Lodge skillet dishwasher safe?")
    answer.text, answer.citations[0].uid, answer.sources[0].uid, answer.abstained, answer.timings

The folder is an index artifact (``amzqa index``), sealed by its build: nothing here writes into it.
``qa.save("my-setup.json")`` writes this pipeline's settings and its relevance-gate calibration to a file of your
choice, and ``QA.from_dir(folder, settings="my-setup.json")`` restores them (two set-ups keep two files).

The relevance threshold is fitted for one prompt shape: the index, ``k``, ``mode``, ``excerpt_chars`` and
``answer_rate`` (recorded as ``calibration["fitted_for"]``). A threshold fitted for another shape is never applied: it
is refitted (loading settings for another shape, with a warning; ``ask(k=, mode=)`` with another k or mode, once per
shape). ``calibration_cache=True`` keeps fitted thresholds in the user cache, keyed by the index seal and the shape.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np

from amzqa.answer.citations import check, claim_text
from amzqa.answer.language import ABSTAIN_MESSAGE_PT
from amzqa.config import Config, doc
from amzqa.errors import AmzqaError, ArtifactError, ConfigError
from amzqa.generation import GenerationConfig, Generator, load_generator
from amzqa.generation.prompt import ABSTAIN_MESSAGE, DEFAULT_EXCERPT_CHARS, build_prompt
from amzqa.grounding.facts import answers, asked_facts, fact_words
from amzqa.grounding.identity import (
    describes,
    naming_part,
    series_conflicts,
    size_conflicts,
    unmatched_identifiers,
    variant_conflicts,
)
from amzqa.grounding.text import STOPWORDS, content_words, split_sentences, stem, words
from amzqa.io.atomic import write_json_atomic
from amzqa.io.layout import MANIFEST
from amzqa.records import Answer, Hit

log = logging.getLogger(__name__)
MAX_QUESTION_CHARS = 1000
SETTINGS_FORMAT = "amzqa-qa-settings/1"
GATE_CACHE_FORMAT = "amzqa-gate-calibration/1"
# Bump when the relevance score or the calibration questions change: cached thresholds of older code are not reused.
GATE_METHOD = 10  # 2: hybrid rankings complete the dense scores of lexical candidates; 3: naming-part coverage;
# 4: a described product passes on its description's similarity (``described_threshold`` in the calibration);
# 5: the question's coverage leaves out the words that ask for a kind of fact ("battery life": ``identity_words``);
# 6: hyphenated words match their parts and joined form (``coverage``); a short naming part counts whole or not at all
# 7: a fact's noun ending the naming part before a separated ask moves to the ask ("theragun mini battery life (how ...")
# 8: a described product passes on its description's lead over the others (``described_lead_threshold``)
# 9: "piece count" asks; a naming part of formats and numbers only ("4 pack") names nothing
# 10: a number joined to its unit ("16gb"), dotted names ("no.3"), "whats" not a name (``text_words``)
# A naming part of fewer content words ("kindle oasis") counts only whole: one word of two would pass the gate.
NAMING_MIN_WORDS = 3


def load_settings(path: str | Path) -> dict[str, Any]:
    """QA settings saved by :meth:`QA.save` (format checked); ``index``: the seal of the index they were saved with."""
    path = Path(path)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"QA settings file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(saved, dict) or saved.pop("format", None) != SETTINGS_FORMAT:
        raise ConfigError(f"{path}: not a QA settings file (written by QA.save; format {SETTINGS_FORMAT!r})")
    return saved


@dataclasses.dataclass
class QAConfig(Config):
    """Settings of :class:`QA` (``QA.save`` writes them to a JSON file outside the index)."""

    k: int = doc("Products retrieved; the model reads those of them that pass the relevance gate (focus).", 5)
    mode: str = doc("Retriever: dense, lexical or hybrid.", "hybrid")
    excerpt_chars: int = doc("Characters of each description shown to the model.", DEFAULT_EXCERPT_CHARS)
    abstain_threshold: float | None = doc("Relevance below which the pipeline abstains without generating; "
                                          "null = calibrate on held-out questions at load.", None)
    calibration: dict | None = doc("How abstain_threshold was calibrated (filled in by calibrate()).", None)
    language: str = doc("'auto' = a Portuguese question is answered in Portuguese when the pt extra is installed (the "
                        "question translated to English for retrieval and generation, the checked answer translated back "
                        "with its [n] markers kept); 'en' = every question as English.", "auto")
    answer_rate: float = doc("Calibration target: share of answerable held-out questions that must pass the "
                             "relevance gate. The generator can still abstain after reading the sources, so the "
                             "gate only stops questions nothing in the catalog is close to.", 0.98)
    focus: bool = doc("The model reads only the retrieved products that pass the relevance gate themselves (their own "
                      "relevance reaches the threshold, or, for a question passed on its description, their own "
                      "description match does; a size or sibling the question's name rules out never does); false = "
                      "every retrieved product, as retrieved.", True)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 20:
            raise ConfigError("k must be between 1 and 20")
        if self.mode not in ("dense", "lexical", "hybrid"):
            raise ConfigError(f"mode must be dense, lexical or hybrid, got {self.mode!r}")
        if not 0.5 <= self.answer_rate <= 1.0:
            raise ConfigError("answer_rate must be between 0.5 and 1")
        if self.excerpt_chars < 50:
            raise ConfigError("excerpt_chars must be >= 50")
        if self.language not in ("auto", "en"):
            raise ConfigError(f"language must be auto or en, got {self.language!r}")


def check_question(question: Any) -> str:
    if not isinstance(question, str) or not question.strip():
        raise AmzqaError("the question is empty: ask something about a product")
    if len(question) > MAX_QUESTION_CHARS:
        raise AmzqaError(f"the question is {len(question)} characters long; the limit is {MAX_QUESTION_CHARS}")
    return " ".join(question.split())


class AnswerStream:
    """Iterate for text pieces as they are generated; ``.sources`` is ready at once, ``.answer`` at the end.

    The answer is generated once: iterating the stream again replays the pieces the first pass showed (``.answer``
    stays that pass's); iterating again after a pass stopped part-way (abandoned, or the generator failed) is an
    error, since the rest of the answer is gone."""

    def __init__(self, pieces: Iterator[str], sources: list[Hit], finish) -> None:
        self._pieces, self.sources, self._finish = pieces, sources, finish
        self.answer: Answer | None = None
        self._shown: list[str] | None = None  # the first pass's pieces, once it finished
        self._started = False

    def __iter__(self) -> Iterator[str]:
        if self._shown is not None:
            return iter(list(self._shown))
        return self._generate()

    def _generate(self) -> Iterator[str]:
        if self._started:
            raise AmzqaError("this answer stream was already iterated part-way and cannot be resumed; ask the question "
                             "again for a new stream")
        self._started = True
        collected = []
        for piece in self._pieces:
            collected.append(piece)
            yield piece
        self.answer = self._finish("".join(collected))
        self._shown = collected


class QA:
    def __init__(self, retrievers, generator: Generator, config: QAConfig | None = None,
                 calibration_cache: bool | str | Path = False) -> None:
        """``calibration_cache``: True = keep fitted relevance thresholds in the user cache
        (:func:`gate_cache_dir`), a folder = there, False = fit them in memory only."""
        # The title embeddings are the ones the retriever set loaded with its store (one open: never another build's
        # rows); an ask reads ``self.retrievers`` once, so a reload between two asks never mixes two versions.
        self.retrievers = retrievers
        self.generator = generator
        if hasattr(generator, "use_embedder"):  # a selecting generator weighs its candidates' similarity to the ask
            generator.use_embedder(sentence_embedder(retrievers))
        self.config = config or QAConfig()
        self.calibration_cache = (gate_cache_dir() if calibration_cache is True
                                  else Path(calibration_cache) if calibration_cache else None)
        # fitted for other (k, mode) asked for, once each: (relevance threshold, described threshold)
        self._thresholds: dict[tuple[int, str], tuple[float, float | None]] = {}
        self._thresholds_lock = threading.Lock()
        self.languages = None
        if self.config.language == "auto":
            from amzqa.answer import language

            self.languages = shared_languages() if language.available() else None
        fitted = fitted_for(self.config)
        if self.config.abstain_threshold is not None and fitted is not None and fitted != gate_key(self.config):
            log.warning("the relevance threshold %s was calibrated for %s, this pipeline uses %s: recalibrating it "
                        "(a threshold fitted for another prompt shape is not applied)", self.config.abstain_threshold,
                        describe_shape(fitted), describe_shape(gate_key(self.config)))
            self.config = self.config.replace(abstain_threshold=None, calibration=None)
        if self.config.abstain_threshold is None:
            self.config = self._calibrated(self.config.k, self.config.mode)

    # ------------------------------------------------------------ loading and saving

    @classmethod
    def from_dir(cls, path: str | Path, generator: str | Generator | None = None, adapter: str | None = None,
                 generation: GenerationConfig | None = None, settings: str | Path | None = None,
                 calibration_cache: bool | str | Path = False, **overrides: Any) -> QA:
        """The pipeline over the index at ``path``; ``settings``: a file written by :meth:`save` (its threshold is
        used only for the prompt shape it was fitted for); ``calibration_cache``: as for :class:`QA`."""
        from amzqa.retrieval import RetrieverSet

        path = Path(path)
        saved = load_settings(settings) if settings else {}
        rset = RetrieverSet(path)
        if saved.pop("index", None) != rset.artifacts.manifest["sealed"] and saved.get("abstain_threshold") is not None:
            log.warning("%s was calibrated on another index; recalibrating the relevance threshold", settings)
            saved["abstain_threshold"] = saved["calibration"] = None
        if (saved.get("abstain_threshold") is not None and isinstance(saved.get("calibration"), dict)
                and "fitted_for" not in saved["calibration"]):
            # saved before thresholds recorded their shape: calibrate() fitted it for the saved k, mode, excerpt_chars
            # with a score older than any recorded: refitted like a threshold fitted for another shape
            shape = {k: v for k, v in gate_key(QAConfig.from_dict({**saved, "calibration": None})).items() if k != "score"}
            saved["calibration"] = {**saved["calibration"], "fitted_for": shape}
        # A fine-tuned adapter answers best with the prompt shape it was trained on (recorded in its provenance).
        trained = adapter_prompt(adapter)
        # Generation settings may come as keywords too: model=DIR (an export), base_url=URL, model=NAME on a server.
        gen_keys = {f.name for f in dataclasses.fields(GenerationConfig)} - {f.name for f in dataclasses.fields(QAConfig)}
        gen_changes = {k: overrides.pop(k) for k in list(overrides) if k in gen_keys}
        if generator == "openai" and "model" in gen_changes:
            gen_changes["served_model"] = gen_changes.pop("model")
        generation = (generation or GenerationConfig()).replace(**gen_changes) if gen_changes else generation
        if not trained and generation is not None:
            trained = adapter_prompt(generation.model)  # an export of a fine-tuned model
        config = QAConfig.from_dict({**saved, **trained, **overrides})  # QA refits a threshold fitted for another shape
        return cls(rset, load_generator(generator, adapter=adapter, config=generation), config,
                   calibration_cache=calibration_cache)

    def reload_index(self) -> bool:
        """Load the index again if a newer version was put in its folder (``amzqa index --add/--remove``, a rebuild):
        asks already under way finish on the version they started with, later ones use the new one. The relevance
        threshold is kept (an update changes a few products, not how well questions match). Returns whether it
        changed."""
        from amzqa.retrieval import RetrieverSet

        current = self.retrievers.artifacts
        if current.seal_now() in (None, current.manifest.get("sealed")):
            return False
        self.retrievers = RetrieverSet(current.path, embedder=self.retrievers.dense.embedder,
                                       rescorer=self.retrievers.dense.rescorer)
        log.info("%s: loaded the new version of the index (%d products)", current.path, len(self.retrievers.store))
        if hasattr(self.generator, "use_embedder"):  # a rebuild may have added a re-scorer
            self.generator.use_embedder(sentence_embedder(self.retrievers))
        return True

    def save(self, path: str | Path) -> Path:
        """Write this pipeline's settings (and its calibrated relevance threshold) to the JSON file ``path``, which
        must lie outside any index folder: an index is sealed by its build and shared by every set-up."""
        path = Path(path)
        sealed = sealed_ancestor(path)
        if sealed is not None:
            raise ArtifactError(f"{sealed} is a sealed artifact folder; save the QA settings outside it "
                                f"(e.g. {sealed.parent / 'qa.json'})")
        write_json_atomic(path, {"format": SETTINGS_FORMAT, "index": self.retrievers.artifacts.manifest["sealed"],
                                 **self.config.to_dict()})
        return path

    # ------------------------------------------------------------ relevance and abstention

    def relevance(self, question: str, hits: list[Hit], query_vector: np.ndarray | None = None, retrievers=None) -> float:
        """How well the best retrieved product matches: max of title cosine and word coverage, of the question's
        words (less those that ask for a kind of fact: "battery life" is in every product that states one, whichever
        is asked about) or of its naming part's (``amzqa.grounding.identity.naming_part``: "the dystopian novel where the party
        watches everyone through big brother - what's the main guy's name" is judged by the words before the dash,
        which a product can hold; a naming part of fewer than ``NAMING_MIN_WORDS`` content words counts only when the
        product holds all of it: "logitech c920x"). A hyphenated word matches its parts and its joined form both ways
        (:func:`coverage`: "play doh 10 pack" in "Play-Doh ... 10-Pack"). ``retrievers``: the set the hits came from,
        default this pipeline's."""
        return max(self.relevances(question, hits, query_vector, retrievers), default=0.0)

    def relevances(self, question: str, hits: list[Hit], query_vector: np.ndarray | None = None,
                   retrievers=None) -> list[float]:
        """Each hit's own match to the question (:meth:`relevance` is the best of them)."""
        if not hits:
            return []
        rset = retrievers or self.retrievers
        if query_vector is None:
            query_vector = rset.dense.embedder.encode([question])[0]
        rows = [h.product.row_id for h in hits]
        cos = np.asarray(rset.title_vectors[rows], dtype=np.float32) @ query_vector
        asked, naming = identity_words(question), content_words(naming_part(question))
        covered = []
        for h in hits:
            text = text_words(f"{h.product.title} {h.product.content}")
            named = coverage(naming, text) if naming else 0.0
            if len(naming) < NAMING_MIN_WORDS and named < 1.0:
                named = 0.0  # a short name counts whole or not at all: "kindle" of "kindle oasis" is not the Oasis
            covered.append(max(coverage(asked, text), named))
        return [float(max(c, v)) for c, v in zip(cos.tolist(), covered)]

    def description_match(self, question: str, hits: list[Hit], retrievers=None) -> float | None:
        """How close the best hit's description is to the product the question describes: MiniLM cosine between the
        question's naming part (or the question, when none stands apart) and each hit's description, as far as the
        embedder reads it (its opening: the bundled MiniLM reads 64 tokens). Shoppers
        who describe a product ("the alphabet book where every word starts with b") write their own words: the title
        and word coverage miss it, the description's meaning does not. None where the index has no MiniLM to compare
        sentences with (a static index without a re-scorer) or no hit has a description."""
        matches = [m for m in self.description_matches(question, hits, retrievers) if m is not None]
        return max(matches) if matches else None

    def description_matches(self, question: str, hits: list[Hit], retrievers=None) -> list[float | None]:
        """Each hit's own description match (:meth:`description_match` is the best of them); None for a hit without
        a description, and for every hit where the index has no MiniLM."""
        embedder = sentence_embedder(retrievers or self.retrievers)
        described = [h.product.content for h in hits if h.product.content]
        if embedder is None or not described:
            return [None] * len(hits)
        vectors = np.asarray(embedder.encode([naming_part(question) or question, *described]), dtype=np.float32)
        scores = iter((vectors[1:] @ vectors[0]).tolist())
        return [float(next(scores)) if h.product.content else None for h in hits]

    def passes_gate(self, question: str, hits: list[Hit], threshold: float | None = None, retrievers=None,
                    described: float | None | EllipsisType = ...) -> bool:
        """Whether the question goes on to the generator: the best hit's relevance reaches the calibrated threshold
        (this pipeline's, or ``threshold``), and every model identifier the question names is carried by a hit
        (``amzqa.grounding.identity``: the WH-1000XM5 asked, only the XM4 retrieved, is not answered with the XM4's
        battery life). A hit of another size than the question names (``size_conflicts``: the 6-quart Instant Pot
        for "instant pot duo 8 qt") does not count toward the relevance, nor a sibling the question's name tells
        apart (``variant_conflicts``: the Kindle Paperwhite for "kindle oasis", "Dune" for "dune messiah"); where such
        a hit is the most relevant one, the question is stopped (a weaker match is not the product asked either). Another
        book of the series than the place the question asks (``series_conflicts``: "(Book 1)" for "the third hogwarts
        book") is left out the same way, without stopping the rest: the asked book may rank below it. A question
        below the threshold still passes when its description match (:meth:`description_match`) reaches ``described``
        (default this pipeline's :meth:`described_threshold`: above every product-removed calibration question's best
        match; None switches the rule off). No rule is part of the calibrated score: a generated calibration question
        whose noise garbles an identifier or a size would otherwise pull the threshold down for every question."""
        return bool(self.gate(question, hits, threshold, retrievers, described))

    def gate(self, question: str, hits: list[Hit], threshold: float | None = None, retrievers=None,
             described: float | None | EllipsisType = ..., lead: float | None | EllipsisType = ...,
             translated: bool = False) -> list[Hit]:
        """The hits that pass the gate themselves (:meth:`passes_gate` passes when there is one), in retrieval order:
        those whose own relevance reaches the threshold, or, when none does, those whose own description match
        reaches ``described``. With ``QAConfig.focus`` the model reads only these: a product the question is not
        about does not offer it a sentence to answer with (the Garmin watch's battery sentence for a question about
        the Bose headphones' battery), and the citation cannot go to it. A question that describes its product
        (:func:`amzqa.grounding.identity.describes`) whose best description match stays under ``described`` still
        passes that one hit when the match plus its lead over the next hit's reaches ``lead`` (default this pipeline's
        :meth:`described_lead_threshold`; None switches it off, as does ``described`` None). ``translated``: the
        question is a machine translation (a Portuguese question in English), whose word order and inventions are not
        a shopper's name ("Can the Cast Iron Plamp Lodge go on the dishwasher?"): the sibling rules read its naming
        part only, not the words inside an ask (``amzqa.grounding.identity.named_in_ask``)."""
        if not hits or unmatched_identifiers(question, [h.product for h in hits]):
            return []
        relevances = self.relevances(question, hits, retrievers=retrievers)
        siblings = [bool(size_conflicts(question, h.product, not translated)
                         or variant_conflicts(question, h.product, not translated)) for h in hits]
        closest_sibling = max((r for r, s in zip(relevances, siblings) if s), default=-1.0)
        if closest_sibling >= max((r for r, s in zip(relevances, siblings) if not s), default=-1.0):
            # the closest product is a sibling of the one asked about: that one is not in the catalog, and a
            # weaker match that passes is not it either (the Garmin watch for "fitbit charge 5", the Charge 4 ruled out)
            return []
        # another book of the series asked about is left out, not taken as proof the asked one is absent: "the second
        # harry potter book" names Book 2, which may rank below Book 1
        siblings = [s or bool(series_conflicts(question, h.product)) for s, h in zip(siblings, hits)]
        hits, relevances = [h for h, s in zip(hits, siblings) if not s], [r for r, s in zip(relevances, siblings) if not s]
        threshold = self.config.abstain_threshold if threshold is None else threshold
        passed = [h for h, r in zip(hits, relevances) if r >= (threshold or 0.0)]
        if passed:
            return passed
        if described is ...:
            described = self.described_threshold()
        if lead is ...:
            lead = self.described_lead_threshold()
        if described is None:  # not calibrated for this shape, or switched off by the caller
            return []
        matches = self.description_matches(question, hits, retrievers)
        passed = [h for h, m in zip(hits, matches) if m is not None and m >= described]
        if passed or lead is None or not describes(question):
            return passed
        # a described product whose description stands out from the others retrieved (its match plus its lead over
        # the next), further than any product-removed described calibration question's best one does
        ranked = sorted(((m, i) for i, m in enumerate(matches) if m is not None), reverse=True)
        if not ranked:
            return []
        best, at = ranked[0]
        following = ranked[1][0] if len(ranked) > 1 else -1.0
        return [hits[at]] if best + (best - following) >= lead else []

    def calibrate(self, n: int = 150, seed: int = 0, k: int | None = None, mode: str | None = None) -> QAConfig:
        """Set the relevance threshold from questions about calibration products (outside the held-out split, which
        the evaluation reports score): the score that lets ``answer_rate`` of the questions whose product is retrieved
        through; also report how many of the same questions with that product (and its editions) taken out of the
        results it stops. For this pipeline's k and mode, or the ``k`` and ``mode`` given (the config returned has
        them); the threshold is kept at full precision (a rounded one can stop the question at the cut)."""
        from amzqa.data.questions import make_questions, relevant_sets
        from amzqa.data.split import calibration_products

        started = time.perf_counter()
        config = self.config.replace(k=k or self.config.k, mode=mode or self.config.mode)
        rset = self.retrievers
        store = rset.store
        products = calibration_products(store, n, seed)
        if not products:
            raise ArtifactError(f"{rset.artifacts.path}: every product is in the held-out split; nothing to "
                                "calibrate the relevance threshold on without scoring the evaluation's own products")
        questions = make_questions(products, seed=seed)
        random.Random(seed).shuffle(questions)
        questions = questions[:n]
        groups = relevant_sets(store, products)
        retriever = rset.get(config.mode)
        vectors = rset.dense.embedder.encode([q.text for q in questions])
        pos, neg, neg_described, neg_leads = [], [], [], []
        for q, vec in zip(questions, vectors):
            hits = retriever.retrieve(q.text, config.k + len(groups[q.uid]))
            if any(h.uid in groups[q.uid] for h in hits[: config.k]):
                pos.append(self.relevance(q.text, hits[: config.k], vec, rset))
            others = [h for h in hits if h.uid not in groups[q.uid]][: config.k]
            neg.append(self.relevance(q.text, others, vec, rset))
            matches = sorted((m for m in self.description_matches(q.text, others, rset) if m is not None), reverse=True)
            neg_described.append(matches[0] if matches else None)
            if matches and describes(q.text):
                neg_leads.append(2 * matches[0] - (matches[1] if len(matches) > 1 else -1.0))
        threshold = float(threshold_for_rate(pos, config.answer_rate))
        stopped = float(np.mean(np.array(neg) < threshold)) if neg else 0.0
        # A description closer than every product-removed question's best one: no such question would pass on it.
        matches = [m for m in neg_described if m is not None]
        described = float(max(matches)) + 1e-6 if matches else None
        lead = float(max(neg_leads)) + 1e-6 if neg_leads and described is not None else None
        calibration = {"method": f"{config.answer_rate:.0%} of answerable calibration questions pass",
                       "products": "outside the held-out split", "fitted_for": gate_key(config),
                       "positives": len(pos), "negatives": len(neg), "answered_rate": float(np.mean(np.array(pos) >= threshold)) if pos else 0.0,
                       "product_removed_stopped_rate": round(stopped, 4),
                       "described_threshold": described,
                       "described_method": "above every product-removed calibration question's description match",
                       "described_lead_threshold": lead, "described_lead_questions": len(neg_leads),
                       "described_lead_method": "above every product-removed calibration question's that describes "
                                                "its product: best description match plus its lead over the next",
                       "seconds": round(time.perf_counter() - started, 2)}
        log.info("abstention threshold %.3f: passes %.0f%% of answerable questions, stops %.0f%% with the product removed",
                 threshold, 100 * calibration["answered_rate"], 100 * stopped)
        return config.replace(abstain_threshold=threshold, calibration=calibration)

    def threshold(self, k: int | None = None, mode: str | None = None) -> float:
        """The relevance threshold the gate applies to ``k`` sources from the ``mode`` retriever (default: this
        pipeline's). A calibrated threshold holds for the k and mode it was fitted for; another k or mode gets its own,
        fitted on first use (or read from the calibration cache). A threshold set by hand (no calibration) holds for
        every shape."""
        return self._fitted(k, mode)[0]

    def described_threshold(self, k: int | None = None, mode: str | None = None) -> float | None:
        """The description match (:meth:`description_match`) above which a question below the relevance threshold
        still passes, for ``k`` sources from the ``mode`` retriever: higher than any calibration question's with its
        product taken out. None where not calibrated (a threshold set by hand, or an index without MiniLM)."""
        return self._fitted(k, mode)[1]

    def described_lead_threshold(self, k: int | None = None, mode: str | None = None) -> float | None:
        """For a question that describes its product: the best hit's description match plus its lead over the next
        hit's, above which the best hit passes though its match stays under :meth:`described_threshold`; above every
        product-removed calibration question's that describes its product. Shoppers who describe a product in their
        own words reach a modest match with its description and a low one with the others ("the memoir by the
        woman raised by survivalists in idaho": 0.52 against "Educated", under 0.40 against the others). None where
        not calibrated, or no calibration question describes a product."""
        return self._fitted(k, mode)[2]

    def _fitted(self, k: int | None, mode: str | None) -> tuple[float, float | None, float | None]:
        k, mode = k or self.config.k, mode or self.config.mode
        if (k, mode) == (self.config.k, self.config.mode) or fitted_for(self.config) is None:
            calibration = self.config.calibration if isinstance(self.config.calibration, dict) else {}
            return (self.config.abstain_threshold or 0.0, calibration.get("described_threshold"),
                    calibration.get("described_lead_threshold"))
        with self._thresholds_lock:
            if (k, mode) not in self._thresholds:
                log.info("k=%s, mode=%s: not the shape the relevance threshold was fitted for (k=%s, mode=%s); "
                         "fitting one for it", k, mode, self.config.k, self.config.mode)
                fitted = self._calibrated(k, mode)
                self._thresholds[(k, mode)] = (fitted.abstain_threshold, fitted.calibration.get("described_threshold"),
                                               fitted.calibration.get("described_lead_threshold"))
            return self._thresholds[(k, mode)]

    def _calibrated(self, k: int, mode: str) -> QAConfig:
        """This pipeline's config for ``k`` and ``mode`` with its fitted threshold: from the calibration cache when
        one is kept and holds it, else :meth:`calibrate` (then cached)."""
        config = self.config.replace(k=k, mode=mode)
        key = {"index": self.retrievers.artifacts.manifest["sealed"], **gate_key(config), "n": 150, "seed": 0,
               "method": GATE_METHOD}
        cached = read_gate_cache(self.calibration_cache, key) if self.calibration_cache else None
        if cached is not None:
            return config.replace(**cached)
        fitted = self.calibrate(k=k, mode=mode)
        if self.calibration_cache:
            write_gate_cache(self.calibration_cache, key, fitted)
        return fitted

    # ------------------------------------------------------------ asking

    def _retrieve(self, question: str, k: int | None, mode: str | None) -> Asked:
        question = check_question(question)
        threshold, described, lead = self._fitted(k, mode)  # fitted for this k and mode (once, on first use of another shape)
        t0 = time.perf_counter()
        asked = Asked(question, question, "en", [], False, {})
        if self.languages is not None:
            asked.language = self.languages.detect(question).language
            if asked.language == "pt":  # retrieval, the gate and the model all work in the catalog's language
                asked.query = self.languages.to_english(question) or question
        t1 = time.perf_counter()
        rset = self.retrievers  # once: the hits and their title vectors come from one version of the index
        asked.hits = rset.get(mode or self.config.mode).retrieve(asked.query, k or self.config.k)
        t2 = time.perf_counter()
        passed = self.gate(asked.query, asked.hits, threshold, retrievers=rset, described=described, lead=lead,
                           translated=asked.language == "pt")
        asked.relevant = bool(passed)
        asked.sources = passed if self.config.focus else asked.hits
        asked.timings = {"retrieve_s": t2 - t1, "relevance_s": time.perf_counter() - t2}
        if asked.language == "pt":
            asked.timings["translate_question_s"] = t1 - t0
        return asked

    def _finish(self, asked: Asked, raw: str, started: float) -> Answer:
        checked = check(raw, [h.product for h in asked.sources], asked.query)
        answer = Answer(question=asked.question, text=checked.text, citations=checked.citations, sources=asked.sources,
                        abstained=checked.abstained, timings=asked.timings, removed_citations=checked.removed,
                        unsupported=checked.unsupported, raw_text=raw, hedges=checked.hedges,
                        evidence=checked.evidence, unsupported_reasons=checked.reasons, retrieved=asked.hits)
        return self._localise(answer, asked, started)

    def _abstain(self, asked: Asked, started: float) -> Answer:
        answer = Answer(asked.question, ABSTAIN_MESSAGE, [], asked.hits, abstained=True, timings=asked.timings,
                        retrieved=asked.hits)
        return self._localise(answer, asked, started)

    def _localise(self, answer: Answer, asked: Asked, started: float) -> Answer:
        """A Portuguese question gets the checked English answer in Portuguese, the same markers citing the same
        sources; both texts are kept."""
        answer.language = asked.language
        if asked.language == "pt":
            t = time.perf_counter()
            answer.question_en, answer.text_en = asked.query, answer.text
            answer.text = ABSTAIN_MESSAGE_PT if answer.abstained else self.languages.to_portuguese(answer.text)
            answer.timings["translate_answer_s"] = time.perf_counter() - t
        answer.timings["total_s"] = time.perf_counter() - started
        return answer

    def ask(self, question: str, k: int | None = None, mode: str | None = None) -> Answer:
        started = time.perf_counter()
        asked = self._retrieve(question, k, mode)
        if not asked.relevant:
            return self._abstain(asked, started)
        t = time.perf_counter()
        prompt = build_prompt(asked.query, asked.sources, self.config.excerpt_chars)
        asked.timings["prompt_s"] = time.perf_counter() - t
        t = time.perf_counter()
        raw = self.generator.generate(prompt)
        asked.timings["generate_s"] = time.perf_counter() - t
        return self._finish(asked, raw, started)

    def stream(self, question: str, k: int | None = None, mode: str | None = None) -> AnswerStream:
        started = time.perf_counter()
        asked = self._retrieve(question, k, mode)
        if not asked.relevant:
            message = ABSTAIN_MESSAGE_PT if asked.language == "pt" else ABSTAIN_MESSAGE
            return AnswerStream(iter([message]), asked.hits, lambda _: self._abstain(asked, started))
        t = time.perf_counter()
        prompt = build_prompt(asked.query, asked.sources, self.config.excerpt_chars)
        asked.timings["prompt_s"] = time.perf_counter() - t

        def pieces() -> Iterator[str]:
            t_gen = time.perf_counter()
            for i, piece in enumerate(self.generator.stream(prompt)):
                if i == 0:
                    asked.timings["first_token_s"] = time.perf_counter() - started
                yield piece
            asked.timings["generate_s"] = time.perf_counter() - t_gen

        raw: list[str] = []  # the model's own text; what is streamed is each sentence once it passed the check
        shown = checked_sentences(pieces(), [h.product for h in asked.sources], asked.query, raw)
        if asked.language != "pt":
            return AnswerStream(shown, asked.sources, lambda _: self._finish(asked, "".join(raw), started))
        english: list[str] = []
        return AnswerStream(self.languages.stream_portuguese(shown, english), asked.sources,
                            lambda _: self._finish(asked, "".join(raw), started))


def checked_sentences(pieces: Iterator[str], sources: list, question: str, raw: list[str]) -> Iterator[str]:
    """The generated text as it may be shown, sentence by sentence: each sentence is checked against the sources
    (:func:`amzqa.answer.citations.check`) as soon as the next one begins, and only what passes is yielded, markers
    corrected; the stream shows what the checked answer shows. Where the question asks for a kind of fact, supported
    sentences wait until one states that kind (then they go out with it, in order); none does: they are shown only if
    the answer as a whole would be (the check abstains when a cited source states the kind elsewhere). Nothing
    passing: the abstention message. ``raw`` collects the model's own pieces."""
    kinds = asked_facts(question) if question else ()
    held: list[str] = []
    shown_any = False

    def passed(sentence: str) -> Iterator[str]:
        nonlocal shown_any
        checked = check(sentence, sources)
        if checked.abstained:
            return
        if kinds and not shown_any and not answers(claim_text(checked.text), kinds):
            held.append(checked.text)  # supported, not yet the kind asked for
            return
        yield (" " if shown_any else "") + " ".join([*held, checked.text])
        held.clear()
        shown_any = True

    done = 0
    for piece in pieces:
        raw.append(piece)
        sentences = split_sentences("".join(raw))
        while done < len(sentences) - 1:  # a sentence is complete once the next has begun
            yield from passed(sentences[done])
            done += 1
    for sentence in split_sentences("".join(raw))[done:]:
        yield from passed(sentence)
    if held:  # no sentence states the kind asked: shown only where the check of them together shows them
        together = check(" ".join(held), sources, question)
        if not together.abstained:
            yield together.text
            shown_any = True
    if not shown_any:
        yield ABSTAIN_MESSAGE


@dataclasses.dataclass
class Asked:
    """A question on its way through the pipeline: as asked, as retrieval and the model see it (English)."""

    question: str
    query: str
    language: str
    hits: list[Hit]  # as retrieved (an abstention shows them as what the catalog holds)
    relevant: bool
    timings: dict[str, float]
    sources: list[Hit] = dataclasses.field(default_factory=list)  # what the model reads (``QAConfig.focus``)


_LANGUAGES = None
_languages_lock = threading.Lock()


def identity_words(text: str) -> set[str]:
    """The content words of ``text`` that can tell products apart: not those that ask for a kind of fact ("battery
    life", "dishwasher safe", "how many pages": in every product that states one, whichever is asked about). All of
    them where nothing else is left. (Leaving out formats, packaging and colours too, "blu-ray", "paperback", was
    measured: it stops more answerable questions than absent ones, "lotr one volume edition" reads as "lotr".)"""
    found = content_words(text) - _ASK_STEMS  # "whats", "hows": an asking word, not a name
    return (found - fact_words()) or found


# Asking words as content_words leaves them ("whats" -> "what").
_ASK_STEMS = frozenset("what how where who when which why".split())
# Units a shopper writes joined to their number ("16gb" for "16 GB").
_JOINED_UNITS = frozenset("gb tb mb oz qt mah mm cm ft lb lbs kg ml".split())


def text_words(text: str) -> set[str]:
    """The content words :meth:`QA.relevances` matches a question against: with every hyphenated word's joined form
    and parts (:func:`with_word_parts`), and a number joined to the unit after it ("16 GB" holds "16gb"). (Possessives
    made bare, "Weir's" holding "weirs", were measured: 2 answerable questions passed, 1 absent product too.)"""
    found = with_word_parts(content_words(text))
    tokens = [t.strip(".,;:!?()[]\"") for t in words(text)]
    found |= {a + b for a, b in zip(tokens, tokens[1:]) if a.isdigit() and b in _JOINED_UNITS}
    return found


def _spellings(word: str) -> tuple[str, list[str]]:
    """A hyphenated word's joined form and its content-word parts ("play-doh": "playdoh", ["play", "doh"])."""
    parts = [p for p in word.split("-") if p]
    return stem("".join(parts)), [stem(p) for p in parts if p not in STOPWORDS and len(p) > 1]


def with_word_parts(found: set[str]) -> set[str]:
    """``found`` with every hyphenated word's joined form and parts: a title's "Play-Doh 10-Pack" holds the shopper's
    "play doh 10 pack" and "playdoh"."""
    out = set(found)
    for joined, parts in (_spellings(w) for w in found if "-" in w):
        out.add(joined)
        out.update(parts)
    return out


def coverage(asked: set[str], text: set[str]) -> float:
    """The share of ``asked`` words that ``text`` (:func:`with_word_parts`) holds; a hyphenated asked word counts
    when the text holds it as written, joined, or every one of its parts ("hands-on" in "Hands On")."""
    def held(word: str) -> bool:
        if word in text:
            return True
        if "." in word.strip("."):  # "no.3": its parts are numbers and stopwords (the identifier rule reads "no3")
            return all(p in text for p in word.split(".") if p not in STOPWORDS and len(p) > 1)
        if "-" not in word:
            return False
        joined, parts = _spellings(word)
        return joined in text or bool(parts) and all(p in text for p in parts)
    return sum(held(w) for w in asked) / max(len(asked), 1)


def shared_languages():
    """The process's one :class:`amzqa.answer.language.Languages` (one detector, one translator loaded on first use), shared
    by every QA: a program holding several pipelines (one per generator or prompt shape) loads the translator once."""
    global _LANGUAGES
    from amzqa.answer import language

    with _languages_lock:
        if _LANGUAGES is None:
            _LANGUAGES = language.Languages()
        return _LANGUAGES


def sentence_embedder(retrievers):
    """The MiniLM an index answers with, for comparing sentences: its re-scorer where a static embedding makes the
    first pass (large catalogs), else its embedder; None for a static index without a re-scorer (the selector's
    similarity weight was chosen on MiniLM's cosines, not a static model's). A generator shared by several pipelines
    keeps the last one lent: every index we build embeds with the same MiniLM."""
    dense = retrievers.dense
    if dense.rescorer is not None:
        return dense.rescorer
    return None if getattr(dense.embedder, "backend", "") == "static" else dense.embedder


def gate_key(config: QAConfig) -> dict[str, Any]:
    """What a relevance threshold is fitted for besides the index: the prompt shape, the calibration target and the
    version of the relevance score (a threshold fitted for an older score is refitted)."""
    return {"k": config.k, "mode": config.mode, "excerpt_chars": config.excerpt_chars, "answer_rate": config.answer_rate,
            "score": GATE_METHOD}


def fitted_for(config: QAConfig) -> dict[str, Any] | None:
    """The shape ``config``'s threshold was calibrated for; None for a threshold set by hand (applied as given)."""
    calibration = config.calibration
    fitted = calibration.get("fitted_for") if isinstance(calibration, dict) else None
    return fitted if isinstance(fitted, dict) else None


def describe_shape(shape: dict[str, Any]) -> str:
    order = ("k", "mode", "excerpt_chars", "answer_rate", "score")
    return ", ".join(f"{k}={shape[k]}" for k in sorted(shape, key=lambda k: (order.index(k) if k in order else 9, k)))


def sealed_ancestor(path: str | Path) -> Path | None:
    """The artifact folder ``path`` would lie inside (its own folder or any folder above it), or None: a folder
    holding an amzqa ``manifest.json`` (the file's own folder: any ``manifest.json``)."""
    resolved = Path(path).resolve()
    for folder in resolved.parents:
        manifest = folder / MANIFEST
        if not manifest.is_file():
            continue
        if folder == resolved.parent:
            return folder
        try:
            fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(fmt, str) and fmt.startswith("amzqa-"):
            return folder
    return None


def gate_cache_dir() -> Path:
    """Where ``calibration_cache=True`` keeps fitted relevance thresholds: the user cache (``$AMZQA_CACHE_DIR``,
    default ``~/.cache/amzqa``), ``calibration/``."""
    from amzqa.models import cache_dir

    return cache_dir() / "calibration"


def _gate_cache_file(folder: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return Path(folder) / f"{digest}.json"


def read_gate_cache(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """A cached threshold and its calibration for exactly ``key`` (the index seal, the shape, the method); None if
    there is none or the file is not one (it is then refitted and rewritten)."""
    path = _gate_cache_file(folder, key)
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable cached calibration %s (%s)", path, exc)
        return None
    if not isinstance(entry, dict) or entry.get("format") != GATE_CACHE_FORMAT or entry.get("key") != key:
        return None
    threshold, calibration = entry.get("abstain_threshold"), entry.get("calibration")
    if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold)
            or not isinstance(calibration, dict)):
        return None
    for name in ("described_threshold", "described_lead_threshold"):
        value = calibration.get(name)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or not math.isfinite(value)):
            log.warning("ignoring the cached calibration %s: its %s is not a number", path, name)
            return None
    log.info("relevance threshold %s read from the calibration cache %s", threshold, path)
    return {"abstain_threshold": float(threshold), "calibration": calibration}


def write_gate_cache(folder: Path, key: dict[str, Any], config: QAConfig) -> None:
    """Keep a fitted threshold (JSON, written atomically); a cache that cannot be written only costs a refit."""
    path = _gate_cache_file(folder, key)
    try:
        write_json_atomic(path, {"format": GATE_CACHE_FORMAT, "key": key, "abstain_threshold": config.abstain_threshold,
                                 "calibration": config.calibration})
    except OSError as exc:
        log.warning("could not write the calibration cache %s (%s)", path, exc)


def adapter_prompt(adapter: str | Path | None) -> dict[str, int]:
    """The prompt shape (k, excerpt_chars) an adapter was trained on, from its folder or from an export of it."""
    from amzqa.io.layout import trained_prompt

    prompt = trained_prompt(adapter)
    return {k: prompt[k] for k in ("k", "excerpt_chars") if k in prompt}


def threshold_for_rate(scores: list[float], rate: float) -> float:
    """The largest threshold that lets at least ``rate`` of ``scores`` through (``score >= threshold``)."""
    if not scores:
        return 0.0
    ordered = sorted(scores)
    allowed_below = int(np.floor((1.0 - rate) * len(ordered) + 1e-9))
    return float(ordered[allowed_below])
