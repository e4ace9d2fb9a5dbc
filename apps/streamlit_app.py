"""The amzqa search-and-answer page: ``amzqa app --artifacts DIR`` (or ``make app``).

A thin shell over :class:`amzqa.QA`; the pipeline and generators load once per process (st.cache_resource).
Configuration comes from the environment so ``amzqa app`` and tests can point it anywhere: ``AMZQA_ARTIFACTS``
(index folder) and ``AMZQA_GENERATION`` (the generator settings as JSON, as ``amzqa app`` validated them from the
same flags as ``amzqa ask``). The menu offers the base model, the adapter (the settings' one, else the demo's if
trained), the server (with a ``base_url``) and the extractive answerer, starting on the one the settings choose.
Each choice starts with the prompt shape it answers best with (a fine-tuned adapter's trained k and excerpt length,
from its provenance; the defaults otherwise), and the relevance gate is calibrated for the shape asked (k, retriever,
excerpt length), once per shape.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import streamlit as st

from amzqa.apps.labels import EXAMPLES, LABELS, LANGUAGES, page_language
from amzqa.apps.render import answer_markdown, card_title, code_span, escape, excerpt, highlighted
from amzqa.generation import GenerationConfig
from amzqa.io.layout import MANIFEST
from amzqa.retrieval.artifacts import current_seal

ARTIFACTS = Path(os.environ.get("AMZQA_ARTIFACTS", "runs/demo/artifacts"))
SETTINGS = GenerationConfig.from_dict({"max_new_tokens": 96, **json.loads(os.environ.get("AMZQA_GENERATION") or "{}")})
ADAPTER = Path(SETTINGS.adapter or "runs/demo/train/adapter")
BASE_URL = SETTINGS.base_url or ""
SERVED_MODEL = SETTINGS.served_model
GENERATORS = ("base", "adapter", "server", "extractive")
# the menu entry the settings choose: their backend, with their adapter if they name one
DEFAULT = {"openai": "server", "extractive": "extractive"}.get(SETTINGS.backend, "adapter" if SETTINGS.adapter else "base")
LOCAL = SETTINGS.backend if SETTINGS.backend in ("auto", "hf", "openvino") else "auto"  # backend of base/adapter


@st.cache_resource(show_spinner="Loading the index…")
def retrievers(path: str, version: str):
    """The index at ``path`` as sealed ``version``: a new version (``amzqa index --add/--remove``, a rebuild) is loaded
    by the first question after it appears; questions under way finish on the one they started with."""
    from amzqa.retrieval import RetrieverSet

    return RetrieverSet(path)


@st.cache_resource
def _held() -> dict:
    return {}


def forget_older_versions(version: str) -> None:
    """Drop the cached index, gates and pipelines of an index version replaced since (they hold its files open)."""
    held = _held()
    if held.get("version") not in (None, version):
        for cached in (retrievers, gate, pipeline):
            cached.clear()
    held["version"] = version


def serves_adapter(adapter: str) -> bool:
    """Whether the server choice asks for the adapter by name (a served LoRA): its folder then gives the trained prompt
    shape and the abstention threshold."""
    return bool(SERVED_MODEL and Path(adapter, "adapter_config.json").is_file())


def own_shape(kind: str, adapter: str) -> dict:
    """The prompt shape (k, excerpt_chars) a generator choice answers best with: the one its fine-tuned weights were
    trained on (an adapter's provenance, also when a server serves it; an export of a fine-tuned model as the
    model), else the defaults."""
    from amzqa.answer.pipeline import QAConfig, adapter_prompt

    defaults = QAConfig(abstain_threshold=0.0)
    trained = (adapter_prompt(adapter) if kind == "adapter" or (kind == "server" and serves_adapter(adapter))
               else adapter_prompt(SETTINGS.model) if kind == "base" else {})
    return {"k": defaults.k, "excerpt_chars": defaults.excerpt_chars, **trained}


@st.cache_resource(show_spinner="Loading the generator…")
def generator(kind: str, adapter: str):
    from amzqa.generation import load_generator

    if kind == "extractive":
        return load_generator("extractive")
    if kind == "server":  # the adapter folder, if any, is read for its abstention threshold only
        cfg = SETTINGS.replace(backend="openai", adapter=adapter if serves_adapter(adapter) else None)
        return load_generator("openai", config=cfg)
    return load_generator(LOCAL, config=SETTINGS.replace(adapter=adapter if kind == "adapter" else None))


@st.cache_resource(show_spinner="Calibrating the relevance gate…")
def gate(path: str, version: str, k: int, mode: str, excerpt_chars: int):
    """The calibrated QA settings for one prompt shape: the relevance gate depends on the retrievers, k and the
    retriever mode, never on the generator, so every generator choice with this shape shares it."""
    from amzqa.answer.pipeline import QA, QAConfig
    from amzqa.generation import ExtractiveGenerator

    return QA(retrievers(path, version), ExtractiveGenerator(), QAConfig(k=k, mode=mode, excerpt_chars=excerpt_chars)).config


@st.cache_resource(show_spinner=False)
def pipeline(path: str, version: str, kind: str, adapter: str, k: int, mode: str):
    """One QA per generator choice and shape asked, all over the one retriever set (the index loads once per
    process) and one generator per choice; its threshold is the one calibrated for exactly this shape."""
    from amzqa.answer.pipeline import QA

    return QA(retrievers(path, version), generator(kind, adapter),
              gate(path, version, k, mode, own_shape(kind, adapter)["excerpt_chars"]))


st.set_page_config(page_title="amzqa — ask the catalog", layout="wide")
# The page speaks the switch's language, or (auto) the language of the last question asked.
LANG = page_language(st.session_state.get("ui_language", "auto"), st.session_state.get("answer"))
L = LABELS[LANG]
st.title(L["title"])

if not (ARTIFACTS / MANIFEST).is_file():
    st.error(L["no_index"].format(path=code_span(str(ARTIFACTS))))
    st.stop()

with st.sidebar:
    st.header(L["settings"])
    st.radio(L["language"], list(LANGUAGES), format_func=lambda c: LANGUAGES[c] or L["auto"], key="ui_language",
             horizontal=True)
    choices = [g for g in GENERATORS if (g != "adapter" or (ADAPTER / "adapter_config.json").is_file())
               and (g != "server" or BASE_URL)]
    kind = st.selectbox(L["generator"], choices, index=choices.index(DEFAULT) if DEFAULT in choices else 0,
                        format_func=lambda g: L[g].format(model=SERVED_MODEL or "base"), key="generator")
    own = own_shape(kind, str(ADAPTER))
    if st.session_state.get("_k_for") != kind:  # each generator choice starts at the k it answers best with
        st.session_state["k"], st.session_state["_k_for"] = own["k"], kind
    k = st.slider(L["k"], 1, max(10, own["k"]), key="k")
    mode = st.radio(L["mode"], ["hybrid", "dense", "lexical"], key="mode")
    st.caption(f"{L['index']}: {code_span(str(ARTIFACTS))}")  # shown as is: nothing is escaped inside a code span

examples = EXAMPLES[LANG]
st.caption(f"{L['examples']}: " + " · ".join(escape(q) for q in examples))
cols = st.columns(len(examples))
for i, (col, q) in enumerate(zip(cols, examples)):
    if col.button(q, key=f"example-{i}"):
        st.session_state["question"] = q
question = st.text_input(L["question"], key="question", placeholder=L["placeholder"])
asked = st.button(L["ask"], key="ask", type="primary")

if (asked or st.session_state.get("_last") != (question, k, mode, kind)) and question.strip():
    st.session_state["_last"] = (question, k, mode, kind)
    from amzqa.errors import AmzqaError, GenerationError

    placeholder = st.empty()
    try:  # generation is lazy: a failure can come with any piece, so the loop is inside too
        version = current_seal(ARTIFACTS) or ""  # the sealed version in the folder now
        forget_older_versions(version)
        stream = pipeline(str(ARTIFACTS), version, kind, str(ADAPTER), k, mode).stream(question)
        text = ""
        for piece in stream:  # stream tokens as text (escaped), then replace with the linked, checked answer
            text += piece
            placeholder.markdown(escape(text))
    except AmzqaError as exc:
        placeholder.empty()  # a partial answer is not shown as if it were the answer
        st.session_state.pop("answer", None)  # nor is the previous question's answer under this question
        st.error(L["generation_failed"].format(error=escape(str(exc))) if isinstance(exc, GenerationError)
                 else escape(str(exc)))
        st.stop()
    placeholder.empty()  # the checked answer, with linked citations, replaces the raw stream below
    st.session_state["answer"] = stream.answer
    if page_language(st.session_state.get("ui_language", "auto"), stream.answer) != LANG:
        st.rerun()  # the page's labels follow the question's language from this answer on
answer = st.session_state.get("answer")

if answer is not None and question.strip():
    st.subheader(L["answer"])
    if answer.abstained:
        st.info(escape(answer.text))
        if answer.evidence is not None:  # what the catalog does say, offered as evidence, not as the answer
            e = answer.evidence
            st.markdown(f"{L['catalog_says']} ([\\[{e.marker}\\]](#source-{e.marker}) {escape(e.title)}): "
                        + highlighted(e.sentence, e.sentence))
    else:
        st.markdown(answer_markdown(answer))
        # Each citation with the source sentence that supports it, highlighted in the source's description.
        for c in answer.citations:
            content = answer.sources[c.marker - 1].product.content if c.marker <= len(answer.sources) else ""
            with st.expander(f"{L['evidence']} \\[{c.marker}\\] {escape(c.title)} — {L['says']}", expanded=True):
                st.markdown(highlighted(content, c.sentence))
    if answer.unsupported:  # the removed sentences are never shown as answers: only their count
        st.warning(L["unsupported"].format(n=len(answer.unsupported)))
    if answer.question_en:
        st.caption(L["translated"].format(q=escape(answer.question_en)))
    t = answer.timings
    st.caption(f"{L['timings']}: " + ", ".join(f"{escape(k_)} {v * 1000:.0f} ms" for k_, v in t.items()))
    cited = {c.marker: c for c in answer.citations}
    st.subheader(L["sources"])
    for n, hit in enumerate(answer.sources, 1):
        with st.container(border=True):
            # The heading's anchor is the target of the answer's [n] links; no raw HTML anywhere on the page.
            st.subheader(escape(card_title(n, hit.product.title)) + (f" — {L['cited']}" if n in cited else ""), anchor=f"source-{n}")
            st.caption(f"uid {escape(hit.uid)} · score {hit.score:.3f} · {L['found_by']} {escape(', '.join(hit.found_by))}")
            st.markdown(escape(excerpt(hit.product.content, 400)) if hit.product.content else f"_{L['no_description']}_")
    st.subheader(L["retrieved"])
    st.dataframe([{"rank": h.rank, "uid": h.uid, "title": h.product.title, "score": round(h.score, 4),
                   "found by": ", ".join(h.found_by)} for h in answer.retrieved or answer.sources], hide_index=True)
