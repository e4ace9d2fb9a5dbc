"""``TrainConfig``: one QLoRA fine-tuning recipe (``configs/train/*.yaml``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal

from amzqa.config import Config, doc
from amzqa.errors import ConfigError

BATCHING = ("auto", "padded", "length_grouped", "padding_free")
# Settings outside a run's identity (amzqa.training.train.run_key): where it is written, whether to resume or start over,
# how far it goes (a resumed run may extend it), what it logs and saves, and the device (the same run may move). The
# data path and base model name are replaced by the data's checksum and the model's fingerprint.
NOT_IDENTITY = ("model", "data", "out", "overwrite", "resume", "max_steps", "num_train_epochs", "eval_steps",
                "save_steps", "logging_steps", "calibrate_abstention", "final_eval", "device")


@dataclasses.dataclass
class TrainConfig(Config):
    """Settings of ``amzqa train``. GPU-only options are checked against the machine when training starts."""

    model: str = doc("Base causal LM: 'smollm2' (provisioned) or a folder / hub id such as mistralai/Mistral-7B-Instruct-v0.3.", "smollm2")
    data: Path | None = doc("SFT data folder (amzqa sft-data).", None)
    out: Path | None = doc("Run folder: checkpoints/, adapter/ (or model/ with method: full), train_log.csv, "
                           "train_config.yaml.", None)
    method: Literal["lora", "full"] = doc("lora: train a LoRA adapter (out/adapter; QLoRA with load_in_4bit); full: train "
                                          "the weights themselves (every layer, or the top lora_layers; the "
                                          "embeddings and an untied LM head stay frozen) and save the whole model (out/model, "
                                          "safetensors), which GenerationConfig.model loads like a merged one.", "lora")
    load_in_4bit: bool = doc("QLoRA: NF4 base weights (bitsandbytes). False trains LoRA on full-precision weights.", True)
    double_quant: bool = doc("Quantise the NF4 quantisation constants too (saves ~0.4 bit/parameter).", True)
    lora_r: int = doc("LoRA rank.", 16)
    lora_alpha: int = doc("LoRA scaling numerator (scale = alpha / r).", 32)
    lora_dropout: float = doc("Dropout on the LoRA path.", 0.05)
    target_modules: str = doc("Modules that get LoRA: 'all-linear' or a comma-separated list of names.", "all-linear")
    lora_layers: int | None = doc("LoRA in the last N decoder layers only; None = every layer. Backpropagation then "
                                  "stops at the lowest adapted layer (nothing below it needs a gradient): the CPU "
                                  "selection recipe's step is ~1/3 cheaper with the top 10 of SmolLM2's 30 layers. With "
                                  "method: full, the layers whose weights are trained.", None)
    chat_template: str | None = doc("Chat template to train with, in place of the base model's own: mistral, zephyr, phi3, gemma "
                                    "(shipped, amzqa/chat_templates/) or a .jinja file; the adapter's tokenizer keeps it. "
                                    "None = the model's own, refused if its prompt is not a prefix of its training text.", None)
    batching: str = doc("auto (padding_free with FlashAttention, else length_grouped), padded (trl's default), "
                        "length_grouped (padded batches of similar length), padding_free (flattened, position ids).", "auto")
    answer_only_head: bool = doc("Run the LM head and loss only where the next token is an answer token (same loss and "
                                 "gradients; trl scores every position on devices without Triton, over half of a CPU "
                                 "step). false = trl's own fused head.", True)
    max_length: int = doc("Token limit per example (prompt + answer).", 1024)
    per_device_train_batch_size: int = doc("Examples per device per step.", 8)
    gradient_accumulation_steps: int = doc("Steps accumulated per optimizer update.", 1)
    learning_rate: float = doc("Peak learning rate.", 2e-4)
    lr_scheduler_type: str = doc("transformers scheduler name.", "cosine")
    warmup_ratio: float = doc("Share of steps spent warming up.", 0.05)
    weight_decay: float = doc("AdamW weight decay.", 0.0)
    max_steps: int = doc("Optimizer steps (-1 = use num_train_epochs).", -1)
    num_train_epochs: float = doc("Epochs when max_steps = -1.", 1.0)
    gradient_checkpointing: bool = doc("Recompute activations in backward: less memory, ~30% more compute.", False)
    bf16: bool | Literal["auto"] = doc("bfloat16 mixed precision: true, false, or auto = on a GPU and on a CPU with native bf16 "
                           "instructions (AVX512-BF16/AMX: faster QLoRA steps than fp32). A CPU that would "
                           "emulate bf16 refuses true.", False)
    optim: str = doc("Optimizer: adamw_torch (CPU-safe) or paged_adamw_8bit (GPU, bitsandbytes).", "adamw_torch")
    device: str = doc("cpu, cuda or auto.", "auto")
    eval_steps: int = doc("Evaluate the eval split every N steps (0 = only at the end).", 0)
    save_steps: int = doc("Checkpoint every N steps (resume starts from the last one).", 50)
    logging_steps: int = doc("Log loss every N steps (train_log.csv).", 5)
    resume: bool = doc("Resume from the last checkpoint in out/checkpoints if one exists.", True)
    final_eval: bool = doc("After training, evaluate the eval split (eval_loss in the provenance). The selection recipe "
                           "turns it off: its calibration scores every eval example's labels anyway and reports the "
                           "label token's cross-entropy (eval_label_loss), one pass over the eval split instead of two.", True)
    calibrate_abstention: bool = doc("After training, fit the abstention threshold on the SFT eval split and save it "
                                     "with the adapter (amzqa_abstention.json; see training/abstention.py).", True)
    seed: int = doc("Seed for data order, LoRA init and dropout.", 0)
    overwrite: bool = doc("Discard an existing run folder instead of resuming it.", False)

    def __post_init__(self) -> None:
        if self.batching not in BATCHING:
            raise ConfigError(f"batching must be one of {BATCHING}, got {self.batching!r}")
        if not 0 <= self.warmup_ratio < 1:  # transformers reads warmup_steps >= 1 as a number of steps
            raise ConfigError(f"warmup_ratio is a share of the steps and must be in [0, 1), got {self.warmup_ratio}")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_r and lora_alpha must be >= 1 and lora_dropout in [0, 1)")
        if self.lora_layers is not None and self.lora_layers < 1:
            raise ConfigError(f"lora_layers must be >= 1 (or null for every layer), got {self.lora_layers}")
        if self.method not in ("lora", "full"):
            raise ConfigError(f"method must be lora or full, got {self.method!r}")
        if self.method == "full" and self.load_in_4bit:
            raise ConfigError("method: full trains the weights themselves, which 4-bit weights cannot be; set "
                              "load_in_4bit: false and double_quant: false")
        if self.double_quant and not self.load_in_4bit:
            raise ConfigError("double_quant only applies with load_in_4bit")
        if self.max_steps == 0 or (self.max_steps < 0 and self.num_train_epochs <= 0):
            raise ConfigError("set max_steps > 0, or max_steps = -1 with num_train_epochs > 0")
        if self.per_device_train_batch_size < 1 or self.gradient_accumulation_steps < 1 or self.max_length < 64:
            raise ConfigError("batch size and accumulation must be >= 1 and max_length >= 64")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"device must be cpu, cuda or auto, got {self.device!r}")
        if self.bf16 not in (True, False, "auto"):
            raise ConfigError(f"bf16 must be true, false or auto, got {self.bf16!r}")
        if self.device == "cpu" and self.optim.startswith("paged_"):
            raise ConfigError("paged optimizers need a GPU; this recipe says device: cpu")

    def identity(self) -> dict:
        """The settings that make a run what it is (see NOT_IDENTITY for those left out)."""
        identity = {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY}
        if identity.get("method") == "lora":  # the default: a run folder written before the setting existed resumes
            del identity["method"]
        return identity

    def check_machine(self) -> str:
        """The device to train on; refuses GPU-only options on a machine without CUDA, with a clear message."""
        import torch

        cuda = torch.cuda.is_available()
        device = ("cuda" if cuda else "cpu") if self.device == "auto" else self.device
        if device == "cuda" and not cuda:
            raise ConfigError("this recipe needs a CUDA GPU (device: cuda) but none is available")
        check_launch(device, dict(os.environ), torch.cuda.device_count() if cuda else 0)
        if self.method == "full" and os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
            raise ConfigError("method: full is not supported under FSDP here (frozen and trained weights share its "
                              "root unit, and the model is saved from one rank); launch it with the DDP config or "
                              "train LoRA (method: lora)")
        if device == "cpu":
            if self.optim.startswith("paged_"):
                raise ConfigError(f"optim={self.optim} needs a CUDA GPU; none is available. "
                                  "Use configs/train/smollm2-135m-qlora.yaml on a CPU.")
            if self.bf16 is True and not native_bf16():
                raise ConfigError("bf16: true on a CPU without native bf16 instructions (AVX512-BF16/AMX) would be "
                                  "emulated and slow; use bf16: auto or false")
        return device

    def use_bf16(self, device: str) -> bool:
        """Whether training runs in bf16 on ``device`` (resolves ``auto``)."""
        if self.bf16 == "auto":
            import torch

            return torch.cuda.is_bf16_supported() if device == "cuda" else native_bf16()
        return bool(self.bf16)


def check_launch(device: str, env: dict[str, str], gpus: int) -> None:
    """Refuse a multi-process launch (accelerate launch / torchrun) this machine cannot honour: more processes per
    node than GPUs (ranks would share a card and run out of memory, or NCCL refuses), or an FSDP launch of one
    process (nothing to shard). The launcher's own config sets these variables, so a config written for another
    machine is caught here with the numbers named."""
    world = int(env.get("WORLD_SIZE", "1"))
    local = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    if device == "cuda" and local > gpus:
        raise ConfigError(f"the launch started {local} processes on this machine but it has {gpus} GPU(s); set "
                          f"num_processes: {gpus} in the accelerate config (configs/accelerate/*.yaml) or pass "
                          f"--num_processes {gpus}")
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and device == "cpu":
        raise ConfigError("FSDP needs GPUs (accelerate's FSDP has no CPU device); on a CPU launch the DDP config: "
                          "accelerate launch --config_file configs/accelerate/ddp.yaml --mixed_precision no -m amzqa train ...")
    if env.get("ACCELERATE_USE_FSDP", "").lower() == "true" and world < 2:
        raise ConfigError("an FSDP launch with one process shards nothing; launch it with num_processes >= 2 "
                          "(configs/accelerate/fsdp_qlora.yaml) or train without accelerate launch")


def native_bf16() -> bool:
    from amzqa.generation import hf

    return hf.cpu_has_native_bf16()
