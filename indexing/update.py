"""``amzqa index --add FILE --remove FILE_OR_UIDS --out INDEX``: a new sealed version of an index with products added,
changed or removed, embedding only the titles that changed.

The result is the index a rebuild would give for the catalog "the old one, each changed product edited in place, the
removed ones deleted, the new ones appended in file order": the same rows in the same order, the same stored vectors
for every unchanged title, BM25 re-scored over the whole new catalog (its statistics change with every document),
and a flat index rebuilt from the vectors. Two things a small change keeps rather than recomputes, as documented in
docs/design.md: an IVF index's centroids (the changed vectors are placed in the lists they belong to) and the fusion
calibration; a change of at least ``recalibrate_fraction`` of the catalog retrains and recalibrates both, exactly as
a rebuild does.

Every input line is accounted for as ``prepare`` does it: ``stats["lines_read"] == added + changed + unchanged +
dropped`` for the add file, every dropped line in the new version's ``updates/NNNN-quarantine.jsonl`` with its line
number and reason. The old index is never written to: the new version is made in ``<index>.update`` (discarded and
started again by a rerun after a crash) and exchanged with the old folder in one rename, so readers see the old or
the new version, never a mix, and a process killed at any point leaves the old one intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from amzqa.errors import ConfigError, InputError
from amzqa.indexing.build import IndexConfig, build_dense, resolve_dense_type
from amzqa.indexing.clean import dedup_key
from amzqa.io.atomic import check_replaceable, sha256_file, swap_dir, write_json_atomic
from amzqa.io.layout import DENSE_FILE, EMBEDDINGS_FILE, FUSION_FILE, LEXICAL_DIR, STATIC_MODEL_DIR
from amzqa.progress import bar

log = logging.getLogger(__name__)

UPDATES_DIR = "updates"
CHUNK = 100_000  # rows handled at a time when the store, the vectors and the tokens are rewritten


def _key(title: str, content: str) -> int:
    return int.from_bytes(hashlib.blake2b(dedup_key(title, content).encode(), digest_size=8).digest(), "little")


@dataclasses.dataclass
class Record:
    line: int
    uid: str
    title: str
    content: str

    @property
    def raw(self) -> str:
        """The record as cleaned, for the quarantine (so a dropped product can be fixed and added again)."""
        return json.dumps({"uid": self.uid, "title": self.title, "content": self.content}, ensure_ascii=False)


@dataclasses.dataclass
class Plan:
    """What an update does to the rows of the old index."""

    n_old: int
    removed: np.ndarray  # old rows taken out
    replaced: dict[int, Record]  # old row -> its new text (edited in place)
    appended: list[Record]
    retitled: set[int]  # replaced rows whose title changed (their vectors are new)
    unchanged: int
    quarantine: list[dict[str, Any]]
    counts: dict[str, Any]

    @property
    def changed_rows(self) -> int:
        return len(self.removed) + len(self.replaced) + len(self.appended)


# ---------------------------------------------------------------- reading what to change


def read_removals(spec: str) -> list[tuple[str, int | None, str]]:
    """``(source, line, uid)`` for each product to remove: from a file (a uid per line, or JSON lines with ``uid``)
    or from uids separated by commas."""
    path = Path(spec)
    if path.is_file():
        out = []
        with open(path, encoding="utf-8") as f:
            for no, line in enumerate(f, 1):
                text = line.strip()
                if not text:
                    continue
                if text.startswith("{"):
                    try:
                        uid = json.loads(text).get("uid")
                    except (ValueError, AttributeError):
                        uid = None
                    if not isinstance(uid, str) or not uid.strip():
                        raise InputError(f"{path}:{no}: expected a uid or a JSON object with a string 'uid', got "
                                         f"{text[:80]!r}; nothing was changed")
                    text = uid.strip()
                out.append((str(path), no, text))
        return out
    if path.is_dir() or os.sep in spec or spec.endswith((".txt", ".json", ".jsonl", ".gz", ".csv")):
        raise InputError(f"--remove {spec}: no such file (give a file of uids, or uids separated by commas)")
    return [("--remove", None, u.strip()) for u in spec.split(",") if u.strip()]


def read_additions(path: Path, cleaning: dict[str, Any], progress: bool | None):
    """Parse the add file with prepare's own cleaning; yield ``Record`` or ``(line, reason, detail, raw)``."""
    import orjson

    from amzqa.indexing.corpus import PrepareConfig, Rejected, iter_lines, open_catalog, parse_record

    cfg = PrepareConfig(**cleaning)
    reader, raw = open_catalog(path)
    with raw, reader, bar(progress, total=Path(path).stat().st_size, unit="B", unit_scale=True, desc="read --add") as pbar:
        for line_no, line, full_len in iter_lines(reader, cfg.max_line_bytes):
            if not line_no % 20_000:
                pbar.update(raw.tell() - pbar.n)
            text = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if full_len > cfg.max_line_bytes:
                yield line_no, "line_too_long", f"{full_len} bytes > max_line_bytes={cfg.max_line_bytes}", text[:1000]
                continue
            try:
                uid, title, content, _, _, _ = parse_record(line, orjson.loads, cfg)
            except Rejected as r:
                yield line_no, r.reason, r.detail, text
                continue
            yield Record(line_no, uid, title, content)
        pbar.update(raw.tell() - pbar.n)


