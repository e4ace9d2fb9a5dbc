"""`amzqa eval ... --questions FILE.jsonl`: validation line by line, and both reports on a user's own questions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from amzqa.errors import ConfigError
from amzqa.evaluation.user_questions import NO_UID, load_user_questions

FACTS = Path(__file__).resolve().parent.parent / "indexing" / "sample" / "fact_questions.jsonl"


def write(tmp_path, lines) -> Path:
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("line, message", [
    ('{"question": "x?", "uid": "A"', "line 2: not valid JSON"),
    ('["x?"]', "line 2: expected a JSON object"),
    ('{"questoin": "x?"}', "line 2: unknown field(s) ['questoin']"),
    ('{"question": "  "}', "line 2: field 'question' must be a non-empty string"),
    ('{"question": "x?", "uid": 7}', "line 2: field 'uid' must be a product uid"),
    ('{"question": "x?", "answer": ["a"]}', "line 2: field 'answer' must be a string or null"),
])
def test_bad_lines_are_named_by_line_and_field(tmp_path, line, message):
    path = write(tmp_path, ['{"question": "fine?", "uid": null}', line])
    with pytest.raises(ConfigError, match=r"q\.jsonl " + __import__("re").escape(message)):
        load_user_questions(path)


def test_uids_must_be_products_of_the_catalog(tmp_path, retrievers):
    path = write(tmp_path, ['{"question": "a?", "uid": "B00004OCKR"}', "", '{"question": "b?", "uid": "NOPE"}'])
    with pytest.raises(ConfigError, match=r"line 3: field 'uid': 'NOPE' is not a product of this catalog"):
        load_user_questions(path, retrievers.store)
    with pytest.raises(ConfigError, match="no questions"):
        load_user_questions(write(tmp_path, ["", "  "]))
    with pytest.raises(ConfigError, match="does not exist"):
        load_user_questions(tmp_path / "missing.jsonl")


SHOPPER = FACTS.with_name("fact_questions_shopper.jsonl")
VALIDATION = FACTS.with_name("fact_questions_validation.jsonl")
TEST = FACTS.with_name("fact_questions_test.jsonl")
HOLDOUT = FACTS.with_name("fact_questions_holdout.jsonl")
JUDGE = FACTS.with_name("fact_questions_judge.jsonl")
JUDGE2 = FACTS.with_name("fact_questions_judge2.jsonl")
JUDGE3 = FACTS.with_name("fact_questions_judge3.jsonl")


@pytest.mark.parametrize("path, absent", [(FACTS, 8), (SHOPPER, 8), (VALIDATION, 6), (TEST, 6), (HOLDOUT, 10), (JUDGE, 10),
                                          (JUDGE2, 10), (JUDGE3, 14)],
                         ids=lambda v: getattr(v, "stem", v))
def test_the_fact_question_set_is_valid_and_large_enough(retrievers, path, absent):
    questions = load_user_questions(path, retrievers.store)
    answerable = [q for q in questions if q.product_uid]
    assert len(answerable) >= 60 and all(q.answer for q in answerable)
    assert sum(q.should_abstain for q in questions) >= absent and all(q.uid is not NO_UID for q in questions)
    for q in answerable:  # every fact is what the product's own text says
        from amzqa.evaluation.text_metrics import fact_tokens

        product = retrievers.store.by_uid(q.product_uid)
        assert fact_tokens(q.answer) <= fact_tokens(f"{product.title} {product.content}"), q


def test_each_hand_written_set_asks_about_other_products(retrievers):
    sets = [{q.product_uid for q in load_user_questions(p, retrievers.store) if q.product_uid}
            for p in (FACTS, SHOPPER, VALIDATION, TEST)]
    assert not sets[3] & (sets[0] | sets[1] | sets[2])
    assert not sets[2] & (sets[0] | sets[1]) and not sets[0] & sets[1]


def test_states_fact_needs_every_word_numbers_and_negations():
    from amzqa.evaluation.text_metrics import states_fact

    assert states_fact("The LEGO box is for ages 4 to 99 [1].", "ages 4 to 99")
    assert not states_fact("It is for ages 4 and up [1].", "ages 4 to 99")
    assert states_fact("No, it does not support Quick Charge [2].", "does not support Quick Charge")
    assert not states_fact("It supports Quick Charge [2].", "does not support Quick Charge")
    assert not states_fact("anything", "")


def test_generation_report_on_the_fact_questions(retrievers, sample_artifacts, tmp_path):
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation, markdown
    from amzqa.generation import ExtractiveGenerator
    from amzqa.generation.prompt import ABSTAIN_MESSAGE

    cfg = GenerationEvalConfig(artifacts=sample_artifacts, questions=FACTS, bootstrap=20)
    report = evaluate_generation(cfg, rset=retrievers, progress=False, systems=[("extractive", ExtractiveGenerator())])
    assert report["n_questions"] == 74 and report["abstention_cases"] == 10
    rows = report["rows"]["extractive"]
    lodge = next(r for r in rows if r["question"].startswith("Is the Lodge"))
    assert lodge["states_answer"] == 1.0 and lodge["stated_and_cited"] == 1.0  # "Hand wash only" [n]
    assert all("states_answer" not in r for r in rows if r["should_abstain"])
    stats = report["systems"]["extractive"]
    assert 0 < stats["states_answer"]["value"] <= 1 and stats["refused"]["value"] < 0.5
    text = markdown(report)
    assert "questions from" in text and str(FACTS) in text and "| states the reference fact |" in text
    # QA's relevance gate, applied as QA.ask applies it: the lawn mower (absent) is stopped before any generation
    mower = next(r for r in rows if "lawn mower" in r["question"])
    assert mower["abstained"] and mower["raw"] == ABSTAIN_MESSAGE
    ungated = evaluate_generation(cfg.replace(gate=False), rset=retrievers, progress=False,
                                  systems=[("extractive", ExtractiveGenerator())])
    gated_rows = [r for r in rows if r["should_abstain"] and r["abstained"]]
    ungated_rows = [r for r in ungated["rows"]["extractive"] if r["should_abstain"] and r["abstained"]]
    assert len(gated_rows) >= len(ungated_rows)
    assert all(r.get("lost") != "the relevance gate stopped it" for r in ungated["rows"]["extractive"])
    # as QA.ask: each system reads only the products that pass the gate themselves (focus), all k without it
    k = report["prompt"]["k"]
    assert all(len(r["sources"]) <= k for r in rows) and any(0 < len(r["sources"]) < k for r in rows if not r["abstained"])
    unfocused = evaluate_generation(cfg.replace(focus=False), rset=retrievers, progress=False,
                                    systems=[("extractive", ExtractiveGenerator())])
    assert all(len(r["sources"]) == k for r in unfocused["rows"]["extractive"])


def test_a_lost_question_is_attributed_to_where_it_was_lost():
    from amzqa.evaluation.generation_eval import Case, lost_cause

    case = Case("q", "u", "", [], 0, should_abstain=False, fact="f")
    assert lost_cause(case, "refused") == "retrieval missed the product"
    case.left_out = True  # retrieved, left out of what the systems read
    assert lost_cause(case, "refused") == "the relevance gate left the product out"
    kept = Case("q", "u", "", [], 1, should_abstain=False, fact="f")
    assert lost_cause(kept, "refused") == "refused"
    kept.gated = True
    assert lost_cause(kept, "refused") == "the relevance gate stopped it"


def test_cli_evaluates_retrieval_on_user_questions(sample_artifacts, tmp_path):
    out = tmp_path / "rep"
    done = subprocess.run([sys.executable, "-m", "amzqa.cli.main", "eval", "retrieval", "--artifacts", str(sample_artifacts),
                           "--questions", str(FACTS), "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "retrieval.json").read_text())
    assert report["questions"]["total"] == 64 and report["questions"]["skipped_without_uid"] == 10
    assert set(report["results"]["hybrid"]) == {"all", "user"}
    assert "(10 lines without a product uid skipped)" in done.stdout
    bad = write(tmp_path, ['{"question": "a?", "uid": "NOPE"}'])
    done = subprocess.run([sys.executable, "-m", "amzqa.cli.main", "eval", "retrieval", "--artifacts", str(sample_artifacts),
                           "--questions", str(bad)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "line 1: field 'uid': 'NOPE' is not a product of this catalog" in done.stderr
