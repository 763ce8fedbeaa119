"""`knowpack train` (mix + implant: one run folder) and `knowpack export` (a plain HF checkpoint)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.console import progress_bar, show_value
from knowpack.cli.options import OUT, Force
from knowpack.devices import is_main_process
from knowpack.train import load_config
from knowpack.train import train as run_train
from knowpack.train.export import export_run


def train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Overrides as section.key=value, e.g. mix.n_unknown=100.")
    ] = None,
    force: Force = False,
    resume: Annotated[
        bool | None,
        typer.Option(
            "--resume/--restart",
            help="Continue an interrupted run from its last checkpoint (an error when it cannot) / start it "
            "over. Default: resume when the folder holds a checkpoint made with the same config.",
        ),
    ] = None,
) -> None:
    """Build the training mix and implant it with LoRA, LoKI or full fine-tuning: one run folder.

    The config (docs/design.md §3.4) has sections model, facts, probe, mix, method, train, eval and out; every
    key can be overridden as section.key=value. Presets: configs/organism/{lora,loki,full}.yaml,
    configs/paper/. --force redoes a run whose folder holds a finished one.
    """

    run_config = load_config(config, overrides or [])

    def on_epoch(entry: dict) -> None:
        reliability = entry.get("reliability")
        shown = "" if reliability is None else f"  reliability {reliability:.3f}"
        loss = entry.get("loss")
        # print(), not typer.echo: it goes through the live progress bar's stderr proxy, so the line lands
        # above the bar instead of into it
        print(
            f"epoch {entry['epoch']}: loss {loss if loss is None else f'{loss:.4f}'}{shown}", file=sys.stderr
        )

    if not is_main_process():  # under a launcher, the main process alone talks
        run_train(run_config, force=force, resume=resume, on_stage=lambda name: None)
        return
    out = run_train(
        run_config,
        force=force,
        resume=resume,
        on_epoch=on_epoch,
        on_stage=lambda name: typer.echo(f"[{name}]", err=True),
        progress_bar=progress_bar,
    )
    typer.echo(summary_line(out, json.loads((out / "train.json").read_text())))


def summary_line(out: Path, summary: dict) -> str:
    """The line `knowpack train` ends with, from train.json: the reliability of the weights saved, and which
    epoch's they are when `train.keep_best` kept an earlier one than the last."""
    run, kept = summary["epochs_run"], summary.get("kept_epoch")
    at = f" at epoch {kept} (its weights kept)" if kept not in (None, run) else ""
    return (
        f"{out}: {summary['implanted']} facts implanted with {summary['method']}, "
        f"reliability {show_value(summary['reliability'])}{at}, {run} epochs ({summary['stopped']})"
    )


def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    out: Annotated[Path, OUT],
    force: Force = False,
) -> None:
    """Merge a finished run's weights into a plain checkpoint that AutoModelForCausalLM loads.

    OUT receives the checkpoint; --force replaces a non-empty OUT.
    """

    typer.echo(f"exported to {export_run(run, out, force=force)}")
