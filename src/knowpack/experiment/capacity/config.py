"""A capacity config: its grammar (target, budget, seeds, rule, start, max, ...), read and checked before
any model loads, and the run config of every point (`point_cell`)."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.config import build, parse_override, ranged
from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import check_tasks, higher_is_better
from knowpack.evaluate.metrics import METRICS, metric_path, metric_value
from knowpack.experiment.cluster import ClusterFile, cluster_settings, config_keys
from knowpack.experiment.sweep import (
    Cell,
    origins,
    read_mapping,
    share_work,
    yaml_value,
)
from knowpack.train.config import Range, check_range, load_config

_SEARCHED = ("mix.n_unknown", "mix.seed", "train.seed", "out")  # the search sets these for every point
RULES = ("all", "mean", "share")

TARGETS: tuple[str, ...] = tuple(
    name for name, row in METRICS.items() if row.path[0] == "uptake" and row.higher_is_better
)
"""Uptake metrics of the registry (`knowpack.evaluate.metrics.METRICS`): each at least its target."""
BUDGET_KINDS = {True: "at_least", False: "at_most", None: "change"}
"""How a budget on a registry metric applies, by its direction (`higher_is_better`). `NAME_drop` instead
bounds the drop below the metric's base (the base model, or for the probe's metrics the measurement null: the
base re-probed with the same prompts, 1.0 for retention under a greedy probe, below it where sampling flips
facts on their own); any other key is an lm-eval task, `TASK`
(its `acc`) or `TASK/METRIC`: at most that drop vs the base model (at most that rise for a measure where lower
is better, as lm-eval's registry says: `world_text/bits_per_byte`)."""
BUDGET_SCOPE = "untrained"
"""The facts a budget on a per-group metric (shift, behaviour) reads: the damage is to untrained facts."""


@dataclass(frozen=True)
class Check:
    """One target or budget line: metric `metric` of the registry (`where`: its scope, or its benchmark's task
    and measure), `measured` (the value, or its drop / change vs its base) against `limit`."""

    name: str
    metric: str
    kind: str
    """at_least: value >= limit | at_most: value <= limit | drop: base - value <= limit | rise: value - base
    <= limit (a benchmark measure where lower is better: bits per byte, perplexity) | change: |value - base|
    <= limit."""
    limit: float
    where: tuple[tuple[str, str], ...] = ()

    @property
    def path(self) -> tuple[str, ...]:
        """Where eval.json holds the metric."""
        return metric_path(self.metric, **dict(self.where))

    def measure(self, ev: dict) -> dict[str, Any]:
        value, base = metric_value(ev, self.metric, **dict(self.where))
        measured = value
        if self.kind in ("drop", "rise", "change"):
            if value is None or base is None:
                measured = None
            else:
                measured = {"drop": base - value, "rise": value - base}.get(self.kind, abs(value - base))
        return {"value": value, "base": base, "measured": measured}

    def judge(self, measured: float | None) -> str | None:
        """None when `measured` is within the limit, else why not."""
        what = axis_label({"name": self.name, "kind": self.kind})
        if measured is None:
            return f"{what} not measured (null: no facts or no base value)"
        if self.kind == "at_least":
            return None if measured >= self.limit - 1e-12 else f"{what} {measured:.4g} < {self.limit:g}"
        return None if measured <= self.limit + 1e-12 else f"{what} {measured:.4g} > {self.limit:g}"


@dataclass
class CapacityFile(ClusterFile):
    """The keys of a capacity config and their types (checked with their lines by `knowpack.config.build`);
    `resources` and `retries` are `ClusterFile`'s."""

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
    """A point passes when every seed does (all), the seeds' mean does (mean), or at least `min_share` of
    the seeds do (share: every seed is run, and the answer carries its pass rate)."""
    min_share: float = ranged(0.8, gt=0, le=1)
    """With rule share: the share of seeds that must pass."""
    start: int = ranged(1, ge=1)
    max: int | None = None
    """The largest n tried (also capped by the Unknown facts the base probe has)."""
    benchmarks: list[str] = field(default_factory=list)
    """lm-eval tasks every point is evaluated on, besides the budget's."""
    limit: int | None = ranged(None, ge=1)
    """Benchmark items (null: all)."""
    out: str | None = None


_KEYS = config_keys(CapacityFile)


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
    min_share: float
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
    cluster: ClusterFile = field(default_factory=ClusterFile)
    """`resources` and `retries` for `--backend ray` (`knowpack.experiment.backends`)."""


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
    _check_search(checked, common, data, path, at)
    seeds, rule, start, cap, limit = checked.seeds, checked.rule, checked.start, checked.max, checked.limit
    benchmarks = checked.benchmarks
    checks = target_checks(data.get("target"), path, at) + budget_checks(data.get("budget"), path, at)
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
        min_share=checked.min_share,
        start=start,
        max=cap,
        tasks=tasks,
        limit=limit,
        out=Path(data["out"]),
        settings={k: data[k] for k in _KEYS if k in data},
        origins=origins(path, lines, {k: ("set", k) for k in common}),
        cluster=cluster_settings(checked, at("resources")),
    )
    config = point_cell(capacity, start, seeds[0]).config  # a bad base or set fails here, with its line
    if tasks:
        check_point_tasks(tasks, config.eval.tasks_dir, path)
    return capacity


