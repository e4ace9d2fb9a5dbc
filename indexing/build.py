"""``amzqa index``: build a self-describing retrieval artifact from a prepared corpus.

Steps: product store (Arrow, memory-mappable) -> title embeddings in checkpointed chunks -> FAISS index ->
BM25 index -> manifest. Work happens in ``<out>.partial/``; embedding chunks land there atomically, so a build
killed at any point resumes from the last finished chunk and ends with the same artifact as an uninterrupted
build. The finished folder is renamed into place in one step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from amzqa.config import Config, doc
from amzqa.errors import ArtifactError, ConfigError
from amzqa.indexing.lexical import build_bm25, lexical_text
from amzqa.io.atomic import check_replaceable, swap_dir, write_json_atomic
from amzqa.io.layout import (
    DENSE_FILE,
    EMBEDDINGS_FILE,
    LEXICAL_DIR,
    LEXICAL_TOKENS_DIR,
    PRODUCTS_FILE,
    STATIC_MODEL_DIR,
    UID_KEYS_FILE,
    UID_ROWS_FILE,
)
from amzqa.progress import bar
from amzqa.retrieval.artifacts import ARTIFACT_FORMAT, seal
from amzqa.retrieval.store import write_store

log = logging.getLogger(__name__)

DENSE_TYPES = ("auto", "flat", "ivf_sq8", "ivf_flat", "hnsw")


@dataclasses.dataclass
class IndexConfig(Config):
    """Settings of ``amzqa index`` (``configs/index.yaml``)."""

    corpus: Path | None = doc("Prepared corpus folder (from amzqa prepare).", None)
    out: Path | None = doc("Artifact folder to write.", None)
    embedding_model: str = doc("sentence-transformers folder or short name ('minilm' = packaged all-MiniLM-L6-v2).", "minilm")
    embedding_backend: str = doc("'auto' (onnx up to static_above_rows products, static above), 'onnx' (the transformer, "
                                 "int8, fused; fastest where the CPU has VNNI), 'onnx-fp32', 'torch' (sentence-transformers "
                                 "encode) or 'static' (a model2vec static embedding distilled from embedding_model, ~100x "
                                 "faster, with rescore_candidates re-scored by the transformer at query time).", "auto")
    static_above_rows: int = doc("With embedding_backend auto, catalogs larger than this embed titles with the static "
                                 "model (the transformer takes 4-15 min per 200k titles on 2 cores).", 200_000)
    rescore_candidates: int = doc("Static indexes: the top dense candidates of each query re-ordered by the transformer's "
                                  "cosine (query + these titles embedded per query, ~3 ms each on 2 cores); 0 = none. "
                                  "Off by default: 10 changed recall@1 by at most 0.005 at 200k products "
                                  "(benchmarks/bench_static.py) for +30 ms a query.", 0)
    max_length: int = doc("Token limit per title; titles are short (median ~15 tokens), 64 cuts almost none.", 64)
    batch_size: int = doc("Titles per embedding batch (length-sorted).", 128)
    chunk_rows: int = doc("Titles per checkpointed embedding chunk; a killed build loses at most one chunk.", 50_000)
    dense_type: str = doc("FAISS index: auto (flat up to exact_max_rows, ivf_sq8 above), flat, ivf_sq8, ivf_flat, hnsw.", "auto")
    exact_max_rows: int = doc("With dense_type=auto, catalogs up to this size get exact inner-product search.", 200_000)
    nlist: int = doc("IVF lists; 0 = about 4*sqrt(n) rounded to a power of two.", 0)
    nprobe: int = doc("IVF lists searched per query (stored as the default for queries); 96 gives recall@10 ~0.96 "
                      "against exact search at 1M products (benchmarks/bench_search.py).", 96)
    hnsw_m: int = doc("HNSW graph degree (dense_type=hnsw).", 32)
    train_sample: int = doc("Vectors sampled to train IVF centroids.", 200_000)
    bm25_fields: str = doc("What BM25 indexes: 'title' or 'title+content' (descriptions cut to bm25_content_chars). "
                           "Descriptions hold what shoppers ask about; titles alone miss content-only questions.", "title+content")
    bm25_content_chars: int = doc("Characters of each description indexed by BM25 (bounds index size).", 600)
    bm25_stopwords: str | None = doc("Stopword list for BM25 tokenisation ('en' or null).", "en")
    bm25_stemmer: str | None = doc("Snowball stemmer language for BM25 (null = none).", "english")
    calibrate_products: int = doc("Non-held-out products whose questions calibrate the hybrid fusion for this catalog "
                                  "(fusion.json; see amzqa.indexing.fusion); 0 = keep the default fusion. With 300 the "
                                  "best two fusions of a 200k catalog scored within noise and the choice flipped "
                                  "between two equally good indexes; 1000 chose the same for both.", 1000)
    seed: int = doc("Seed for IVF training samples and fusion calibration questions.", 0)
    overwrite: bool = doc("Replace an existing artifact folder.", False)
    add: Path | None = doc("Update instead of build: a trn.json(.gz) of new or changed products (matched by uid) to put "
                           "into the sealed index at out; only their titles are embedded.", None)
    remove: str | None = doc("Update instead of build: products to take out of the index at out: a file (one uid per "
                             "line, or JSON lines with a uid) or uids separated by commas.", None)
    recalibrate_fraction: float = doc("An update that adds, changes or removes at least this fraction of the catalog "
                                      "recalibrates the hybrid fusion and retrains IVF centroids (as a rebuild "
                                      "would); smaller ones keep both.", 0.05)
    engine: str = doc("Where titles are embedded: 'local' (this process, checkpointed chunks: a killed build resumes) "
                      "or 'ray' (Ray Data over the corpus shards, one embedder actor per worker; needs the ray extra; "
                      "the rest of the build stays here).", "local")
    address: str | None = doc("With engine ray: the cluster to join ('auto' on a cluster node, ray://HEAD:10001 from "
                              "outside); none = start a local Ray instance for this build.", None)
    ray_workers: int = doc("With engine ray: embedder actors (one ONNX thread and half a reserved CPU each); 0 = one per CPU of the cluster.", 0)
    ray_batch_rows: int = doc("With engine ray: titles per Ray batch handed to an actor.", 4096)

    def __post_init__(self) -> None:
        if self.dense_type not in DENSE_TYPES:
            raise ConfigError(f"dense_type must be one of {DENSE_TYPES}, got {self.dense_type!r}")
        if not 0.0 <= self.recalibrate_fraction <= 1.0:
            raise ConfigError(f"recalibrate_fraction must be within [0, 1], got {self.recalibrate_fraction}")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"engine must be 'local' or 'ray', got {self.engine!r}")
        if self.ray_workers < 0 or self.ray_batch_rows < 1:
            raise ConfigError("ray_workers must be >= 0 and ray_batch_rows >= 1")
        if self.embedding_backend not in ("auto", "onnx", "onnx-fp32", "torch", "static"):
            raise ConfigError(f"embedding_backend must be auto, onnx, onnx-fp32, torch or static, got {self.embedding_backend!r}")
        if self.static_above_rows < 0 or self.rescore_candidates < 0:
            raise ConfigError("static_above_rows and rescore_candidates must be >= 0")
        for name in ("max_length", "batch_size", "chunk_rows", "nprobe", "hnsw_m", "train_sample"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        if self.bm25_fields not in ("title", "title+content"):
            raise ConfigError(f"bm25_fields must be 'title' or 'title+content', got {self.bm25_fields!r}")
        if self.bm25_content_chars < 0:
            raise ConfigError("bm25_content_chars must be >= 0")
        if self.nlist < 0:
            raise ConfigError("nlist must be >= 0 (0 = automatic)")
        if self.calibrate_products < 0 or 0 < self.calibrate_products < 10:
            raise ConfigError("calibrate_products must be 0 (off) or >= 10")
        if self.nlist and self.nprobe > self.nlist:
            raise ConfigError(f"nprobe ({self.nprobe}) cannot exceed nlist ({self.nlist})")
        if self.nlist and self.train_sample < self.nlist:
            raise ConfigError(f"train_sample ({self.train_sample}) must be >= nlist ({self.nlist}) to train the centroids")

    def build_key(self, corpus_fingerprint: str, model_fp: str, backend: str) -> str:
        """What a resumable partial build must agree on to be reused."""
        relevant = {k: v for k, v in self.to_dict().items() if k in ("embedding_model", "max_length", "chunk_rows")}
        return hashlib.sha256(json.dumps([relevant, backend, corpus_fingerprint, model_fp], sort_keys=True).encode()).hexdigest()[:16]


def resolve_backend(cfg: IndexConfig, n: int) -> str:
    """The embedding backend a build of ``n`` products uses."""
    if cfg.embedding_backend != "auto":
        return cfg.embedding_backend
    return "onnx" if n <= cfg.static_above_rows else "static"


def rescore_spec(cfg: IndexConfig) -> dict[str, Any]:
    """The manifest's ``rescore``: the transformer a static index re-scores its top candidates with."""
    from amzqa.models import resolve_model
    from amzqa.retrieval.embedding import model_fingerprint

    return {"model_id": cfg.embedding_model, "backend": "onnx", "max_length": cfg.max_length,
            "fingerprint": model_fingerprint(resolve_model(cfg.embedding_model)), "candidates": cfg.rescore_candidates}


