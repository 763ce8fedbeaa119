"""`knowpack demo`, `sweep`, `capacity` and `plan`: many runs, and what they add up to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from knowpack.cli.console import progress_bar
from knowpack.cli.options import (
    ADDRESS,
    BACKEND,
    CONFIG,
    DEVICE,
    FACTS,
    MODEL,
    OUT,
    WORKERS,
    Address,
    Backend,
)
from knowpack.errors import KnowpackError
from knowpack.experiment.backends import run_capacity_on_ray, run_plan_on_ray, run_sweep_on_ray
from knowpack.experiment.capacity import load_capacity, run_capacity
from knowpack.experiment.cluster import check_backend
from knowpack.experiment.demo import HEADERS, run_demo
from knowpack.experiment.plan import load_plan, run_plan
from knowpack.experiment.sweep import cell_status, load_sweep, run_sweep
from knowpack.report.report import counted


def demo(
    ctx: typer.Context,
    out: Annotated[Path, OUT] = Path("out/demo"),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="A shortened demo (10 facts): 1 CPU-minute, 2-3 minutes on shared cores."
        ),
    ] = False,
    device: Annotated[str, DEVICE] = "cpu",
    model: Annotated[str, MODEL] = "organism",
) -> None:
    """The whole pipeline on the bundled organism, on a CPU: about 2 CPU-minutes.

    Probe what the organism knows, implant the same 50 Unknown facts with LoRA and with LoKI, evaluate both
    (uptake, knowledge shift beside its baselines, refusals, world benchmarks) and write a report:
    OUT/report.html, OUT/summary.json, one run folder per method in OUT/runs/. --model is organism (the
    default) or smollm2-135m: the same on the real SmolLM2-135M-Instruct, 10 real facts (GeoNames) implanted,
    geo_mc as the benchmark (about 20 minutes on 2 cores).

    Time: 2-3 minutes on 2 idle CPU cores; 5 minutes measured on 2 cores shared with other jobs (load average
    6-8); longer under heavier load. It runs on one thread unless --threads says otherwise (two threads on
    busy cores spin-wait on each other: 3-4x slower).
    """
    threads = None if ctx.parent is not None and ctx.parent.params.get("threads") else 1  # --threads: as set
    summary = run_demo(
        out,
        quick=quick,
        device=device,
        model=model,
        on_stage=lambda name: typer.echo(f"[{name}]", err=True),
        progress_bar=progress_bar,
        threads=threads,
    )
    title = f"knowpack demo: {summary['implanted']['lora']} Unknown facts implanted"
    table = Table(title=title, box=None, pad_edge=False, header_style="bold")  # no borders: 80 columns fit
    table.add_column("model", no_wrap=True)
    for column in summary["columns"]:
        table.add_column(HEADERS.get(column, column), justify="right", no_wrap=True)
    for name, values in summary["models"].items():
        table.add_row(
            name, *("–" if values.get(c) is None else f"{values[c]:.3f}" for c in summary["columns"])
        )
    Console().print(table)
    typer.echo(f"report: {out / 'report.html'}")
    if summary.get("notes"):
        typer.echo(
            f'{counted(len(summary["notes"]), "note")} in its "Read this first": numbers that look like '
            "bugs (a benchmark below half of the base's score, refusals gone) and are measured effects of "
            "training."
        )


def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (YAML): base, set, grid, cases, out.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value for every cell, or out=DIR.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells and their status; run nothing.")
    ] = False,
    workers: Annotated[int, WORKERS] = 1,
    backend: Backend = "local",
    address: Address = None,
) -> None:
    """A resumable grid of training runs, one run folder per cell (OUT/cells/<key=value,...>).

    Finished cells are skipped, interrupted ones redone. Several processes or machines can run the same sweep:
    each claims a cell before running it. OUT/sweep.json lists every cell with its status. --backend ray runs
    every cell as a task on a Ray cluster (README: Running on a cluster).
    """
    check_backend(backend, workers)
    loaded = load_sweep(config, overrides or [])
    if dry_run:
        for cell in loaded.cells:
            typer.echo(f"{cell_status(cell):12} {cell.folder}")
        typer.echo(f"{len(loaded.cells)} cells")
        return
    if backend == "ray":
        summary = run_sweep_on_ray(loaded, address=address, on_cell=_cell_event, progress_bar=progress_bar)
    else:
        alone = workers == 1  # workers print their cells' events, no bars
        summary = run_sweep(
            loaded,
            on_cell=_cell_event,
            on_stage=(lambda name: typer.echo(f"  [{name}]", err=True)) if alone else None,
            progress_bar=progress_bar if alone else None,
            workers=workers,
        )
    typer.echo(f"{loaded.out}: {summary['finished']} of {summary['total']} cells finished")
    busy = [row for row in summary["cells"] if row["status"] == "running"]
    for row in busy:  # nothing failed: this worker stopped because the rest is another's
        typer.echo(f"cell {row['cell']} is being run by worker {row.get('worker') or 'unknown'}")
    if summary["finished"] + len(busy) < summary["total"]:
        raise typer.Exit(1)


def _cell_event(cell: Any, event: str) -> None:
    """A sweep cell's event on stderr (module-level: the sweep's worker processes get it too)."""
    typer.echo(f"[{event}] {cell.name}", err=True)


def capacity(
    config: Annotated[
        Path, typer.Argument(help="Capacity config (YAML): base, set, target, budget, seeds, max, out.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="out=DIR, max=64, seeds=[0], target.reliability=0.95, or section.key=value."),
    ] = None,
    backend: Backend = "local",
    address: Address = None,
) -> None:
    """The largest number of new facts that reaches a reliability target within a damage budget.

    Exponential then binary search over n (mix.n_unknown); each point is a run per seed at
    OUT/points/n=<n>,seed=<s>, trained and evaluated, reused when finished. Writes OUT/capacity.json and
    OUT/capacity.png. --backend ray runs each point's runs as tasks on a Ray cluster.
    """
    check_backend(backend)
    loaded = load_capacity(config, overrides or [])
    on_event = lambda name, event: typer.echo(f"[{event}] {name}", err=True)  # noqa: E731
    if backend == "ray":
        result = run_capacity_on_ray(loaded, address=address, on_event=on_event)
    else:
        result = run_capacity(
            loaded,
            on_event=on_event,
            on_stage=lambda name: typer.echo(f"  [{name}]", err=True),
            progress_bar=progress_bar,
        )
    answer, cap = result["answer"], result["cap"]["effective"]
    if answer is None:
        found = "no n passes (even the smallest fails)"
    else:
        found = f"capacity {answer} facts" + (f" (the cap: {cap})" if result["capped"] else "")
    typer.echo(f"{loaded.out}: {found}; {loaded.out / 'capacity.json'}, {loaded.out / 'capacity.png'}")
    typer.echo(f"confidence over seeds: {result['confidence']['statement']}")


def plan(
    facts: Annotated[str | None, FACTS] = None,
    out: Annotated[str | None, OUT] = None,
    model: Annotated[str | None, MODEL] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", help="Facts whose loss is damage (default: the bundled model's own facts)."
        ),
    ] = None,
    budget: Annotated[
        list[str] | None,
        typer.Option(
            "--budget", help="KEY<=X, repeatable: a metric (retention_drop, ...) or an lm-eval task."
        ),
    ] = None,
    target: Annotated[
        float | None, typer.Option("--target", help="Reliability to reach (default 0.95).")
    ] = None,
    methods: Annotated[
        str | None, typer.Option("--methods", help="Comma-separated (default lora,loki,full).")
    ] = None,
    trials: Annotated[int | None, typer.Option("--trials", help="Trials, each a recipe (default 8).")] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Seeds per trial (default 2).")] = None,
    backend: Annotated[str | None, BACKEND] = None,
    address: Annotated[str | None, ADDRESS] = None,
    config: Annotated[Path | None, CONFIG] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="key=value for the plan (e.g. set.train.epochs=5, limit=100).")
    ] = None,
) -> None:
    """Which method, settings and how many of your facts fit a damage budget.

    --facts are the facts to implant (a facts file), --model the model (default organism), OUT the plan
    folder (resumable), --config a plan YAML; on --backend ray, a trial's seeds run at once.

    Probes your facts and a sample of what the model knows, then searches method x learning rate x size
    (LoRA rank, LoKI quota) x mix x number of facts with Optuna: every trial a run per seed, trained and
    evaluated, under OUT/trials/. Writes OUT/plan.json (the recommendation, each method's uptake-damage front,
    the trials) and OUT/recommended.yaml (`knowpack train OUT/recommended.yaml`). Killed and rerun, it
    resumes without redoing finished trials. On the organism, 20 facts with 8 trials x 2 seeds took 6 to 11
    minutes on 2 CPU cores (2026-12-06); SmolLM2-135M, 6 trials x 1 seed, 29 minutes.
    """
    options = {
        "facts": facts, "out": out, "model": model, "reference": reference, "target": target,
        "trials": trials, "seeds": seeds, "backend": backend, "address": address,
        "budget": _budget_options(budget),
        "methods": None if methods is None else [m.strip() for m in methods.split(",") if m.strip()],
    }  # fmt: skip
    loaded = load_plan(config, overrides or [], **options)
    event = _named_event
    if loaded.config.backend == "ray":
        check_backend("ray")
        result = run_plan_on_ray(loaded, address=loaded.config.address, on_event=event)
    else:
        result = run_plan(loaded, on_event=event, on_stage=_stage_line, progress_bar=progress_bar)
    typer.echo(result["answer"])
    recommended = " and recommended.yaml" if result["recommendation"] else ""
    typer.echo(f"{loaded.out / 'plan.json'}{recommended}; knowpack report {loaded.out} draws the fronts")


def _named_event(name: str, event: str) -> None:
    typer.echo(f"[{event}] {name}", err=True)


def _stage_line(name: str) -> None:
    typer.echo(f"  [{name}]", err=True)


def _budget_options(items: list[str] | None) -> dict[str, float] | None:
    """`--budget KEY<=X` options as a mapping; a malformed one is a one-line error."""
    if not items:
        return None
    budget = {}
    for item in items:
        key, sep, value = item.partition("<=")
        try:
            budget[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise KnowpackError(f"--budget {item!r}: expected KEY<=NUMBER, e.g. retention_drop<=0.05")
    return budget
