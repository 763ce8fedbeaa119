"""The `knowpack` command line: a thin layer over the Python API, one verb per pipeline stage (DESIGN.md).

    knowpack --help
    knowpack facts check facts.jsonl --lenient
    knowpack demo --out out/demo
    knowpack world build --out build/organism

Bad input (any `KnowpackError`) ends the command with one line `error: <message>` on stderr and exit code 1.
Heavy libraries (torch, transformers, datasets) are imported inside the verbs, so `--help` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from knowpack import __version__
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
    _setup_logging(logging.INFO if verbose else logging.WARNING)
    _third_party_output(verbose)
    if threads is not None:
        if threads < 1:
            raise KnowpackError("--threads must be >= 1")
        import torch

        torch.set_num_threads(threads)


def _setup_logging(level: int) -> None:
    # One handler on the "knowpack" logger, bound to the current stderr (re-bound on every call, so that
    # repeated invocations in one process, as in tests, never write to a closed stream).
    logger = logging.getLogger("knowpack")
    for handler in [h for h in logger.handlers if getattr(h, "_knowpack_cli", False)]:
        logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_LowerLevelFormatter("%(levelname)s: %(message)s"))
    handler._knowpack_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)


# Environment switches the libraries read when they are first imported (the CLI imports them later, in the
# verbs): their progress bars and their logging. `_third_party_output` also sets what is already imported.
_QUIET_ENV = {
    "TQDM_DISABLE": "1",  # tqdm's own switch: lm-eval's, datasets' and transformers' bars
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
}
_ENV_SET: set[str] = set()
# Libraries that log through the standard logging tree (lm-eval's "pretrained model kwarg is not of type str"
# and "Custom kwargs can be passed to --metadata", once per task and run).
_CHATTY_LOGGERS = (
    "lm_eval",
    "peft",
    "accelerate",
    "datasets",
    "huggingface_hub",
    "filelock",
    "fsspec",
    "urllib3",
)


def _third_party_output(verbose: bool) -> None:
    """Third-party chatter off unless -v: progress bars, info and warning logs, Python warnings (FutureWarning
    and the like). knowpack's own progress bars and log lines are unaffected."""
    import os

    level = logging.WARNING if verbose else logging.ERROR
    for name, value in _QUIET_ENV.items():
        if not verbose and name not in os.environ:
            os.environ[name] = value
            _ENV_SET.add(name)
        elif (
            verbose and name in _ENV_SET
        ):  # set by a quiet call earlier in this process (tests), not the user
            os.environ.pop(name, None)
            _ENV_SET.discard(name)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)  # warnings.warn(...) -> the "py.warnings" logger, shown with -v
    warned = logging.getLogger("py.warnings")
    warned.setLevel(level)
    for handler in [h for h in warned.handlers if getattr(h, "_knowpack_cli", False)]:
        warned.removeHandler(handler)
    if verbose:  # a handler of its own: captureWarnings gives the logger a NullHandler when it has none
        handler = _StderrHandler()
        handler._knowpack_cli = True  # type: ignore[attr-defined]
        warned.addHandler(handler)
    if "transformers" in sys.modules:  # imported already: its logging was configured from the environment
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar() if verbose else hf_logging.disable_progress_bar()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record comes (a test runner swaps it per invocation; a
    handler holding the old one would write to a closed stream after the command ended)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _LowerLevelFormatter(logging.Formatter):
    """`warning: ...`, in the style of `error: ...`."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace(record.levelname, record.levelname.lower(), 1)


# ------------------------------------------------------------------------------------------------ options

Model = Annotated[
    str, typer.Option("--model", "-m", help="Hub id, local folder, 'organism' (bundled) or 'smollm2-135m'.")
]
Facts = Annotated[str, typer.Option("--facts", "-f", help="Facts file or dataset, 'organism' or 'geo'.")]
Shard = Annotated[
    str | None, typer.Option("--shard", help="Process only shard i of n, as 'i/n' (0-based), e.g. 0/4.")
]


# ------------------------------------------------------------------------------------------------ verbs


@app.command()
def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("out/demo"),
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="A shortened demo (10 facts): 1 CPU-minute, 2-3 minutes on shared cores."
        ),
    ] = False,
    device: Annotated[str, typer.Option("--device", help="cpu (the default), cuda or cuda:1.")] = "cpu",
    model: Annotated[
        str,
        typer.Option(
            "--model",
            help="organism (the default) or smollm2-135m: the real SmolLM2-135M-Instruct on real facts "
            "(GeoNames) and geo_mc (about 20 minutes on 2 cores).",
        ),
    ] = "organism",
) -> None:
    """The whole pipeline on the bundled organism, on a CPU: about 2 CPU-minutes.

    Probe what the organism knows, implant the same 50 Unknown facts with LoRA and with LoKI, evaluate both
    (uptake, knowledge shift beside the noise floor, refusals, world benchmarks) and write a report:
    OUT/report.html, OUT/summary.json, one run folder per method in OUT/runs/. With --model smollm2-135m the
    same on the real SmolLM2-135M-Instruct: 10 real facts (GeoNames) implanted, geo_mc as the benchmark.

    Time: 2-3 minutes on 2 idle CPU cores; 5 minutes measured on 2 cores shared with other jobs (load average
    6-8); longer under heavier load. It runs on one thread unless --threads says otherwise (two threads on
    busy cores spin-wait on each other: 3-4x slower).
    """
    from rich.console import Console
    from rich.table import Table

    from knowpack.experiment.demo import HEADERS, run_demo

    threads = None if ctx.parent is not None and ctx.parent.params.get("threads") else 1  # --threads: as set
    summary = run_demo(
        out,
        quick=quick,
        device=device,
        model=model,
        on_stage=lambda name: typer.echo(f"[{name}]", err=True),
        progress_bar=_progress,
        threads=threads,
    )
    table = Table(title=f"knowpack demo: {summary['implanted']['lora']} Unknown facts implanted")
    table.add_column("model")
    for column in summary["columns"]:
        table.add_column(HEADERS.get(column, column), justify="right")
    for name, values in summary["models"].items():
        table.add_row(
            name, *("–" if values.get(c) is None else f"{values[c]:.3f}" for c in summary["columns"])
        )
    Console().print(table)
    typer.echo(f"report: {out / 'report.html'}")
    if summary.get("notes"):
        typer.echo(
            f'{len(summary["notes"])} notes in its "Read this first": numbers that look like bugs (a '
            "benchmark below half of the base's score, refusals gone) and are measured effects of training."
        )


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
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.")] = 0.5,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample from the k likeliest tokens (0: all).")] = 40,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")] = 32,
    prompt_format: Annotated[str, typer.Option("--format", help="Prompt format: plain or chat.")] = "plain",
    mode: Annotated[str, typer.Option("--mode", help="Correctness: substring (the paper's) or exact.")] = (
        "substring"
    ),
    exemplars: Annotated[
        str | None, typer.Option("--exemplars", help="Facts file of exemplars (default: the facts).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed for exemplars and sampling.")] = 0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Sequences decoded at once (torch backend).")
    ] = 256,
    limit: Annotated[int | None, typer.Option("--limit", help="Probe only the first N facts.")] = None,
    shard: Shard = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Join the finished shards in OUT into records.jsonl; no model.")
    ] = False,
    repeat_seed: Annotated[
        int | None,
        typer.Option(
            "--repeat-seed",
            help="Probe again with this seed into OUT/repeat-seed-S and write OUT/noise_floor.json "
            "(category transitions with no training).",
        ),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, cuda:1 or auto (torch backend).")
    ] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
    backend: Annotated[
        str,
        typer.Option(
            "--backend",
            help="Generation: torch (knowpack's engine) or vllm (pip install 'knowpack\\[vllm]'; GPU).",
        ),
    ] = "torch",
) -> None:
    """Probe what the model knows: the SliCK category of every fact (records.jsonl, summary.json)."""

    from knowpack.probe import BACKENDS, merge_shards, parse_shard
    from knowpack.probe import probe as run_probe

    if merge:
        summary = merge_shards(out)
        typer.echo(f"merged {summary['shards']} shards: {summary['facts']} facts in {out / 'records.jsonl'}")
        return
    if shard is not None:
        parse_shard(shard)  # bad specs fail before the model loads
    _check_probe_options(
        n_prompts=n_prompts,
        shots=shots,
        samples=samples,
        temperature=temperature,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
    )
    if repeat_seed is not None:
        _check_probe_options(seed=repeat_seed, option="--repeat-seed")
        if repeat_seed == seed:
            raise KnowpackError(
                f"--repeat-seed must differ from --seed ({seed}): the noise floor needs another"
            )
    if prompt_format not in ("plain", "chat"):
        raise KnowpackError(f"unknown prompt format {prompt_format!r}; expected plain or chat")
    if mode not in ("substring", "exact"):
        raise KnowpackError(f"unknown correctness mode {mode!r}; expected substring or exact")
    if limit is not None and limit < 1:
        raise KnowpackError(f"--limit must be >= 1 (got {limit})")
    if backend not in BACKENDS:
        raise KnowpackError(f"unknown backend {backend!r}; expected {' or '.join(BACKENDS)}")
    if backend == "vllm" and device is not None:
        raise KnowpackError("--device is for the torch backend; vLLM places the model itself")
    from knowpack.facts import load_facts
    from knowpack.models import check_model, load_model

    if backend == "torch":
        check_model(model)
    fact_set = load_facts(facts)
    pool = load_facts(exemplars) if exemplars is not None else None
    if backend == "vllm":
        from knowpack.probe.vllm_backend import load

        lm, tokenizer = load(model, dtype=dtype, seed=seed)
    else:
        lm, tokenizer = load_model(model, device=device, dtype=dtype)
    settings = dict(
        n_prompts=n_prompts,
        shots=shots,
        samples=samples,
        temperature=temperature,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        fmt=prompt_format,
        mode=mode,
        exemplars=pool,
        batch_size=batch_size,
        limit=limit,
        shard=shard,
        backend=backend,
    )
    if repeat_seed is not None:
        from knowpack.probe.noise import noise_floor

        first, second, matrix = noise_floor(
            lm,
            tokenizer,
            fact_set,
            out=out,
            seed=seed,
            repeat_seed=repeat_seed,
            progress_bar=_progress,
            **settings,
        )
        _probe_line(out, first)
        _probe_line(out / f"repeat-seed-{repeat_seed}", second)
        typer.echo(
            f"noise floor (seed {seed} vs {repeat_seed}): {matrix['unchanged']:.1%} kept their category"
        )
        return
    with _progress(f"probe (seed {seed})") as progress:
        records = run_probe(lm, tokenizer, fact_set, seed=seed, out=out, progress=progress, **settings)
    _probe_line(out, records)


def _probe_line(out: Path, records: list[dict]) -> None:
    from knowpack.probe import CATEGORIES

    counts = Counter(r["category"] for r in records)
    table = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES)
    typer.echo(f"{out}: {len(records)} facts: {table}")


def _check_probe_options(option: str | None = None, **values: Any) -> None:
    """Probe options checked against the ranges of the run config's `probe` section (ProbeConfig), before
    any model is loaded or file written; the error names the option, e.g. `--n-prompts`."""
    from knowpack.train.config import ProbeConfig, check_field

    for name, value in values.items():
        if value is not None:
            check_field(ProbeConfig, name, value, option or "--" + name.replace("_", "-"))


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A rich progress bar with ETA on stderr; yields a `progress(done, total, **fields)` callback whose
    fields (training's epoch, loss, reliability) are shown after the bar, None ones left out."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        "[progress.description]{task.description}",
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        "eta",
        TimeRemainingColumn(),
        "{task.fields[info]}",
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=None, info="")

        def progress(done: int, total: int | None, **fields: Any) -> None:
            info = "  ".join(f"{k} {_field(v)}" for k, v in fields.items() if v is not None)
            bar.update(task, completed=done, total=total, info=info)

        yield progress


def _field(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@app.command()
def attribute(
    out: Annotated[
        Path, typer.Option("--out", help="Output folder: kva.safetensors, records.jsonl, summary.json.")
    ],
    prompts: Annotated[
        str | None,
        typer.Option(
            "--prompts",
            help="JSONL ('prompt' text or 'messages' chat turns a line), 'mmlu', 'mmlu:NAME_OR_PATH' "
            "or a bundled task: 'world_mc', 'geo_mc'.",
        ),
    ] = None,
    model: Model = "organism",
    steps: Annotated[int, typer.Option("--steps", help="Integrated-gradient steps m (the paper: 7).")] = 7,
    per_subject: Annotated[int, typer.Option("--per-subject", help="MMLU questions per subject.")] = 50,
    limit: Annotated[int | None, typer.Option("--limit", help="Attribute only the first N prompts.")] = None,
    quotas: Annotated[
        str | None,
        typer.Option(
            "--quotas", help="Extra quotas (%) to keep counts for, e.g. '12.5,33' (whole % always)."
        ),
    ] = None,
    rows_per_pass: Annotated[
        int | None, typer.Option("--rows-per-pass", help="At most this many (layer, step) rows per forward.")
    ] = None,
    shard: Shard = None,
    merge: Annotated[
        bool,
        typer.Option("--merge", help="Add up the finished shards in OUT into kva.safetensors; no model."),
    ] = False,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto, float32, bfloat16 or float16.")] = "auto",
) -> None:
    """LoKI's knowledge vector attribution (KVA) of every down_proj row, counted for selection."""
    from knowpack.methods.loki.attribution import merge_shards

    if merge:
        summary = merge_shards(out)
        typer.echo(
            f"merged {summary['shards']} shards: {summary['prompts']} prompts in {out / 'kva.safetensors'}"
        )
        return
    if prompts is None:
        raise KnowpackError(
            "--prompts is required (a JSONL file, 'mmlu', 'mmlu:NAME_OR_PATH', 'world_mc' or 'geo_mc')"
        )
    if any(n is not None and n < 1 for n in (steps, per_subject, limit, rows_per_pass)):
        raise KnowpackError("--steps, --per-subject, --limit and --rows-per-pass must be >= 1")
    extra = _quota_list(quotas)
    if (
        prompts not in ("mmlu", "world_mc", "geo_mc")
        and not prompts.startswith("mmlu:")
        and not Path(prompts).is_file()
    ):
        raise KnowpackError(
            f"prompts file not found: {prompts} (or give 'mmlu', 'mmlu:NAME_OR_PATH', 'world_mc', 'geo_mc')"
        )
    if shard is not None:
        from knowpack.probe import parse_shard

        parse_shard(shard)  # bad specs fail before the model loads
    from knowpack.methods.loki.attribution import attribute as run_attribute
    from knowpack.methods.loki.prompt_sets import load_prompts
    from knowpack.models import architecture, load_model

    lm, tokenizer = load_model(model, device=device, dtype=dtype)
    architecture(lm)  # an unsupported family fails before any prompt is read
    prompt_set = load_prompts(prompts, tokenizer, per_subject=per_subject)
    from knowpack.devices import is_main_process

    main = is_main_process()  # under a launcher every process attributes a shard; the main one talks
    with _progress("attribute") if main else contextlib.nullcontext(None) as progress:
        stats = run_attribute(
            lm,
            tokenizer,
            prompt_set,
            out=out,
            steps=steps,
            quotas=extra,
            source=prompts,
            limit=limit,
            shard=shard,
            rows_per_pass=rows_per_pass,
            progress=progress,
        )
    if not main:
        return
    typer.echo(
        f"{out}: {stats.n} prompts attributed ({stats.num_layers} layers x {stats.rows} down_proj rows); "
        f"next: knowpack select {out} --quota 10 --out selection.json"
    )


