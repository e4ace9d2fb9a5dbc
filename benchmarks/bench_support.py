"""The support check (amzqa.grounding.support.judge) against hand-labelled (sentence, source, supported?) pairs, beside the word-
overlap check it replaced (``support(sentence, source) >= 0.5``, which let every cited sentence stand).

    python benchmarks/bench_support.py                        # measure on tests/fixtures/support_pairs.jsonl
    python benchmarks/bench_support.py extract REPORT.json... --store runs/demo/artifacts --out pairs.jsonl

``extract`` takes the raw answers that ``amzqa eval generation`` recorded (rows' ``raw`` and ``sources``) and writes
one candidate pair per answer sentence: the source it cites (each cited source), or, for a sentence without a marker,
the source that shares most of its words, to be labelled by hand. The labelled file's ``split`` field keeps a test
half the rules were not tuned on (``test``), a later one labelled from the holdout question set's answers and never
used to change them (``holdout``); every split is reported, with 95% bootstrap intervals.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "support_pairs.jsonl"


def extract(reports: list[Path], store_dir: Path, out: Path) -> int:
    from amzqa.answer.citations import is_hedge
    from amzqa.grounding.support import claim_text, states_something
    from amzqa.grounding.text import content_words, split_sentences
    from amzqa.retrieval.store import ProductStore

    store = ProductStore(store_dir)
    seen, pairs = set(), []
    for report in reports:
        data = json.loads(report.read_text())
        for system, rows in data["rows"].items():
            for row in rows:
                raw, uids = row.get("raw"), row.get("sources")
                if not raw or not uids:
                    continue
                sources = [store.by_uid(u) for u in uids]
                for sentence in split_sentences(raw):
                    if is_hedge(sentence) or not states_something(sentence):
                        continue
                    cited = [int(n) for n in re.findall(r"\[(\d+)\]", sentence) if 1 <= int(n) <= len(sources)]
                    if not cited:
                        words = content_words(claim_text(sentence))
                        cited = [1 + max(range(len(sources)), key=lambda i: len(words & content_words(
                            f"{sources[i].title} {sources[i].content}")))]
                    for n in dict.fromkeys(cited):
                        key = (claim_text(sentence), sources[n - 1].uid)
                        if key in seen:
                            continue
                        seen.add(key)
                        p = sources[n - 1]
                        pairs.append({"model": system, "question": row.get("asked") or row["question"], "sentence": sentence,
                                      "uid": p.uid, "title": p.title, "content": p.content,
                                      "marker_written": bool(re.search(rf"\[{n}\]", sentence))})
    with open(out, "w", encoding="utf-8") as f:
        for i, p in enumerate(pairs):
            f.write(json.dumps({"id": i, **p}, ensure_ascii=False) + "\n")
    return len(pairs)


def load(path: Path = FIXTURE) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def verdicts(pairs: list[dict]) -> dict[str, list[bool]]:
    from amzqa.answer.citations import SUPPORT_THRESHOLD, support
    from amzqa.grounding.support import judge
    from amzqa.records import Product

    products = [Product(0, p["uid"], p["title"], p["content"]) for p in pairs]
    return {"judge (rules)": [judge(p["sentence"], pr).supported for p, pr in zip(pairs, products)],
            "word overlap >= 0.5 (before)": [support(p["sentence"], pr) >= SUPPORT_THRESHOLD for p, pr in zip(pairs, products)]}


def precision_recall(pred: list[bool], gold: list[bool], idx=None) -> tuple[float, float]:
    pred, gold = np.asarray(pred), np.asarray(gold)
    if idx is not None:
        pred, gold = pred[idx], gold[idx]
    tp = float(np.sum(pred & gold))
    return tp / max(1, int(pred.sum())), tp / max(1, int(gold.sum()))


def measure(pairs: list[dict], b: int = 2000, seed: int = 0) -> str:
    gold = [bool(p["label"]) for p in pairs]
    rng = np.random.default_rng(seed)
    lines = ["| pairs | checker | precision of 'supported' | recall of 'supported' |", "|---|---|---|---|"]
    for split in ("test", "holdout", "dev", "all"):
        idx = np.array([i for i, p in enumerate(pairs) if split == "all" or p.get("split") == split])
        if not len(idx):
            continue
        g = [gold[i] for i in idx]
        for name, pred in verdicts([pairs[i] for i in idx]).items():
            p, r = precision_recall(pred, g)
            draws = [precision_recall(pred, g, rng.integers(0, len(idx), len(idx))) for _ in range(b)]
            ci = np.percentile(np.array(draws), [2.5, 97.5], axis=0)
            lines.append(f"| {split} ({len(idx)}, {sum(g)} supported) | {name} | {p:.3f} [{ci[0][0]:.3f}, {ci[1][0]:.3f}] "
                         f"| {r:.3f} [{ci[0][1]:.3f}, {ci[1][1]:.3f}] |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    ex = sub.add_parser("extract", help="candidate pairs from eval reports' raw answers")
    ex.add_argument("reports", nargs="+", type=Path)
    ex.add_argument("--store", type=Path, required=True, help="the index folder the reports were run on")
    ex.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=Path, default=FIXTURE)
    ap.add_argument("--show-errors", action="store_true", help="list the pairs the rules get wrong")
    args = ap.parse_args(argv)
    if args.cmd == "extract":
        print(f"{extract(args.reports, args.store, args.out)} pairs -> {args.out}")
        return 0
    from amzqa.runtime.machine import describe_cpu

    pairs = load(args.pairs)
    print(f"# support check on {len(pairs)} hand-labelled pairs ({args.pairs.name}); CPU: {describe_cpu()}\n")
    print(measure(pairs))
    if args.show_errors:
        from amzqa.grounding.support import judge
        from amzqa.records import Product

        for p in pairs:
            v = judge(p["sentence"], Product(0, p["uid"], p["title"], p["content"]))
            if v.supported != bool(p["label"]):
                print(f"\n[{p['id']}] gold={p['label']} rules={v.supported} ({v.reason}) {p['sentence']!r}\n    {p['title']}: {p['content'][:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