def _check_search(checked: Any, common: dict, data: dict, path: Path, at: Callable[..., str]) -> None:
    """What the config's types and ranges do not say: `set` leaves the searched keys alone, the seeds are
    distinct, `max` is at least `start`, there is an out folder."""
    fixed = sorted(set(common) & set(_SEARCHED))
    if fixed:
        raise KnowpackError(f"{at('set', fixed[0])}: set.{fixed[0]} is the search's to set (n, seeds, out)")
    seeds, start, cap = checked.seeds, checked.start, checked.max
    if not seeds or not all(s >= 0 for s in seeds) or len(set(seeds)) < len(seeds):
        raise KnowpackError(
            f"{at('seeds')}: seeds must be a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]"
        )
    if cap is not None and cap < start:
        raise KnowpackError(f"{at('max')}: max must be an integer >= start ({start}) or null (got {cap!r})")
    if not data.get("out"):
        raise KnowpackError(f"{path}: no out folder (set out: DIR, or out=DIR on the command line)")


def check_point_tasks(tasks: list[str], tasks_dir: str | None, path: Path) -> None:
    """The lm-eval tasks every point is evaluated on exist (a budget key that is neither a metric nor a
    task is a typo)."""
    try:
        check_tasks(tasks, tasks_dir)
    except KnowpackError as e:
        raise KnowpackError(
            f"{path}: {e} (a budget key is a metric of knowpack.evaluate.metrics.METRICS or an lm-eval task)"
        ) from None


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


def target_checks(value: Any, path: Path, at: Callable[..., str]) -> list[Check]:
    """The `target:` mapping (metric: the least it must reach) as checks; an unknown metric or a value out
    of the metric's range is a one-line error at `at("target", name)` (the capacity search's and the
    plan's)."""
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


def budget_checks(value: Any, path: Path, at: Callable[..., str]) -> list[Check]:
    """The `budget:` mapping (a metric, `<metric>_drop`, or an lm-eval task: the most damage allowed) as
    checks; a malformed one is a one-line error at `at("budget", name)` (the capacity search's and the
    plan's)."""
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
        drops = [f"{n}_drop" for n in METRICS if METRICS[n].higher_is_better and n != "benchmark"]
        close = difflib.get_close_matches(str(name), budgets + drops + list(TARGETS), n=1, cutoff=0.8)
        if not task or task in TARGETS or close:
            hint = f" (did you mean {close[0]}?)" if close and close[0] != name else ""
            raise KnowpackError(
                f"{where}: unknown budget metric {name!r}{hint}; expected a metric ({', '.join(budgets)}, "
                "or NAME_drop) or an lm-eval task (TASK or TASK/METRIC: at most that drop vs the base model)"
            )
        limit = _number(limit, f"{where}: budget.{name}", Range(low=0))
        measure = measure or "acc"
        kind = "drop" if higher_is_better(measure) is not False else "rise"
        checks.append(Check(str(name), "benchmark", kind, limit, (("task", task), ("measure", measure))))
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


def axis_label(check: dict) -> str:
    """How a check's metric is named on an axis or in a verdict: `NAME`, `NAME drop`, `NAME rise`,
    `NAME change`."""
    name = check["name"].replace("/", " ").removesuffix("_drop")
    suffix = {"drop": " drop", "rise": " rise", "change": " change"}.get(check["kind"], "")
    return name + suffix