def resolve_dense_type(cfg: IndexConfig, n: int) -> str:
    if cfg.dense_type != "auto":
        return cfg.dense_type
    return "flat" if n <= cfg.exact_max_rows else "ivf_sq8"


def auto_nlist(n: int) -> int:
    return int(max(1, min(65536, 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n)))))))


# ---------------------------------------------------------------- embedding with checkpoints


def embed_titles(titles: list[str], embedder, work: Path, cfg: IndexConfig, progress: bool | None) -> np.ndarray:
    """Embed in chunks saved as ``work/emb/chunk-NNNNN.npy``; finished chunks are reused on resume."""
    chunks = work / "emb"
    chunks.mkdir(exist_ok=True)
    n = len(titles)
    out = np.lib.format.open_memmap(work / EMBEDDINGS_FILE, mode="w+", dtype=np.float16, shape=(n, embedder.dim))
    n_chunks = math.ceil(n / cfg.chunk_rows)
    with bar(progress, total=n, unit="title", unit_scale=True, desc="embed titles", smoothing=0.05) as pbar:
        for c in range(n_chunks):
            lo, hi = c * cfg.chunk_rows, min(n, (c + 1) * cfg.chunk_rows)
            path = chunks / f"chunk-{c:05d}.npy"
            if path.is_file():
                vecs = np.load(path, allow_pickle=False)
                if vecs.shape != (hi - lo, embedder.dim):
                    raise ArtifactError(f"{path} has shape {vecs.shape}, expected {(hi - lo, embedder.dim)}; delete {work} to start over")
                pbar.update(hi - lo)
            else:
                vecs = embedder.encode(titles[lo:hi], batch_size=cfg.batch_size).astype(np.float16)
                tmp = path.with_suffix(".tmp.npy")
                np.save(tmp, vecs, allow_pickle=False)
                os.replace(tmp, path)  # a chunk exists whole or not at all
                pbar.update(hi - lo)
            out[lo:hi] = vecs
    out.flush()
    return out


