"""`attribute()`: KVA over a prompt set, aggregated online into what selection needs; resumable, shardable.

    from knowpack import load_model
    from knowpack.methods.loki import attribute, load_prompts, merge_shards
    model, tok = models.load_model("organism")
    stats = attribute(model, tok, load_prompts("world_mc", tok), out="out/kva")      # -> KVAStats
    attribute(model, tok, prompts, out="out/kva", shard="0/4"); ...; merge_shards("out/kva")

Files in `out`:
- `kva.safetensors`: the `KVAStats` (selection counts for every quota, sums of scores and |scores| in
  float64; see stats.py) with the settings, progress and status in its header. `knowpack select` reads it.
- `records.jsonl`: one line per prompt: `index` (in the prompt set), `id`, `tokens`, `target` (ŷ) and its
  text, `p_target` (F(z)), `p_ablated` (F(0) per layer) and `attr_sum` (Σ_j Attr per layer; integrated
  gradients' completeness says attr_sum ≈ p_target - p_ablated).
- `summary.json`: status, counts, timing (seconds per prompt), settings, versions.
A shard i/n writes `kva.i-of-n.safetensors`, `records.i-of-n.jsonl`, `summary.i-of-n.json`; `merge_shards`
adds them up into the three files above (the counts are sums, so shards + merge equal one run).

Resume: every `checkpoint_seconds` the finished prompts' records are appended and flushed, then the stats are
written atomically with the number of prompts done; after a kill, a rerun with the same settings cuts the
records to that number and carries on with the next prompt. Prompts are taken in order (a shard i/n takes
every n-th from the i-th), so a resumed run counts exactly the prompts one uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from knowpack import models
from knowpack.devices import barrier, is_main_process, rank, start_processes, world_size
from knowpack.errors import KnowpackError
from knowpack.io import append_jsonl, remove_temps, write_json_atomic, write_jsonl_atomic
from knowpack.methods.loki.config import STEPS, Config
from knowpack.methods.loki.kva import down_projs, kva_batch, model_prompts_per_pass
from knowpack.methods.loki.prompt_sets import Prompt, load_prompts
from knowpack.methods.loki.stats import KVAStats, check_quota
from knowpack.models import architecture, model_name
from knowpack.probe.run import parse_shard
from knowpack.runs import versions

logger = logging.getLogger(__name__)

STATS_FILE, RECORDS_FILE, SUMMARY_FILE = "kva.safetensors", "records.jsonl", "summary.json"


def attribute(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    out: str | os.PathLike | None = None,
    steps: int = STEPS,
    quotas: Sequence[float] = (),
    source: str | None = None,
    limit: int | None = None,
    shard: str | tuple[int, int] | None = None,
    rows_per_pass: int | None = None,
    prompts_per_pass: int | None = None,
    checkpoint_seconds: float = 60.0,
    progress: Callable[[int, int], None] | None = None,
) -> KVAStats:
    """KVA of every prompt (see the module docstring), counted into a `KVAStats`; returns it.

    `quotas`: extra quotas (in %) to keep counts for, beyond every whole percent (small models keep all).
    `source`: how the prompts were given (recorded). `limit` keeps the first prompts, `shard` ("i/n") every
    n-th of those. `rows_per_pass`: at most this many (layer, step) rows of a prompt per forward (memory).
    `prompts_per_pass`: prompts attributed together (`kva_batch`); None: 1 on a CPU, as many as half the
    free memory holds on a GPU (`kva.prompts_per_pass`). A resumed run takes the same groups when it gets
    the same number (a group is saved whole); another number moves scores by float rounding only.
    `progress(done, total)` counts this shard's prompts.

    Under a launcher with several processes (`accelerate launch`, `torchrun`) and no `shard`, each process
    attributes shard rank/world into `out`, and the main process then merges them (`merge_shards`): the
    counts equal one process's. Every process returns the merged stats.
    """
    launched = shard is None and world_size() > 1
    if launched:
        if out is None:
            raise KnowpackError("attribute under a launcher needs out= (where the processes' shards meet)")
        start_processes(next(model.parameters()).device.type)
        shard = (rank(), world_size())
    stats = _attribute_shard(
        model, tokenizer, prompts, out=out, steps=steps, quotas=quotas, source=source, limit=limit,
        shard=shard, rows_per_pass=rows_per_pass, prompts_per_pass=prompts_per_pass,
        checkpoint_seconds=checkpoint_seconds, progress=progress,
    )  # fmt: skip
    if launched:
        barrier()
        if is_main_process():
            merge_shards(out)
        barrier()
        stats = load_attribution(out)[0]
    return stats


def attribute_named_model(
    model: str,
    prompts: str,
    *,
    out: str | os.PathLike,
    steps: int = STEPS,
    per_subject: int = Config.per_subject,
    limit: int | None = None,
    quotas: Sequence[float | str] = (),
    rows_per_pass: int | None = None,
    prompts_per_pass: int | None = None,
    shard: str | None = None,
    device: str | None = None,
    dtype: str = "auto",
    progress_bar: Callable[[str], Any] | None = None,
) -> KVAStats:
    """`knowpack attribute`: load `model` (Hub id, folder or `organism`) and the prompt set `prompts` (a JSONL
    file, `mmlu`, `mmlu:NAME_OR_PATH`, `world_mc`, `geo_mc`), then `attribute` into `out`. The arguments are
    checked before the model loads; `progress_bar(label)` (a context manager yielding `progress(done,
    total)`) is shown by the main process only."""
    from contextlib import nullcontext

    if any(n is not None and n < 1 for n in (steps, per_subject, limit, rows_per_pass, prompts_per_pass)):
        raise KnowpackError(
            "--steps, --per-subject, --limit, --rows-per-pass and --prompts-per-pass must be >= 1"
        )
    extra = [check_quota(q) for q in quotas]
    check_prompt_source(prompts)
    if shard is not None:
        parse_shard(shard)  # bad specs fail before the model loads
    lm, tokenizer = models.load_model(model, device=device, dtype=dtype)
    architecture(lm)  # an unsupported family fails before any prompt is read
    prompt_set = load_prompts(prompts, tokenizer, per_subject=per_subject)
    # under a launcher every process attributes a shard; the main one shows the progress
    shown = progress_bar is not None and is_main_process()
    with progress_bar("attribute") if shown else nullcontext(None) as progress:
        return attribute(
            lm, tokenizer, prompt_set, out=out, steps=steps, quotas=extra, source=prompts, limit=limit,
            shard=shard, rows_per_pass=rows_per_pass, prompts_per_pass=prompts_per_pass, progress=progress,
        )  # fmt: skip


def check_prompt_source(prompts: str | None) -> None:
    """A one-line error unless `prompts` names a prompt set `load_prompts` takes (a file that exists)."""
    named = ("mmlu", "world_mc", "geo_mc")
    if prompts is None:
        raise KnowpackError(
            "--prompts is required (a JSONL file, 'mmlu', 'mmlu:NAME_OR_PATH', 'world_mc' or 'geo_mc')"
        )
    if prompts not in named and not prompts.startswith("mmlu:") and not Path(prompts).is_file():
        raise KnowpackError(
            f"prompts file not found: {prompts} (or give 'mmlu', 'mmlu:NAME_OR_PATH', 'world_mc', 'geo_mc')"
        )


def _attribute_shard(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    out: str | os.PathLike | None,
    steps: int,
    quotas: Sequence[float],
    source: str | None,
    limit: int | None,
    shard: str | tuple[int, int] | None,
    rows_per_pass: int | None,
    prompts_per_pass: int | None,
    checkpoint_seconds: float,
    progress: Callable[[int, int], None] | None,
) -> KVAStats:
    chosen = list(prompts)[:limit] if limit is not None else list(prompts)
    index, count = parse_shard(shard) if shard is not None else (0, 1)
    mine = list(enumerate(chosen))[index::count]
    settings = _settings(model, chosen, steps, source, quotas)
    paths = _paths(Path(out), shard and (index, count)) if out is not None else None
    saver = _Checkpoints(paths, settings, quotas, total=len(mine))
    stats, done = saver.stats, saver.done
    if progress is not None:
        progress(done, len(mine))
    # Counting a prompt (ranking L·D scores twice) runs in a second thread beside the next prompt's forward
    # and backward (numpy's sorts release the GIL): for Llama-3.1-8B's 32 x 4096 rows it took 61 ms on our
    # CPU, as long as a GPU may take for the prompt itself. One worker keeps the order of the sums fixed.
    # Groups of prompts_per_pass, saved whole: a resumed run starts at a group's first prompt, so it takes the
    # groups (and paddings) an uninterrupted run would.
    together = prompts_per_pass or model_prompts_per_pass(model, steps)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kva-count") as counter:
        for first in range(done, len(mine), together):
            group = mine[first : first + together]
            for record, scores in _attribute_group(model, tokenizer, group, steps, rows_per_pass):
                if scores is not None:
                    saver.counting.append(counter.submit(stats.add, scores))
                saver.pending.append(record)
                done += 1
                if progress is not None:
                    progress(done, len(mine))
            if saver.due(checkpoint_seconds) and done < len(mine):
                saver.save(done, "running")
        saver.save(done, "finished")
    return stats


def _settings(model: Any, chosen: list[Prompt], steps: int, source: str | None, quotas: Sequence[float]):
    """What an attribution was made with (a resumed one must match)."""
    downs = down_projs(model)
    return {
        "model": model_name(model),
        "shape": {"num_layers": len(downs), "rows": int(downs[0].weight.shape[0])},
        "steps": steps,
        "prompts": source,
        "n_prompts": len(chosen),
        "prompts_sha256": _digest(chosen),
        "quotas": sorted(float(q) for q in quotas),
    }


class _Checkpoints:
    """One shard's stats, resumed from `paths` when there, and their periodic saving: the records of the
    prompts done since the last save (`pending`) and their counting jobs (`counting`)."""

    def __init__(self, paths: dict[str, Path] | None, settings: dict, quotas: Sequence[float], total: int):
        self.paths, self.settings, self.total = paths, settings, total
        if paths:  # what a kill inside this shard's writes left
            remove_temps(paths["stats"].parent, of=[p.name for p in paths.values()])
        stats, self.done, self.seconds = _resume(paths, settings) if paths else (None, 0, 0.0)
        shape = settings["shape"]
        self.stats = stats if stats is not None else KVAStats(shape["num_layers"], shape["rows"], quotas)
        if self.done:
            logger.info("resuming: %d of %d prompts already attributed", self.done, total)
        self.pending: list[dict] = []
        self.counting: list[Future] = []
        self.started = self.last = time.time()

    def due(self, every_seconds: float) -> bool:
        return time.time() - self.last >= every_seconds

    def save(self, done: int, status: str) -> None:
        for job in self.counting:
            job.result()  # every prompt done is counted (and an error in counting is raised here)
        self.counting.clear()
        if self.paths is not None:
            append_jsonl(self.paths["records"], self.pending)
            seconds = self.seconds + time.time() - self.started
            meta = _meta(self.settings, done, self.total, status, seconds)
            self.stats.save(self.paths["stats"], meta)
            write_json_atomic(self.paths["summary"], _summary(self.stats, meta, self.paths["records"]))
        self.pending.clear()
        self.last = time.time()


def load_attribution(path: str | os.PathLike) -> tuple[KVAStats, dict[str, Any]]:
    """The stats and header of a finished attribution folder (or its `kva.safetensors`)."""
    path = Path(path)
    file = path / STATS_FILE if path.is_dir() else path
    if not file.exists():
        if path.is_dir() and list(path.glob("kva.*-of-*.safetensors")):
            raise KnowpackError(
                f"{path} holds attribution shards; join them: knowpack attribute --merge --out {path}"
            )
        raise KnowpackError(
            f"no attribution in {path} (expected {STATS_FILE}, written by knowpack attribute)"
        )
    stats, meta = KVAStats.load(file)
    if meta.get("status") != "finished":
        raise KnowpackError(
            f"the attribution in {path} is not finished ({meta.get('done')} of {meta.get('total')} prompts); "
            "rerun the same knowpack attribute command to resume it"
        )
    return stats, meta


def merge_shards(out: str | os.PathLike) -> dict[str, Any]:
    """Add the finished shards of `out` into `kva.safetensors`, `records.jsonl`, `summary.json`."""
    out = Path(out)
    files = sorted(out.glob("kva.*-of-*.safetensors"))
    if not files:
        raise KnowpackError(f"no attribution shards (kva.i-of-n.safetensors) in {out}")
    counts = {p.name.split(".")[1].split("-of-")[1] for p in files}
    if len(counts) != 1:
        raise KnowpackError(f"{out} mixes shard counts {sorted(counts)}")
    n = int(counts.pop())
    total, records, seconds, settings = None, [], 0.0, None
    for i in range(n):
        file = out / f"kva.{i}-of-{n}.safetensors"
        if not file.exists():
            raise KnowpackError(f"shard {i}/{n} has not run (no {file.name})")
        stats, meta = KVAStats.load(file)
        if meta["status"] != "finished":
            raise KnowpackError(f"shard {i}/{n} is not finished ({meta['done']} of {meta['total']} prompts)")
        if settings is not None and meta["settings"] != settings:
            raise KnowpackError(f"shard {i}/{n} ran with other settings than shard 0/{n}")
        settings = meta["settings"]
        seconds = max(seconds, meta["seconds"])
        total = stats if total is None else _merged(total, stats)
        records += _read_records(out / f"records.{i}-of-{n}.jsonl", meta["done"])
    records.sort(key=lambda r: r["index"])
    meta = _meta(settings, len(records), len(records), "finished", seconds)
    meta["shards"] = n
    total.save(out / STATS_FILE, meta)
    write_jsonl_atomic(out / RECORDS_FILE, records)
    summary = _summary(total, meta, out / RECORDS_FILE)
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary


# ------------------------------------------------------------------------------------------------ internals


def _attribute_group(model, tokenizer, group: list[tuple[int, Prompt]], steps, rows_per_pass):
    """The record and scores of each (position, prompt) of `group`, attributed together (`kva_batch`)."""
    ids = [prompt.encode(tokenizer) for _, prompt in group]
    for tokens, (_, prompt) in zip(ids, group, strict=True):
        if not tokens:
            raise KnowpackError(f"prompt {prompt.id!r} has no tokens")
    results = kva_batch(model, ids, steps=steps, rows_per_pass=rows_per_pass)
    return [
        _record(tokenizer, prompt, position, len(tokens), result)
        for (position, prompt), tokens, result in zip(group, ids, results, strict=True)
    ]


def _record(tokenizer, prompt: Prompt, position: int, tokens: int, result):
    """The record of one prompt, and its scores (None when they are not finite: not counted)."""
    record = {
        "index": position,
        "id": prompt.id,
        "tokens": tokens,
        "target": result.target,
        "target_text": tokenizer.decode([result.target]),
        "p_target": _round(result.p_target),
        "p_ablated": [_round(p) for p in result.p_ablated],
        "attr_sum": [_round(s) for s in result.scores.sum(axis=1)],
    }
    if np.isfinite(result.scores).all():
        return record, result.scores
    # a real model in half precision can overflow: count nothing rather than garbage
    logger.warning("prompt %r: non-finite KVA scores; not counted", prompt.id)
    record["skipped"] = "non-finite scores"
    return record, None


def _resume(paths: dict[str, Path], settings: dict) -> tuple[KVAStats | None, int, float]:
    """The saved stats, prompts done and seconds spent in this folder (None, 0, 0 when there are none)."""
    if not paths["stats"].exists():
        paths["records"].unlink(
            missing_ok=True
        )  # records without stats: from a run killed before its first save
        return None, 0, 0.0
    stats, meta = KVAStats.load(paths["stats"])
    old = meta.get("settings", {})
    if old != settings:
        diff = ", ".join(f"{k} {old.get(k)!r} vs {v!r}" for k, v in settings.items() if old.get(k) != v)
        raise KnowpackError(
            f"{paths['stats'].parent} holds an attribution with other settings ({diff}); use another --out"
        )
    records = _read_records(paths["records"], meta["done"])
    write_jsonl_atomic(paths["records"], records)
    return stats, meta["done"], meta["seconds"]


def _read_records(path: Path, done: int) -> list[dict]:
    """The first `done` records of a records file (lines after them come from a run killed between saves)."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    if len(lines) < done:
        raise KnowpackError(
            f"{path} has {len(lines)} records but its stats count {done} prompts; use another --out"
        )
    try:
        return [json.loads(line) for line in lines[:done]]
    except ValueError:
        raise KnowpackError(f"{path}: a damaged record; use another --out") from None


