"""The generator interface: ``generate(prompt) -> str`` and ``stream(prompt) -> Iterator[str]``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from amzqa.generation.prompt import Prompt


@runtime_checkable
class Generator(Protocol):
    name: str

    def generate(self, prompt: Prompt) -> str: ...

    def stream(self, prompt: Prompt) -> Iterator[str]: ...
