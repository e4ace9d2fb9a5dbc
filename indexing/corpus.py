"""``amzqa prepare``: stream ``trn.json(.gz)``, clean it, and write Parquet shards plus an account of every line.

Guarantee (tested): ``stats["lines_read"] == stats["kept"] + sum(stats["dropped"].values())`` and every dropped
line is in ``quarantine.jsonl`` with its 1-based line number and reason. Memory stays bounded: lines are read
one at a time (an over-long line is skipped in pieces), records are written in shards, and only the two
dedup sets grow with the input (about 150 bytes per record).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import logging
import os
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amzqa.config import Config, doc
from amzqa.errors import ConfigError, InputError
from amzqa.indexing.clean import clean_text, dedup_key
from amzqa.io.atomic import atomic_dir, sha256_file, write_json_atomic
from amzqa.io.layout import CORPUS_FORMAT, CORPUS_QUARANTINE, CORPUS_SHARDS, CORPUS_STATS, MANIFEST
from amzqa.progress import bar

log = logging.getLogger(__name__)

SCHEMA_FIELDS = ("row_id", "uid", "title", "content", "has_content", "target_ind", "target_rel", "line")


@dataclasses.dataclass
class PrepareConfig(Config):
    """Settings of ``amzqa prepare`` (``configs/prepare.yaml``)."""

    input: Path | None = doc("trn.json or trn.json.gz (JSON lines). Required unless given on the command line.", None)
    out: Path | None = doc("Output corpus folder (Parquet shards, stats.json, quarantine.jsonl, manifest.json).", None)
    shard_rows: int = doc("Records per Parquet shard; bounds the memory held before a write.", 250_000)
    max_line_bytes: int = doc("Lines longer than this are quarantined as line_too_long without being held whole.", 1 << 20)
    min_title_chars: int = doc("A cleaned title shorter than this counts as unusable (dropped: empty_title).", 1)
    max_content_chars: int = doc("Cleaned content is cut to this many characters (0 = keep all); the cut is counted.", 20_000)
    overwrite: bool = doc("Replace an existing output folder.", False)

    def __post_init__(self) -> None:
        if self.shard_rows < 1:
            raise ConfigError("shard_rows must be >= 1")
        if self.max_line_bytes < 1024:
            raise ConfigError("max_line_bytes must be >= 1024: real records reach ~200 kB")
        if self.min_title_chars < 1:
            raise ConfigError("min_title_chars must be >= 1: a product without a title cannot be retrieved")
        if self.max_content_chars < 0:
            raise ConfigError("max_content_chars must be >= 0")


# ---------------------------------------------------------------- input


def open_catalog(path: str | os.PathLike) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """Open a JSON-lines catalog, plain or gzip, by content rather than by name.

    Returns ``(reader, raw)``: read lines from ``reader``; ``raw.tell()`` gives bytes consumed on disk
    (for the progress bar). Raises :class:`InputError` with one line for anything that is not a catalog.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected trn.json or trn.json.gz")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty")
    raw = open(path, "rb")  # noqa: SIM115 - handed to the caller, closed in prepare()
    magic = raw.read(2)
    raw.seek(0)
    if magic == b"\x1f\x8b":
        reader: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        try:
            head = reader.peek(64)[:64]
        except (OSError, EOFError) as exc:
            raw.close()
            raise InputError(f"{path}: not a readable gzip file ({exc})") from None
    else:
        reader = raw
        head = raw.peek(64)[:64]
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head:
        raw.close()
        raise InputError(f"{path}: contains only blank lines")
    if not head.startswith(b"{"):
        raw.close()
        raise InputError(f"{path}: unknown format: expected JSON lines starting with '{{', got {head[:16]!r}")
    return reader, raw


