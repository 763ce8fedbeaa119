"""`knowpack capacity CONFIG`: the largest number of new facts that reaches a reliability target while the
damage stays within a budget, found by exponential then binary search over n (`mix.n_unknown`).

    # knowpack --threads 1 capacity configs/capacity/organism-lora.yaml
    base: ../organism/lora.yaml      # a run config (relative to this file)
    set: {probe.samples: 0}          # overrides for every point
    target: {reliability: 0.9}       # uptake: each at least this
    budget:                          # damage: each within this
      world_mc: 0.01                 #   accuracy drop vs the base model at most 0.01 (or TASK/METRIC)
      retention: 0.95                #   untrained HighlyKnown facts still HighlyKnown: at least 0.95
      # retention_drop: 0.05         #   or: at most 0.05 below the noise floor's retention
    seeds: [0, 1, 2]                 # each point is a run per seed (mix.seed and train.seed)
    rule: all                        # a point passes when every seed does (all) or the seeds' mean (mean)
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
(written atomically after every point) holds the answer, every point with its numbers and why it passed or
failed, and the settings; `OUT/capacity.png` plots them.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from knowpack.config import build, parse_override, ranged
from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics import METRICS, metric_path, metric_value
from knowpack.experiment.sweep import (
    Cell,
    cell_status,
    claim_cell,
    origins,
    prepare_shared,
    read_mapping,
    share_work,
    yaml_value,
)
from knowpack.io import write_json_atomic
from knowpack.train.config import Range, check_range, load_config

logger = logging.getLogger(__name__)

_SEARCHED = ("mix.n_unknown", "mix.seed", "train.seed", "out")  # the search sets these for every point
RULES = ("all", "mean")

TARGETS: tuple[str, ...] = tuple(
    name for name, row in METRICS.items() if row.path[0] == "uptake" and row.higher_is_better
)
"""Uptake metrics of the registry (`knowpack.evaluate.metrics.METRICS`): each at least its target."""
BUDGET_KINDS = {True: "at_least", False: "at_most", None: "change"}
"""How a budget on a registry metric applies, by its direction (`higher_is_better`). `NAME_drop` instead
bounds the drop below the metric's base (the base model, or the noise floor: `retention_drop` means the same
for a model whose HighlyKnown facts flip on their own now and then); any other key is an lm-eval task, `TASK`
(its `acc`) or `TASK/METRIC`: at most that drop vs the base model."""
BUDGET_SCOPE = "untrained"
"""The facts a budget on a per-group metric (shift, behaviour) reads: the damage is to untrained facts."""


@dataclass(frozen=True)
class Check:
    """One target or budget line: metric `metric` of the registry (`where`: its scope, or its benchmark's task
    and measure), `measured` (the value, or its drop / change vs its base) against `limit`."""

    name: str
    metric: str
    kind: str
    """at_least: value >= limit | at_most: value <= limit | drop: base - value <= limit | change:
    |value - base| <= limit."""
    limit: float
    where: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> tuple[str, ...]:
        """Where eval.json holds the metric."""
        return metric_path(self.metric, **dict(self.where))

    def measure(self, ev: dict) -> dict[str, Any]:
        value, base = metric_value(ev, self.metric, **dict(self.where))
        measured = value
        if self.kind in ("drop", "change"):
            if value is None or base is None:
                measured = None
            else:
                measured = base - value if self.kind == "drop" else abs(value - base)
        return {"value": value, "base": base, "measured": measured}

    def judge(self, measured: float | None) -> str | None:
        """None when `measured` is within the limit, else why not."""
        what = _axis_label({"name": self.name, "kind": self.kind})
        if measured is None:
            return f"{what} not measured (null: no facts or no base value)"
        if self.kind == "at_least":
            return None if measured >= self.limit - 1e-12 else f"{what} {measured:.4g} < {self.limit:g}"
        return None if measured <= self.limit + 1e-12 else f"{what} {measured:.4g} > {self.limit:g}"


@dataclass
class CapacityFile:
    """The keys of a capacity config and their types (checked with their lines by `knowpack.config.build`)."""

    base: str | None = None
    """The run config every point starts from (relative to the capacity config)."""
    set: dict[str, Any] | None = None
    """`section.key: value` for every point."""
    target: dict[str, Any] | None = None
    """Uptake metric: at least this (`TARGETS`)."""
    budget: dict[str, Any] | None = None
    """Damage metric or lm-eval task: within this (`BUDGET_KINDS`)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Each point is a run per seed (mix.seed and train.seed)."""
    rule: str = "all"
    """A point passes when every seed does (all) or the seeds' mean does (mean)."""
    start: int = ranged(1, ge=1)
    max: int | None = None
    """The largest n tried (also capped by the Unknown facts the base probe has)."""
    benchmarks: list[str] = field(default_factory=list)
    """lm-eval tasks every point is evaluated on, besides the budget's."""
    limit: int | None = ranged(None, ge=1)
    """Benchmark items (null: all)."""
    out: str | None = None


