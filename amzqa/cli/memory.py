"""Memory of a process and everything it started, sampled while it runs.

``/usr/bin/time`` and ``wait4`` report the largest single process's resident set; a stage that starts helpers (an
engine's export venv, a server) uses their sum, counted here as PSS so that pages shared with a fork count once.
The demo prints both (Linux ``/proc``; elsewhere the sum reads 0).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def children_map() -> dict[int, list[int]]:
    """parent pid -> child pids, from ``/proc/*/stat``."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces or parentheses
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size: resident memory with each page shared by n processes counted 1/n in each. Summing
    RSS instead counts a forked helper's pages twice (a stage's tree read 4.6 GB by RSS: the export's short-lived
    forks, each showing its parent's memory)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, IndexError, ValueError):
        pass
    return rss_mib(pid)


def tree_pss_mib(pid: int) -> float:
    """Memory of ``pid`` and all its descendants now (MiB, PSS)."""
    tree, todo, total = children_map(), [pid], 0.0
    while todo:
        p = todo.pop()
        total += pss_mib(p)
        todo.extend(tree.get(p, ()))
    return total


class TreeSampler:
    """``with TreeSampler(pid) as s: ...`` samples the tree's memory (PSS) every ``every`` seconds;
    ``s.peak_mib`` is the largest sum seen."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid, self.every, self.peak_mib = pid, every, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, tree_pss_mib(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
