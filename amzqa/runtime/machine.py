"""What this machine can do: CPU features, GPUs, training kernels and installed engines (``amzqa doctor``).

Every probe is cheap and never raises: a missing library or driver is a fact to report, not an error.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

ISA = ("avx2", "fma", "f16c")  # plus every avx512* and amx* flag the CPU has
# Which training recipe a machine can run, largest first: (recipe, least GPU memory in GiB). The figures are what
# QLoRA NF4 with the recipe's sequence length and batch needs with some margin (Mistral-7B: ~4.1 GB weights,
# activations at 2048 tokens x 4 with checkpointing; see the recipes' headers).
RECIPES = (("configs/train/mistral-7b-instruct-v0.3-qlora.yaml", 20.0),
           ("configs/train/phi-3-mini-4k-instruct-qlora.yaml", 12.0),
           ("configs/train/tinyllama-1.1b-chat-qlora.yaml", 6.0))
CPU_RECIPE = "configs/train/smollm2-135m-select.yaml"  # evidence selection, LoRA on fp32 (4-bit saves no CPU time)
ENGINES = {"openvino_genai": "openvino-genai (in-process CPU engine)", "xllamacpp": "xllamacpp (llama.cpp server)",
           "vllm": "vllm (in this environment)", "flash_attn": "flash-attn (padding-free training)",
           "bitsandbytes": "bitsandbytes (QLoRA NF4)"}


def cpu_info() -> tuple[str, list[str]]:
    """The CPU's model name and the vector ISA flags that decide engine speed (Linux /proc/cpuinfo)."""
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model, sorted(f for f in flags if f in ISA or f.startswith(("avx512", "amx")))


def describe_cpu() -> str:
    """One line for benchmark headers: model, cores, ISA, and the torch ISA cap if one is set."""
    model, isa = cpu_info()
    cap = os.environ.get("ATEN_CPU_CAPABILITY")
    return (f"{model}, {os.cpu_count()} cores; ISA: {' '.join(isa) or 'no AVX2'}"
            + (f"; torch capped at ATEN_CPU_CAPABILITY={cap}" if cap else ""))


@dataclass
class GPU:
    name: str
    memory_gib: float
    bf16: bool
    capability: str


@dataclass
class Machine:
    cpu: str
    isa: list[str]
    cores: int
    torch: str | None
    cuda: str | None
    gpus: list[GPU] = field(default_factory=list)
    native_bf16_cpu: bool = False
    bnb_gpu: bool | None = None  # bitsandbytes' CUDA kernels load (None: no GPU or no bitsandbytes)
    bnb_cpu: bool | None = None  # bitsandbytes quantises NF4 on this CPU
    packages: dict[str, str | None] = field(default_factory=dict)
    engine_venvs: dict[str, bool] = field(default_factory=dict)

    def recipe(self) -> tuple[str, str]:
        """The training recipe this machine would run, and why."""
        if self.gpus and self.bnb_gpu is not False:
            best = max(g.memory_gib for g in self.gpus)
            for path, need in RECIPES:
                if best >= need:
                    return path, f"a GPU with {best:.0f} GiB (>= {need:.0f} GiB)"
            return CPU_RECIPE, f"the largest GPU has {best:.0f} GiB, under the {RECIPES[-1][1]:.0f} GiB TinyLlama needs"
        why = "no CUDA GPU" if not self.gpus else "bitsandbytes' GPU kernels do not load"
        return CPU_RECIPE, why + " (train it on amzqa sft-data --target select)"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def bitsandbytes_runs(device: str) -> tuple[bool, str]:
    """Whether bitsandbytes can quantise and dequantise an NF4 tensor on ``device`` (a real round trip)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return False, "bitsandbytes is not installed (pip install 'amzqa[train]')"
    try:
        import bitsandbytes.functional as bnbf
        import torch

        x = torch.linspace(-1, 1, 64, device=device, dtype=torch.float32).reshape(8, 8)
        packed, state = bnbf.quantize_4bit(x, quant_type="nf4")
        err = float((bnbf.dequantize_4bit(packed, state) - x).abs().max())
    except Exception as exc:  # a missing kernel surfaces as any of several error types
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return (err < 0.2, f"NF4 round trip error {err:.3f}")


def probe() -> Machine:
    from amzqa.runtime.engines import SPECS, installed

    model, isa = cpu_info()
    m = Machine(cpu=model, isa=isa, cores=os.cpu_count() or 1, torch=_version("torch"), cuda=None,
                packages={name: _version(name.replace("_", "-")) for name in ENGINES},
                engine_venvs={name: installed(name) for name in SPECS})
    if m.torch:
        import torch

        from amzqa.generation.hf import cpu_has_native_bf16

        m.native_bf16_cpu = cpu_has_native_bf16()
        if torch.cuda.is_available():
            m.cuda = torch.version.cuda
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                m.gpus.append(GPU(p.name, p.total_memory / 2**30, torch.cuda.is_bf16_supported(), f"{p.major}.{p.minor}"))
    if m.packages.get("bitsandbytes") and m.torch:
        m.bnb_cpu = bitsandbytes_runs("cpu")[0]
        if m.gpus:
            m.bnb_gpu = bitsandbytes_runs("cuda")[0]
    return m


def report(m: Machine) -> str:
    yes = {True: "yes", False: "no", None: "n/a"}
    cap = os.environ.get("ATEN_CPU_CAPABILITY")
    lines = [f"CPU:        {m.cpu}, {m.cores} cores" + (f" (torch capped at {cap} by ATEN_CPU_CAPABILITY)" if cap else ""),
             f"  ISA:      {' '.join(m.isa) or 'no AVX2 (engines fall back to slow generic kernels)'}",
             f"  bf16:     {'native (AVX512-BF16/AMX): bf16 prefill and training' if m.native_bf16_cpu else 'emulated: fp32 is used'}",
             f"torch:      {m.torch or 'not installed'}" + (f", CUDA {m.cuda}" if m.cuda else ", CPU only")]
    for i, g in enumerate(m.gpus):
        lines.append(f"GPU {i}:      {g.name}, {g.memory_gib:.1f} GiB, compute {g.capability}, bf16 {yes[g.bf16]}")
    if not m.gpus:
        lines.append("GPU:        none (CUDA not available)")
    lines.append(f"bitsandbytes NF4: CPU {yes[m.bnb_cpu]}, GPU {yes[m.bnb_gpu]}")
    for name, label in ENGINES.items():
        lines.append(f"  {label:<40} {m.packages.get(name) or '-'}")
    for name, ok in m.engine_venvs.items():
        lines.append(f"  engine venv {name:<28} {'installed' if ok else '- (amzqa engines install ' + name + ')'}")
    recipe, why = m.recipe()
    lines.append(f"recipe:     {recipe}  ({why})")
    return "\n".join(lines)
