"""The `knowpack` command line: a thin layer over the Python API, one verb per pipeline stage (DESIGN.md).

    knowpack --help
    knowpack facts check facts.jsonl --lenient
    knowpack demo --out out/demo
    knowpack world build --out build/organism

Bad input (any `KnowpackError`) ends the command with one line `error: <message>` on stderr and exit code 1.
Verbs that are not implemented yet say so in their help, and exit with code 2 when called.
Heavy libraries (torch, transformers, datasets) are imported inside the verbs, so `--help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from knowpack import __version__
from knowpack.errors import KnowpackError

NOT_IMPLEMENTED = "(not implemented yet)"


class _KnowpackGroup(TyperGroup):
    """The top-level group: turns a KnowpackError from any verb into one line on stderr and exit code 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details (INFO).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Implant new facts into a causal LLM (LoRA / LoKI / full fine-tuning) and measure the damage."""
    _setup_logging(logging.INFO if verbose else logging.WARNING)


def _setup_logging(level: int) -> None:
    # One handler on the "knowpack" logger, bound to the current stderr (re-bound on every call, so that
    # repeated invocations in one process, as in tests, never write to a closed stream).
    logger = logging.getLogger("knowpack")
    for handler in [h for h in logger.handlers if getattr(h, "_knowpack_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
    handler._knowpack_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)


class _LowerLevelFormatter(logging.Formatter):
    """`warning: ...`, in the style of `error: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(record.levelname, record.levelname.lower(), 1)


def _not_implemented(verb: str) -> NoReturn:
    typer.echo(f"knowpack {verb}: not implemented yet in this version", err=True)
    raise typer.Exit(2)


# ------------------------------------------------------------------------------------------------ options

Model = Annotated[str, typer.Option("--model", "-m", help="Hub id, local folder, or 'organism' (bundled).")]
Facts = Annotated[str, typer.Option("--facts", "-f", help="Facts file or dataset, or 'organism'.")]
Shard = Annotated[
    str | None, typer.Option("--shard", help="Process only shard i of n, as 'i/n' (0-based), e.g. 0/4.")
]


# ------------------------------------------------------------------------------------------------ verbs


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/demo"),
) -> None:
    """Whole pipeline on the bundled model organism, on CPU, in minutes.

    Writes OUT/report.html and OUT/summary.json.
    """
    from knowpack.world.demo import run_demo

    run_demo(out)
    typer.echo(f"demo results in {out}")


@app.command()
def probe(
    out: Annotated[Path, typer.Option("--out", help="Output folder: records.jsonl, summary.json.")],
    model: Model = "organism",
    facts: Facts = "organism",
    n_prompts: Annotated[int, typer.Option("--n-prompts", help="Few-shot prompts per fact (N_ex).")] = 10,
    shots: Annotated[int, typer.Option("--shots", help="Exemplars per prompt (k).")] = 4,
    samples: Annotated[
        int, typer.Option("--samples", help="Samples per prompt; 0 gives the paper's three categories.")
    ] = 16,
    prompt_format: Annotated[str, typer.Option("--format", help="Prompt format: plain or chat.")] = "plain",
    seed: Annotated[int, typer.Option("--seed", help="Seed for exemplars and sampling.")] = 0,
    shard: Shard = None,
) -> None:
    """(not implemented yet) Probe what the model knows: the SliCK category of every fact."""
    _not_implemented("probe")


@app.command()
def attribute(
    prompts: Annotated[
        Path, typer.Option("--prompts", help="JSONL, one 'prompt' (text) or 'messages' (chat turns) a line.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the scores.")],
    model: Model = "organism",
    shard: Shard = None,
) -> None:
    """(not implemented yet) LoKI's knowledge vector attribution (KVA) scores of every down_proj row."""
    _not_implemented("attribute")


@app.command()
def select(
    scores: Annotated[Path, typer.Argument(help="Folder written by `knowpack attribute`.")],
    quota: Annotated[
        float, typer.Option("--quota", "-q", help="Share of all down_proj rows to train, in %.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output JSON: layer -> row indices.")],
    strategy: Annotated[
        str, typer.Option("--strategy", help="layer-balanced (LoKI), global-low or global-high.")
    ] = "layer-balanced",
) -> None:
    """(not implemented yet) Select the down_proj rows LoKI trains, from attribution scores."""
    _not_implemented("select")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Overrides as section.key=value, e.g. mix.n_unknown=100.")
    ] = None,
) -> None:
    """(not implemented yet) Build the training mix and implant it with LoRA, LoKI or full fine-tuning."""
    _not_implemented("train")


@app.command("eval")
def eval_(
    run: Annotated[Path | None, typer.Argument(help="Run folder (compared with its base model).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Evaluate this model alone.")] = None,
    facts: Annotated[str | None, typer.Option("--facts", "-f", help="Facts for --model.")] = None,
) -> None:
    """(not implemented yet) Uptake and damage of a run against its base, or of one model alone."""
    _not_implemented("eval")


@app.command()
def sweep(config: Annotated[Path, typer.Argument(help="Sweep config (YAML).")]) -> None:
    """(not implemented yet) A resumable grid of runs, one run folder per cell."""
    _not_implemented("sweep")


@app.command()
def capacity(config: Annotated[Path, typer.Argument(help="Capacity search config (YAML).")]) -> None:
    """(not implemented yet) The largest number of facts that fits within a damage budget."""
    _not_implemented("capacity")


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="Run or sweep folders.")],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: the first DIR).")] = None,
) -> None:
    """(not implemented yet) Tables and plots from result files: report.html, report.md, PNGs."""
    _not_implemented("report")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: a plain HF checkpoint.")],
) -> None:
    """(not implemented yet) Merge a run's weights into a plain checkpoint for AutoModelForCausalLM."""
    _not_implemented("export")


@world_app.command("build")
def world_build(
    out: Annotated[Path, typer.Option("--out", help="Output folder for the checkpoint and world files.")],
    config: Annotated[Path | None, typer.Option("--config", help="World config (YAML).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed (default: the config's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty OUT.")] = False,
    keep_corpus: Annotated[
        bool, typer.Option("--keep-corpus", help="Keep the generated corpus in OUT.")
    ] = False,
    benchmarks: Annotated[
        bool, typer.Option("--benchmarks/--no-benchmarks", help="Write and measure the world benchmarks.")
    ] = True,
) -> None:
    """Build the synthetic world and pretrain the model organism on it (seeded, reproducible)."""
    from knowpack.world.build import build_world

    build_world(out, config, seed=seed, force=force, keep_corpus=keep_corpus, benchmarks=benchmarks)
    typer.echo(f"organism written to {out}")


@facts_app.command("check")
def facts_check(
    file: Annotated[str, typer.Argument(help="Facts file, dataset folder or Hub name, or 'organism'.")],
    lenient: Annotated[bool, typer.Option("--lenient", help="Skip bad rows instead of stopping.")] = False,
    facts_format: Annotated[
        str, typer.Option("--format", help="auto, facts, kp, easyedit or counterfact.")
    ] = "auto",
    split: Annotated[str, typer.Option("--split", help="Split of a Hugging Face dataset.")] = "train",
) -> None:
    """Load and validate a facts file; print counts per relation and bucket."""
    from rich.console import Console
    from rich.table import Table

    from knowpack.facts import load_facts

    facts = load_facts(file, format=facts_format, lenient=lenient, split=split)
    skipped = f", {len(facts.skipped)} bad row(s) skipped" if facts.skipped else ""
    typer.echo(f"{facts.source}: {len(facts)} facts, format {facts.format}{skipped}")
    console = Console(highlight=False)
    for field in ("relation", "bucket"):
        counts = facts.counts(field)
        if set(counts) == {None}:
            continue
        table = Table(field, "facts")
        for value, n in counts.most_common(30):
            table.add_row("(none)" if value is None else str(value), str(n))
        if len(counts) > 30:
            table.add_row(f"... {len(counts) - 30} more", "")
        console.print(table)
    with_paraphrases = sum(1 for fact in facts if fact.paraphrases)
    typer.echo(f"with paraphrases: {with_paraphrases}; aliases per fact: {_mean_aliases(facts):.2f}")
    for err in facts.skipped[:20]:
        typer.echo(f"skipped: {err}", err=True)
    if len(facts.skipped) > 20:
        typer.echo(f"skipped: ... and {len(facts.skipped) - 20} more", err=True)


def _mean_aliases(facts: list) -> float:
    return sum(len(fact.answers) for fact in facts) / max(len(facts), 1)
