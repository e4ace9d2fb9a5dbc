"""``amzqa train``: QLoRA fine-tuning with trl's SFTTrainer + peft LoRA (all linear layers) + bitsandbytes NF4.

Loss is on the answer tokens only (prompt-completion data; a chat template whose prompt is not a prefix of the
training text is refused before training, and every batch is checked to hold unmasked labels, so a template mismatch
cannot silently train on nothing). Outputs in ``out``: ``adapter/`` (safetensors, tokenizer, ``amzqa_adapter.json``
provenance), ``train_log.csv``, ``train_config.yaml``, ``checkpoints/`` (resume), ``amzqa_run.json`` (the run's
identity: a run resumes only with the same data, recipe and base model).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from amzqa.errors import ConfigError
from amzqa.generation.chat import check_prompt_prefix, ensure_chat_template, load_template
from amzqa.io.atomic import atomic_dir, check_replaceable, write_json_atomic, write_text_atomic
from amzqa.io.layout import ADAPTER_PROVENANCE, SFT_DATASET
from amzqa.models import resolve_model
from amzqa.optional import require
from amzqa.runtime.allocator import mimalloc_loaded
from amzqa.training.config import TrainConfig

log = logging.getLogger(__name__)
RUN_KEY = "amzqa_run.json"  # beside the checkpoints: the data, recipe and base model the run was started with
RUN_MARKERS = (RUN_KEY, "train_config.yaml", "train_log.csv")  # a run folder (--overwrite may replace it)


class LabelGuard:
    """Wraps a data collator: refuses a batch in which an example has no unmasked label."""

    def __init__(self, collator) -> None:
        self.collator = collator
        self.batches = 0

    def __call__(self, features):
        batch = self.collator(features)
        labels = batch["labels"]
        if "position_ids" in batch and labels.shape[0] == 1:  # padding-free: one row, examples start at position 0
            starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [labels.shape[1]]
            rows = [labels[0, a:b] for a, b in zip(starts, starts[1:])]
        else:
            rows = list(labels)
        empty = [i for i, row in enumerate(rows) if not bool((row != -100).any())]
        if empty:
            raise ConfigError(f"batch {self.batches}: example(s) {empty} have every label masked (-100): the answer "
                              "was cut off by max_length or the completion mask is wrong; nothing would be learned")
        self.batches += 1
        return batch


def resolve_batching(cfg: TrainConfig, device: str) -> str:
    if cfg.batching != "auto":
        return cfg.batching
    if device == "cuda":
        try:
            import flash_attn  # noqa: F401

            return "padding_free"
        except ImportError:
            pass
    # On CPU (and GPUs without FlashAttention) one flattened sequence pays quadratic attention over all of it;
    # padded batches of similar length waste neither padding nor attention.
    return "length_grouped"


def base_load_kwargs(cfg: TrainConfig, device: str, batching: str, local_rank: int = 0) -> dict[str, Any]:
    """``from_pretrained`` keywords of the base model: dtype, NF4 quantisation (its storage dtype equal to the compute
    dtype, which FSDP needs to shard the 4-bit weights with the rest), each process's own GPU, FlashAttention for
    padding-free batches."""
    import torch

    bf16 = cfg.use_bf16(device)
    # Full fine-tuning keeps fp32 master weights (bf16 weights would round away AdamW's small updates); autocast
    # computes in bf16 where the recipe says so.
    dtype = torch.bfloat16 if bf16 and cfg.method != "full" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.load_in_4bit:
        from transformers import BitsAndBytesConfig

        # On GPUs the packed weights are stored in the compute dtype (what FSDP needs); on CPU bitsandbytes' kernels
        # read them as uint8, its default.
        storage = dtype if device == "cuda" else torch.uint8
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=cfg.double_quant,
            bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=storage)
    if device == "cuda":
        kwargs["device_map"] = {"": local_rank}  # rank r on GPU r (DDP/FSDP), not every rank on GPU 0
    if batching == "padding_free" and device == "cuda":
        kwargs["attn_implementation"] = "flash_attention_2"
    return kwargs


def load_base(cfg: TrainConfig, device: str, batching: str):
    from transformers import AutoModelForCausalLM

    if cfg.load_in_4bit:
        require("bitsandbytes", "train")
        from amzqa.runtime.machine import bitsandbytes_runs

        runs, why = bitsandbytes_runs(device)
        if not runs:
            raise ConfigError(f"load_in_4bit: bitsandbytes cannot run NF4 on {device} on this machine ({why}); see "
                              "amzqa doctor, or train LoRA on full-precision weights (load_in_4bit: false, "
                              "double_quant: false)")
    path = resolve_model(cfg.model)
    kwargs = base_load_kwargs(cfg, device, batching, local_rank(device))
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if cfg.load_in_4bit and device == "cpu":
        detach_from_checkpoint(model)
    return path, model


def detach_from_checkpoint(model) -> None:
    """Copy the unquantised weights (embeddings, norms) out of the checkpoint's memory map. transformers loads them
    as views of the mmapped safetensors file, which keeps the mapping, and every page read while quantising the
    rest, resident: most of the file, held for the whole run (measured in docs/benchmarks.md)."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            if param.dtype.is_floating_point:
                param.data = param.data.clone()
    gc.collect()


