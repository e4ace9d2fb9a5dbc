import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from amzqa.errors import AmzqaError, ArtifactError, ConfigError
from amzqa.pipeline import QA, QAConfig, threshold_for_rate
from amzqa.prompt import ABSTAIN_MESSAGE, build_prompt
from amzqa.records import Answer
from tests.conftest import ROOT


def test_ask_returns_a_cited_answer(qa_extractive):
    a = qa_extractive.ask("What ages is the LEGO Classic brick box for?")
    assert isinstance(a, Answer) and not a.abstained
    assert "Ages 4 to 99" in a.text
    assert a.citations and a.citations[0].uid == "B000068CKY" == a.sources[0].uid
    assert {c.uid for c in a.citations} <= {h.uid for h in a.sources}
    assert len(a.sources) == 5
    assert {"retrieve_s", "prompt_s", "generate_s", "total_s"} <= set(a.timings)


def test_out_of_catalog_question_abstains(qa_extractive):
    a = qa_extractive.ask("Do you sell a lawn mower with a petrol engine?")
    assert a.abstained and a.text == ABSTAIN_MESSAGE and a.citations == []


@pytest.mark.parametrize("q", ["", "   \n", "x" * 1001, None])
def test_bad_questions_are_clear_errors(qa_extractive, q):
    with pytest.raises(AmzqaError, match="question"):
        qa_extractive.ask(q)


def test_calibration_lets_answerable_questions_through(qa_extractive):
    cfg = qa_extractive.config
    assert 0 < cfg.abstain_threshold < 1
    assert cfg.calibration["answered_rate"] >= 0.98
    assert cfg.calibration["product_removed_stopped_rate"] > 0.3


def test_threshold_for_rate():
    assert threshold_for_rate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 0.9) == 0.2
    assert threshold_for_rate([0.5, 0.7], 1.0) == 0.5


def test_save_and_from_dir_restore_the_pipeline(qa_extractive, sample_artifacts, tmp_path):
    settings = qa_extractive.save(tmp_path / "setup-a.json")
    saved = json.loads(settings.read_text())
    assert saved["abstain_threshold"] == qa_extractive.config.abstain_threshold
    again = QA.from_dir(sample_artifacts, generator="extractive", settings=settings, k=3)
    assert again.config.abstain_threshold == qa_extractive.config.abstain_threshold and again.config.k == 3
    assert again.config.calibration == qa_extractive.config.calibration  # restored, not recalibrated
    assert again.ask("LEGO Classic brick box ages").citations[0].uid == "B000068CKY"


def test_qa_settings_never_go_into_the_sealed_index(qa_extractive, sample_artifacts, tmp_path, caplog):
    before = sorted(p.name for p in sample_artifacts.iterdir())
    with pytest.raises(ArtifactError, match="sealed artifact folder"):
        qa_extractive.save(sample_artifacts / "qa.json")
    assert sorted(p.name for p in sample_artifacts.iterdir()) == before
    # Two set-ups keep two files; settings saved on another index are recalibrated, not trusted.
    other = json.loads(qa_extractive.save(tmp_path / "a.json").read_text())
    other.update(index="0" * 64, abstain_threshold=0.99)
    (tmp_path / "b.json").write_text(json.dumps(other))
    with caplog.at_level("WARNING", logger="amzqa.pipeline"):
        again = QA.from_dir(sample_artifacts, generator="extractive", settings=tmp_path / "b.json")
    assert "calibrated on another index" in caplog.text
    assert again.config.abstain_threshold == qa_extractive.config.abstain_threshold  # recalibrated, not 0.99
    with pytest.raises(ConfigError, match="not a QA settings file"):
        QA.from_dir(sample_artifacts, generator="extractive", settings=sample_artifacts / "manifest.json")


def test_eight_concurrent_askers_get_their_own_answers(qa_extractive):
    questions = {
        "What ages is the LEGO Classic brick box for?": "B000068CKY",
        "How many pieces in the Melissa & Doug wooden railway?": "B00000IV35",
        "Is the Yeti Rambler tumbler dishwasher safe?": "B07JWBMNLB",
        "How long does the Sony WH-1000XM4 battery last?": "B08N5WRWNW",
        "What size is the Lodge cast iron skillet?": "B00004OCKR",
        "Is the JBL Flip 5 waterproof?": "B07QXV6N1B",
        "Who illustrated Goodnight Moon?": "0064430170",
        "How many players for Catan?": "B00D8STBHY",
    }
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(qa_extractive.ask, list(questions) * 2))
    for a in answers:
        assert not a.abstained, a.question
        assert a.sources[0].uid == questions[a.question]
        assert a.citations and a.citations[0].uid == questions[a.question]


def test_concurrent_hf_asks(retrievers, hf_generator):
    qa = QA(retrievers, hf_generator, QAConfig(abstain_threshold=0.0))
    qs = ["Is the JBL Flip 5 waterproof?", "Who illustrated Goodnight Moon?", "What ages is the LEGO Classic brick box for?",
          "How many players for Catan?"] * 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(qa.ask, qs))
    alone = qa.ask(qs[0])
    for q, a in zip(qs, answers):
        assert a.question == q and a.text
        assert {c.uid for c in a.citations} <= {h.uid for h in a.sources}
    assert answers[0].raw_text == alone.raw_text  # greedy and isolated: the same answer as when asked alone


def test_injected_instructions_do_not_change_the_answer(retrievers, hf_generator):
    """A description that tries to instruct the model gets the same prompt and output as without those sentences."""
    qa = QA(retrievers, hf_generator, QAConfig(abstain_threshold=0.0))
    question = "tell me about the bluetooth speaker with 8 hours battery"
    hits = retrievers.hybrid.retrieve(question, k=5)
    injected = [h for h in hits if h.uid == "B0MESSY004"]
    assert injected, "the injected product should be among the sources"
    assert "IGNORE PREVIOUS INSTRUCTIONS" in injected[0].product.content
    prompt = build_prompt(question, hits)
    assert "IGNORE" not in prompt.user_text and "ARRR" not in prompt.user_text and "pirate" not in prompt.user_text

    import dataclasses

    clean_product = dataclasses.replace(injected[0].product, content=injected[0].product.content.split("Otherwise: ")[1])
    clean_hits = [dataclasses.replace(h, product=clean_product) if h.uid == "B0MESSY004" else h for h in hits]
    clean = build_prompt(question, clean_hits)
    assert clean.user_text == prompt.user_text.replace("| description: Otherwise: a compact", "| description: a compact")
    a = qa.ask(question)
    assert "ARRR" not in a.text
    assert {c.uid for c in a.citations} <= {h.uid for h in a.sources}


def test_stream_yields_pieces_then_the_answer(qa_extractive):
    s = qa_extractive.stream("Is the JBL Flip 5 waterproof?")
    assert s.sources[0].uid == "B07QXV6N1B"
    text = "".join(s)
    assert s.answer is not None and s.answer.text == text.strip()
    assert "first_token_s" in s.answer.timings


def test_cli_ask_json(sample_artifacts):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "ask", "Is the JBL Flip 5 waterproof?", "--artifacts",
                           str(sample_artifacts), "--generator", "extractive", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["citations"][0]["uid"] == "B07QXV6N1B" and out["sources"][0]["uid"] == "B07QXV6N1B"
    assert "IPX7" in out["answer"]


def test_cli_ask_rejects_empty_question(sample_artifacts):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "ask", "  ", "--artifacts", str(sample_artifacts),
                           "--generator", "extractive"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "question is empty" in proc.stderr
