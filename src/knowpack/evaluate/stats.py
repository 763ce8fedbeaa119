"""Uncertainty over seeds: bootstrap 95% intervals, paired differences, and the verdict a claim gets.

    from knowpack.evaluate.stats import bootstrap_interval, paired_interval, verdict
    ci = bootstrap_interval([0.62, 0.58, 0.66, 0.60, 0.64])          # {"mean", "low", "high", "n", ...}
    diff = paired_interval(loki_retention, lora_retention)           # per seed: loki - lora
    verdict(diff, "greater")                                         # "reproduced" | "not shown"

Seeds are the unit: one number per seed (a run's retention, its reliability), never per fact, since facts of
one run share its training and are not independent draws. The interval is the percentile bootstrap: resample
the seeds with replacement `resamples` times with a fixed RNG seed, take the mean of each resample, and read
the 2.5th and 97.5th percentiles (numpy's default linear interpolation). For a paired design (the same seeds,
hence the same facts, under two conditions) the unit is the difference per seed, and the interval is that of
the differences' mean. A claim is "reproduced" only when its interval lies wholly on the claimed side of zero
(`verdict`), otherwise "not shown", reported with the interval.

With fewer than 2 seeds there is no interval (low = high = None): one seed shows nothing about luck.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from knowpack.errors import KnowpackError

LEVEL = 0.95
RESAMPLES = 10_000
RNG_SEED = 0
MIN_SEEDS = 5
"""The fewest seeds a claim is called reproduced over: with 2-4 the percentile bootstrap's interval is
mostly the spread of a handful of values, far narrower than the truth."""
DIRECTIONS = ("greater", "less")
"""A claim's direction: the effect (or difference) is above zero, or below it."""


def bootstrap_interval(
    values: Sequence[float],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> dict[str, Any]:
    """The mean of `values` (one per seed) and its percentile-bootstrap interval at `level`:
    {"mean", "low", "high", "n", "level", "resamples"}; low / high None with fewer than 2 values."""
    x = _finite(values)
    out: dict[str, Any] = {"mean": float(x.mean()) if len(x) else None, "low": None, "high": None}
    out.update(n=len(x), level=level, resamples=resamples)
    if len(x) < 2:
        return out
    means = bootstrap_means(x, resamples=resamples, seed=seed)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    out.update(low=float(low), high=float(high))
    return out


def bootstrap_means(
    values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = RNG_SEED
) -> np.ndarray:
    """The means of `resamples` resamples (with replacement, same size) of `values`, drawn by a
    `numpy.random.default_rng(seed)` as one (resamples, n) matrix of indices."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    return x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)


def paired_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> dict[str, Any]:
    """The interval of the mean difference a - b over paired seeds (a[i] and b[i] share seed i), as
    `bootstrap_interval` of the differences, with the differences themselves under "differences"."""
    if len(a) != len(b):
        raise KnowpackError(f"a paired comparison needs as many values on each side ({len(a)} vs {len(b)})")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    differences = [float(x) - float(y) for x, y in pairs]
    out = bootstrap_interval(differences, level=level, resamples=resamples, seed=seed)
    out["differences"] = differences
    return out


def verdict(interval: dict[str, Any], direction: str, min_seeds: int = MIN_SEEDS) -> str:
    """ "reproduced" when the interval, over at least `min_seeds` seeds (its `n`, where it has one), lies
    wholly on the claimed side of zero (`direction` greater: low > 0; less: high < 0); "too few seeds" when
    it has fewer; else "not shown" (also with no interval: fewer than 2 seeds)."""
    if direction not in DIRECTIONS:
        raise KnowpackError(f"unknown direction {direction!r}; expected greater or less")
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return "not shown"
    shown = low > 0 if direction == "greater" else high < 0
    if shown and interval.get("n") is not None and interval["n"] < min_seeds:
        return "too few seeds"
    return "reproduced" if shown else "not shown"


def pass_rate_interval(passed: int, total: int, *, z: float = 1.959964) -> dict[str, Any]:
    """The share of `total` seeds that passed and its Wilson score interval (95% for the default z):
    {"rate", "low", "high", "passed", "total"}; rate and bounds None with no seeds. Wilson rather than the
    bootstrap: pass / fail per seed is a binomial count, and with 5 seeds all passing the bootstrap would
    say [1, 1], while Wilson says [0.57, 1]."""
    if total <= 0:
        return {"rate": None, "low": None, "high": None, "passed": passed, "total": total}
    p, z2 = passed / total, z * z
    center = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z * np.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    low, high = max(0.0, float(center - half)), min(1.0, float(center + half))
    return {"rate": p, "low": low, "high": high, "passed": passed, "total": total}


def interpolate(xs: Sequence[float], ys: Sequence[float], at: float) -> float | None:
    """Linear interpolation of the curve (xs, ys) at x = `at` (points sorted by x; equal xs averaged);
    None outside the range of xs (no extrapolation: a method never measured there has no value there)."""
    points: dict[float, list[float]] = {}
    for x, y in zip(xs, ys, strict=True):
        if x is not None and y is not None:
            points.setdefault(float(x), []).append(float(y))
    if not points:
        return None
    grid = sorted(points)
    if at < grid[0] or at > grid[-1]:
        return None
    return float(np.interp(at, grid, [sum(points[x]) / len(points[x]) for x in grid]))


def format_interval(interval: dict[str, Any], fmt: str = ".3f") -> str:
    """'0.620 [0.580, 0.660]', or '0.620 (1 seed)' with no interval, or '–' with no value."""
    mean = interval.get("mean")
    if mean is None:
        return "–"
    if interval.get("low") is None:
        return f"{mean:{fmt}} ({interval.get('n', 0)} seed{'s' * (interval.get('n', 0) != 1)})"
    return f"{mean:{fmt}} [{interval['low']:{fmt}}, {interval['high']:{fmt}}]"


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """The values that are numbers (None and NaN left out: a seed with no value is no evidence)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]
