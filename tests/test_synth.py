import gzip
import json
import statistics

from amzqa.indexing.corpus import PrepareConfig, prepare
from amzqa.indexing.synth import SynthConfig, iter_records, synth


def test_same_seed_gives_identical_bytes(tmp_path):
    a = synth(SynthConfig(n=3000, out=tmp_path / "a.json.gz", seed=3), progress=False)
    b = synth(SynthConfig(n=3000, out=tmp_path / "b.json.gz", seed=3), progress=False)
    c = synth(SynthConfig(n=3000, out=tmp_path / "c.json.gz", seed=4), progress=False)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_records_have_the_trn_json_shape(tmp_path):
    path = synth(SynthConfig(n=500, out=tmp_path / "t.json"), progress=False)
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        assert list(rec) == ["uid", "title", "content", "target_ind", "target_rel"]
        assert isinstance(rec["uid"], str) and len(rec["uid"]) == 10
        assert len(rec["target_ind"]) == len(rec["target_rel"])
        assert all(r == 1.0 for r in rec["target_rel"])


def test_distribution_matches_real_file_facts():
    recs = list(iter_records(SynthConfig(n=40_000, seed=1)))
    n = len(recs)
    empty_title = sum(not r["title"] for r in recs) / n
    empty_content = sum(not r["content"] for r in recs) / n
    assert abs(empty_title - 0.056) < 0.01
    assert abs(empty_content - 0.333) < 0.02
    titles = sorted(len(r["title"]) for r in recs if r["title"])
    contents = sorted(len(r["content"]) for r in recs if r["content"])
    q = lambda xs, p: xs[int(p * (len(xs) - 1))]  # noqa: E731
    assert 46 <= statistics.median(titles) <= 62  # real: 54
    assert 30 <= q(titles, 0.25) <= 44 and 66 <= q(titles, 0.75) <= 84  # real: 37-75
    assert 340 <= statistics.median(contents) <= 460  # real: 398
    assert 160 <= q(contents, 0.25) <= 230 and 700 <= q(contents, 0.75) <= 920  # real: 194-805
    seen, dup = set(), 0
    for r in recs:
        if r["content"]:
            dup += r["content"] in seen
            seen.add(r["content"])
    assert 0.02 < dup / n < 0.06  # real: 81,091 / 2,248,619 = 3.6%
    assert any("&amp;" in r["title"] or "&#" in r["content"] for r in recs)
    assert any("<" in r["content"] for r in recs)
    assert any(not r["title"].isascii() or not r["content"].isascii() for r in recs)


def test_synthetic_catalog_goes_through_prepare(tmp_path):
    path = synth(SynthConfig(n=5000, out=tmp_path / "trn.json.gz"), progress=False)
    with gzip.open(path) as f:
        assert sum(1 for _ in f) == 5000
    stats = prepare(PrepareConfig(input=path, out=tmp_path / "c"), progress=False)
    assert stats["lines_read"] == 5000 == stats["kept"] + sum(stats["dropped"].values())
    assert stats["dropped"]["empty_title"] > 0 and stats["dropped"]["duplicate_title_content"] > 0


def test_products_carry_rare_words_shared_by_title_and_description():
    """Retrievability comes from a long tail of product-specific words, as in real catalogs."""
    import re

    recs = list(iter_records(SynthConfig(n=20_000, seed=2)))
    titles = [r["title"] for r in recs if r["title"]]
    assert len(set(titles)) / len(titles) > 0.95  # not millions of near-identical stock titles
    vocab = {w.casefold() for t in titles for w in re.findall(r"\w+", t)}
    assert len(vocab) > 10_000
    both = [r for r in recs if r["title"] and r["content"]]
    words = lambda text: {w.casefold() for w in re.findall(r"\w+", text) if len(w) > 3}  # noqa: E731
    shared = sum(bool(words(r["title"]) & words(r["content"])) for r in both) / len(both)
    assert 0.4 < shared < 0.95  # 100 real records: 0.59
