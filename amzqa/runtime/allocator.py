"""mimalloc for a memory-heavy CPU training process, on request (``AMZQA_ALLOCATOR=mimalloc``; the demo's training
stage asks for it to stay within its 2 GB budget).

glibc's malloc keeps the memory torch frees between layers in its heap (``malloc_trim`` after a forward hands back
hundreds of MiB); making glibc return it (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``) costs page faults on
every step, while mimalloc (package ``cmeel-mimalloc``, MIT, in the ``train`` extra) reuses and returns it at the same
speed (measurements: docs/benchmarks.md). It can only be chosen when a process starts (``LD_PRELOAD``), so a process
re-executes itself once. Not the default: a GPU run gains nothing from it, a debugger loses the process it attached to,
and OpenVINO aborts under it.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "AMZQA_ALLOCATOR"  # unset or system (default): the C library's malloc; mimalloc: mimalloc where installed


def mimalloc_library(env: Mapping[str, str] | None = None) -> Path | None:
    """Path of libmimalloc.so from the ``cmeel-mimalloc`` wheel, or None (not installed, not Linux, or turned off in
    ``env``, default this process's environment)."""
    if (env if env is not None else os.environ).get(ENV, "auto") == "system" or not sys.platform.startswith("linux"):
        return None
    from importlib import metadata

    try:
        files = metadata.files("cmeel-mimalloc") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == "libmimalloc.so":
            path = Path(f.locate()).resolve()
            return path if path.exists() else None
    return None


def mimalloc_loaded() -> bool:
    """Whether this process runs on mimalloc (preloaded)."""
    try:
        return "libmimalloc" in Path("/proc/self/maps").read_text()
    except OSError:
        return False


def with_mimalloc(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a child process that should start on mimalloc (unchanged where it is not installed)."""
    lib = mimalloc_library(env)
    if lib is None:
        return env
    preload = [p for p in env.get("LD_PRELOAD", "").split(":") if p and "libmimalloc" not in p]
    return {**env, "LD_PRELOAD": ":".join([str(lib), *preload])}


def reexec_with_mimalloc(module: str = "amzqa") -> None:
    """Restart this command (``python -m module args...``) on mimalloc, once, where ``AMZQA_ALLOCATOR=mimalloc`` asks
    for it; returns otherwise, or where it is not installed or already loaded. Call it before the heavy imports:
    nothing done before it survives."""
    if Path(sys.argv[0]).name not in ("amzqa", "__main__.py"):  # called from a library user's program: not ours
        return
    if os.environ.get(ENV) != "mimalloc" or mimalloc_loaded() or os.environ.get("_AMZQA_REEXEC"):
        return
    if mimalloc_library() is None:
        log.warning("%s=mimalloc but cmeel-mimalloc is not installed (pip install 'amzqa[train]'): using the C "
                    "library's malloc", ENV)
        return
    log.info("restarting on mimalloc (%s=mimalloc)", ENV)
    env = with_mimalloc(dict(os.environ))
    env["_AMZQA_REEXEC"] = "1"  # never loop, even if the preload is refused
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def release_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps what loading and quantising a model leave)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
