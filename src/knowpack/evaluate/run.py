"""`evaluate_run` and `evaluate_model`: what `knowpack eval` does (uptake and damage, as DESIGN.md defines).

    from knowpack.evaluate import evaluate_run, evaluate_model
    result = evaluate_run("runs/lora50", benchmarks=["world_mc"])        # writes runs/lora50/eval.json
    result = evaluate_model(model, tok, facts, out="out/eval-base")       # one model alone: out/eval.json
    result = evaluate_named_model("organism", "organism", out="out/e", pool=500)  # `knowpack eval --model`

A run is measured against its base model, on the facts its base probe covered, with the same probe settings
and seed (the run's `config.yaml`):
1. inputs.py checks the run folder and its base probe, before any model is loaded;
2. the base side: the noise floor (a second probe of the untouched base with seed + 1), the base model's
   benchmarks and its zero-shot and held-out-paraphrase answers on the implanted facts, all cached beside
   the base probe (base.py) and reused by every run evaluated against it;
3. the trained side: the run's weights put on that same base model (LoRA, LoKI or full), the re-probe of
   every fact into `RUN/eval/probe/` (resumable), the same zero-shot and paraphrase answers, the benchmarks;
4. the metrics (metrics.py): uptake, knowledge shift and retention beside the noise floor, behaviour and
   benchmarks beside the base model, written atomically to `RUN/eval.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate import metrics as m
from knowpack.evaluate.base import (
    cached_benchmarks,
    cached_uptake,
    find_repeat,
    noise_floor_records,
    same_model,
)
from knowpack.evaluate.inputs import RunInputs, eval_settings, read_probe, read_run
from knowpack.evaluate.uptake import UptakeMeasure, heldout_questions, idk_refusal_rate, summarize_uptake
from knowpack.facts.schema import Fact
from knowpack.io import write_json_atomic
from knowpack.train.config import EvalConfig

logger = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
ProgressBar = Callable[[str], Any]
"""`progress_bar(label)`: a context manager yielding a `progress(done, total)` callback (the CLI's bar)."""


def evaluate_run(
    run: str | Path,
    *,
    benchmarks: list[str] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    tasks_dir: str | None = None,
    noise_floor: bool | None = None,
    refusal_patterns: list[str] | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    progress_bar: ProgressBar | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a finished run against its base model; writes and returns `RUN/eval.json` (see the module
    docstring). Settings left None take the run's `eval` section (`EvalConfig`); `model` asserts which base
    model the run must have; `batch_size` overrides the probe's; `on_stage(name)` sees each stage."""
    from knowpack.methods import method_module
    from knowpack.models import load_model
    from knowpack.probe.run import probe

    started, timings = time.time(), {}
    stage = on_stage or (lambda name: logger.info("%s", name))
    overrides = dict(
        benchmarks=benchmarks,
        limit=limit,
        num_fewshot=num_fewshot,
        tasks_dir=tasks_dir,
        noise_floor=noise_floor,
        refusal_patterns=refusal_patterns,
    )
    inp = read_run(run, overrides, batch_size)
    config, ev = inp.config, inp.eval
    patterns = m.check_patterns(ev.refusal_patterns)
    if model is not None and not same_model(model, config.model.name):
        raise KnowpackError(f"--model {model} is not the run's base model ({config.model.name})")
    if ev.benchmarks:
        from knowpack.evaluate.benchmarks import check_tasks

        check_tasks(ev.benchmarks, ev.tasks_dir)

    stage(f"loading {config.model.name}")
    lm, tokenizer = load_model(
        config.model.name,
        dtype=config.model.dtype,
        device=device or config.train.device,
        trust_remote_code=config.model.trust_remote_code,
    )
    recorded = (inp.probe_settings or {}).get("model")
    if recorded is not None and not same_model(recorded, getattr(lm, "name_or_path", None)):
        raise KnowpackError(
            f"the base probe in {inp.probe_dir} was made with model {recorded}, not the run's "
            f"{config.model.name}"
        )
    fmt = config.train.format or config.probe.format
    probe_settings = {k: v for k, v in inp.probe_kwargs.items() if k != "batch_size"}
    trained_paraphrases = inp.mix.get("add") == "paraphrase"
    questions, source = _heldout(inp.implanted, trained_paraphrases)
    measure = UptakeMeasure(
        tokenizer, inp.implanted, inp.pool, inp.probe_kwargs, fmt, questions, progress_bar
    )

    repeat, noise = _noise_floor(inp, lm, tokenizer, stage, progress_bar, timings)
    base_bench, reused = _base_benchmarks(inp, lm, tokenizer, stage, progress_bar, timings)
    stage("uptake of the base model (zero-shot, held-out paraphrases)")
    with _timed(timings, "uptake_base"):
        key = {
            "model": str(config.model.name),
            "format": fmt,
            "probe": probe_settings,
            "base_probe": inp.probe_settings,
            "trained_paraphrases": trained_paraphrases,
        }
        base_uptake, uptake_reused = cached_uptake(
            inp.probe_dir, key, inp.implanted, lambda facts, base=lm: measure(base, "base", facts)
        )

    stage(f"loading the trained weights ({config.method.name})")
    trained = method_module(config.method.name).load(lm, inp.weights).eval()
    del lm  # a full run's model replaces the base: let it go (LoRA and LoKI keep it inside `trained`)
    stage("re-probing every fact")
    with _timed(timings, "probe"), _bar(progress_bar, "probe after training") as progress:
        after = probe(
            trained,
            tokenizer,
            inp.probed,
            **inp.probe_kwargs,
            exemplars=inp.pool,
            out=inp.run / "eval" / "probe",
            progress=progress,
        )
    with _timed(timings, "uptake"):
        after_uptake = measure(trained, "trained")
    benchmarks_block = None
    if ev.benchmarks:
        stage(f"benchmarks of the trained model: {', '.join(ev.benchmarks)}")
        with _timed(timings, "benchmarks"), _bar(progress_bar, "benchmarks (trained)") as progress:
            after_bench = _benchmarks(trained, tokenizer, ev.benchmarks, ev, progress)
        from knowpack.evaluate.benchmarks import compare_benchmarks

        benchmarks_block = compare_benchmarks(after_bench, base_bench, reused)

    before = inp.base_records
    ids = {f.id for f in inp.probed}
    untrained = ids - inp.trained
    result = {
        "kind": "run",
        "run": str(inp.run),
        "model": {"base": config.model.name, "method": config.method.name, "weights": str(inp.weights)},
        "facts": {
            "path": config.facts.path,
            "probed": len(ids),
            "trained": len(ids & inp.trained),
            "untrained": len(untrained),
            "implanted": len(inp.implanted),
        },
        "definitions": m.DEFINITIONS,
        "uptake": summarize_uptake(inp.implanted, before, after, base_uptake, after_uptake, source),
        "knowledge_shift": {
            "trained": m.compare_knowledge(before, after, ids & inp.trained, repeat),
            "untrained": m.compare_knowledge(before, after, untrained, repeat),
            "all": m.compare_knowledge(before, after, ids, repeat),
            "noise_floor": noise,
        },
        "behaviour": {
            "untrained": m.compare_behaviour(before, after, untrained, patterns, repeat),
            "all": m.compare_behaviour(before, after, ids, patterns, repeat),
        },
        "benchmarks": benchmarks_block,
        "settings": {
            "probe": probe_settings,
            "base_probe": str(inp.probe_dir),
            "base_uptake_reused": uptake_reused,
            "probe_after": str(inp.run / "eval" / "probe"),
            "train_format": fmt,
            "eval": asdict(ev),
            "refusal_patterns": list(patterns),
        },
        "provenance": _provenance(started, timings),
    }
    relabelled = [i for i in inp.mix.get("relabelled", []) if i in ids]
    if relabelled:
        result["uptake"]["idk_refusal_rate"] = idk_refusal_rate(before, after, relabelled, patterns)
    write_json_atomic(inp.run / EVAL_FILE, result)
    return result


def evaluate_model(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    *,
    out: str | Path,
    probe_kwargs: dict[str, Any] | None = None,
    exemplars: Sequence[Fact] | None = None,
    compare: str | Path | None = None,
    benchmarks: list[str] | None = None,
    limit: int | None = None,
    num_fewshot: int | None = None,
    tasks_dir: str | None = None,
    refusal_patterns: list[str] | None = None,
    progress_bar: ProgressBar | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate one model alone: probe `facts` into `out/probe/` (`probe_kwargs`: any `knowpack.probe`
    keyword, e.g. samples=0), its behaviour and `benchmarks`; writes and returns `out/eval.json`.

    `compare`: a probe folder of the same facts (another model's, or this one's with another seed) to set the
    probe beside: knowledge shift and behaviour against it, as `evaluate_run` reports them."""
    from knowpack.probe.run import probe

    started, out, timings = time.time(), Path(out), {}
    stage = on_stage or (lambda name: logger.info("%s", name))
    overrides = dict(
        benchmarks=benchmarks,
        limit=limit,
        num_fewshot=num_fewshot,
        tasks_dir=tasks_dir,
        refusal_patterns=refusal_patterns,
    )
    ev = eval_settings(EvalConfig(noise_floor=False), overrides)
    patterns = m.check_patterns(ev.refusal_patterns)
    before = read_probe(Path(compare))[0] if compare is not None else None
    if ev.benchmarks:
        from knowpack.evaluate.benchmarks import check_tasks

        check_tasks(ev.benchmarks, ev.tasks_dir)
    stage("probing")
    with _timed(timings, "probe"), _bar(progress_bar, "probe") as progress:
        records = probe(
            model,
            tokenizer,
            facts,
            **(probe_kwargs or {}),
            exemplars=exemplars,
            out=out / "probe",
            progress=progress,
        )
    benchmarks_block = None
    if ev.benchmarks:
        from knowpack.evaluate.benchmarks import compare_benchmarks

        stage(f"benchmarks: {', '.join(ev.benchmarks)}")
        with _timed(timings, "benchmarks"), _bar(progress_bar, "benchmarks") as progress:
            after = _benchmarks(model, tokenizer, ev.benchmarks, ev, progress)
        benchmarks_block = compare_benchmarks(after, None)
    settings = json.loads((out / "probe" / "summary.json").read_text())["settings"]
    counts, n = Counter(r["category"] for r in records), len(records)
    categories = m.categories_of(records)
    result: dict[str, Any] = {
        "kind": "model",
        "model": settings["model"],
        "facts": {"probed": n},
        "definitions": m.DEFINITIONS,
        "probe": {
            "folder": str(out / "probe"),
            "categories": {c: counts[c] for c in categories},
            "shares": {c: m.metric("category_share", counts[c] / n if n else None, None) for c in categories},
        },
        "behaviour": {"all": m.compare_behaviour(before, records, {r["id"] for r in records}, patterns)},
        "benchmarks": benchmarks_block,
        "settings": {
            "probe": settings,
            "eval": asdict(ev),
            "refusal_patterns": list(patterns),
            "compare": None if compare is None else str(compare),
        },
        "provenance": _provenance(started, timings),
    }
    if before is not None:
        result["knowledge_shift"] = {"all": m.compare_knowledge(before, records, {r["id"] for r in records})}
    write_json_atomic(out / EVAL_FILE, result)
    return result


def evaluate_named_model(
    model: str,
    facts: str | Sequence[Fact],
    *,
    out: str | Path,
    pool: int | None = None,
    pool_seed: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str = "auto",
    probe_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`knowpack eval --model M --facts F`: load `model` (Hub id, folder or `organism`) and `facts` (a facts
    file or `organism`, or the facts), probe a seeded sample of `pool` of them (`sample_facts` with
    `pool_seed`, None: the run config's default, so that the same pool gives the facts a run probes; every
    fact stays an exemplar) with probe seed `seed`, then `evaluate_model` (`options`: its keywords)."""
    from knowpack.facts import load_facts
    from knowpack.models import load_model
    from knowpack.probe.pool import sample_facts
    from knowpack.train.config import ProbeConfig

    fact_set = list(load_facts(facts)) if isinstance(facts, (str, Path)) else list(facts)
    chosen = sample_facts(fact_set, pool, ProbeConfig.pool_seed if pool_seed is None else pool_seed)
    lm, tokenizer = load_model(model, device=device, dtype=dtype)
    settings = {"seed": seed, **(probe_kwargs or {})}
    return evaluate_model(
        lm, tokenizer, chosen, out=out, probe_kwargs=settings, exemplars=fact_set, **options
    )


# ------------------------------------------------------------------------------------------------ internals


def _noise_floor(inp: RunInputs, lm: Any, tokenizer: Any, stage, progress_bar, timings: dict):
    """(repeat records, eval.json's `noise_floor` block), or (None, None) when switched off."""
    if not inp.eval.noise_floor:
        return None, None
    seed = inp.eval.noise_seed if inp.eval.noise_seed is not None else inp.config.probe.seed + 1
    earlier = find_repeat(inp.probe_dir, inp.probe_settings, {f.id for f in inp.probed}, seed)
    if earlier is None:
        stage(f"noise floor (the untouched base probed with seed {seed})")
    else:  # the probe below reads it: no bar to draw
        stage(f"noise floor (seed {seed}): reusing {earlier}")
        progress_bar = None
    with _timed(timings, "noise_floor"), _bar(progress_bar, f"noise floor (seed {seed})") as progress:
        repeat, folder, reused = noise_floor_records(
            lm,
            tokenizer,
            inp.probed,
            inp.base_records,
            folder=inp.probe_dir,
            settings=inp.probe_settings,
            probe_kwargs={**inp.probe_kwargs, "exemplars": inp.pool},
            seed=seed,
            progress=progress,
        )
    return repeat, {"folder": str(folder), "seed": seed, "reused": reused}


def _base_benchmarks(inp: RunInputs, lm: Any, tokenizer: Any, stage, progress_bar, timings: dict):
    """The base model's benchmark results (cached beside the base probe) and the tasks reused from there."""
    ev = inp.eval
    if not ev.benchmarks:
        return None, None
    stage(f"benchmarks of the base model: {', '.join(ev.benchmarks)}")
    key = {"model": str(inp.config.model.name), **_bench_key(ev)}
    with _timed(timings, "benchmarks_base"), _bar(progress_bar, "benchmarks (base)") as progress:
        done = []

        def compute(task: str) -> dict:
            if progress is not None:
                progress(len(done), len(ev.benchmarks))
            done.append(task)
            return _benchmarks(lm, tokenizer, [task], ev)

        result = cached_benchmarks(inp.probe_dir, ev.benchmarks, key, compute)
        if progress is not None:
            progress(len(ev.benchmarks), len(ev.benchmarks))
        return result


def _benchmarks(model: Any, tokenizer: Any, tasks: list[str], ev: EvalConfig, progress=None) -> dict:
    from knowpack.evaluate.benchmarks import run_benchmarks

    return run_benchmarks(
        model,
        tokenizer,
        tasks,
        include_path=ev.tasks_dir,
        limit=ev.limit,
        num_fewshot=ev.num_fewshot,
        batch_size=ev.batch_size,
        progress=progress,
    )


def _bench_key(ev: EvalConfig) -> dict[str, Any]:
    """The settings that change a benchmark score (the key of the base model's cached results)."""
    import lm_eval

    return {
        "limit": ev.limit,
        "num_fewshot": ev.num_fewshot,
        "tasks_dir": ev.tasks_dir,
        "lm_eval": lm_eval.__version__,
    }


def _heldout(facts: list[Fact], trained_paraphrases: bool) -> tuple[dict[str, list[str]], str | None]:
    questions, sources = {}, set()
    for f in facts:
        asked, source = heldout_questions(f, trained_paraphrases)
        if asked:
            questions[f.id] = asked
            sources.add(source)
    return questions, ", ".join(sorted(sources)) or None


def _provenance(started: float, timings: dict[str, float]) -> dict[str, Any]:
    from knowpack.runs import git_commit, versions

    return {
        "git_commit": git_commit(),
        "versions": versions(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
    }


@contextlib.contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    tick = time.time()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.time() - tick


def _bar(progress_bar: ProgressBar | None, label: str):
    return progress_bar(label) if progress_bar is not None else nullcontext(None)
