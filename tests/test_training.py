"""Real QLoRA (bitsandbytes NF4 on CPU) on SmolLM2-135M for a few steps, on SFT data built from the sample index."""

import json
import os
import re

import pytest
import torch

from amzqa.errors import ConfigError
from amzqa.generation.abstention import Threshold
from amzqa.generation.prompt import ABSTAIN_MESSAGE, build_prompt, render, template_fingerprint
from amzqa.training.config import TrainConfig
from amzqa.training.sft_data import SFTDataConfig, build_sft_data, cite, product_name, target_answer


@pytest.fixture(scope="module")
def tiny_cfg(sft_dir, tmp_path_factory):
    return TrainConfig(data=sft_dir, out=tmp_path_factory.mktemp("run") / "r", max_steps=6, per_device_train_batch_size=4,
                       learning_rate=2e-3, warmup_ratio=0.0, lr_scheduler_type="constant", logging_steps=1, save_steps=3,
                       eval_steps=0, max_length=512, device="cpu", lora_r=8, lora_alpha=16)


def test_sft_data_is_split_by_product_and_excludes_heldout(sft_dir):
    from datasets import load_from_disk

    from amzqa.data.split import is_heldout

    man = json.loads((sft_dir / "manifest.json").read_text())
    ds = load_from_disk(str(sft_dir / "dataset"))
    uids = {split: set(ds[split]["uid"]) for split in ds}
    assert not (uids["train"] & uids.get("eval", set()))
    heldout = set(json.loads((sft_dir / "heldout.json").read_text())["uids"])
    assert heldout and not (uids["train"] & heldout) and not any(is_heldout(u) for u in uids["train"])
    ex = [e for e in ds["train"] if not e["abstain"]][0]
    assert ex["source_uids"][ex["gold_position"] - 1] == ex["uid"] and len(ex["source_uids"]) == 2
    assert f"[{ex['gold_position']}]" in ex["completion"][0]["content"]
    ab = [e for e in ds["train"] if e["abstain"]]
    assert ab and all(e["completion"][0]["content"] == ABSTAIN_MESSAGE and e["uid"] not in e["source_uids"] for e in ab)
    assert man["prompt"] == {"k": 2, "excerpt_chars": 80, "system_sha256": man["prompt"]["system_sha256"],
                             "template": template_fingerprint(), "target": "answer"}
    assert 0.1 < man["counts"]["abstain"] / (man["counts"]["train"] + man["counts"].get("eval", 0)) < 0.45


def test_fact_questions_are_answered_with_the_sentence_that_states_the_fact(sft_dir, retrievers):
    from datasets import load_from_disk

    from amzqa.generation.prompt import focused_excerpt, sanitize
    from amzqa.grounding.facts import asked_facts, fact_of

    man = json.loads((sft_dir / "manifest.json").read_text())
    ds = load_from_disk(str(sft_dir / "dataset"))
    facts = [e for split in ds for e in ds[split] if e["kind"] == "fact" and not e["abstain"]]
    assert facts and man["counts"]["fact"] >= len(facts)
    for e in facts:
        gold = retrievers.store.by_uid(e["uid"])
        target = e["completion"][0]["content"]
        body = target.split(f" [{e['gold_position']}]: ", 1)[-1]  # after the product's name, when it is named
        sentence = body.replace(f" [{e['gold_position']}]", "")
        assert sentence in sanitize(gold.content) and fact_of(sentence) is not None  # the sentence holding the fact
        assert asked_facts(e["question"]), e["question"]  # the question asks for that kind of fact
        assert sentence in focused_excerpt(e["question"], sanitize(gold.content), 80)  # and the model sees it
        assert target.endswith(f"[{e['gold_position']}].") or target.endswith(f"[{e['gold_position']}]!")


def test_sft_prompt_is_the_inference_prompt(sft_dir, hf_generator, retrievers):
    """The prompt trl trains on is byte-identical to what QA renders for the same question and sources."""
    from datasets import load_from_disk

    ex = load_from_disk(str(sft_dir / "dataset"))["train"][0]
    tok = hf_generator.tokenizer
    sources = [retrievers.store.by_uid(u) for u in ex["source_uids"]]
    at_inference = render(tok, build_prompt(ex["question"], sources, excerpt_chars=80))
    at_training = tok.apply_chat_template(ex["prompt"], tokenize=False, add_generation_prompt=True)
    assert at_training == at_inference


