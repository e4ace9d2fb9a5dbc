"""Title/query embedders with one interface: ``encode(texts) -> float32 [n, dim]``, L2-normalised.

Two backends over the same sentence-transformers folder (mean pooling, as MiniLM is trained):

* ``torch``: sentence-transformers' own ``encode`` — the reference and the baseline of the benchmark;
* ``onnx`` (default): the transformer exported once to ONNX, graph-fused by onnxruntime's transformer
  optimizer and dynamically quantised to int8, run by onnxruntime on length-sorted batches. About 3x the
  torch throughput on 2 CPU cores (see ``benchmarks/bench_embed.py``); the export is cached beside the model.

And ``static``: a model2vec static embedding distilled from the same MiniLM (each vocabulary token passed through
the transformer once, PCA to 256 dimensions, Zipf weights): a title's vector is the mean of its tokens' rows, about
100x the ONNX int8 throughput, for full catalogs where embedding every title with the transformer takes an hour or
more. The index keeps its static model inside the artifact; where it was built with ``rescore_candidates`` (off by
default) its top candidates are re-scored by the transformer at query time (``amzqa.retrieval.dense``).

Queries must be embedded with the same backend as the index: the index manifest records it and the loader
uses the recorded one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from amzqa.errors import AmzqaError
from amzqa.io.atomic import sha256_file, write_json_atomic
from amzqa.models import cache_dir, resolve_model
from amzqa.optional import require

log = logging.getLogger(__name__)

BACKENDS = ("onnx", "onnx-fp32", "torch", "static")
STATIC_PCA_DIMS = 256


class Embedder(Protocol):
    model_id: str
    dim: int
    backend: str

    def encode(self, texts: list[str], batch_size: int = ..., progress: bool | None = ...) -> np.ndarray: ...


_IDENTITY_FILES = ("config.json", "modules.json", "tokenizer.json", "tokenizer_config.json", "sentence_bert_config.json",
                   "1_Pooling/config.json", "generation_config.json", "chat_template.jinja")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".xml")


def model_files(path: Path) -> list[Path]:
    """The files that make a model folder what it is: every weight file and the configs and tokenizer (not READMEs,
    licences or amzqa's own provenance notes)."""
    weights = [f for f in path.rglob("*") if f.is_file() and f.suffix in _WEIGHT_SUFFIXES]
    return sorted({*weights, *(path / n for n in _IDENTITY_FILES if (path / n).is_file())})


def model_fingerprint(path: str) -> str:
    """A short hash of every weight file (streamed in full) and the configs and tokenizer: two indexes or adapters
    agree on a model iff this agrees. Each file's digest is cached by its size and mtime (``fingerprints.json`` in
    the amzqa cache), so a load rereads nothing unless a file changed."""
    p = Path(path).resolve()
    cache_file = cache_dir() / "fingerprints.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    h, changed = hashlib.sha256(), False
    for f in model_files(p):
        st = f.stat()
        key, stamp = str(f), [st.st_size, st.st_mtime_ns]
        entry = cache.get(key)
        if not entry or entry[:2] != stamp:
            entry, changed = [*stamp, sha256_file(f)], True
            cache[key] = entry
        h.update(f"{f.relative_to(p)}\0{entry[2]}\n".encode())
    if changed:
        try:
            write_json_atomic(cache_file, cache)
        except OSError:  # a read-only cache only costs rehashing next time
            pass
    return h.hexdigest()[:16]


class TorchEmbedder:
    backend = "torch"

    def __init__(self, model: str = "minilm", max_length: int = 64) -> None:
        st = require("sentence_transformers", "index")
        self.path = resolve_model(model)
        self.model_id = str(model)
        self.model = st.SentenceTransformer(self.path, device="cpu")
        self.model.max_seq_length = max_length
        self.dim = self.model.get_sentence_embedding_dimension()
        self.max_length = max_length

    def encode(self, texts: list[str], batch_size: int = 32, progress: bool | None = False) -> np.ndarray:
        from amzqa.progress import enabled

        out = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                show_progress_bar=enabled(progress), convert_to_numpy=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class _Wrapper:  # the module exported to ONNX: token embeddings only; pooling is done in numpy
    @staticmethod
    def build(hf_model):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        return Wrapper(hf_model)


def export_onnx(model_path: str, out_dir: Path, quantize: bool = True) -> Path:
    """Export, fuse and (optionally) int8-quantise the transformer of a sentence-transformers folder."""
    import torch
    from transformers import AutoModel

    require("onnxruntime", "index")
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "model.onnx"
    hf = AutoModel.from_pretrained(model_path, dtype=torch.float32).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            _Wrapper.build(hf), (ids, ids, torch.zeros_like(ids)), str(raw),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["tokens"],
            dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids", "tokens")},
            opset_version=17, dynamo=False,
        )
    final = raw
    try:  # fuse attention / layer norm / GELU: the biggest CPU win after int8
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = hf.config
        opt = optimize_model(str(raw), model_type="bert", num_heads=cfg.num_attention_heads, hidden_size=cfg.hidden_size)
        fused = out_dir / "model.fused.onnx"
        opt.save_model_to_file(str(fused))
        final = fused
    except Exception as exc:  # noqa: BLE001 - the unfused graph is still correct, only slower
        log.warning("onnx graph fusion failed (%s); using the unfused graph", exc)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = out_dir / "model.int8.onnx"
        import onnx

        # Fused ops (e.g. FastGelu) are outside the default domain, so shape inference cannot type them.
        quantize_dynamic(str(final), str(q), weight_type=QuantType.QInt8, per_channel=True,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        final = q
    return final


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as a cgroup-limited container sets it), not the host's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class OnnxEmbedder:
    backend = "onnx"

    def __init__(self, model: str = "minilm", max_length: int = 64, quantize: bool = True, threads: int | None = None) -> None:
        ort = require("onnxruntime", "index")
        from transformers import AutoTokenizer

        self.path = resolve_model(model)
        self.model_id = str(model)
        self.max_length = max_length
        self.quantize = quantize
        # The backend name the index manifest records and the loader reloads with: fp32 must not come back as int8.
        self.backend = "onnx" if quantize else "onnx-fp32"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.dim = json.loads((Path(self.path) / "config.json").read_text())["hidden_size"]
        onnx_path = self._cached_export()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or usable_cpus()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self.session.get_inputs()}
        self._lock = threading.Lock()  # tokenizers' fast tokenizer is not safe to share across threads

    def _cached_export(self) -> Path:
        from amzqa.models import cache_dir

        tag = f"{model_fingerprint(self.path)}-{'int8' if self.quantize else 'fp32'}"
        folder = cache_dir() / "onnx" / tag
        final = folder / ("model.int8.onnx" if self.quantize else "model.fused.onnx")
        if final.is_file() or (not self.quantize and (folder / "model.onnx").is_file()):
            return final if final.is_file() else folder / "model.onnx"
        from amzqa.io.atomic import atomic_dir

        log.info("exporting %s to ONNX (once; cached in %s)", self.path, folder)
        with atomic_dir(folder, overwrite=True) as tmp:
            built = export_onnx(self.path, tmp, self.quantize)
        return folder / built.name

    def _batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask") if k in self._input_names}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = enc.get("token_type_ids", np.zeros_like(enc["input_ids"])).astype(np.int64)
        tokens = self.session.run(None, feeds)[0]
        mask = enc["attention_mask"][..., None].astype(np.float32)
        pooled = (tokens * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def encode(self, texts: list[str], batch_size: int = 128, progress: bool | None = False) -> np.ndarray:
        from amzqa.progress import bar

        texts = list(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Length-sorted batches: padding to the longest title in a batch is the main waste on short texts.
        order = np.argsort([len(t) for t in texts], kind="stable")
        with bar(progress, total=len(texts), unit="title", unit_scale=True, desc="embed") as pbar:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                out[idx] = self._batch([texts[i] for i in idx])
                pbar.update(len(idx))
        return out


def is_static_model(path: str | Path) -> bool:
    """Whether ``path`` is a model2vec static model folder (rather than a transformer to distil one from)."""
    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "model2vec"
    except (OSError, ValueError):
        return False


def distill_static(model: str = "minilm", pca_dims: int = STATIC_PCA_DIMS, progress: bool | None = False) -> Path:
    """The model2vec static model distilled from the sentence-transformers folder ``model`` (once; cached in the
    amzqa cache by the teacher's fingerprint): about 30 s on 2 cores for MiniLM's 30k-token vocabulary."""
    from amzqa.io.atomic import atomic_dir

    path = resolve_model(model)
    folder = cache_dir() / "static" / f"{model_fingerprint(path)}-pca{pca_dims}"
    if is_static_model(folder):
        return folder
    require("model2vec", "index")
    require("skeletoken", "index")  # model2vec's distillation needs it; its "distill" extra would pin transformers < 5.4
    import torch
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    from amzqa.progress import enabled

    log.info("distilling a static embedding from %s (once; cached in %s)", path, folder)
    hf = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    previous = os.environ.get("TQDM_DISABLE")
    if not enabled(progress):
        os.environ["TQDM_DISABLE"] = "1"  # model2vec's own token-encoding bar
    try:
        static = distill_from_model(hf, tokenizer, pca_dims=pca_dims, device="cpu")
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous
    with atomic_dir(folder, overwrite=True) as tmp:
        static.save_pretrained(str(tmp))
        (tmp / "README.md").unlink(missing_ok=True)  # model2vec's generated model card names a hub id we never use
    return folder


class StaticEmbedder:
    """A model2vec static model: token rows looked up and averaged (model2vec's ``StaticModel.encode``)."""

    backend = "static"

    def __init__(self, model: str = "minilm", max_length: int = 64) -> None:
        m2v = require("model2vec", "index")
        resolved = Path(model) if is_static_model(model) else None
        self.path = str(resolved or distill_static(model))
        # The teacher's name where we distilled; a static folder given directly is its own identity.
        self.model_id = str(model)
        self.max_length = max_length
        self.model = m2v.StaticModel.from_pretrained(self.path, normalize=True, force_download=False)
        self.dim = int(self.model.dim)

    def encode(self, texts: list[str], batch_size: int = 4096, progress: bool | None = False) -> np.ndarray:
        from amzqa.progress import enabled

        # model2vec forks a process pool above 10k texts; one process with the tokenizer's own threads is as fast here
        # and keeps a build's memory its own.
        out = self.model.encode(list(texts), max_length=self.max_length, batch_size=max(batch_size, 1024),
                                show_progress_bar=enabled(progress), use_multiprocessing=False)
        out = np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)
        # Titles with no known token come back as zeros: leave them zero (they match nothing), never NaN.
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 1e-12)


