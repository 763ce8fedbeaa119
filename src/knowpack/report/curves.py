"""Comparisons at equal uptake: each method's uptake-damage curve over its conditions, with seeds as the unit.

    curves = method_curves(rows)                 # method -> points (a condition each: lr, epochs, n, mix ...)
    table = matched_damage(curves)               # damage of each method at common reliabilities, with CIs

A point is one condition of a method (the report's group and n: another lr, epoch budget, mix or n), its
x the mean reliability of its seeds and y the mean damage (DAMAGE: retention of untrained HighlyKnown facts,
read through the metric registry), each with a 95% interval over seeds (`knowpack.evaluate.stats.interval`,
its default method). Per-epoch damage would need a checkpoint per epoch evaluated, which train does
not keep (`train.keep_checkpoints` keeps only the newest), so the curve's points are runs.

Damage at matched reliability: each method's curve of means, linearly interpolated at the `TARGETS` every
method reaches and at the highest reliability they all reach (no extrapolation), and its interval from a
bootstrap over seeds: each resample draws the seeds (the same draw for every condition and every method: runs
of one seed share their facts, a paired design), recomputes every point's means and interpolates again.
Between two methods, the difference at the same reliability gets its interval from the same resamples and a
verdict (`stats.verdict`). A resample in which some curve does not reach the level has no value there: every
row says how many of its resamples reached it (`reached` of `resamples`), so that an interval over fewer
resamples than were drawn (biased towards the seeds that reach it) is never passed off as a whole one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from knowpack.evaluate import stats

DAMAGE = "retention"
"""The registry metric on the y axis (untrained scope): the share of HighlyKnown facts kept."""
TARGETS = (0.5, 0.8, 0.9, 0.95)
"""Reliabilities the table matches at, where every method's curve reaches them."""


def method_curves(rows: list[dict], damage: str = DAMAGE) -> dict[str, list[dict[str, Any]]]:
    """Method -> its points sorted by mean reliability: {"label", "seeds": {seed: (reliability, damage)},
    "reliability": interval, "damage": interval} for every condition with both numbers in some run."""
    by_point: dict[tuple[str, str], dict[Any, tuple[float, float]]] = defaultdict(dict)
    for r in rows:
        if r.get("reliability") is None or r.get(damage) is None or is_control(r):
            continue
        by_point[(r["method"], f"{r['group']} n={r['n']}")][r["seed"]] = (r["reliability"], r[damage])
    curves: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (method, label), seeds in sorted(by_point.items()):
        xs, ys = zip(*seeds.values(), strict=True)
        curves[method].append(
            {
                "label": label,
                "seeds": seeds,
                "reliability": stats.interval(xs),
                "damage": stats.interval(ys),
            }
        )
    return {m: sorted(points, key=lambda p: p["reliability"]["mean"]) for m, points in sorted(curves.items())}


def is_control(row: dict) -> bool:
    """Whether a report row is a training control (`mix.control`): its reliability is on facts the model
    already knew, so it is no point of an uptake-damage curve."""
    return bool((row.get("settings") or {}).get("mix.control"))


RESAMPLES = 2000
"""Bootstrap resamples of the matched comparison (`matched_damage`)."""


def interval_note(resamples: int = RESAMPLES) -> str:
    """How `matched_damage`'s intervals are made, in words (for a table's caption)."""
    method = stats.METHODS["percentile"]
    return f"paired {method} over seeds of the interpolated fronts, {resamples:,} resamples, uncorrected"


def matched_damage(
    curves: dict[str, list[dict]],
    targets: tuple[float, ...] = TARGETS,
    *,
    resamples: int = RESAMPLES,
    seed: int = stats.RNG_SEED,
) -> list[dict[str, Any]]:
    """One row per (reliability, method) where every method's curve reaches that reliability: the
    interpolated damage with its bootstrap interval; and, for two methods, a row of their difference
    (first minus second, in name order) with its interval and verdict ("greater": the first keeps more)."""
    if not curves:
        return []
    levels = [t for t in targets if all(_within(points, t) for points in curves.values())]
    low = max(min(p["reliability"]["mean"] for p in pts) for pts in curves.values())
    high = min(max(p["reliability"]["mean"] for p in pts) for pts in curves.values())
    if not levels and low <= high:  # no common target: the middle of the reliabilities every method reaches
        levels = [round((low + high) / 2, 3)]
    top = math.floor(high * 1000 + 1e-9) / 1000  # rounded down: 0.9917 -> 0.991, which every curve reaches
    if low <= high and top not in levels and top > max(levels, default=-1.0):
        levels.append(top)  # and the highest uptake every method reaches: where claims are made
    seeds = sorted({s for pts in curves.values() for p in pts for s in p["seeds"]}, key=str)
    draws = np.random.default_rng(seed).integers(0, len(seeds), size=(resamples, len(seeds)))
    if len(seeds) < 2:
        draws = draws[:0]  # one seed shows nothing about luck
    rows = []
    for level in levels:
        found = {
            m: (_at(pts, level, seeds), _resampled(pts, level, seeds, draws)) for m, pts in curves.items()
        }
        for method, (value, boot) in found.items():
            rows.append({"reliability": level, "method": method, **_interval(value, boot, len(seeds))})
        if len(found) == 2:
            (a, (va, ba)), (b, (vb, bb)) = found.items()
            diff = None if None in (va, vb) else va - vb
            interval = _interval(diff, ba - bb, len(seeds))
            rows.append(
                {
                    "reliability": level,
                    "method": f"{a} − {b}",
                    **interval,
                    "verdict": stats.verdict(interval, "greater" if (diff or 0) >= 0 else "less"),
                }
            )
    return rows


def _within(points: list[dict], level: float) -> bool:
    xs = [p["reliability"]["mean"] for p in points]
    return min(xs) <= level <= max(xs)


def _at(points: list[dict], level: float, seeds: list, chosen: list | None = None) -> float | None:
    """The curve of `points` over the seeds `chosen` (default all; repeats count) at reliability `level`."""
    chosen = seeds if chosen is None else chosen
    xs, ys = [], []
    for p in points:
        mine = [p["seeds"][s] for s in chosen if s in p["seeds"]]
        if mine:
            xs.append(sum(x for x, _ in mine) / len(mine))
            ys.append(sum(y for _, y in mine) / len(mine))
    return stats.interpolate(xs, ys, level)


def _resampled(points: list[dict], level: float, seeds: list, draws: np.ndarray) -> np.ndarray:
    values = [_at(points, level, seeds, [seeds[i] for i in row]) for row in draws.tolist()]
    return np.asarray([np.nan if v is None else v for v in values], dtype=float)


def _interval(value: float | None, boot: np.ndarray, n: int) -> dict[str, Any]:
    """The value and the 2.5th / 97.5th percentiles of its resamples where it could be read, over `n` seeds,
    with how many resamples reached the level (`reached`) of all drawn (`resamples`)."""
    drawn = len(boot)
    boot = boot[np.isfinite(boot)]
    out = {"mean": value, "low": None, "high": None, "n": n, "ci_method": stats.METHODS["percentile"]}
    out.update(reached=len(boot), resamples=drawn)
    if value is None or len(boot) == 0:  # fewer than 2 seeds, or never within reach: no interval
        return out
    low, high = np.percentile(boot, [2.5, 97.5])
    return {**out, "low": float(low), "high": float(high)}
