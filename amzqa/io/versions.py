"""Versions of the libraries that shape an artifact, recorded in every manifest."""

from __future__ import annotations

import importlib.metadata
import platform

_TRACKED = ("amzqa", "torch", "transformers", "sentence-transformers", "faiss-cpu", "bm25s", "peft", "trl",
            "bitsandbytes", "onnxruntime", "pyarrow", "datasets")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TRACKED:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
