"""Each GPU recipe's code path on this CPU, with a tiny randomly initialised model of the recipe's architecture
(Mistral with its sliding window, Llama as TinyLlama, Phi-3 with fused projections): real tokenizer files carrying
the real model's own chat template (Mistral-7B-Instruct-v0.3's is not prefix-stable: the recipe's shipped template
must replace it), the recipe loaded as it ships with only the model,
the sizes and the GPU-only settings (device, optimiser, bf16) overridden; then train -> adapter with provenance ->
merge -> QA answers -> generation evaluation."""

from __future__ import annotations

import os
import re

import pytest
import torch

from tests.conftest import ROOT
from tests.test_chat_templates import MISTRAL_V03, PHI3, TINYLLAMA

ARCHITECTURES = {
    "mistral-7b-instruct-v0.3-qlora.yaml": ("MistralConfig", {"num_key_value_heads": 2, "sliding_window": 64}),
    # TinyLlama's grouped-query attention (heads share key/value); bitsandbytes' CPU kernels want 32-wide outputs
    "tinyllama-1.1b-chat-qlora.yaml": ("LlamaConfig", {"num_key_value_heads": 1, "hidden_size": 128, "intermediate_size": 256}),
    "phi-3-mini-4k-instruct-qlora.yaml": ("Phi3Config", {"num_key_value_heads": 4}),
}
OWN_TEMPLATES = {"mistral-7b-instruct-v0.3-qlora.yaml": MISTRAL_V03, "tinyllama-1.1b-chat-qlora.yaml": TINYLLAMA,
                 "phi-3-mini-4k-instruct-qlora.yaml": PHI3}  # what each real model's tokenizer carries
CPU_OVERRIDES = {"device": "cpu", "bf16": False, "optim": "adamw_torch", "max_steps": 8, "per_device_train_batch_size": 2,
                 "gradient_accumulation_steps": 1, "max_length": 512, "save_steps": 100, "eval_steps": 0,
                 "logging_steps": 1, "calibrate_abstention": False, "warmup_ratio": 0.0}


def tiny_checkpoint(recipe: str, folder) -> str:
    import transformers

    from amzqa.models import default_generator_path

    tok = transformers.AutoTokenizer.from_pretrained(default_generator_path())
    tok.chat_template = OWN_TEMPLATES[recipe]  # like the real base's files: the recipe's shipped template must win
    config_name, extra = ARCHITECTURES[recipe]
    sizes = {"hidden_size": 64, "intermediate_size": 128, **extra}
    config = getattr(transformers, config_name)(
        vocab_size=len(tok), num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=1024, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **sizes)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)


# One architecture in make test; the others (same code path, other model classes) in make test-slow, for time.
@pytest.mark.parametrize("recipe", [pytest.param(r, marks=() if r.startswith("mistral") else pytest.mark.slow)
                                    for r in sorted(ARCHITECTURES)])
