"""LoKI's settings: the `method` section of a run config with `name: loki` (PEFT's `<tuner>/config.py`).

    method:
      name: loki
      quota: 10                  # % of the down_proj rows of every layer
      strategy: layer-balanced   # or layer-balanced-high, global-low, global-high, abs, random
      positions: null            # a selection file (knowpack select); null: select here
      attribution: null          # a finished `knowpack attribute` folder to select from; null: attribute here
      prompts: world_mc          # the prompt set to attribute on (a JSONL file, mmlu, mmlu:PATH, world_mc)

Import-light (no torch): reading a config imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from knowpack.config import check_ranges, ranged
from knowpack.errors import KnowpackError

STEPS = 7
"""The paper's number of integrated-gradient steps of KVA (`knowpack attribute --steps`)."""

STRATEGIES = ("layer-balanced", "layer-balanced-high", "global-low", "global-high", "abs", "random")
"""How `knowpack select` picks rows from an attribution (`knowpack.methods.loki.select`)."""


@dataclass
class Config:
    quota: float = ranged(10.0, gt=0, le=100)
    """Share of the down_proj rows (nodes) to train, in %: k = floor(q * D / 100) per layer."""
    strategy: str = "layer-balanced"
    """layer-balanced (LoKI) | layer-balanced-high | global-low | global-high | abs | random."""
    positions: str | None = None
    """A selection file (`knowpack select`) to train; quota and strategy are then the file's."""
    attribution: str | None = None
    """A finished attribution folder (`knowpack attribute`) to select from."""
    attribution_out: str | None = None
    """Where to attribute when neither positions nor attribution is given (default `<run>/attribution`;
    an unfinished one there is resumed, so sweeps can share one)."""
    prompts: str = "world_mc"
    """Prompt set for attributing here: a JSONL file, `mmlu`, `mmlu:NAME_OR_PATH` or `world_mc`."""
    per_subject: int = ranged(50, ge=1)
    """MMLU questions per subject when `prompts` is MMLU."""
    attribution_limit: int | None = ranged(None, ge=1)
    """Attribute only the first N prompts."""
    seed: int = ranged(0, ge=0)
    """Seed of the `random` strategy."""
    lora_rank: int | None = ranged(None, ge=1)
    """LoKI*: train a LoRA pair of this rank on the chosen rows instead of the rows themselves."""
    lora_alpha: float | None = ranged(None, gt=0)
    lora_dropout: float = ranged(0.0, ge=0, lt=1)

    def __post_init__(self) -> None:
        check_ranges(self, "method")
        if self.strategy not in STRATEGIES:
            raise KnowpackError(
                f"method.strategy is {self.strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        if self.positions is not None and self.attribution is not None:
            raise KnowpackError("method.positions and method.attribution: give one of them, not both")
