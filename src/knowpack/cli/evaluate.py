"""`knowpack eval`: uptake and damage of a run against its base, or of one model alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.console import progress_bar
from knowpack.cli.options import Device, config_option
from knowpack.errors import KnowpackError
from knowpack.evaluate.config import EvalConfig
from knowpack.probe.config import ProbeConfig

P, E = ProbeConfig, EvalConfig

# The options, declared once here so that the signature below reads as a list.
Run = Annotated[Path | None, typer.Argument(help="Run folder (compared with its base model).")]
AloneModel = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Evaluate this model alone (with a RUN: the base it must have)."),
]
AloneFacts = Annotated[str | None, typer.Option("--facts", "-f", help="Facts for --model.")]
Out = Annotated[Path | None, typer.Option("--out", help="Output folder for --model: eval.json.")]
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
Samples = Annotated[int, config_option(P, "samples", help="--model: samples per prompt (0: 3 categories).")]
NPrompts = Annotated[int, config_option(P, "n_prompts", help="--model: few-shot prompts per fact.")]
Shots = Annotated[int, config_option(P, "shots", help="--model: exemplars per prompt.")]
Seed = Annotated[int, config_option(P, "seed", help="--model: probe seed.")]
SampleSize = Annotated[
    int | None, config_option(P, "sample_size", help="--model: probe a seeded sample of this many facts.")
]
SampleSizeSeed = Annotated[
    int | None,
    config_option(
        P,
        "sample_size_seed",
        help="--model: the sample's seed (default: a run config's probe.sample_size_seed).",
    ),
]
Compare = Annotated[
    Path | None, typer.Option("--compare", help="--model: a probe folder to compare with (shift).")
]
AloneDtype = Annotated[str, typer.Option("--dtype", help="--model: auto, float32, bfloat16 or float16.")]
BatchSize = Annotated[
    int | None, config_option(P, "batch_size", help="Sequences decoded at once by the probe.")
]


def eval_(
    run: Run = None,
    model: AloneModel = None,
    facts: AloneFacts = None,
    out: Out = None,
    benchmarks: Benchmarks = None,
    limit: Annotated[int | None, config_option(E, "limit")] = E.limit,
    num_fewshot: Annotated[int | None, config_option(E, "num_fewshot")] = E.num_fewshot,
    tasks_dir: Annotated[str | None, config_option(E, "tasks_dir")] = E.tasks_dir,
    noise_floor: NoiseFloor = None,
    control: Control = None,
    refusal_pattern: RefusalPatterns = None,
    samples: Samples = P.samples,
    n_prompts: NPrompts = P.n_prompts,
    shots: Shots = P.shots,
    seed: Seed = P.seed,
    sample_size: SampleSize = None,
    sample_size_seed: SampleSizeSeed = None,
    compare: Compare = None,
    device: Device = None,
    dtype: AloneDtype = "auto",
    batch_size: BatchSize = None,
) -> None:
    """Uptake and damage of a run against its base (RUN/eval.json), or of one model alone (OUT/eval.json)."""
    from knowpack.evaluate import evaluate_named_model, evaluate_run

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
            device=device, dtype=dtype,
            probe_kwargs=probe_kwargs, compare=compare, **common,
        )  # fmt: skip
        written = out / "eval.json"
    typer.echo(eval_summary(result))
    typer.echo(f"written: {written}")


def eval_summary(result: dict) -> str:
    """A few lines of eval.json: value (base) of the registry's `summary` metrics, a line per part of
    eval.json (uptake, knowledge shift, behaviour), then the benchmarks."""
    from knowpack.evaluate.metrics import METRICS, benchmark_values, headline, metric_label, metric_value

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
