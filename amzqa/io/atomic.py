"""Atomic writes: a reader sees either the old artifact or the complete new one, never half of it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from amzqa.errors import ArtifactError
from amzqa.io.layout import ADAPTER_PROVENANCE, EXPORT_MANIFEST, MANIFEST

# Files that mark a folder as one amzqa wrote (beside a ``manifest.json`` whose format starts with "amzqa-"): an
# adapter's provenance, an export's manifest, a merged or provisioned model's note (amzqa.models.PROVENANCE).
ARTIFACT_MARKERS = (ADAPTER_PROVENANCE, EXPORT_MANIFEST, "amzqa_model.json")


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; rename it into place only if the block succeeds.

    The temporary folder sits in the same parent so the final rename stays on one filesystem.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise ArtifactError(f"{target} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    check_replaceable(target)  # before any work: a folder amzqa did not write is never replaced
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        check_replaceable(target)  # again: the block may have run for hours; a link or files may have appeared
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_dir(tmp, target)


def artifact_marker(folder: str | os.PathLike, markers: tuple[str, ...] = ()) -> str | None:
    """What marks ``folder`` as an artifact amzqa wrote (a ``manifest.json`` with an amzqa format, one of
    :data:`ARTIFACT_MARKERS` or of ``markers``, or nothing but ONNX graphs: the embedder's export cache); None if
    nothing does."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            fmt = json.loads(manifest.read_text(encoding="utf-8")).get("format")
        except (OSError, ValueError, AttributeError):
            fmt = None
        if isinstance(fmt, str) and fmt.startswith("amzqa-"):
            return f"{MANIFEST} ({fmt})"
    for name in (*ARTIFACT_MARKERS, *markers):
        if (folder / name).exists():
            return name
    entries = list(folder.iterdir())
    if entries and all(p.is_file() and p.name.endswith((".onnx", ".onnx.data")) for p in entries):
        return "ONNX graphs"
    return None


def check_replaceable(target: str | os.PathLike, markers: tuple[str, ...] = ()) -> None:
    """Refuse to replace or delete ``target`` unless it is absent, an empty folder, or a folder amzqa wrote
    (:func:`artifact_marker`): ``--overwrite`` with a mistyped ``--out`` must not remove someone's files. A symbolic
    link is refused too: the swap would replace the link itself with a folder, not what it points to."""
    target = Path(target)
    if target.is_symlink():
        raise ArtifactError(f"{target} is a symbolic link (to {os.readlink(target)}): amzqa replaces a folder with one "
                            f"rename, which would replace the link itself; give the folder it points to "
                            f"({target.resolve()}) or remove the link")
    if not target.exists():
        return
    if not target.is_dir():
        raise ArtifactError(f"{target} is a file, not a folder amzqa wrote; refusing to replace it")
    if not any(target.iterdir()) or artifact_marker(target, markers):
        return
    names = ", ".join((f"{MANIFEST} with an amzqa format", *ARTIFACT_MARKERS, *markers))
    raise ArtifactError(f"refusing to replace {target}: it is not empty and holds no amzqa artifact (none of {names}); "
                        "--overwrite replaces only an empty folder or one amzqa wrote. Move its files away or choose "
                        "another folder")


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux renameat2(RENAME_EXCHANGE); False where the system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # not glibc >= 2.28
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


def swap_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the complete folder ``new`` at ``target``. An existing ``target`` is exchanged with ``new`` in one
    rename (readers see the old folder or the new one, never none) and then removed; where the filesystem cannot
    exchange, it is moved aside first (a moment without ``target``, never a half-written one)."""
    new, target = Path(new), Path(target)
    check_replaceable(target)  # the last line of defence for callers that checked nothing (or a link made since)
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the old folder
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def revise_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a copy of the sealed folder ``target`` (hard links: files are only ever replaced, never edited in
    place) to change and re-seal; it replaces ``target`` atomically only if the block succeeds."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        shutil.copytree(target, tmp, copy_function=os.link, dirs_exist_ok=True)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_dir(tmp, target)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
