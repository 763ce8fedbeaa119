"""The training mix: n Unknown facts, each with k additions of one kind, drawn by seed from a probe run.

    mix = build_mix(facts, records, MixConfig(n_unknown=50, add="paraphrase", k=10, seed=1))
    mix.examples      # [{"fact_id", "role", "question", "answer"}, ...]: what the model trains on
    mix.implanted     # the Unknown facts whose answers are implanted (reliability is measured on these)

Roles: `unknown` (an Unknown fact with its answer), `idk` (an Unknown fact relabelled "I don't know.",
SliCK's remedy, for a share `idk_share` of the drawn facts), `paraphrase` (the same fact asked another way:
the fact's own `paraphrases`, never the held-out ones, which live in `meta`), `highly_known` / `maybe_known`
(other facts of that probe category with their true answers). Facts are drawn at random by `seed` (the paper
took them in file order; we resample per seed), optionally evenly over relations or buckets.

Training control (`mix.control: true`): the same mix with HighlyKnown facts (ones the model already knows)
in place of the Unknown ones, role `control`: the same recipe trains on as many facts without learning
anything new, so its damage is the damage of training at all (`knowpack eval RUN --control CONTROL`).
Additions of HighlyKnown facts are drawn from the others; `idk_share` relabels none of them.

Replay (`mix.replay`): general instruction data trained beside the facts, role `replay`, never an implanted
fact (no `fact_id`). A JSONL file, one example a line, in alpaca form {instruction, input, output} or messages
form {messages: [{role, content}, ...], the last turn the assistant's}; `load_replay` reads it (one-line
errors with file:line) and `add_replay` draws `count` of them, or enough to make `share` of all examples, by
`mix.seed` (its own stream: the same facts are drawn with and without replay).

    config = MixConfig(n_unknown=50, replay={"path": "alpaca.jsonl", "share": 0.2})
    add_replay(mix, load_replay("alpaca.jsonl"), config)     # 12 replay examples beside 50 facts
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts import load_facts
from knowpack.facts.schema import Fact
from knowpack.prompts import REFUSAL
from knowpack.train.config import MixConfig

logger = logging.getLogger(__name__)

_ADD_CATEGORY = {"highly_known": "HighlyKnown", "maybe_known": "MaybeKnown"}


@dataclass
class Mix:
    """The examples to train on and where they came from."""

    examples: list[dict[str, Any]]
    implanted: list[Fact]
    provenance: dict[str, Any] = field(default_factory=dict)


def categories(records: Sequence[dict]) -> dict[str, str]:
    """Fact id -> probe category."""
    return {r["id"]: r["category"] for r in records}


def check_mix(config: MixConfig, records: Sequence[dict], where: str = "probe") -> None:
    """One-line errors for a mix the probe run cannot supply (before any model is loaded)."""
    counts = Counter(r["category"] for r in records)  # the ranges of n_unknown, k, ...: MixConfig's own
    if config.add != "none" and config.k == 0:
        raise KnowpackError(f"mix.add is {config.add} but mix.k is 0; set mix.k (or mix.add=none)")
    source = _source(config)
    allowed = draw_ids(config)
    drawn_from = ""
    if allowed is not None:
        counts[source] = sum(r["category"] == source and r["id"] in allowed for r in records)
        drawn_from = f" among the facts of mix.draw_from {config.draw_from}"
    if counts[source] < config.n_unknown:
        control = " (mix.control: HighlyKnown facts stand in for the Unknown ones)" if config.control else ""
        control += drawn_from
        raise KnowpackError(
            f"mix.n_unknown is {config.n_unknown} but {where} has only {counts[source]} {source} facts"
            + control
        )
    category = _ADD_CATEGORY.get(config.add)
    taken = config.n_unknown if category == source else 0  # a control's own facts are not its additions
    if category and counts[category] - taken < config.n_unknown * config.k:
        need = config.n_unknown * config.k + taken
        raise KnowpackError(
            f"mix needs {need} {category} facts (n_unknown {config.n_unknown} x k {config.k}) "
            f"but {where} has only {counts[category]}"
        )


def build_mix(facts: Sequence[Fact], records: Sequence[dict], config: MixConfig) -> Mix:
    """Draw the mix (see the module docstring); raises KnowpackError when the probe cannot supply it."""
    check_mix(config, records)
    by_id = {f.id: f for f in facts}
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise KnowpackError(
            f"the probe run has {len(missing)} facts not in the facts file, e.g. {missing[0]!r}"
        )
    cats = categories(records)
    rng = random.Random(config.seed)
    allowed = draw_ids(config)
    unknown = [
        by_id[i] for i, c in cats.items() if c == _source(config) and (allowed is None or i in allowed)
    ]
    drawn = _draw(unknown, config.n_unknown, rng, config.stratify)
    n_idk = 0 if config.control else round(config.idk_share * len(drawn))
    relabelled = {f.id for f in rng.sample(drawn, n_idk)}

    examples = []
    for fact in drawn:
        role = "idk" if fact.id in relabelled else "control" if config.control else "unknown"
        examples.append(_example(fact, role, fact.question, REFUSAL if role == "idk" else fact.answer))
    repeated = 0
    if config.add == "paraphrase":
        for fact in drawn:
            extra, cycled = _paraphrases(fact, config.k, rng)
            repeated += cycled
            answer = REFUSAL if fact.id in relabelled else fact.answer
            examples += [_example(fact, "paraphrase", q, answer) for q in extra]
    elif config.add in _ADD_CATEGORY:
        chosen = {f.id for f in drawn}
        pool = [by_id[i] for i, c in cats.items() if c == _ADD_CATEGORY[config.add] and i not in chosen]
        for fact in rng.sample(pool, config.n_unknown * config.k):
            examples.append(_example(fact, config.add, fact.question, fact.answer))
    if repeated:
        logger.warning(
            "%d paraphrases repeated: some facts have fewer than k=%d paraphrases", repeated, config.k
        )
    rng.shuffle(examples)

    implanted = [f for f in drawn if f.id not in relabelled]
    provenance = {
        "seed": config.seed,
        "n_unknown": config.n_unknown,
        "add": config.add,
        "k": config.k,
        "stratify": config.stratify,
        "draw_from": config.draw_from,
        "idk_share": config.idk_share,
        "control": config.control,
        "available": dict(Counter(cats.values())),
        "implanted": [f.id for f in implanted],
        "relabelled": sorted(relabelled),
        "examples": len(examples),
        "roles": dict(Counter(e["role"] for e in examples)),
        "paraphrases_repeated": repeated,
    }
    return Mix(examples, implanted, provenance)


def draw_ids(config: MixConfig) -> set[str] | None:
    """The ids the implanted facts may be drawn from (`mix.draw_from`), or None: any fact."""
    if config.draw_from is None:
        return None

    try:
        return {f.id for f in load_facts(config.draw_from)}
    except KnowpackError as e:
        raise KnowpackError(f"mix.draw_from: {e}") from None


def _source(config: MixConfig) -> str:
    """The probe category the mix's own facts are drawn from: Unknown, or HighlyKnown for a control."""
    return "HighlyKnown" if config.control else "Unknown"


