"""Which config class each YAML recipe under ``configs/`` holds: the map from a stage name to its config.

It names build-time classes (indexing, training) as well as query-time ones, so only the shells (CLI, demo,
tests) import it; the core never does.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from amzqa.config import Config
from amzqa.errors import ConfigError

# Which config class a recipe under configs/ holds: configs/<kind>.yaml or configs/<kind>/<name>.yaml.
CONFIG_KINDS: dict[str, str] = {
    "prepare": "amzqa.indexing.corpus:PrepareConfig",
    "synth": "amzqa.indexing.synth:SynthConfig",
    "index": "amzqa.indexing.build:IndexConfig",
    "train": "amzqa.training.config:TrainConfig",
    "sft": "amzqa.training.sft_data:SFTDataConfig",
    "generation": "amzqa.generation.config:GenerationConfig",
    "serve": "amzqa.runtime.serve:ServeConfig",
}


def config_class(kind: str) -> type[Config]:
    try:
        module, name = CONFIG_KINDS[kind].split(":")
    except KeyError:
        raise ConfigError(f"unknown config kind {kind!r}; known: {sorted(CONFIG_KINDS)}") from None
    return getattr(importlib.import_module(module), name)


def kind_of_recipe(path: Path, root: Path) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem.split("-")[0]
