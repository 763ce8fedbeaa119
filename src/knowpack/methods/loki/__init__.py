"""LoKI (docs/papers.md §2): train only the down_proj rows that matter least to what the model already does.

One folder, laid out as PEFT lays out a tuner:
- `config.py`: `Config`, the `method` section of a run config with `name: loki`;
- `model.py`: the method row the registry (`knowpack.methods`) dispatches on: choose the rows (`selection`,
  attributing on the fly with `ensure_attribution`), then `prepare` / `save` / `load` / `merge`;
- `layer.py`: the LoKI layer: those rows as the only trainable parameters, save / load / merge / export;
- `kva.py`: Knowledge Vector Attribution, a score per down_proj row (node) from integrated gradients, exact,
  with the prompt prefix's KV cache computed once (several prompts in the same passes: `kva_batch`);
- `attribution.py`: KVA over a prompt set, per-layer selection counts kept online (resumable, shardable);
- `prompt_sets.py`: the prompt sets attribution runs on (a JSONL file, MMLU through `datasets`, world_mc);
- `stats.py`: those online statistics (counts for every quota, running sums; never all the scores);
- `select.py`: layer-balanced (and other) selection of the rows to train, and the selection file.

Import-light: reading a config imports `config.py` and `model.py`, which import torch only when used; the
other names below are imported on first use. Functions are not named after their modules
(`knowpack.methods.loki.select` is the module, `select_nodes` the function), so a submodule import never hides
a function.
"""

from __future__ import annotations

import importlib
from typing import Any

from knowpack.methods.loki.config import Config
from knowpack.methods.loki.model import (
    WEIGHTS,
    ensure_attribution,
    load,
    merge,
    prepare,
    save,
    selection,
    shared_work,
)

_API = {
    "kva_scores": "knowpack.methods.loki.kva",
    "kva_batch": "knowpack.methods.loki.kva",
    "KVAResult": "knowpack.methods.loki.kva",
    "attribute": "knowpack.methods.loki.attribution",
    "merge_shards": "knowpack.methods.loki.attribution",
    "load_prompts": "knowpack.methods.loki.prompt_sets",
    "Prompt": "knowpack.methods.loki.prompt_sets",
    "KVAStats": "knowpack.methods.loki.stats",
    "STRATEGIES": "knowpack.methods.loki.select",
    "select_nodes": "knowpack.methods.loki.select",
    "write_selection": "knowpack.methods.loki.select",
    "read_selection": "knowpack.methods.loki.select",
    "LokiLinear": "knowpack.methods.loki.layer",
    "apply_loki": "knowpack.methods.loki.layer",
    "loki_modules": "knowpack.methods.loki.layer",
    "save_loki": "knowpack.methods.loki.layer",
    "load_loki": "knowpack.methods.loki.layer",
    "read_loki": "knowpack.methods.loki.layer",
    "merge_loki": "knowpack.methods.loki.layer",
    "export_loki": "knowpack.methods.loki.layer",
}

__all__ = [
    "WEIGHTS",
    "Config",
    "ensure_attribution",
    "load",
    "merge",
    "prepare",
    "save",
    "selection",
    "shared_work",
    *_API,
]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'knowpack.methods.loki' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
