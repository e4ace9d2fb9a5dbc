"""Helpers shared by the benchmark scripts: run a command in a child process, measure wall time and peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_measured(code: str, *args: str) -> tuple[float, float, str]:
    """Run ``python -c code args`` in a fresh process; return (seconds, peak RSS in MiB, stdout)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), AMZQA_PROGRESS="0")
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"benchmark child failed ({proc.returncode}): {code[:80]}")
    return seconds, usage.ru_maxrss / 1024, out


def artifacts_for(path: Path | None, work: str = "bench-ask") -> Path:
    """``path`` if it is an index, else the bundled sample catalog indexed once under runs/WORK."""
    from amzqa.io.layout import MANIFEST

    if path and (path / MANIFEST).is_file():
        return path
    from amzqa.indexing.build import IndexConfig, build_index
    from amzqa.indexing.corpus import PrepareConfig, prepare

    work_dir = ROOT / "runs" / work
    if not (work_dir / "artifacts" / MANIFEST).is_file():
        prepare(PrepareConfig(input=ROOT / "indexing" / "sample" / "trn.json", out=work_dir / "corpus", overwrite=True),
                progress=False)
        build_index(IndexConfig(corpus=work_dir / "corpus", out=work_dir / "artifacts", overwrite=True), progress=False)
    return work_dir / "artifacts"


def print_machine() -> None:
    """Every benchmark's first line: the CPU and its vector ISA (figures from another CPU are not comparable)."""
    from amzqa.runtime.machine import describe_cpu

    print(f"CPU: {describe_cpu()}", flush=True)


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table (pastes straight into docs/benchmarks.md)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
