"""The baseline of issue #2: what peer projects do — pandas read_json(lines=True), then row-wise cleaning."""

import html
import re
import sys
import time
import unicodedata

import pandas as pd

TAG = re.compile(r"<[^>]+>")


def clean(s):
    s = html.unescape(html.unescape(s or ""))
    s = TAG.sub(" ", s)
    s = unicodedata.normalize("NFC", s)
    return " ".join(s.split())


def main(path: str) -> None:
    t = time.perf_counter()
    df = pd.read_json(path, lines=True, dtype=False)
    cleaned = df.apply(lambda r: pd.Series({"title": clean(r["title"]), "content": clean(r["content"])}), axis=1)
    df["title"], df["content"] = cleaned["title"], cleaned["content"]
    df = df[df.title != ""].drop_duplicates("uid").drop_duplicates(["title", "content"])
    df.to_parquet(path + ".naive.parquet")
    print(f"kept={len(df)} seconds={time.perf_counter() - t:.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
