"""`knowpack attribute` and `knowpack select`: LoKI's attribution (KVA) and the choice of rows to train."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.console import progress_bar
from knowpack.cli.options import (
    LIMIT,
    OUT,
    SEED,
    Address,
    Backend,
    Device,
    Dtype,
    Merge,
    Model,
    Shard,
    Shards,
    config_option,
)
from knowpack.devices import is_main_process
from knowpack.errors import KnowpackError
from knowpack.experiment.backends import run_shards_on_ray
from knowpack.experiment.cluster import check_backend
from knowpack.methods.loki.attribution import (
    attribute_named_model,
    check_prompt_source,
    load_attribution,
    merge_shards,
)
from knowpack.methods.loki.config import STEPS, Config
from knowpack.methods.loki.select import select_to_file


def attribute(
    out: Annotated[Path, OUT],
    prompts: Annotated[
        str | None,
        typer.Option(
            "--prompts",
            help="JSONL ('prompt' text or 'messages' chat turns a line), 'mmlu', 'mmlu:NAME_OR_PATH' "
            "or a bundled task: 'world_mc', 'geo_mc'.",
        ),
    ] = None,
    model: Model = "organism",
    steps: Annotated[
        int, typer.Option("--steps", help="Integrated-gradient steps m (the paper: 7).")
    ] = STEPS,
    per_subject: Annotated[int, config_option(Config, "per_subject")] = Config.per_subject,
    limit: Annotated[int | None, LIMIT] = None,
    quotas: Annotated[
        str | None,
        typer.Option(
            "--quotas", help="Extra quotas (%) to keep counts for, e.g. '12.5,33' (whole % always)."
        ),
    ] = None,
    rows_per_pass: Annotated[
        int | None, typer.Option("--rows-per-pass", help="At most this many (layer, step) rows per forward.")
    ] = None,
    prompts_per_pass: Annotated[
        int | None,
        typer.Option(
            "--prompts-per-pass",
            help="Prompts attributed together (default: 1 on a CPU, from free memory on a GPU).",
        ),
    ] = None,
    shard: Shard = None,
    merge: Merge = False,
    device: Device = None,
    dtype: Dtype = "auto",
    backend: Backend = "local",
    address: Address = None,
    shards: Shards = None,
) -> None:
    """LoKI's knowledge vector attribution (KVA) of every down_proj row, counted for selection.

    OUT receives kva.safetensors, records.jsonl and summary.json; --merge adds up the finished shards there
    into kva.safetensors. --limit attributes only the first N prompts.
    """

    if merge:
        summary = merge_shards(out)
        typer.echo(
            f"merged {summary['shards']} shards: {summary['prompts']} prompts in {out / 'kva.safetensors'}"
        )
        return
    check_backend(backend)
    if backend == "local" and shards is not None:
        raise KnowpackError("--shards is for --backend ray (one process: --shard i/n)")
    if backend == "ray" and shard is not None:
        raise KnowpackError("--backend ray makes its own shards; --shard is for one process")
    check_prompt_source(prompts)
    request = dict(
        model=model, prompts=prompts, steps=steps, per_subject=per_subject, limit=limit,
        quotas=[q for q in (quotas or "").replace(" ", "").split(",") if q], rows_per_pass=rows_per_pass,
        prompts_per_pass=prompts_per_pass, device=device, dtype=dtype,
    )  # fmt: skip
    if backend == "ray":
        run_shards_on_ray(
            attribute_named_model, out, request, shards=shards, address=address, progress_bar=progress_bar
        )
        merge_shards(out)
        stats = load_attribution(out)[0]
    else:
        stats = attribute_named_model(out=out, shard=shard, progress_bar=progress_bar, **request)
    if is_main_process():  # under a launcher, the main process alone talks
        typer.echo(
            f"{out}: {stats.n} prompts attributed ({stats.num_layers} layers x {stats.rows} down_proj rows); "
            f"next: knowpack select {out} --quota 10 --out selection.json"
        )


def select(
    scores: Annotated[Path, typer.Argument(help="Folder written by `knowpack attribute`.")],
    quota: Annotated[
        float, typer.Option("--quota", "-q", help="Share of all down_proj rows to train, in % (0, 100].")
    ],
    out: Annotated[Path, OUT],
    strategy: Annotated[str, config_option(Config, "strategy")] = Config.strategy,
    seed: Annotated[int, SEED] = Config.seed,
) -> None:
    """Select the down_proj rows LoKI trains, from an attribution (writes a selection JSON).

    OUT is the selection JSON: layer -> row indices.
    """

    layers, stats = select_to_file(scores, out, quota, strategy, seed=seed)
    chosen = sum(len(rows) for rows in layers.values())
    typer.echo(f"{out}: {chosen} rows over {stats.num_layers} layers ({strategy}, quota {quota:g}%)")
