"""LoRA (and rsLoRA, DoRA, PiSSA) through PEFT: the knowledge-packing paper's method.

Saved as a PEFT adapter folder (`adapter/` in the run folder) that plain `PeftModel.from_pretrained` loads.
The paper's settings are `r: 1, alpha: 2, dropout: 0.1, target_modules: mlp` (configs/paper/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.config import check_ranges, ranged
from knowpack.devices import is_main_process
from knowpack.errors import KnowpackError
from knowpack.models import architecture

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


def target_modules(model: Any, names: list[str]) -> list[str] | str:
    """Expand the `mlp` / `attn` groups with the model family's names; `all-linear` passes through."""
    if names == ["all-linear"]:
        return "all-linear"
    spec = architecture(model)
    out: list[str] = []
    for name in names:
        group = {"mlp": spec["mlp_targets"], "attn": spec["attn_targets"]}.get(name, [name])
        out += [n for n in group if n not in out]
    return out


def prepare(model: Any, config: Config, context: dict[str, Any]) -> Any:
    """Wrap `model` in a PEFT LoRA model; only the adapter is trainable."""
    from peft import LoraConfig, get_peft_model

    init = True if config.init == "default" else config.init
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=target_modules(model, config.target_modules),
        use_rslora=config.rslora,
        use_dora=config.dora,
        init_lora_weights=init,
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as e:  # e.g. target modules not found in the model
        raise KnowpackError(f"LoRA: {str(e).strip().splitlines()[0]}") from None
    if config.init in ("pissa", "olora"):
        # PiSSA / OLoRA change the base weights at init. Keep the initial adapter so that the saved one can be
        # converted into an adapter for the untouched base (PEFT's weight conversion).
        initial = Path(context["run_dir"]) / "initial_adapter"  # PEFT uses the folder name as an adapter name
        peft_model.peft_config["default"].init_lora_weights = True
        if is_main_process():  # the initial adapter is the same in every process; one writes it
            peft_model.save_pretrained(initial)
        peft_model.peft_config["default"].init_lora_weights = init
        context["initial_adapter"] = initial
    return peft_model


def save(model: Any, folder: Path, config: Config, context: dict[str, Any]) -> None:
    """Write the adapter (PEFT format, safetensors) into `folder`."""
    initial = context.get("initial_adapter")
    if initial is not None:
        model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(initial))
    else:
        model.save_pretrained(folder)


def load(base: Any, folder: Path) -> Any:
    """The trained model: `base` with the adapter in `folder`."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(folder)).eval()


def merge(model: Any) -> Any:
    """A plain transformers model with the adapter folded into the weights."""
    return model.merge_and_unload()
