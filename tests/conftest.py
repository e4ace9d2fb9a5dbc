import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AMZQA_PROGRESS", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "indexing" / "sample" / "trn.json"


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory):
    """The bundled sample catalog, prepared once per test session."""
    from amzqa.indexing.corpus import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("corpus") / "sample"
    prepare(PrepareConfig(input=SAMPLE, out=out), progress=False)
    return out


@pytest.fixture(scope="session")
def sample_artifacts(sample_corpus, tmp_path_factory):
    """An index artifact of the sample catalog (exact FAISS, BM25 over title+content), built once."""
    from amzqa.indexing.build import IndexConfig, build_index

    out = tmp_path_factory.mktemp("artifacts") / "sample"
    build_index(IndexConfig(corpus=sample_corpus, out=out), progress=False)
    return out


@pytest.fixture(scope="session")
def retrievers(sample_artifacts):
    from amzqa.retrieval import RetrieverSet

    return RetrieverSet(sample_artifacts)


@pytest.fixture(scope="session")
def hf_generator():
    """The provisioned SmolLM2-135M-Instruct, short answers to keep the suite fast."""
    from amzqa.generation import GenerationConfig, HFGenerator

    return HFGenerator(GenerationConfig(max_new_tokens=24))


@pytest.fixture(scope="session")
def qa_extractive(retrievers):
    from amzqa.answer.pipeline import QA
    from amzqa.generation import ExtractiveGenerator

    return QA(retrievers, ExtractiveGenerator())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_page(port: int, proc, seconds: float = 90) -> None:
    """Until a Streamlit server on ``port`` answers its health check; fails the test if it does not in time or if
    ``proc`` (the process that starts it) ends first."""
    import time
    import urllib.request

    deadline = time.time() + seconds
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the page never came up (exit code {proc.poll()})")


@pytest.fixture(scope="session")
def llamacpp_server():
    """A real llama.cpp OpenAI-compatible server (amzqa serve --engine llamacpp) on 127.0.0.1, SmolLM2 in Q8_0."""
    pytest.importorskip("xllamacpp", reason="the serve extra (xllamacpp) is not installed")
    from amzqa.runtime.serve import ServeConfig, start

    with start(ServeConfig(engine="llamacpp", port=free_port(), parallel=4, max_model_len=2048,
                           startup_timeout_s=120)) as server:
        yield server


@pytest.fixture(scope="session")
def sft_dir(sample_corpus, sample_artifacts, retrievers, tmp_path_factory):
    """Small RAFT SFT data from the sample catalog (2 sources x 80 characters, 40 products), built once."""
    from amzqa.training.sft_data import SFTDataConfig, build_sft_data

    out = tmp_path_factory.mktemp("sft") / "data"
    build_sft_data(SFTDataConfig(corpus=sample_corpus, artifacts=sample_artifacts, out=out, k=2, excerpt_chars=80,
                                 max_products=40, questions_per_product=1, abstain_fraction=0.25, eval_fraction=0.1),
                   retrievers=retrievers)
    return out
