"""The probe's settings: the `probe` section of a run config (`ProbeConfig`), and the check that a finished
base probe was made with them (`check_probe_settings`).

They sit with the probe, below training and evaluation, which both read them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.config import check_ranges, ranged
from knowpack.errors import KnowpackError

logger = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    run: str | None = None
    """A finished probe folder (records.jsonl) of this model on these facts. Null: probe here, into `out`."""
    out: str | None = None
    """Where to probe when `run` is null (default `<run out>/probe`); an existing probe there is resumed."""
    sample_size: int | None = ranged(None, ge=1)
    """Probe only this many facts, a seeded random sample (the organism presets: a few hundred)."""
    sample_size_seed: int = ranged(0, ge=0)
    """Seed of the `sample_size` sample: which facts are probed (`seed` fixes exemplars and answers)."""
    n_prompts: int = ranged(10, ge=1)
    """Few-shot prompts per fact (N_ex)."""
    shots: int = ranged(4, ge=0)
    """Exemplars per prompt (k)."""
    samples: int = ranged(16, ge=0)
    """Samples per prompt; 0 gives the paper's three categories."""
    temperature: float = ranged(0.5, gt=0)
    """Sampling temperature of the sampled answers."""
    top_k: int = ranged(40, ge=0)
    """Sample from the k likeliest tokens (0: all)."""
    max_new_tokens: int = ranged(32, ge=1)
    """Longest answer, in tokens."""
    format: str = "plain"
    """Prompt format of the probe and of the uptake measurement: plain | chat."""
    seed: int = ranged(0, ge=0)
    """Seed of the exemplars each prompt shows and of the sampling."""
    batch_size: int | None = ranged(None, ge=1)
    """Sequences decoded at once (null: as many as half the GPU's free memory holds, 256 on a CPU)."""
    compile: bool = False
    """Compile the decode step with torch.compile (the same answers; the first batches wait for it)."""
    cuda_graphs: bool = False
    """Replay each decode step as a CUDA graph (the same answers; on a GPU, not with compile)."""

    SPEED_ONLY = ("compile", "cuda_graphs")
    """The settings that change how fast a probe runs, never its answers."""

    def __post_init__(self) -> None:
        check_ranges(self, "probe")

    def kwargs(self) -> dict[str, Any]:
        """These settings as `knowpack.probe()` keyword arguments (sweeps key their shared probe by them and
        eval.json records them, so their names stay as they are: `fmt` for `format`)."""
        return {
            keyword: getattr(self, name)
            for keyword, name in KEYWORDS.items()
            if keyword != "sample_size_seed"
        }

    def override(self, **settings: Any) -> ProbeConfig:
        """A copy with `settings` (`knowpack.probe()` keywords, `KEYWORDS`) in place of these; an unknown
        keyword is a TypeError, as for any function."""
        unknown = sorted(set(settings) - set(KEYWORDS))
        if unknown:
            raise TypeError(f"probe() got an unexpected keyword argument {unknown[0]!r}")
        return dataclasses.replace(self, **{KEYWORDS[k]: v for k, v in settings.items()})


KEYWORDS: dict[str, str] = {
    "n_prompts": "n_prompts",
    "shots": "shots",
    "samples": "samples",
    "temperature": "temperature",
    "top_k": "top_k",
    "max_new_tokens": "max_new_tokens",
    "fmt": "format",
    "seed": "seed",
    "batch_size": "batch_size",
    "compile": "compile",
    "cuda_graphs": "cuda_graphs",
    "sample_size_seed": "sample_size_seed",
}
"""`knowpack.probe()`'s keywords for the settings of `ProbeConfig` -> the field each sets. `run`, `out` and
`sample_size` are the run config's: `probe()` takes a folder `out` and a `sample_size` of its own."""


def check_probe_settings(recorded: dict | None, kwargs: dict[str, Any], folder: Path) -> None:
    """The base probe must have been made with the settings of the run's probe section (else before and
    after would differ by more than the weights)."""
    if recorded is None:
        logger.warning("%s has no probe settings (summary.json): assuming the run config's", folder)
        return
    samples = kwargs["samples"]
    expected = {
        "n_prompts": kwargs["n_prompts"],
        "shots": kwargs["shots"],
        "samples": samples,
        "temperature": kwargs["temperature"] if samples else None,
        "top_k": kwargs["top_k"] if samples else None,
        "max_new_tokens": kwargs["max_new_tokens"],
        "format": kwargs["fmt"],
        "mode": kwargs["mode"],
        "seed": kwargs["seed"],
    }
    diff = [
        f"{k} {recorded[k]!r} vs {v!r}" for k, v in expected.items() if k in recorded and recorded[k] != v
    ]
    if diff:
        raise KnowpackError(
            f"the base probe in {folder} was made with other settings than the run's probe section "
            f"({', '.join(diff)})"
        )
