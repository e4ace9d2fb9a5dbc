"""The LM head and the loss computed only where the next token is an answer token.

trl's SFTTrainer scores every position through its fused LM head on devices without Triton (CPU included), and
masks the prompt afterwards. With RAFT prompts ~85% of tokens are prompt, and a 49k-token vocabulary makes that
head (forward, recomputation, backward) the largest part of a CPU training step of a small model (profile it with
``torch.profiler`` to see it). Here the backbone runs as usual and only the supervised positions go through the
head, in fp32, so the loss and its gradients are those of the full head with the prompt masked.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def answer_only_loss(model, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss, stats) for one batch: summed token NLL over answer positions / ``num_items_in_batch`` (or their count).

    ``model`` is the causal LM (PEFT-wrapped or not); ``inputs`` the collator's batch with ``labels`` (-100 where
    no loss is taken). stats: ``tokens`` (answer tokens), ``correct`` (argmax hits), ``entropy`` (summed).
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    labels = inputs["labels"]
    backbone_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    backbone_inputs["use_cache"] = False
    hidden = lm.base_model(**backbone_inputs).last_hidden_state
    targets = labels[:, 1:]
    mask = targets != -100
    head = lm.get_output_embeddings()
    # fp32 outside autocast: the logits of a few hundred positions cost little, and bf16 logits would bias the loss.
    with torch.autocast(hidden.device.type, enabled=False):
        h = hidden[:, :-1][mask].float()
        logits = F.linear(h, head.weight.float(), None if head.bias is None else head.bias.float())
        logits = _scale(logits, lm.config.get_text_config())
        gold = targets[mask]
        nll = F.cross_entropy(logits, gold, reduction="sum")
    count = mask.sum()
    denominator = num_items_in_batch if num_items_in_batch is not None else count
    loss = nll / torch.as_tensor(denominator, device=nll.device).clamp(min=1)
    with torch.no_grad():
        logp = logits.log_softmax(-1)
        stats = {"tokens": count, "correct": (logits.argmax(-1) == gold).sum(),
                 "entropy": -(logp.exp() * logp).sum()}
    return loss, stats


def _scale(logits: torch.Tensor, config) -> torch.Tensor:
    # Models that scale or soft-cap their logits (Gemma 2, Cohere, Granite): apply what their own head applies.
    scale = getattr(config, "logit_scale", None)
    if scale is None and getattr(config, "logits_scaling", None):
        scale = 1 / config.logits_scaling
    if scale is not None:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def answer_head_trainer_class():
    """SFTTrainer whose training and evaluation loss goes through :func:`answer_only_loss` (trl imported lazily)."""
    from trl import SFTTrainer

    class AnswerHeadSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:  # logits requested (compute_metrics): trl's own path builds them
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            loss, stats = answer_only_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as trl: DDP averages, the count spans ranks
            gather = self.accelerator.gather_for_metrics
            valid = gather(stats["tokens"]).sum()
            if valid > 0:
                self._metrics[mode]["mean_token_accuracy"].append((gather(stats["correct"]).sum() / valid).item())
                self._metrics[mode]["entropy"].append((gather(stats["entropy"]).sum() / valid).item())
            if mode == "train":
                if "attention_mask" in inputs:
                    seen = inputs["attention_mask"].sum()
                else:  # padding-free: one flattened row
                    seen = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
                self._total_train_tokens += gather(seen).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return AnswerHeadSFTTrainer