def test_recipe_trains_merges_answers_and_evaluates_on_a_tiny_model_of_its_architecture(
        recipe, sft_dir, sample_artifacts, retrievers, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from amzqa.answer.pipeline import QA
    from amzqa.evaluation.generation_eval import GenerationEvalConfig, evaluate_generation
    from amzqa.generation import GenerationConfig, HFGenerator
    from amzqa.generation.chat import load_template
    from amzqa.training.config import TrainConfig
    from amzqa.training.merge import merge_adapter
    from amzqa.training.train import adapter_provenance, build_trainer, train

    shipped = TrainConfig.from_yaml(ROOT / "configs" / "train" / recipe)
    base = tiny_checkpoint(recipe, tmp_path / "base")
    cfg = shipped.replace(model=base, data=sft_dir, out=tmp_path / "run", **CPU_OVERRIDES)

    trainer, facts = build_trainer(cfg, progress=False)
    # The recipe's settings reached the trainer (a silent fallback would be a failure).
    assert facts["chat_template"] == shipped.chat_template
    assert trainer.processing_class.chat_template == load_template(shipped.chat_template)  # over the model's own
    assert trainer.args.learning_rate == shipped.learning_rate and trainer.args.lr_scheduler_type.value == shipped.lr_scheduler_type
    assert trainer.args.gradient_checkpointing == shipped.gradient_checkpointing
    peft_cfg = trainer.model.peft_config["default"]
    assert peft_cfg.r == shipped.lora_r and peft_cfg.lora_alpha == shipped.lora_alpha
    assert set(peft_cfg.target_modules) == set(shipped.target_modules.split(","))
    assert any("Linear4bit" in type(m).__name__ for m in trainer.model.modules())  # NF4, double quant
    assert trainer.model.get_base_model().config.quantization_config.bnb_4bit_use_double_quant
    batch = trainer.train_dataset.select(range(4))
    before = trainer.evaluate(batch)["eval_loss"]
    del trainer

    prov = train(cfg, progress=False)
    adapter = cfg.out / "adapter"
    assert prov["steps"] == 8 and prov["chat_template"] == shipped.chat_template
    assert adapter_provenance(adapter)["base_path"] == base
    trainer, _ = build_trainer(cfg, progress=False, max_steps=1)
    trained = PeftModel.from_pretrained(trainer.model.get_base_model(), str(adapter))
    trainer.model = trained
    after = trainer.evaluate(batch)["eval_loss"]
    assert after < before, (before, after)
    lora_b = {n: p for n, p in trained.named_parameters() if "lora_B" in n}
    targets = {n.split(".lora_B")[0].rsplit(".", 1)[-1] for n in lora_b}
    assert targets == set(shipped.target_modules.split(","))  # every target module got an adapter...
    assert all(bool((p != 0).any()) for p in lora_b.values())  # ...and every one received gradients
    del trainer, trained

    merged = tmp_path / "merged"
    merge_adapter(adapter, merged, dtype="float32")
    ids = torch.tensor([[1, 500, 900, 1200, 40]])
    with torch.no_grad():
        on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
        a = on_base(ids).logits
        b = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)(ids).logits
    assert torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())

    gen_cfg = GenerationConfig(model=base, adapter=str(adapter), max_new_tokens=8, calibrated_abstention=False)
    qa = QA.from_dir(sample_artifacts, generator=HFGenerator(gen_cfg), adapter=str(adapter))
    answer = qa.ask("Is the JBL Flip 5 waterproof?")
    assert answer.sources and isinstance(answer.text, str)
    assert qa.config.k == 2  # the adapter's trained prompt shape

    report = evaluate_generation(GenerationEvalConfig(artifacts=sample_artifacts, n=4, max_new_tokens=8, bootstrap=20,
                                                      abstention_auc=False),
                                 rset=retrievers, progress=False, systems=[("tiny", HFGenerator(gen_cfg))])
    assert report["n_questions"] == 4 and "tiny" in report["systems"]


