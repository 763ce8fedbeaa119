"""`knowpack world build` (the synthetic world and the organism), `knowpack world tasks` (its lm-eval tasks,
rewritten) and `knowpack facts check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from knowpack.cli.options import CONFIG, OUT, SEED, Force
from knowpack.facts.check import check_facts
from knowpack.paths import organism_dir
from knowpack.world.build import build_world, write_world_tasks


def world_build(
    out: Annotated[Path, OUT],
    config: Annotated[Path | None, CONFIG] = None,
    seed: Annotated[int | None, SEED] = None,
    force: Force = False,
    keep_corpus: Annotated[
        bool, typer.Option("--keep-corpus", help="Keep the generated corpus in OUT.")
    ] = False,
    benchmarks: Annotated[
        bool,
        typer.Option("--with-benchmarks/--no-benchmarks", help="Write and measure the world benchmarks."),
    ] = True,
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained", help="Reuse the pretraining phase of an earlier build of the same world."
        ),
    ] = None,
) -> None:
    """Build the synthetic world and pretrain the model organism on it (seeded, reproducible).

    OUT receives the checkpoint and the world's files (--force: over a non-empty OUT). --config is a world
    config; --seed replaces its seed.
    """

    build_world(
        out,
        config,
        seed=seed,
        force=force,
        keep_corpus=keep_corpus,
        benchmarks=benchmarks,
        pretrained=pretrained,
    )
    typer.echo(f"organism written to {out}")


def world_tasks(
    folder: Annotated[
        Path | None, typer.Option("--organism", help="A world build (default: the bundled organism).")
    ] = None,
    out: Annotated[Path | None, OUT] = None,
) -> None:
    """Rewrite a world build's lm-eval tasks from its build_config.yaml (no retraining).

    OUT is the task folder (default: ORGANISM/tasks).
    """

    typer.echo(f"world tasks written to {write_world_tasks(folder or organism_dir(), out)}")


def facts_check(
    file: Annotated[str, typer.Argument(help="Facts file, dataset folder or Hub name, 'organism' or 'geo'.")],
    lenient: Annotated[bool, typer.Option("--lenient", help="Skip bad rows instead of stopping.")] = False,
    facts_format: Annotated[
        str,
        typer.Option(
            "--format",
            help="Layout of the rows: auto, facts, kp, easyedit or counterfact (the file type, JSONL, CSV, "
            "JSON or Parquet, comes from the file's name).",
        ),
    ] = "auto",
    split: Annotated[str, typer.Option("--split", help="Split of a Hugging Face dataset.")] = "train",
) -> None:
    """Load and validate a facts file; print counts per relation and bucket."""

    report = check_facts(file, format=facts_format, lenient=lenient, split=split)
    facts = report.facts
    skipped = f", {len(facts.skipped)} bad row(s) skipped" if facts.skipped else ""
    typer.echo(f"{facts.source}: {len(facts)} facts, format {facts.format}{skipped}")
    console = Console(highlight=False)
    for field, counts in report.counts.items():
        table = Table(field, "facts")
        for value, n in counts.most_common(30):
            table.add_row("(none)" if value is None else str(value), str(n))
        if len(counts) > 30:
            table.add_row(f"... {len(counts) - 30} more", "")
        console.print(table)
    typer.echo(f"with paraphrases: {report.with_paraphrases}; aliases per fact: {report.mean_aliases:.2f}")
    for err in facts.skipped[:20]:
        typer.echo(f"skipped: {err}", err=True)
    if len(facts.skipped) > 20:
        typer.echo(f"skipped: ... and {len(facts.skipped) - 20} more", err=True)
