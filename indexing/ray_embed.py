"""The embedding stage on Ray Data, for catalogs that outgrow one machine (``amzqa index --engine ray``).

The prepared corpus's Parquet shards are read by ``ray.data.read_parquet``; ``map_batches`` runs the same embedder
as the in-process build in one actor per worker (a stateful class: the model loads once per actor, one thread each);
the vectors come back to the driver by ``row_id`` into the artifact's embeddings file, and the rest of the build
(FAISS, BM25, seal, calibration) is the in-process one. With fp32 embeddings the vectors equal the in-process ones to
float16 storage; the int8 model quantises activations per batch, and Ray's batches hold other titles, so its vectors
differ slightly.

Point it at an existing cluster with ``--address`` (``auto`` inside a cluster node, ``ray://HEAD:10001`` from outside;
amzqa and the embedding model must be installed on every node); without it a local Ray instance is started for the
build and stopped after it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from amzqa.io.layout import EMBEDDINGS_FILE
from amzqa.optional import require
from amzqa.progress import bar

log = logging.getLogger(__name__)


class _Embed:
    """One actor's embedder (Ray constructs it once per actor and calls it with each batch)."""

    def __init__(self, model: str, backend: str, max_length: int, batch_size: int) -> None:
        from amzqa.retrieval.embedding import load_embedder

        self.embedder = load_embedder(model, backend, max_length, threads=1)
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        vectors = self.embedder.encode(list(batch["title"]), batch_size=self.batch_size).astype(np.float16)
        return {"row_id": batch["row_id"], "vector": vectors}


def embed_on_ray(shards: list[Path], work: Path, rows: int, embedder, cfg, progress: bool | None = None) -> np.ndarray:
    """Embed every title of ``shards`` on Ray into ``work/embeddings.npy`` (float16, row_id order)."""
    require("ray", "ray")  # a clear error naming the extra where it is missing
    import ray
    import ray.data

    started_here = not ray.is_initialized()
    if started_here:
        kwargs = {"address": cfg.address} if cfg.address else {}  # a local instance: every CPU of this machine
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
    try:
        workers = cfg.ray_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        log.info("embedding %d titles on Ray with %d workers", rows, workers)
        ds = ray.data.read_parquet([str(s) for s in shards], columns=["row_id", "title"])
        # A static model is handed over by its folder (the distilled weights the index will carry), not re-distilled.
        model = embedder.path if embedder.backend == "static" else cfg.embedding_model
        vectors = ds.map_batches(_Embed, fn_constructor_args=(model, embedder.backend, cfg.max_length, cfg.batch_size),
                                 batch_size=cfg.ray_batch_rows, batch_format="numpy",
                                 compute=ray.data.ActorPoolStrategy(size=workers),
                                 # Half a CPU reserved per actor (each runs one ONNX thread): whole CPUs for every
                                 # actor would leave none for the read tasks that feed them, and the build would wait.
                                 num_cpus=0.5)
        out = np.lib.format.open_memmap(work / EMBEDDINGS_FILE, mode="w+", dtype=np.float16, shape=(rows, embedder.dim))
        seen = 0
        with bar(progress, total=rows, unit="title", unit_scale=True, desc="embed titles (ray)") as pbar:
            for batch in vectors.iter_batches(batch_size=None, batch_format="numpy"):
                out[batch["row_id"]] = batch["vector"]
                seen += len(batch["row_id"])
                pbar.update(len(batch["row_id"]))
        if seen != rows:
            from amzqa.errors import ArtifactError

            raise ArtifactError(f"Ray returned {seen} vectors for {rows} titles")
        out.flush()
        return out
    finally:
        if started_here:
            ray.shutdown()
