"""The knowledge probe: for every fact, whether the model knows it (SliCK categories, DESIGN.md).

prompts.py builds the few-shot prompts, engine.py generates greedy and sampled answers (prefix KV reuse,
one prefill per prompt for all its samples), scoring.py turns answers into p_greedy / p_sample / a category,
run.py is `probe()`: records.jsonl + summary.json, resumable and shardable.

`knowpack.probe` is both this package and the function DESIGN.md names (`knowpack.probe(model, tok, facts)`):
the module is callable, because importing a subpackage rebinds its name on the parent package.
"""

import sys
import types

from knowpack.probe.run import merge_shards, parse_shard, probe, read_records
from knowpack.probe.scoring import CATEGORIES, category, score, transition_matrix

__all__ = [
    "CATEGORIES",
    "category",
    "merge_shards",
    "parse_shard",
    "probe",
    "read_records",
    "score",
    "transition_matrix",
]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return probe(*args, **kwargs)

    __call__.__doc__ = probe.__doc__


sys.modules[__name__].__class__ = _CallableModule
