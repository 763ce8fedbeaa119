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

import errno
import logging
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from knowpack import __version__
from knowpack.cli import evaluate, experiment, loki, probe, train, world
from knowpack.cli.console import setup_logging, third_party_output
from knowpack.errors import KnowpackError


class _FlagsTakeNoValue:
    """`--help` lists a flag (`--force`, `--help`) without a `<bool>` after it, as if it took a value: typer
    shows every option's type; a flag's is left empty."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    """A verb."""


class _Group(_FlagsTakeNoValue, TyperGroup):
    """A group of verbs (`world`, `facts`)."""


class _KnowpackGroup(_Group):
    """The top-level group: turns a KnowpackError from any verb into one line on stderr and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        from knowpack.devices import guard_from_env

        try:
            with guard_from_env():  # KNOWPACK_DEVICE_GUARD=1: fail where a GPU would (knowpack.devices)
                return super().invoke(ctx)
        except KnowpackError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except OSError as e:
            if e.errno not in _USER_ERRNOS:
                raise
            # the file system refused (permissions, a file where a folder is meant, a full disk): the
            # user's to fix, so one line naming the path, as for any bad input
            where = f"{e.filename}: " if e.filename else ""
            typer.echo(f"error: {where}{e.strerror}", err=True)
            raise typer.Exit(1) from None


_USER_ERRNOS = {
    errno.EACCES,
    errno.EPERM,
    errno.EROFS,
    errno.ENOSPC,
    errno.EDQUOT,
    errno.ENOTDIR,
    errno.EISDIR,
}


app = typer.Typer(
    name="knowpack",
    cls=_KnowpackGroup,
    help="Implant new facts into a causal LLM (LoRA / LoKI / full fine-tuning) and measure the damage.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
world_app = typer.Typer(
    cls=_Group, help="The synthetic world and the bundled model organism.", no_args_is_help=True
)
facts_app = typer.Typer(cls=_Group, help="Facts files: load and validate them.", no_args_is_help=True)
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
app.command(cls=_Command)(experiment.demo)
app.command(cls=_Command)(probe.probe)
app.command(cls=_Command)(loki.attribute)
app.command(cls=_Command)(loki.select)
app.command(cls=_Command)(train.train)
app.command("eval", cls=_Command)(evaluate.eval_)
app.command(cls=_Command)(experiment.sweep)
app.command(cls=_Command)(experiment.capacity)
app.command(cls=_Command)(experiment.plan)
app.command(cls=_Command)(experiment.report)
app.command(cls=_Command)(train.export)
world_app.command("build", cls=_Command)(world.world_build)
world_app.command("tasks", cls=_Command)(world.world_tasks)
facts_app.command("check", cls=_Command)(world.facts_check)
