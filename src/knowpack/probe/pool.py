"""The exemplars of a probe (the facts its few-shot examples are drawn from), recorded exactly, so that every
re-probe asks exactly the same prompts.

A probe's prompts depend on its exemplars (docs/design.md §4.2: they are drawn from them per prompt index and
relation). So a probe records their identity, not a description of them: `exemplar_pool` in its settings is
`{"facts": n, "sha256": h}`, h a hash of what each exemplar brings to a prompt (id, question, answer,
relation, subject), and `exemplar_pool.json` beside `records.jsonl` lists their ids. Whatever probes the same
facts again (the uptake measured while training, `knowpack eval`'s re-probe, the noise floor) takes
`resolve_pool`'s exemplars, rebuilt from the facts file by those ids and checked against the hash, or a
one-line error when the facts file cannot give them back.

    write_pool(out, exemplars)                     # what probe() does when it writes a folder
    exemplars = read_pool("runs/x/probe", facts)   # the same exemplars, from the run's facts file
    chosen = sample_facts(facts, 300, seed=0)      # the facts a `sample_size: 300` probe asks about

`sample_facts` is the one way a probe of "a seeded sample of `sample_size` facts" chooses them (a run's
`probe.sample_size`, `knowpack eval --model --sample-size`, `knowpack probe --sample-size`): the same seed
gives the same facts everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.schema import Fact
from knowpack.io import write_json_atomic

POOL_FILE = "exemplar_pool.json"


def pool_identity(exemplars: Sequence[Fact]) -> dict[str, Any]:
    """`{"facts": n, "sha256": h}`: equal for two sets of exemplars exactly when they give the same prompts
    (the order they come in does not matter: the probe sorts them by id)."""
    rows = sorted([f.id, f.question, f.answer, f.relation, f.subject] for f in exemplars)
    digest = hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"facts": len(rows), "sha256": digest}


def write_pool(folder: str | Path, exemplars: Sequence[Fact]) -> None:
    """Write `folder/exemplar_pool.json` (the exemplars' identity and their ids), unless it holds them."""
    path = Path(folder) / POOL_FILE
    identity = pool_identity(exemplars)
    if _read(path).get("sha256") != identity["sha256"]:
        write_json_atomic(path, {**identity, "ids": sorted(f.id for f in exemplars)})


def read_pool(folder: str | Path, facts: Sequence[Fact], settings: dict | None = None) -> list[Fact]:
    """The exemplars of the probe in `folder`, rebuilt from `facts` (the run's facts file); `settings`
    are the probe's (default: its summary.json's)."""
    folder = Path(folder)
    if settings is None:
        settings = _read(folder / "summary.json").get("settings") or {}
    return resolve_pool(settings.get("exemplar_pool"), _read(folder / POOL_FILE).get("ids"), facts, folder)


def resolve_pool(
    recorded: Any, ids: list[str] | None, facts: Sequence[Fact], folder: str | Path
) -> list[Fact]:
    """The exemplars a probe recorded (`recorded`: its settings' `exemplar_pool`; `ids`: its
    exemplar_pool.json), rebuilt from `facts`. Probes from before the exemplars were recorded exactly said
    "facts" (the whole facts file they were given, sampled or not) or "N given"; a hand-made probe says
    nothing (the whole file)."""
    facts = list(facts)
    if recorded is None or recorded == "facts" or recorded == f"{len(facts)} given":
        return facts
    if isinstance(recorded, str):
        raise KnowpackError(
            f"the probe in {folder} drew exemplars from {recorded.split()[0]} facts, the facts "
            f"file has {len(facts)}: a re-probe could not ask the same prompts"
        )
    if ids is None:  # no id list: only the whole facts file can be checked against the hash
        exemplars = facts
    else:
        by_id = {f.id: f for f in facts}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise KnowpackError(
                f"the exemplars of the probe in {folder} hold {len(missing)} facts that are not in the "
                f"facts file, e.g. {missing[0]!r}: a re-probe could not ask the same prompts"
            )
        exemplars = [by_id[i] for i in ids]
    if pool_identity(exemplars) != recorded:
        raise KnowpackError(
            f"the exemplars of the probe in {folder} ({recorded.get('facts')} facts) cannot be rebuilt "
            "from the facts file (their questions or answers changed since, or it is another file): a "
            "re-probe could not ask the same prompts"
        )
    return exemplars


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def sample_facts(facts: Sequence[Fact], sample_size: int | None, seed: int = 0) -> list[Fact]:
    """A seeded random sample of `sample_size` of `facts` (all of them, in order, when `sample_size` is None
    or not smaller than them)."""
    import random

    if sample_size is None or sample_size >= len(facts):
        return list(facts)
    return random.Random(seed).sample(list(facts), sample_size)