def test_target_answers_cite_before_the_full_stop():
    from amzqa.records import Product

    gold = Product(0, "U", "Lodge Skillet", "Pre-seasoned with oil. Hand wash only, dry promptly. Made in Tennessee.")
    assert target_answer("how do I wash the lodge skillet?", gold, 3) == "Hand wash only, dry promptly [3]."
    assert cite("No full stop", 2) == "No full stop [2]."
    named = target_answer("how do I wash the lodge skillet?", gold, 3, name_product=True)
    assert named == "Lodge Skillet [3]: Hand wash only, dry promptly [3]."
    # The name is the title as the prompt shows it, so the source's "[n]" follows the same words in both places.
    assert product_name("The Road (Oprah's Book Club) [Paperback]") == "The Road (Oprah's Book Club) [Paperback]"
    prompt_line = build_prompt("q", [gold]).user_text.splitlines()[1]
    assert f"{product_name(gold.title)} [1]" in prompt_line
    long = "Lodge 10.25 Inch Cast Iron Skillet, Pre-Seasoned, Ready for Stove Top or Oven Use, Black, Made in USA"
    assert product_name(long) == "Lodge 10.25 Inch Cast Iron Skillet"
    assert len(product_name("word " * 40)) <= 60


def in_mapped_checkpoint(tensor) -> bool:
    """Whether ``tensor``'s memory lies in a safetensors file this process has memory-mapped."""
    for line in open("/proc/self/maps"):
        parts = line.split()
        if len(parts) >= 6 and parts[5].endswith(".safetensors"):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            if lo <= tensor.data_ptr() < hi:
                return True
    return False


def test_transformers_loads_weights_as_views_of_the_mapped_checkpoint():
    """Why training copies the unquantised weights out (detach_from_checkpoint): loaded as they are stored, they are
    views of the memory-mapped file, which stays mapped (and every page read stays resident) while they live."""
    from transformers import AutoModelForCausalLM

    from amzqa.models import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2"), dtype=torch.float32)
    assert in_mapped_checkpoint(model.get_input_embeddings().weight)


@pytest.mark.slow  # ~110 s: six QLoRA steps, three generators and an OpenVINO export (make test-slow; CI runs it)
def test_qlora_trains_and_the_adapter_changes_the_generator(tiny_cfg):
    from peft import PeftModel

    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.training.train import adapter_provenance, build_trainer, read_log, train

    # Loss on the same training examples before and after: it must fall.
    trainer, _ = build_trainer(tiny_cfg, progress=False, max_steps=1)
    before = trainer.evaluate(trainer.train_dataset.select(range(8)))["eval_loss"]
    lora_b = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(bool((p == 0).all()) for p in lora_b.values())  # LoRA B starts at zero
    assert any("Linear4bit" in type(m).__name__ for m in trainer.model.modules())  # really NF4 (bitsandbytes)
    # fp32 training keeps fp32 adapters (trl casts QLoRA adapters to bf16 whatever bf16 says: emulated on AVX2)
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.float32}
    # the embeddings and norms are copies, not views of the checkpoint's memory map (which would keep every page of
    # the file resident for the whole run)
    unquantised = [p for p in trainer.model.parameters() if p.dtype.is_floating_point and not p.requires_grad]
    assert unquantised and not any(in_mapped_checkpoint(p) for p in unquantised)
    del trainer

    prov = train(tiny_cfg, progress=False)
    assert prov["steps"] == 6 and prov["qlora"]["quant_type"] == "nf4" and prov["batching"] == "length_grouped"
    adapter = tiny_cfg.out / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and not list(adapter.glob("*.bin"))
    assert adapter_provenance(adapter)["data"]["prompt"]["k"] == 2
    rows = read_log(tiny_cfg.out)
    assert [int(r["step"]) for r in rows if r["loss"]][:6] == [1, 2, 3, 4, 5, 6]

    trainer, _ = build_trainer(tiny_cfg, progress=False, max_steps=1)
    trainer.model = PeftModel.from_pretrained(trainer.model.get_base_model(), str(adapter))
    after = trainer.evaluate(trainer.train_dataset.select(range(8)))["eval_loss"]
    assert after < before - 0.1, (before, after)
    changed = {n: p for n, p in trainer.model.named_parameters() if "lora_B" in n}
    assert any(bool((p != 0).any()) for p in changed.values())

    prompt = build_prompt("Is the JBL Flip 5 waterproof?", [])
    base = HFGenerator(GenerationConfig(max_new_tokens=16)).generate(prompt)
    tuned = HFGenerator(GenerationConfig(max_new_tokens=16, adapter=str(adapter), load_in_4bit=True)).generate(prompt)
    assert tuned != base
    # The CPU default (full-precision base, stock transformers) applies the adapter as trained: on every CPU.
    full = HFGenerator(GenerationConfig(max_new_tokens=16, adapter=str(adapter)))
    from safetensors.torch import load_file

    saved = load_file(adapter / "adapter_model.safetensors")
    loaded = {n: p for n, p in full.model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved)
    for name, value in saved.items():
        match = [p for n, p in loaded.items() if n.replace(".default", "").endswith(name.split("base_model.model.", 1)[-1])]
        assert len(match) == 1 and torch.allclose(match[0].float(), value.float()), name
    assert full.generate(prompt) != base

    # Exported for the in-process engine (merged, fp16): it answers as the adapter on its base does.
    from amzqa.generation.openvino import openvino_available

    if openvino_available():
        from amzqa.generation import load_generator
        from amzqa.training.export import export_model

        out = tiny_cfg.out / "export-openvino"
        manifest = export_model(out, "openvino", adapter=adapter)
        assert manifest["prompt_template"] == template_fingerprint() and "openvino_model.xml" in manifest["files"]
        exported = load_generator("openvino", config=GenerationConfig(max_new_tokens=16, model=str(out)))
        reference = HFGenerator(GenerationConfig(max_new_tokens=16, adapter=str(adapter), dtype="float32"))
        assert exported.generate(prompt) == reference.generate(prompt) != base


