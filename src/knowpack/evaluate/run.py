"""`evaluate_run` and `evaluate_model`: what `knowpack eval` does (uptake and damage, docs/design.md §4).

    from knowpack.evaluate import evaluate_run, evaluate_model
    result = evaluate_run("runs/lora50", benchmarks=["world_mc"])        # writes runs/lora50/eval.json
    result = evaluate_model(model, tok, facts, out="out/eval-base")       # one model alone: out/eval.json
    result = evaluate_named_model("organism", "organism", out="out/e", sample_size=500)  # eval --model

A run is measured against its base model, on the facts its base probe covered, with the same probe settings
and seed (the run's `config.yaml`):
1. inputs.py checks the run folder and its base probe, before any model is loaded;
2. the base side: the measurement null (the run's method untrained, through its own save / load path:
   null.py), the noise floor (a second probe of the untouched base with seed + 1), the base model's
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from knowpack import models
from knowpack.errors import KnowpackError
from knowpack.evaluate import metrics as m
from knowpack.evaluate.base import (
    cached_benchmarks,
    cached_uptake,
    find_repeats,
    measurement_null_records,
    noise_floor_records,
    same_model,
)
from knowpack.evaluate.benchmarks import check_tasks, compare_benchmarks, run_benchmarks
from knowpack.evaluate.config import EvalConfig
from knowpack.evaluate.inputs import (
    RunInputs,
    _read_jsonl,
    check_control,
    eval_settings,
    read_probe,
    read_run,
)
from knowpack.evaluate.null import null_recipe, untrained_model
from knowpack.evaluate.uptake import UptakeMeasure, heldout_questions, idk_refusal_rate, summarize_uptake
from knowpack.facts import load_facts
from knowpack.facts.normalize import normalize
from knowpack.facts.schema import Fact
from knowpack.io import write_json_atomic
from knowpack.methods import method_module
from knowpack.probe.config import ProbeConfig
from knowpack.probe.pool import sample_facts
from knowpack.probe.run import probe
from knowpack.prompts import REFUSAL
from knowpack.runs import git_commit, trained_epochs, versions

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
    control: str | Path | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    progress_bar: ProgressBar | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate a finished run against its base model; writes and returns `RUN/eval.json` (see the module
    docstring). Settings left None take the run's `eval` section (`EvalConfig`; `noise_floor` switches the
    prompt-sensitivity re-probe); `control` is a training-control run (`eval.control`), evaluated first when
    it has no eval.json; `model` asserts which base model the run must have; `batch_size` overrides the
    probe's; `on_stage(name)` sees each stage."""
    started, timings = time.time(), {}
    stage = on_stage or (lambda name: logger.info("%s", name))
    overrides = dict(
        benchmarks=benchmarks,
        limit=limit,
        num_fewshot=num_fewshot,
        tasks_dir=tasks_dir,
        noise_floor=noise_floor,
        refusal_patterns=refusal_patterns,
        control=None if control is None else str(control),
    )
    inp = read_run(run, overrides, batch_size)
    patterns = m.check_patterns(inp.eval.refusal_patterns)
    _check_run(inp, model)
    ctl = None
    if inp.eval.control:
        ctl = _control(inp, device, batch_size, progress_bar, stage)
    steps = _Steps(stage, progress_bar, timings)
    lm, tokenizer = _load_base(inp, device, stage)
    base = _base_side(inp, lm, tokenizer, steps)
    after, after_uptake, after_bench = _trained_side(inp, lm, tokenizer, base, steps)
    result = _run_result(inp, base, after, after_uptake, after_bench, patterns, ctl)
    result["provenance"] = _provenance(started, timings)
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
    started, out, timings = time.time(), Path(out), {}
    steps = _Steps(on_stage or (lambda name: logger.info("%s", name)), progress_bar, timings)
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
    _check_tasks(ev)
    with steps("probing", "probe") as progress:
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
        with steps(f"benchmarks: {', '.join(ev.benchmarks)}", "benchmarks") as progress:
            after = _benchmarks(model, tokenizer, ev.benchmarks, ev, progress)
        benchmarks_block = compare_benchmarks(after, None)
    result = _model_result(out, records, before, patterns, benchmarks_block)
    result["settings"].update(eval=asdict(ev), compare=None if compare is None else str(compare))
    result["provenance"] = _provenance(started, timings)
    write_json_atomic(out / EVAL_FILE, result)
    return result


