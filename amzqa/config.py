"""Typed configs: one dataclass per stage, serialised as YAML recipes under ``configs/``.

Every field carries its documentation in ``metadata["help"]``; ``__post_init__`` of each stage config
rejects contradictions. Recipes are loaded with :meth:`Config.from_yaml`, which refuses unknown keys so a
typo in a recipe is an error rather than a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from amzqa.errors import ConfigError

C = TypeVar("C", bound="Config")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    # pydantic's lax mode: "2e-4" (PyYAML reads it as a string) becomes 0.0002, "3" becomes 3, "runs/x" a Path;
    # "abc" for a float, 1.5 for an int or a list for a string is refused with the field named.
    return TypeAdapter(hint)


def doc(help: str, default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A dataclass field with its help text attached (shown by ``amzqa config show``)."""
    if default is not dataclasses.MISSING and isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


@dataclasses.dataclass
class Config:
    """Base class of stage configs: dict/YAML round-trip with strict keys."""

    @classmethod
    def _validated(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with every value checked against (and coerced to) its field's type; unknown keys refused."""
        data = dict(data)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
        problems = []
        for key, value in list(data.items()):
            try:
                data[key] = _adapter(_hints(cls)[key]).validate_python(value)
            except ValidationError as exc:
                reason = "; ".join(e["msg"] for e in exc.errors())
                problems.append(f"{key}: {reason} (got {value!r})")
        if problems:
            raise ConfigError(f"{cls.__name__}: " + "; ".join(problems))
        return data

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None) -> C:
        data = cls._validated(data or {})
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}: {exc}") from exc

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, **overrides: Any) -> C:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, Path) else value
        return out

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self: C, **changes: Any) -> C:
        """A copy with ``changes``, validated like a recipe (types, unknown keys, then ``__post_init__``)."""
        return dataclasses.replace(self, **self._validated(changes))

    @classmethod
    def describe(cls) -> str:
        """One line per field: name, default and help — the reference for recipe authors."""
        lines = [f"{cls.__name__}:"]
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)"
            )
            lines.append(f"  {f.name} = {default!r}\n      {f.metadata.get('help', '')}")
        return "\n".join(lines)
