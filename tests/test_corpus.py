import gzip
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from amzqa.errors import ArtifactError, ConfigError, InputError
from amzqa.indexing.corpus import PrepareConfig, iter_corpus, load_stats, open_corpus, prepare
from tests.conftest import ROOT, SAMPLE


def _rec(uid, title="A title", content="Some content", **kw):
    d = {"uid": uid, "title": title, "content": content, "target_ind": [1, 2], "target_rel": [1.0, 1.0]}
    d.update(kw)
    return json.dumps(d, ensure_ascii=False).encode()


def _quarantine(out):
    return [json.loads(line) for line in (out / "quarantine.jsonl").read_text(encoding="utf-8").splitlines()]


def test_sample_catalog_accounts_for_every_line(sample_corpus):
    stats = load_stats(sample_corpus)
    n_lines = len(SAMPLE.read_bytes().splitlines())
    assert stats["lines_read"] == n_lines
    assert stats["lines_read"] == stats["kept"] + sum(stats["dropped"].values())
    assert stats["kept"] >= 300
    assert stats["kept_with_content"] + stats["kept_title_only"] == stats["kept"]
    assert stats["kept_title_only"] > 0  # empty content is kept and flagged
    q = _quarantine(sample_corpus)
    assert len(q) == sum(stats["dropped"].values())
    assert {r["reason"] for r in q} == set(stats["dropped"])
    assert stats["duplicates"]["uid"] >= 1 and stats["duplicates"]["title_content"] >= 1


def test_sample_corpus_columns_and_row_ids(sample_corpus):
    info = open_corpus(sample_corpus, verify=True)
    table = pq.read_table(info.shard_paths[0])
    assert table.column("row_id").to_pylist() == list(range(info.rows))
    rows = table.to_pylist()
    by_uid = {r["uid"]: r for r in rows}
    assert by_uid["000171287X"]["title"] == "The Berenstain Bears' B Book (Bright & Early Books)"
    assert "<script>" not in by_uid["B0MESSY005"]["title"]
    assert by_uid["B0MESSY002"]["title"] == "Garden Gnome Statue, Resin, 12 Inch"
    assert by_uid["B00I9HXN1Y"]["has_content"] is False and by_uid["B00I9HXN1Y"]["content"] == ""
    assert all(r["has_content"] == bool(r["content"]) for r in rows)
    # target fields pass through untouched
    raw = {json.loads(line)["uid"]: json.loads(line) for line in SAMPLE.read_text().splitlines() if line.startswith('{"uid": "B07X1KT6QK"')}
    assert by_uid["B07X1KT6QK"]["target_ind"] == raw["B07X1KT6QK"]["target_ind"]
    assert len(set(by_uid)) == len(rows)


def test_bad_lines_are_quarantined_not_fatal(tmp_path):
    lines = [
        b"\xef\xbb\xbf" + _rec("U1", "First with BOM"),  # 1 BOM: kept
        b"",  # 2 blank
        b'{"uid": "U3", "title": "broken',  # 3 malformed
        _rec("U4", title=None),  # 4 wrong type
        json.dumps({"uid": "U5", "content": "no title"}).encode(),  # 5 missing field
        b'{"uid": "U6", "title": "bad \xff\xfe bytes", "content": ""}',  # 6 invalid utf-8
        b"[1, 2, 3]",  # 7 not an object
        _rec("U8", "x" * 10, content="y" * 2_000_000),  # 8 over max_line_bytes
        _rec("U1", "Another title"),  # 9 duplicate uid
        _rec("U10", "First with BOM"),  # 10 duplicate title+content
        _rec("U11", "   "),  # 11 empty title after cleaning
        _rec("U12", "Content is null", content=None),  # 12 kept, title-only
        _rec("U13", "Bad targets", target_ind="nope"),  # 13 wrong type
        _rec("U14", "Mismatched", target_ind=[1], target_rel=[]),  # 14 mismatched
        _rec("U15", "Numeric content", content=42),  # 15 wrong type
        _rec("   ", "Empty uid"),  # 16 empty uid
        _rec("U17", "Last line without newline"),  # 17 kept
    ]
    src = tmp_path / "trn.json"
    src.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    stats = prepare(PrepareConfig(input=src, out=out), progress=False)
    assert stats["lines_read"] == 17
    assert stats["kept"] == 3
    reasons = {r["line"]: r["reason"] for r in _quarantine(out)}
    assert reasons == {
        2: "blank_line", 3: "malformed_json", 4: "wrong_type:title", 5: "missing_field:title",
        6: "invalid_utf8", 7: "not_an_object", 8: "line_too_long", 9: "duplicate_uid",
        10: "duplicate_title_content", 11: "empty_title", 13: "wrong_type:target_ind",
        14: "mismatched_targets", 15: "wrong_type:content", 16: "empty_uid",
    }
    long_row = next(r for r in _quarantine(out) if r["line"] == 8)
    assert long_row["raw_truncated_from_bytes"] > 2_000_000 and len(long_row["raw"]) <= 1000
    kept = [r for b in iter_corpus(out) for r in b.to_pylist()]
    assert [r["uid"] for r in kept] == ["U1", "U12", "U17"]
    assert [r["line"] for r in kept] == [1, 12, 17]
    assert kept[1]["has_content"] is False


