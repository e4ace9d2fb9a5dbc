"""Weight-only int8 linear layers for CPU decoding.

Decoding one token reads every weight once, so on a CPU it is bound by memory bandwidth: SmolLM2-135M in bf16
reads ~270 MB per token. Per-output-channel symmetric int8 weights halve that, and torch's
``aten._weight_int8pack_mm`` kernel (the one gpt-fast uses on CPU) multiplies a few rows by them ~3x faster than a
bf16 ``linear`` here (22 vs 66 us for 1 x 576 -> 1536). For many rows (prefill) that kernel is ~4x *slower* than
bf16, so there we dequantise the layer and use the ordinary matmul. torchao's ``Int8WeightOnlyConfig`` (0.18) was
measured at 155 us for the same 1-row product, slower than bf16, hence this small module instead of that dependency.

LoRA adapters stay exact: only the frozen base ``Linear`` inside a PEFT LoRA layer is quantised; the adapter's
low-rank matrices run in the model dtype on top.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Inputs with at most this many rows use the int8 kernel; more rows (prefill) dequantise and use bf16/fp32 matmul.
MAX_INT8_ROWS = 16


def int8_supported() -> bool:
    """True where this torch build has the CPU int8 weight-only matmul kernel."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 codes and scales with ``weight ~= codes * scales[:, None]``."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    codes = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return codes.contiguous(), scales


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` with int8 weights (per output channel) and activations in the original dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        codes, scales = quantize_weight(linear.weight)
        self.register_buffer("qweight", codes)
        self.register_buffer("scales", scales.to(linear.weight.dtype))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight (for code that inspects ``.weight``, e.g. its dtype or device)."""
        return self.qweight.to(self.scales.dtype) * self.scales[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] <= MAX_INT8_ROWS:
            y = torch.ops.aten._weight_int8pack_mm(x2.contiguous(), self.qweight, self.scales.to(x2.dtype))
        else:
            y = nn.functional.linear(x2, self.weight.to(x2.dtype))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weight-only"


def quantize_int8(model: nn.Module) -> int:
    """Replace every frozen ``nn.Linear`` of ``model`` (LoRA bases included, LoRA matrices excluded) in place.

    Returns how many layers were replaced.
    """
    lora_parts = {"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"}
    targets = []
    for name, module in model.named_modules():
        if any(part in lora_parts for part in name.split(".")):
            continue
        for child_name, child in module.named_children():
            if type(child) is nn.Linear and child_name not in lora_parts:
                targets.append((module, child_name, child))
    for parent, child_name, child in targets:
        setattr(parent, child_name, Int8Linear(child))
    log.info("int8 weight-only: %d linear layers quantised", len(targets))
    return len(targets)