# ---------------------------------------------------------------- FAISS


def build_dense(vectors: np.ndarray, kind: str, cfg: IndexConfig, progress: bool | None = None):
    """Build the FAISS index of ``vectors`` (float16/32, normalised, inner product)."""
    import faiss

    n, dim = vectors.shape
    params: dict[str, Any] = {"type": kind, "metric": "inner_product"}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 64
        params.update(m=cfg.hnsw_m, ef_search=64)
    else:
        nlist = cfg.nlist or auto_nlist(n)
        quantizer = faiss.IndexFlatIP(dim)
        if kind == "ivf_sq8":
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
        else:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = cfg.seed
        rng = np.random.default_rng(cfg.seed)
        sample = np.sort(rng.choice(n, size=min(n, max(cfg.train_sample, nlist)), replace=False))
        log.info("training %s with %d lists on %d vectors", kind, nlist, len(sample))
        index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        index.nprobe = min(cfg.nprobe, nlist)
        params.update(nlist=nlist, nprobe=index.nprobe)
    step = 100_000
    with bar(progress, total=n, unit="vec", unit_scale=True, desc=f"faiss {kind}") as pbar:
        for lo in range(0, n, step):
            index.add(np.ascontiguousarray(vectors[lo:lo + step], dtype=np.float32))
            pbar.update(min(step, n - lo))
    return index, params


