"""The package's layers, lowest first: a module imports only from its own layer or the layers below it, and
no two modules import each other, directly or round a loop (tests/test_layers.py checks both, with every
import, those inside functions too).

A module is named by its path under `knowpack/`, without `.py` (`probe/run`; a package by its folder's
`__init__`, as `probe/__init__`); an entry names a module or a folder, and the longest entry that matches a
module gives its layer (`real/geo` sits above `real`).
"""

from __future__ import annotations

LAYERS: tuple[tuple[str, ...], ...] = (
    # what everything reads: errors, files, paths, the config grammar, devices, prompts, run folders; the
    # bundled data (the organism's and the geo facts' lm-eval task files); this list
    ("errors", "faults", "io", "paths", "config", "devices", "output", "prompts", "heldout", "runs"),
    ("organism", "geo", "layers"),
    # the inputs: facts, models (the real model's files among them), and their settings
    ("facts", "real", "models", "settings"),
    # asking a model what it knows; evaluation's settings (the run config below training composes them)
    ("probe", "evaluate/config"),
    # the implanting methods
    ("methods",),
    # training a run
    ("train",),
    # measuring a run
    ("evaluate",),
    # building the organism's world and the real facts (they measure with the probe and the benchmarks)
    ("world", "real/geo"),
    # grids of runs: settings, sweep, capacity, plan
    ("experiment",),
    # reading many runs
    ("report",),
    # what drives the rest: the demo (it reports), the Ray backend (it runs sweeps, capacity, plans)
    ("experiment/demo", "experiment/backends"),
    # the entry points: the command line, the package's public names, `python -m knowpack.real`
    ("cli", "__init__", "__main__", "real/__main__"),
)
"""The layers, lowest first."""


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` of `module` (a path under `knowpack/` without `.py`), or None when no entry
    matches it."""
    best: tuple[int, int] | None = None
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            if module == entry or module.startswith(entry + "/"):
                if best is None or len(entry) > best[1]:
                    best = (index, len(entry))
    return None if best is None else best[0]