def local_rank(device: str) -> int:
    """This process's GPU under a multi-process launch (accelerate's view of it); CPU ranks share the one device."""
    if device != "cuda":
        return 0
    from accelerate import PartialState

    return PartialState().local_process_index


class CsvLog:
    """TrainerCallback that appends every log record (loss, eval_loss, lr, tokens) to train_log.csv."""

    FIELDS = ("step", "epoch", "loss", "eval_loss", "learning_rate", "grad_norm", "num_tokens", "seconds")

    def __new__(cls, path: Path):
        from transformers import TrainerCallback

        class _CsvLog(TrainerCallback):
            def __init__(self) -> None:
                self.path, self.start = path, time.perf_counter()
                if not path.exists():
                    with open(path, "w", newline="") as f:
                        csv.writer(f).writerow(CsvLog.FIELDS)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if not state.is_world_process_zero:  # one log for a multi-process run
                    return
                logs = logs or {}
                row = {"step": state.global_step, "epoch": state.epoch, "seconds": round(time.perf_counter() - self.start, 2),
                       "num_tokens": state.num_input_tokens_seen or logs.get("num_tokens")}
                row.update({k: logs[k] for k in ("loss", "eval_loss", "learning_rate", "grad_norm") if k in logs})
                with open(self.path, "a", newline="") as f:
                    csv.DictWriter(f, CsvLog.FIELDS).writerow(row)

        return _CsvLog()


