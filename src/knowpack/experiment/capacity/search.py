"""The capacity search: exponential then binary search over n, each point trained and evaluated per seed,
judged against the targets and the budget, written to capacity.json after every point."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics import METRICS
from knowpack.evaluate.run import evaluate_run
from knowpack.evaluate.stats import pass_rate_interval
from knowpack.experiment.capacity.config import Capacity, axis_label, point_cell
from knowpack.experiment.capacity.plot import plot_capacity
from knowpack.experiment.sweep import (
    Cell,
    cell_status,
    claim_cell,
    prepare_shared,
)
from knowpack.io import remove_temps, write_json_atomic
from knowpack.probe.run import read_records
from knowpack.runs import git_commit, versions
from knowpack.train.mix import check_mix
from knowpack.train.run import train

logger = logging.getLogger(__name__)


def search_capacity(start: int, cap: int, passes: Callable[[int], bool]) -> tuple[int | None, list[int]]:
    """(the largest n in [1, cap] that passes, the n tried in order): start, 2 start, 4 start, ... (the last
    one cut to `cap`) until one fails, then bisection between the last pass and that failure. None: even
    n = 1 fails (start > 1 fails: bisected down from there)."""
    tried: list[int] = []

    def test(n: int) -> bool:
        tried.append(n)
        return passes(n)

    good, bad, n = 0, None, min(start, cap)
    while True:
        if not test(n):
            bad = n
            break
        good = n
        if n >= cap:
            break
        n = min(2 * n, cap)
    if bad is not None:
        while bad - good > 1:
            mid = (good + bad) // 2
            good, bad = (mid, bad) if test(mid) else (good, mid)
    return (good or None), tried


RunPoint = Callable[[Cell], None]
"""Trains (unless its run is finished) and evaluates one point's run, into `cell.folder`."""