def test_answer_only_head_gives_the_full_heads_loss_and_gradients(tiny_cfg):
    """Our head scores only answer positions; loss and every LoRA gradient must equal the model's own full-vocabulary
    loss with the prompt masked (trl's path), on a real padded batch, with LoRA B non-zero so all gradients flow."""
    from amzqa.training.answer_head import answer_only_loss
    from amzqa.training.train import build_trainer

    trainer, _ = build_trainer(tiny_cfg.replace(lora_dropout=0.0), progress=False, max_steps=1)
    assert type(trainer).__name__ == "AnswerHeadSFTTrainer"
    model = trainer.model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    batch = next(iter(trainer.get_train_dataloader()))
    assert (batch["attention_mask"] == 0).any()  # padded rows: the mask must keep their padding out of the loss
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return loss.item(), [p.grad.clone() for p in params]

    answer_tokens = (batch["labels"][:, 1:] != -100).sum()
    ours, g_ours = grads(answer_only_loss(model, dict(batch), answer_tokens)[0])
    full, g_full = grads(model(**batch, use_cache=False).loss)
    assert ours == pytest.approx(full, rel=1e-5)
    assert sum(bool(g.abs().sum() > 0) for g in g_full) == len(params)
    for a, b in zip(g_ours, g_full):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    # Normalised by a larger count (gradient accumulation), the loss scales down accordingly.
    assert answer_only_loss(model, dict(batch), 2 * answer_tokens)[0].item() == pytest.approx(ours / 2, rel=1e-5)


def test_lora_in_the_top_layers_only_stops_backpropagation_there(tiny_cfg):
    """lora_layers: N adapts the last N decoder layers (every linear module in them) and nothing below needs a
    gradient, so backward stops at the lowest adapted layer: that is where the CPU recipe's time goes."""
    from amzqa.training.train import build_trainer

    trainer, _ = build_trainer(tiny_cfg.replace(lora_layers=2), progress=False, max_steps=1)
    model = trainer.model.train()
    total = model.config.num_hidden_layers
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layer_of = {int(n.split(".layers.")[1].split(".")[0]) for n in trainable}
    assert layer_of == {total - 2, total - 1}
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                     "down_proj"}
    seen = {}
    layers = model.get_base_model().model.layers
    hooks = [layers[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).requires_grad))
             for i in (0, total - 3, total - 2)]
    batch = next(iter(trainer.get_train_dataloader()))
    model(**batch, use_cache=False).loss.backward()
    for h in hooks:
        h.remove()
    assert seen == {0: False, total - 3: False, total - 2: True}  # the graph starts at the first adapted layer
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    with pytest.raises(ConfigError, match="decoder layers"):
        build_trainer(tiny_cfg.replace(lora_layers=total + 1), progress=False, max_steps=1)


