"""LoKI (PAPERS.md §2): train only the down_proj rows that matter least to what the model already does.

- `kva.py`: Knowledge Vector Attribution, a score per down_proj row (node) from integrated gradients, exact,
  with the prompt prefix's KV cache computed once;
- `attribution.py`: KVA over a prompt set, per-layer selection counts kept online (resumable, shardable);
- `prompts.py`: the prompt sets (a JSONL file, MMLU through `datasets`, the organism's world_mc);
- `stats.py`: those online statistics (counts for every quota, running sums; never all the scores);
- `select.py`: layer-balanced (and other) selection of the rows to train, and the selection file;
- `layer.py`: the LoKI layer: those rows as the only trainable parameters, save / load / merge / export.

Import-light: the submodules import torch when they are used, this package does not; the names below are
imported on first use. Functions are not named after their modules (`knowpack.loki.select` is the module,
`select_nodes` the function), so a submodule import never hides a function.
"""

from __future__ import annotations

import importlib
from typing import Any

_API = {
    "kva_scores": "knowpack.loki.kva",
    "KVAResult": "knowpack.loki.kva",
    "attribute": "knowpack.loki.attribution",
    "merge_shards": "knowpack.loki.attribution",
    "load_prompts": "knowpack.loki.prompts",
    "Prompt": "knowpack.loki.prompts",
    "KVAStats": "knowpack.loki.stats",
    "STRATEGIES": "knowpack.loki.select",
    "select_nodes": "knowpack.loki.select",
    "write_selection": "knowpack.loki.select",
    "read_selection": "knowpack.loki.select",
    "LokiLinear": "knowpack.loki.layer",
    "apply_loki": "knowpack.loki.layer",
    "loki_modules": "knowpack.loki.layer",
    "save_loki": "knowpack.loki.layer",
    "load_loki": "knowpack.loki.layer",
    "read_loki": "knowpack.loki.layer",
    "merge_loki": "knowpack.loki.layer",
    "export_loki": "knowpack.loki.layer",
}

__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'knowpack.loki' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