def build_trainer(cfg: TrainConfig, progress: bool | None = None, max_steps: int | None = None):
    """The configured SFTTrainer (not yet trained) and the facts needed to save its adapter."""
    from datasets import load_from_disk
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from amzqa.progress import enabled, quiet_transformers
    from amzqa.training.sft_data import load_sft_manifest

    quiet_transformers(progress)
    if cfg.data is None or cfg.out is None:
        raise ConfigError("train needs data and out")
    device = cfg.check_machine()
    batching = resolve_batching(cfg, device)
    data_manifest = load_sft_manifest(cfg.data)
    dataset = load_from_disk(str(Path(cfg.data) / SFT_DATASET))
    path, model = load_base(cfg, device, batching)
    tokenizer = AutoTokenizer.from_pretrained(path)
    template = ensure_chat_template(tokenizer, cfg.chat_template, override=True)  # the recipe's template wins
    first = dataset["train"][0]  # trl renders it as prompt, then prompt + completion: the first must prefix the second
    check_prompt_prefix(tokenizer, cfg.model, template, first["prompt"], first["completion"][0]["content"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.load_in_4bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    layers = top_layers(model, cfg.lora_layers)
    lora = None
    if cfg.method == "full":
        trainable = freeze_below(model, layers)
        log.info("full fine-tuning: %.1fM of %.1fM weights trained", trainable / 1e6,
                 sum(p.numel() for p in model.parameters()) / 1e6)
    else:
        targets = cfg.target_modules if cfg.target_modules == "all-linear" else check_targets(model, cfg.target_modules)
        if layers is not None and targets == "all-linear":  # peft takes a layer subset only with named targets
            targets = linear_names(model)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets,
                          layers_to_transform=layers, task_type="CAUSAL_LM", bias="none")
    has_eval = "eval" in dataset
    args = SFTConfig(
        output_dir=str(Path(cfg.out) / "checkpoints"),
        max_steps=max_steps if max_steps is not None else cfg.max_steps,
        num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, optim=cfg.optim, bf16=cfg.use_bf16(device), seed=cfg.seed, data_seed=cfg.seed,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        max_length=cfg.max_length, completion_only_loss=True,
        # trl enforces max_length under padding-free only through packing: BFD keeps example boundaries.
        padding_free=batching == "padding_free", packing=batching == "padding_free", packing_strategy="bfd",
        train_sampling_strategy="group_by_length" if batching == "length_grouped" else "random",
        eval_strategy=("steps" if cfg.eval_steps else "no") if has_eval else "no",
        eval_steps=cfg.eval_steps or None, save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=2,
        logging_steps=cfg.logging_steps, report_to=[], disable_tqdm=not enabled(progress),
        use_cpu=device == "cpu", dataloader_num_workers=0, include_num_input_tokens_seen="non_padding",
    )
    trainer_class = SFTTrainer
    if cfg.answer_only_head:
        from amzqa.training.answer_head import answer_head_trainer_class

        trainer_class = answer_head_trainer_class()
    trainer = trainer_class(model=model, args=args, train_dataset=dataset["train"],
                            eval_dataset=dataset["eval"] if has_eval else None, processing_class=tokenizer, peft_config=lora)
    trainer.data_collator = LabelGuard(trainer.data_collator)
    if not args.bf16:
        adapter_to_fp32(trainer.model)
    return trainer, {"device": device, "batching": batching, "answer_only_head": cfg.answer_only_head, "base_path": path,
                     "data_manifest": data_manifest, "chat_template": template}


def freeze_below(model, layers: list[int] | None) -> int:
    """Full fine-tuning: train the decoder layers in ``layers`` (None: all of them) and the final norm; the embeddings
    (tied to the LM head in small models: 28M of SmolLM2's 135M weights) and an untied LM head stay frozen, so backward stops at the lowest
    trained layer as LoRA's does. Returns how many weights are trained."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    keep = set(range(model.config.num_hidden_layers)) if layers is None else set(layers)
    for param in model.parameters():
        param.requires_grad_(False)
    for i, layer in enumerate(decoder.layers):
        if i in keep:
            layer.requires_grad_(True)
    if getattr(decoder, "norm", None) is not None:
        decoder.norm.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def linear_names(model) -> list[str]:
    """The names of the model's linear layers below the LM head (what peft's all-linear adapts)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if type(module).__name__ in ("Linear", "Linear4bit", "Linear8bitLt") and "lm_head" not in name})


def top_layers(model, n: int | None) -> list[int] | None:
    """Indices of the last ``n`` decoder layers (None: every layer)."""
    if n is None:
        return None
    total = model.config.num_hidden_layers
    if n > total:
        raise ConfigError(f"lora_layers={n} but {type(model).__name__} has {total} decoder layers")
    return list(range(total - n, total))


def check_targets(model, names: str) -> list[str]:
    """The recipe's LoRA target modules, each checked against the model's own module names (peft would otherwise fail
    on the first missing one with no list of what exists, or — with a regex — silently adapt fewer layers)."""
    targets = [m.strip() for m in names.split(",") if m.strip()]
    linear = linear_names(model)
    missing = [t for t in targets if t not in linear]
    if missing:
        raise ConfigError(f"target_modules {missing} are not modules of {type(model).__name__}; its linear layers are "
                          f"{linear} (or use target_modules: all-linear)")
    return targets


