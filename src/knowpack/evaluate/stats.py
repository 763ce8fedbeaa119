"""Uncertainty over seeds: 95% intervals, paired differences, Holm's correction, and the verdict a claim gets.

    from knowpack.evaluate.stats import interval, paired_interval, holm_verdicts, verdict
    ci = interval([0.62, 0.58, 0.66, 0.60, 0.64])              # {"mean", "low", "high", "ci_method", "p"...}
    diff = paired_interval(loki_retention, lora_retention)     # per seed: loki - lora
    verdict(diff, "greater")                                   # "reproduced" | "not shown" | "too few seeds"
    holm_verdicts([(diff, "greater"), (other, "less")])        # a table's primary tests, Holm-corrected

Seeds are the unit: one number per seed (a run's retention, its reliability), never per fact, since facts of
one run share its training and are not independent draws. A seed is one draw of everything random
(docs/design.md §5.1). The interval of the mean over seeds (`METHODS`; a result names its own in `ci_method`):

- `t` (the default, `METHOD`): Student-t, mean +- t(n-1) * s / sqrt(n). Exact for normal data at any n.
- `bca`: the bias-corrected and accelerated bootstrap (Efron 1987): the bootstrap means' percentiles moved by
  the bias z0 (the share of resample means below the mean) and the acceleration a (the jackknife's
  skewness). Resamples are drawn with a fixed RNG seed.
- `percentile`: the plain percentile bootstrap, kept for old results: over 5 normal seeds it covers the truth
  84% of the time, not 95% (tests/test_stats.py simulates each method's coverage; BCa is no better at 5).

For a paired design (the same seeds, hence the same facts, under two conditions) the unit is the difference
per seed. Every interval also carries `p`, the two-sided one-sample t-test of "the mean is 0", so that a
table's primary tests can be Holm-corrected together (`holm`, `holm_verdicts`). A claim is "reproduced" when
its interval lies wholly on the claimed side of zero, or, Holm-corrected, when its adjusted p is below
1 - level with the mean on the claimed side; otherwise "not shown", reported with the interval.

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
"""The fewest seeds a claim is called reproduced over: with 2-4 seeds an interval rests on a handful of values
(and a bootstrap's is far narrower than the truth)."""
DIRECTIONS = ("greater", "less")
"""A claim's direction: the effect (or difference) is above zero, or below it."""
METHODS = {"t": "Student-t", "bca": "BCa bootstrap", "percentile": "percentile bootstrap"}
"""Interval methods: key -> the name every table and report shows."""
METHOD = "t"
"""The default interval method."""


def interval(
    values: Sequence[float | None],
    *,
    method: str = METHOD,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> dict[str, Any]:
    """The mean of `values` (one per seed; None and NaN left out) and its interval at `level` by `method`:
    {"mean", "low", "high", "n", "level", "ci_method" (its name), "p"} (+ "resamples" for a bootstrap);
    low / high / p None with fewer than 2 values."""
    if method not in METHODS:
        raise KnowpackError(f"unknown interval method {method!r}; expected one of {', '.join(METHODS)}")
    x = _finite(values)
    out: dict[str, Any] = {"mean": float(x.mean()) if len(x) else None, "low": None, "high": None}
    out.update(n=len(x), level=level, ci_method=METHODS[method], p=None)
    if method != "t":
        out["resamples"] = resamples
    if len(x) < 2:
        return out
    low, high = interval_bounds(x[None, :], method=method, level=level, resamples=resamples, seed=seed)
    out.update(low=float(low[0]), high=float(high[0]), p=float(t_test_p(x[None, :])[0]))
    return out


def interval_bounds(
    samples: np.ndarray,
    *,
    method: str = METHOD,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) of the interval of every row's mean, for a (datasets, n) matrix: one call for many data
    sets (a coverage simulation runs thousands at once)."""
    x = np.asarray(samples, dtype=float)
    if method == "t":
        return t_bounds(x, level)
    means = bootstrap_matrix(x, resamples=resamples, seed=seed)
    tail = (1 - level) / 2
    if method == "percentile":
        q = np.broadcast_to(np.array([tail, 1 - tail]), (len(x), 2))
    else:
        q = _bca_levels(x, means, tail)
    bounds = _row_quantiles(np.sort(means, axis=1), q)
    return bounds[:, 0], bounds[:, 1]


def t_bounds(samples: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Student-t interval of every row's mean: mean +- t_{n-1, (1+level)/2} * s / sqrt(n)."""
    from scipy.stats import t as student

    x = np.asarray(samples, dtype=float)
    n = x.shape[1]
    mean, half = x.mean(axis=1), student.ppf((1 + level) / 2, n - 1) * x.std(axis=1, ddof=1) / np.sqrt(n)
    return mean - half, mean + half


def t_test_p(samples: np.ndarray) -> np.ndarray:
    """Two-sided p of the one-sample t-test "the mean is 0", per row (a constant row: 0 unless it is 0)."""
    from scipy.stats import t as student

    x = np.asarray(samples, dtype=float)
    n = x.shape[1]
    mean, se = x.mean(axis=1), x.std(axis=1, ddof=1) / np.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.where(se > 0, np.abs(mean) / np.where(se > 0, se, 1), np.where(mean == 0, 0.0, np.inf))
    return 2 * student.sf(stat, n - 1)


def bootstrap_matrix(samples: np.ndarray, *, resamples: int = RESAMPLES, seed: int = RNG_SEED) -> np.ndarray:
    """The means of `resamples` resamples (with replacement, same size) of every row of `samples`: one draw
    of (resamples, n) indices by `numpy.random.default_rng(seed)`, shared by the rows, as a weight matrix
    (how often each index was drawn, over n), so that all rows' resample means are one matrix product."""
    x = np.asarray(samples, dtype=float)
    n = x.shape[1]
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    weights = np.zeros((resamples, n))
    np.add.at(weights, (np.arange(resamples)[:, None], rows), 1.0 / n)
    return x @ weights.T


def bootstrap_means(
    values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = RNG_SEED
) -> np.ndarray:
    """The means of `resamples` resamples of `values` (`bootstrap_matrix` of one row)."""
    return bootstrap_matrix(np.asarray(values, dtype=float)[None, :], resamples=resamples, seed=seed)[0]


def bootstrap_interval(
    values: Sequence[float],
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> dict[str, Any]:
    """The percentile-bootstrap interval (`interval(..., method="percentile")`), for results made with it."""
    return interval(values, method="percentile", level=level, resamples=resamples, seed=seed)


def paired_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    method: str = METHOD,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RNG_SEED,
) -> dict[str, Any]:
    """The interval of the mean difference a - b over paired seeds (a[i] and b[i] share seed i), as
    `interval` of the differences, with the differences themselves under "differences"."""
    if len(a) != len(b):
        raise KnowpackError(f"a paired comparison needs as many values on each side ({len(a)} vs {len(b)})")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    differences = [float(x) - float(y) for x, y in pairs]
    out = interval(differences, method=method, level=level, resamples=resamples, seed=seed)
    out["differences"] = differences
    return out


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of a family of p-values (None stays None and is not counted): the k-th
    smallest of m becomes max over j <= k of min(1, (m - j + 1) * p_(j))."""
    known = [(p, i) for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    running, m = 0.0, len(known)
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def holm_verdicts(tests: Sequence[tuple[dict[str, Any], str]], min_seeds: int = MIN_SEEDS) -> list[str]:
    """The verdicts of a table's primary tests, (interval, direction) each, Holm-corrected together: each
    interval gains `p_holm` (its adjusted p) and `verdict`. Returns the verdicts in order."""
    adjusted = holm([ci.get("p") for ci, _ in tests])
    for (ci, direction), p in zip(tests, adjusted, strict=True):
        ci["p_holm"] = p
        ci["verdict"] = verdict(ci, direction, min_seeds)
    return [ci["verdict"] for ci, _ in tests]


def verdict(interval: dict[str, Any], direction: str, min_seeds: int = MIN_SEEDS) -> str:
    """ "reproduced" when, over at least `min_seeds` seeds (the interval's `n`, where it has one), the effect
    is shown on the claimed side of zero (`direction` greater or less): by its Holm-adjusted p below
    1 - level with the mean on that side when it has one (`p_holm`), else by the interval lying wholly on that
    side (greater: low > 0; less: high < 0); "too few seeds" when shown over fewer; else "not shown" (also
    with no interval: fewer than 2 seeds)."""
    if direction not in DIRECTIONS:
        raise KnowpackError(f"unknown direction {direction!r}; expected greater or less")
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return "not shown"
    if interval.get("p_holm") is not None:
        mean, alpha = interval.get("mean") or 0.0, 1 - interval.get("level", LEVEL)
        shown = interval["p_holm"] < alpha and (mean > 0 if direction == "greater" else mean < 0)
    else:
        shown = low > 0 if direction == "greater" else high < 0
    if shown and interval.get("n") is not None and interval["n"] < min_seeds:
        return "too few seeds"
    return "reproduced" if shown else "not shown"


def method_note(level: float = LEVEL, method: str = METHOD) -> str:
    """The sentence a table or report prints under its intervals: which interval, over what."""
    return f"{level:.0%} {METHODS[method]} intervals over seeds"


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


def _bca_levels(x: np.ndarray, means: np.ndarray, tail: float) -> np.ndarray:
    """BCa's two quantile levels per row: Phi(z0 + (z0 + z) / (1 - a (z0 + z))) at z = Phi^-1(tail) and
    Phi^-1(1 - tail); z0 from the share of resample means below the row's mean (those equal to it, up to
    rounding, are not below: the rounding of a matrix product must not decide), a from its jackknife."""
    from scipy.stats import norm

    theta = x.mean(axis=1, keepdims=True)
    tie = 1e-12 * np.maximum(1.0, np.abs(theta))  # a resample mean equal to the mean is not below it
    below = np.clip(
        (means < theta - tie).mean(axis=1), 1 / (means.shape[1] + 1), 1 - 1 / (means.shape[1] + 1)
    )
    z0 = norm.ppf(below)[:, None]
    n = x.shape[1]
    jack = (x.sum(axis=1, keepdims=True) - x) / (n - 1)  # leave-one-out means
    d = jack.mean(axis=1, keepdims=True) - jack
    num, den = (d**3).sum(axis=1), 6 * (d**2).sum(axis=1) ** 1.5
    a = np.divide(num, den, out=np.zeros_like(num), where=den > 0)[:, None]
    z = norm.ppf(np.array([tail, 1 - tail]))[None, :]
    levels = norm.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))
    constant = np.ptp(means, axis=1) == 0  # no spread: no bias to correct
    levels[constant] = [tail, 1 - tail]
    return levels


def _row_quantiles(ordered: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per row of sorted values, the quantiles at levels `q` (rows x k), by linear interpolation between
    order statistics at rank q * (R - 1), as numpy's default percentile."""
    rank = q * (ordered.shape[1] - 1)
    lo = np.floor(rank).astype(int)
    hi = np.minimum(lo + 1, ordered.shape[1] - 1)
    rows = np.arange(len(ordered))[:, None]
    below, above = ordered[rows, lo], ordered[rows, hi]
    return below + (above - below) * (rank - lo)


def _finite(values: Sequence[float | None]) -> np.ndarray:
    """The values that are numbers (None and NaN left out: a seed with no value is no evidence)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    return x[np.isfinite(x)]