def iter_lines(reader: io.BufferedIOBase, max_bytes: int) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(line_no, line, full_length)``; an over-long line is yielded truncated to ``max_bytes``."""
    line_no = 0
    readline = reader.readline
    while True:
        line = readline(max_bytes + 1)
        if not line:
            return
        line_no += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            full = len(line)
            while True:  # drain the rest of the line without holding it
                rest = readline(1 << 20)
                full += len(rest)
                if not rest or rest.endswith(b"\n"):
                    break
            yield line_no, line[:max_bytes], full
        else:
            yield line_no, line, len(line)


# ---------------------------------------------------------------- one record


class Rejected(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


def _targets(obj: dict[str, Any]) -> tuple[list[int], list[float]]:
    ind = obj.get("target_ind", [])
    rel = obj.get("target_rel", [])
    if ind is None:
        ind = []
    if rel is None:
        rel = []
    if not isinstance(ind, list) or not all(type(i) is int for i in ind):
        raise Rejected("wrong_type:target_ind", "expected a list of integers")
    if not isinstance(rel, list) or not all(type(r) in (int, float) for r in rel):
        raise Rejected("wrong_type:target_rel", "expected a list of numbers")
    if len(ind) != len(rel):
        raise Rejected("mismatched_targets", f"target_ind has {len(ind)} items, target_rel {len(rel)}")
    return ind, [float(r) for r in rel]


def parse_record(line: bytes, loads, cfg: PrepareConfig) -> tuple[str, str, str, list[int], list[float], bool]:
    """Parse and clean one line; raise :class:`Rejected` with the reason it cannot be kept."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected("invalid_utf8", f"byte {exc.start}: {exc.reason}") from None
    text = text.lstrip("\ufeff").strip()
    if not text:
        raise Rejected("blank_line")
    try:
        obj = loads(text)
    except ValueError as exc:
        raise Rejected("malformed_json", str(exc)[:200]) from None
    if not isinstance(obj, dict):
        raise Rejected("not_an_object", f"got {type(obj).__name__}")
    for name in ("uid", "title"):
        if name not in obj:
            raise Rejected(f"missing_field:{name}")
        if not isinstance(obj[name], str):
            raise Rejected(f"wrong_type:{name}", f"expected a string, got {type(obj[name]).__name__}")
    content = obj.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        raise Rejected("wrong_type:content", f"expected a string, got {type(content).__name__}")
    uid = obj["uid"].strip()
    if not uid:
        raise Rejected("empty_uid")
    title = clean_text(obj["title"])
    if len(title) < cfg.min_title_chars:
        raise Rejected("empty_title")
    content = clean_text(content)
    cut = bool(cfg.max_content_chars) and len(content) > cfg.max_content_chars
    if cut:
        content = content[: cfg.max_content_chars].rsplit(" ", 1)[0]
    ind, rel = _targets(obj)
    return uid, title, content, ind, rel, cut


# ---------------------------------------------------------------- output


class _ShardWriter:
    """Parquet shards of ``shard_rows`` rows, written in row groups so only one small group is ever buffered."""

    def __init__(self, folder: Path, shard_rows: int, group_rows: int = 32_768) -> None:
        self.folder = folder / CORPUS_SHARDS
        self.folder.mkdir()
        self.shard_rows = shard_rows
        self.group_rows = min(group_rows, shard_rows)
        self.columns: dict[str, list] = {k: [] for k in SCHEMA_FIELDS}
        self.files: list[dict[str, Any]] = []
        self.rows = 0
        self._writer = None
        self._path: Path | None = None
        self._shard_fill = 0

    def add(self, uid, title, content, ind, rel, line_no) -> None:
        c = self.columns
        c["row_id"].append(self.rows)
        c["uid"].append(uid)
        c["title"].append(title)
        c["content"].append(content)
        c["has_content"].append(bool(content))
        c["target_ind"].append(ind)
        c["target_rel"].append(rel)
        c["line"].append(line_no)
        self.rows += 1
        if len(c["row_id"]) >= self.group_rows or self._shard_fill + len(c["row_id"]) >= self.shard_rows:
            self._write_group()

    def _write_group(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.columns["row_id"]:
            return
        if self._writer is None:
            self._path = self.folder / f"part-{len(self.files):05d}.parquet"
            self._writer = pq.ParquetWriter(self._path, corpus_schema(), compression="zstd")
        table = pa.table(self.columns, schema=corpus_schema())
        self._writer.write_table(table)
        self._shard_fill += table.num_rows
        self.columns = {k: [] for k in SCHEMA_FIELDS}
        if self._shard_fill >= self.shard_rows:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self.files.append({"path": f"shards/{self._path.name}", "rows": self._shard_fill, "sha256": sha256_file(self._path)})
        self._writer, self._shard_fill = None, 0

    def flush(self) -> None:
        self._write_group()
        self._close_shard()


def corpus_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.int64()),
            ("uid", pa.string()),
            ("title", pa.string()),
            ("content", pa.string()),
            ("has_content", pa.bool_()),
            ("target_ind", pa.list_(pa.int32())),
            ("target_rel", pa.list_(pa.float32())),
            ("line", pa.int64()),
        ]
    )