def _model_result(out: Path, records: list[dict], before, patterns, benchmarks_block) -> dict[str, Any]:
    """eval.json of one model alone (`evaluate_model`), less its eval settings and provenance."""
    settings = json.loads((out / "probe" / "summary.json").read_text())["settings"]
    counts, n = Counter(r["category"] for r in records), len(records)
    categories = m.categories_of(records)
    ids = {r["id"] for r in records}
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
        "behaviour": {"all": m.compare_behaviour(before, records, ids, patterns)},
        "benchmarks": benchmarks_block,
        "settings": {"probe": settings, "refusal_patterns": list(patterns)},
    }
    if before is not None:
        result["knowledge_shift"] = {"all": m.compare_knowledge(before, records, ids)}
    return result


def evaluate_named_model(
    model: str,
    facts: str | Sequence[Fact],
    *,
    out: str | Path,
    sample_size: int | None = None,
    sample_size_seed: int | None = None,
    seed: int = 0,
    device: str | None = None,
    dtype: str = "auto",
    probe_kwargs: dict[str, Any] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`knowpack eval --model M --facts F`: load `model` (Hub id, folder or `organism`) and `facts` (a facts
    file or `organism`, or the facts), probe a seeded sample of `sample_size` of them (`sample_facts` with
    `sample_size_seed`, None: the run config's default, so that the same sample size gives the facts a run
    probes; every fact stays an exemplar) with probe seed `seed`, then `evaluate_model` (`options`: its
    keywords)."""
    exemplars = list(load_facts(facts)) if isinstance(facts, (str, Path)) else list(facts)
    seed_of_sample = ProbeConfig.sample_size_seed if sample_size_seed is None else sample_size_seed
    chosen = sample_facts(exemplars, sample_size, seed_of_sample)
    lm, tokenizer = models.load_model(model, device=device, dtype=dtype)
    settings = {"seed": seed, **(probe_kwargs or {})}
    return evaluate_model(
        lm, tokenizer, chosen, out=out, probe_kwargs=settings, exemplars=exemplars, **options
    )


# ------------------------------------------------------------------------------------------------ internals


@dataclass
class _Steps:
    """Stage announcements, progress bars and stage timings of one evaluation."""

    stage: Callable[[str], None]
    progress_bar: ProgressBar | None
    timings: dict[str, float]

    @contextlib.contextmanager
    def __call__(self, announce: str, name: str, label: str | None = None, bar: bool = True):
        """Announce `announce`, time the block as `name`, yield a progress callback (bar `label`)."""
        self.stage(announce)
        with _timed(self.timings, name), _bar(self.progress_bar if bar else None, label or name) as progress:
            yield progress


@dataclass
class _Base:
    """What is measured on the untouched base model (mostly cached beside the base probe)."""

    measure: UptakeMeasure
    source: str | None
    null: list[dict]
    null_block: dict[str, Any]
    prompts: list[list[dict]] | None
    """Prompt sensitivity: the base re-probed with other exemplars, one list of records per redraw."""
    prompts_block: dict[str, Any] | None
    bench: dict | None
    bench_reused: list[str] | None
    uptake: dict
    uptake_reused: int


def _check_run(inp: RunInputs, model: str | None) -> None:
    """One-line errors before any model is loaded: the asserted base model, the benchmark tasks."""
    if model is not None and not same_model(model, inp.config.model.name):
        raise KnowpackError(f"--model {model} is not the run's base model ({inp.config.model.name})")
    _check_tasks(inp.eval)


def _check_tasks(ev: EvalConfig) -> None:
    if ev.benchmarks:
        check_tasks(ev.benchmarks, ev.tasks_dir)


def _load_base(inp: RunInputs, device: str | None, stage: Callable[[str], None]) -> tuple[Any, Any]:
    """The run's base model and tokenizer, checked against the model its base probe recorded."""
    config = inp.config
    stage(f"loading {config.model.name}")
    lm, tokenizer = models.load_model(
        config.model.name,
        dtype=config.model.dtype,
        device=device or config.model.device,
        trust_remote_code=config.model.trust_remote_code,
    )
    recorded = (inp.probe_settings or {}).get("model")
    if recorded is not None and not same_model(recorded, getattr(lm, "name_or_path", None)):
        raise KnowpackError(
            f"the base probe in {inp.probe_dir} was made with model {recorded}, not the run's "
            f"{config.model.name}"
        )
    return lm, tokenizer


def _train_format(inp: RunInputs) -> str:
    return inp.config.train.format or inp.config.probe.format


def _base_side(inp: RunInputs, lm: Any, tokenizer: Any, steps: _Steps) -> _Base:
    """The base model's side: measurement null, prompt sensitivity, benchmarks, zero-shot and paraphrases."""
    trained_paraphrases = inp.mix.get("add") == "paraphrase"
    questions, source = _heldout(inp.implanted, trained_paraphrases)
    fmt, bar = _train_format(inp), steps.progress_bar
    measure = UptakeMeasure(tokenizer, inp.implanted, inp.exemplars, inp.probe_kwargs, fmt, questions, bar)
    probe_kwargs = {**inp.probe_kwargs, "exemplars": inp.exemplars}
    announce = "measurement null (the run's method untrained, same prompts, another sampling seed)"
    with steps(announce, "measurement_null") as progress:
        null, null_block = measurement_null_records(
            lambda into: untrained_model(lm, tokenizer, inp.config, inp.weights, into),
            tokenizer,
            inp.probed,
            folder=inp.probe_dir,
            recipe=null_recipe(inp.config, inp.weights),
            probe_kwargs=probe_kwargs,
            progress=progress,
        )
    prompts, prompts_block = _prompt_sensitivity(inp, lm, tokenizer, steps)
    bench, reused = _base_benchmarks(inp, lm, tokenizer, steps)
    with steps("uptake of the base model (zero-shot, held-out paraphrases)", "uptake_base", bar=False):
        key = {
            "model": str(inp.config.model.name),
            "format": _train_format(inp),
            "probe": _probe_settings(inp),
            "base_probe": inp.probe_settings,
            "trained_paraphrases": trained_paraphrases,
        }
        uptake, uptake_reused = cached_uptake(
            inp.probe_dir, key, inp.implanted, lambda facts, base=lm: measure(base, "base", facts)
        )
    return _Base(
        measure, source, null, null_block, prompts, prompts_block, bench, reused, uptake, uptake_reused
    )


def _trained_side(inp: RunInputs, lm: Any, tokenizer: Any, base: _Base, steps: _Steps):
    """The trained model (the run's weights on `lm`): its re-probe, uptake and benchmarks block."""
    steps.stage(f"loading the trained weights ({inp.config.method.name})")
    trained = method_module(inp.config.method.name).load(lm, inp.weights).eval()
    del lm  # a full run's model replaces the base: let it go (LoRA and LoKI keep it inside `trained`)
    with steps("re-probing every fact", "probe", "probe after training") as progress:
        after = probe(
            trained,
            tokenizer,
            inp.probed,
            **inp.probe_kwargs,
            exemplars=inp.exemplars,
            out=inp.run / "eval" / "probe",
            progress=progress,
        )
    with _timed(steps.timings, "uptake"):
        after_uptake = base.measure(trained, "trained")
    block = None
    ev = inp.eval
    if ev.benchmarks:
        announce = f"benchmarks of the trained model: {', '.join(ev.benchmarks)}"
        with steps(announce, "benchmarks", "benchmarks (trained)") as progress:
            after_bench = _benchmarks(trained, tokenizer, ev.benchmarks, ev, progress)
        block = compare_benchmarks(after_bench, base.bench, base.bench_reused)
    return after, after_uptake, block


def _run_result(inp: RunInputs, base: _Base, after, after_uptake, benchmarks_block, patterns, ctl) -> dict:
    """eval.json of a run (less its provenance): uptake, shift and behaviour beside the baselines."""
    config, before = inp.config, inp.base_records
    ids = {f.id for f in inp.probed}
    scopes = {"trained": ids & inp.trained, "untrained": ids - inp.trained, "all": ids}
    shift: dict[str, Any] = {
        scope: m.compare_knowledge(before, after, members, base.null, base.prompts)
        for scope, members in scopes.items()
    }
    behaviour = {
        scope: m.compare_behaviour(before, after, scopes[scope], patterns, base.null, base.prompts)
        for scope in ("untrained", "all")
    }
    behaviour["untrained"]["trained_answers"] = m.trained_answers(
        before, after, scopes["untrained"], _trained_answers(inp), patterns
    )
    shift["baselines"] = {
        "measurement_null": base.null_block,
        "prompt_sensitivity": base.prompts_block,
        "training_control": None if ctl is None else ctl.block,
    }
    result = {
        "kind": "run",
        "run": str(inp.run),
        "model": {"base": config.model.name, "method": config.method.name, "weights": str(inp.weights)},
        "facts": {
            "path": config.facts.path,
            "probed": len(ids),
            "trained": len(scopes["trained"]),
            "untrained": len(scopes["untrained"]),
            "implanted": len(inp.implanted),
        },
        "definitions": m.DEFINITIONS,
        "uptake": summarize_uptake(inp.implanted, before, after, base.uptake, after_uptake, base.source),
        "knowledge_shift": shift,
        "behaviour": behaviour,
        "benchmarks": benchmarks_block,
        "settings": {
            "probe": _probe_settings(inp),
            "base_probe": str(inp.probe_dir),
            "base_uptake_reused": base.uptake_reused,
            "probe_after": str(inp.run / "eval" / "probe"),
            "train_format": _train_format(inp),
            "eval": asdict(inp.eval),
            "refusal_patterns": list(patterns),
        },
    }
    relabelled = [i for i in inp.mix.get("relabelled", []) if i in ids]
    if relabelled:
        result["uptake"]["idk_refusal_rate"] = idk_refusal_rate(before, after, relabelled, patterns)
    if ctl is not None:
        _add_control(result, scopes, before, after, ctl, patterns)
    return result


@dataclass
class _Control:
    """A training control, evaluated: its re-probe, the facts it trained on, its eval.json, a block."""

    records: list[dict]
    trained: set[str]
    eval: dict[str, Any]
    block: dict[str, Any]


def _control(inp: RunInputs, device: str | None, batch_size: int | None, progress_bar, stage) -> _Control:
    """Read (and, lacking its eval.json or the run's benchmarks, first evaluate) the run's control."""
    folder = Path(inp.eval.control)
    control = read_run(folder, {}, batch_size)
    recipe = check_control(inp, control)
    ev = inp.eval
    done = _read_eval(folder)
    missing = [t for t in ev.benchmarks if t not in ((done or {}).get("benchmarks") or {}).get("tasks", {})]
    if done is None or missing:
        stage(f"evaluating the training control {folder}")
        done = evaluate_run(
            folder,
            benchmarks=ev.benchmarks,
            limit=ev.limit,
            num_fewshot=ev.num_fewshot,
            tasks_dir=ev.tasks_dir,
            noise_floor=ev.noise_floor,
            refusal_patterns=ev.refusal_patterns,
            device=device,
            batch_size=batch_size,
            progress_bar=progress_bar,
            on_stage=stage,
        )
    records = read_probe(Path(done["settings"]["probe_after"]))[0]
    epochs = {"run": _epochs_run(inp.run), "control": _epochs_run(folder)}
    if epochs["run"] != epochs["control"]:
        logger.warning("the run trained %s epochs, its control %s", epochs["run"], epochs["control"])
    block = {
        "run": str(folder),
        "eval": str(folder / EVAL_FILE),
        "recipe": recipe,
        "epochs_run": epochs,
        "facts": "each metric's `control` is over the facts of its group that neither run trained on",
    }
    return _Control(records, control.trained, done, block)


def _add_control(result: dict, scopes: dict[str, set[str]], before, after, ctl: _Control, patterns) -> None:
    """Every shift, behaviour and benchmark entry of `result` gains `control`: the run's value beside the
    training control's (`metrics.against_control`; benchmarks from the control's eval.json)."""
    for scope, ids in scopes.items():
        found = m.against_control(before, after, ctl.records, ids - ctl.trained, patterns)
        for part in ("knowledge_shift", "behaviour"):
            block = result[part].get(scope) or {}
            for name, entry in found.items():
                if isinstance(block.get(name), dict) and "value" in block[name]:
                    block[name]["control"] = entry
    for (task, measure), (value, _) in m.benchmark_values(result).items():
        theirs, _ = m.metric_value(ctl.eval, "benchmark", task=task, measure=measure)
        entry = m.metric_entry(result, "benchmark", task=task, measure=measure)
        entry["control"] = m.metric("benchmark", value, theirs)


def _read_eval(folder: Path) -> dict | None:
    try:
        return json.loads((folder / EVAL_FILE).read_text())
    except (OSError, ValueError):
        return None


def _epochs_run(folder: Path) -> int | None:
    return trained_epochs(folder)


def _probe_settings(inp: RunInputs) -> dict[str, Any]:
    return {k: v for k, v in inp.probe_kwargs.items() if k != "batch_size"}


def _trained_answers(inp: RunInputs) -> set[str]:
    """The normalized answers the run trained on (refusals and replay left out)."""
    rows = _read_jsonl(inp.run / "mix.jsonl")
    return {normalize(r["answer"]) for r in rows if r.get("answer") and r.get("answer") != REFUSAL}


def _prompt_sensitivity(inp: RunInputs, lm: Any, tokenizer: Any, steps: _Steps):
    """(the redraws' records, one list each; eval.json's `prompt_sensitivity` block), or (None, None) when
    switched off (`eval.noise_floor`, its historical name)."""
    if not inp.eval.noise_floor:
        return None, None
    seed = inp.eval.noise_seed if inp.eval.noise_seed is not None else inp.config.probe.seed + 1
    count = inp.eval.prompt_redraws
    ids = {f.id for f in inp.probed}
    earlier = find_repeats(inp.probe_dir, inp.probe_settings, ids, range(seed, seed + count), count)
    what = f"prompt sensitivity (the untouched base probed with {count} other exemplar draws, seeds {seed}+)"
    # reused probes are only read: no bar to draw
    with steps(
        what if len(earlier) < count else f"{what}: reusing {len(earlier)}",
        "prompt_sensitivity",
        f"prompt sensitivity (seeds {seed}+)",
        bar=len(earlier) < count,
    ) as progress:
        draws, folders, reused = noise_floor_records(
            lm,
            tokenizer,
            inp.probed,
            inp.base_records,
            folder=inp.probe_dir,
            settings=inp.probe_settings,
            probe_kwargs={**inp.probe_kwargs, "exemplars": inp.exemplars},
            seed=seed,
            redraws=count,
            progress=progress,
        )
    seeds = [json.loads((f / "summary.json").read_text())["settings"]["seed"] for f in folders]
    block = {"folders": [str(f) for f in folders], "seeds": seeds, "reused": reused}
    return draws, {"folder": block["folders"][0], "seed": seeds[0], **block}


def _base_benchmarks(inp: RunInputs, lm: Any, tokenizer: Any, steps: _Steps):
    """The base model's benchmark results (cached beside the base probe) and the tasks reused from there."""
    ev = inp.eval
    if not ev.benchmarks:
        return None, None
    key = {"model": str(inp.config.model.name), **_bench_key(ev)}
    announce = f"benchmarks of the base model: {', '.join(ev.benchmarks)}"
    with steps(announce, "benchmarks_base", "benchmarks (base)") as progress:
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
