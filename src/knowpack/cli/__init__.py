"""The `knowpack` command line: a thin layer over the Python API, one verb per stage (docs/design.md §2).

Every verb's body parses its options, calls one library function and prints what it returned. The verbs live
in one module per group: probe.py, loki.py (attribute, select), train.py (train, export), evaluate.py (eval),
experiment.py (demo, sweep, capacity, report), world.py (world build, facts check); console.py is what the
terminal shows (logging, progress bars), options.py the options shared or derived from config fields.

    knowpack --help
    knowpack facts check facts.jsonl --lenient
    knowpack demo --out out/demo
    knowpack world build --out build/organism

Bad input (any `KnowpackError`) ends the command with one line `error: <message>` on stderr and exit code 1.
Heavy libraries (torch, transformers, datasets) are imported inside the verbs, so `--help` stays fast.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from knowpack import __version__
from knowpack.cli import evaluate, experiment, loki, probe, train, world
from knowpack.cli.console import setup_logging, third_party_output
from knowpack.errors import KnowpackError


class _KnowpackGroup(TyperGroup):
    """The top-level group: turns a KnowpackError from any verb into one line on stderr and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        from knowpack.devices import guard_from_env

        try:
            with guard_from_env():  # KNOWPACK_DEVICE_GUARD=1: fail where a GPU would (knowpack.devices)
                return super().invoke(ctx)
        except KnowpackError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="knowpack",
    cls=_KnowpackGroup,
    help="Implant new facts into a causal LLM (LoRA / LoKI / full fine-tuning) and measure the damage.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
world_app = typer.Typer(help="The synthetic world and the bundled model organism.", no_args_is_help=True)
facts_app = typer.Typer(help="Facts files: load and validate them.", no_args_is_help=True)
app.add_typer(world_app, name="world")
app.add_typer(facts_app, name="facts")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"knowpack {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log progress details (INFO) and show third-party output (lm-eval, transformers, warnings).",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="CPU threads for torch (default: torch's). 1 is often fastest for the small organism, "
            "and much faster when other processes share the cores.",
        ),
    ] = None,
) -> None:
    """Implant new facts into a causal LLM (LoRA / LoKI / full fine-tuning) and measure the damage."""
    setup_logging(logging.INFO if verbose else logging.WARNING)
    third_party_output(verbose)
    if threads is not None:
        from knowpack.devices import set_threads

        set_threads(threads)


# The verbs, in the order `knowpack --help` lists them.
app.command()(experiment.demo)
app.command()(probe.probe)
app.command()(loki.attribute)
app.command()(loki.select)
app.command()(train.train)
app.command("eval")(evaluate.eval_)
app.command()(experiment.sweep)
app.command()(experiment.capacity)
app.command()(experiment.report)
app.command()(train.export)
world_app.command("build")(world.world_build)
world_app.command("tasks")(world.world_tasks)
facts_app.command("check")(world.facts_check)
