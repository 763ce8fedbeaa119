"""`knowpack capacity CONFIG`: the largest number of new facts that reaches a reliability target while the
damage stays within a budget, found by exponential then binary search over n (`mix.n_unknown`).

    # knowpack --threads 1 capacity configs/capacity/organism-lora.yaml
    base: ../organism/lora.yaml      # a run config (relative to this file)
    set: {probe.samples: 0}          # overrides for every point
    target: {reliability: 0.9}       # uptake: each at least this
    budget:                          # damage: each within this
      world_mc: 0.01                 #   accuracy drop vs the base model at most 0.01 (or TASK/METRIC)
      retention: 0.95                #   untrained HighlyKnown facts still HighlyKnown: at least 0.95
      # retention_drop: 0.05         #   or: at most 0.05 below the measurement null's retention
    seeds: [0, 1, 2]                 # each point is a run per seed (mix.seed and train.seed)
    rule: all                        # a point passes when every seed does (all), the seeds' mean (mean),
                                     # or (share) at least min_share (0.8) of its seeds, every seed run
    start: 1
    max: 256                         # also capped by the Unknown facts the base probe has
    limit: 200                       # benchmark items (null: all)
    out: runs/capacity-lora

The search tries n = start, 2 start, 4 start, ... until a point fails or the cap is reached, then bisects
between the last passing and the first failing n; it assumes that more facts never help. Every run is a run
folder at `OUT/points/n=<n>,seed=<s>`, trained (`knowpack train`) then evaluated (`knowpack eval`); like a
sweep's cells (knowpack.experiment.sweep) they share one base probe (`OUT/probe/<hash>`, and LoKI's
attribution), are claimed before they run, and a finished, evaluated run is reused, so an interrupted search
rerun picks up where it stopped. With rule `all`, a point stops at its first failing seed. `OUT/capacity.json`
(written atomically after every point) holds the answer, every point with its numbers, why it passed or
failed and the share of its seeds that passed (with a Wilson 95% interval), the answer's `confidence` (that
pass rate at the answer and at the first failing n above it, in a sentence), and the settings;
`OUT/capacity.png` plots them.

The package: config.py (the config grammar, `load_capacity`), search.py (`search_capacity`, `run_capacity`:
the runs, the verdicts, capacity.json), plot.py (`plot_capacity`: capacity.png).
"""

from knowpack.experiment.capacity.config import (
    BUDGET_KINDS,
    RULES,
    Capacity,
    Check,
    load_capacity,
    point_cell,
)
from knowpack.experiment.capacity.plot import plot_capacity
from knowpack.experiment.capacity.search import run_capacity, search_capacity

__all__ = [
    "BUDGET_KINDS",
    "RULES",
    "Capacity",
    "Check",
    "load_capacity",
    "plot_capacity",
    "point_cell",
    "run_capacity",
    "search_capacity",
]