def lexical_chunks(work: Path, cfg: IndexConfig, chunk: int = 100_000):
    """The texts BM25 indexes, in chunks read from the product store (never all in memory at once)."""
    from amzqa.retrieval.store import ProductStore

    table = ProductStore(work).table
    for lo in range(0, table.num_rows, chunk):
        part = table.slice(lo, chunk)
        titles = part.column("title").to_pylist()
        if cfg.bm25_fields == "title":
            yield titles
        else:
            yield [lexical_text(t, c, cfg.bm25_fields, cfg.bm25_content_chars)
                   for t, c in zip(titles, part.column("content").to_pylist())]


# ---------------------------------------------------------------- the stage


def log_stage(name: str, timings: dict[str, float]) -> None:
    """Log a finished stage's time and this process's memory: its RSS now, split into anonymous memory and pages of
    memory-mapped files (the index's own files, which the kernel can drop), and the peak so far (the stage whose line
    it rises on is the one that used the memory). Memory freed by the stage is first handed back to the system."""
    import gc
    import resource

    from amzqa.runtime.allocator import release_heap

    gc.collect()
    release_heap()  # what the stage freed (millions of titles, tokens) goes back, so the next peak does not stand on it
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:  # Linux
        status = Path("/proc/self/status").read_text()
        kib = {k: int(status.split(f"{k}:")[1].split()[0]) for k in ("VmRSS", "RssAnon", "RssFile")}
        now = f"{kib['VmRSS'] / 1024:.0f} MiB (anonymous {kib['RssAnon'] / 1024:.0f}, mapped files {kib['RssFile'] / 1024:.0f})"
    except (OSError, IndexError, ValueError):
        now = "unknown"
    log.info("stage %s done in %.1f s; RSS now %s, peak so far %.0f MiB", name, timings[f"{name}_s"], now, peak)


CLEANING_FIELDS = ("max_line_bytes", "min_title_chars", "max_content_chars")


def corpus_cleaning(corpus: Path) -> dict[str, Any]:
    """How ``amzqa prepare`` cleaned this corpus (an update cleans added products the same way)."""
    from amzqa.io.layout import MANIFEST

    config = json.loads((Path(corpus) / MANIFEST).read_text(encoding="utf-8")).get("config", {})
    return {k: config[k] for k in CLEANING_FIELDS if k in config}


