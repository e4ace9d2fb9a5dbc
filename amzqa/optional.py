"""Lazy imports of optional heavy dependencies with an error that names the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from amzqa.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` telling which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'amzqa[{extra}]'"
        ) from exc
