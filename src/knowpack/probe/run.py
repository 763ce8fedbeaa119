"""`probe()`: the SliCK category of every fact, written as it goes, resumable, shardable.

    from knowpack import load_model, load_facts, probe
    model, tok = load_model("organism")
    records = probe(model, tok, load_facts("organism"), out="out/probe")         # 10 prompts x (1 + 16)
    records = probe(model, tok, facts, samples=0, out="out/probe3")               # the paper's 3 categories
    probe(model, tok, facts, out="out/p", shard="0/4"); ...; merge_shards("out/p")  # split over processes

Files in `out`: `records.jsonl` (one probe record per fact, DESIGN.md) and `summary.json` (counts per
category, per relation and bucket, timings, settings, status). A shard i/n writes `records.i-of-n.jsonl` and
`summary.i-of-n.json` instead, and `merge_shards` joins them into `records.jsonl` / `summary.json`.

Resume: records are appended and flushed batch by batch, so after a kill the file holds every finished fact
and at most one torn last line, which is cut off. Rerunning with the same settings skips the ids present;
other settings in the same folder are refused. Exemplars always come from the whole fact list (or the given
pool), never only from the shard or the `limit`, and samples depend only on (seed, fact, prompt), so a sharded
or resumed probe gives the same records as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.normalize import DEFAULT_REFUSAL_PATTERNS
from knowpack.facts.schema import Fact
from knowpack.io import write_text_atomic
from knowpack.probe.engine import Engine, Request, split_prefix
from knowpack.probe.prompts import build_prompts, encode
from knowpack.probe.scoring import CATEGORIES, score

logger = logging.getLogger(__name__)


def probe(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    *,
    n_prompts: int = 10,
    shots: int = 4,
    samples: int = 16,
    temperature: float = 0.5,
    top_k: int = 40,
    max_new_tokens: int = 32,
    fmt: str = "plain",
    mode: str = "substring",
    exemplars: Sequence[Fact] | None = None,
    seed: int = 0,
    batch_size: int = 256,
    out: str | os.PathLike | None = None,
    shard: str | tuple[int, int] | None = None,
    limit: int | None = None,
    reuse_prefix: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Probe every fact (see the module docstring); returns the records of this run's facts, in order.

    `batch_size` is rows decoded at once (a prompt takes 1 + samples rows); `limit` keeps the first facts,
    `shard` ("i/n") every n-th of those from the i-th; `progress(done, total)` counts prompts.
    """
    if mode not in ("substring", "exact"):
        raise KnowpackError(f"unknown correctness mode {mode!r}; expected substring or exact")
    if samples < 0 or max_new_tokens < 1 or batch_size < 1:
        raise KnowpackError("need samples >= 0, max_new_tokens >= 1 and batch_size >= 1")
    if samples > 0 and not temperature > 0:
        raise KnowpackError(f"sampling needs a temperature > 0 (got {temperature})")
    all_facts = list(facts)
    pool = all_facts if exemplars is None else list(exemplars)
    chosen = all_facts[:limit] if limit is not None else all_facts
    index, count = parse_shard(shard) if shard is not None else (0, 1)
    chosen = chosen[index::count]
    settings = {
        "model": _model_name(model),
        "n_prompts": n_prompts,
        "shots": shots,
        "samples": samples,
        "temperature": temperature if samples else None,
        "top_k": top_k if samples else None,
        "max_new_tokens": max_new_tokens,
        "format": fmt,
        "mode": mode,
        "seed": seed,
        "exemplar_pool": "facts" if exemplars is None else f"{len(pool)} given",
    }

    records_path = summary_path = None
    done: dict[str, dict] = {}
    if out is not None:
        records_path, summary_path = _paths(Path(out), shard and (index, count))
        records_path.parent.mkdir(parents=True, exist_ok=True)
        _check_settings(summary_path, settings)
        done = {r["id"]: r for r in read_records(records_path, repair=True)}
    todo = [f for f in chosen if f.id not in done]
    if done:
        logger.info("resuming: %d of %d facts already probed", len(chosen) - len(todo), len(chosen))

    engine = Engine(
        model,
        tokenizer,
        samples=samples,
        temperature=temperature,
        top_k=top_k,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
        reuse_prefix=reuse_prefix,
    )
    started, stats = time.time(), Counter()
    if summary_path is not None:
        _write_json(summary_path, _summary(list(done.values()), settings, "running", stats, 0.0))
    per_chunk = max(64, 8 * max(1, batch_size // (1 + samples)))
    total, progressed = len(todo) * n_prompts, 0

    def on_batch(n: int) -> None:
        nonlocal progressed
        progressed += n
        if progress is not None:
            progress(progressed, total)

    new: dict[str, dict] = {}
    for start in range(0, len(todo), per_chunk):
        chunk = todo[start : start + per_chunk]
        prompts = build_prompts(
            chunk, tokenizer, n_prompts=n_prompts, shots=shots, seed=seed, fmt=fmt, exemplars=pool
        )
        requests = _requests(chunk, prompts, tokenizer, fmt, stats)
        generations = engine.generate(requests, on_batch=on_batch)
        rows = []
        for fact, fact_prompts in zip(chunk, prompts, strict=True):
            gens = [generations[(fact.id, j)] for j in range(n_prompts)]
            rows.append(_record(fact, fact_prompts, gens, mode))
        if records_path is not None:
            _append(records_path, rows)
        new.update((r["id"], r) for r in rows)
        stats["facts"] += len(rows)

    seconds = time.time() - started
    if summary_path is not None:
        everything = read_records(records_path)
        _write_json(summary_path, _summary(everything, settings, "finished", stats, seconds))
    return [done.get(f.id) or new[f.id] for f in chosen]


def parse_shard(spec: str | tuple[int, int]) -> tuple[int, int]:
    """'i/n' (0-based i < n) -> (i, n); anything else is a one-line error."""
    try:
        index, count = (int(x) for x in spec.split("/")) if isinstance(spec, str) else spec
    except (ValueError, TypeError):
        raise KnowpackError(f"bad shard {spec!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= index < count:
        raise KnowpackError(f"bad shard {spec!r}: need 0 <= i < n (shards are 0-based)")
    return index, count


def read_records(path: str | os.PathLike, *, repair: bool = False) -> list[dict]:
    """The records of a records file (none when it does not exist). A torn last line (a killed writer) is
    skipped, and with `repair` cut off the file; a bad line anywhere else is an error."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # every line a writer finished; the rest is torn
    records, seen = [], set()
    for number, line in enumerate(complete.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "id" not in record:
                raise ValueError
        except ValueError:
            raise KnowpackError(f"{path}:{number}: not a probe record") from None
        if record["id"] not in seen:
            seen.add(record["id"])
            records.append(record)
    if repair and len(complete) < len(data):
        with open(path, "r+b") as f:
            f.truncate(len(complete))
        logger.warning("%s: cut off a torn last line (a killed run); that fact is probed again", path)
    return records


def merge_shards(out: str | os.PathLike) -> dict[str, Any]:
    """Join the shard files of `out` into `records.jsonl` and `summary.json`; every shard must be finished."""
    out = Path(out)
    summaries = sorted(out.glob("summary.*-of-*.json"))
    if not summaries:
        raise KnowpackError(f"no shard summaries (summary.i-of-n.json) in {out}")
    counts = {int(p.name.split(".")[1].split("-of-")[1]) for p in summaries}
    if len(counts) != 1:
        raise KnowpackError(f"{out} mixes shard counts {sorted(counts)}")
    n = counts.pop()
    records, settings, seconds, stats = [], None, 0.0, Counter()
    for i in range(n):
        summary_path = out / f"summary.{i}-of-{n}.json"
        if not summary_path.exists():
            raise KnowpackError(f"shard {i}/{n} has not run (no {summary_path.name})")
        summary = json.loads(summary_path.read_text())
        if summary.get("status") != "finished":
            raise KnowpackError(f"shard {i}/{n} is not finished (status {summary.get('status')})")
        if settings is not None and summary["settings"] != settings:
            raise KnowpackError(f"shard {i}/{n} was probed with other settings than shard 0/{n}")
        settings = summary["settings"]
        seconds = max(seconds, summary["timing"]["seconds"])
        stats.update(summary.get("prompts", {}))
        records += read_records(out / f"records.{i}-of-{n}.jsonl")
    _write_jsonl(out / "records.jsonl", records)
    summary = _summary(records, settings, "finished", stats, seconds)
    summary["shards"] = n
    _write_json(out / "summary.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------ internals


def _requests(facts, prompts, tokenizer, fmt, stats) -> list[Request]:
    """Tokenize each prompt and its prefix; the prefix is reused only where its tokens start the prompt's."""
    prefix_ids: dict[str, list[int]] = {}
    requests = []
    for fact, fact_prompts in zip(facts, prompts, strict=True):
        for j, p in enumerate(fact_prompts):
            ids = encode(tokenizer, p.text, fmt)
            if p.prefix and p.prefix not in prefix_ids:
                prefix_ids[p.prefix] = encode(tokenizer, p.prefix, fmt)
            n = split_prefix(ids, prefix_ids[p.prefix]) if p.prefix else 0
            stats["prompts"] += 1
            stats["prefix_reused"] += n > 0
            requests.append(Request((fact.id, j), ids, n))
    return requests


def _record(fact: Fact, prompts, gens, mode: str) -> dict[str, Any]:
    scored = score(
        [g.greedy for g in gens],
        [g.samples for g in gens],
        fact.answers,
        mode=mode,
        refusal_patterns=DEFAULT_REFUSAL_PATTERNS,
    )
    return {
        "id": fact.id,
        **scored,
        "greedy_logprob": [round(g.greedy_logprob, 5) for g in gens],
        "relation": fact.relation,
        "bucket": fact.bucket,
        "exemplars": [list(p.exemplars) for p in prompts],
    }


def _summary(records: list[dict], settings: dict, status: str, stats: Counter, seconds: float) -> dict:
    by_category = Counter(r["category"] for r in records)
    per: dict[str, dict[str, dict[str, int]]] = {}
    for field in ("relation", "bucket"):
        table: dict[str, Counter] = defaultdict(Counter)
        for r in records:
            if r.get(field) is not None:
                table[r[field]][r["category"]] += 1
        if table:
            per[field] = {k: {c: v[c] for c in CATEGORIES} for k, v in sorted(table.items())}
    n_new = stats.get("facts", 0)
    n_gen = n_new * settings["n_prompts"] * (1 + settings["samples"])
    prompts = stats.get("prompts", 0)
    return {
        "status": status,
        "facts": len(records),
        "categories": {c: by_category[c] for c in CATEGORIES},
        "shares": {c: (by_category[c] / len(records) if records else 0.0) for c in CATEGORIES},
        **per,
        "refusal_rate_greedy": _mean(sum(r["greedy_refusal"]) / len(r["greedy_refusal"]) for r in records),
        "timing": {
            "seconds": round(seconds, 3),
            "facts_probed": n_new,
            "facts_per_second": round(n_new / seconds, 3) if seconds else None,
            "generations_per_second": round(n_gen / seconds, 3) if seconds else None,
        },
        "prompts": {"prompts": prompts, "prefix_reused": stats.get("prefix_reused", 0)},
        "settings": settings,
        "versions": _versions(),
    }


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _check_settings(summary_path: Path, settings: dict) -> None:
    if not summary_path.exists():
        return
    try:
        old = json.loads(summary_path.read_text()).get("settings")
    except (ValueError, OSError):
        return
    if old is not None and old != settings:
        diff = ", ".join(f"{k} {old.get(k)!r} vs {v!r}" for k, v in settings.items() if old.get(k) != v)
        raise KnowpackError(
            f"{summary_path.parent} holds a probe with other settings ({diff}); use another --out"
        )


def _paths(out: Path, shard: tuple[int, int] | None) -> tuple[Path, Path]:
    if not shard:
        return out / "records.jsonl", out / "summary.json"
    i, n = shard
    return out / f"records.{i}-of-{n}.jsonl", out / f"summary.{i}-of-{n}.json"


def _append(path: Path, records: list[dict]) -> None:
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _write_jsonl(path: Path, records: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _model_name(model: Any) -> str | None:
    return getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None) or None


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from knowpack import __version__

    return {"knowpack": __version__, "torch": torch.__version__, "transformers": transformers.__version__}
