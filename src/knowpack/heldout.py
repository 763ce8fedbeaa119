"""Held-out evaluation: LoKI's attribution prompts are never items a benchmark scores (docs/design.md §5.3).

    from knowpack.heldout import split_attribution, attribution_items
    items = split_attribution({"world_mc": rows, "world_mc_dev": dev}, "world_mc")  # + "world_mc_attribution"
    attribution_items("geo_mc", tasks_dir)        # [(item id, item), ...] of geo_mc's attribution split

The bundled multiple-choice tasks that attribution can take by name (`world_mc`, `geo_mc`) keep their last
`ATTRIBUTION[task]` items (at most half of them) apart, in `<task>_attribution.jsonl` beside the task, a file
no lm-eval task reads: disjoint by construction. An item's id is its index in the task's items, the test
split first (0 .. n-1: lm-eval's `doc_id`, what eval.json's `benchmarks.doc_ids` records), then the
attribution split (n, n+1, ...), so that the attribution summary's `prompt_ids` and eval.json's `doc_ids` are
ids of one benchmark and can be intersected. MMLU's attribution prompts come from its validation split
(`MMLU_SPLIT`), which lm-eval's `mmlu` never scores (it scores `test`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from knowpack.errors import KnowpackError

ATTRIBUTION = {"world_mc": 195, "geo_mc": 95}
"""Items of each bundled task kept for attribution (its last ones; at most half of a smaller task): world_mc's
first 200 and geo_mc's first 300 items stay the test split, the items earlier evaluations with a `limit`
(200 and 100) scored."""
SUFFIX = "_attribution"
MMLU_SPLIT = "validation"


def split_attribution(items: dict[str, list[dict]], task: str) -> dict[str, list[dict]]:
    """`items` (split name -> rows) with `task`'s rows split: its last `ATTRIBUTION[task]` (at most half)
    moved to `<task>_attribution`."""
    rows = items[task]
    kept = len(rows) - min(ATTRIBUTION[task], len(rows) // 2)
    return {**items, task: rows[:kept], task + SUFFIX: rows[kept:]}


def attribution_items(task: str, tasks_dir: str | os.PathLike) -> list[tuple[int, dict]]:
    """(item id, item) of every item of `task`'s attribution split in `tasks_dir` (ids after the test's)."""
    folder = Path(tasks_dir)
    test, held = folder / f"{task}.jsonl", folder / f"{task}{SUFFIX}.jsonl"
    if not held.is_file():
        raise KnowpackError(
            f"{held}: no attribution split (its items must not be ones {task} scores); rewrite the tasks "
            "(`knowpack world tasks` for a world, `python -m knowpack.real.geo` for geo)"
        )
    first = len(_rows(test))
    return [(first + i, item) for i, item in enumerate(_rows(held))]


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise KnowpackError(f"task data not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
