"""mimalloc for the memory-heavy CPU processes (training, the demo's stages), where it is installed.

glibc's malloc keeps the memory torch frees between layers in its heap: one QLoRA step of SmolLM2-135M on a ~470-token
example holds ~500 MiB more than the tensors alive at its peak (``malloc_trim`` after the forward hands it back).
Making glibc return it (``MALLOC_MMAP_THRESHOLD_``/``MALLOC_TRIM_THRESHOLD_``) cut the peak by the same amount but made
every step ~75% slower (page faults); mimalloc (package ``cmeel-mimalloc``, MIT, in the ``train`` extra) reuses and
returns it at the same speed: training peak 1.99 -> 1.53 GiB, 4.8 s/step either way (README, issue #14). It can only
be chosen when a process starts (``LD_PRELOAD``), so a process re-executes itself once; ``AMZQA_ALLOCATOR=system``
keeps glibc's.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "AMZQA_ALLOCATOR"  # auto (default): mimalloc where installed; system: the C library's malloc


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
    """Restart this command (``python -m module args...``) on mimalloc, once; returns where it is not installed or
    already loaded. Call it before the heavy imports: nothing done before it survives."""
    if Path(sys.argv[0]).name not in ("amzqa", "__main__.py"):  # called from a library user's program: not ours
        return
    if mimalloc_loaded() or os.environ.get("_AMZQA_REEXEC") or mimalloc_library() is None:
        return
    log.info("restarting on mimalloc (%s=system keeps the C library's malloc)", ENV)
    env = with_mimalloc(dict(os.environ))
    env["_AMZQA_REEXEC"] = "1"  # never loop, even if the preload is refused
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]], env)


def release_heap() -> None:
    """Hand freed heap back to the OS (glibc keeps it otherwise; loading and quantising a model leave ~300 MiB)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
