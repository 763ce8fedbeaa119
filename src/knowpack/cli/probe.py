"""`knowpack probe`: what the model knows (SliCK categories), optionally with its prompt sensitivity."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from knowpack.cli.console import progress_bar
from knowpack.cli.options import Address, Dtype, Facts, Model, Shard, Shards, config_option
from knowpack.errors import KnowpackError
from knowpack.probe.config import ProbeConfig

P = ProbeConfig

# The options, declared once here so that the signature below reads as a list.
Out = Annotated[Path, typer.Option("--out", help="Output folder: records.jsonl, summary.json.")]
Temperature = Annotated[float, config_option(P, "temperature", help="Sampling temperature.")]
MaxNewTokens = Annotated[int, config_option(P, "max_new_tokens", help="Longest answer, in tokens.")]
Format = Annotated[str, config_option(P, "format", help="Prompt format: plain or chat.")]
Mode = Annotated[str, typer.Option("--mode", help="Correctness: substring (the paper's) or exact.")]
Exemplars = Annotated[
    str | None, typer.Option("--exemplars", help="Facts file of exemplars (default: the facts).")
]
Seed = Annotated[int, config_option(P, "seed", help="Seed for exemplars and sampling.")]
BatchSize = Annotated[
    int | None,
    config_option(
        P, "batch_size", help="Sequences decoded at once (torch; default: from free GPU memory, CPU 256)."
    ),
]
Compile = Annotated[bool, config_option(P, "compile", "--compile/--no-compile")]
CudaGraphs = Annotated[bool, config_option(P, "cuda_graphs", "--cuda-graphs/--no-cuda-graphs")]
SampleSize = Annotated[
    int | None,
    typer.Option(
        "--sample-size",
        help="Probe a random sample of N facts over every relation, drawn with --sample-size-seed (as a "
        "run config's probe.sample_size: the same N and seed give the facts its run probes).",
    ),
]
SampleSizeSeed = Annotated[
    int, config_option(P, "sample_size_seed", help="Seed of the --sample-size sample.")
]
Merge = Annotated[
    bool, typer.Option("--merge", help="Join the finished shards in OUT into records.jsonl; no model.")
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
TorchDevice = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1 or auto (torch backend).")
]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Generation: torch (knowpack's engine), vllm (pip install 'knowpack\\[vllm]'; GPU) or ray (the "
        "torch engine's shards as tasks on a Ray cluster, merged: pip install 'knowpack\\[ray]').",
    ),
]


def probe(
    out: Out,
    model: Model = "organism",
    facts: Facts = "organism",
    n_prompts: Annotated[int, config_option(P, "n_prompts")] = P.n_prompts,
    shots: Annotated[int, config_option(P, "shots")] = P.shots,
    samples: Annotated[int, config_option(P, "samples")] = P.samples,
    temperature: Temperature = P.temperature,
    top_k: Annotated[int, config_option(P, "top_k")] = P.top_k,
    max_new_tokens: MaxNewTokens = P.max_new_tokens,
    prompt_format: Format = P.format,
    mode: Mode = "substring",
    exemplars: Exemplars = None,
    seed: Seed = P.seed,
    batch_size: BatchSize = P.batch_size,
    compile: Compile = P.compile,
    cuda_graphs: CudaGraphs = P.cuda_graphs,
    sample_size: SampleSize = None,
    sample_size_seed: SampleSizeSeed = P.sample_size_seed,
    shard: Shard = None,
    merge: Merge = False,
    repeat_seed: RepeatSeed = None,
    device: TorchDevice = None,
    dtype: Dtype = "auto",
    backend: Backend = "torch",
    address: Address = None,
    shards: Shards = None,
) -> None:
    """Probe what the model knows: the SliCK category of every fact (records.jsonl, summary.json)."""
    from knowpack.probe import merge_shards, probe_named_model, read_records
    from knowpack.probe.named import check_probe_request

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
        from knowpack.experiment.backends import run_shards_on_ray
        from knowpack.experiment.cluster import check_backend

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
        from knowpack.probe.noise import repeat_folder

        _probe_line(repeat_folder(out, repeat_seed), result.repeat)
        kept = result.matrix["unchanged"]
        typer.echo(f"prompt sensitivity (seed {seed} vs {repeat_seed}): {kept:.1%} kept their category")


def _probe_line(out: Path, records: list[dict]) -> None:
    from knowpack.probe import CATEGORIES

    counts = Counter(r["category"] for r in records)
    table = ", ".join(f"{c} {counts[c]}" for c in CATEGORIES)
    typer.echo(f"{out}: {len(records)} facts: {table}")