def _merged(a: KVAStats, b: KVAStats) -> KVAStats:
    a.merge(b)
    return a


def _meta(settings: dict, done: int, total: int, status: str, seconds: float) -> dict[str, Any]:
    return {
        "settings": settings,
        "done": done,
        "total": total,
        "status": status,
        "seconds": round(seconds, 3),
    }


def _summary(stats: KVAStats, meta: dict, records_path: Path) -> dict[str, Any]:
    records = _read_records(records_path, meta["done"]) if records_path.exists() else []
    seconds, done = meta["seconds"], meta["done"]
    return {
        "status": meta["status"],
        "prompts": done,
        "counted": stats.n,
        "prompt_ids": [r["id"] for r in records],  # a benchmark's own item ids where prompts are its items
        "skipped": [r["id"] for r in records if r.get("skipped")],
        "shape": meta["settings"]["shape"],
        "mean_p_target": _round(float(np.mean([r["p_target"] for r in records]))) if records else None,
        "mean_tokens": _round(float(np.mean([r["tokens"] for r in records]))) if records else None,
        "timing": {"seconds": seconds, "seconds_per_prompt": _round(seconds / done) if done else None},
        **({"shards": meta["shards"]} if "shards" in meta else {}),
        "settings": meta["settings"],
        "versions": versions(),
    }


def _paths(out: Path, shard: tuple[int, int] | None) -> dict[str, Path]:
    tag = f".{shard[0]}-of-{shard[1]}" if shard else ""
    names = {"stats": STATS_FILE, "records": RECORDS_FILE, "summary": SUMMARY_FILE}
    out.mkdir(parents=True, exist_ok=True)
    return {key: out / name.replace(".", f"{tag}.", 1) for key, name in names.items()}


def _digest(prompts: Sequence[Prompt]) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(json.dumps([p.id, p.text, p.chat]).encode("utf-8") + b"\n")
    return h.hexdigest()


def _round(x: float) -> float:
    return float(f"{x:.6g}")