def test_gzip_and_plain_give_identical_shards(tmp_path):
    gz = tmp_path / "trn.json.gz"
    gz.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    a = prepare(PrepareConfig(input=SAMPLE, out=tmp_path / "a"), progress=False)
    b = prepare(PrepareConfig(input=gz, out=tmp_path / "b"), progress=False)
    assert {k: v for k, v in a.items() if k not in ("input", "seconds")} == {k: v for k, v in b.items() if k not in ("input", "seconds")}
    assert open_corpus(tmp_path / "a").fingerprint == open_corpus(tmp_path / "b").fingerprint


def _write(name, data):
    def make(p):
        (p / name).write_bytes(data)
        return p / name

    return make


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.json", "no such file"),
        (lambda p: p, "is a directory"),
        (_write("empty.json", b""), "file is empty"),
        (_write("blank.json", b"\n\n  \n"), "only blank lines"),
        (_write("t.csv", b"uid,title\n1,x\n"), "unknown format"),
        (_write("bad.gz", b"\x1f\x8bnot really gzip"), "gzip"),
    ],
)
def test_unreadable_inputs_raise_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError, match=message) as exc:
        prepare(PrepareConfig(input=path, out=tmp_path / "out"), progress=False)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "out").exists()


def test_cli_reports_input_error_with_nonzero_exit(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "prepare", "--input", str(tmp_path / "nope.json"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr


def test_cli_prepare_prints_stats(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "amzqa", "prepare", "--input", str(SAMPLE), "--out", str(tmp_path / "c"),
                           "--no-progress"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "kept" in proc.stdout and "duplicate_uid" in proc.stdout


def test_existing_output_is_not_clobbered(tmp_path, sample_corpus):
    out = tmp_path / "c"
    prepare(PrepareConfig(input=SAMPLE, out=out), progress=False)
    with pytest.raises(ArtifactError, match="already exists"):
        prepare(PrepareConfig(input=SAMPLE, out=out), progress=False)
    prepare(PrepareConfig(input=SAMPLE, out=out, overwrite=True), progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_failed_run_leaves_no_output(tmp_path, monkeypatch):
    import amzqa.indexing.corpus as corpus

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(corpus._ShardWriter, "_write_group", boom)
    with pytest.raises(RuntimeError):
        prepare(PrepareConfig(input=SAMPLE, out=tmp_path / "c", shard_rows=10), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_shard_is_detected(tmp_path):
    out = tmp_path / "c"
    prepare(PrepareConfig(input=SAMPLE, out=out), progress=False)
    shard = open_corpus(out).shard_paths[0]
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="checksum"):
        open_corpus(out, verify=True)


def test_small_shards_keep_global_row_ids(tmp_path):
    out = tmp_path / "c"
    stats = prepare(PrepareConfig(input=SAMPLE, out=out, shard_rows=50), progress=False)
    info = open_corpus(out)
    assert len(info.shard_paths) == -(-stats["kept"] // 50)
    ids = [i for b in iter_corpus(out, columns=["row_id"]) for i in b.column(0).to_pylist()]
    assert ids == list(range(stats["kept"]))


@pytest.mark.parametrize("bad", [{"shard_rows": 0}, {"max_line_bytes": 10}, {"min_title_chars": 0}, {"max_content_chars": -1}])
def test_prepare_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        PrepareConfig(**bad)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    data = gzip.compress(SAMPLE.read_bytes())
    bad = tmp_path / "trn.json.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated after line \d+"):
        prepare(PrepareConfig(input=bad, out=tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()
