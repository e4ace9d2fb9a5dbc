"""``amzqa index --add/--remove``: an update gives the index a rebuild of the same catalog gives, re-embeds only what
changed, accounts for every input line, and never leaves a reader a broken or mixed index (issue #27, item 2)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from amzqa.errors import ConfigError, InputError
from amzqa.indexing.build import IndexConfig, build_index
from amzqa.indexing.corpus import PrepareConfig, prepare
from amzqa.indexing.update import update_index
from amzqa.io.layout import EMBEDDINGS_FILE, FUSION_FILE, MANIFEST
from amzqa.retrieval import MODES, RetrieverSet
from amzqa.retrieval.artifacts import Artifacts, verify

QUESTIONS = ["is the road a good paperback", "jane austen novel with notes", "waterproof bluetooth speaker",
             "cast iron skillet for camping", "kettle that boils fast", "noise cancelling headphones for flights",
             "kids book about a caterpillar", "toaster with wide slots for bagels", "running shoes for flat feet",
             "a coffee grinder with burrs", "yoga mat that does not slip", "board game for the family"]


class Counting:
    """The index's own embedder, counting the titles it is asked to embed (an update embeds only what changed)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, *args, **kwargs):
        self.calls.append(list(texts))
        return self.inner.encode(texts, *args, **kwargs)


@pytest.fixture(scope="module")
def catalog(sample_corpus):
    """The sample catalog's products as prepare kept them (the raw file holds bad lines on purpose)."""
    from amzqa.indexing.corpus import iter_corpus

    return [row for batch in iter_corpus(sample_corpus, columns=["uid", "title", "content"]) for row in batch.to_pylist()]


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def build(tmp_path, name, rows, **kwargs):
    src = write_lines(tmp_path / f"{name}.json", rows)
    corpus = tmp_path / f"{name}-corpus"
    prepare(PrepareConfig(input=src, out=corpus), progress=False)
    out = tmp_path / f"{name}-index"
    build_index(IndexConfig(corpus=corpus, out=out, **kwargs), progress=False)
    return out


def rankings(path, k=10):
    rset = RetrieverSet(path)
    return {mode: [[(h.uid, round(h.score, 4)) for h in rset.get(mode).retrieve(q, k)] for q in QUESTIONS] for mode in MODES}


def products(path):
    table = RetrieverSet(path).store.table
    return list(zip(*(table.column(c).to_pylist() for c in ("uid", "title", "content"))))


