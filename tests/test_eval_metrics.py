"""Metrics on hand-made cases with known values, including the edge cases."""

import json
import math

import pytest

from amzqa.evaluation.generation_eval import Case, aggregate, bootstrap, score_answer
from amzqa.evaluation.metrics import first_relevant_rank, mrr, ndcg_at, ranking_report, recall_at
from amzqa.evaluation.text_metrics import chrf, chrf_signature, precision_recall, rouge_l
from amzqa.generation.prompt import ABSTAIN_MESSAGE
from amzqa.records import Product


def test_ranking_metrics_by_hand():
    ranks = [1, 3, None, 10, 11]
    assert recall_at(ranks, 1) == 0.2 and recall_at(ranks, 5) == 0.4 and recall_at(ranks, 10) == 0.6
    assert mrr(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 10) / 5)
    assert ndcg_at(ranks, 10) == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(11)) / 5)
    assert ndcg_at([1], 10) == 1.0  # ideal DCG is 1 with one relevant item
    assert first_relevant_rank(["a", "b", "c"], {"c", "z"}) == 3 and first_relevant_rank([], {"a"}) is None
    assert ranking_report([])["recall@10"] == 0.0


def test_rouge_l_by_hand():
    # LCS("the cat sat on the mat", "the cat is on the mat") = "the cat on the mat" = 5; P = 5/6, R = 5/6
    assert rouge_l("The cat sat on the mat [1].", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("", "reference") == 0.0 and rouge_l("x y", "") == 0.0
    assert rouge_l("a b c", "a b c") == 1.0


def test_rouge_l_equals_rouge_score_on_ascii_text():
    from rouge_score import rouge_scorer

    from amzqa.cli.demo import sample_catalog

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    lines = [json.loads(line) for line in sample_catalog().read_text().splitlines()[:120] if line.startswith("{")]
    texts = [t for r in lines for t in (r.get("title"), r.get("content")) if isinstance(t, str) and t.isascii() and t]
    pairs = list(zip(texts, texts[1:])) + [(t, t[: len(t) // 2]) for t in texts] + [("A_b c-d", "a b c d")]
    assert len(pairs) > 150
    for candidate, reference in pairs:
        assert rouge_l(candidate, reference) == pytest.approx(scorer.score(reference, candidate)["rougeL"].fmeasure)


def test_rouge_l_keeps_accented_words_that_rouge_score_drops():
    from rouge_score import rouge_scorer

    assert rouge_l("ação rápida", "ação lenta") == pytest.approx(0.5)  # "ação" matches, one of two words each side
    assert rouge_scorer.RougeScorer(["rougeL"]).score("ação lenta", "ação rápida")["rougeL"].fmeasure != pytest.approx(0.5)


def test_chrf_is_sacrebleu_sentence_chrf_on_the_answer_without_markers():
    from sacrebleu.metrics import CHRF

    assert chrf("abc", "abc") == pytest.approx(1.0) and chrf("", "abc") == 0.0 and chrf("xyz", "abc") == 0.0
    expected = CHRF().sentence_score("Hand wash only.", ["Hand wash only; not dishwasher safe."]).score / 100
    assert chrf("Hand wash only [1].", "Hand wash only; not dishwasher safe.") == pytest.approx(expected)
    assert chrf_signature().startswith("nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:")


def test_precision_recall_edge_cases():
    assert precision_recall([True, True, False], [True, False, True]) == (0.5, 0.5)
    assert precision_recall([False, False], [False, False]) == (0.0, 0.0)


SOURCES = [Product(0, "G", "Kettle", "Boils 1.7 liters fast. Auto shut-off."), Product(1, "D", "Toaster", "Two slots.")]
CASE = Case("does the kettle boil fast?", "G", "Boils 1.7 liters fast. Auto shut-off.", SOURCES, gold_position=1)


def test_scores_of_a_good_answer():
    row = score_answer(CASE, "It boils 1.7 liters fast [1].", 0.5)
    assert row["cites_gold"] == 1.0 and row["cites_only_given"] == 1.0 and row["support"] == 1.0
    assert not row["abstained"] and row["answer_words"] == 5


def test_scores_of_empty_uncited_and_invalid_answers():
    empty = score_answer(CASE, "", 0.1)
    assert empty["abstained"] and empty["rouge_l"] == 0.0 and empty["cites_gold"] == 0.0  # abstained on an answerable case
    uncited = score_answer(CASE, "It boils 1.7 liters fast.", 0.1)
    assert uncited["cites_gold"] == 0.0  # attributed post hoc, but the model did not cite it
    assert uncited["support"] == 1.0 and uncited["citation_recall"] == 0.0  # shown with the marker; as written, uncited
    invalid = score_answer(CASE, "It boils fast [7]. Two slots [9].", 0.1)
    assert invalid["cites_only_given"] == 0.0 and invalid["cites_gold"] == 0.0


def test_abstention_metrics_and_bootstrap_are_deterministic():
    removed = Case("q", "G", "gold", SOURCES[1:], gold_position=0)
    rows = [score_answer(CASE, "Boils fast [1].", 0.1), score_answer(removed, ABSTAIN_MESSAGE, 0.1),
            score_answer(removed, "Two slots [1].", 0.1), score_answer(CASE, ABSTAIN_MESSAGE, 0.1)]
    agg = aggregate(rows)
    assert agg["abstain_precision"] == 0.5 and agg["abstain_recall"] == 0.5 and agg["abstain_accuracy"] == 0.5
    a = bootstrap({"x": rows, "y": rows}, 50, seed=1)
    b = bootstrap({"x": rows, "y": rows}, 50, seed=1)
    assert a == b
    d = a["differences"]["y - x"]["cites_gold"]
    assert d["value"] == 0.0 and d["ci95"] == [0.0, 0.0]  # a system against itself: no difference, no spread
    lo, hi = a["systems"]["x"]["abstain_accuracy"]["ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0


def test_abstention_auc_by_hand():
    from amzqa.evaluation.generation_eval import abstention_auc

    # Removed-product cases score 3 and 1, answerable ones 2 and 0: 3 of the 4 pairs are ordered right.
    assert abstention_auc([3.0, 2.0, 1.0, 0.0], [True, False, True, False]) == 0.75
    assert abstention_auc([1.0, 1.0], [True, False]) == 0.5
    assert abstention_auc([1.0, 2.0], [False, False]) is None


def test_the_library_auc_and_bootstrap_match_their_definitions():
    """sklearn's ROC AUC is the Mann-Whitney pair count (ties half); scipy's percentile bootstrap, resampling the same
    questions for every system, agrees with resampling by hand."""
    import numpy as np

    from amzqa.evaluation.generation_eval import abstention_auc

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 80).astype(float)  # many ties
    labels = rng.random(80) < 0.4
    pos, neg = scores[labels], scores[~labels]
    by_pairs = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert abstention_auc(scores.tolist(), labels.tolist()) == pytest.approx(by_pairs, abs=1e-12)

    removed = Case("q", "G", "gold", SOURCES[1:], gold_position=0)
    answers = ["Boils fast [1].", ABSTAIN_MESSAGE, "Two slots [1]."]
    x = [score_answer(CASE if rng.random() < 0.7 else removed, answers[rng.integers(0, 3)], 0.1) for _ in range(60)]
    y = [score_answer(c, answers[rng.integers(0, 3)], 0.1) for c in [CASE if not r["should_abstain"] else removed
                                                                       for r in x]]
    stats = bootstrap({"x": x, "y": y}, 2000, seed=5)
    draws = [rng.integers(0, 60, 60) for _ in range(2000)]
    for metric in ("abstain_accuracy", "refused"):
        manual = [aggregate(y, i)[metric] - aggregate(x, i)[metric] for i in draws]
        lo, hi = stats["differences"]["y - x"][metric]["ci95"]
        assert lo == pytest.approx(np.percentile(manual, 2.5), abs=0.05)
        assert hi == pytest.approx(np.percentile(manual, 97.5), abs=0.05)
        assert stats["differences"]["y - x"][metric]["value"] == pytest.approx(
            aggregate(y)[metric] - aggregate(x)[metric])


def test_generation_evaluation_end_to_end(retrievers, sample_artifacts, hf_generator, tmp_path):
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation, markdown, write_report
    from amzqa.generation import ExtractiveGenerator

    cfg = GenerationEvalConfig(artifacts=sample_artifacts, n=4, abstain_fraction=0.5, bootstrap=20, max_new_tokens=24)
    report = evaluate_generation(cfg, rset=retrievers, progress=False,
                                 systems=[("extractive", ExtractiveGenerator()), ("base", hf_generator)])
    assert report["n_questions"] == 4 and report["abstention_cases"] == 2
    assert set(report["systems"]) == {"extractive", "base"} and "base - extractive" in report["differences"]
    assert 0.0 <= report["abstention_auc"]["base"] <= 1.0 and "extractive" not in report["abstention_auc"]
    rows = report["rows"]["base"]
    assert [r["question"] for r in rows] == [r["question"] for r in report["rows"]["extractive"]]  # same prompts
    assert sum(r["should_abstain"] for r in rows) == 2
    text = markdown(report)
    assert "abstention AUC" in text and "| ROUGE-L vs gold |" in text
    write_report(report, tmp_path / "rep")
    assert (tmp_path / "rep" / "report.json").is_file() and (tmp_path / "rep" / "report.md").is_file()


def test_bootstrap_rankings_pairs_the_questions():
    from amzqa.evaluation.metrics import bootstrap_rankings

    ranks = {"a": [1, 2, None, 1, 5, 1], "b": [1, 2, None, 1, 5, 1], "c": [None] * 6}
    stats = bootstrap_rankings(ranks, b=200, seed=1)
    assert stats["differences"]["a - b"]["recall@1"] == {"value": 0.0, "ci95": [0.0, 0.0]}  # same questions, same ranks
    assert stats["intervals"]["c"]["mrr@10"] == [0.0, 0.0]
    lo, hi = stats["differences"]["a - c"]["recall@10"]["ci95"]
    assert stats["differences"]["a - c"]["recall@10"]["value"] == pytest.approx(5 / 6) and 0 < lo <= 5 / 6 <= hi <= 1


@pytest.mark.parametrize("seed", range(5))
def test_nothing_is_fitted_on_the_products_the_reports_score(retrievers, seed):
    from amzqa.data.split import calibration_products
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, build_cases
    from amzqa.evaluation.retrieval_eval import RetrievalEvalConfig, pick_questions

    store = retrievers.store
    scored = {q.uid for q in pick_questions(store, RetrievalEvalConfig(n=10_000, seed=seed))[0]}
    scored |= {c.uid for c in build_cases(retrievers, GenerationEvalConfig(n=200, seed=seed), 3)}
    fitted = {p.uid for p in calibration_products(store, 10_000, seed)}  # relevance threshold and fusion
    assert scored and fitted and not scored & fitted


def test_every_fact_question_template_is_recognised_as_asking_for_its_fact():
    """Generated fact questions must read as asking for their fact (asked_facts), or the gate and the SFT data disagree."""
    import random

    from amzqa.data.questions import capitalised
    from amzqa.grounding.facts import FACTS, asked_facts

    r = random.Random(0)
    for fact in FACTS:
        for template in fact.templates:
            question = capitalised(template.format(t="Acme Widget Pro"), r)
            assert fact in asked_facts(question), (fact.name, question)


def test_alce_citation_recall_and_precision_use_the_support_check():
    from amzqa.evaluation.generation_eval import alce_citations
    from amzqa.records import Product

    kettle = Product(0, "K", "Acme Kettle", "Boils 1.7 liters. Hand wash only.")
    toaster = Product(1, "T", "Acme Toaster", "Two slots with a bagel setting.")
    # recalled and precise; recalled with one needless citation; not recalled (dishwasher against hand wash)
    assert alce_citations("The Acme kettle boils 1.7 liters [1].", [kettle, toaster]) == (1.0, 1.0)
    assert alce_citations("The Acme kettle boils 1.7 liters [1][2].", [kettle, toaster]) == (1.0, 0.5)
    assert alce_citations("The Acme kettle is dishwasher safe [1].", [kettle, toaster]) == (0.0, 0.0)
    assert alce_citations("The Acme toaster has a bagel setting.", [kettle, toaster]) == (0.0, None)  # no citation
    assert alce_citations("The catalog does not answer this question.", [kettle]) == (None, None)