# ---------------------------------------------------------------- the stage


def prepare(cfg: PrepareConfig, progress: bool | None = None) -> dict[str, Any]:
    """Run the corpus pipeline described in the module docstring; return the stats also saved as ``stats.json``."""
    import orjson

    if cfg.input is None or cfg.out is None:
        raise ConfigError("prepare needs both input and out")
    loads = orjson.loads
    started = time.perf_counter()
    reader, raw = open_catalog(cfg.input)
    total_bytes = Path(cfg.input).stat().st_size
    dropped: Counter[str] = Counter()
    seen_uids: set[str] = set()
    seen_pairs: set[int] = set()
    kept_with_content = cut_content = lines_read = 0
    with atomic_dir(cfg.out, overwrite=cfg.overwrite) as tmp, raw, reader:
        writer = _ShardWriter(tmp, cfg.shard_rows)
        quarantine = open(tmp / CORPUS_QUARANTINE, "w", encoding="utf-8")

        def reject(line_no: int, reason: str, detail: str, line: bytes, full_len: int) -> None:
            dropped[reason] += 1
            row = {"line": line_no, "reason": reason, "detail": detail,
                   "raw": line.decode("utf-8", errors="replace").rstrip("\r\n")}
            if full_len > len(line):
                row["raw_truncated_from_bytes"] = full_len
            quarantine.write(json.dumps(row, ensure_ascii=False) + "\n")

        with quarantine, bar(progress, total=total_bytes, unit="B", unit_scale=True, desc="prepare") as pbar, \
                _corrupt_stream_is_input_error(cfg.input, lambda: lines_read):
            for line_no, line, full_len in iter_lines(reader, cfg.max_line_bytes):
                lines_read = line_no
                if not line_no % 20_000:
                    pbar.update(raw.tell() - pbar.n)
                if full_len > cfg.max_line_bytes:
                    reject(line_no, "line_too_long", f"{full_len} bytes > max_line_bytes={cfg.max_line_bytes}", line[:1000], full_len)
                    continue
                try:
                    uid, title, content, ind, rel, cut = parse_record(line, loads, cfg)
                except Rejected as r:
                    reject(line_no, r.reason, r.detail, line, full_len)
                    continue
                if uid in seen_uids:
                    reject(line_no, "duplicate_uid", f"uid {uid} seen earlier", line, full_len)
                    continue
                key = int.from_bytes(hashlib.blake2b(dedup_key(title, content).encode(), digest_size=8).digest(), "little")
                if key in seen_pairs:
                    reject(line_no, "duplicate_title_content", "same cleaned title and content as an earlier record", line, full_len)
                    continue
                seen_uids.add(uid)
                seen_pairs.add(key)
                kept_with_content += bool(content)
                cut_content += cut
                writer.add(uid, title, content, ind, rel, line_no)
            pbar.update(raw.tell() - pbar.n)
        writer.flush()
        kept = writer.rows
        stats = {
            "input": str(cfg.input),
            "lines_read": lines_read,
            "kept": kept,
            "kept_with_content": kept_with_content,
            "kept_title_only": kept - kept_with_content,
            "content_truncated": cut_content,
            "dropped": dict(sorted(dropped.items())),
            "duplicates": {"uid": dropped["duplicate_uid"], "title_content": dropped["duplicate_title_content"]},
            "seconds": round(time.perf_counter() - started, 3),
        }
        assert lines_read == kept + sum(dropped.values()), "every line is kept or dropped with a reason"
        write_json_atomic(tmp / CORPUS_STATS, stats)
        write_json_atomic(tmp / MANIFEST, _manifest(cfg, writer.files, kept))
    log.info("prepared %s: %d lines, %d kept, %d dropped", cfg.out, lines_read, kept, lines_read - kept)
    return stats