def adapter_to_fp32(model) -> int:
    """Undo trl's cast of QLoRA adapter weights to bf16 (it casts whatever ``bf16`` says): a CPU without native bf16
    emulates every LoRA matmul, and bf16 weights round away small AdamW updates. Returns how many were cast."""
    import torch

    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.bfloat16:
            param.data = param.data.float()
            cast += 1
    return cast


def train(cfg: TrainConfig, progress: bool | None = None) -> dict[str, Any]:
    """Run the recipe; return the provenance written beside the adapter."""
    from amzqa.io.versions import library_versions
    from amzqa.retrieval.embedding import model_fingerprint

    if cfg.data is None or cfg.out is None:
        raise ConfigError("train needs data and out")
    out = Path(cfg.out)
    key = run_key(cfg)
    check_run_folder(out, key, cfg.overwrite)  # before the base model loads: a refusal costs nothing
    replace = cfg.overwrite and out.exists()  # checked above: an empty folder or an amzqa run
    trainer, facts = build_trainer(cfg, progress)  # (may create out/checkpoints)
    # One process, or one of a launch's ranks (their process group is up once the trainer's arguments are): the main
    # process clears the run folder alone, the others wait for it.
    with trainer.args.main_process_first(local=False, desc="run folder"):
        if trainer.args.process_index == 0:
            if replace and out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / RUN_KEY, key)
        out.mkdir(parents=True, exist_ok=True)
    trainer.add_callback(CsvLog(out / "train_log.csv"))
    write_text_atomic(out / "train_config.yaml", cfg.to_yaml())
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resume = str(checkpoints[-1]) if cfg.resume and checkpoints else None
    if resume:
        log.info("resuming from %s", resume)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    metrics = dict(result.metrics)
    if trainer.eval_dataset is not None and cfg.final_eval:
        metrics.update(trainer.evaluate())
    tokens = trainer.state.num_input_tokens_seen
    provenance = {
        "base_model": cfg.model, "base_path": facts["base_path"], "base_fingerprint": model_fingerprint(facts["base_path"]),
        "qlora": {"load_in_4bit": cfg.load_in_4bit, "double_quant": cfg.double_quant, "quant_type": "nf4"},
        "method": cfg.method,
        "lora": {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "target_modules": cfg.target_modules,
                 "layers": cfg.lora_layers},
        "data": {"path": str(cfg.data), "checksum": facts["data_manifest"]["checksum"], "counts": facts["data_manifest"]["counts"],
                 "prompt": facts["data_manifest"]["prompt"]},
        "device": facts["device"], "batching": facts["batching"], "chat_template": facts["chat_template"], "answer_only_head": facts["answer_only_head"], "steps": trainer.state.global_step,
        "train_seconds": round(seconds, 1), "train_tokens": tokens, "world_size": trainer.args.world_size,
        "allocator": "mimalloc" if mimalloc_loaded() else "system",
        "metrics": {k: (round(v, 5) if isinstance(v, float) and math.isfinite(v) else v) for k, v in metrics.items()},
        "config": cfg.to_dict(), "versions": library_versions(),
    }
    if not trainer.is_world_process_zero():  # DDP/FSDP: the adapter is the same on every rank; rank 0 writes it
        return provenance
    weights = out / ("model" if cfg.method == "full" else "adapter")
    with atomic_dir(weights, overwrite=True) as tmp:
        trainer.model.save_pretrained(str(tmp), safe_serialization=True)
        trainer.processing_class.save_pretrained(str(tmp))
        write_json_atomic(tmp / ADAPTER_PROVENANCE, provenance)
    log.info("%s saved to %s (%d steps, %.0f s)", weights.name, weights, trainer.state.global_step, seconds)
    if cfg.calibrate_abstention and trainer.eval_dataset is not None:
        del trainer
        gc.collect()
        provenance["abstention"] = calibrate_after_training(cfg, facts["device"], weights)
    return provenance


