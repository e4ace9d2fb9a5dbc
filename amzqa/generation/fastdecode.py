"""A KV cache and an attention path for one-token decode steps on CPU.

Profiling a SmolLM2-135M decode step here (transformers 5.x, torch 2.13, bf16) showed ~40% of its time outside the
weight matmuls: ``DynamicCache`` re-allocates and copies every layer's keys and values with ``torch.cat`` at each
token (~128 us a call, 60 calls a token), and the CPU flash-attention kernel spends ~390 us a layer on a one-row
query. :class:`GrowingLayer` appends into a buffer that grows in chunks and hands attention a view, and
:func:`decode_attention` computes one-query grouped-query attention as two small matmuls over the key/value heads
(no ``repeat_kv`` copy); prompts (many query rows) still go through the stock SDPA path. Tokens are identical to the
stock path (tested).
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, Cache
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ATTENTION = "amzqa_decode"


class GrowingLayer(DynamicLayer):
    """A dynamic cache layer that appends in place into a buffer grown ``chunk`` positions at a time."""

    chunk = 128

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        self.length, self.kbuf, self.vbuf = 0, None, None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self.kbuf is None or end > self.kbuf.shape[-2]:
            self._grow(end + self.chunk, key_states)
        self.kbuf[..., self.length:end, :] = key_states
        self.vbuf[..., self.length:end, :] = value_states
        self.length = end
        self.keys, self.values = self.kbuf[..., :end, :], self.vbuf[..., :end, :]
        return self.keys, self.values

    def _grow(self, capacity: int, like: torch.Tensor) -> None:
        kbuf = like.new_empty((*like.shape[:-2], capacity, like.shape[-1]))
        vbuf = torch.empty_like(kbuf)
        if self.length:
            kbuf[..., :self.length, :] = self.kbuf[..., :self.length, :]
            vbuf[..., :self.length, :] = self.vbuf[..., :self.length, :]
        self.kbuf, self.vbuf = kbuf, vbuf

    def crop(self, tokens_to_remove: int) -> None:
        super().crop(tokens_to_remove)
        self.length = self.keys.shape[-2] if self.is_initialized else 0


def growing_cache() -> Cache:
    """A fresh cache for one sequence (pass as ``past_key_values``)."""
    return Cache(layer_class_to_replicate=GrowingLayer)


def decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Attention in transformers' interface; one query row is computed per key/value head without repeating them."""
    batch, heads, q_len, dim = query.shape
    if q_len > 1 or dropout or kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    kv_heads, kv_len = key.shape[1], key.shape[2]
    q = query.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(q, key.transpose(-1, -2)) * (scaling if scaling is not None else dim ** -0.5)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, :kv_len]
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)  # batch, kv_heads, group, dim
    return out.reshape(batch, 1, heads, dim), None


AttentionInterface.register(ATTENTION, decode_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_decode_attention(model) -> None:
    """Switch ``model`` (any transformers causal LM with SDPA support) to :func:`decode_attention`."""
    model.set_attn_implementation(ATTENTION)