@pytest.mark.slow  # ~27 s: a full fine-tune and its reload (make test-slow; CI runs it)
def test_full_fine_tuning_trains_the_top_layers_and_saves_a_model_the_generator_loads(tiny_cfg, tmp_path):
    """method: full trains the weights of the top lora_layers layers (the embeddings and lower layers stay as they
    were), saves a whole safetensors model with its provenance and abstention threshold, and answers as a model."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from amzqa.evaluation.generation_eval import GenerationEvalConfig, make_system
    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.io.layout import ABSTENTION_CALIBRATION, trained_prompt
    from amzqa.models import resolve_model
    from amzqa.training.train import build_trainer, train

    with pytest.raises(ConfigError, match="load_in_4bit: false"):
        TrainConfig(method="full")
    # the default stays out of a run's identity: a LoRA run folder written before the setting existed resumes
    assert "method" not in tiny_cfg.identity() and tiny_cfg.replace(
        method="full", load_in_4bit=False, double_quant=False).identity()["method"] == "full"
    cfg = tiny_cfg.replace(out=tmp_path / "full", method="full", load_in_4bit=False, double_quant=False, lora_layers=2,
                           max_steps=3, learning_rate=1e-4)
    trainer, _ = build_trainer(cfg, progress=False, max_steps=1)
    total = trainer.model.config.num_hidden_layers
    trained = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {int(n.split(".layers.")[1].split(".")[0]) for n in trained if ".layers." in n} == {total - 2, total - 1}
    assert not any("embed" in n for n in trained) and not hasattr(trainer.model, "peft_config")
    before = trainer.evaluate(trainer.train_dataset.select(range(8)))["eval_loss"]
    del trainer

    prov = train(cfg, progress=False)
    folder = cfg.out / "model"
    assert prov["method"] == "full" and prov["steps"] == 3 and not (cfg.out / "adapter").exists()
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    assert trained_prompt(folder)["k"] == 2 and (folder / ABSTENTION_CALIBRATION).is_file()
    saved = load_file(folder / "model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(resolve_model("smollm2"), dtype=torch.float32).state_dict()
    top, low = f"model.layers.{total - 1}.mlp.down_proj.weight", "model.layers.0.mlp.down_proj.weight"
    assert saved[top].dtype == torch.float32 and not torch.equal(saved[top], base[top])
    assert torch.equal(saved[low], base[low]) and torch.equal(saved["model.embed_tokens.weight"], base["model.embed_tokens.weight"])

    trainer, _ = build_trainer(cfg.replace(model=str(folder), out=tmp_path / "again"), progress=False, max_steps=1)
    after = trainer.evaluate(trainer.train_dataset.select(range(8)))["eval_loss"]
    assert after < before - 0.05, (before, after)
    prompt = build_prompt("Is the JBL Flip 5 waterproof?", [])
    tuned = HFGenerator(GenerationConfig(max_new_tokens=16, model=str(folder)))
    assert tuned.abstain_threshold is not None  # read from the model's folder, as for a merged model
    assert tuned.generate(prompt) != HFGenerator(GenerationConfig(max_new_tokens=16)).generate(prompt)
    name, gen = make_system(f"model:{folder}@hf", GenerationEvalConfig())
    assert name == "model:full@hf" and gen.path == str(folder)


def test_eos_is_a_trained_label(tiny_cfg):
    from amzqa.training.train import build_trainer

    trainer, _ = build_trainer(tiny_cfg, progress=False, max_steps=1)
    batch = next(iter(trainer.get_train_dataloader()))
    eos = trainer.processing_class.eos_token_id
    for labels in batch["labels"]:
        kept = labels[labels != -100]
        assert len(kept) > 0 and eos in kept.tolist()  # the model learns to stop


def test_every_label_masked_is_refused(tiny_cfg):
    """trl's real collator, fed an example whose completion mask lost every token (as a template mismatch would)."""
    from amzqa.training.train import build_trainer

    trainer, _ = build_trainer(tiny_cfg, progress=False, max_steps=1)
    good = dict(trainer.train_dataset[0])
    bad = dict(good, labels=[-100] * len(good["labels"]))
    assert trainer.data_collator([good])["labels"].ne(-100).any()
    with pytest.raises(ConfigError, match="every label masked"):
        trainer.data_collator([good, bad])


