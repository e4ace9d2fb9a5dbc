"""The static embedding for large catalogs (issue #27, item 1): distilled from the packaged MiniLM with model2vec,
carried inside the index, its top candidates re-scored by MiniLM at query time; updates and the auto choice."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from amzqa.errors import ArtifactError
from amzqa.indexing.build import IndexConfig, build_index, resolve_backend
from amzqa.io.layout import EMBEDDINGS_FILE, MANIFEST, STATIC_MODEL_DIR
from amzqa.retrieval import RetrieverSet
from amzqa.retrieval.artifacts import verify
from amzqa.retrieval.embedding import distill_static, is_static_model, load_embedder, model_fingerprint


@pytest.fixture(scope="module")
def static_index(sample_corpus, tmp_path_factory):
    """The sample catalog with the default backend choice lowered so that it is "large": auto picks static (with the
    optional re-scoring on)."""
    out = tmp_path_factory.mktemp("static") / "index"
    build_index(IndexConfig(corpus=sample_corpus, out=out, static_above_rows=10, rescore_candidates=10), progress=False)
    return out


def test_the_distilled_model_is_cached_and_embeds_like_a_sentence_model():
    first = distill_static("minilm")
    started = time.perf_counter()
    again = distill_static("minilm")
    assert again == first and is_static_model(first) and time.perf_counter() - started < 5  # cached, not re-distilled
    assert {p.name for p in first.iterdir()} >= {"model.safetensors", "tokenizer.json", "config.json"}
    emb = load_embedder("minilm", "static")
    vecs = emb.encode(["Lodge cast iron skillet, 10 inch", "cast iron pan", "JBL Flip 5 bluetooth speaker", ""])
    assert vecs.shape == (4, 256) and vecs.dtype == np.float32 and emb.dim == 256
    assert np.allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5)
    assert not np.isnan(vecs).any() and np.allclose(vecs[3], 0.0)  # an empty text matches nothing, never NaN
    assert vecs[1] @ vecs[0] > vecs[1] @ vecs[2] + 0.1
    assert np.array_equal(vecs, emb.encode(["Lodge cast iron skillet, 10 inch", "cast iron pan",
                                            "JBL Flip 5 bluetooth speaker", ""]))


def test_auto_picks_the_transformer_for_small_catalogs_and_static_above():
    cfg = IndexConfig(static_above_rows=1000)
    assert (resolve_backend(cfg, 1000), resolve_backend(cfg, 1001)) == ("onnx", "static")
    assert resolve_backend(IndexConfig(embedding_backend="onnx", static_above_rows=0), 10**7) == "onnx"
    assert IndexConfig().embedding_backend == "auto"


def test_a_static_index_carries_its_model_and_rescores_its_candidates(static_index):
    man = json.loads((static_index / MANIFEST).read_text())
    assert man["embedding"]["backend"] == "static" and man["embedding"]["path"] == STATIC_MODEL_DIR
    assert f"{STATIC_MODEL_DIR}/model.safetensors" in man["files"]  # sealed with the rest
    assert man["embedding"]["fingerprint"] == model_fingerprint(str(static_index / STATIC_MODEL_DIR))
    assert man["rescore"]["model_id"] == "minilm" and man["rescore"]["candidates"] == 10
    verify(static_index, man, full=True)

    rset = RetrieverSet(static_index)
    dense = rset.dense
    assert dense.embedder.backend == "static" and str(static_index) in dense.embedder.path  # the index's own copy
    from amzqa.answer.pipeline import sentence_embedder

    assert sentence_embedder(rset) is dense.rescorer  # the selector compares sentences with MiniLM, not the static model
    rescorer, dense.rescorer = dense.rescorer, None
    assert sentence_embedder(rset) is None  # no MiniLM: no similarity term
    dense.rescorer = rescorer
    vectors = np.load(static_index / EMBEDDINGS_FILE)
    assert vectors.shape == (len(rset.store), 256)
    titles = rset.store.titles()
    assert np.abs(vectors[:50].astype(np.float32) - dense.embedder.encode(titles[:50])).max() < 2e-3

    question = "cast iron skillet that goes in the oven"
    plain = dense.search_vectors(dense.embedder.encode([question]), 40)[0]
    rescored = dense.search(question, 40)
    head = plain[:10]
    # the first 10 re-ordered by MiniLM's cosine, keeping the static scores in order; nothing below them moves
    minilm = dense.rescorer.encode([question] + [rset.store.get(r).title for r, _ in head])
    cos = minilm[1:] @ minilm[0]
    assert [r for r, _ in rescored[:10]] == [head[i][0] for i in np.argsort(-cos, kind="stable")]
    assert [s for _, s in rescored[:10]] == sorted((s for _, s in head), reverse=True)
    assert rescored[10:] == plain[10:]
    assert [r for r, _ in rescored[:10]] != [r for r, _ in head]  # this question's order changes (else no test)

    hits = rset.hybrid.retrieve("Lodge cast iron skillet", 5)
    assert "Lodge" in hits[0].product.title


def test_a_static_index_refuses_another_rescorer_and_a_changed_model(static_index, tmp_path):
    import shutil

    with pytest.raises(ArtifactError, match="re-scores with 'minilm'"):
        RetrieverSet(static_index, rescorer=load_embedder("minilm", "onnx-fp32"))
    copy = tmp_path / "copy"
    shutil.copytree(static_index, copy)
    tok = copy / STATIC_MODEL_DIR / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"[UNK]"', '"[UNK ]"'))
    with pytest.raises(ArtifactError, match="tokenizer.json"):
        RetrieverSet(copy)


def test_an_update_of_a_static_index_embeds_new_titles_with_the_same_static_model(static_index, sample_corpus, tmp_path):
    import shutil

    from amzqa.indexing.update import update_index

    index = tmp_path / "index"
    shutil.copytree(static_index, index)
    fresh = [{"uid": "STATIC-NEW-1", "title": "Zubrowka Pine Cone Bird Feeder with Copper Roof",
              "content": "Holds two pounds of seed; the copper roof keeps the rain out."}]
    add = tmp_path / "add.json"
    add.write_text("".join(json.dumps(r) + "\n" for r in fresh))
    man = update_index(IndexConfig(out=index, add=add), progress=False)
    assert man["embedding"]["backend"] == "static" and (index / STATIC_MODEL_DIR / "model.safetensors").is_file()
    rset = RetrieverSet(index)
    row = rset.store.row_of("STATIC-NEW-1")
    want = rset.dense.embedder.encode([fresh[0]["title"]])[0]
    assert np.abs(np.load(index / EMBEDDINGS_FILE)[row].astype(np.float32) - want).max() < 2e-3
    assert rset.dense.retrieve("copper roof bird feeder", 3)[0].uid == "STATIC-NEW-1"
