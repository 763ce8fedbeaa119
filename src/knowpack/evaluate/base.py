"""What is measured once per base model and reused by every run evaluated against the same base probe.

Both live in the base probe's folder (a run's `probe/`, or the shared `probe.run` / `probe.out` of a sweep):

    <probe>/null-<recipe>/        the measurement null of a recipe (method, settings, LoKI's rows):
                                  `weights/`, the method at its initial values as its `save` writes them,
                                  and `sample-seed-<S>/`, that untrained run re-probed with the base
                                  probe's prompts and sampling seed S (the base seed + 1; evaluate/null.py)
    <probe>/repeat-seed-<S>/      prompt sensitivity: further probes of the untouched base, same settings,
                                  seeds S = base seed + 1, + 2, ... (`eval.prompt_redraws` of them), hence
                                  other exemplars
    <probe>/noise_floor.json      its transition matrix against the base probe (as `--repeat-seed` writes it)
    <probe>/base_benchmarks.json  the base model's lm-eval results, one entry per (task, settings)
    <probe>/base_uptake.json      the base model's zero-shot and held-out-paraphrase answers, per fact and
                                  settings (a sweep's runs implant overlapping facts: each is measured once)

A repeat probe written by `knowpack probe --repeat-seed S` with another seed is reused as it is. A lock file
(`<probe>/.eval.lock`) keeps two evaluations from writing the same folder at once; a killed repeat probe
resumes where it stopped (the probe is resumable).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from knowpack.io import write_json_atomic
from knowpack.models import model_source
from knowpack.probe.config import ProbeConfig
from knowpack.probe.noise import NOISE_FLOOR_FILE, NULL_SAMPLE_OFFSET, null_folder, repeat_folder
from knowpack.probe.pool import pool_identity
from knowpack.probe.run import probe, read_records
from knowpack.probe.scoring import transition_matrix

logger = logging.getLogger(__name__)

LOCK = ".eval.lock"
BENCHMARKS = "base_benchmarks.json"
UPTAKE = "base_uptake.json"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (advisory, POSIX `flock`; a no-op where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: no concurrent evaluations there
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def find_repeat(folder: Path, settings: dict | None, ids: set[str], seed: int) -> Path | None:
    """A finished repeat probe in `folder` with the base probe's `settings` but another seed, covering `ids`:
    `repeat-seed-<seed>` first, then any other; None when there is none."""
    found = find_repeats(folder, settings, ids, [seed], 1)
    return found[0] if found else None


def find_repeats(
    folder: Path, settings: dict | None, ids: set[str], seeds: Sequence[int], count: int
) -> list[Path]:
    """Up to `count` distinct finished repeat probes in `folder` with the base probe's `settings` but another
    seed, covering `ids`: `repeat-seed-<seed>` for each of `seeds` first, then any other, in name order."""
    wanted = [repeat_folder(folder, s) for s in seeds]
    candidates = wanted + sorted(p for p in folder.glob("repeat-seed-*") if p not in wanted)
    found: list[Path] = []
    for path in candidates:
        if len(found) == count:
            break
        try:
            summary = json.loads((path / "summary.json").read_text())
        except (OSError, ValueError):
            continue
        other = summary.get("settings") or {}
        if summary.get("status") != "finished" or other.get("seed") == (settings or {}).get("seed"):
            continue
        if settings is not None and _without_seed(other) != _without_seed(settings):
            continue
        if ids <= {r["id"] for r in read_records(path / "records.jsonl")}:
            found.append(path)
    return found


def noise_floor_records(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Any],
    base_records: Sequence[dict],
    *,
    folder: Path,
    settings: dict | None,
    probe_kwargs: dict[str, Any],
    seed: int,
    redraws: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[list[dict]], list[Path], int]:
    """Records of `redraws` further probes of the untouched base (`model`) over `facts`, with `probe_kwargs`
    but other seeds (hence other exemplars): those in `folder` first (see `find_repeats`: seed `seed`,
    `seed + 1`, ... preferred), the rest probed into `folder/repeat-seed-<s>` at the next free seeds from
    `seed` on. Returns (one list of records per redraw, in the order of `facts`; their folders; how many were
    reused). `noise_floor.json` holds the first redraw's transition matrix against the base probe."""
    ids = {f.id for f in facts}
    if settings is not None and probe_kwargs.get("exemplars") is not None:
        # the exemplars as recorded now (a base probe from before may describe them in words): a repeat
        # probe is reused only when it drew from exactly these exemplars
        settings = {**settings, "exemplar_pool": pool_identity(probe_kwargs["exemplars"])}
    base_seed = (settings or {}).get("seed")
    with locked(folder):
        found = find_repeats(folder, settings, ids, range(seed, seed + redraws), redraws)
        reused = len(found)
        free = (s for s in range(seed, seed + 10 * redraws + 1) if s != base_seed)
        while len(found) < redraws:
            draw = next(s for s in free if repeat_folder(folder, s) not in found)
            path = repeat_folder(folder, draw)
            probe(model, tokenizer, facts, **{**probe_kwargs, "seed": draw}, out=path, progress=progress)
            found.append(path)
        draws = []
        for path in found:
            by_id = {r["id"]: r for r in read_records(path / "records.jsonl")}
            draws.append([by_id[f.id] for f in facts])
        if not (folder / NOISE_FLOOR_FILE).exists():
            write_json_atomic(folder / NOISE_FLOOR_FILE, transition_matrix(base_records, draws[0]))
    logger.info("prompt sensitivity: %s (%d reused)", ", ".join(map(str, found)), reused)
    return draws, found, reused