_KEYS = tuple(f.name for f in dataclasses.fields(CapacityFile))


@dataclass
class Capacity:
    """A loaded capacity config."""

    path: Path
    base: Path | None
    common: dict[str, Any]
    checks: list[Check]
    """The targets first, then the budget."""
    seeds: list[int]
    rule: str
    start: int
    max: int | None
    tasks: list[str]
    """lm-eval tasks every point is evaluated on (`benchmarks` and the budget's)."""
    limit: int | None
    out: Path
    settings: dict[str, Any] = field(default_factory=dict)
    """The config as read (for capacity.json)."""
    origins: dict[str, str] = field(default_factory=dict)
    """Where each `set` key was given (`path:line` or "command line"), for errors."""


def load_capacity(path: str | os.PathLike, overrides: list[str] = ()) -> Capacity:
    """Read a capacity config and check it, and every point's run config, before any model is loaded.

    `overrides`: `out=DIR`, a capacity key (`max=64`, `seeds=[0]`, `target.reliability=0.95`, ...) or a run
    config key (`train.lr=1e-3`) for every point."""
    path = Path(path)
    lines: dict[tuple, int | str] = {}
    data = read_mapping(path, "capacity", _KEYS, lines)
    for item in overrides:
        lines[_override(data, item)] = "command line"

    def at(*key: Any) -> str:  # where a key was set, for errors
        line = lines.get(key)
        return line if isinstance(line, str) else f"{path}:{line}" if line else str(path)

    checked = build(CapacityFile, data, where=str(path), lines=lines, choices={"rule": RULES})
    common = dict(checked.set or {})
    fixed = sorted(set(common) & set(_SEARCHED))
    if fixed:
        raise KnowpackError(f"{at('set', fixed[0])}: set.{fixed[0]} is the search's to set (n, seeds, out)")
    seeds, rule, start, cap, limit = checked.seeds, checked.rule, checked.start, checked.max, checked.limit
    if not seeds or not all(s >= 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise KnowpackError(
            f"{at('seeds')}: seeds must be a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]"
        )
    if cap is not None and cap < start:
        raise KnowpackError(f"{at('max')}: max must be an integer >= start ({start}) or null (got {cap!r})")
    if not data.get("out"):
        raise KnowpackError(f"{path}: no out folder (set out: DIR, or out=DIR on the command line)")
    benchmarks = checked.benchmarks
    checks = _targets(data.get("target"), path, at) + _budget(data.get("budget"), path, at)
    tasks = list(
        dict.fromkeys(benchmarks + [c.path[2] for c in checks if c.path[:2] == ("benchmarks", "tasks")])
    )
    capacity = Capacity(
        path=path,
        base=(path.parent / data["base"]).resolve() if data.get("base") else None,
        common=common,
        checks=checks,
        seeds=seeds,
        rule=rule,
        start=start,
        max=cap,
        tasks=tasks,
        limit=limit,
        out=Path(data["out"]),
        settings={k: data[k] for k in _KEYS if k in data},
        origins=origins(path, lines, {k: ("set", k) for k in common}),
    )
    config = point_cell(capacity, start, seeds[0]).config  # a bad base or set fails here, with its line
    if tasks:
        from knowpack.evaluate.benchmarks import check_tasks

        try:
            check_tasks(tasks, config.eval.tasks_dir)
        except KnowpackError as e:
            raise KnowpackError(
                f"{path}: {e} (a budget key is a metric of knowpack.evaluate.metrics.METRICS or an lm-eval "
                "task)"
            ) from None
    return capacity


def _override(data: dict, item: str) -> tuple[str, ...]:
    """Apply `key=value` (`knowpack.config.parse_override`) to the capacity config `data`: a capacity key,
    `target.NAME` / `budget.NAME`, or a run config key for every point; returns the key's path in `data`."""
    key, value = parse_override(item)
    head = key[0]
    if head in ("target", "budget") and len(key) > 1:
        if not isinstance(data.get(head), dict):
            data[head] = {}
        data[head][".".join(key[1:])] = value
        return (head, ".".join(key[1:]))
    if head in _KEYS and len(key) == 1:
        data[head] = item.partition("=")[2] if head in ("out", "base") else value
        return (head,)
    if not isinstance(data.get("set"), dict):
        data["set"] = {}
    data["set"][".".join(key)] = value
    return ("set", ".".join(key))


def _targets(value: Any, path: Path, at: Callable[..., str]) -> list[Check]:
    if not isinstance(value, dict) or not value:
        raise KnowpackError(
            f"{path}: no target; set e.g. target: {{reliability: 0.9}} ({', '.join(TARGETS)})"
        )
    checks = []
    for name, limit in value.items():
        where = at("target", name)
        if name not in TARGETS:
            raise KnowpackError(f"{where}: unknown target metric {name!r}; expected {', '.join(TARGETS)}")
        limit = _number(limit, f"{where}: target.{name}", _bounds(name))
        checks.append(Check(name, name, "at_least", limit))
    return checks


def _budget(value: Any, path: Path, at: Callable[..., str]) -> list[Check]:
    if value is None:
        return []
    if not isinstance(value, dict):
        raise KnowpackError(
            f"{at('budget')}: budget must be a mapping of metric: limit, e.g. {{world_mc: 0.01}}"
        )
    budgets = [n for n in METRICS if n not in TARGETS and n != "benchmark"]
    checks = []
    for name, limit in value.items():
        where = at("budget", name)
        metric = str(name).removesuffix("_drop")
        if (
            metric in METRICS
            and metric != "benchmark"
            and (name == metric or METRICS[metric].higher_is_better)
        ):
            kind = "drop" if name != metric else BUDGET_KINDS[METRICS[metric].higher_is_better]
            bounds = _bounds(metric) if kind in ("at_least", "at_most") else Range(low=0)
            scope = (("scope", BUDGET_SCOPE),) if "{scope}" in METRICS[metric].path else ()
            checks.append(Check(name, metric, kind, _number(limit, f"{where}: budget.{name}", bounds), scope))
            continue
        task, _, measure = str(name).partition("/")
        close = difflib.get_close_matches(str(name), budgets + list(TARGETS), n=1, cutoff=0.8)
        if not task or task in TARGETS or close:
            hint = f" (did you mean {close[0]}?)" if close and close[0] != name else ""
            raise KnowpackError(
                f"{where}: unknown budget metric {name!r}{hint}; expected a metric ({', '.join(budgets)}, "
                "or NAME_drop) or an lm-eval task (TASK or TASK/METRIC: at most that drop vs the base model)"
            )
        limit = _number(limit, f"{where}: budget.{name}", Range(low=0))
        checks.append(
            Check(str(name), "benchmark", "drop", limit, (("task", task), ("measure", measure or "acc")))
        )
    return checks


def _bounds(metric: str) -> Range:
    low, high = METRICS[metric].bounds
    return Range(low=low, high=high)


def _number(value: Any, what: str, bounds: Range) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise KnowpackError(f"{what}: expected a number {bounds}, got {value!r}")
    check_range(float(value), bounds, what)
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def point_cell(capacity: Capacity, n: int, seed: int) -> Cell:
    """The run of point n, seed `seed`: `OUT/points/n=<n>,seed=<s>`, pointed at the shared base probe."""
    name = f"n={n},seed={seed}"
    point = {"mix.n_unknown": n, "mix.seed": seed, "train.seed": seed}
    settings = {**capacity.common, **point}
    config = load_config(
        capacity.base, [f"{k}={yaml_value(v)}" for k, v in settings.items()], origins=capacity.origins
    )
    folder = capacity.out / "points" / name
    config.out = str(folder)
    share_work(config, capacity.out)
    return Cell(name, point, config, folder)


# ------------------------------------------------------------------------------------------------ the search


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
    from knowpack.probe.run import read_records
    from knowpack.train.mix import check_mix

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
        from knowpack.evaluate import evaluate_run
        from knowpack.train import train

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
            if s.rule == "all" and not result["pass"]:
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
    """A point's pass / fail by the rule, with the reasons (per seed for `all`, of the means for `mean`)."""
    rows = [runs[seed] for seed in s.seeds if seed in runs]
    mean = {}
    for c in s.checks:
        values = [r["metrics"][c.name]["measured"] for r in rows]
        mean[c.name] = None if None in values else sum(values) / len(values)
    if s.rule == "mean":
        failed = [c.name for c in s.checks if c.judge(mean[c.name])]
        why = [w for c in s.checks if (w := c.judge(mean[c.name]))]
    else:
        failed = [c.name for c in s.checks if any(c.judge(r["metrics"][c.name]["measured"]) for r in rows)]
        why = [f"seed {r['seed']}: {w}" for r in rows for w in r["why"]]
    return {
        "n": n,
        "pass": not why,
        "why": why,
        "failed": failed,
        "mean": mean,
        "runs": rows,
        "seeds_skipped": [seed for seed in s.seeds if seed not in runs],
    }


def _shown(s: Capacity, point: dict[str, Any]) -> str:
    """A point in a line: why it failed, or the seeds' mean of every check."""
    if not point["pass"]:
        return "; ".join(point["why"])
    means = ((_axis_label({"name": c.name, "kind": c.kind}), point["mean"][c.name]) for c in s.checks)
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
    from knowpack.runs import git_commit, versions

    ordered = [points[n] for n in sorted(points)]
    result = {
        "config": str(s.path),
        "status": status,
        "answer": answer,
        "capped": answer is not None and answer == cap,
        "cap": {"max": s.max, "supply": supply, "effective": cap},
        "tried": tried if tried is not None else list(points),
        "rule": s.rule,
        "seeds": s.seeds,
        "checks": [
            {
                "name": c.name,
                "kind": c.kind,
                "limit": c.limit,
                "eval_json": list(c.path),
                "against": METRICS[c.metric].base if c.kind in ("drop", "change") else None,
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


# ------------------------------------------------------------------------------------------------ the plot


def plot_capacity(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per target and budget line: every run's measured value vs n (log x), the seeds' mean, the
    limit, and the answer marked; written atomically (PNG)."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg by default
    from matplotlib.ticker import FuncFormatter

    from knowpack.io import write_bytes_atomic

    checks = result["checks"]
    fig = Figure(figsize=(6.4, 2.4 * len(checks)), layout="constrained")
    axes = fig.subplots(len(checks), 1, sharex=True, squeeze=False)[:, 0]
    for ax, check in zip(axes, checks, strict=True):
        name = check["name"]
        xs = [p["n"] for p in result["points"] for r in p["runs"]]
        ys = [r["metrics"][name]["measured"] for p in result["points"] for r in p["runs"]]
        ax.scatter(xs, [float("nan") if y is None else y for y in ys], s=14, alpha=0.6, label="runs")
        means = [(p["n"], p["mean"][name]) for p in result["points"] if p["mean"].get(name) is not None]
        if means:
            ax.plot(*zip(*means, strict=True), marker="o", label="mean of seeds")
        failed = [
            (p["n"], p["mean"][name])
            for p in result["points"]
            if name in p["failed"] and p["mean"].get(name) is not None
        ]
        if failed:
            ax.scatter(
                *zip(*failed, strict=True), marker="x", color="red", s=50, zorder=3, label="fails this check"
            )
        limit = ax.axhline(check["limit"], color="gray", linestyle="--", label=_limit_label(check))
        if result["answer"] is not None:
            ax.axvline(result["answer"], color="green", alpha=0.6, label=f"capacity {result['answer']}")
        ax.set_ylabel(_axis_label(check))
        # the first panel explains every mark; the others name only their limit
        ax.legend(handles=None if ax is axes[0] else [limit], fontsize=7, loc="best")
    axes[-1].set_xscale("log", base=2)
    axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 16, not 2^4
    axes[-1].set_xlabel("n (new facts)")
    fig.suptitle(f"capacity: {result['answer']} ({result['rule']} of seeds {result['seeds']})", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return write_bytes_atomic(path, buffer.getvalue())


def _axis_label(check: dict) -> str:
    name = check["name"].replace("/", " ").removesuffix("_drop")
    return {"drop": f"{name} drop", "change": f"{name} change"}.get(check["kind"], name)


def _limit_label(check: dict) -> str:
    sign = ">=" if check["kind"] == "at_least" else "<="
    return f"{'target' if check['name'] in TARGETS else 'budget'} {sign} {check['limit']:g}"