@pytest.mark.slow  # ~25 s: a QLoRA run stopped and resumed (make test-slow; CI runs it)
def test_training_resumes_from_the_last_checkpoint(tiny_cfg):
    from amzqa.training.train import read_log, train

    if not (tiny_cfg.out / "checkpoints" / "checkpoint-6").is_dir():  # when run on its own
        train(tiny_cfg, progress=False)
    # The first run saved checkpoint-3 and checkpoint-6; ask for 8 steps: it continues from 6.
    prov = train(tiny_cfg.replace(max_steps=8), progress=False)
    assert prov["steps"] == 8
    steps = [int(r["step"]) for r in read_log(tiny_cfg.out) if r["loss"]]
    assert steps.count(7) == 1 and steps.count(1) == 1  # steps 1..6 were not trained again


def test_best_threshold_separates_and_prefers_answering():
    from amzqa.training.abstention import best_threshold

    assert best_threshold([-5.0, -4.0, -1.0, -0.5], [False, False, True, True]) == (-2.5, 1.0)
    threshold, accuracy = best_threshold([-3.0, -2.0], [False, False])
    assert threshold > -2.0 and accuracy == 1.0  # nothing to abstain on: the cut lies above every score
    # Two cuts are equally accurate (3 of 4): the one that abstains on fewer questions wins.
    assert best_threshold([-1.0, -2.0, -3.0, -4.0], [True, False, True, False]) == (-1.5, 0.75)
    # Imbalanced (8 answerable, 2 absent): plain accuracy is best never abstaining (0.8); balanced accuracy abstains
    # on the two highest scores although one answerable case lies between them.
    scores = [-9.0, -8.0, -7.0, -6.0, -5.0, -4.0, -3.0, -1.5, -1.0, -0.5]
    labels = [False] * 7 + [True, False, True]
    assert best_threshold(scores, labels) == (-2.25, 0.9)
    with pytest.raises(ConfigError):
        best_threshold([], [])


def test_calibrated_abstention_decides_before_generating(tiny_cfg, sft_dir, tmp_path):
    import shutil

    from datasets import load_from_disk

    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.io.layout import ABSTENTION_CALIBRATION
    from amzqa.training.abstention import calibrate_abstention
    from amzqa.training.train import train

    if not (tiny_cfg.out / "adapter").is_dir():  # when run on its own
        train(tiny_cfg, progress=False)
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_cfg.out / "adapter", adapter)
    (adapter / ABSTENTION_CALIBRATION).unlink(missing_ok=True)
    cfg = GenerationConfig(max_new_tokens=12, adapter=str(adapter))
    prompt = build_prompt("Is the JBL Flip 5 waterproof?", [])

    uncalibrated = HFGenerator(cfg)
    assert uncalibrated.abstain_threshold is None and uncalibrated.abstains(prompt) is None
    # Fitted on the eval split with the real model: saved beside the adapter, or nothing when a class is missing.
    labels = set(load_from_disk(str(sft_dir / "dataset"))["eval"]["abstain"])
    result = calibrate_abstention(adapter, sft_dir, uncalibrated)
    assert (result is not None) == (labels == {True, False}) == (adapter / ABSTENTION_CALIBRATION).is_file()
    shows = list(load_from_disk(str(sft_dir / "dataset"))["eval"]["shows_fact"])  # never gated at inference: not fitted on
    assert result is None or result["eval_examples"] == shows.count(False)

    ready = uncalibrated.answer_logprob(prompt, ABSTAIN_MESSAGE)
    for threshold, abstains in ((ready - 1.0, True), (ready + 1.0, False)):
        (adapter / ABSTENTION_CALIBRATION).write_text(json.dumps({"threshold": threshold}))
        gen = HFGenerator(cfg)
        assert gen.abstain_threshold == Threshold(threshold) and gen.abstains(prompt) is abstains
        text = gen.generate(prompt)
        assert "".join(gen.stream(prompt)) == text
        if abstains:
            assert text == ABSTAIN_MESSAGE
        else:  # the abstention message cannot even start
            assert text and not text.startswith(" ".join(ABSTAIN_MESSAGE.split()[:2]))
    assert HFGenerator(cfg.replace(calibrated_abstention=False)).abstain_threshold is None


