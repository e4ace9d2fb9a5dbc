"""Peak memory: the allocator training starts on, the process-tree sampler, and the demo's one process per stage."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amzqa.cli.memory import TreeSampler
from amzqa.runtime.allocator import ENV, mimalloc_library, with_mimalloc

ROOT = Path(__file__).resolve().parent.parent
LOADED = "from amzqa.runtime.allocator import mimalloc_loaded; print(mimalloc_loaded())"


def python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_a_child_started_with_mimalloc_runs_on_it_and_system_keeps_glibc():
    if mimalloc_library() is None:
        pytest.skip("cmeel-mimalloc is not installed (extra train)")
    env = {k: v for k, v in os.environ.items() if k != ENV}
    assert python(LOADED, env) == "False"
    preloaded = with_mimalloc({**env, "LD_PRELOAD": "/nonexistent/other.so"})
    assert preloaded["LD_PRELOAD"].split(":")[0].endswith("libmimalloc.so")
    assert "/nonexistent/other.so" in preloaded["LD_PRELOAD"]  # a preload the user set is kept
    assert python(LOADED, with_mimalloc(env)) == "True"
    assert with_mimalloc({**env, ENV: "system"}) == {**env, ENV: "system"}


def test_the_tree_sampler_counts_what_children_hold():
    """A child holding 200 MiB starts a grandchild holding 300 MiB: wait4 reports the larger process (as
    /usr/bin/time does), the sampler their sum."""
    code = ("import subprocess, sys; a = bytearray(200 << 20); subprocess.run([sys.executable, '-c', "
            "'import time; b = bytearray(300 << 20); time.sleep(1.5)'])")
    proc = subprocess.Popen([sys.executable, "-c", code])
    with TreeSampler(proc.pid, every=0.1) as tree:
        _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert usage.ru_maxrss / 1024 >= 300  # (a fork of a large parent starts at its size: no upper bound here)
    assert tree.peak_mib >= 500  # more than any one of them holds


def amzqa(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "amzqa", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


def test_a_demo_stage_without_the_earlier_ones_says_what_to_run(tmp_path):
    proc = amzqa("demo", "--stage", "compare", "--workdir", tmp_path / "w", "--no-progress")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "needs" in proc.stderr and "run the earlier stages first" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # ~32 s: the demo stages, each a process (make test-slow; CI runs it)
def test_the_demo_runs_each_stage_in_its_own_process_and_reports_their_peaks(tmp_path):
    """The answering half of the demo (prepare, index, search, ask): each stage a process, each one's peak printed."""
    work = tmp_path / "w"
    proc = amzqa("demo", "--no-finetune", "--workdir", work, "--reports", tmp_path / "r", "--no-progress", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    summary = out.split("peak memory of each stage's process")[1]
    rows = re.findall(r"^  (\S+) +([\d,]+) resident \(largest process\) +([\d,]+) PSS", summary, re.M)
    assert [r[0] for r in rows] == ["prepare", "index", "search", "ask"]
    for _, own, tree in rows:
        assert 20 < float(own.replace(",", "")) < 4000 and 20 < float(tree.replace(",", "")) < 4000
    assert out.count("citations: [") >= 4  # answers with checked citations
    assert (work / "qa.json").is_file() and (work / "artifacts" / "manifest.json").is_file()
