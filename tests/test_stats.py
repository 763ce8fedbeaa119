"""`knowpack.evaluate.stats` against exact values: hand-checkable intervals (a constant, two seeds whose
resample means can only be 0, 1/2 or 1), a slow reference bootstrap written out loop by loop with its own
percentile, paired differences, the verdict's rule and the interpolation at matched reliability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from knowpack.errors import KnowpackError
from knowpack.evaluate import stats


def reference_interval(values, level=0.95, resamples=2000, seed=0):
    """The percentile bootstrap written out: the same index draws, a mean per resample by hand, and the
    percentile by its definition (linear interpolation between order statistics at rank p/100 * (R - 1))."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(values), size=(resamples, len(values)))
    means = sorted(sum(values[i] for i in row) / len(row) for row in rows.tolist())

    def percentile(p):
        rank = p / 100 * (len(means) - 1)
        lo = math.floor(rank)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (means[hi] - means[lo]) * (rank - lo)

    tail = (1 - level) / 2 * 100
    return percentile(tail), percentile(100 - tail)


def test_a_constant_has_a_zero_width_interval_and_one_seed_none():
    ci = stats.bootstrap_interval([0.7, 0.7, 0.7])
    assert (ci["mean"], ci["low"], ci["high"], ci["n"]) == (pytest.approx(0.7),) * 3 + (3,)
    one = stats.bootstrap_interval([0.7])
    assert one["mean"] == 0.7 and one["low"] is None and one["high"] is None
    assert stats.bootstrap_interval([None, float("nan")])["mean"] is None


def test_two_seeds_resample_to_means_0_half_or_1():
    # P(mean = 0) = P(mean = 1) = 1/4 >> 2.5%: the 2.5th and 97.5th percentiles are exactly 0 and 1
    ci = stats.bootstrap_interval([0.0, 1.0])
    assert (ci["mean"], ci["low"], ci["high"]) == (0.5, 0.0, 1.0)
    means = stats.bootstrap_means([0.0, 1.0], resamples=4000)
    assert set(np.unique(means)) == {0.0, 0.5, 1.0}
    assert np.mean(means == 0.5) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("values", [[0.62, 0.58, 0.66, 0.60, 0.64], [1.0, 0.2, 0.5, 0.9], [3.0, -1.0, 2.0]])
def test_the_interval_matches_a_slow_reference(values):
    ci = stats.bootstrap_interval(values, resamples=2000, seed=7)
    low, high = reference_interval(values, resamples=2000, seed=7)
    assert ci["low"] == pytest.approx(low, abs=1e-12) and ci["high"] == pytest.approx(high, abs=1e-12)
    assert ci["mean"] == pytest.approx(sum(values) / len(values))
    assert stats.bootstrap_interval(values, resamples=2000, seed=7) == ci  # a fixed RNG seed: the same


def test_paired_interval_is_over_the_differences_per_seed():
    a, b = [0.9, 0.8, 0.85, 0.75, 0.95], [0.7, 0.6, 0.65, 0.55, 0.75]  # every seed: a - b = 0.2
    diff = stats.paired_interval(a, b)
    assert diff["differences"] == pytest.approx([0.2] * 5)
    assert diff["low"] == pytest.approx(0.2) and diff["high"] == pytest.approx(0.2)
    assert stats.verdict(diff, "greater") == "reproduced" and stats.verdict(diff, "less") == "not shown"
    three = stats.paired_interval(a[:3], b[:3])  # the same effect over 3 seeds: too few to call it
    assert stats.verdict(three, "greater") == "too few seeds" and stats.MIN_SEEDS == 5
    # unpaired, these two groups overlap; paired, the differences are what count
    a, b = [0.5, 0.9, 0.7, 0.6], [0.45, 0.85, 0.66, 0.52]
    diff = stats.paired_interval(a, b)
    low, high = reference_interval([x - y for x, y in zip(a, b, strict=True)], resamples=10_000)
    assert (diff["low"], diff["high"]) == (pytest.approx(low), pytest.approx(high)) and diff["low"] > 0
    with pytest.raises(KnowpackError, match="as many values"):
        stats.paired_interval([1.0], [1.0, 2.0])


def test_verdict_needs_the_interval_to_exclude_zero_on_the_claimed_side():
    assert stats.verdict({"low": 0.01, "high": 0.2}, "greater") == "reproduced"
    assert stats.verdict({"low": -0.01, "high": 0.2}, "greater") == "not shown"
    assert stats.verdict({"low": 0.0, "high": 0.2}, "greater") == "not shown"  # zero is not excluded
    assert stats.verdict({"low": -0.3, "high": -0.1}, "less") == "reproduced"
    assert stats.verdict({"low": -0.3, "high": -0.1}, "greater") == "not shown"
    assert stats.verdict({"low": None, "high": None}, "greater") == "not shown"
    with pytest.raises(KnowpackError, match="unknown direction"):
        stats.verdict({"low": 1, "high": 2}, "up")


def test_interpolate_and_format():
    assert stats.interpolate([0.2, 0.6, 1.0], [0.9, 0.7, 0.3], 0.8) == pytest.approx(0.5)
    assert stats.interpolate([0.6, 0.2], [0.7, 0.9], 0.4) == pytest.approx(0.8)  # unsorted input
    assert stats.interpolate([0.5, 0.5, 1.0], [0.2, 0.4, 0.5], 0.5) == pytest.approx(0.3)  # ties averaged
    assert stats.interpolate([0.2, 0.6], [0.9, 0.7], 0.7) is None  # no extrapolation
    assert stats.format_interval({"mean": 0.62, "low": 0.58, "high": 0.66}) == "0.620 [0.580, 0.660]"
    assert stats.format_interval({"mean": 0.62, "low": None, "n": 1}) == "0.620 (1 seed)"
    assert stats.format_interval({"mean": None}) == "–"


def test_pass_rate_interval_is_wilsons():
    from knowpack.evaluate.stats import pass_rate_interval

    # Wilson score intervals at 95%, as tabulated (e.g. Newcombe 1998, table I): 4/5, 5/5, 0/5
    for passed, total, low, high in [(4, 5, 0.3755, 0.9638), (5, 5, 0.5655, 1.0), (0, 5, 0.0, 0.4345)]:
        got = pass_rate_interval(passed, total)
        assert got["rate"] == passed / total
        assert (round(got["low"], 4), round(got["high"], 4)) == (low, high)
    assert pass_rate_interval(0, 0)["rate"] is None