def plan_update(store, add: Path | None, remove: str | None, cleaning: dict[str, Any],
                progress: bool | None = None) -> Plan:
    """Match the add and remove lists against ``store``; quarantine what cannot be applied (as prepare would)."""
    quarantine: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()

    def reject(source: str, line: int | None, reason: str, detail: str, raw: str) -> None:
        dropped[reason] += 1
        quarantine.append({"source": source, "line": line, "reason": reason, "detail": detail, "raw": raw})

    removals = read_removals(remove) if remove else []
    additions: list[Record] = []
    lines_read = 0
    if add is not None:
        for item in read_additions(Path(add), cleaning, progress):
            lines_read += 1
            if isinstance(item, Record):
                additions.append(item)
            else:
                reject(str(add), *item)
    remove_uids = {uid for _, _, uid in removals}
    add_uids = Counter(r.uid for r in additions)
    both = remove_uids & set(add_uids)

    # Removals: a uid named twice counts once; one not in the index is reported, not an error.
    removed_rows: list[int] = []
    seen: set[str] = set()
    for source, line, uid in removals:
        if uid in both:
            reject(source, line, "add_and_remove", "the same uid is in --add and --remove: neither is applied", uid)
        elif uid in seen:
            reject(source, line, "duplicate_uid", f"uid {uid} named earlier", uid)
        elif (row := store.row_of(uid)) is None:
            reject(source, line, "unknown_uid", f"no product with uid {uid} in the index", uid)
        else:
            removed_rows.append(row)
        seen.add(uid)
    removed = np.array(sorted(removed_rows), dtype=np.int64)

    # Additions: first by uid (a later line with the same uid is a duplicate, as in prepare), then by text.
    replaced: dict[int, Record] = {}
    appended: list[Record] = []
    retitled: set[int] = set()
    unchanged = 0
    first: set[str] = set()
    candidates: list[Record] = []
    for rec in additions:
        if rec.uid in both:
            reject(str(add), rec.line, "add_and_remove", "the same uid is in --add and --remove: neither is applied", rec.raw)
        elif rec.uid in first:
            reject(str(add), rec.line, "duplicate_uid", f"uid {rec.uid} seen earlier", rec.raw)
        else:
            first.add(rec.uid)
            candidates.append(rec)

    # The (title, content) keys of the products that stay as they are: a change or an addition may not duplicate one.
    gone = set(removed.tolist())
    pending: dict[int, Record] = {}
    new: list[Record] = []
    for rec in candidates:
        row = store.row_of(rec.uid)
        if row is None:
            new.append(rec)
            continue
        old = store.get(row)
        if old.title == rec.title and old.content == rec.content:
            unchanged += 1
        else:
            pending[row] = rec
            if old.title != rec.title:
                retitled.add(row)
    keys: dict[int, int] = {}  # key -> row (or -1 - i for the i-th appended record)
    table = store.table if (pending or new) else store.table.slice(0, 0)  # nothing to check: no scan
    with bar(progress, total=table.num_rows, unit="row", unit_scale=True, desc="dedup keys") as pbar:
        for lo in range(0, table.num_rows, CHUNK):
            part = table.slice(lo, CHUNK)
            for i, (t, c) in enumerate(zip(part.column("title").to_pylist(), part.column("content").to_pylist())):
                row = lo + i
                if row not in gone and row not in pending:
                    keys.setdefault(_key(t, c), row)
            pbar.update(part.num_rows)
    for row in sorted(pending):
        rec = pending[row]
        k = _key(rec.title, rec.content)
        if k in keys:
            other = store.get(keys[k]).uid if keys[k] >= 0 else appended[-1 - keys[k]].uid
            reject(str(add), rec.line, "duplicate_title_content",
                   f"same cleaned title and content as product {other}; the index keeps {rec.uid} as it was", rec.raw)
            retitled.discard(row)
            kept = store.get(row)  # stays as it was: its text is taken again
            keys.setdefault(_key(kept.title, kept.content), row)
            continue
        keys[k] = row
        replaced[row] = rec
    for rec in new:
        k = _key(rec.title, rec.content)
        if k in keys:
            other = store.get(keys[k]).uid if keys[k] >= 0 else appended[-1 - keys[k]].uid
            reject(str(add), rec.line, "duplicate_title_content", f"same cleaned title and content as product {other}",
                   rec.raw)
            continue
        keys[k] = -1 - len(appended)
        appended.append(rec)
    counts = {
        "add_lines_read": lines_read, "added": len(appended), "changed": len(replaced), "unchanged": unchanged,
        "remove_requested": len(removals), "removed": len(removed),
        "dropped": dict(sorted(dropped.items())),
        "products_before": len(store), "products_after": len(store) - len(removed) + len(appended),
    }
    add_dropped = sum(1 for q in quarantine if q["source"] == str(add)) if add is not None else 0
    assert lines_read == len(appended) + len(replaced) + unchanged + add_dropped, "every add line is accounted for"
    return Plan(len(store), removed, replaced, appended, retitled, unchanged, quarantine, counts)


