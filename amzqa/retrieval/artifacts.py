"""Reading and validating an index artifact folder (written by :func:`amzqa.indexing.build.build_index`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amzqa.errors import ArtifactError
from amzqa.io.atomic import sha256_file, write_json_atomic
from amzqa.io.layout import INDEX_FORMAT, MANIFEST

ARTIFACT_FORMAT = INDEX_FORMAT


SMALL_FILE_BYTES = 1 << 20  # files up to this size are checksummed on every load; larger ones by size


def manifest_seal(manifest: dict[str, Any]) -> str:
    """The checksum of everything in a manifest but the seal itself (canonical JSON)."""
    body = {k: v for k, v in manifest.items() if k != "sealed"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def seal(folder: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the checksum and size of every file in ``folder`` (the manifest aside) and seal the manifest; write it.

    Only build time calls this, on a private folder that is then swapped into place (or a revised copy)."""
    folder = Path(folder)
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {**manifest, "files": {n: sha256_file(folder / n) for n in names},
                "sizes": {n: (folder / n).stat().st_size for n in names}}
    manifest["sealed"] = manifest_seal(manifest)
    write_json_atomic(folder / MANIFEST, manifest)
    return manifest


def verify(path: Path, manifest: dict[str, Any], full: bool = False) -> None:
    """Refuse an edited manifest, a missing or resized file, and a changed small file (named, with the fix).

    Loading checksums only files up to ``SMALL_FILE_BYTES`` (the vectors of a full catalog are GBs); ``full`` checksums
    every file (``amzqa verify``)."""
    if manifest.get("sealed") != manifest_seal(manifest):
        raise ArtifactError(f"{path / MANIFEST} was changed after the index was built (its seal does not match its "
                            f"content); rebuild the index with amzqa index, or restore the original manifest")
    sizes = manifest.get("sizes", {})
    for name, digest in manifest.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(f"{path}: {name} is missing; rebuild the index")
        size = f.stat().st_size
        if size != sizes.get(name):
            raise ArtifactError(f"{f}: {size} bytes, the manifest sealed {sizes.get(name)}; the file was changed after "
                                "the build: rebuild the index")
        if (full or size <= SMALL_FILE_BYTES) and sha256_file(f) != digest:
            raise ArtifactError(f"{f} does not match the checksum sealed in {MANIFEST}: it was changed after the build; "
                                "rebuild the index (or rerun amzqa calibrate for fusion.json)")


def current_seal(path: str | Path) -> str | None:
    """The seal of the index version in the folder ``path`` now (None if there is none): it changes with every build
    and update, so a long-running reader can tell when to load again."""
    try:
        return json.loads((Path(path) / MANIFEST).read_text(encoding="utf-8")).get("sealed")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


@dataclass
class Artifacts:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, corpus_fingerprint: str | None = None) -> Artifacts:
        """Open ``path`` and verify its seal; with ``corpus_fingerprint`` (of a prepared corpus), also check the index
        was built from that corpus."""
        path = Path(path)
        man_path = path / MANIFEST
        if not man_path.is_file():
            hint = " (an interrupted build; run amzqa index again to resume it)" if Path(f"{path}.partial").exists() else ""
            raise ArtifactError(f"{path}: no index artifact here{hint}; build one with: amzqa index --corpus DIR --out {path}")
        try:
            manifest = json.loads(man_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{man_path}: not valid JSON ({exc}); rebuild the index") from None
        if manifest.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"{path}: artifact format {manifest.get('format')!r}; this amzqa reads {ARTIFACT_FORMAT!r}: "
                                f"rebuild it with amzqa index --overwrite")
        verify(path, manifest)
        arts = cls(path, manifest)
        if corpus_fingerprint is not None:
            arts.check_corpus(corpus_fingerprint)
        return arts

    def seal_now(self) -> str | None:
        """The seal of the manifest in the folder now (another build's after a swap; None if it is gone)."""
        return current_seal(self.path)

    @property
    def embedding(self) -> dict[str, Any]:
        return self.manifest["embedding"]

    def check_corpus(self, fingerprint: str) -> None:
        """Refuse an index built from another prepared corpus than the one with ``fingerprint``."""
        want = self.manifest["corpus"]["fingerprint"]
        if fingerprint != want:
            raise ArtifactError(
                f"{self.path} was built from a different corpus (fingerprint {want[:12]}, {self.manifest['corpus']['rows']} "
                f"rows) than the one given (fingerprint {fingerprint[:12]}); rebuild with amzqa index"
            )

    def check_embedder(self, embedder) -> None:
        """Refuse a query embedder that differs from the one the index was built with."""
        from amzqa.retrieval.embedding import model_fingerprint

        emb = self.embedding
        got = model_fingerprint(embedder.path)
        problems = []
        if got != emb["fingerprint"]:
            problems.append(f"model {embedder.model_id!r} (fingerprint {got}) != {emb['model_id']!r} (fingerprint {emb['fingerprint']})")
        if embedder.dim != emb["dim"]:
            problems.append(f"dimension {embedder.dim} != {emb['dim']}")
        if embedder.backend != emb["backend"]:
            problems.append(f"backend {embedder.backend!r} != {emb['backend']!r}")
        if problems:
            raise ArtifactError(f"{self.path}: the index was built with another embedding model: " + "; ".join(problems))