def run_key(cfg: TrainConfig) -> dict[str, Any]:
    """The identity of a run: the SFT data (its checksum, not its path), the recipe (every setting that changes what
    is learned; not out/overwrite/resume or the step budget, which a resumed run may extend) and the base model (its
    fingerprint). Stored beside the checkpoints; a run resumes only with the same key."""
    from amzqa.retrieval.embedding import model_fingerprint
    from amzqa.training.sft_data import load_sft_manifest

    data = load_sft_manifest(cfg.data)
    path = resolve_model(cfg.model)
    base = model_fingerprint(path) if Path(path).is_dir() else str(cfg.model)  # a hub id: its name
    template = (hashlib.sha256(load_template(cfg.chat_template).encode()).hexdigest()[:16]
                if cfg.chat_template else "own")
    parts = {"data_checksum": data["checksum"], "base": base, "chat_template": template, "recipe": cfg.identity()}
    return {"key": hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16], "parts": parts}


def check_run_folder(out: Path, key: dict[str, Any], overwrite: bool) -> None:
    """Refuse to resume, or to write into, a run folder that belongs to another run: a checkpoint trained on other
    data, with another recipe or on another base would otherwise be resumed (or, its steps already done, saved as
    is) under this run's provenance, and its log appended to. With ``overwrite``, refuse a folder amzqa did not write."""
    if overwrite:
        check_replaceable(out, RUN_MARKERS)
        return
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} is a file, not a run folder; choose a new or empty --out")
    empty_checkpoints = out / "checkpoints"  # what building a trainer (evaluate) may already have created
    if not [p for p in out.iterdir() if p != empty_checkpoints or not p.is_dir() or any(p.iterdir())]:
        return
    stored_path = out / RUN_KEY
    if stored_path.is_file():
        try:
            stored = json.loads(stored_path.read_text())
        except ValueError:
            stored = {}
        if stored.get("key") == key["key"]:
            return
        old, new = stored.get("parts") or {}, key["parts"]
        changed = [k for k in sorted(set(old) | set(new)) if k != "recipe" and old.get(k) != new.get(k)]
        old_recipe, new_recipe = old.get("recipe") or {}, new["recipe"]
        changed += [f"recipe.{k}" for k in sorted(set(old_recipe) | set(new_recipe)) if old_recipe.get(k) != new_recipe.get(k)]
        raise ConfigError(f"{out} holds another run (changed: {', '.join(changed) or 'its key'}); it is neither "
                          f"resumed nor written over. Pass --overwrite to discard it and start a new run there, or "
                          f"choose another --out")
    if any((out / name).exists() for name in ("checkpoints", "adapter", *RUN_MARKERS)):  # checkpoints: not empty
        raise ConfigError(f"{out} holds a run without {RUN_KEY} (written by an earlier amzqa): its data, recipe and base "
                          "model cannot be checked, so it is not resumed. Pass --overwrite to discard it and start a new "
                          "run there, or choose another --out")
    raise ConfigError(f"{out} is not empty and is not an amzqa run folder; choose a new or empty --out")


def calibrate_after_training(cfg: TrainConfig, device: str, adapter: Path) -> dict[str, Any] | None:
    """Fit the abstention threshold with the adapter on its base (or the fully fine-tuned model), as transformers answers with it (the exported
    engines score the same log-probability: tests/test_engines.py)."""
    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.training.abstention import calibrate_abstention

    device = "cuda" if device == "cuda" else "cpu"
    gen_cfg = (GenerationConfig(model=str(adapter), calibrated_abstention=False, device=device) if cfg.method == "full"
               else GenerationConfig(model=cfg.model, adapter=str(adapter), calibrated_abstention=False, device=device))
    return calibrate_abstention(adapter, cfg.data, HFGenerator(gen_cfg))


def read_log(path: str | Path) -> list[dict[str, str]]:
    with open(Path(path) / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def adapter_provenance(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / ADAPTER_PROVENANCE).read_text())
