"""The Streamlit page: AppTest for the interactions, headless Chromium (Playwright) end to end."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from amzqa.apps.render import answer_markdown, escape
from amzqa.records import Answer, Citation, Hit, Product
from tests.conftest import ROOT, free_port, wait_for_page

APP = str(ROOT / "apps" / "streamlit_app.py")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_escape_keeps_markup_inert():
    out = escape("<script>alert(1)</script> ![x](http://e/x.png) [link](http://e) # head")
    assert "<script>" not in out and "&lt;script&gt;" in out
    assert "![x](" not in out and "\\!\\[x\\]\\(" in out and "\\#" in out


def test_escape_keeps_latex_emoji_and_colour_codes_inert():
    out = escape("Was $30 now $20 :smile: :red[SALE] :material/home:")
    assert re.search(r"(?<!\\)\$", out) is None  # every $ escaped: no $…$ LaTeX
    assert re.search(r":[\w/-]+:", out) is None and ":red[" not in out  # no emoji, icon or colour shortcode
    assert out.replace("\u2060", "").replace("\\", "") == "Was $30 now $20 :smile: :red[SALE] :material/home:"


def test_answer_markers_link_to_source_cards():
    p = Product(0, "U1", "T", "c")
    a = Answer("q", "Boils fast [1]. Also <b>bold</b> [3].", [Citation(1, "U1", "T")], [Hit(p, 1.0, 1)])
    md = answer_markdown(a)
    assert "[\\[1\\]](#source-1)" in md and "source-3" not in md and "&lt;b&gt;" in md


INJECTED = ("A 5 x 7 inch wooden picture frame. <script>document.title='pwned'</script>"
            "<img src=x onerror=\"alert('xss')\"> [evil](javascript:alert(1)) Wall-mountable. "
            "Was $30 now $20 :smile: :red[SALE].")


@pytest.fixture(scope="module")
def injected_artifacts(sample_artifacts, tmp_path_factory):
    """The sample index with raw markup put back into one product's stored text (the corpus cleaner strips tags,
    so this is what a page must survive from any other source of product text)."""
    import pyarrow as pa

    from amzqa.io.layout import PRODUCTS_FILE
    from amzqa.retrieval.artifacts import seal

    out = tmp_path_factory.mktemp("injected") / "artifacts"
    shutil.copytree(sample_artifacts, out)
    table = pa.ipc.open_file(pa.memory_map(str(sample_artifacts / PRODUCTS_FILE))).read_all()  # not the file we rewrite
    uids = table.column("uid").to_pylist()
    content = table.column("content").to_pylist()
    content[uids.index("B0MESSY005")] = INJECTED
    table = table.set_column(2, "content", pa.array(content))
    with pa.OSFile(str(out / PRODUCTS_FILE), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    seal(out, json.loads((out / "manifest.json").read_text()))  # a deliberate edit: sealed again, as a build would
    return out


@pytest.fixture()
def app_env(injected_artifacts, monkeypatch, tmp_path):
    sample_artifacts = injected_artifacts
    monkeypatch.setenv("AMZQA_ARTIFACTS", str(sample_artifacts))
    monkeypatch.setenv("AMZQA_GENERATION", json.dumps({"backend": "extractive", "adapter": str(sample_artifacts / "no-adapter")}))
    monkeypatch.chdir(tmp_path)  # not the repository: the page must not depend on the folder it is started from


def _run(question, **sidebar):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    for key, value in sidebar.items():
        at.sidebar.slider(key=key).set_value(value) if key == "k" else at.sidebar.radio(key=key).set_value(value)
    at.text_input(key="question").input(question)
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    return at


def test_page_answers_with_linked_citations_and_source_cards(app_env):
    at = _run("Is the JBL Flip 5 waterproof?")
    texts = [m.value for m in at.markdown]
    answer = next(t for t in texts if "IPX7" in t)
    assert "(#source-1)" in answer
    assert any("JBL Flip 5" in h.value and "cited" in h.value for h in at.subheader)
    assert len(at.dataframe) == 1 and at.dataframe[0].value.iloc[0]["uid"] == "B07QXV6N1B"
    assert any("Timings" in c.value for c in at.caption)


def test_each_citation_shows_its_source_sentence_highlighted(app_env):
    at = _run("Is the JBL Flip 5 waterproof?")
    assert at.expander, "no evidence under the answer"
    label = at.expander[0].label
    assert label.startswith("Evidence") and "JBL Flip 5" in label
    shown = [m.value for m in at.expander[0].markdown]
    # the supporting sentence, highlighted inside the source's description
    assert any(":orange-background[**" in t and "IPX7" in t.split(":orange-background[**", 1)[1] for t in shown), shown


def test_render_highlights_the_sentence_in_its_description():
    from amzqa.apps.render import highlighted

    text = highlighted("Pre-seasoned. Hand wash only. Made in USA.", "Hand wash only.")
    assert text.startswith("Pre\\-seasoned\\. :orange-background[**Hand wash only\\.**]")
    assert highlighted("A title only product", "") == "A title only product"
    assert highlighted("Other text.", "Acme Kettle") == ":orange-background[**Acme Kettle**]"  # supported by the title


def test_sidebar_controls_change_retrieval(app_env):
    at = _run("waterproof speaker", k=3, mode="lexical")
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["found by"]) == {"lexical"}


def test_out_of_catalog_question_shows_abstention(app_env):
    at = _run("Do you sell a petrol lawn mower?")
    assert any("does not answer" in i.value for i in at.info)


def test_injected_markup_is_rendered_as_text(app_env):
    at = _run("Harmless wooden picture frame 5 x 7")
    texts = [m.value for m in at.markdown]
    assert any("&lt;script&gt;" in t and "&lt;img src=x" in t for t in texts)
    assert not any("<script" in t or "<img" in t or "](javascript:" in t for t in texts)
    assert not [m.value for m in at.markdown if getattr(m.proto, "allow_html", False)]  # no element allows raw HTML
    assert any("alert" in h.value and "Harmless Picture Frame" in h.value for h in at.subheader)


def test_page_answers_through_an_engine_server(app_env, llamacpp_server, monkeypatch):
    """The 'server' generator: the page asks a real llama.cpp server through the OpenAI client backend."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AMZQA_GENERATION", json.dumps({"backend": "openai", "base_url": llamacpp_server.url}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.sidebar.selectbox(key="generator").value == "server"
    at.text_input(key="question").input("Is the JBL Flip 5 waterproof?")
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    assert any("JBL Flip 5" in h.value for h in at.subheader)
    assert any("Timings" in c.value for c in at.caption)


def test_switching_generators_loads_the_index_once(app_env, monkeypatch):
    """Each generator choice gets its own QA, all over one retriever set calibrated once."""
    from streamlit.testing.v1 import AppTest

    import amzqa.answer.pipeline
    import amzqa.retrieval

    built, calibrated = [], []
    real_init, real_calibrate = amzqa.retrieval.RetrieverSet.__init__, amzqa.answer.pipeline.QA.calibrate

    def counting_init(self, *args, **kwargs):
        built.append(args[0])
        real_init(self, *args, **kwargs)

    def counting_calibrate(self, *args, **kwargs):
        calibrated.append(self.generator.name)
        return real_calibrate(self, *args, **kwargs)

    monkeypatch.setattr(amzqa.retrieval.RetrieverSet, "__init__", counting_init)
    monkeypatch.setattr(amzqa.answer.pipeline.QA, "calibrate", counting_calibrate)
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.text_input(key="question").input("Is the JBL Flip 5 waterproof?")
    at.button(key="ask").click().run()
    at.sidebar.selectbox(key="generator").set_value("base").run()
    assert not at.exception, at.exception
    assert any("JBL Flip 5" in h.value for h in at.subheader)
    assert len(built) == 1 and len(calibrated) == 1, (built, calibrated)
    st.cache_resource.clear()


def test_the_page_answers_from_a_new_index_version_at_the_next_question(sample_artifacts, app_env, tmp_path, monkeypatch):
    """amzqa index --add on the index a page serves: the next question loads the new version (and only it)."""
    from amzqa.indexing.build import IndexConfig
    from amzqa.indexing.update import update_index

    index = tmp_path / "served"
    shutil.copytree(sample_artifacts, index)
    monkeypatch.setenv("AMZQA_ARTIFACTS", str(index))
    question = "How much does the Pelican Sentinel kayak weigh?"
    at = _run(question)
    assert not any("Pelican" in h.value for h in at.subheader)
    add = tmp_path / "add.json"
    add.write_text(json.dumps({"uid": "NEW-KAYAK-1", "title": "Pelican Sentinel 100X Sit-In Kayak, 10 ft",
                               "content": "A stable sit-in kayak for lakes and slow rivers. It weighs 36 lb and "
                                          "carries up to 275 lb."}) + "\n")
    update_index(IndexConfig(out=index, add=add, recalibrate_fraction=1.0), progress=False)
    at.text_input(key="question").input(question + " ")
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    assert any("Pelican Sentinel" in h.value and "cited" in h.value for h in at.subheader)
    assert at.dataframe[0].value.iloc[0]["uid"] == "NEW-KAYAK-1"


def test_missing_artifacts_say_how_to_build(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("AMZQA_ARTIFACTS", str(tmp_path / "nothing"))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert "make demo" in at.error[0].value and "amzqa index" in at.error[0].value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server(injected_artifacts, tmp_path):
    port = _free_port()
    env = dict(os.environ, AMZQA_ARTIFACTS=str(injected_artifacts),
               AMZQA_GENERATION=json.dumps({"backend": "extractive", "adapter": str(injected_artifacts / "no-adapter")}))
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", APP, "--server.port", str(port), "--server.address",
                             "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs Debian's chromium; "
                                             "it could not be installed on this machine)")
def test_browser_end_to_end(server, tmp_path):
    import asyncio

    from playwright.async_api import async_playwright

    async def ask(page, question):
        await page.goto(server)
        box = page.get_by_label("Your question")
        await box.fill(question)
        await box.press("Enter")
        await page.get_by_role("button", name="Ask").click()
        await page.get_by_text("Retrieved products").wait_for(timeout=90_000)

    async def main():
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1400, "height": 1800})
            dialogs = []
            page.on("dialog", lambda d: (dialogs.append(d.message), asyncio.ensure_future(d.dismiss())))
            await ask(page, "Is the JBL Flip 5 waterproof?")
            body = await page.inner_text("body")
            assert "IPX7" in body and "[1] JBL Flip 5" in body and "B07QXV6N1B" in body
            assert "Evidence [1] JBL Flip 5" in body  # the cited source's supporting sentence, under the answer
            assert await page.locator("strong", has_text="IPX7").count() >= 1  # highlighted
            assert await page.locator("a[href='#source-1']").count() >= 1
            shot = ROOT / "reports" / "app-screenshot.png"
            shot.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(shot), full_page=True)

            await ask(page, "Harmless wooden picture frame 5 x 7")
            body = await page.inner_text("body")
            assert "Harmless Picture Frame" in body
            assert "<script>document.title='pwned'</script>" in body  # shown as text, not run
            assert await page.locator("img[src='x']").count() == 0
            assert await page.locator("a[href^='javascript']").count() == 0
            assert await page.title() != "pwned" and not dialogs
            assert "Was $30 now $20 :smile: :red[SALE]" in body.replace("\u2060", "")  # as typed: no LaTeX, emoji, colour
            assert await page.locator(".katex").count() == 0 and "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" not in body

            # 8 sessions at once, each must get its own answer.
            questions = {"Is the JBL Flip 5 waterproof?": "B07QXV6N1B", "Who illustrated Goodnight Moon?": "0064430170",
                         "What ages is the LEGO Classic brick box for?": "B000068CKY", "How many players for Catan?": "B00D8STBHY",
                         "Is the Yeti Rambler tumbler dishwasher safe?": "B07JWBMNLB", "Lodge cast iron skillet size": "B00004OCKR",
                         "Sony WH-1000XM4 battery life": "B08N5WRWNW", "Rubik's cube for ages": "B0006TTPVQ"}
            pages = [await (await browser.new_context()).new_page() for _ in questions]
            await asyncio.gather(*(ask(p, q) for p, q in zip(pages, questions)))
            for p, (q, uid) in zip(pages, questions.items()):
                first_card = await p.get_by_text("[1] ").first.inner_text()
                body = await p.inner_text("body")
                assert uid in body and q in (await p.get_by_label("Your question").input_value()), (q, first_card)
            await browser.close()
        return shot

    shot = asyncio.run(main())
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stopping_amzqa_app_stops_the_streamlit_server(app_env, sig, tmp_path):
    """TERM or Ctrl-C to ``amzqa app`` takes the Streamlit server it started down with it, freeing the port. Started
    from another folder than the repository with a relative --artifacts, as a user would: the page gets it absolute."""
    import psutil

    port = free_port()
    artifacts = os.environ["AMZQA_ARTIFACTS"]
    proc = subprocess.Popen([sys.executable, "-m", "amzqa", "app", "--artifacts", os.path.relpath(artifacts, tmp_path),
                             "--port", str(port), "--address", "127.0.0.1"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    children: list = []
    try:
        wait_for_page(port, proc)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "amzqa app should run Streamlit as its child"
        assert {c.environ().get("AMZQA_ARTIFACTS") for c in children} == {artifacts}
        proc.send_signal(sig)
        assert proc.wait(timeout=30) != 0
        gone, alive = psutil.wait_procs(children, timeout=15)
        assert not alive, f"still running after amzqa app stopped: {alive}"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
    finally:  # only what this test started: the session's other servers (llama.cpp) must live on
        if proc.poll() is None:
            proc.kill()
        for child in children:
            if child.is_running():
                child.kill()


def test_a_portuguese_question_gets_a_portuguese_answer_and_page(app_env):
    """The question's language drives the page (auto): Portuguese labels, the answer in Portuguese with its [n]
    links to the same source cards, and the English query shown."""
    at = _run("A caixa de som JBL Flip 5 é à prova d'água?")
    assert any(h.value == "Resposta" for h in at.subheader) and any(h.value == "Fontes" for h in at.subheader)
    answer = next(m.value for m in at.markdown if "(#source-1)" in m.value)
    assert "impermeável" in answer or "prova d" in answer, answer
    assert any("JBL Flip 5" in h.value and "citada" in h.value for h in at.subheader)
    assert any("consultado com" in c.value for c in at.caption) and any("Tempos" in c.value for c in at.caption)
    assert at.title[0].value == "Pergunte ao catálogo" and at.text_input(key="question").label == "Sua pergunta"


def test_the_language_switch_fixes_the_page_language(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.title[0].value == "Ask the catalog"
    at.sidebar.radio(key="ui_language").set_value("pt").run()
    assert at.title[0].value == "Pergunte ao catálogo" and at.button(key="ask").label == "Perguntar"
    at.sidebar.radio(key="ui_language").set_value("en").run()
    at.text_input(key="question").input("A caixa de som JBL Flip 5 é à prova d'água?")
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Ask the catalog" and any(h.value == "Answer" for h in at.subheader)


def _fake_adapter(folder):
    """An adapter folder as far as the page reads it: its config and its provenance (trained on 3 x 150)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "amzqa_adapter.json").write_text(json.dumps({"data": {"prompt": {"k": 3, "excerpt_chars": 150}}}))
    return folder


@pytest.fixture()
def fake_generators(monkeypatch):
    """Every generator the page loads is the given factory's (no model, no server); the prompts they get are kept."""
    import streamlit as st

    import amzqa.generation
    from amzqa.generation import ExtractiveGenerator

    prompts = []

    class Recording(ExtractiveGenerator):
        def stream(self, prompt):
            prompts.append(prompt)
            yield from super().stream(prompt)

    made = {"factory": Recording}
    monkeypatch.setattr(amzqa.generation, "load_generator", lambda *args, **kwargs: made["factory"]())
    st.cache_resource.clear()
    yield made, prompts
    st.cache_resource.clear()


@pytest.mark.parametrize("backend", ["hf", "openai"])
def test_a_fine_tuned_adapter_gets_the_prompt_shape_it_was_trained_on(app_env, fake_generators, tmp_path, monkeypatch,
                                                                       backend):
    """The adapter (or a server serving it by name) is shown the sources it was trained on: k=3 by 150 characters;
    the slider starts there, and another choice starts at its own shape."""
    from streamlit.testing.v1 import AppTest

    _, prompts = fake_generators
    settings = {"backend": backend, "adapter": str(_fake_adapter(tmp_path / "adapter"))}
    if backend == "openai":
        settings.update(base_url="http://127.0.0.1:9/v1", served_model="tuned")
    monkeypatch.setenv("AMZQA_GENERATION", json.dumps(settings))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.sidebar.selectbox(key="generator").value == ("adapter" if backend == "hf" else "server")
    assert at.sidebar.slider(key="k").value == 3
    at.text_input(key="question").input("Is the JBL Flip 5 waterproof?")
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    # k=3 retrieved (the table), the model reads those that pass the gate (QAConfig.focus), with 150 characters each
    assert [(1 <= len(p.sources) <= 3, p.excerpt_chars) for p in prompts] == [(True, 150)]
    assert len(at.dataframe[0].value) == 3
    at.sidebar.selectbox(key="generator").set_value("extractive").run()
    assert not at.exception, at.exception
    assert at.sidebar.slider(key="k").value == 5 and prompts[-1].excerpt_chars == 300 and len(prompts[-1].sources) <= 5
    assert len(at.dataframe[0].value) == 5  # k=5 retrieved


def test_a_generation_failure_mid_stream_is_an_error_not_a_traceback(app_env, fake_generators, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from amzqa.errors import GenerationError
    from amzqa.generation import ExtractiveGenerator

    class Failing(ExtractiveGenerator):
        def stream(self, prompt):
            yield "The JBL Flip 5 is waterproof [1]. "
            raise GenerationError("the server at http://127.0.0.1:9/v1 stopped answering")

    fake_generators[0]["factory"] = Failing
    monkeypatch.setenv("AMZQA_GENERATION", json.dumps({"backend": "hf"}))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.text_input(key="question").input("Is the JBL Flip 5 waterproof?")
    at.button(key="ask").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["The answer could not be completed: "  # the error text escaped as data
                                           + escape("the server at http://127.0.0.1:9/v1 stopped answering")]
    assert not at.dataframe and not at.subheader  # no answer and no sources under the error


def test_the_sidebar_shows_the_index_path_as_it_is(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    path = os.environ["AMZQA_ARTIFACTS"]
    assert "-" in path  # pytest's temporary folders: /tmp/pytest-of-USER/...
    assert [c.value for c in at.sidebar.caption] == [f"Index: `{path}`"]  # a code span shows backslashes literally
    from amzqa.apps.render import code_span

    assert code_span("a`b") == "``a`b``" and code_span("`x") == "`` `x ``" and code_span("a\nb") == "`a b`"


def test_amzqa_app_hands_the_page_absolute_paths_and_a_viewer_toolbar(injected_artifacts, tmp_path, monkeypatch):
    """Paths given relative to the caller's folder reach the page absolute; the page runs in the caller's folder (no
    working-directory change: amzqa.apps is importable from anywhere); the shopper's page has no developer toolbar."""
    from streamlit.testing.v1 import AppTest

    import amzqa.cli.main

    shutil.copytree(injected_artifacts, tmp_path / "rel" / "art")
    adapter = _fake_adapter(tmp_path / "rel" / "adapter")
    (tmp_path / "rel" / "model").mkdir()
    seen = {}
    monkeypatch.setattr(amzqa.cli.main, "run_child", lambda cmd, **popen: seen.update(cmd=cmd, **popen) or 0)
    monkeypatch.chdir(tmp_path)
    assert amzqa.cli.main.main(["app", "--artifacts", "rel/art", "--adapter", "rel/adapter", "--model", "rel/model",
                           "--generator", "extractive"]) == 0
    env, cmd = seen["env"], seen["cmd"]
    assert env["AMZQA_ARTIFACTS"] == str(tmp_path / "rel" / "art")
    generation = json.loads(env["AMZQA_GENERATION"])
    assert generation["adapter"] == str(adapter) and generation["model"] == str(tmp_path / "rel" / "model")
    assert cmd[cmd.index("--client.toolbarMode") + 1] == "viewer"
    assert amzqa.cli.main.main(["app", "--artifacts", "rel/art", "--model", "smollm2", "--generator", "extractive"]) == 0
    assert json.loads(seen["env"]["AMZQA_GENERATION"])["model"] == "smollm2"  # a name, not a path here: kept
    assert "cwd" not in seen and Path(cmd[cmd.index("run") + 1]) == Path(APP).resolve()
    # The page, run as amzqa app runs it (from the caller's folder, with that environment), finds the index.
    for key in ("AMZQA_ARTIFACTS", "AMZQA_GENERATION"):
        monkeypatch.setenv(key, env[key])
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "fine-tuned adapter" in at.sidebar.selectbox(key="generator").options  # its folder found from there too
