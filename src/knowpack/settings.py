"""What every stage reads about a run's inputs: the model (`ModelConfig`: which weights, their dtype and the
device they run on) and the facts (`FactsConfig`: which file, how an answer counts as correct).

They sit below the probe, training and evaluation, which all read them; `knowpack.train.config.RunConfig`
composes them with each stage's own settings (`probe`, `mix`, `method`, `train`, `eval`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    name: str = "organism"
    """Hub id, local folder, `organism` or `smollm2-135m` (SmolLM2-135M-Instruct, converted on first use)."""
    dtype: str = "auto"
    """Weights' dtype when loaded: auto | float32 | bfloat16 | float16."""
    device: str | None = None
    """Where the model runs, for every stage of the run (probe, training, evaluation): cpu | cuda | cuda:1 |
    ... (null: the Trainer's choice, a GPU where there is one). Was `train.device`, which still reads."""
    trust_remote_code: bool = False
    """Run a model's own Python code from the Hub. Off unless you ask for it."""


@dataclass
class FactsConfig:
    path: str = "organism"
    """Facts file (JSONL, CSV, JSON, Parquet, HF dataset), `organism` or `geo` (real facts from GeoNames)."""
    mode: str = "substring"
    """Correctness: substring (the paper's) | exact."""
