"""Every recipe under configs/ is a valid serialised config (litgpt config_hub style)."""

from pathlib import Path

import pytest

from amzqa.cli.recipes import config_class, kind_of_recipe
from amzqa.errors import ConfigError
from amzqa.indexing.corpus import PrepareConfig
from tests.conftest import ROOT

RECIPES = sorted(p for p in (ROOT / "configs").rglob("*.yaml") if p.parent.name != "accelerate")
ACCELERATE = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


def test_there_are_recipes():
    assert RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_loads_and_round_trips(path, tmp_path):
    cls = config_class(kind_of_recipe(path, ROOT / "configs"))
    cfg = cls.from_yaml(path)
    again = tmp_path / "again.yaml"
    again.write_text(cfg.to_yaml())
    assert cls.from_yaml(again) == cfg


def test_unknown_key_is_rejected(tmp_path):
    p = tmp_path / "prepare.yaml"
    p.write_text("shard_rowz: 10\n")
    with pytest.raises(ConfigError, match="shard_rowz"):
        PrepareConfig.from_yaml(p)


def test_describe_documents_every_field():
    text = PrepareConfig.describe()
    for name in ("shard_rows", "max_line_bytes", "min_title_chars"):
        assert name in text
    assert "(required)" not in text or "input" in text


def test_paths_are_coerced():
    cfg = PrepareConfig.from_dict({"input": "a/trn.json", "out": "b"})
    assert isinstance(cfg.input, Path)


def test_values_are_validated_by_type_with_the_field_and_file_named(tmp_path):
    from amzqa.training.config import TrainConfig

    recipe = tmp_path / "train.yaml"
    recipe.write_text("learning_rate: 2e-4\nmax_steps: '40'\n")  # PyYAML reads 2e-4 as a string
    cfg = TrainConfig.from_yaml(recipe)
    assert cfg.learning_rate == 0.0002 and isinstance(cfg.learning_rate, float) and cfg.max_steps == 40
    recipe.write_text("learning_rate: fast\nmax_steps: 1.5\nbf16: [1]\n")
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_yaml(recipe)
    message = str(err.value)
    assert str(recipe) in message and "learning_rate" in message and "max_steps" in message and "bf16" in message


@pytest.mark.parametrize("args, expected", [
    (["config", "check", "train"], "needs the recipe to check"),
    (["config", "check", "train", "nowhere.yaml"], "config file not found: nowhere.yaml"),
    (["config", "describe", "nope"], "invalid choice: 'nope'"),
])
def test_config_command_errors_are_clear(args, expected):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "amzqa", *args], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and expected in proc.stderr and "Traceback" not in proc.stderr


def test_config_check_prints_the_validated_recipe():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "amzqa", "config", "check", "train",
                           "configs/train/smollm2-135m-qlora.yaml"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and "learning_rate: 0.0004" in proc.stdout


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_load_with_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(str(path))
    assert cfg.num_processes >= 2 and cfg.mixed_precision == "bf16"


def test_replace_validates_like_a_recipe():
    from amzqa.generation.config import GenerationConfig

    cfg = GenerationConfig()
    assert cfg.replace(max_new_tokens="64").max_new_tokens == 64  # coerced as a recipe value is
    with pytest.raises(ConfigError, match="max_new_tokens"):
        cfg.replace(max_new_tokens="many")
    with pytest.raises(ConfigError, match="unknown key"):
        cfg.replace(max_new_tokenz=64)
    with pytest.raises(ConfigError):
        cfg.replace(temperature=-1.0)  # __post_init__ still runs