def test_add_change_remove_gives_the_index_a_rebuild_gives(catalog, tmp_path):
    base, fresh = catalog[:-20], catalog[-20:]
    edited = [dict(base[3], title=base[3]["title"] + " (2nd edition)"),
              dict(base[7], content=base[7]["content"] + " Now with a carry case."),
              dict(base[11], title="Renamed " + base[11]["title"], content="A new description.")]
    removed = [base[i]["uid"] for i in (0, 5, 9, 40, 41)]
    conflict = base[20]["uid"]
    add_rows = [*fresh[:10], edited[0], "{not json", fresh[10], dict(fresh[10], title="same uid again"), edited[1],
                dict(base[20], title="in both lists"), dict(base[30]),  # unchanged
                dict(base[31], uid="NEW-COPY"),  # another uid, the same title and content as a product kept
                edited[2], *fresh[11:]]
    fp32 = {"embedding_backend": "onnx-fp32"}  # int8 activations are scaled per batch: only fp32 vectors can match
    index = build(tmp_path, "base", base, **fp32)
    add = write_lines(tmp_path / "add.json", add_rows)
    remove = write_lines(tmp_path / "remove.txt", [*removed[:3], json.dumps({"uid": removed[3]}), removed[4], "NO-SUCH-UID", conflict])

    from amzqa.retrieval.embedding import load_embedder

    embedder = Counting(load_embedder("minilm", "onnx-fp32", 64))
    manifest = update_index(IndexConfig(out=index, add=add, remove=str(remove)), progress=False, embedder=embedder)

    # The catalog a user would rebuild: edits in place, removals deleted, new products appended in file order.
    by_uid = {e["uid"]: e for e in edited}
    expected = [by_uid.get(r["uid"], r) for r in base if r["uid"] not in removed] + fresh
    rebuilt = build(tmp_path, "rebuilt", expected, **fp32)

    assert products(index) == products(rebuilt)
    # one call for the changed titles; the rest are the fusion calibration's questions
    assert sorted(embedder.calls[0]) == sorted([edited[0]["title"], edited[2]["title"], *(r["title"] for r in fresh)])
    ours = np.load(index / EMBEDDINGS_FILE)
    theirs = np.load(rebuilt / EMBEDDINGS_FILE)
    assert ours.shape == theirs.shape and np.abs(ours.astype(np.float32) - theirs.astype(np.float32)).max() < 2e-3
    assert rankings(index) == rankings(rebuilt)
    # 28 of 301 products changed (>= 5%): the fusion was recalibrated, as the rebuild's was
    ours_fusion = json.loads((index / FUSION_FILE).read_text())
    theirs_fusion = json.loads((rebuilt / FUSION_FILE).read_text())
    assert {k: ours_fusion[k] for k in ("fusion", "weights", "rrf_k", "alpha", "grid")} == \
        {k: theirs_fusion[k] for k in ("fusion", "weights", "rrf_k", "alpha", "grid")}

    u = manifest["updates"][-1]
    assert (u["added"], u["changed"], u["unchanged"], u["removed"], u["remove_requested"]) == (20, 3, 1, 5, 7)
    assert u["add_lines_read"] == len(add_rows) == u["added"] + u["changed"] + u["unchanged"] + 4
    assert u["dropped"] == {"add_and_remove": 2, "duplicate_title_content": 1, "duplicate_uid": 1,
                            "malformed_json": 1, "unknown_uid": 1}
    quarantine = [json.loads(line) for line in (index / u["quarantine"]).read_text().splitlines()]
    assert {(q["reason"], q["line"]) for q in quarantine if q["source"] == str(add)} == \
        {("malformed_json", 12), ("duplicate_uid", 14), ("add_and_remove", 16), ("duplicate_title_content", 18)}
    assert u["recomputed"]["fusion"] and manifest["counts"]["products"] == len(expected)
    verify(index, json.loads((index / MANIFEST).read_text()), full=True)
    assert not (tmp_path / "base-index.update").exists()
    # the index built from the first corpus is not that corpus's any more
    from amzqa.errors import ArtifactError
    from amzqa.indexing.corpus import open_corpus

    with pytest.raises(ArtifactError, match="different corpus"):
        Artifacts.open(index, corpus_fingerprint=open_corpus(tmp_path / "base-corpus").fingerprint)


def test_a_small_change_keeps_the_calibration_and_ivf_centroids_and_still_finds_everything(catalog, tmp_path):
    base, fresh = catalog[:-4], catalog[-4:]
    ivf = {"embedding_backend": "onnx-fp32", "dense_type": "ivf_flat", "nlist": 4, "nprobe": 4, "train_sample": 200}
    index = build(tmp_path, "base", base, **ivf)
    before = json.loads((index / FUSION_FILE).read_text())
    add = write_lines(tmp_path / "add.json", [*fresh, dict(base[2], title=base[2]["title"] + " deluxe")])
    manifest = update_index(IndexConfig(out=index, add=add, remove=f"{base[0]['uid']},{base[50]['uid']}"), progress=False)
    u = manifest["updates"][-1]
    assert (u["added"], u["changed"], u["removed"]) == (4, 1, 2) and not any(u["recomputed"][k] for k in ("fusion", "ivf_centroids"))
    after = json.loads((index / FUSION_FILE).read_text())
    assert after["calibrated_on"] == before["corpus_fingerprint"] and after["fusion"] == before["fusion"]
    assert after["corpus_fingerprint"] == manifest["corpus"]["fingerprint"]

    # The IVF lists hold every product once, under its new row: with every list probed it is exact search.
    import faiss

    dense = faiss.read_index(str(index / "dense.faiss"))
    assert dense.ntotal == manifest["counts"]["products"]
    vectors = np.load(index / EMBEDDINGS_FILE).astype(np.float32)
    _, found = dense.search(vectors, 1)
    assert (found[:, 0] == np.arange(len(vectors))).all()
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    queries = RetrieverSet(index).dense.embedder.encode(QUESTIONS)
    assert (dense.search(queries, 10)[1] == exact.search(queries, 10)[1]).all()
    # a second update on top of the first: versions accumulate, earlier quarantines stay
    manifest = update_index(IndexConfig(out=index, remove=base[1]["uid"]), progress=False)
    assert [u["number"] for u in manifest["updates"]] == [1, 2]
    assert (index / manifest["updates"][0]["quarantine"]).is_file()
    assert RetrieverSet(index).store.row_of(base[1]["uid"]) is None


