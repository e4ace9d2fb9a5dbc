"""``amzqa merge``: fold a LoRA adapter into 16-bit base weights for export (a plain transformers checkpoint).

The adapter was trained on a 4-bit base, but merging into 4-bit weights degrades outputs (peft#2321): the base
is reloaded in 16 bits (bfloat16 by default) and the merge happens there.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from amzqa.errors import ConfigError
from amzqa.generation.hf import check_adapter
from amzqa.io.atomic import atomic_dir, write_json_atomic
from amzqa.io.layout import ABSTENTION_CALIBRATION, ADAPTER_PROVENANCE
from amzqa.models import resolve_model

log = logging.getLogger(__name__)
DTYPES = ("bfloat16", "float16", "float32")


def load_adapter_model(adapter: str | Path, dtype: str = "bfloat16", base: str | None = None):
    """The 16-bit base with the adapter applied (not merged): the reference the merged model must match."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {DTYPES}")
    prov = json.loads((Path(adapter) / ADAPTER_PROVENANCE).read_text()) if (Path(adapter) / ADAPTER_PROVENANCE).is_file() else {}
    base_path = resolve_model(base or prov.get("base_model") or "smollm2")
    check_adapter(adapter, base_path)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=getattr(torch, dtype))
    return PeftModel.from_pretrained(model, str(adapter)).eval(), base_path, prov


def merge_adapter(adapter: str | Path, out: str | Path, dtype: str = "bfloat16", base: str | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    from transformers import AutoTokenizer

    model, base_path, prov = load_adapter_model(adapter, dtype, base)
    merged = model.merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(adapter if (Path(adapter) / "tokenizer.json").is_file() else base_path)
    info = {"merged_from": {"adapter": str(adapter), "base": base_path, "dtype": dtype}, "adapter_provenance": prov}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json_atomic(tmp / "amzqa_model.json", info)
        calibration = Path(adapter) / ABSTENTION_CALIBRATION
        if calibration.is_file():  # the threshold belongs to these weights: the merged model keeps it
            shutil.copy2(calibration, tmp / ABSTENTION_CALIBRATION)
    log.info("merged %s into %s (%s)", adapter, out, dtype)
    return info
