"""`knowpack probe` as a function: a model and facts given by name, checked, loaded and probed, with or
without the repeat-seed noise floor.

    from knowpack.probe import probe_named_model
    result = probe_named_model("organism", "organism", out="out/probe", samples=0)
    result.records                                            # one probe record per fact (records.jsonl)
    result = probe_named_model("organism", "organism", out="out/probe", repeat_seed=1)
    result.repeat, result.matrix                              # + out/repeat-seed-1/, out/noise_floor.json

`model`: a Hub id, a local folder, `organism` or `smollm2-135m`; `facts` and `exemplars`: what `load_facts`
reads (a file, a dataset, `organism`, `geo`). Every argument is checked before the model loads, so a typo
costs no minutes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from knowpack import models
from knowpack.errors import KnowpackError
from knowpack.facts import load_facts
from knowpack.models import check_model
from knowpack.probe.config import ProbeConfig
from knowpack.probe.engine import check_speed
from knowpack.probe.noise import noise_floor
from knowpack.probe.prompts import FORMATS
from knowpack.probe.run import BACKENDS, parse_shard, probe
from knowpack.probe.vllm_backend import load

MODES = ("substring", "exact")
"""Correctness modes (`knowpack.facts.normalize.is_correct`)."""


@dataclass
class ProbeResult:
    """What `probe_named_model` probed: the records, and with a repeat seed the repeat probe's records and
    the transition matrix between the two (the noise floor, `noise_floor.json`)."""

    records: list[dict[str, Any]]
    repeat: list[dict[str, Any]] | None = None
    matrix: dict[str, Any] | None = None


def probe_named_model(
    model: str,
    facts: str,
    *,
    out: str | os.PathLike,
    exemplars: str | None = None,
    repeat_seed: int | None = None,
    device: str | None = None,
    dtype: str = "auto",
    backend: str = "torch",
    progress_bar: Callable[[str], Any] | None = None,
    **settings: Any,
) -> ProbeResult:
    """Probe `facts` with `model` into `out` (records.jsonl, summary.json), resumed when there.

    `settings`: any other `knowpack.probe` keyword (n_prompts, shots, samples, temperature, top_k,
    max_new_tokens, fmt, mode, seed, batch_size, sample_size, sample_size_seed, shard). `repeat_seed`: probe
    again with this seed into `out/repeat-seed-S` and write `out/noise_floor.json`
    (`knowpack.probe.noise_floor`).
    `progress_bar(label)`: a context manager yielding `progress(done, total)`, one per probe.
    """
    check_probe_request(repeat_seed=repeat_seed, device=device, backend=backend, **settings)
    lm, tokenizer, fact_set, exemplars = _load(model, facts, exemplars, device, dtype, backend, settings)
    if repeat_seed is not None:
        first, second, matrix = noise_floor(
            lm, tokenizer, fact_set, out=out, repeat_seed=repeat_seed, progress_bar=progress_bar,
            exemplars=exemplars, backend=backend, **settings,
        )  # fmt: skip
        return ProbeResult(first, second, matrix)
    label = f"probe (seed {settings.get('seed', ProbeConfig.seed)})"
    with progress_bar(label) if progress_bar else nullcontext(None) as progress:
        records = probe(
            lm,
            tokenizer,
            fact_set,
            out=out,
            progress=progress,
            exemplars=exemplars,
            backend=backend,
            **settings,
        )
    return ProbeResult(records)


def check_probe_request(
    *,
    repeat_seed: int | None = None,
    device: str | None = None,
    backend: str = "torch",
    fmt: str = ProbeConfig.format,
    mode: str = "substring",
    seed: int = ProbeConfig.seed,
    sample_size: int | None = None,
    shard: str | None = None,
    compile: bool = ProbeConfig.compile,
    cuda_graphs: bool = ProbeConfig.cuda_graphs,
    **numbers: Any,
) -> None:
    """The choices of a probe request, as one-line errors before anything loads (`probe()` checks the
    numbers itself; the CLI checks them as it parses its options)."""

    if shard is not None:
        parse_shard(shard)
    if repeat_seed is not None and repeat_seed == seed:
        raise KnowpackError(f"--repeat-seed must differ from --seed ({seed}): the noise floor needs another")
    if fmt not in FORMATS:
        raise KnowpackError(f"unknown prompt format {fmt!r}; expected {' or '.join(FORMATS)}")
    if mode not in MODES:
        raise KnowpackError(f"unknown correctness mode {mode!r}; expected {' or '.join(MODES)}")
    if sample_size is not None and sample_size < 1:
        raise KnowpackError(f"--sample-size must be >= 1 (got {sample_size})")
    if backend not in BACKENDS:
        raise KnowpackError(f"unknown backend {backend!r}; expected {' or '.join(BACKENDS)}")
    if backend == "vllm" and device is not None:
        raise KnowpackError("--device is for the torch backend; vLLM places the model itself")
    check_speed(backend, compile=compile, cuda_graphs=cuda_graphs)


def _load(model: str, facts: str, exemplars: str | None, device, dtype: str, backend: str, settings: dict):
    """(model, tokenizer, facts, exemplars or None): a local model's files are checked before the facts
    load, the facts before the model loads (the slow part)."""
    if backend == "torch":
        check_model(model)
    fact_set = load_facts(facts)
    exemplar_facts = load_facts(exemplars) if exemplars is not None else None
    if backend == "vllm":
        lm, tokenizer = load(model, dtype=dtype, seed=settings.get("seed", ProbeConfig.seed))
    else:
        lm, tokenizer = models.load_model(model, device=device, dtype=dtype)
    return lm, tokenizer, fact_set, exemplar_facts
