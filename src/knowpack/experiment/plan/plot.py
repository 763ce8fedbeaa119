"""The plan's figure: each method's uptake-damage front from plan.json (reliability against the first
budget's damage measure, 95% intervals over seeds), the budget and the target as lines, the recommendation
marked. Reads plan.json only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from knowpack.io import write_bytes_atomic

COLOURS = {"lora": "tab:blue", "loki": "tab:orange", "full": "tab:green"}


def plot_plan(result: dict[str, Any], path: str | Path) -> Path:
    """Draw plan.json's fronts into `path` (PNG, written atomically); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (damage, limit), target = next(iter(result["budget"].items())), result["target"]["reliability"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for method, points in result["frontier"].items():
        points = [
            p for p in points if p["damage"]["mean"] is not None and p["reliability"]["mean"] is not None
        ]
        if not points:
            continue
        xs = [p["damage"]["mean"] for p in points]
        ys = [p["reliability"]["mean"] for p in points]
        ax.errorbar(
            xs, ys, xerr=_half(p["damage"] for p in points), yerr=_half(p["reliability"] for p in points),
            fmt="o", color=COLOURS.get(method), label=method, alpha=0.8, capsize=2,
        )  # fmt: skip
        for x, y, p in zip(xs, ys, points, strict=True):
            ax.annotate(f"n={p['n_facts']}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(limit, color="grey", linestyle="--", label=f"budget: {damage} <= {limit:g}")
    ax.axhline(target, color="grey", linestyle=":", label=f"target reliability {target:g}")
    best = result.get("recommendation")
    if best is not None:
        label = f"recommended: {best['method']}, n={best['n_facts']}"
        ax.plot(best[damage]["mean"], best["reliability"]["mean"], marker="*", markersize=18, color="gold",
                markeredgecolor="black", linestyle="none", label=label)  # fmt: skip
    ax.set_xlabel(f"{damage} (mean over seeds; lower is less damage)")
    ax.set_ylabel("reliability on the implanted facts (mean over seeds)")
    ax.set_title("Each trial: reliability against damage (n = facts implanted)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside: covers no point
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())


def _half(intervals) -> list[list[float]]:
    """Error-bar half widths (0 where a seed alone gave no interval)."""
    low, high = [], []
    for interval in intervals:
        mean = interval["mean"]
        low.append(mean - interval["low"] if interval.get("low") is not None else 0.0)
        high.append(interval["high"] - mean if interval.get("high") is not None else 0.0)
    return [low, high]
