"""The demo job behind ``make demo``: the main flow end to end on the bundled sample catalog."""

from __future__ import annotations

import logging
from pathlib import Path

from amzqa.cli import format_stats

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).resolve().parent.parent / "indexing" / "sample" / "trn.json"


def sample_catalog() -> Path:
    """Path of the bundled hand-written sample catalog (trn.json format, messy on purpose)."""
    return SAMPLE


def run_demo(workdir: Path, progress: bool | None = None) -> None:
    from indexing.corpus import PrepareConfig, prepare

    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / "corpus"
    print(f"== 1. prepare: {SAMPLE} -> {corpus}")
    stats = prepare(PrepareConfig(input=SAMPLE, out=corpus, overwrite=True), progress=progress)
    print(format_stats(stats, corpus))