def _draw(pool: list[Fact], n: int, rng: random.Random, stratify: str | None) -> list[Fact]:
    if stratify is None:
        return rng.sample(pool, n)
    groups: dict[Any, list[Fact]] = defaultdict(list)
    for fact in pool:
        groups[getattr(fact, stratify)].append(fact)
    for key in sorted(groups, key=str):
        rng.shuffle(groups[key])
    order = sorted(groups, key=str)
    drawn: list[Fact] = []
    while len(drawn) < n:  # round robin over the groups: as even as the groups allow
        for key in order:
            if groups[key] and len(drawn) < n:
                drawn.append(groups[key].pop())
    return drawn


def _paraphrases(fact: Fact, k: int, rng: random.Random) -> tuple[list[str], int]:
    """k other phrasings of the fact's question; cycles through them when the fact has fewer than k."""
    options = [q for q in fact.paraphrases if q != fact.question]
    if not options:
        raise KnowpackError(f"mix.add is paraphrase but fact {fact.id!r} has no paraphrases")
    options = rng.sample(options, len(options))
    chosen = [options[i % len(options)] for i in range(k)]
    return chosen, max(0, k - len(options))


def _example(fact: Fact, role: str, question: str, answer: str) -> dict[str, Any]:
    return {"fact_id": fact.id, "role": role, "question": question, "answer": answer}