def _quota_list(text: str | None) -> list[float]:
    from knowpack.methods.loki.stats import check_quota

    return [check_quota(part) for part in (text or "").replace(" ", "").split(",") if part]


@app.command()
def select(
    scores: Annotated[Path, typer.Argument(help="Folder written by `knowpack attribute`.")],
    quota: Annotated[
        float, typer.Option("--quota", "-q", help="Share of all down_proj rows to train, in % (0, 100].")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output JSON: layer -> row indices.")],
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            help="layer-balanced (LoKI), layer-balanced-high, global-low, global-high, abs or random.",
        ),
    ] = "layer-balanced",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random strategy.")] = 0,
) -> None:
    """Select the down_proj rows LoKI trains, from an attribution (writes a selection JSON)."""
    from knowpack.methods.loki.attribution import load_attribution
    from knowpack.methods.loki.select import STRATEGIES, select_nodes, write_selection
    from knowpack.methods.loki.stats import check_quota

    check_quota(quota)
    if strategy not in STRATEGIES:
        raise KnowpackError(f"unknown strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    stats, meta = load_attribution(scores)
    layers = select_nodes(stats, quota, strategy, seed=seed)
    settings = meta["settings"]
    write_selection(
        out,
        layers,
        shape=(stats.num_layers, stats.rows),
        quota=quota,
        strategy=strategy,
        seed=seed if strategy == "random" else None,
        source={
            "attribution": str(scores),
            "prompts": settings["prompts"],
            "n_prompts": stats.n,
            "steps": settings["steps"],
        },
        model=settings["model"],
    )
    chosen = sum(len(rows) for rows in layers.values())
    typer.echo(f"{out}: {chosen} rows over {stats.num_layers} layers ({strategy}, quota {quota:g}%)")


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Overrides as section.key=value, e.g. mix.n_unknown=100.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo a run whose folder holds a finished one.")
    ] = False,
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

    The config (DESIGN.md) has sections model, facts, probe, mix, method, train, eval and out; every key
    can be overridden as section.key=value. Presets: configs/organism/{lora,loki,full}.yaml, configs/paper/.
    """
    from knowpack.devices import is_main_process
    from knowpack.train import load_config
    from knowpack.train import train as run_train

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
        progress_bar=_progress,
    )
    summary = json.loads((out / "train.json").read_text())
    typer.echo(
        f"{out}: {summary['implanted']} facts implanted with {summary['method']}, "
        f"reliability {_field(summary['reliability'])}, {summary['epochs_run']} epochs ({summary['stopped']})"
    )


@app.command("eval")
def eval_(
    run: Annotated[Path | None, typer.Argument(help="Run folder (compared with its base model).")] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Evaluate this model alone (with a RUN: the base it must have)."),
    ] = None,
    facts: Annotated[str | None, typer.Option("--facts", "-f", help="Facts for --model.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder for --model: eval.json.")] = None,
    benchmarks: Annotated[
        str | None,
        typer.Option(
            "--benchmarks", help="lm-eval tasks, e.g. world_mc,mmlu (default: the run's eval section)."
        ),
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Items per benchmark.")] = None,
    num_fewshot: Annotated[
        int | None,
        typer.Option("--num-fewshot", help="Shots per benchmark item (default: the task's; mmlu 5)."),
    ] = None,
    tasks_dir: Annotated[
        str | None, typer.Option("--tasks-dir", help="Folder of your own lm-eval task YAMLs (offline tasks).")
    ] = None,
    noise_floor: Annotated[
        bool | None,
        typer.Option("--noise-floor/--no-noise-floor", help="Probe the base again with seed + 1 (cached)."),
    ] = None,
    refusal_pattern: Annotated[
        list[str] | None,
        typer.Option("--refusal-pattern", help="A regex that marks a refusal (repeat; default: knowpack's)."),
    ] = None,
    samples: Annotated[
        int, typer.Option("--samples", help="--model: samples per prompt (0: 3 categories).")
    ] = 16,
    n_prompts: Annotated[int, typer.Option("--n-prompts", help="--model: few-shot prompts per fact.")] = 10,
    shots: Annotated[int, typer.Option("--shots", help="--model: exemplars per prompt.")] = 4,
    seed: Annotated[int, typer.Option("--seed", help="--model: probe seed.")] = 0,
    pool: Annotated[
        int | None, typer.Option("--pool", help="--model: probe a seeded sample of this many facts.")
    ] = None,
    pool_seed: Annotated[
        int | None,
        typer.Option(
            "--pool-seed", help="--model: the sample's seed (default: a run config's probe.pool_seed)."
        ),
    ] = None,
    compare: Annotated[
        Path | None, typer.Option("--compare", help="--model: a probe folder to compare with (shift).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu, cuda, cuda:1 or auto.")] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="--model: auto, float32, bfloat16 or float16.")
    ] = "auto",
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Sequences decoded at once by the probe.")
    ] = None,
) -> None:
    """Uptake and damage of a run against its base (RUN/eval.json), or of one model alone (OUT/eval.json)."""
    from knowpack.evaluate import evaluate_named_model, evaluate_run

    tasks = [t for t in (benchmarks or "").replace(" ", "").split(",") if t] or None
    if limit is not None and limit < 1:
        raise KnowpackError(f"--limit must be >= 1 (got {limit})")
    common = dict(
        benchmarks=tasks,
        limit=limit,
        num_fewshot=num_fewshot,
        tasks_dir=tasks_dir,
        refusal_patterns=refusal_pattern,
        progress_bar=_progress,
        on_stage=lambda name: typer.echo(f"[{name}]", err=True),
    )
    _check_probe_options(batch_size=batch_size)
    if run is not None:
        if facts is not None or out is not None:
            raise KnowpackError("--facts and --out are for --model; a run is measured on its own facts")
        result = evaluate_run(
            run, noise_floor=noise_floor, model=model, device=device, batch_size=batch_size, **common
        )
        typer.echo(_eval_summary(result))
        typer.echo(f"written: {run / 'eval.json'}")
        return
    if model is None or facts is None or out is None:
        raise KnowpackError("give a run folder, or --model, --facts and --out")
    _check_probe_options(n_prompts=n_prompts, shots=shots, samples=samples, seed=seed, batch_size=batch_size)
    _check_probe_options(pool=pool, option="--pool")
    _check_probe_options(pool_seed=pool_seed, option="--pool-seed")
    settings = dict(n_prompts=n_prompts, shots=shots, samples=samples)
    if batch_size is not None:
        settings["batch_size"] = batch_size
    result = evaluate_named_model(
        model,
        facts,
        out=out,
        pool=pool,
        pool_seed=pool_seed,
        seed=seed,
        device=device,
        dtype=dtype,
        probe_kwargs=settings,
        compare=compare,
        **common,
    )
    typer.echo(_eval_summary(result))
    typer.echo(f"written: {out / 'eval.json'}")


def _eval_summary(result: dict) -> str:
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
            "knowledge_shift": f"{scope} facts ({n}), base: noise floor",
        }.get(part, part.replace("_", " "))
        shown = ", ".join(f"{metric_label(name)} {show(name, scope=scope)}" for name in names)
        lines.append(f"{title}: {shown}")
    if "probe" in result:
        lines.append(f"probe: {result['probe']['categories']}")
    tasks: dict[str, list[str]] = {}
    for task, measure in benchmark_values(result):
        tasks.setdefault(task, []).append(f"{measure} {show('benchmark', task=task, measure=measure)}")
    lines += [f"{task}: {', '.join(shown)}" for task, shown in tasks.items()]
    return "\n".join(lines)


@app.command()
def sweep(
    config: Annotated[Path, typer.Argument(help="Sweep config (YAML): base, set, grid, cases, out.")],
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value for every cell, or out=DIR.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells and their status; run nothing.")
    ] = False,
    workers: Annotated[
        int, typer.Option("--workers", help="Processes to run cells in parallel (each claims cells).")
    ] = 1,
) -> None:
    """A resumable grid of training runs, one run folder per cell (OUT/cells/<key=value,...>).

    Finished cells are skipped, interrupted ones redone. Several processes or machines can run the same sweep:
    each claims a cell before running it. OUT/sweep.json lists every cell with its status.
    """
    from knowpack.experiment.sweep import cell_status, load_sweep, run_sweep

    if workers < 1:
        raise KnowpackError(f"--workers must be >= 1 (got {workers})")
    loaded = load_sweep(config, overrides or [])
    if dry_run:
        for cell in loaded.cells:
            typer.echo(f"{cell_status(cell):12} {cell.folder}")
        typer.echo(f"{len(loaded.cells)} cells")
        return
    alone = workers == 1  # workers print their cells' events, no bars
    summary = run_sweep(
        loaded,
        on_cell=_cell_event,
        on_stage=(lambda name: typer.echo(f"  [{name}]", err=True)) if alone else None,
        progress_bar=_progress if alone else None,
        workers=workers,
    )
    typer.echo(f"{loaded.out}: {summary['finished']} of {summary['total']} cells finished")
    if summary["finished"] < summary["total"]:
        raise typer.Exit(1)


def _cell_event(cell: Any, event: str) -> None:
    """A sweep cell's event on stderr (module-level: the sweep's worker processes get it too)."""
    typer.echo(f"[{event}] {cell.name}", err=True)


@app.command()
def capacity(
    config: Annotated[
        Path, typer.Argument(help="Capacity config (YAML): base, set, target, budget, seeds, max, out.")
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="out=DIR, max=64, seeds=[0], target.reliability=0.95, or section.key=value."),
    ] = None,
) -> None:
    """The largest number of new facts that reaches a reliability target within a damage budget.

    Exponential then binary search over n (mix.n_unknown); each point is a run per seed at
    OUT/points/n=<n>,seed=<s>, trained and evaluated, reused when finished. Writes OUT/capacity.json and
    OUT/capacity.png.
    """
    from knowpack.experiment.capacity import load_capacity, run_capacity

    loaded = load_capacity(config, overrides or [])
    result = run_capacity(
        loaded,
        on_event=lambda name, event: typer.echo(f"[{event}] {name}", err=True),
        on_stage=lambda name: typer.echo(f"  [{name}]", err=True),
        progress_bar=_progress,
    )
    answer, cap = result["answer"], result["cap"]["effective"]
    if answer is None:
        found = "no n passes (even the smallest fails)"
    else:
        found = f"capacity {answer} facts" + (f" (the cap: {cap})" if result["capped"] else "")
    typer.echo(f"{loaded.out}: {found}; {loaded.out / 'capacity.json'}, {loaded.out / 'capacity.png'}")


@app.command()
def report(
    dirs: Annotated[list[Path], typer.Argument(help="Run or sweep folders.")],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: the first DIR).")] = None,
) -> None:
    """Tables and plots from result files (run, sweep, capacity folders): report.html, report.md, PNGs.

    Reads config.yaml, train.json and eval.json of every finished run under DIRS; never runs a model.
    """
    from knowpack.report import write_report

    folder = write_report(dirs, out or dirs[0])
    typer.echo(f"report: {folder / 'report.html'}")


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder: a plain HF checkpoint.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Merge a finished run's weights into a plain checkpoint that AutoModelForCausalLM loads."""
    from knowpack.train.export import export_run

    typer.echo(f"exported to {export_run(run, out, force=force)}")


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
    pretrained: Annotated[
        Path | None,
        typer.Option(
            "--pretrained", help="Reuse the pretraining phase of an earlier build of the same world."
        ),
    ] = None,
) -> None:
    """Build the synthetic world and pretrain the model organism on it (seeded, reproducible)."""
    from knowpack.world.build import build_world

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


@facts_app.command("check")
def facts_check(
    file: Annotated[str, typer.Argument(help="Facts file, dataset folder or Hub name, 'organism' or 'geo'.")],
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
    _check_duplicate_questions(facts, lenient)
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


def _check_duplicate_questions(facts: Any, lenient: bool) -> None:
    """Facts that ask the same question: an error (a warning with --lenient). The probe never takes an
    exemplar with the fact's own question, so they shrink each other's exemplar pool, down to none."""
    groups = facts.duplicate_questions()
    if not groups:
        return
    shared = sum(len(g) for g in groups)
    first = groups[0]
    message = (
        f"{facts.source}: {shared} of {len(facts)} facts ask a question another fact asks too (e.g. "
        f"{first[0].id!r} and {first[1].id!r}: {first[0].question!r}); the probe never uses a fact with "
        "the asked question as an exemplar, so give each fact its own question"
    )
    if not lenient:
        raise KnowpackError(message + " (--lenient: only warn)")
    logging.getLogger("knowpack").warning("%s", message)


def _mean_aliases(facts: list) -> float:
    return sum(len(fact.answers) for fact in facts) / max(len(facts), 1)
