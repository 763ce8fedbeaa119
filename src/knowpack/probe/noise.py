"""Two re-probes of an untouched model, the baselines a before / after comparison is read against.

- **Prompt sensitivity** (`noise_floor`, its historical name): the same facts probed again with another seed,
  which redraws the exemplars (and the samples), and the category transitions between the two probes: how much
  the categories depend on the choice of prompts. Context, not a null: a run's before and after probes share
  their prompts.

      records, repeat, matrix = noise_floor(model, tok, facts, out="out/probe", seed=0, repeat_seed=1)
      # out/records.jsonl, out/repeat-seed-1/records.jsonl, out/noise_floor.json (the transition matrix)

- **Measurement null** (`null_folder`, `NULL_SAMPLE_OFFSET`): a run's method at its initial values, through
  the run's own save / load path (`knowpack.evaluate.null`), probed with the same prompts (the same seed) and
  only the sampling seed changed (`knowpack.probe(..., sample_seed=S)`), into
  `out/null-<recipe>/sample-seed-<S>`: what the before / after comparison itself shows with no learning.
  With a sound pipeline greedy answers cannot move (they do not read the sampling seed) and only WeaklyKnown
  <-> Unknown can; a greedy null that moves shows a fault between the base and the trained model.

`knowpack probe --repeat-seed S` is `noise_floor`; `knowpack eval` reads (or makes) these files beside a run's
base probe (`knowpack.evaluate.base`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import write_json_atomic
from knowpack.probe.config import ProbeConfig
from knowpack.probe.run import probe
from knowpack.probe.scoring import transition_matrix

NOISE_FLOOR_FILE = "noise_floor.json"
"""The prompt sensitivity's transition matrix beside the base probe (the file keeps its first name)."""
NULL_SAMPLE_OFFSET = 1
"""The measurement null samples with the base probe's seed + this (its exemplars keep the base seed)."""


def null_folder(out: str | Path, recipe: str, sample_seed: int) -> Path:
    """Where the measurement-null re-probe (sampling seed `sample_seed`) of an untrained run of `recipe` (a
    short hash) against the probe in `out` lies; its untrained weights lie beside, in the parent folder."""
    return Path(out) / f"null-{recipe}" / f"sample-seed-{sample_seed}"


def repeat_folder(out: str | Path, seed: int) -> Path:
    """Where the repeat probe with `seed` of the probe in `out` lies."""
    return Path(out) / f"repeat-seed-{seed}"


def noise_floor(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    *,
    out: str | os.PathLike,
    seed: int = ProbeConfig.seed,
    repeat_seed: int,
    progress_bar: Callable[[str], Any] | None = None,
    **settings: Any,
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Probe `facts` with `seed` into `out` and with `repeat_seed` into `out/repeat-seed-<S>` (each resumed
    when there), write `out/noise_floor.json` (their transition matrix); returns (records, repeat records,
    matrix). `settings`: any other `knowpack.probe` keyword; `progress_bar(label)` as the CLI's."""

    if repeat_seed == seed:
        raise KnowpackError(f"--repeat-seed must differ from --seed ({seed}): the noise floor needs another")
    out = Path(out)
    results = []
    for run_seed, run_out in ((seed, out), (repeat_seed, repeat_folder(out, repeat_seed))):
        with progress_bar(f"probe (seed {run_seed})") if progress_bar else nullcontext(None) as progress:
            results.append(
                probe(model, tokenizer, facts, seed=run_seed, out=run_out, progress=progress, **settings)
            )
    matrix = transition_matrix(*results)
    write_json_atomic(out / NOISE_FLOOR_FILE, matrix)
    return results[0], results[1], matrix