def test_merged_model_matches_adapter_on_base(tiny_cfg, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from amzqa.io.layout import ABSTENTION_CALIBRATION
    from amzqa.training.merge import load_adapter_model, merge_adapter

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_cfg.out / "adapter", adapter)
    (adapter / ABSTENTION_CALIBRATION).write_text(json.dumps({"threshold": -3.5}))
    merge_adapter(adapter, tmp_path / "merged", dtype="float32")
    # The fitted threshold travels with the weights it was fitted for.
    assert json.loads((tmp_path / "merged" / ABSTENTION_CALIBRATION).read_text())["threshold"] == -3.5
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    reference, _, _ = load_adapter_model(adapter, dtype="float32")
    tok = AutoTokenizer.from_pretrained(tmp_path / "merged")
    prompts = ["Is the JBL Flip 5 waterproof?", "Who illustrated Goodnight Moon?", "What ages is the LEGO box for?"]
    for p in prompts:
        ids = tok(render(tok, build_prompt(p, [])), return_tensors="pt")
        with torch.no_grad():
            a, b = merged(**ids).logits, reference(**ids).logits
        assert torch.allclose(a, b, atol=1e-3, rtol=1e-3)
        assert torch.equal(a.argmax(-1), b.argmax(-1))
        out_a = merged.generate(**ids, max_new_tokens=12, do_sample=False)
        out_b = reference.generate(**ids, max_new_tokens=12, do_sample=False)
        assert torch.equal(out_a, out_b)


def test_gpu_recipe_is_refused_on_cpu():
    from tests.conftest import ROOT

    cfg = TrainConfig.from_yaml(ROOT / "configs/train/mistral-7b-instruct-v0.3-qlora.yaml")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="CUDA GPU"):
        cfg.check_machine()
    with pytest.raises(ConfigError, match="need a GPU"):
        TrainConfig(device="cpu", optim="paged_adamw_8bit")


def test_bf16_on_cpu_only_where_native(monkeypatch):
    from amzqa.generation import hf

    cfg = TrainConfig(device="cpu", bf16=True)
    monkeypatch.setattr(hf, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match="emulated"):
        cfg.check_machine()
    assert TrainConfig(device="cpu", bf16="auto").use_bf16("cpu") is False
    monkeypatch.setattr(hf, "cpu_has_native_bf16", lambda: True)
    assert cfg.check_machine() == "cpu" and TrainConfig(device="cpu", bf16="auto").use_bf16("cpu") is True
    with pytest.raises(ConfigError, match="bf16 must be"):
        TrainConfig(bf16="yes")


def test_torch_capped_at_avx2_counts_as_no_native_bf16():
    import subprocess
    import sys

    probe = "from amzqa.generation.hf import cpu_has_native_bf16; print(cpu_has_native_bf16())"
    capped = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})
    assert capped.returncode == 0 and capped.stdout.strip() == "False", capped.stderr