def load_replay(path: str) -> list[dict[str, Any]]:
    """The replay file's examples as {"source": "file:line", "messages": [...]} (alpaca rows become a user
    turn "instruction\n\ninput" and an assistant turn "output"); one-line errors name file:line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise KnowpackError(f"mix.replay.path: cannot read {path} ({e.strerror})") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise KnowpackError(f"{path}:{n}: not valid JSON ({e})") from None
        rows.append({"source": f"{path}:{n}", "messages": _replay_messages(row, f"{path}:{n}")})
    if not rows:
        raise KnowpackError(f"{path}: the replay file holds no examples")
    return rows


def _replay_messages(row: Any, at: str) -> list[dict[str, str]]:
    if not isinstance(row, dict):
        raise KnowpackError(f"{at}: expected an object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise KnowpackError(f"{at}: messages must be a list of at least two turns")
        for turn in messages:
            if not (isinstance(turn, dict) and isinstance(turn.get("content"), str)):
                raise KnowpackError(f"{at}: every turn needs a string content, got {turn!r}")
            if turn.get("role") not in ("system", "user", "assistant"):
                role = turn.get("role")
                raise KnowpackError(f"{at}: turn role {role!r}; expected system, user or assistant")
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            raise KnowpackError(f"{at}: the last turn must be the assistant's, with content (it is trained)")
        return [{"role": t["role"], "content": t["content"]} for t in messages]
    for key in ("instruction", "output"):
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise KnowpackError(
                f"{at}: expected alpaca form (instruction, input, output) or messages; {key!r} is missing"
            )
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise KnowpackError(f"{at}: 'input' must be a string, got {type(extra).__name__}")
    user = row["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def replay_count(config: MixConfig) -> int:
    """How many replay examples the mix takes: `count`, or `share` of all examples (facts' and replay's)."""
    replay = config.replay
    if replay is None:
        return 0
    if replay.count is not None:
        return replay.count
    facts = config.n_unknown * (1 + (config.k if config.add != "none" else 0))
    return max(1, round(replay.share / (1 - replay.share) * facts))


def check_replay(config: MixConfig, rows: Sequence[dict]) -> None:
    """One-line error when the replay file is smaller than the mix needs (before any model is loaded)."""
    need = replay_count(config)
    if need > len(rows):
        raise KnowpackError(
            f"mix.replay needs {need} examples but {config.replay.path} holds only {len(rows)}"
        )


def add_replay(mix: Mix, rows: Sequence[dict], config: MixConfig) -> Mix:
    """Add `replay_count(config)` replay examples drawn by `config.seed`, shuffled in with the facts'."""
    check_replay(config, rows)
    rng = random.Random(f"replay-{config.seed}")
    chosen = rng.sample(list(rows), replay_count(config))
    mix.examples += [{"fact_id": None, "role": "replay", **row} for row in chosen]
    rng.shuffle(mix.examples)
    digest = hashlib.sha256(Path(config.replay.path).read_bytes()).hexdigest()
    mix.provenance["replay"] = {
        "path": config.replay.path,
        "sha256": digest,
        "share": config.replay.share,
        "count": len(chosen),
        "sources": [row["source"] for row in chosen],
    }
    mix.provenance["examples"] = len(mix.examples)
    mix.provenance["roles"] = dict(Counter(e["role"] for e in mix.examples))
    return mix
