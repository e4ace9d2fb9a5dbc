import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from amzqa.errors import AmzqaError, ArtifactError, ConfigError
from amzqa.indexing.build import IndexConfig, auto_nlist, build_index
from amzqa.records import Hit, Product
from amzqa.retrieval import Artifacts, Retriever, RetrieverSet, title_key
from amzqa.retrieval.hybrid import convex, rrf, weighted
from tests.conftest import ROOT


@pytest.mark.parametrize("mode", ["dense", "lexical", "hybrid"])
def test_exact_title_finds_the_product(retrievers, mode):
    r = retrievers.get(mode)
    assert isinstance(r, Retriever)
    hits = r.retrieve("Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned", k=5)
    assert hits[0].uid == "B00004OCKR"
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert all(isinstance(h, Hit) and isinstance(h.product, Product) for h in hits)
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert mode in hits[0].found_by or mode == "hybrid"


def test_hybrid_reports_which_retrievers_found_each_hit(retrievers):
    hits = retrievers.hybrid.retrieve("waterproof bluetooth speaker", k=5)
    assert hits[0].uid == "B07QXV6N1B"
    assert set(hits[0].found_by) == {"dense", "lexical"}
    assert set(hits[0].scores) == set(hits[0].found_by)


def test_paraphrase_needs_dense(retrievers):
    # No title word in common with "Harry Potter and the Sorcerer's Stone".
    hits = retrievers.dense.retrieve("boy wizard at a school of magic", k=3)
    assert "0439708184" in [h.uid for h in hits]


def test_description_words_reach_lexical(retrievers):
    hits = retrievers.lexical.retrieve("survives being submerged in 1 meter of water for 30 minutes", k=3)
    assert hits[0].uid == "B07QXV6N1B"


def test_near_duplicate_editions_are_collapsed(retrievers):
    hits = retrievers.hybrid.retrieve("The Road Cormac McCarthy father and son", k=10)
    road = [h for h in hits if title_key(h.product.title) == title_key("The Road")]
    assert len(road) == 1
    keys = [title_key(h.product.title) for h in hits]
    assert len(keys) == len(set(keys))


def test_lookup_by_uid(retrievers):
    p = retrievers.store.by_uid("B07X1KT6QK")
    assert p.title.startswith("Hamilton Beach 1.7 Liter Electric Kettle")
    assert retrievers.store.get(p.row_id) == p
    assert retrievers.store.by_uid("NOPE") is None


@pytest.mark.parametrize("query", ["", "   ", "x" * 5000])
def test_bad_queries_are_rejected(retrievers, query):
    with pytest.raises(AmzqaError):
        retrievers.hybrid.retrieve(query, k=3)


def test_stopword_only_query_returns_dense_results(retrievers):
    assert retrievers.lexical.retrieve("the of and", k=3) == []
    assert len(retrievers.hybrid.retrieve("the of and", k=3)) == 3


