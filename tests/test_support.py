"""What is shown is what the cited source says: amzqa.grounding.support.judge and the check built on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amzqa.answer.citations import check
from amzqa.answer.pipeline import checked_sentences
from amzqa.generation.prompt import ABSTAIN_MESSAGE
from amzqa.grounding.support import judge, numbers
from amzqa.records import Product

SKILLET = Product(0, "S1", "Castiron Co. Pre-Seasoned Skillet, 12 Inch",
                  "Seasoned with vegetable oil and ready to use. Hand wash only; dry promptly and rub with oil. Made in Tennessee.")
SPEAKER = Product(1, "S2", "Boomtone Go 3 Portable Speaker",
                  "Rugged Bluetooth speaker rated IP67 dustproof and waterproof. Up to 12 hours of playtime. "
                  "Includes a USB-C cable; wall charger sold separately.")
BLOCKS = Product(2, "S3", "Stackit Builder Bucket, 500 Pieces", "Colourful building bricks for creative play. Ages 4 to 99.")
CHEST = Product(3, "S4", "Heirloom Keepsake Chest", "Solid cedar chest with a brass latch and a felt-lined tray. 14 x 8 x 6 inches.")
SOURCES = [SKILLET, SPEAKER, BLOCKS, CHEST]


@pytest.mark.parametrize("sentence, source, why", [
    ("The Boomtone Go 3 is waterproof [1].", SKILLET, "cited to the wrong product"),
    ("The Castiron skillet is dishwasher safe [1].", SKILLET, "'dishwasher safe' against 'Hand wash only'"),
    ("The Boomtone Go 3 plays for 30 hours on a charge [2].", SPEAKER, "30 hours against 12 hours"),
    ("The Stackit bucket is for ages 4 to 9 [3].", BLOCKS, "4 to 9 against 4 to 99"),
    ("The keepsake chest is made of bamboo [4].", CHEST, "bamboo against cedar"),
    ("The Boomtone Go 3 comes with a carrying pouch [2].", SPEAKER, "an accessory the source never lists"),
    ("The Boomtone Go 3 includes a wall charger [2].", SPEAKER, "'sold separately'"),
    ("The skillet is not seasoned [1].", SKILLET, "a negation the source does not state"),
    ("The keepsake chest measures 14 x 8 x 9 inches [4].", CHEST, "one dimension differs"),
])
def test_claims_the_source_does_not_state_are_not_supported(sentence, source, why):
    verdict = judge(sentence, source)
    assert not verdict.supported, why
    assert verdict.reason


@pytest.mark.parametrize("sentence, source", [
    ("The Castiron skillet is hand wash only [1].", SKILLET),
    ("It is not dishwasher safe: hand wash it [1].", SKILLET),  # the same negative, other words
    ("The Boomtone Go 3 gives up to 12 hours of playtime [2].", SPEAKER),
    ("It is waterproof (IP67) [2].", SPEAKER),
    ("The wall charger is sold separately [2].", SPEAKER),
    ("The Stackit bucket is for ages 4 to 99 [3].", BLOCKS),
    ("The bucket has 500 pieces [3].", BLOCKS),  # a number the title states
    ("The chest is made of solid cedar [4].", CHEST),
    ("It measures 14 x 8 x 6 inches [4].", CHEST),
])
def test_claims_the_source_states_are_supported(sentence, source):
    assert judge(sentence, source).supported


def test_numbers_are_normalised():
    assert ("1296", "page") in numbers("Paperback, 1,296 pages.")
    assert ("2", "year") in numbers("a two-year warranty") and ("2", "year") in numbers("2-year warranty")
    assert ("1.7", "liter") in numbers("boils 1.7 L") and ("12", "hour") in numbers("12 hrs")


def test_a_wrong_citation_is_moved_to_the_source_that_says_it():
    c = check("The Boomtone Go 3 gives 12 hours of playtime [1].", SOURCES, "boomtone battery")
    assert c.text == "The Boomtone Go 3 gives 12 hours of playtime [2]."
    assert [(x.marker, x.uid, x.reattributed) for x in c.citations] == [(2, "S2", True)]
    assert c.citations[0].sentence == "Up to 12 hours of playtime."


def test_unsupported_sentences_are_removed_and_reported():
    c = check("The skillet is made in Tennessee [1]. It is dishwasher safe [1]. It also comes with a lid.", SOURCES,
              "castiron skillet")
    assert c.text == "The skillet is made in Tennessee [1]."
    assert c.unsupported == ["It is dishwasher safe [1].", "It also comes with a lid."]
    assert len(c.reasons) == 2 and not c.abstained


def test_nothing_supported_is_an_abstention_offering_the_evidence():
    c = check("Yes, the Castiron skillet is dishwasher safe [1].", SOURCES, "is the castiron skillet dishwasher safe?")
    assert c.abstained and c.text == ABSTAIN_MESSAGE and not c.citations
    assert c.evidence is not None and (c.evidence.marker, c.evidence.uid) == (1, "S1")
    assert c.evidence.sentence.startswith("Hand wash only")
    assert check("Yes.", SOURCES, "is it good?").abstained  # states nothing: not shown as an answer


@pytest.mark.parametrize("joined", [
    "Hand wash only [1]; the catalog does not say whether it can go in the oven.",
    "Hand wash only [1], but the catalog does not say whether it can go in the oven.",
    "Hand wash only [1], and the sources do not mention the oven.",
    "Hand wash only [1] - the catalog does not say whether it can go in the oven.",
    "Hand wash only [1] and the catalog does not say whether it can go in the oven.",
    "Hand wash only [1] but the sources do not mention the oven.",
    "Hand wash only [1]\u2014the catalog does not say whether it can go in the oven.",
    "Hand wash only [1]\u2013there is no information about the oven.",
    "Hand wash only [1], although it is not mentioned whether it can go in the oven.",
])
def test_a_hedge_joined_to_a_fact_keeps_the_fact(joined):
    c = check(joined, SOURCES, "castiron skillet care and oven?")
    assert not c.abstained and c.text == "Hand wash only [1].", c
    assert c.hedges and [x.uid for x in c.citations] == ["S1"]


@pytest.mark.parametrize("sentence, clauses", [
    ("The Boomtone Go 3 is waterproof and dustproof (IP67) [2].", 1),  # a bare "and" joins one claim
    ("Ages 4\u201399 [3].", 1),  # an en dash between digits is a range
    ("Hand wash only [1] and the catalog does not say more.", 2),
    ("Hand wash only [1]\u2014the catalog does not say more.", 2),
])
def test_clause_boundaries_split_hedges_off_but_not_claims(sentence, clauses):
    from amzqa.answer.citations import _CLAUSE

    assert len([c for c in _CLAUSE.split(sentence) if c and c.strip()]) == clauses


def test_the_stream_shows_only_checked_sentences():
    pieces = ["The Boomtone Go 3 is water", "proof (IP67) [2]. It plays for", " 30 hours [2]. Ages 4", " to 99 [3]."]
    raw: list[str] = []
    shown = list(checked_sentences(iter(pieces), SOURCES, "boomtone", raw))
    assert "".join(raw) == "".join(pieces)
    assert shown == ["The Boomtone Go 3 is waterproof (IP67) [2].", " Ages 4 to 99 [3]."]
    assert list(checked_sentences(iter(["It is dishwasher safe [1]."]), SOURCES, "q", [])) == [ABSTAIN_MESSAGE]


FIXTURE = Path(__file__).parent / "fixtures" / "support_pairs.jsonl"


def test_the_labelled_pairs_are_real_and_balanced():
    pairs = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    assert len(pairs) >= 200
    assert {p["model"].split(":")[0] for p in pairs} == {"base", "export", "select"}  # real outputs of each model
    assert {p["split"] for p in pairs} == {"dev", "test", "holdout"}
    assert 0.2 < sum(p["label"] for p in pairs) / len(pairs) < 0.8


def test_the_check_holds_its_measured_precision_and_recall_on_the_untouched_test_pairs():
    """On the pairs the rules were never tuned on (answers to the 125 shopper questions): precision of 'supported'
    0.955, recall 0.884 when measured (benchmarks/bench_support.py prints them with intervals, beside the
    word-overlap check it replaced). Issue #25's targets are 0.95 and 0.90: precision meets it, recall does not yet;
    this guards what was reached."""
    pairs = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    test = [p for p in pairs if p["split"] == "test"]
    pred = [judge(p["sentence"], Product(0, p["uid"], p["title"], p["content"])).supported for p in test]
    gold = [bool(p["label"]) for p in test]
    tp = sum(a and b for a, b in zip(pred, gold))
    precision, recall = tp / max(1, sum(pred)), tp / max(1, sum(gold))
    assert precision >= 0.95, precision
    assert recall >= 0.88, recall


def test_a_supported_sentence_that_does_not_state_the_fact_asked_is_no_answer():
    c = check("The Castiron skillet is seasoned with vegetable oil [1].", SOURCES, "is the castiron skillet dishwasher safe?")
    assert c.abstained and c.reasons == ["does not state the dishwasher asked for"]
    assert c.evidence.sentence.startswith("Hand wash only")  # what the catalog does say about it
    # the same sentence answers a question that asks for no particular kind of fact
    assert not check("The Castiron skillet is seasoned with vegetable oil [1].", SOURCES, "tell me about the castiron skillet").abstained