def test_bad_update_input_is_refused_before_anything_changes(catalog, tmp_path, sample_artifacts):
    bad = write_lines(tmp_path / "bad.txt", ["A1", '{"id": 3}'])
    index = tmp_path / "copy"
    shutil.copytree(sample_artifacts, index)
    seal = json.loads((index / MANIFEST).read_text())["sealed"]
    with pytest.raises(InputError, match="no such file"):
        update_index(IndexConfig(out=index, remove="missing/uids.txt"), progress=False)
    with pytest.raises(InputError, match="no such file"):
        update_index(IndexConfig(out=index, add=tmp_path / "missing.json"), progress=False)
    with pytest.raises(InputError, match=r"bad.txt:2: expected a uid"):
        update_index(IndexConfig(out=index, remove=str(bad)), progress=False)
    with pytest.raises(ConfigError, match="--corpus is for a build"):
        update_index(IndexConfig(out=index, corpus=tmp_path, remove="A1"), progress=False)
    with pytest.raises(ConfigError, match="update an existing index"):
        build_index(IndexConfig(out=index, corpus=tmp_path, add=bad), progress=False)
    assert json.loads((index / MANIFEST).read_text())["sealed"] == seal and not (tmp_path / "copy.update").exists()


@pytest.mark.slow  # ~29 s: kills and reruns an update at every stage (make test-slow; CI runs it)
def test_a_killed_update_leaves_the_old_index_and_a_rerun_finishes(catalog, tmp_path):
    base, fresh = catalog[:-30], catalog[-30:]
    index = build(tmp_path, "base", base, calibrate_products=0)
    pristine = tmp_path / "pristine"
    shutil.copytree(index, pristine)
    before = rankings(index)
    add = write_lines(tmp_path / "add.json", fresh)
    cmd = [sys.executable, "-m", "amzqa", "index", "--out", str(index), "--add", str(add), "--remove", base[4]["uid"],
           "--no-progress"]
    work = tmp_path / "base-index.update"

    def start_and_wait_for_work():
        """Start an update; return it and when its private folder appeared (start-up, imports and models take
        most of a run on this small index: kills are timed from the moment the update proper begins)."""
        def inode():
            try:
                st = work.stat()
                return st.st_ino, st.st_ctime_ns  # inodes are reused: a new folder can get the old one's
            except FileNotFoundError:
                return None

        stale = inode()  # a killed run's leftover: the new run discards it and makes its own
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        while proc.poll() is None and inode() in (None, stale):
            time.sleep(0.002)
        return proc, time.perf_counter()

    proc, began = start_and_wait_for_work()
    while work.exists():  # until the new version is in place (process exit takes as long again)
        time.sleep(0.002)
    span = time.perf_counter() - began  # the update proper, start-up and exit excluded
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    after = rankings(index)
    assert after != before
    shutil.rmtree(index)
    shutil.copytree(pristine, index)  # the old version again; then runs killed at points spread over an update
    sealed = json.loads((index / MANIFEST).read_text())["sealed"]
    midway = 0  # kills that left a half-made new version behind
    for fraction in (0.0, 0.2, 0.4, 0.6, 0.8, 0.95):
        proc, began = start_and_wait_for_work()
        time.sleep(max(0.0, began + span * fraction - time.perf_counter()))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        midway += work.exists()
        man = json.loads((index / MANIFEST).read_text())
        verify(index, man, full=True)  # never half of one version and half of the other
        if man["sealed"] != sealed:  # the kill came after the exchange: the update is complete
            assert rankings(index) == after
            break
        assert rankings(index) == before
    assert midway >= 3, midway  # the kills landed inside the update, not only in start-up
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert rankings(index) == after and not (tmp_path / "base-index.update").exists()