def measurement_null_records(
    untrained: Callable[[Path], Any],
    tokenizer: Any,
    facts: Sequence[Any],
    *,
    folder: Path,
    recipe: dict[str, Any],
    probe_kwargs: dict[str, Any],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict], dict[str, Any]]:
    """The measurement null of a run of `recipe` against the base probe in `folder`: a run that learned
    nothing, `untrained(into)` (the method at its initial values, saved into `into` and loaded back through
    the method's own path: `knowpack.evaluate.null.untrained_model`), re-probed over `facts` with the base
    probe's `probe_kwargs` (its seed, hence its prompts) and only the sampling seed changed, into
    `folder/null-<recipe hash>/sample-seed-<S>` (reused when finished there: every run of the recipe shares
    it). The untrained model is built only when the re-probe is not there yet. Returns (records in the order
    of `facts`, eval.json's `measurement_null` block)."""
    seed = probe_kwargs.get("seed", ProbeConfig.seed)
    sample_seed = seed + NULL_SAMPLE_OFFSET
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = null_folder(folder, key, sample_seed)
    ids = {f.id for f in facts}
    with locked(folder):
        reused = _finished(path) and ids <= {r["id"] for r in read_records(path / "records.jsonl")}
        if not reused:
            model = untrained(path.parent)
            settings = {**probe_kwargs, "sample_seed": sample_seed}
            probe(model, tokenizer, facts, **settings, out=path, progress=progress)
            del model
        found = {r["id"]: r for r in read_records(path / "records.jsonl")}
    logger.info("measurement null: %s (%s)", path, "reused" if reused else "probed")
    block: dict[str, Any] = {"seed": seed, "sample_seed": sample_seed, "folder": str(path), "reused": reused}
    block["recipe"] = recipe
    block["computed"] = (
        f"an untrained {recipe['method']} run (its initial values, saved and loaded through the method's own "
        "path) re-probed with the base probe's prompts and another sampling seed"
    )
    return [found[f.id] for f in facts], block


def _finished(path: Path) -> bool:
    try:
        return json.loads((path / "summary.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


def cached_benchmarks(
    folder: Path,
    tasks: list[str],
    key: dict[str, Any],
    compute: Callable[[str], dict],
) -> tuple[dict, list[str]]:
    """The base model's results for `tasks`, one `compute(task)` (a `run_benchmarks` summary) per task not
    cached in `folder/base_benchmarks.json` under `key` (the settings that change a score). Returns the
    results merged as one `run_benchmarks` summary, and the tasks that were reused."""
    path = folder / BENCHMARKS
    with locked(folder):
        cache = _read_cache(path)
        summaries, reused = [], []
        for task in tasks:
            entry_key = json.dumps({**key, "task": task}, sort_keys=True)
            if entry_key in cache["entries"]:
                reused.append(task)
            else:
                cache["entries"][entry_key] = compute(task)
                write_json_atomic(path, cache)
            summaries.append(cache["entries"][entry_key])
    return merge_summaries(summaries), reused


def cached_uptake(
    folder: Path,
    key: dict[str, Any],
    facts: Sequence[Any],
    compute: Callable[[list[Any]], dict[str, dict[str, list]]],
) -> tuple[dict[str, dict[str, list]], int]:
    """The base model's uptake measurements of `facts` (`UptakeMeasure`'s tables: name -> fact id -> list),
    with `compute(missing)` called once for the facts not cached in `folder/base_uptake.json` under `key`.

    Each fact's answers depend only on the fact, the model and the settings in `key` (the probe's exemplars
    are fixed per fact by its seed), so a fact measured for one run is the same for every other run of the
    base probe. Returns the tables for `facts` and how many facts were reused."""
    path = folder / UPTAKE
    with locked(folder):
        cache = _read_cache(path)
        entry = cache["entries"].setdefault(json.dumps(key, sort_keys=True), {})
        missing = [f for f in facts if f.id not in entry]
        if missing:
            measured = compute(missing)
            for f in missing:
                entry[f.id] = {name: table.get(f.id, []) for name, table in measured.items()}
            write_json_atomic(path, cache)
    names = {name for f in facts for name in entry[f.id]}
    tables = {name: {f.id: entry[f.id].get(name, []) for f in facts} for name in sorted(names)}
    return tables, len(facts) - len(missing)


def merge_summaries(summaries: list[dict]) -> dict:
    """Several `run_benchmarks` summaries (one task each) as one."""
    merged: dict[str, Any] = {"tasks": {}, "task_versions": {}, "n-shot": {}, "n-samples": {}, "doc_ids": {}}
    for s in summaries:
        for field in ("tasks", "task_versions", "n-shot", "n-samples", "doc_ids"):
            merged[field].update(s.get(field, {}))
    if summaries:
        merged["lm_eval_version"] = summaries[0]["lm_eval_version"]
        merged["settings"] = {
            **summaries[0]["settings"],
            "tasks": [t for s in summaries for t in s["settings"]["tasks"]],
        }
    return merged


def _read_cache(path: Path) -> dict:
    """A cache file's contents, or an empty cache where there is none (or a torn one: it is rewritten)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"entries": {}}


def _without_seed(settings: dict) -> dict:
    return {k: v for k, v in settings.items() if k != "seed"}


def same_model(a: str | os.PathLike | None, b: str | os.PathLike | None) -> bool:
    """Whether two model names or folders name the same model (`organism` and its folder are one, and so are
    `smollm2-135m` and its converted folder)."""

    def resolve(name: str | os.PathLike | None) -> str | None:
        if name is None:
            return None
        name = model_source(name, convert=False)
        path = Path(name).expanduser()
        return str(path.resolve()) if path.exists() else str(name)

    return resolve(a) == resolve(b)
