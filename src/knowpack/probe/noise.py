"""The noise floor of a probe: the same facts probed again with another seed, and the category transitions
between the two probes (what a before / after comparison shows with no training at all).

    records, repeat, matrix = noise_floor(model, tok, facts, out="out/probe", seed=0, repeat_seed=1)
    # out/records.jsonl, out/repeat-seed-1/records.jsonl, out/noise_floor.json (the transition matrix)

`knowpack probe --repeat-seed S` is this function; `knowpack eval` reads (or makes) the same files beside a
run's base probe (`knowpack.evaluate.base.noise_floor_records`).
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

NOISE_FLOOR_FILE = "noise_floor.json"


def repeat_folder(out: str | Path, seed: int) -> Path:
    """Where the repeat probe with `seed` of the probe in `out` lies."""
    return Path(out) / f"repeat-seed-{seed}"


def noise_floor(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    *,
    out: str | os.PathLike,
    seed: int = 0,
    repeat_seed: int,
    progress_bar: Callable[[str], Any] | None = None,
    **settings: Any,
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Probe `facts` with `seed` into `out` and with `repeat_seed` into `out/repeat-seed-<S>` (each resumed
    when there), write `out/noise_floor.json` (their transition matrix); returns (records, repeat records,
    matrix). `settings`: any other `knowpack.probe` keyword; `progress_bar(label)` as the CLI's."""
    from knowpack.probe.run import probe
    from knowpack.probe.scoring import transition_matrix

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
