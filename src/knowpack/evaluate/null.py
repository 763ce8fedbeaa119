"""The run that learned nothing: the measurement null as a real evaluation through the run's own path.

    model = untrained_model(base, tokenizer, config, weights, into)   # the method at its initial values
    key = null_recipe(config, weights)                                # what makes two runs' nulls the same

A run's measurement null (docs/design.md §4.6) is what the before / after comparison shows when nothing was
learned. It is measured, not assumed: the run's method is put on a copy of the base model at its initial
values (LoRA and other PEFT adapters as PEFT initialises them, B = 0; LoKI the run's own selected rows, as
they are in the base; full fine-tuning the whole model as it is), saved with the method's `save`, loaded back
with the method's `load` (the path the trained weights take), and re-probed with the base probe's prompts
(`knowpack.evaluate.base.measurement_null_records`). A fault anywhere on that path (wrapping, saving,
loading, merging, dtype, batching) shows as a null that is not zero.

The initial state depends on the recipe (method, its settings, LoKI's rows), not on the seed (a fresh LoRA
adapter's B is zero whatever its A), so every run of one recipe against one base probe shares its null.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

from knowpack.methods import method_config, method_module
from knowpack.train.config import RunConfig

WEIGHTS = "weights"
"""The untrained weights' folder inside the null's folder (the method's own format)."""


def null_recipe(config: RunConfig, weights: Path) -> dict[str, Any]:
    """What the untrained state of a run depends on: its method and settings, and LoKI's selected rows."""
    recipe: dict[str, Any] = {"method": config.method.name, "options": config.method.options}
    if config.method.name == "loki":
        selection = json.loads((Path(weights) / "selection.json").read_text(encoding="utf-8"))
        rows = json.dumps(selection["selection"], sort_keys=True).encode()
        recipe["rows"] = hashlib.sha256(rows).hexdigest()
        recipe["lora"] = selection.get("lora")
    return recipe


def untrained_model(base: Any, tokenizer: Any, config: RunConfig, weights: Path, into: Path) -> Any:
    """The run's method on a copy of `base` at its initial values, saved into `into/weights` with the method's
    `save` and loaded back onto another copy with its `load`: the model a run that learned nothing evaluates
    as. `weights`: the run's trained weights (LoKI reads which rows it trained there). `base` is untouched.
    The initial values are the run's own: drawn with `train.seed`, as training seeds before `prepare`
    (knowpack.train.run), whatever the process drew before; the caller's random state is left as it was."""
    import torch  # keeps knowpack.evaluate light: torch only when a null is built

    module = method_module(config.method.name)
    settings = method_config(config.method.name, config.method.options)
    folder = Path(into) / WEIGHTS
    context: dict[str, Any] = {"tokenizer": tokenizer, "run_dir": str(into), "config": config}
    with torch.random.fork_rng():
        torch.manual_seed(config.train.seed)
        if config.method.name == "loki":
            start = _loki_start(copy.deepcopy(base), Path(weights))
        else:
            start = module.prepare(copy.deepcopy(base), settings, context)
        module.save(start, folder, settings, context)
        del start
        return module.load(copy.deepcopy(base), folder).eval()


def _loki_start(model: Any, weights: Path) -> Any:
    """The run's LoKI layers (its rows; LoKI*: its LoRA pairs, B = 0) wrapped onto `model` as training began:
    the rows copied from the base weights, as `apply_loki` does."""
    from knowpack.methods.loki.layer import apply_loki, read_loki  # torch: keeps evaluate.run light

    meta, _ = read_loki(weights)
    lora = meta.get("lora") or {}
    rows = {int(layer): chosen for layer, chosen in meta["selection"].items()}
    return apply_loki(
        model,
        rows,
        lora_rank=lora.get("rank"),
        lora_alpha=lora.get("alpha"),
        lora_dropout=lora.get("dropout", 0.0),
    )