def test_rrf_on_hand_made_rankings():
    fused = rrf({"dense": [(1, 0.9), (2, 0.8)], "lexical": [(2, 7.0), (3, 5.0)]}, rrf_k=60)
    assert [r for r, _, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[0][2] == {"dense": 0.8, "lexical": 7.0}


def test_weighted_fusion_keeps_a_peaked_lexical_lead():
    dense = [(1, 0.50), (2, 0.49), (3, 0.48)]
    lexical = [(3, 20.0), (1, 4.0)]
    fused = weighted({"dense": dense, "lexical": lexical}, {"dense": 1.0, "lexical": 1.0})
    assert fused[0][0] == 3  # 0.48 + 1.0 beats 0.50 + 0.2
    assert fused[0][1] == pytest.approx(1.48)


def test_convex_fusion_normalises_each_ranking():
    dense = [(1, 0.60), (2, 0.55), (3, 0.50)]  # min-max: 1.0, 0.5, 0.0
    lexical = [(3, 12.0), (2, 10.0), (4, 2.0)]  # min-max: 1.0, 0.8, 0.0
    fused = convex({"dense": dense, "lexical": lexical}, alpha=0.4)
    scores = {row: s for row, s, _ in fused}
    assert scores == pytest.approx({1: 0.4, 2: 0.4 * 0.5 + 0.6 * 0.8, 3: 0.6, 4: 0.0})
    assert [r for r, _, _ in fused] == [2, 3, 1, 4]
    assert fused[0][2] == {"dense": 0.55, "lexical": 10.0}
    assert [r for r, _, _ in convex({"dense": dense, "lexical": lexical}, alpha=1.0)][:3] == [1, 2, 3]


def test_manifest_describes_the_artifact(sample_artifacts):
    man = json.loads((sample_artifacts / "manifest.json").read_text())
    assert man["embedding"]["dim"] == 384 and man["embedding"]["normalized"] is True
    assert man["embedding"]["backend"] == "onnx"
    assert man["dense"]["type"] == "flat" and man["dense"]["metric"] == "inner_product"
    assert man["lexical"]["library"] == "bm25s"
    assert man["counts"]["products"] == man["corpus"]["rows"] >= 300
    assert "faiss-cpu" in man["versions"] and "bm25s" in man["versions"]
    assert man["config"]["chunk_rows"] == 50_000
    assert all(len(v) == 64 for v in man["files"].values())


def test_other_embedding_model_is_refused(sample_artifacts, tmp_path):
    from amzqa.models import default_embedder_path
    from amzqa.retrieval.embedding import OnnxEmbedder, TorchEmbedder

    with pytest.raises(ArtifactError, match="backend 'torch'"):
        RetrieverSet(sample_artifacts, embedder=TorchEmbedder())
    other = tmp_path / "other-model"
    shutil.copytree(default_embedder_path(), other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-6  # a different model, same architecture
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="another embedding model"):
        RetrieverSet(sample_artifacts, embedder=OnnxEmbedder(str(other)))


def test_an_fp32_index_is_queried_with_the_fp32_model(sample_corpus, sample_artifacts, tmp_path):
    out = tmp_path / "fp32"
    man = build_index(IndexConfig(corpus=sample_corpus, out=out, embedding_backend="onnx-fp32", calibrate_products=0),
                      progress=False)
    assert man["embedding"]["backend"] == "onnx-fp32"
    rset = RetrieverSet(out)
    assert rset.dense.embedder.quantize is False and rset.dense.embedder.backend == "onnx-fp32"
    # and the int8 index still reloads int8, and refuses the fp32 model
    assert RetrieverSet(sample_artifacts).dense.embedder.quantize is True
    with pytest.raises(ArtifactError, match="backend 'onnx-fp32'"):
        RetrieverSet(sample_artifacts, embedder=rset.dense.embedder)


def test_the_onnx_encoder_uses_the_cpus_this_process_may_run_on():
    import os

    from amzqa.retrieval.embedding import usable_cpus

    if hasattr(os, "sched_getaffinity"):
        assert usable_cpus() == len(os.sched_getaffinity(0))
    assert usable_cpus() >= 1


def test_mismatched_corpus_is_refused(sample_artifacts, sample_corpus, tmp_path):
    from amzqa.indexing.corpus import PrepareConfig, open_corpus, prepare
    from tests.conftest import SAMPLE

    Artifacts.open(sample_artifacts, corpus_fingerprint=open_corpus(sample_corpus).fingerprint)  # the right one passes
    other = tmp_path / "other.json"
    other.write_text("\n".join(SAMPLE.read_text().splitlines()[:50]) + "\n")
    prepare(PrepareConfig(input=other, out=tmp_path / "c"), progress=False)
    with pytest.raises(ArtifactError, match="different corpus"):
        Artifacts.open(sample_artifacts, corpus_fingerprint=open_corpus(tmp_path / "c").fingerprint)


def test_missing_artifact_says_how_to_build(tmp_path):
    with pytest.raises(ArtifactError, match="amzqa index"):
        Artifacts.open(tmp_path / "nothing")


def test_ivf_index_matches_exact_search(sample_corpus, sample_artifacts, tmp_path):
    out = tmp_path / "ivf"
    man = build_index(IndexConfig(corpus=sample_corpus, out=out, dense_type="ivf_sq8", nlist=8, nprobe=8, train_sample=300), progress=False)
    assert man["dense"]["type"] == "ivf_sq8" and man["dense"]["nlist"] == 8
    ivf, exact = RetrieverSet(out), RetrieverSet(sample_artifacts)
    overlap = []
    for q in ["electric kettle", "kids rain boots", "noise cancelling headphones", "dutch oven", "jigsaw puzzle"]:
        a, b = [r for r, _ in ivf.dense.search(q, 10)], [r for r, _ in exact.dense.search(q, 10)]
        assert a[0] == b[0]
        overlap.append(len(set(a) & set(b)) / 10)
    # nprobe == nlist searches every list, so only 8-bit scalar quantisation can reorder near-ties.
    assert sum(overlap) / len(overlap) >= 0.9


def test_hybrid_completes_dense_scores_the_ivf_search_missed(sample_corpus, sample_artifacts, tmp_path):
    """An IVF search of one list of 8 misses most products; the hybrid ranking still fuses every lexical candidate
    with its exact dense score (the cosine the exact index gives it), so what IVF missed is not scored 0."""
    out = tmp_path / "ivf1"
    build_index(IndexConfig(corpus=sample_corpus, out=out, dense_type="ivf_flat", nlist=8, nprobe=1, train_sample=300,
                            calibrate_products=0), progress=False)
    ivf, exact = RetrieverSet(out), RetrieverSet(sample_artifacts)
    query = "cast iron skillet dishwasher safe"
    approximate = ivf.dense.search(query, 40)
    lexical = ivf.lexical.search(query, 40)
    completed = ivf.hybrid.rankings(query, 40)["dense"]
    added = {row for row, _ in completed} - {row for row, _ in approximate}
    assert added and added <= {row for row, _ in lexical}  # IVF missed lexical candidates; completion adds only those
    exact_scores = dict(exact.dense.search(query, len(exact.store)))
    for row, score in completed:
        if row in added:
            assert score == pytest.approx(exact_scores[row], abs=2e-3)  # float16 title vectors vs the exact index
    assert [s for _, s in completed] == sorted((s for _, s in completed), reverse=True)
    # Evaluation and calibration fuse what the retriever fuses.
    from amzqa.data.questions import Question
    from amzqa.evaluation.retrieval_eval import question_rankings

    ranking = question_rankings(ivf, [Question(query, "x", 0, "title")], k=10)[0]
    assert ranking["dense"] == approximate and ranking["hybrid"]["dense"] == completed
    assert ivf.dense.completed(np.zeros(ivf.dense.embedder.dim), approximate, []) == approximate
    # The rows are read with pread from the stored title vectors (not mapped): the same values as the map.
    rows = [len(ivf.store) - 1, 0, 17]
    assert (ivf.dense.vectors[rows] == ivf.title_vectors[rows]).all()
    with pytest.raises(IndexError):
        ivf.dense.vectors[[len(ivf.store)]]


def test_vector_rows_refuse_a_damaged_file_and_reopen_when_copied(tmp_path):
    import pickle

    from amzqa.retrieval.dense import VectorRows

    path = tmp_path / "v.npy"
    vectors = np.arange(12, dtype=np.float16).reshape(4, 3)
    np.save(path, vectors)
    rows = VectorRows(path)
    assert (rows[[3, 0]] == vectors[[3, 0]]).all()
    copy = pickle.loads(pickle.dumps(rows))  # a copy opens the file itself, never borrows a descriptor number
    assert copy.fd != rows.fd and (copy[[1]] == vectors[[1]]).all()
    path.write_bytes(path.read_bytes()[:-4])  # one row cut short
    with pytest.raises(ArtifactError, match="shorter than"):
        VectorRows(path)


def test_a_calibration_from_before_completion_is_used_with_a_warning(sample_artifacts, tmp_path, caplog):
    from amzqa.indexing.fusion import write_calibration
    from amzqa.io.layout import FUSION_FILE
    from amzqa.retrieval.hybrid import load_calibration

    assert load_calibration(Artifacts.open(sample_artifacts))["dense_completion"] is True
    index = tmp_path / "index"
    shutil.copytree(sample_artifacts, index)
    fusion = json.loads((index / FUSION_FILE).read_text())
    del fusion["dense_completion"]
    write_calibration(index, fusion)  # as an older amzqa wrote it, sealed
    with caplog.at_level("WARNING"):
        assert load_calibration(Artifacts.open(index))["fusion"] == fusion["fusion"]
    assert "amzqa calibrate" in caplog.text


def test_index_config_rejects_contradictions():
    with pytest.raises(ConfigError, match="nprobe"):
        IndexConfig(nlist=16, nprobe=32)
    with pytest.raises(ConfigError, match="dense_type"):
        IndexConfig(dense_type="annoy")
    with pytest.raises(ConfigError, match="bm25_fields"):
        IndexConfig(bm25_fields="content")
    assert auto_nlist(1_000_000) == 4096 and auto_nlist(100) == 32


def test_killed_build_resumes_to_the_same_index(sample_corpus, sample_artifacts, tmp_path):
    """SIGKILL a real build mid-embedding, resume it, and compare with an uninterrupted build."""
    out = tmp_path / "resumed"
    code = (
        "import sys, time, amzqa.indexing.build as b\n"
        "orig = b.embed_titles.__globals__['np'].save\n"
        "def slow_save(*a, **k):\n"
        "    orig(*a, **k); time.sleep(0.5)\n"  # give the test time to kill between chunks
        "b.np.save = slow_save\n"
        f"b.build_index(b.IndexConfig(corpus=r'{sample_corpus}', out=r'{out}', chunk_rows=40), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    chunks = out.with_name("resumed.partial") / "emb"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(chunks.glob("chunk-*.npy")) if chunks.exists() else []) < 3:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done_before = len(list(chunks.glob("chunk-*.npy")))
    assert 3 <= done_before < 8, "the build should have been killed part-way through embedding"
    assert not out.exists()
    with pytest.raises(ArtifactError, match="interrupted build"):
        Artifacts.open(out)

    build_index(IndexConfig(corpus=sample_corpus, out=out, chunk_rows=40), progress=False)
    assert not out.with_name("resumed.partial").exists()
    fresh = tmp_path / "fresh"
    build_index(IndexConfig(corpus=sample_corpus, out=fresh, chunk_rows=40), progress=False)
    a = np.load(out / "embeddings.f16.npy")
    b = np.load(fresh / "embeddings.f16.npy")
    assert np.array_equal(a, b)
    ma, mb = (json.loads((p / "manifest.json").read_text())["files"] for p in (out, fresh))
    assert ma == mb  # every file, FAISS and BM25 included, is byte-identical


def test_compact_bm25_equals_plain_bm25s(sample_corpus):
    import bm25s
    import Stemmer

    from amzqa.indexing.corpus import iter_corpus
    from amzqa.indexing.lexical import build_bm25

    texts = [f"{r['title']} {r['content'][:600]}" for b in iter_corpus(sample_corpus) for r in b.to_pylist()]
    ours = build_bm25([texts[:100], texts[100:250], texts[250:]], len(texts), "en", "english")
    plain = bm25s.BM25()
    plain.index(bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english").stemWords, show_progress=False),
                show_progress=False)
    assert set(ours.vocab_dict) == set(plain.vocab_dict)
    for query in (["kettl", "cordless"], ["book", "wizard"], ["waterproof"]):
        a = ours.retrieve([query], k=5, show_progress=False, return_as="tuple")
        b = plain.retrieve([query], k=5, show_progress=False, return_as="tuple")
        assert a[0].tolist() == b[0].tolist()
        assert np.allclose(a[1], b[1], rtol=1e-5)


@pytest.mark.parametrize("corpus", ["sample", "random"])
def test_our_bm25_matrix_is_bm25s_own_byte_for_byte(corpus, sample_corpus):
    """index_tokens computes bm25s's Lucene scores with array operations; the matrix must be the one bm25s's own
    index() builds from the same token ids (data, indices, indptr, vocabulary), on the sample catalog's real tokens
    and on random documents with repeated tokens, empty documents and tokens no document uses."""
    import bm25s

    from amzqa.indexing.corpus import iter_corpus
    from amzqa.indexing.lexical import CompactTokens, index_tokens, tokenize_compact

    if corpus == "sample":
        texts = [f"{r['title']} {r['content'][:600]}" for b in iter_corpus(sample_corpus) for r in b.to_pylist()]
        tokens, vocab = tokenize_compact([texts], len(texts), "en", "english")
    else:
        rng = np.random.default_rng(7)
        lengths = rng.integers(0, 40, size=3000)
        lengths[::97] = 0
        ids = rng.zipf(1.3, size=int(lengths.sum())).clip(max=4999).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        tokens, vocab = CompactTokens(ids, offsets), {f"t{i}": i for i in range(5000)}
    plain = bm25s.BM25()
    plain.index(bm25s.tokenization.Tokenized(ids=tokens, vocab=dict(vocab)), show_progress=False)
    for part_tokens in (10_000_000, 997):  # the whole vocabulary in one token range, and in many
        ours = index_tokens(tokens, vocab, part_tokens=part_tokens)
        for key in ("data", "indices", "indptr"):
            assert ours.scores[key].dtype == plain.scores[key].dtype and np.array_equal(ours.scores[key], plain.scores[key]), key
        assert ours.scores["num_docs"] == plain.scores["num_docs"] and ours.vocab_dict == plain.vocab_dict


def test_token_ranges_cover_the_vocabulary_without_splitting_a_token():
    from amzqa.indexing.lexical import token_ranges

    counts = np.array([5, 0, 3, 12, 1, 1, 0, 4])
    ranges = token_ranges(counts, 6)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(counts)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(counts[lo:hi].sum() <= 6 or hi - lo == 1 for lo, hi in ranges)  # only a lone token may exceed
    assert token_ranges(np.zeros(0, np.int64), 6) == [(0, 0)]


def test_numba_bm25_kernel_scores_as_bm25s_and_orders_ties_by_row(sample_artifacts, retrievers):
    """Large catalogs score queries with amzqa.retrieval.bm25_numba; on the sample (forced on) it must return bm25s's
    own scores for the same documents: the same top-k score list, every returned row scored as get_scores scores it,
    equal scores in row order, and nothing the query does not touch."""
    from amzqa.retrieval.lexical import LexicalRetriever, tokenize

    fast = LexicalRetriever(retrievers.artifacts, retrievers.store, accelerate=True)
    plain = retrievers.lexical
    assert fast.kernel is not None and plain.kernel is None  # the sample is below NUMBA_MIN_DOCS
    queries = ["cordless kettle", "wizard book for kids", "waterproof speaker", "black", "cast iron skillet hand wash",
               "the and of", "zzzqqq nothing matches"]
    for query in queries:
        for n in (1, 5, 50, 10_000):
            got, want = fast.search(query, n), plain.search(query, n)
            assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6), (query, n)
            if not got:
                continue
            full = plain.model.get_scores([t for t in tokenize([query], fast.stopwords, fast.stemmer)[0] if t in fast.vocab])
            for (row, score), nxt in zip(got, got[1:] + [(None, None)]):
                assert score > 0 and score == pytest.approx(float(full[row]), rel=1e-6)
                if nxt[0] is not None and nxt[1] == score:
                    assert nxt[0] > row  # ties in row order


def test_build_calibrates_fusion_on_non_heldout_products(sample_artifacts, retrievers):
    from amzqa.data.split import HELDOUT_RATE, calibration_products, is_heldout
    from amzqa.indexing.fusion import FUSION_FILE, grid

    result = json.loads((sample_artifacts / FUSION_FILE).read_text())
    assert len(result["grid"]) == len(grid())
    assert result["score"] == max(row["score"] for row in result["grid"])  # the best of the grid was kept
    assert result["questions"] > result["products"] > 100
    assert not any(is_heldout(p.uid, HELDOUT_RATE) for p in calibration_products(retrievers.store, 300, 0, HELDOUT_RATE))
    hybrid = retrievers.hybrid
    assert hybrid.calibrated and hybrid.fusion == result["fusion"]
    assert hybrid.weights == result["weights"] and "calibrated" in hybrid.describe()


def test_calibration_of_another_corpus_is_refused(sample_artifacts, tmp_path):
    from amzqa.indexing.fusion import FUSION_FILE
    from amzqa.retrieval.artifacts import seal

    copy = tmp_path / "copy"
    shutil.copytree(sample_artifacts, copy)
    stored = json.loads((copy / FUSION_FILE).read_text())
    (copy / FUSION_FILE).write_text(json.dumps({**stored, "corpus_fingerprint": "0" * 64}))
    with pytest.raises(ArtifactError, match="fusion.json.*changed after the build"):
        RetrieverSet(copy)  # an edit after the build breaks the seal first
    seal(copy, json.loads((copy / "manifest.json").read_text()))  # even re-sealed, another corpus's fusion is refused
    with pytest.raises(ArtifactError, match="another corpus"):
        RetrieverSet(copy)
    assert RetrieverSet(copy, fusion="rrf").hybrid.fusion == "rrf"  # an explicit fusion needs no calibration


def test_the_build_seals_every_file_it_writes_fusion_included(sample_artifacts):
    man = json.loads((sample_artifacts / "manifest.json").read_text())
    on_disk = sorted(str(p.relative_to(sample_artifacts)) for p in sample_artifacts.rglob("*") if p.is_file())
    assert sorted(man["files"]) == [n for n in on_disk if n != "manifest.json"]
    assert "fusion.json" in man["files"] and man["timings"]["calibrate_s"] > 0
    assert not list(sample_artifacts.parent.glob("*.partial")) and not list(sample_artifacts.parent.glob(".sample.*"))


@pytest.mark.parametrize("tamper", ["manifest", "small file", "big file", "missing"])
def test_a_tampered_artifact_is_refused_with_the_file_named(sample_artifacts, tmp_path, tamper):
    copy = tmp_path / "copy"
    shutil.copytree(sample_artifacts, copy)
    man_path = copy / "manifest.json"
    if tamper == "manifest":
        man = json.loads(man_path.read_text())
        man["embedding"]["dim"] = 768
        man_path.write_text(json.dumps(man))
        expected = "manifest.json was changed after the index was built"
    elif tamper == "small file":
        vocab = next(p for p in (copy / "bm25").iterdir() if p.suffix == ".json")
        vocab.write_text(vocab.read_text().replace("a", "b", 1))
        expected = f"{vocab.name}.*changed after the build"
    elif tamper == "big file":
        with open(copy / "products.arrow", "ab") as f:
            f.write(b"\0")
        expected = "products.arrow: .* bytes, the manifest sealed"
    else:
        (copy / "dense.faiss").unlink()
        expected = "dense.faiss is missing"
    with pytest.raises(ArtifactError, match=expected):
        Artifacts.open(copy)


def test_a_same_size_edit_of_a_big_file_is_caught_by_amzqa_verify(sample_artifacts, tmp_path, capsys):
    from amzqa.cli.main import main
    from amzqa.retrieval.artifacts import SMALL_FILE_BYTES

    copy = tmp_path / "copy"
    shutil.copytree(sample_artifacts, copy)
    assert main(["verify", str(copy)]) == 0 and "match the checksums" in capsys.readouterr().out
    big = max(copy.rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    data = bytearray(big.read_bytes())
    data[-1] ^= 0xFF  # same size: loading a big file checks its size only
    big.write_bytes(bytes(data))
    if big.stat().st_size > SMALL_FILE_BYTES:
        Artifacts.open(copy)
    assert main(["verify", str(copy)]) == 2
    assert f"{big.name} does not match the checksum" in capsys.readouterr().err


def test_an_index_swapped_in_while_it_loads_is_loaded_whole(sample_artifacts, tmp_path, monkeypatch):
    from amzqa.io.atomic import swap_dir
    from amzqa.retrieval.artifacts import seal
    from amzqa.retrieval.lexical import LexicalRetriever

    live, new = tmp_path / "live", tmp_path / "new"
    shutil.copytree(sample_artifacts, live)
    shutil.copytree(sample_artifacts, new)
    (new / "fusion.json").write_text(json.dumps({**json.loads((new / "fusion.json").read_text()), "note": "rebuilt"}))
    new_seal = seal(new, json.loads((new / "manifest.json").read_text()))["sealed"]
    swapped = []

    def lexical_then_swap(arts, store):  # a rebuild publishes between two files of this load
        if not swapped:
            swap_dir(new, live)
            swapped.append(True)
        return LexicalRetriever(arts, store)

    monkeypatch.setattr("amzqa.retrieval.lexical.LexicalRetriever", lexical_then_swap)
    rset = RetrieverSet(live)
    assert swapped and rset.artifacts.manifest["sealed"] == new_seal
    assert json.loads((rset.artifacts.path / "fusion.json").read_text())["note"] == "rebuilt"


def test_rebuilding_swaps_the_new_index_in_whole(sample_corpus, sample_artifacts, tmp_path):
    from amzqa.indexing.build import IndexConfig, build_index

    out = tmp_path / "arts"
    shutil.copytree(sample_artifacts, out)
    before = json.loads((out / "manifest.json").read_text())["sealed"]
    held = open(out / "products.arrow", "rb")  # a reader that opened the old index keeps a complete old file
    build_index(IndexConfig(corpus=sample_corpus, out=out, overwrite=True, calibrate_products=0), progress=False)
    assert Artifacts.open(out).manifest["sealed"] != before and "fusion.json" not in Artifacts.open(out).manifest["files"]
    assert held.read(6) == b"ARROW1"
    held.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arts"]  # no partial or old folder left behind


def test_recalibrating_a_published_index_reseals_it(sample_artifacts, tmp_path):
    from amzqa.indexing.fusion import save_calibration

    copy = tmp_path / "copy"
    shutil.copytree(sample_artifacts, copy)
    result = {**json.loads((copy / "fusion.json").read_text()), "note": "recalibrated"}
    save_calibration(copy, result, seconds=1.5)
    arts = Artifacts.open(copy)  # verifies the new seal
    assert json.loads((copy / "fusion.json").read_text())["note"] == "recalibrated"
    assert arts.manifest["timings"]["calibrate_s"] == 1.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_retrieval_evaluation_reports_every_mode(sample_artifacts, retrievers, tmp_path):
    from amzqa.evaluation.retrieval_eval import RetrievalEvalConfig, evaluate_retrieval, markdown, write_report

    report = evaluate_retrieval(RetrievalEvalConfig(artifacts=sample_artifacts, n=60), rset=retrievers, progress=False)
    assert report["questions"]["title"] == 60 and report["questions"]["content"] > 20
    for mode in ("dense", "lexical", "hybrid"):
        assert set(report["results"][mode]) == {"all", "title", "content"}
        assert 0 < report["results"][mode]["all"]["recall@10"] <= 1
    gain, res = report["hybrid_vs_best_single"], report["results"]
    best = gain["best_single"]
    assert res[best]["all"]["recall@10"] == max(res[m]["all"]["recall@10"] for m in ("dense", "lexical"))
    assert gain["mrr@10"] == pytest.approx(res["hybrid"]["all"]["mrr@10"] - res[best]["all"]["mrr@10"])
    text = markdown(report)
    assert "| hybrid | all" in text and "calibrated on this catalog" in text
    for mode in ("dense", "lexical", "hybrid"):  # bootstrap intervals around every point estimate
        value, (lo, hi) = res[mode]["all"]["mrr@10"], res[mode]["all"]["ci95"]["mrr@10"]
        assert lo <= value <= hi and hi - lo > 0
    diff = report["differences"]["dense - hybrid"]["recall@10"]  # paired: the same resampled questions for both
    assert diff["value"] == pytest.approx(res["dense"]["all"]["recall@10"] - res["hybrid"]["all"]["recall@10"])
    assert diff["ci95"][0] <= diff["value"] <= diff["ci95"][1]
    assert set(report["differences"]) == {"dense - lexical", "dense - hybrid", "lexical - hybrid"}
    assert "(paired difference, 95% interval)" in text
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "retrieval.json").read_text())["results"] == report["results"]