@pytest.mark.slow  # a second QLoRA run beside test_qlora_trains_and_the_adapter_changes_the_generator
def test_qlora_trains_in_bf16_on_a_native_bf16_cpu(tiny_cfg, tmp_path):
    import math

    from amzqa.generation.hf import cpu_has_native_bf16
    from amzqa.training.train import build_trainer

    if torch.cuda.is_available() or not cpu_has_native_bf16():
        pytest.skip("needs a CPU with native bf16 (AVX512-BF16/AMX)")
    cfg = tiny_cfg.replace(bf16="auto", out=tmp_path / "bf16", max_steps=2, save_steps=10)
    trainer, _ = build_trainer(cfg, progress=False)
    assert trainer.args.bf16 and {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {torch.bfloat16}
    assert trainer.model.get_base_model().config.quantization_config.bnb_4bit_compute_dtype == torch.bfloat16
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    assert any(bool((p != 0).any()) for n, p in trainer.model.named_parameters() if "lora_B" in n)


def test_abstention_examples_can_come_with_answerable_twins(sample_corpus, sample_artifacts, retrievers, tmp_path):
    from datasets import load_from_disk

    out = tmp_path / "pairs"
    build_sft_data(SFTDataConfig(corpus=sample_corpus, artifacts=sample_artifacts, out=out, k=3, excerpt_chars=80,
                                 max_products=40, questions_per_product=1, fact_questions_per_product=0, abstain_fraction=0.5, eval_fraction=0.0,
                                 abstain_pairs=True), retrievers=retrievers)
    rows = list(load_from_disk(str(out / "dataset"))["train"])
    abstains = [e for e in rows if e["abstain"]]
    assert abstains and len(rows) == 40 + len(abstains)  # every product answered once, plus its abstention twin
    for ab in abstains:
        twin = [e for e in rows if e["question"] == ab["question"] and not e["abstain"]]
        assert len(twin) == 1 and twin[0]["uid"] == ab["uid"] and ab["uid"] not in ab["source_uids"]
        # Same distractors: the twin drops the last one to make room for the product.
        assert [u for u in twin[0]["source_uids"] if u != ab["uid"]] == ab["source_uids"][:2]


def test_fact_questions_get_their_own_abstention_cut():
    from amzqa.training.abstention import report_by_question

    cut = Threshold(-5.0, fact=-2.0)
    assert cut.for_question("what ages is the LEGO Classic box for?") == -2.0
    assert cut.for_question("do you have the lego classic box?") == -5.0
    assert Threshold(-5.0).for_question("what ages is it for?") == -5.0
    examples = [{"question": q} for q in ("what ages is it for?", "how many pages is it?", "do you have dune?", "any kettle?")]
    report = report_by_question(examples, [-3.0, -1.0, -4.0, -6.0], [False, True, False, True], [True, True, False, False], cut)
    assert report == {"fact_refused": {"n": 1, "rate": 0.0}, "other_refused": {"n": 1, "rate": 1.0},
                      "absent_abstained": {"n": 2, "rate": 0.5}}


def test_base_model_keywords_put_each_rank_on_its_own_gpu_and_store_nf4_in_the_compute_dtype():
    """Multi-GPU launches: rank r loads onto GPU r (not all onto 0); the 4-bit storage dtype equals the compute dtype
    (FSDP-QLoRA shards it with the rest). Pure logic: no GPU here."""
    import torch

    from amzqa.training.config import TrainConfig
    from amzqa.training.train import base_load_kwargs

    cfg = TrainConfig(bf16=True, device="auto")
    for rank in (0, 1, 3):
        kw = base_load_kwargs(cfg, "cuda", "padding_free", rank)
        assert kw["device_map"] == {"": rank}
        q = kw["quantization_config"]
        assert q.bnb_4bit_quant_storage == torch.bfloat16 == q.bnb_4bit_compute_dtype == kw["dtype"]
        assert kw["attn_implementation"] == "flash_attention_2"
    cpu = base_load_kwargs(TrainConfig(bf16=False), "cpu", "length_grouped")
    assert "device_map" not in cpu and cpu["quantization_config"].bnb_4bit_quant_storage == torch.uint8


def test_no_sft_prompt_shows_a_heldout_product(sft_dir):
    """Held-out products (the evaluation's) appear in no example: not as the gold, not as a distractor, not as an
    abstention example's source."""
    from datasets import load_from_disk

    from amzqa.data.split import is_heldout

    man = json.loads((sft_dir / "manifest.json").read_text())
    rate = man["config"]["heldout_rate"]
    heldout = set(json.loads((sft_dir / "heldout.json").read_text())["uids"])
    ds = load_from_disk(str(sft_dir / "dataset"))
    examples = [e for split in ds for e in ds[split]]
    shown = {u for e in examples for u in e["source_uids"]}
    assert heldout and shown and not shown & heldout, sorted(shown & heldout)[:5]
    assert not any(is_heldout(u, rate) for u in shown)
    # ...and the prompts still carry k sources where the index has enough products (the pool makes room for them)
    answered = [e for e in examples if not e["abstain"]]
    assert sum(len(e["source_uids"]) == man["prompt"]["k"] for e in answered) >= 0.9 * len(answered)


@pytest.mark.parametrize("ratio", [1.0, 3.0, -0.1])
def test_warmup_ratio_must_be_a_share_of_the_steps(ratio):
    """transformers v5 reads warmup_steps >= 1 as a number of steps: a ratio of 1 or more would silently change
    meaning (and negative is nonsense)."""
    with pytest.raises(ConfigError, match=r"warmup_ratio .* \[0, 1\)"):
        TrainConfig(warmup_ratio=ratio)
    with pytest.raises(ConfigError, match="warmup_ratio"):
        TrainConfig().replace(warmup_ratio=ratio)
    assert TrainConfig(warmup_ratio=0.0).warmup_ratio == 0.0 and TrainConfig(warmup_ratio=0.99).warmup_ratio == 0.99


def test_a_run_resumes_only_with_its_own_data_recipe_and_base(sft_dir, sample_corpus, sample_artifacts, retrievers,
                                                              tmp_path):
    """Train 2 steps on SFT set A; the same folder with set B (or another recipe) is refused, naming --overwrite,
    before the base model loads and without touching the run; with A it resumes; --overwrite starts B afresh."""
    import time

    from amzqa.training.train import RUN_KEY, adapter_provenance, read_log, train
    from tests.test_recipes_tiny import tiny_checkpoint

    base = tiny_checkpoint("tinyllama-1.1b-chat-qlora.yaml", tmp_path / "base")  # a tiny Llama: seconds per run
    other = tmp_path / "sft-b"
    build_sft_data(SFTDataConfig(corpus=sample_corpus, artifacts=sample_artifacts, out=other, k=2, excerpt_chars=80,
                                 max_products=12, questions_per_product=1, fact_questions_per_product=0, seed=1,
                                 eval_fraction=0.0), retrievers=retrievers)
    cfg = TrainConfig(model=base, chat_template="zephyr", data=sft_dir, out=tmp_path / "run", max_steps=2,
                      per_device_train_batch_size=2, save_steps=2, logging_steps=1, eval_steps=0, max_length=512,
                      device="cpu", load_in_4bit=False, double_quant=False, lora_r=4, lora_alpha=8, warmup_ratio=0.0,
                      calibrate_abstention=False)
    prov_a = train(cfg, progress=False)
    key = json.loads((cfg.out / RUN_KEY).read_text())
    assert prov_a["steps"] == 2 and key["parts"]["data_checksum"] == prov_a["data"]["checksum"]
    before = {p: p.stat().st_mtime_ns for p in cfg.out.rglob("*") if p.is_file()}

    for changed, what in ((cfg.replace(data=other), "data_checksum"), (cfg.replace(lora_r=8), "recipe.lora_r")):
        started = time.perf_counter()
        with pytest.raises(ConfigError, match=f"holds another run \\(changed: {re.escape(what)}\\).*--overwrite"):
            train(changed, progress=False)
        assert time.perf_counter() - started < 10  # refused before the base model loads
    assert {p: p.stat().st_mtime_ns for p in cfg.out.rglob("*") if p.is_file()} == before  # nothing written
    assert adapter_provenance(cfg.out / "adapter")["data"]["checksum"] == prov_a["data"]["checksum"]

    prov = train(cfg.replace(max_steps=3), progress=False)  # the same run, extended: resumed from checkpoint-2
    assert prov["steps"] == 3
    steps = [int(r["step"]) for r in read_log(cfg.out) if r["loss"]]
    assert steps == [1, 2, 3]  # one log, steps 1-2 not trained again

    prov_b = train(cfg.replace(data=other, max_steps=1, overwrite=True), progress=False)
    assert prov_b["steps"] == 1 and prov_b["data"]["checksum"] != prov_a["data"]["checksum"]
    assert [int(r["step"]) for r in read_log(cfg.out) if r["loss"]] == [1]  # a new log, not appended to A's
    assert json.loads((cfg.out / RUN_KEY).read_text())["parts"]["data_checksum"] == prov_b["data"]["checksum"]


def test_train_refuses_a_folder_it_did_not_write(sft_dir, tmp_path):
    """--overwrite on a folder that is not an amzqa run (a mistyped --out) is refused and the folder kept; without
    --overwrite a non-empty folder that is not a run is refused too (a later --overwrite would then remove it)."""
    from amzqa.errors import ArtifactError
    from amzqa.training.train import train

    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    cfg = TrainConfig(data=sft_dir, out=folder, max_steps=1, device="cpu", calibrate_abstention=False)
    with pytest.raises(ArtifactError, match=f"refusing to replace {re.escape(str(folder))}: it is not empty and holds no "
                                            "amzqa artifact"):
        train(cfg.replace(overwrite=True), progress=False)
    with pytest.raises(ConfigError, match="is not empty and is not an amzqa run folder"):
        train(cfg, progress=False)
    assert (folder / "keep.txt").read_text() == "mine" and sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