@contextlib.contextmanager
def _corrupt_stream_is_input_error(path, lines_read):
    """A gzip stream that breaks mid-file cannot be skipped past like a bad line: fail, naming where."""
    try:
        yield
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{path}: compressed stream is corrupt or truncated after line {lines_read()} ({exc})") from None


def _manifest(cfg: PrepareConfig, files: list[dict[str, Any]], rows: int) -> dict[str, Any]:
    from amzqa.io.versions import library_versions

    fingerprint = hashlib.sha256("".join(f["sha256"] for f in files).encode()).hexdigest()
    return {
        "format": CORPUS_FORMAT,
        "rows": rows,
        "shards": files,
        "fingerprint": fingerprint,
        "config": cfg.to_dict(),
        "versions": library_versions(),
    }


# ---------------------------------------------------------------- reading a prepared corpus


@dataclasses.dataclass(frozen=True)
class CorpusInfo:
    path: Path
    rows: int
    fingerprint: str
    shard_paths: tuple[Path, ...]


def open_corpus(path: str | os.PathLike, verify: bool = False) -> CorpusInfo:
    """Read a prepared corpus folder's manifest; with ``verify`` also check every shard's checksum."""
    from amzqa.errors import ArtifactError

    path = Path(path)
    man_path = path / MANIFEST
    if not man_path.is_file():
        raise ArtifactError(f"{path}: not a prepared corpus (no manifest.json); run: amzqa prepare --input trn.json.gz --out {path}")
    man = json.loads(man_path.read_text(encoding="utf-8"))
    if man.get("format") != CORPUS_FORMAT:
        raise ArtifactError(f"{path}: corpus format {man.get('format')!r}, this amzqa reads {CORPUS_FORMAT!r}")
    shards = []
    for f in man["shards"]:
        p = path / f["path"]
        if not p.is_file():
            raise ArtifactError(f"{path}: shard {f['path']} is missing")
        if verify and sha256_file(p) != f["sha256"]:
            raise ArtifactError(f"{path}: shard {f['path']} does not match its checksum (corrupt or edited)")
        shards.append(p)
    return CorpusInfo(path, man["rows"], man["fingerprint"], tuple(shards))


def iter_corpus(path: str | os.PathLike, columns: list[str] | None = None, batch_rows: int = 65_536):
    """Yield pyarrow RecordBatches of a prepared corpus in row_id order."""
    import pyarrow.parquet as pq

    for shard in open_corpus(path).shard_paths:
        yield from pq.ParquetFile(shard).iter_batches(batch_size=batch_rows, columns=columns)


def load_stats(path: str | os.PathLike) -> dict[str, Any]:
    return json.loads((Path(path) / CORPUS_STATS).read_text(encoding="utf-8"))


def format_stats(stats: dict, out: Path | str) -> str:
    """The summary of a prepare run that the CLI and the demo print."""
    lines = [
        f"corpus written to {out}",
        f"  lines read          {stats['lines_read']:>12,}",
        f"  kept                {stats['kept']:>12,}",
        f"    with content      {stats['kept_with_content']:>12,}",
        f"    title only        {stats['kept_title_only']:>12,}",
        f"  dropped             {stats['lines_read'] - stats['kept']:>12,}  (details in quarantine.jsonl)",
    ]
    lines += [f"    {reason:<24}{n:>8,}" for reason, n in stats["dropped"].items()]
    lines.append(f"  seconds             {stats['seconds']:>12,.1f}")
    return "\n".join(lines)