# ---------------------------------------------------------------- writing the new version


def row_sources(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """For each new row, the old row it comes from (-1 for appended ones), and each old row's new row (-1: removed)."""
    keep = np.ones(plan.n_old, dtype=bool)
    keep[plan.removed] = False
    kept = np.flatnonzero(keep)
    source = np.concatenate([kept, np.full(len(plan.appended), -1, dtype=np.int64)])
    new_of_old = np.full(plan.n_old, -1, dtype=np.int64)
    new_of_old[kept] = np.arange(len(kept))
    return source, new_of_old


def write_new_store(work: Path, store, plan: Plan, source: np.ndarray, new_of_old: np.ndarray) -> None:
    """The new product store: old rows in order (changed ones with their new text), then the appended products."""
    import pyarrow as pa

    from amzqa.retrieval.store import write_store

    patch = [*plan.replaced.values(), *plan.appended]
    extra = pa.table({name: [getattr(r, name) for r in patch] for name in ("uid", "title", "content")},
                     schema=store.table.schema)
    combined = pa.concat_tables([store.table, extra])
    take = source.copy()  # rows of ``combined`` in the new order
    take[new_of_old[list(plan.replaced)]] = plan.n_old + np.arange(len(plan.replaced))
    take[source < 0] = plan.n_old + len(plan.replaced) + np.arange(len(plan.appended))

    def batches():
        for lo in range(0, len(take), CHUNK):
            part = combined.take(pa.array(take[lo:lo + CHUNK])).combine_chunks()
            yield pa.record_batch([pa.array(np.arange(lo, lo + part.num_rows)), *(c.chunk(0) if c.num_chunks else
                                                                                   pa.array([], c.type) for c in part.columns)],
                                  names=["row_id", "uid", "title", "content"])

    write_store(work, batches())


def write_new_vectors(work: Path, old_vectors: np.ndarray, plan: Plan, source: np.ndarray, new_of_old: np.ndarray,
                      embedder, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The new embeddings file (old vectors moved to their new rows, new titles embedded); returns it and the new
    rows whose vectors were embedded here."""
    retitled = sorted(plan.retitled)
    rows = np.concatenate([new_of_old[retitled], np.arange(len(source) - len(plan.appended), len(source))]).astype(np.int64)
    titles = [plan.replaced[r].title for r in retitled] + [rec.title for rec in plan.appended]
    dim = old_vectors.shape[1]
    out = np.lib.format.open_memmap(work / EMBEDDINGS_FILE, mode="w+", dtype=np.float16, shape=(len(source), dim))
    for lo in range(0, len(source), CHUNK):
        src = source[lo:lo + CHUNK]
        block = np.zeros((len(src), dim), dtype=np.float16)
        old = src >= 0
        block[old] = old_vectors[src[old]]
        out[lo:lo + len(src)] = block
    if titles:
        out[rows] = embedder.encode(titles, batch_size=batch_size).astype(np.float16)
    out.flush()
    return out, rows


def update_ivf(old_path: Path, new_of_old: np.ndarray, new_rows: np.ndarray, vectors: np.ndarray,
               retitled_old: np.ndarray):
    """The IVF index with its trained centroids kept: entries of removed rows (and of rows whose vector changed)
    dropped, every other entry renumbered to its new row, the new vectors added to the lists they fall in."""
    import faiss

    index = faiss.read_index(str(old_path))
    ivf = faiss.extract_index_ivf(index)
    mapping = new_of_old.copy()
    mapping[retitled_old] = -1  # their old vectors go; the new ones are added below
    invlists = ivf.invlists
    code_size = invlists.code_size
    total = 0
    for lst in range(ivf.nlist):
        size = invlists.list_size(lst)
        if not size:
            continue
        ids = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()
        mapped = mapping[ids]
        keep = mapped >= 0
        total += int(keep.sum())
        if keep.all() and np.array_equal(mapped, ids):
            continue
        codes = faiss.rev_swig_ptr(invlists.get_codes(lst), size * code_size).copy().reshape(size, code_size)
        ids_kept = np.ascontiguousarray(mapped[keep], dtype=np.int64)
        codes_kept = np.ascontiguousarray(codes[keep])
        invlists.resize(lst, len(ids_kept))
        if len(ids_kept):
            invlists.update_entries(lst, 0, len(ids_kept), faiss.swig_ptr(ids_kept), faiss.swig_ptr(codes_kept))
    ivf.ntotal = index.ntotal = total
    if len(new_rows):
        index.add_with_ids(np.ascontiguousarray(vectors[new_rows], dtype=np.float32), new_rows)
    return index


def new_tokens(work: Path, old_folder: Path, plan: Plan, source: np.ndarray, new_of_old: np.ndarray,
               lexical: dict[str, Any], progress: bool | None):
    """The new catalog's token ids: stored ids for rows whose text is unchanged, the tokenizer for the rest (and for
    every row of an index built before token ids were kept). The vocabulary is compacted to the tokens in use."""
    from amzqa.indexing.lexical import (
        CompactTokens,
        lexical_text,
        load_tokens,
        make_tokenizer,
        save_tokens,
        tokenize_compact,
    )
    from amzqa.retrieval.store import ProductStore

    chars = lexical["content_chars"]

    stored = load_tokens(old_folder)
    if stored is None:
        from amzqa.indexing.build import IndexConfig, lexical_chunks

        log.info("%s keeps no token ids (built by an older amzqa): tokenising the whole catalog once", old_folder)
        cfg = IndexConfig(bm25_fields=lexical["fields"], bm25_content_chars=chars)
        n = len(ProductStore(work))
        tokens, vocab = tokenize_compact(lexical_chunks(work, cfg), n, lexical["stopwords"], lexical["stemmer"], progress)
        save_tokens(work, tokens, vocab)
        return tokens, vocab
    old_tokens, vocab = stored
    vocab = dict(vocab)
    tokenizer = make_tokenizer(lexical["stopwords"], lexical["stemmer"])
    patched = [*plan.replaced.values(), *plan.appended]
    patched_rows = np.concatenate([new_of_old[list(plan.replaced)],
                                   np.arange(len(source) - len(plan.appended), len(source))]).astype(np.int64)
    texts = [lexical_text(r.title, r.content, lexical["fields"], chars) for r in patched]
    docs = tokenizer.tokenize(texts, update_vocab=True, return_as="ids", show_progress=False) if patched else []
    own = {i: t for t, i in tokenizer.get_vocab_dict().items()}
    patched_ids = {int(row): np.array([vocab.setdefault(own[t], len(vocab)) for t in doc], dtype=np.int32)
                   for row, doc in zip(patched_rows, docs)}
    old_off = np.asarray(old_tokens.offsets)
    from_old = source >= 0
    from_old[patched_rows] = False
    lengths = np.zeros(len(source), dtype=np.int64)
    lengths[from_old] = np.diff(old_off)[source[from_old]]
    for row, doc in patched_ids.items():
        lengths[row] = len(doc)
    offsets = np.zeros(len(source) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.empty(int(offsets[-1]), dtype=np.int32)
    for lo in range(0, len(source), CHUNK):  # copy the unchanged documents' ids, a chunk of rows at a time
        rows = lo + np.flatnonzero(from_old[lo:lo + CHUNK])
        n = lengths[rows]
        within = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        ids[np.repeat(offsets[rows], n) + within] = old_tokens.ids[np.repeat(old_off[source[rows]], n) + within]
    for row, doc in patched_ids.items():
        ids[offsets[row]:offsets[row + 1]] = doc
    # Compact the vocabulary: tokens only the removed or changed documents had are gone, as from a rebuild.
    used = np.bincount(ids, minlength=len(vocab)) > 0
    empty = vocab.get("")
    if empty is not None:
        used[empty] = True
    renumber = np.cumsum(used) - 1
    ids = renumber[ids].astype(np.int32)
    vocab = {t: int(renumber[i]) for t, i in vocab.items() if used[i]}
    tokens = CompactTokens(ids, offsets)
    save_tokens(work, tokens, vocab)
    return tokens, vocab


# ---------------------------------------------------------------- the stage


def update_index(cfg: IndexConfig, progress: bool | None = None, embedder=None) -> dict[str, Any]:
    """Apply ``cfg.add`` and ``cfg.remove`` to the sealed index at ``cfg.out``; return the new version's manifest."""
    import faiss

    from amzqa.indexing.lexical import index_tokens
    from amzqa.io.versions import library_versions
    from amzqa.retrieval.artifacts import Artifacts, seal
    from amzqa.retrieval.embedding import index_embedder
    from amzqa.retrieval.store import ProductStore

    if cfg.out is None or (cfg.add is None and cfg.remove is None):
        raise ConfigError("an update needs out (the index) and add and/or remove")
    if cfg.corpus is not None:
        raise ConfigError("--add/--remove update the index at --out; --corpus is for a build (leave it out)")
    started = time.perf_counter()
    out = Path(cfg.out)
    check_replaceable(out)
    arts = Artifacts.open(out)
    man = arts.manifest
    fields = {f.name for f in dataclasses.fields(IndexConfig)}
    built = IndexConfig.from_dict({k: v for k, v in man["config"].items() if k in fields})
    embedder = embedder or index_embedder(arts)
    arts.check_embedder(embedder)
    timings: dict[str, float] = {}

    work = Path(f"{out}.update")
    if work.exists():  # a killed update: start again (its inputs may have changed since)
        log.info("discarding the interrupted update in %s", work)
        shutil.rmtree(work)
    work.mkdir()
    try:
        if (out / STATIC_MODEL_DIR).is_dir():  # the static model every version of this index embeds with
            shutil.copytree(out / STATIC_MODEL_DIR, work / STATIC_MODEL_DIR, copy_function=os.link)
        t = time.perf_counter()
        store = ProductStore(out)
        plan = plan_update(store, cfg.add, cfg.remove, man.get("cleaning", {}), progress)
        source, new_of_old = row_sources(plan)
        write_new_store(work, store, plan, source, new_of_old)
        timings["store_s"] = time.perf_counter() - t

        t = time.perf_counter()
        old_vectors = np.load(out / EMBEDDINGS_FILE, mmap_mode="r", allow_pickle=False)
        vectors, fresh_rows = write_new_vectors(work, old_vectors, plan, source, new_of_old, embedder, built.batch_size)
        timings["embed_s"] = time.perf_counter() - t

        t = time.perf_counter()
        large = plan.changed_rows >= cfg.recalibrate_fraction * max(1, plan.n_old)
        kind = resolve_dense_type(built, len(source))
        if kind.startswith("ivf") and kind == man["dense"]["type"] and not large:
            index = update_ivf(out / DENSE_FILE, new_of_old, fresh_rows, vectors, np.array(sorted(plan.retitled), dtype=np.int64))
            dense_params = dict(man["dense"])
        else:  # flat and HNSW are rebuilt from the vectors (no re-embedding); IVF too after a large change
            index, dense_params = build_dense(vectors, kind, built, progress)
            dense_params["file"] = DENSE_FILE
        faiss.write_index(index, str(work / DENSE_FILE))
        del index, vectors
        timings["dense_s"] = time.perf_counter() - t

        t = time.perf_counter()
        tokens, vocab = new_tokens(work, out, plan, source, new_of_old, man["lexical"], progress)
        index_tokens(tokens, vocab, progress).save(str(work / LEXICAL_DIR))
        del tokens
        timings["lexical_s"] = time.perf_counter() - t

        history = list(man.get("updates", []))
        number = len(history) + 1
        qfile = f"{UPDATES_DIR}/{number:04d}-quarantine.jsonl"
        (work / UPDATES_DIR).mkdir()
        if (out / UPDATES_DIR).is_dir():  # earlier updates' quarantines stay with the index
            for f in (out / UPDATES_DIR).iterdir():
                os.link(f, work / UPDATES_DIR / f.name)
        with open(work / qfile, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in plan.quarantine)
        add_sha = sha256_file(cfg.add) if cfg.add else None
        fingerprint = hashlib.sha256(json.dumps([man["corpus"]["fingerprint"], add_sha, plan.removed.tolist(),
                                                 plan.counts], sort_keys=True).encode()).hexdigest()
        recalibrate = bool(large and built.calibrate_products and (out / FUSION_FILE).is_file())
        entry = {"number": number, "created_unix": int(time.time()), "add": str(cfg.add) if cfg.add else None,
                 "add_sha256": add_sha, "remove": cfg.remove, **plan.counts, "quarantine": qfile,
                 "recomputed": {"fusion": recalibrate, "ivf_centroids": large and kind.startswith("ivf"),
                                "dense": dense_params["type"]}}
        if (out / FUSION_FILE).is_file() and not recalibrate:
            # A small change keeps the calibration (now for this catalog; the one it was fitted on is recorded).
            result = json.loads((out / FUSION_FILE).read_text(encoding="utf-8"))
            result["calibrated_on"] = result.get("calibrated_on", result["corpus_fingerprint"])
            result["corpus_fingerprint"] = fingerprint
            write_json_atomic(work / FUSION_FILE, result)
        products = ProductStore(work)
        import pyarrow.compute as pc

        content = products.table.column("content")  # counted in Arrow: 2M descriptions as Python strings take GiBs
        with_content = int(pc.sum(pc.greater(pc.binary_length(content), 0)).as_py() or 0)
        del content
        del products
        entry["timings"] = {k: round(v, 2) for k, v in {**timings, "total_s": time.perf_counter() - started}.items()}
        body = {k: v for k, v in man.items() if k not in ("files", "sizes", "sealed")}
        manifest = seal(work, {
            **body,
            "counts": {"products": len(source), "with_content": with_content},
            "corpus": {**man["corpus"], "fingerprint": fingerprint, "rows": len(source),
                       "built_from": man["corpus"].get("built_from", man["corpus"]["fingerprint"])},
            "dense": dense_params,
            "versions": library_versions(),
            "updates": [*history, entry],
        })
        if recalibrate:  # as a build does it: in the private folder, sealed before anyone can read it
            from amzqa.indexing.fusion import calibrate_fusion, write_calibration
            from amzqa.retrieval import RetrieverSet

            t = time.perf_counter()
            rset = RetrieverSet(work, embedder=embedder, fusion="weighted")
            result = calibrate_fusion(rset, built.calibrate_products, built.seed, progress=progress)
            del rset
            manifest = write_calibration(work, result, seconds=time.perf_counter() - t)
        check_replaceable(out)
        swap_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("index %s updated in %.1f s: %s", out, time.perf_counter() - started, plan.counts)
    return manifest


def format_update(manifest: dict[str, Any], out) -> str:
    """The summary of an update that the CLI prints."""
    u = manifest["updates"][-1]
    lines = [f"index {out} updated (version {u['number']}): {u['products_before']:,} -> {u['products_after']:,} products",
             f"  added {u['added']:,}, changed {u['changed']:,}, unchanged {u['unchanged']:,} (of {u['add_lines_read']:,} "
             f"lines read), removed {u['removed']:,} (of {u['remove_requested']:,} asked)"]
    if u["dropped"]:
        lines.append(f"  dropped {sum(u['dropped'].values()):,} (details in {Path(out) / u['quarantine']}):")
        lines += [f"    {reason:<24}{n:>8,}" for reason, n in u["dropped"].items()]
    recomputed = [name for name in ("fusion", "ivf_centroids") if u["recomputed"][name]]
    lines.append(f"  recomputed: {', '.join(recomputed) or 'nothing beyond BM25 (a small change keeps the fusion calibration'}"
                 f"{'' if recomputed else ' and IVF centroids)'}; timings: "
                 + ", ".join(f"{k}={v}" for k, v in u["timings"].items()))
    return "\n".join(lines)