def test_a_base_whose_own_template_is_not_prefix_stable_is_refused_at_train_start(sft_dir, tmp_path):
    """The Mistral recipe without its chat_template: the base's own (v0.3) template would shift trl's completion
    mask, so the trainer is not even built; the message names the model and the template."""
    from amzqa.errors import ConfigError
    from amzqa.training.config import TrainConfig
    from amzqa.training.train import build_trainer

    base = tiny_checkpoint("mistral-7b-instruct-v0.3-qlora.yaml", tmp_path / "base")
    shipped = TrainConfig.from_yaml(ROOT / "configs" / "train" / "mistral-7b-instruct-v0.3-qlora.yaml")
    cfg = shipped.replace(model=base, data=sft_dir, out=tmp_path / "run", chat_template=None, **CPU_OVERRIDES)
    with pytest.raises(ConfigError, match=f"{re.escape(base)}: its own chat template renders the prompt differently once an "
                                          "answer follows it.*chat_template: mistral"):
        build_trainer(cfg, progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # two torch processes: ~40 s on 2 cores
def test_two_process_ddp_over_gloo_trains_the_tiny_model(sft_dir, tmp_path):
    """``accelerate launch`` with the shipped DDP config (2 processes; over gloo on this CPU, NCCL on GPUs): both ranks
    train on halves of each global batch, rank 0 alone clears the run folder and writes the adapter, and the first
    step's loss matches one process on the same global batch (before any update both see the same weights)."""
    import json
    import subprocess
    import sys

    base = tiny_checkpoint("mistral-7b-instruct-v0.3-qlora.yaml", tmp_path / "base")
    common = ["--config", "configs/train/mistral-7b-instruct-v0.3-qlora.yaml", "--model", base, "--data", str(sft_dir),
              "--device", "cpu", "--bf16", "false", "--optim", "adamw_torch", "--max-steps", "2",
              "--gradient-accumulation-steps", "1", "--max-length", "512", "--save-steps", "100", "--eval-steps", "0",
              "--logging-steps", "1", "--no-calibrate-abstention", "--batching", "padded", "--overwrite"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/ddp.yaml",
              "--mixed_precision", "no", "-m", "amzqa", "train"]  # the config's bf16 is for GPUs
    (tmp_path / "ddp").mkdir()
    (tmp_path / "ddp" / "train_config.yaml").write_text("model: earlier\n")  # an earlier run's folder: --overwrite
    (tmp_path / "ddp" / "stale.txt").write_text("from an earlier run")  # may replace it; cleared once, by rank 0
    ddp = subprocess.run(launch + common + ["--out", str(tmp_path / "ddp"), "--per-device-train-batch-size", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "AMZQA_ALLOCATOR": "mimalloc"})
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert not (tmp_path / "ddp" / "stale.txt").exists()
    assert ddp.stdout.count("adapter written") == 1
    prov = json.loads((tmp_path / "ddp" / "adapter" / "amzqa_adapter.json").read_text())
    assert prov["world_size"] == 2 and prov["steps"] == 2
    from amzqa.runtime.allocator import mimalloc_library

    # Asked to, amzqa train restarts itself on mimalloc where installed (amzqa/allocator.py), in every rank ...
    assert prov["allocator"] == ("mimalloc" if mimalloc_library() else "system")
    single = subprocess.run([sys.executable, "-m", "amzqa", "train", *common, "--out", str(tmp_path / "one"),
                             "--per-device-train-batch-size", "4"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                            env={k: v for k, v in os.environ.items() if k != "AMZQA_ALLOCATOR"})
    assert single.returncode == 0, single.stderr[-3000:]
    # ... and by default it keeps the C library's malloc (a GPU run gains nothing; a debugger would lose the process).
    assert json.loads((tmp_path / "one" / "adapter" / "amzqa_adapter.json").read_text())["allocator"] == "system"

    def first_loss(run):
        import csv

        rows = list(csv.DictReader(open(tmp_path / run / "train_log.csv")))
        return float(next(r["loss"] for r in rows if r["loss"])), int(next(r["num_tokens"] for r in rows if r["loss"]))

    (ddp_loss, ddp_tokens), (one_loss, one_tokens) = first_loss("ddp"), first_loss("one")
    assert ddp_tokens == one_tokens  # the same global batch
    assert abs(ddp_loss - one_loss) < 0.02, (ddp_loss, one_loss)


def test_a_recipe_naming_modules_the_model_lacks_is_refused_with_the_real_names(sft_dir, tmp_path):
    """Phi-3's fused projections named for a Mistral model: the message lists the modules that do exist."""
    import subprocess
    import sys

    base = tiny_checkpoint("mistral-7b-instruct-v0.3-qlora.yaml", tmp_path / "base")
    proc = subprocess.run([sys.executable, "-m", "amzqa", "train", "--config", "configs/train/phi-3-mini-4k-instruct-qlora.yaml",
                           "--model", base, "--data", str(sft_dir), "--out", str(tmp_path / "run"), "--device", "cpu",
                           "--bf16", "false", "--optim", "adamw_torch", "--max-steps", "1"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "['qkv_proj', 'gate_up_proj'] are not modules of MistralForCausalLM" in proc.stderr, proc.stderr[-2000:]
    assert "'q_proj'" in proc.stderr and "all-linear" in proc.stderr


def test_a_4bit_recipe_where_bitsandbytes_cannot_run_is_refused(sft_dir, tmp_path, monkeypatch):
    """Our refusal's logic, with the probe's answer replaced: the real probe passes on this CPU (see doctor's test)."""
    import amzqa.runtime.machine
    from amzqa.errors import ConfigError
    from amzqa.training.config import TrainConfig
    from amzqa.training.train import build_trainer

    monkeypatch.setattr(amzqa.runtime.machine, "bitsandbytes_runs", lambda device: (False, "RuntimeError: no kernel for cpu"))
    cfg = TrainConfig(data=sft_dir, out=tmp_path / "run", device="cpu", max_steps=1)
    with pytest.raises(ConfigError, match="bitsandbytes cannot run NF4 on cpu.*no kernel.*load_in_4bit: false"):
        build_trainer(cfg)


@pytest.mark.parametrize("env, gpus, device, message", [
    ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, 2, "cuda", "started 4 processes on this machine but it has 2 GPU"),
    ({"WORLD_SIZE": "1", "ACCELERATE_USE_FSDP": "true"}, 1, "cuda", "FSDP launch with one process"),
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, 2, "cuda", None),
    ({"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, 0, "cpu", None),  # DDP over gloo: the tested CPU launch
    ({"WORLD_SIZE": "2", "ACCELERATE_USE_FSDP": "true"}, 0, "cpu", "FSDP needs GPUs"),
])
def test_a_launch_that_does_not_fit_the_machine_is_refused(env, gpus, device, message):
    from amzqa.errors import ConfigError
    from amzqa.training.config import check_launch

    if message is None:
        check_launch(device, env, gpus)
    else:
        with pytest.raises(ConfigError, match=message):
            check_launch(device, env, gpus)


def test_the_shipped_fsdp_launch_on_a_cpu_is_refused_before_it_starts(sft_dir, tmp_path):
    """accelerate launch with configs/accelerate/fsdp_qlora.yaml really starts 2 ranks here; they stop with our
    message instead of accelerate's traceback about missing devices."""
    import subprocess
    import sys

    base = tiny_checkpoint("mistral-7b-instruct-v0.3-qlora.yaml", tmp_path / "base")
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           "configs/accelerate/fsdp_qlora.yaml", "--mixed_precision", "no", "-m", "amzqa", "train",
                           "--config", "configs/train/mistral-7b-instruct-v0.3-qlora.yaml", "--model", base, "--data",
                           str(sft_dir), "--out", str(tmp_path / "run"), "--device", "cpu", "--bf16", "false",
                           "--optim", "adamw_torch", "--max-steps", "1"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    # The first rank to stop makes torchrun SIGTERM the other, which may not have reached the check yet (seen under
    # load): at least one rank says it, and no rank gets as far as accelerate's device error or a traceback of ours.
    assert proc.stderr.count("amzqa: error: FSDP needs GPUs") >= 1, proc.stderr[-3000:]
    assert "no available devices" not in proc.stderr
    assert not re.search(r'File ".*/(amzqa|training)/[^"]+\.py"', proc.stderr), proc.stderr[-3000:]


def test_doctor_reports_this_machine_and_a_recipe():
    import json
    import subprocess
    import sys

    from amzqa.runtime.machine import bitsandbytes_runs, cpu_info

    facts = json.loads(subprocess.run([sys.executable, "-m", "amzqa", "doctor", "--json"], capture_output=True, text=True,
                                      cwd=ROOT, timeout=120).stdout)
    assert facts["isa"] == cpu_info()[1] and facts["cores"] >= 1 and facts["torch"].startswith("2.")
    assert facts["bnb_cpu"] == bitsandbytes_runs("cpu")[0] is True
    assert bitsandbytes_runs("meta")[0] is False  # a device without kernels: reported, never raised
    expected = "configs/train/smollm2-135m-select.yaml" if not facts["gpus"] else facts["recipe"]
    assert facts["recipe"] == expected and (ROOT / facts["recipe"]).is_file()
    text = subprocess.run([sys.executable, "-m", "amzqa", "doctor"], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    assert "ISA:" in text and "recipe:" in text and "bitsandbytes NF4" in text


@pytest.mark.parametrize("memory, recipe", [(80.0, "mistral-7b"), (16.0, "phi-3-mini"), (8.0, "tinyllama"), (4.0, "smollm2")])
def test_doctor_chooses_the_largest_recipe_the_gpu_fits(memory, recipe):
    from amzqa.runtime.machine import GPU, Machine

    m = Machine(cpu="x", isa=[], cores=2, torch="2", cuda="12", gpus=[GPU("card", memory, True, "9.0")], bnb_gpu=True)
    assert recipe in m.recipe()[0]
    assert "smollm2" in Machine(cpu="x", isa=[], cores=2, torch="2", cuda="12", gpus=[GPU("card", 80.0, True, "9.0")],
                                bnb_gpu=False).recipe()[0]


@pytest.mark.slow  # the benchmark script end to end: ~20 s
def test_gpu_check_runs_its_whole_path_on_a_tiny_mistral(sample_corpus, sample_artifacts, tmp_path):
    """benchmarks/gpu_check.py end to end on this CPU: the recipe as shipped (GPU settings overridden with --set),
    a tiny Mistral in place of the 7B, the sample catalog; the report names the machine and compares the systems."""
    import subprocess
    import sys

    base = tiny_checkpoint("mistral-7b-instruct-v0.3-qlora.yaml", tmp_path / "base")
    sets = [f"--set={k}={v}" for k, v in {"device": "cpu", "bf16": "false", "optim": "adamw_torch", "max_length": 512,
                                           "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                                           "eval_steps": 0, "save_steps": 100, "calibrate_abstention": "false"}.items()]
    report = tmp_path / "gpu-check.md"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--model", base, "--corpus", str(sample_corpus),
                           "--artifacts", str(sample_artifacts), "--steps", "2", "--sft-products", "30", "--eval-n", "6",
                           "--workdir", str(tmp_path / "work"), "--report", str(report), *sets],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = report.read_text()
    assert "ISA:" in text and "| steps | 2 |" in text and "peak GPU memory (GiB) | n/a (no GPU)" in text
    assert "| stated_and_cited |" in text and "| refused |" in text and "6 questions" in text
    assert (tmp_path / "work" / "train" / "adapter" / "amzqa_adapter.json").is_file()