def build_index(cfg: IndexConfig, progress: bool | None = None, embedder=None) -> dict[str, Any]:
    """Build the artifact described in the module docstring; return its manifest."""
    import faiss

    from amzqa.indexing.corpus import iter_corpus, load_stats, open_corpus
    from amzqa.io.versions import library_versions
    from amzqa.retrieval.embedding import load_embedder, model_fingerprint

    if cfg.add is not None or cfg.remove is not None:
        raise ConfigError("add/remove update an existing index: call amzqa.indexing.update.update_index (CLI: amzqa "
                          "index --out INDEX --add FILE / --remove FILE_OR_UIDS)")
    if cfg.corpus is None or cfg.out is None:
        raise ConfigError("index needs corpus and out (or, to update an index, out with add and/or remove)")
    out = Path(cfg.out)
    if out.exists() and not cfg.overwrite:
        raise ArtifactError(f"{out} already exists; pass overwrite (CLI: --overwrite) to replace it")
    check_replaceable(out)  # before hours of embedding, not at the final swap
    started = time.perf_counter()
    timings: dict[str, float] = {}
    corpus = open_corpus(cfg.corpus, verify=True)
    embedder = embedder or load_embedder(cfg.embedding_model, resolve_backend(cfg, corpus.rows), cfg.max_length)
    model_fp = model_fingerprint(embedder.path)
    key = cfg.build_key(corpus.fingerprint, model_fp, embedder.backend)

    work = Path(f"{out}.partial")
    state = work / "state.json"
    if work.exists() and (not state.is_file() or json.loads(state.read_text()).get("key") != key):
        log.info("discarding %s: it belongs to another corpus or config", work)
        shutil.rmtree(work)
    if work.exists():
        log.info("resuming the interrupted build in %s", work)
    work.mkdir(parents=True, exist_ok=True)
    write_json_atomic(state, {"key": key})
    static = embedder.backend == "static"
    if static:  # the index carries its static model: its queries must be embedded by exactly these weights
        shutil.rmtree(work / STATIC_MODEL_DIR, ignore_errors=True)
        shutil.copytree(embedder.path, work / STATIC_MODEL_DIR)

    t = time.perf_counter()
    for name in (PRODUCTS_FILE, UID_KEYS_FILE, UID_ROWS_FILE):
        (work / name).unlink(missing_ok=True)
    rows = write_store(work, iter_corpus(cfg.corpus, columns=["row_id", "uid", "title", "content"]))
    if rows != corpus.rows:
        raise ArtifactError(f"{cfg.corpus}: manifest says {corpus.rows} rows, shards hold {rows}")
    from amzqa.retrieval.store import ProductStore

    titles = ProductStore(work).titles()
    timings["store_s"] = time.perf_counter() - t
    log_stage("store", timings)

    t = time.perf_counter()
    if cfg.engine == "ray":
        from amzqa.indexing.ray_embed import embed_on_ray

        vectors = embed_on_ray(list(corpus.shard_paths), work, rows, embedder, cfg, progress)
    else:
        vectors = embed_titles(titles, embedder, work, cfg, progress)
    del titles  # 2M Python strings: not needed by the stages below
    timings["embed_s"] = time.perf_counter() - t
    log_stage("embed", timings)

    t = time.perf_counter()
    kind = resolve_dense_type(cfg, rows)
    index, dense_params = build_dense(vectors, kind, cfg, progress)
    faiss.write_index(index, str(work / DENSE_FILE))
    del index, vectors  # the vectors' mapped pages are not needed by BM25's (largest) stage
    timings["dense_s"] = time.perf_counter() - t
    log_stage("dense", timings)

    t = time.perf_counter()
    lex_dir = work / LEXICAL_DIR
    shutil.rmtree(lex_dir, ignore_errors=True)
    shutil.rmtree(work / LEXICAL_TOKENS_DIR, ignore_errors=True)
    bm25 = build_bm25(lexical_chunks(work, cfg), rows, cfg.bm25_stopwords, cfg.bm25_stemmer, progress, keep_tokens=work)
    bm25.save(str(lex_dir))
    del bm25
    timings["lexical_s"] = time.perf_counter() - t
    log_stage("lexical", timings)

    shutil.rmtree(work / "emb", ignore_errors=True)  # the local engine's checkpointed chunks
    state.unlink()
    manifest = {
        "format": ARTIFACT_FORMAT,
        "created_unix": int(time.time()),
        "counts": {"products": rows, "with_content": load_stats(cfg.corpus)["kept_with_content"]},
        "corpus": {"path": str(Path(cfg.corpus).resolve()), "fingerprint": corpus.fingerprint, "rows": corpus.rows},
        "cleaning": corpus_cleaning(cfg.corpus),
        "embedding": {"model_id": cfg.embedding_model, "path": STATIC_MODEL_DIR if static else str(embedder.path),
                      "fingerprint": model_fp, "dim": int(embedder.dim), "backend": embedder.backend,
                      "max_length": cfg.max_length, "normalized": True, "dtype_stored": "float16"},
        **({"rescore": rescore_spec(cfg)} if static and cfg.rescore_candidates else {}),
        "dense": {**dense_params, "file": DENSE_FILE},
        "lexical": {"type": "bm25", "library": "bm25s", "fields": cfg.bm25_fields,
                    "content_chars": cfg.bm25_content_chars, "stopwords": cfg.bm25_stopwords, "stemmer": cfg.bm25_stemmer, "dir": LEXICAL_DIR},
        "config": cfg.to_dict(),
        "versions": library_versions(),
        "timings": {k: round(v, 2) for k, v in timings.items()},
    }
    manifest = seal(work, manifest)
    if cfg.calibrate_products:
        # Calibrated inside the private folder, so fusion.json is sealed with the rest before anyone can read it.
        from amzqa.indexing.fusion import calibrate_fusion, write_calibration
        from amzqa.retrieval import RetrieverSet

        t = time.perf_counter()
        rset = RetrieverSet(work, embedder=embedder, fusion="weighted")
        result = calibrate_fusion(rset, cfg.calibrate_products, cfg.seed, progress=progress)
        del rset
        manifest = write_calibration(work, result, seconds=time.perf_counter() - t)
        log_stage("calibrate", manifest["timings"])
    swap_dir(work, out)
    log.info("index built at %s in %.1f s (%s)", out, time.perf_counter() - started, manifest["timings"])
    return manifest
