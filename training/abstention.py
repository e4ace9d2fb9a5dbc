"""Calibrated abstention: a threshold on log P(abstention message | prompt), fitted on the SFT eval split.

After CPU-sized fine-tuning the model ranks "product absent" cases well by how ready it is to abstain (ROC AUC
0.91 on held-out questions after 80 steps) but its greedy choice abstains far too often: the first token of the
abstention message wins whenever the model hesitates. The threshold that best separates the eval split's
abstention examples from its answerable ones is saved beside the adapter (``amzqa_abstention.json``);
:class:`amzqa.generation.HFGenerator` then abstains exactly when that log-probability reaches it, and otherwise
answers with the abstention message suppressed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from amzqa.errors import ConfigError
from amzqa.generation.abstention import Threshold
from amzqa.grounding.facts import asked_facts
from amzqa.io.atomic import write_json_atomic
from amzqa.io.layout import ABSTENTION_CALIBRATION, SFT_DATASET

log = logging.getLogger(__name__)
# A separate cut for fact questions is fitted only with at least this many of each label, and kept only where it
# abstains less than the general one (measured: fitted on 4-6 absent-product fact examples, balanced accuracy chose
# a cut that refused 57% of the answerable fact questions).
MIN_PER_LABEL = 4


def best_threshold(scores: list[float], abstain: list[bool]) -> tuple[float, float]:
    """(threshold, accuracy): abstain iff score >= threshold. The cut maximises balanced accuracy (the mean of the
    share of abstention cases abstained on and of answerable cases answered): with 74 answerable eval examples and 10
    absent ones, plain accuracy was best at "never abstain". Midpoint between the scores it separates; among equally
    good cuts the one abstaining least (a wrong abstention hides an answer). One class only: plain accuracy."""
    if len(scores) != len(abstain) or not scores:
        raise ConfigError("best_threshold needs one label per score and at least one score")
    ranked = sorted(zip(scores, abstain))
    positives = sum(a for _, a in ranked)
    negatives = len(ranked) - positives

    def quality(caught: int, answered: int) -> float:
        if positives and negatives:
            return (caught / positives + answered / negatives) / 2
        return (caught + answered) / len(ranked)

    # Cut i abstains on ranked[i:]; i = len abstains on nothing.
    caught, answered = 0, negatives
    best_i, best_q, best_correct = len(ranked), quality(caught, answered), answered
    for i in range(len(ranked) - 1, -1, -1):  # ranked[i] moves to the abstaining side
        caught, answered = (caught + 1, answered) if ranked[i][1] else (caught, answered - 1)
        if quality(caught, answered) > best_q + 1e-12:
            best_i, best_q, best_correct = i, quality(caught, answered), caught + answered
    if best_i == len(ranked):
        threshold = ranked[-1][0] + 1.0
    elif best_i == 0:
        threshold = ranked[0][0] - 1.0
    else:
        threshold = (ranked[best_i - 1][0] + ranked[best_i][0]) / 2
    return threshold, best_correct / len(ranked)


def eval_label_loss(examples: list[dict[str, Any]], label_lps: list[list[float]]) -> float:
    """Mean cross-entropy of the gold label token (``label_lps``: each example's log-probabilities of "0".."n" over
    the whole vocabulary): how well a selection adapter picks, without a second pass over the eval split."""
    golds = [int(e["completion"][0]["content"]) for e in examples]
    return -sum(lps[g] for lps, g in zip(label_lps, golds)) / len(golds)


def calibrate_abstention(adapter: str | Path, data: str | Path, generator=None) -> dict[str, Any] | None:
    """Fit and save the adapter's abstention threshold on ``data``'s eval split; None (nothing saved) when that
    split lacks abstention or answerable examples."""
    from datasets import load_from_disk

    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.generation.prompt import ABSTAIN_MESSAGE, Prompt

    dataset = load_from_disk(str(Path(data) / SFT_DATASET))
    if "eval" not in dataset:
        log.warning("no eval split in %s: abstention left to the model's own choice", data)
        return None
    # The population the gate is applied to: inference skips it where the prompt shows the fact asked for.
    examples = [e for e in dataset["eval"] if not e.get("shows_fact")]
    labels = [bool(e["abstain"]) for e in examples]
    if all(labels) or not any(labels):
        log.warning("the eval split of %s needs both abstention and answerable examples to calibrate", data)
        return None
    from amzqa.training.sft_data import load_sft_manifest

    # What an abstention is in this data: the message (generative recipe) or selection's "0" label.
    message = load_sft_manifest(data).get("abstain_target", ABSTAIN_MESSAGE)
    gen = generator or HFGenerator(GenerationConfig(adapter=str(adapter), calibrated_abstention=False))
    prior_weight, label_loss = None, None
    if message == ABSTAIN_MESSAGE:
        scores = [gen.answer_logprob(Prompt(e["question"], (), tuple(e["prompt"])), message) for e in examples]
    else:  # selection: every label's log-probability from one pass; "0"'s is the abstention score
        label_lps = [gen.first_token_logprobs(Prompt(e["question"], (), tuple(e["prompt"])),
                                              [str(i) for i in range(len(e["priors"]) + 1)]) for e in examples]
        scores = [lps[0] for lps in label_lps]
        prior_weight = fit_prior_weight(examples, label_lps)
        label_loss = round(eval_label_loss(examples, label_lps), 5)
    threshold, accuracy = best_threshold(scores, labels)
    if message != ABSTAIN_MESSAGE:  # selection: a wrong refusal hides an answer the sources hold; refuse <= 5% of them
        answerable = sorted(s for s, a in zip(scores, labels) if not a)
        cap = answerable[min(len(answerable) - 1, int(0.95 * len(answerable)))] + 1e-6
        if cap > threshold:
            threshold = cap
            accuracy = sum((s >= threshold) == a for s, a in zip(scores, labels)) / len(scores)
    asks_fact = [bool(asked_facts(e["question"])) for e in examples]
    fact = [(s, a) for s, a, f in zip(scores, labels, asks_fact) if f]
    fact_threshold = None
    if sum(a for _, a in fact) >= MIN_PER_LABEL and sum(not a for _, a in fact) >= MIN_PER_LABEL:
        fact_threshold, _ = best_threshold([s for s, _ in fact], [a for _, a in fact])
        if fact_threshold < threshold:  # kept only where it refuses fact questions less than the general cut
            fact_threshold = None
    cut = Threshold(threshold, fact_threshold)
    greedy = sum(s >= 0 for s in scores)  # for the log: how the uncalibrated model would lean
    result = {"threshold": round(threshold, 4), "fact_threshold": None if fact_threshold is None else round(fact_threshold, 4),
              "eval_examples": len(examples), "eval_abstentions": sum(labels), "eval_accuracy": round(accuracy, 4),
              "by_question": report_by_question(examples, scores, labels, asks_fact, cut),
              "backend": gen.name, "message": message,
              **({"prior_weight": prior_weight[0], "prior_fit": prior_weight[1]} if prior_weight else {}),
              **({"eval_label_loss": label_loss} if label_loss is not None else {})}
    write_json_atomic(Path(adapter) / ABSTENTION_CALIBRATION, result)
    log.info("abstention threshold %.2f, fact questions %s (eval accuracy %.2f on %d examples; %d scores >= 0): %s",
             threshold, result["fact_threshold"], accuracy, len(examples), greedy, result["by_question"])
    return result


PRIOR_WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def fit_prior_weight(examples, label_lps) -> tuple[float, dict[str, float]]:
    """(weight, accuracy by weight): the weight of the candidates' lexical score added to the label log-probs that
    picks the labelled sentence most often on the eval split's answerable examples; ties go to the smaller weight
    (the model's own choice)."""
    accuracy = {}
    rows = [(e, lps) for e, lps in zip(examples, label_lps) if not e["abstain"] and e["priors"]]
    for w in PRIOR_WEIGHTS:
        hits = sum(1 + max(range(len(e["priors"])), key=lambda i: lps[i + 1] + w * e["priors"][i])
                   == int(e["completion"][0]["content"]) for e, lps in rows)
        accuracy[str(w)] = round(hits / len(rows), 4) if rows else 0.0
    best = max(PRIOR_WEIGHTS, key=lambda w: (accuracy[str(w)], -w))
    log.info("selection: prior weight %s (eval-split accuracy by weight %s)", best, accuracy)
    return best, accuracy


def report_by_question(examples, scores, labels, asks_fact, cut: Threshold) -> dict[str, Any]:
    """On the eval split: how often answerable fact questions and answerable other questions are refused, and how
    often the model abstains when the product is absent."""
    abstains = [s >= cut.for_question(e["question"]) for e, s in zip(examples, scores)]

    def rate(rows: list[bool]) -> dict[str, Any]:
        return {"n": len(rows), "rate": round(sum(rows) / len(rows), 4) if rows else None}

    return {
        "fact_refused": rate([a for a, y, f in zip(abstains, labels, asks_fact) if f and not y]),
        "other_refused": rate([a for a, y, f in zip(abstains, labels, asks_fact) if not f and not y]),
        "absent_abstained": rate([a for a, y in zip(abstains, labels) if y]),
    }
