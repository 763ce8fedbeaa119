"""capacity.png: every point's numbers against n, with the targets and budget limits (reads capacity.json's
content; never runs a model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from knowpack.experiment.capacity.config import TARGETS, axis_label
from knowpack.io import write_bytes_atomic


def plot_capacity(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per target and budget line: every run's measured value vs n (log x), the seeds' mean, the
    limit, and the answer marked; written atomically (PNG)."""
    import io

    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg by default
    from matplotlib.ticker import FuncFormatter

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
        ax.set_ylabel(axis_label(check))
        # the first panel explains every mark; the others name only their limit
        ax.legend(handles=None if ax is axes[0] else [limit], fontsize=7, loc="best")
    axes[-1].set_xscale("log", base=2)
    axes[-1].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 16, not 2^4
    axes[-1].set_xlabel("n (new facts)")
    fig.suptitle(f"capacity: {result['answer']} ({result['rule']} of seeds {result['seeds']})", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return write_bytes_atomic(path, buffer.getvalue())


def _limit_label(check: dict) -> str:
    sign = ">=" if check["kind"] == "at_least" else "<="
    return f"{'target' if check['name'] in TARGETS else 'budget'} {sign} {check['limit']:g}"
