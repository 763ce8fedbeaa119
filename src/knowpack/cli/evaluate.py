"""`knowpack eval`: uptake and damage of a run against its base, or of one model alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.console import progress_bar
from knowpack.cli.options import (
    DTYPE,
    FACTS,
    LIMIT,
    MODEL,
    OUT,
    SEED,
    BatchSize,
    Device,
    NPrompts,
    Samples,
    SampleSize,
    SampleSizeSeed,
    Shots,
    config_option,
)
from knowpack.errors import KnowpackError
from knowpack.evaluate import evaluate_named_model, evaluate_run
from knowpack.evaluate.config import EvalConfig as E
from knowpack.evaluate.metrics import METRICS, benchmark_values, headline, metric_label, metric_value
from knowpack.probe.config import ProbeConfig as P

Run = Annotated[Path | None, typer.Argument(help="Run folder (compared with its base model).")]
Benchmarks = Annotated[
    str | None,
    typer.Option("--benchmarks", help="lm-eval tasks, e.g. world_mc,mmlu (default: the run's eval section)."),
]
NoiseFloor = Annotated[
    bool | None,
    typer.Option(
        "--noise-floor/--no-noise-floor",
        help="Prompt sensitivity: probe the base again with seed + 1, other exemplars (cached).",
    ),
]
Control = Annotated[
    Path | None,
    typer.Option("--control", help="A training-control run (mix.control) to read the damage against."),
]
RefusalPatterns = Annotated[
    list[str] | None,
    typer.Option("--refusal-pattern", help="A regex that marks a refusal (repeat; default: knowpack's)."),
]
Compare = Annotated[
    Path | None, typer.Option("--compare", help="--model: a probe folder to compare with (shift).")
]


def eval_(
    run: Run = None,
    model: Annotated[str | None, MODEL] = None,
    facts: Annotated[str | None, FACTS] = None,
    out: Annotated[Path | None, OUT] = None,
    benchmarks: Benchmarks = None,
    limit: Annotated[int | None, LIMIT] = E.limit,
    num_fewshot: Annotated[int | None, config_option(E, "num_fewshot")] = E.num_fewshot,
    tasks_dir: Annotated[str | None, config_option(E, "tasks_dir")] = E.tasks_dir,
    noise_floor: NoiseFloor = None,
    control: Control = None,
    refusal_pattern: RefusalPatterns = None,
    samples: Samples = P.samples,
    n_prompts: NPrompts = P.n_prompts,
    shots: Shots = P.shots,
    seed: Annotated[int, SEED] = P.seed,
    sample_size: SampleSize = None,
    sample_size_seed: SampleSizeSeed = None,
    compare: Compare = None,
    device: Device = None,
    dtype: Annotated[str, DTYPE] = "auto",
    batch_size: BatchSize = None,
) -> None:
    """Uptake and damage of a run against its base (RUN/eval.json), or of one model alone (OUT/eval.json).

    With --model, --facts and --out (no RUN): probe and benchmark that model alone, with the probe options
    (--samples, --n-prompts, --shots, --seed, --sample-size, --sample-size-seed) and --dtype; --compare sets
    its probe beside an earlier one. --sample-size-seed defaults to a run config's probe.sample_size_seed.
    """

    common = dict(
        benchmarks=[t for t in (benchmarks or "").replace(" ", "").split(",") if t] or None,
        limit=limit,
        num_fewshot=num_fewshot,
        tasks_dir=tasks_dir,
        refusal_patterns=refusal_pattern,
        progress_bar=progress_bar,
        on_stage=lambda name: typer.echo(f"[{name}]", err=True),
    )
    if run is not None:
        if facts is not None or out is not None:
            raise KnowpackError("--facts and --out are for --model; a run is measured on its own facts")
        result = evaluate_run(
            run,
            noise_floor=noise_floor,
            control=control,
            model=model,
            device=device,
            batch_size=batch_size,
            **common,
        )
        written = run / "eval.json"
    else:
        if model is None or facts is None or out is None:
            raise KnowpackError("give a run folder, or --model, --facts and --out")
        if control is not None:
            raise KnowpackError("--control is for a run folder: a training control of that run's recipe")
        probe_kwargs = dict(n_prompts=n_prompts, shots=shots, samples=samples)
        if batch_size is not None:
            probe_kwargs["batch_size"] = batch_size
        result = evaluate_named_model(
            model, facts, out=out, sample_size=sample_size, sample_size_seed=sample_size_seed, seed=seed,
            device=device, dtype=dtype, probe_kwargs=probe_kwargs, compare=compare, **common,
        )  # fmt: skip
        written = out / "eval.json"
    typer.echo(eval_summary(result))
    typer.echo(f"written: {written}")


def eval_summary(result: dict) -> str:
    """A few lines of eval.json: value (base) of the registry's `summary` metrics, a line per part of
    eval.json (uptake, knowledge shift, behaviour), then the benchmarks."""

    def show(name: str, **where: str) -> str:
        value, base = metric_value(result, name, **where)
        if value is None:
            return "n/a"
        return METRICS[name].format(value) + ("" if base is None else f" (base {METRICS[name].format(base)})")

    parts: dict[str, list[str]] = {}
    for name in headline("summary"):
        parts.setdefault(METRICS[name].path[0], []).append(name)
    scope = "untrained" if "untrained" in (result.get("behaviour") or {}) else "all"
    lines = []
    for part, names in parts.items():
        block = result.get(part)
        if not block:
            continue
        if "{scope}" in METRICS[names[0]].path:
            block = block.get(scope) or {}
            if not block:
                continue
        n = block.get("n")
        title = {
            "uptake": f"uptake ({n} facts)",
            "knowledge_shift": f"{scope} facts ({n}), base: measurement null",
        }.get(part, part.replace("_", " "))
        shown = ", ".join(f"{metric_label(name)} {show(name, scope=scope)}" for name in names)
        lines.append(f"{title}: {shown}")
        context = [
            f"{metric_label(name)} {METRICS[name].format(other)}"
            for name in names
            if METRICS[name].compares_probes
            and (other := metric_value(result, name, against="prompt_sensitivity", scope=scope)[1])
            is not None
        ]
        if context:
            lines.append(
                f"{scope} facts, prompt sensitivity (base re-probed, other exemplars): {', '.join(context)}"
            )
    if "probe" in result:
        lines.append(f"probe: {result['probe']['categories']}")
    tasks: dict[str, list[str]] = {}
    for task, measure in benchmark_values(result):
        tasks.setdefault(task, []).append(f"{measure} {show('benchmark', task=task, measure=measure)}")
    lines += [f"{task}: {', '.join(shown)}" for task, shown in tasks.items()]
    return "\n".join(lines)
