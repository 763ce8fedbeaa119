"""Every option of the command line, each declared once here and shared by every verb that takes it.

A setting that a config section also holds (the probe's `n_prompts`, LoKI's `per_subject`, eval's `limit`)
is written once, as the dataclass field. Its option is declared with `config_option`, which takes the help
text from the field's docstring and checks the value with the field's type and range (the error names the
option); the verb's parameter default is the field's:

    shots: Shots = ProbeConfig.shots

A flag that several verbs take with the same meaning (`--model`, `--device`, `--out`) is one `typer.Option`
here; a verb's parameter pairs it with its own type and default (`Annotated[str | None, MODEL]`), which
typer copies per verb. tests/test_cli.py checks that no flag is declared twice in knowpack/cli/.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
from typing import Annotated, Any

import typer

from knowpack.config import check_field
from knowpack.errors import KnowpackError
from knowpack.probe.config import ProbeConfig


def config_option(cls: type, name: str, flag: str | None = None, *, help: str | None = None) -> Any:
    """A typer option for field `name` of the config dataclass `cls`: `flag` (default `--name-with-dashes`),
    the field's docstring as help (or `help`), and a check of the value against the field's type and range
    that fails as one line naming the flag. The parameter's default must be the field's (`= cls.name`)."""
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

    def check(value: Any) -> Any:
        if value is not None and value < low:
            raise KnowpackError(f"{flag} must be >= {low} (got {value})")
        return value

    return check


def _counted(flag: str, low: int, help: str) -> Any:
    """A numeric option whose value below `low` is a one-line error naming `flag`."""
    return typer.Option(flag, help=help, callback=at_least(low, flag))


# What every verb reads and writes.
MODEL = typer.Option(
    "--model",
    "-m",
    help="Hub id, local folder, 'organism' (bundled) or 'smollm2-135m' (eval: a model to evaluate alone, or "
    "with a RUN the base it must have).",
)
FACTS = typer.Option("--facts", "-f", help="Facts file or dataset, 'organism' or 'geo'.")
OUT = typer.Option("--out", help="Where the verb writes (its description says what).")
FORCE = typer.Option("--force", help="Replace what a finished run or a non-empty OUT holds.")
CONFIG = typer.Option("--config", help="A YAML file of the verb's settings (the same keys as its options).")
DEVICE = typer.Option("--device", help="cpu, cuda, cuda:1 or auto (default: auto; the demo's: cpu).")
DTYPE = typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")
SEED = _counted(
    "--seed", 0, "Seed: the probe's exemplars and sampling, select's random rows, the world's draw."
)
LIMIT = _counted(
    "--limit", 1, "Use only N items: eval, per benchmark (lm-eval's limit); attribute, the first N prompts."
)

# Where the work runs.
BACKEND = typer.Option(
    "--backend",
    help="Where the work runs: local (this machine; the probe's torch engine is `torch`), ray (a Ray "
    "cluster: pip install 'knowpack\\[ray]'), or for the probe vllm (pip install 'knowpack\\[vllm]'; GPU).",
)
ADDRESS = typer.Option(
    "--address",
    help="The Ray cluster to run on (--backend ray; default: RAY_ADDRESS, else a local Ray instance "
    "started for the command).",
)
SHARDS = _counted(
    "--shards",
    1,
    "With --backend ray: split the work into N tasks (default: the cluster's GPUs, else its CPUs).",
)
SHARD = typer.Option("--shard", help="Process only shard i of n, as 'i/n' (0-based), e.g. 0/4.")
MERGE = typer.Option("--merge", help="Join the finished shards in OUT into one result; no model.")
WORKERS = _counted("--workers", 1, "Processes to run cells in parallel (each claims cells).")

Model = Annotated[str, MODEL]
Facts = Annotated[str, FACTS]
Device = Annotated[str | None, DEVICE]
Dtype = Annotated[str, DTYPE]
Shard = Annotated[str | None, SHARD]
Shards = Annotated[int | None, SHARDS]
Address = Annotated[str | None, ADDRESS]
Backend = Annotated[str, BACKEND]
Merge = Annotated[bool, MERGE]
Force = Annotated[bool, FORCE]

# The probe's settings (the `probe` section of a run config): `knowpack probe`, and `knowpack eval --model`.
NPrompts = Annotated[int, config_option(ProbeConfig, "n_prompts")]
Shots = Annotated[int, config_option(ProbeConfig, "shots")]
Samples = Annotated[int, config_option(ProbeConfig, "samples")]
Temperature = Annotated[float, config_option(ProbeConfig, "temperature")]
TopK = Annotated[int, config_option(ProbeConfig, "top_k")]
MaxNewTokens = Annotated[int, config_option(ProbeConfig, "max_new_tokens")]
Format = Annotated[str, config_option(ProbeConfig, "format", "--prompt-format")]
BatchSize = Annotated[int | None, config_option(ProbeConfig, "batch_size")]
Compile = Annotated[bool, config_option(ProbeConfig, "compile", "--compile/--no-compile")]
CudaGraphs = Annotated[bool, config_option(ProbeConfig, "cuda_graphs", "--cuda-graphs/--no-cuda-graphs")]
SampleSize = Annotated[int | None, config_option(ProbeConfig, "sample_size")]
SampleSizeSeed = Annotated[int | None, config_option(ProbeConfig, "sample_size_seed")]
