"""Options shared by several verbs, and options derived from the fields of a config dataclass.

A setting that a config section also holds (the probe's `n_prompts`, LoKI's `per_subject`, eval's `limit`)
is written once, as the dataclass field. Its option is declared with `config_option`, which takes the help
text from the field's docstring and checks the value with the field's type and range (the error names the
option), and its default is the field's:

    shots: Annotated[int, config_option(ProbeConfig, "shots")] = ProbeConfig.shots
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from typing import Annotated, Any

import typer

Model = Annotated[
    str, typer.Option("--model", "-m", help="Hub id, local folder, 'organism' (bundled) or 'smollm2-135m'.")
]
Facts = Annotated[str, typer.Option("--facts", "-f", help="Facts file or dataset, 'organism' or 'geo'.")]
Shard = Annotated[
    str | None, typer.Option("--shard", help="Process only shard i of n, as 'i/n' (0-based), e.g. 0/4.")
]
Address = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="The Ray cluster to run on (--backend ray; default: RAY_ADDRESS, else a local Ray instance "
        "started for the command).",
    ),
]
ClusterBackend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Where the work runs: local (this machine) or ray (a Ray cluster; "
        "pip install 'knowpack\\[ray]').",
    ),
]
Shards = Annotated[
    int | None,
    typer.Option(
        "--shards",
        help="With --backend ray: split the work into N tasks (default: the cluster's GPUs, else its CPUs).",
        callback=lambda value: at_least(1, "--shards")(value),
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")]
Dtype = Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")]


def config_option(cls: type, name: str, flag: str | None = None, *, help: str | None = None) -> Any:
    """A typer option for field `name` of the config dataclass `cls`: `flag` (default `--name-with-dashes`),
    the field's docstring as help (or `help`), and a check of the value against the field's type and range
    that fails as one line naming the flag. The parameter's default must be the field's (`= cls.name`)."""
    from knowpack.config import check_field

    flag = flag or "--" + name.replace("_", "-")
    if name not in {f.name for f in dataclasses.fields(cls)}:
        raise AttributeError(f"{cls.__name__} has no field {name!r}")

    def check(value: Any) -> Any:
        return value if value is None else check_field(cls, name, value, flag)

    return typer.Option(flag, help=help or field_docs(cls).get(name), callback=check)


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstrings of a dataclass's fields (the string literal under each field), on one line each."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def at_least(low: int, flag: str) -> Any:
    """An option callback: a value below `low` is a one-line error naming `flag` (as the library says it)."""
    from knowpack.errors import KnowpackError

    def check(value: Any) -> Any:
        if value is not None and value < low:
            raise KnowpackError(f"{flag} must be >= {low} (got {value})")
        return value

    return check