def index_embedder(artifacts, threads: int | None = None) -> Embedder:
    """The query embedder of an index: the manifest's model and backend; a static index's own model folder."""
    from amzqa.io.layout import STATIC_MODEL_DIR

    emb = artifacts.embedding
    model = str(Path(artifacts.path) / STATIC_MODEL_DIR) if emb["backend"] == "static" else emb["model_id"]
    return load_embedder(model, backend=emb["backend"], max_length=emb["max_length"], threads=threads)


def load_embedder(model: str = "minilm", backend: str = "onnx", max_length: int = 64,
                  threads: int | None = None) -> Embedder:
    """``threads``: ONNX Runtime's intra-op threads (default: every CPU this process may use). With backend
    ``static``, ``model`` is a static model folder (as an index stores it) or a transformer to distil one from."""
    if backend == "static":
        return StaticEmbedder(model, max_length=max_length)
    if backend == "onnx":
        return OnnxEmbedder(model, max_length=max_length, quantize=True, threads=threads)
    if backend == "onnx-fp32":
        return OnnxEmbedder(model, max_length=max_length, quantize=False, threads=threads)
    if backend == "torch":
        return TorchEmbedder(model, max_length=max_length)
    raise AmzqaError(f"unknown embedding backend {backend!r}; choose one of {BACKENDS}")
