"""LoRA (and rsLoRA, DoRA, PiSSA) through PEFT: the knowledge-packing paper's method.

Saved as a PEFT adapter folder (`adapter/` in the run folder) that plain `PeftModel.from_pretrained` loads.
The paper's settings are `r: 1, alpha: 2, dropout: 0.1, target_modules: mlp` (configs/paper/). LoRA is the
`peft` method's row with knowpack's names and presets: the wrapping, saving, loading and merging are
knowpack.methods.peft's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from knowpack.config import check_ranges, ranged
from knowpack.errors import KnowpackError
from knowpack.methods.peft import load, merge, save, shared_work, target_modules, wrap

__all__ = ["WEIGHTS", "Config", "load", "merge", "prepare", "save", "shared_work", "target_modules"]

WEIGHTS = "adapter"
_INITS = ("default", "gaussian", "pissa", "olora")


@dataclass
class Config:
    r: int = ranged(8, ge=1)
    """Rank."""
    alpha: float = ranged(16.0, gt=0)
    """Scale numerator: the update is (alpha / r) * B A, or alpha / sqrt(r) with rslora."""
    dropout: float = ranged(0.0, ge=0, lt=1)
    target_modules: list[str] = field(default_factory=lambda: ["mlp"])
    """Module names, or the groups `mlp` (gate/up/down projections) and `attn` (q/k/v/o) from the
    architecture table, or `all-linear`."""
    rslora: bool = False
    dora: bool = False
    init: str = "default"
    """default | gaussian | pissa | olora (PEFT's `init_lora_weights`)."""

    def __post_init__(self) -> None:
        check_ranges(self, "method")
        if self.init not in _INITS:
            raise KnowpackError(f"method.init is {self.init!r}; expected one of {', '.join(_INITS)}")
        if not self.target_modules:
            raise KnowpackError("method.target_modules is empty")


def prepare(model: Any, config: Config, context: dict[str, Any]) -> Any:
    """Wrap `model` in a PEFT LoRA model; only the adapter is trainable."""
    from peft import LoraConfig

    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules(model, config.target_modules),
        use_rslora=config.rslora,
        use_dora=config.dora,
        init_lora_weights=True if config.init == "default" else config.init,
        task_type="CAUSAL_LM",
    )
    return wrap(model, lora, context)
