"""`knowpack probe`: what the model knows (SliCK categories), optionally with its prompt sensitivity."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.console import progress_bar
from knowpack.cli.options import (
    OUT,
    SEED,
    Address,
    Backend,
    BatchSize,
    Compile,
    CudaGraphs,
    Device,
    Dtype,
    Facts,
    Format,
    MaxNewTokens,
    Merge,
    Model,
    NPrompts,
    Samples,
    SampleSize,
    SampleSizeSeed,
    Shard,
    Shards,
    Shots,
    Temperature,
    TopK,
    config_option,
)
from knowpack.errors import KnowpackError
from knowpack.experiment.backends import run_shards_on_ray
from knowpack.experiment.cluster import check_backend
from knowpack.probe import CATEGORIES, merge_shards, probe_named_model, read_records
from knowpack.probe.config import ProbeConfig as P
from knowpack.probe.named import check_probe_request
from knowpack.probe.noise import repeat_folder

Mode = Annotated[str, typer.Option("--mode", help="Correctness: substring (the paper's) or exact.")]
Exemplars = Annotated[
    str | None, typer.Option("--exemplars", help="Facts file of exemplars (default: the facts).")
]
RepeatSeed = Annotated[
    int | None,
    config_option(
        P,
        "seed",
        "--repeat-seed",
        help="Probe again with this seed into OUT/repeat-seed-S and write OUT/noise_floor.json "
        "(prompt sensitivity: category transitions under other exemplars, with no training).",
    ),
]


def probe(
    out: Annotated[Path, OUT],
    model: Model = "organism",
    facts: Facts = "organism",
    n_prompts: NPrompts = P.n_prompts,
    shots: Shots = P.shots,
    samples: Samples = P.samples,
    temperature: Temperature = P.temperature,
    top_k: TopK = P.top_k,
    max_new_tokens: MaxNewTokens = P.max_new_tokens,
    prompt_format: Format = P.format,
    mode: Mode = "substring",
    exemplars: Exemplars = None,
    seed: Annotated[int, SEED] = P.seed,
    batch_size: BatchSize = P.batch_size,
    compile: Compile = P.compile,
    cuda_graphs: CudaGraphs = P.cuda_graphs,
    sample_size: SampleSize = P.sample_size,
    sample_size_seed: SampleSizeSeed = P.sample_size_seed,
    shard: Shard = None,
    merge: Merge = False,
    repeat_seed: RepeatSeed = None,
    device: Device = None,
    dtype: Dtype = "auto",
    backend: Backend = "torch",
    address: Address = None,
    shards: Shards = None,
) -> None:
    """Probe what the model knows: the SliCK category of every fact (records.jsonl, summary.json).

    OUT receives records.jsonl (a record per fact) and summary.json; --merge joins the finished shards there
    into records.jsonl. --backend is torch (knowpack's engine, this machine), vllm (GPU) or ray (the torch
    engine's shards as tasks on a Ray cluster, merged).
    """
    if merge:
        summary = merge_shards(out)
        typer.echo(f"merged {summary['shards']} shards: {summary['facts']} facts in {out / 'records.jsonl'}")
        return
    settings = dict(
        n_prompts=n_prompts, shots=shots, samples=samples, temperature=temperature, top_k=top_k,
        max_new_tokens=max_new_tokens, fmt=prompt_format, mode=mode, seed=seed, batch_size=batch_size,
        compile=compile, cuda_graphs=cuda_graphs, sample_size=sample_size,
        sample_size_seed=sample_size_seed,
    )  # fmt: skip
    if shards is not None and backend != "ray":
        raise KnowpackError("--shards is for --backend ray (one process: --shard i/n)")
    if backend == "ray":
        if shard is not None or repeat_seed is not None:
            raise KnowpackError(
                "--backend ray makes its own shards; --shard and --repeat-seed are for one process"
            )
        check_backend(backend)
        check_probe_request(device=device, **settings)
        request = dict(model=model, facts=facts, exemplars=exemplars, device=device, dtype=dtype, **settings)
        run_shards_on_ray(
            probe_named_model, out, request, shards=shards, address=address, progress_bar=progress_bar
        )
        merge_shards(out)
        _probe_line(out, read_records(out / "records.jsonl"))
        return
    result = probe_named_model(
        model, facts, out=out, exemplars=exemplars, repeat_seed=repeat_seed, device=device, dtype=dtype,
        backend=backend, progress_bar=progress_bar, shard=shard, **settings,
    )  # fmt: skip
    _probe_line(out, result.records)
    if result.matrix is not None:
        _probe_line(repeat_folder(out, repeat_seed), result.repeat)
        kept = result.matrix["unchanged"]
        typer.echo(f"prompt sensitivity (seed {seed} vs {repeat_seed}): {kept:.1%} kept their category")


def _probe_line(out: Path, records: list[dict]) -> None:
    counts = Counter(r["category"] for r in records)
    table = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES)
    typer.echo(f"{out}: {len(records)} facts: {table}")