def run_capacity(
    capacity: Capacity,
    *,
    run_point: RunPoint | None = None,
    on_event: Callable[[str, str], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
    poll: float = 5.0,
) -> dict[str, Any]:
    """Run the search (see the module docstring); writes `OUT/capacity.json` and `OUT/capacity.png` and
    returns the former. `on_event(name, event)` hears start / reuse / busy per run, pass / fail per point;
    `on_stage` and `progress_bar` go to train and eval; `run_point(cell)` replaces training + evaluation."""
    s = capacity
    note = on_event or (lambda name, event: logger.info("%s: %s", name, event))
    if run_point is None:
        run_point = _train_and_evaluate(s, on_stage, progress_bar)
    remove_temps(s.out, of=["capacity.json", "capacity.png"])  # what a killed search's writes left
    supply = _supply(s, progress_bar)
    cap = supply if s.max is None else min(s.max, supply)
    points: dict[int, dict[str, Any]] = {}

    def passes(n: int) -> bool:
        runs = _measure_point(s, n, run_point, note, poll)
        points[n] = _verdict(s, n, runs)
        note(f"n={n}: {_shown(s, points[n])}", "pass" if points[n]["pass"] else "fail")
        _write(s, points, cap, supply, None, "running")
        return points[n]["pass"]

    answer, tried = search_capacity(min(s.start, cap), cap, passes)
    result = _write(s, points, cap, supply, answer, "finished", tried)
    plot_capacity(result, s.out / "capacity.png")
    return result


def _supply(s: Capacity, progress_bar: Callable[[str], Any] | None) -> int:
    """The most Unknown facts the shared base probe can give a mix (made here if it is not yet)."""
    config = point_cell(s, s.start, s.seeds[0]).config
    prepare_shared(config, progress_bar)
    records = read_records(Path(config.probe.run) / "records.jsonl")
    check_mix(replace(config.mix, n_unknown=1), records, where=f"the base probe {config.probe.run}")
    good, bad = 1, len(records) + 1  # the largest n that check_mix accepts (k additions count too)
    while bad - good > 1:
        mid = (good + bad) // 2
        try:
            check_mix(replace(config.mix, n_unknown=mid), records)
            good = mid
        except KnowpackError:
            bad = mid
    return good


def _train_and_evaluate(s: Capacity, on_stage, progress_bar) -> RunPoint:
    def run_point(cell: Cell) -> None:
        if cell_status(cell) != "finished":
            prepare_shared(cell.config, progress_bar)
            train(cell.config, force=True, on_stage=on_stage, progress_bar=progress_bar)
        evaluate_run(
            cell.folder, benchmarks=s.tasks, limit=s.limit, on_stage=on_stage, progress_bar=progress_bar
        )

    return run_point


def _measure_point(s: Capacity, n: int, run_point: RunPoint, note, poll: float) -> dict[int, dict]:
    """Seed -> that run's measurements; runs others hold are waited for; rule `all` stops at a failure."""
    runs: dict[int, dict] = {}
    pending = list(s.seeds)
    while pending:
        busy = []
        for seed in pending:
            cell = point_cell(s, n, seed)
            result = _run_once(s, cell, run_point, note)
            if result is None:
                busy.append(seed)
                continue
            runs[seed] = result
            if s.rule == "all" and not result["pass"]:  # share and mean run every seed
                return runs
        pending = busy
        if pending:
            time.sleep(poll)
    return runs


def _run_once(s: Capacity, cell: Cell, run_point: RunPoint, note) -> dict | None:
    """This run's measurements: reused when finished and evaluated, else made under a claim. None: busy."""
    ev = _evaluation(s, cell)
    if ev is not None:
        note(cell.name, "reuse")
        return _measure_run(s, cell, ev)
    cell.folder.parent.mkdir(parents=True, exist_ok=True)
    claim = claim_cell(cell)
    if claim is None:
        note(cell.name, "busy")
        return None
    try:
        ev = _evaluation(s, cell)  # made by another worker since we looked
        if ev is None:
            note(cell.name, "start")
            run_point(cell)
            ev = _evaluation(s, cell)
            if ev is None:
                raise KnowpackError(f"{cell.folder}: the point's run ended without a finished eval.json")
        else:
            note(cell.name, "reuse")
    finally:
        claim.unlink(missing_ok=True)
    return _measure_run(s, cell, ev)


def _evaluation(s: Capacity, cell: Cell) -> dict | None:
    """The run's eval.json when the run is finished and it was evaluated with this search's benchmarks."""
    if cell_status(cell) != "finished":
        return None
    try:
        ev = json.loads((cell.folder / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    scored = (ev.get("benchmarks") or {}).get("tasks") or {}
    if any(t not in scored for t in s.tasks):
        return None
    if s.tasks and s.limit != ((ev.get("settings") or {}).get("eval") or {}).get("limit"):
        return None
    return ev


def _measure_run(s: Capacity, cell: Cell, ev: dict) -> dict:
    metrics = {c.name: {**c.measure(ev), "limit": c.limit, "kind": c.kind} for c in s.checks}
    why = [w for c in s.checks if (w := c.judge(metrics[c.name]["measured"]))]
    return {
        "seed": cell.overrides["mix.seed"],
        "folder": str(cell.folder),
        "pass": not why,
        "why": why,
        "metrics": metrics,
    }


def _verdict(s: Capacity, n: int, runs: dict[int, dict]) -> dict[str, Any]:
    """A point's pass / fail by the rule, with the reasons (per seed for `all` and `share`, of the means
    for `mean`), and the share of its measured seeds that pass with its Wilson interval (`pass_rate`)."""
    rows = [runs[seed] for seed in s.seeds if seed in runs]
    mean = {}
    for c in s.checks:
        values = [r["metrics"][c.name]["measured"] for r in rows]
        mean[c.name] = None if None in values else sum(values) / len(values)
    rate = pass_rate_interval(sum(r["pass"] for r in rows), len(rows))
    seed_failures = [f"seed {r['seed']}: {w}" for r in rows for w in r["why"]]
    failed = [c.name for c in s.checks if any(c.judge(r["metrics"][c.name]["measured"]) for r in rows)]
    if s.rule == "mean":
        failed = [c.name for c in s.checks if c.judge(mean[c.name])]
        why = [w for c in s.checks if (w := c.judge(mean[c.name]))]
    elif s.rule == "share":
        enough = rate["rate"] is not None and rate["rate"] >= s.min_share - 1e-12
        why = [] if enough else [f"{rate['passed']} of {rate['total']} seeds pass (< {s.min_share:g})"]
        why += seed_failures if why else []
    else:
        why = seed_failures
    return {
        "n": n,
        "pass": not why,
        "why": why,
        "seed_failures": seed_failures,
        "failed": failed,
        "mean": mean,
        "pass_rate": rate,
        "runs": rows,
        "seeds_skipped": [seed for seed in s.seeds if seed not in runs],
    }


def confidence(points: dict[int, dict], answer: int | None, rule: str) -> dict[str, Any]:
    """How sure the answer is over seeds: the pass rate (with its Wilson interval) at the answer and at the
    smallest n tried above it that failed, and a sentence saying so. With rule `all` a failing point stops
    at its first failing seed, so its rate is over the seeds it ran (`share` runs them all)."""
    above = [n for n in sorted(points) if answer is None or n > answer]
    failing = next((n for n in above if not points[n]["pass"]), None)
    at, nxt = (points.get(answer) or {}).get("pass_rate"), (points.get(failing) or {}).get("pass_rate")

    def said(n: int, rate: dict) -> str:
        return (
            f"n = {n}: {rate['passed']} of {rate['total']} seeds pass "
            f"(95% interval of the pass rate {rate['low']:.2f}-{rate['high']:.2f})"
        )

    parts = [said(answer, at) if at else "no n passes"]
    if nxt:
        parts.append(said(failing, nxt) + (" (stopped at its first failing seed)" if rule == "all" else ""))
    return {
        "answer": answer,
        "pass_rate": at,
        "first_failing": failing,
        "first_failing_pass_rate": nxt,
        "statement": "; ".join(parts),
    }


def _shown(s: Capacity, point: dict[str, Any]) -> str:
    """A point in a line: why it failed, or the seeds' mean of every check."""
    if not point["pass"]:
        return "; ".join(point["why"])
    means = ((axis_label({"name": c.name, "kind": c.kind}), point["mean"][c.name]) for c in s.checks)
    return ", ".join(f"{label} {value:.4g}" for label, value in means)


def _write(
    s: Capacity,
    points: dict[int, dict],
    cap: int,
    supply: int,
    answer: int | None,
    status: str,
    tried: list[int] | None = None,
) -> dict[str, Any]:
    ordered = [points[n] for n in sorted(points)]
    result = {
        "config": str(s.path),
        "status": status,
        "answer": answer,
        "capped": answer is not None and answer == cap,
        "cap": {"max": s.max, "supply": supply, "effective": cap},
        "tried": tried if tried is not None else list(points),
        "rule": s.rule,
        "min_share": s.min_share if s.rule == "share" else None,
        "seeds": s.seeds,
        "confidence": confidence(points, answer, s.rule) if status == "finished" else None,
        "checks": [
            {
                "name": c.name,
                "kind": c.kind,
                "limit": c.limit,
                "eval_json": list(c.path),
                "against": METRICS[c.metric].base if c.kind in ("drop", "rise", "change") else None,
            }
            for c in s.checks
        ],
        "points": ordered,
        "settings": {**s.settings, "benchmarks": s.tasks, "out": str(s.out)},
        "provenance": {
            "git_commit": git_commit(),
            "versions": versions(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    }
    write_json_atomic(s.out / "capacity.json", result, default=str)
    return result
