"""The `knowpack` command line: a thin layer over the Python API, one verb per stage (docs/design.md §2).

Every verb's body parses its options, calls one library function and prints what it returned. The verbs live
in one module per group: probe.py, loki.py (attribute, select), train.py (train, export), evaluate.py (eval),
experiment.py (demo, sweep, capacity, plan), report.py (report), world.py (world build, world tasks, facts
check); console.py is what the terminal shows (logging, progress bars), options.py every option, declared
once.

    knowpack --help
    knowpack facts check facts.jsonl --lenient
    knowpack demo --out out/demo
    knowpack world build --out build/organism

Bad input (any `KnowpackError`) ends the command with one line `error: <message>` on stderr and exit code 1.
A verb's module is imported only when that verb runs (`VERBS`, a row per verb): `knowpack --help` lists the
verbs by their docstrings, read from the source, and loads no torch, transformers or datasets.
"""

from __future__ import annotations

import ast
import errno
import functools
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from knowpack import __version__
from knowpack.cli.console import setup_logging, third_party_output
from knowpack.devices import guard_from_env, set_threads
from knowpack.errors import KnowpackError

VERBS: dict[str, tuple[tuple[str, str], ...]] = {
    "knowpack": (
        ("demo", "experiment:demo"),
        ("probe", "probe:probe"),
        ("attribute", "loki:attribute"),
        ("select", "loki:select"),
        ("train", "train:train"),
        ("eval", "evaluate:eval_"),
        ("sweep", "experiment:sweep"),
        ("capacity", "experiment:capacity"),
        ("plan", "experiment:plan"),
        ("report", "report:report"),
        ("export", "train:export"),
    ),
    "world": (("build", "world:world_build"), ("tasks", "world:world_tasks")),
    "facts": (("check", "world:facts_check"),),
}
"""The verbs of each group (`knowpack`: the top level), in the order `--help` lists them: name ->
`module:function` in `knowpack.cli`."""


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


class _Verb(TyperCommand):
    """A verb as `--help` lists it: its name and the first line of its function's docstring, read from the
    source without importing the module. `load()` imports the module and builds the verb itself."""

    def __init__(self, name: str, target: str) -> None:
        module, self.function = target.split(":")
        self.module = f"{__name__}.{module}"
        super().__init__(name, short_help=_first_doc_line(self.module, self.function))

    def load(self) -> Any:
        callback = getattr(importlib.import_module(self.module), self.function)
        verb = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_show_locals=False)
        verb.command(self.name, cls=_Command)(callback)
        return typer.main.get_command(verb)


def _first_doc_line(module: str, function: str) -> str:
    return _summaries(module)[function]


@functools.cache
def _summaries(module: str) -> dict[str, str]:
    """The first paragraph of each top-level function's docstring in `module`, read from its source (one
    parse per module, however many verbs it holds)."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())  # type: ignore[arg-type, union-attr]
    return {
        node.name: (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
    }


class _Group(_FlagsTakeNoValue, TyperGroup):
    """A group of verbs (`world`, `facts`, the top level): its verbs come from `VERBS`, each module imported
    only when its verb runs (`knowpack --help` lists them from their docstrings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        verbs = {name: _Verb(name, target) for name, target in VERBS.get(self.name or "knowpack", ())}
        self.commands = {**verbs, **self.commands}  # the verbs first, then the groups (`world`, `facts`)

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        if isinstance(command, _Verb):  # it runs (or shows its own --help): import it now
            command = command.load()
        return name, command, rest


class _KnowpackGroup(_Group):
    """The top-level group: turns a KnowpackError from any verb into one line on stderr and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
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
        set_threads(threads)
