"""Reading and validating an index artifact folder (written by :func:`indexing.build.build_index`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amzqa.errors import ArtifactError

ARTIFACT_FORMAT = "amzqa-index/1"
MANIFEST = "manifest.json"


@dataclass
class Artifacts:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, corpus: str | Path | None = None) -> Artifacts:
        """Open ``path``; with ``corpus``, also check the index was built from that prepared corpus."""
        path = Path(path)
        man_path = path / MANIFEST
        if not man_path.is_file():
            hint = " (an interrupted build; run amzqa index again to resume it)" if Path(f"{path}.partial").exists() else ""
            raise ArtifactError(f"{path}: no index artifact here{hint}; build one with: amzqa index --corpus DIR --out {path}")
        manifest = json.loads(man_path.read_text(encoding="utf-8"))
        if manifest.get("format") != ARTIFACT_FORMAT:
            raise ArtifactError(f"{path}: artifact format {manifest.get('format')!r}; this amzqa reads {ARTIFACT_FORMAT!r}")
        for name in manifest.get("files", {}):
            if not (path / name).exists():
                raise ArtifactError(f"{path}: {name} is missing; rebuild the index")
        arts = cls(path, manifest)
        if corpus is not None:
            arts.check_corpus(corpus)
        return arts

    @property
    def embedding(self) -> dict[str, Any]:
        return self.manifest["embedding"]

    def check_corpus(self, corpus: str | Path) -> None:
        from indexing.corpus import open_corpus

        info = open_corpus(corpus)
        want = self.manifest["corpus"]["fingerprint"]
        if info.fingerprint != want:
            raise ArtifactError(
                f"{self.path} was built from a different corpus (fingerprint {want[:12]}, {self.manifest['corpus']['rows']} rows) "
                f"than {corpus} (fingerprint {info.fingerprint[:12]}, {info.rows} rows); rebuild with amzqa index"
            )

    def check_embedder(self, embedder) -> None:
        """Refuse a query embedder that differs from the one the index was built with."""
        from amzqa.embedding import model_fingerprint

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
