"""amzqa index --engine ray: the embedding stage on a real local Ray cluster (2 CPUs) gives the artifact the
in-process build gives: same format and files, the same vectors to float16 tolerance, the same search results."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from amzqa.io.layout import EMBEDDINGS_FILE

pytest.importorskip("ray", reason="the ray extra (make test installs it)")

QUESTIONS = ["cordless electric kettle", "book about a boy wizard at a school of magic", "waterproof speaker for the pool",
             "lodge cast iron skillet", "goodnight moon board book"]


def _build(corpus, out, *flags):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "index", "--corpus", str(corpus), "--out", str(out),
                           "--embedding-backend", "onnx-fp32", "--calibrate-products", "0", *flags], cwd=out.parent, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow  # ~32 s: starts a local Ray cluster (make test-slow; CI runs it)
def test_a_ray_build_matches_the_in_process_build(sample_corpus, tmp_path):
    """fp32 embeddings: the int8 model quantises activations per batch, so its vectors depend on which titles share a
    batch, and Ray's batches are not the in-process build's (the retrieval evaluation judges that backend)."""
    from amzqa.retrieval import RetrieverSet

    local_dir = _build(sample_corpus, tmp_path / "local")
    out = _build(sample_corpus, tmp_path / "ray", "--engine", "ray", "--ray-workers", "2", "--ray-batch-rows", "64")
    local, ray = (json.loads((p / "manifest.json").read_text()) for p in (local_dir, out))
    assert ray["config"]["engine"] == "ray" and local["config"]["engine"] == "local"
    assert set(ray["files"]) == set(local["files"]) and ray["embedding"] == local["embedding"]
    assert ray["counts"] == local["counts"] and ray["dense"]["type"] == local["dense"]["type"]
    a = np.load(local_dir / EMBEDDINGS_FILE).astype(np.float32)
    b = np.load(out / EMBEDDINGS_FILE).astype(np.float32)
    assert a.shape == b.shape
    assert np.abs(a - b).max() < 4e-3  # float16 storage, other batches' padding
    assert (np.sum(a * b, axis=1) > 0.9999).all()  # every title's vector, not a shuffle
    local_set, ray_set = RetrieverSet(local_dir), RetrieverSet(out)
    for q in QUESTIONS:
        for mode in ("dense", "lexical", "hybrid"):
            assert ([h.uid for h in getattr(local_set, mode).retrieve(q, 10)]
                    == [h.uid for h in getattr(ray_set, mode).retrieve(q, 10)]), (q, mode)


def test_the_ray_engine_is_refused_clearly_without_ray_settings():
    from amzqa.errors import ConfigError
    from amzqa.indexing.build import IndexConfig

    with pytest.raises(ConfigError, match="engine must be 'local' or 'ray'"):
        IndexConfig(engine="spark")
    with pytest.raises(ConfigError, match="ray_workers"):
        IndexConfig(engine="ray", ray_workers=-1)
