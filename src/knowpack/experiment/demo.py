"""`knowpack demo`: the whole pipeline on the bundled organism, on a CPU, in about 2 CPU-minutes.

    probe 300 facts -> draw 50 Unknown facts -> implant them with LoRA and with LoKI -> evaluate both against
    the organism (uptake, knowledge shift beside the noise floor, refusals, world benchmarks) -> report

Files in `out`: `probe/` (the organism's probe and its noise floor), `runs/lora/` and `runs/loki/` (run
folders with `eval.json`), `report.html` / `report.md` / PNGs, and `summary.json`: per model (base, LoRA,
LoKI) reliability, retention, world_mc, world TruthfulQA MC1 / MC2 and refusal rate, and `notes`, the
report's "Read this first" (collapses that look like bugs and are measured effects of training).

The demo probes greedily (`samples=0`, the knowledge-packing paper's three categories) so that the three
probes it needs (base, noise floor, after training) take seconds, and scores the first 200 items of each world
benchmark; `knowpack train` presets probe with 16 samples and `knowpack eval` scores every item.
`quick=True` is the shortened demo the tests run.

It runs on one CPU thread unless told otherwise: on a shared 2-core machine two OpenMP threads spin-wait on
each other (a 100-fact probe: 20 s with one thread, 76 s with two, load average ~10), which is how a demo on
torch's default threads took 12 minutes under load. Measured with `knowpack --threads 1 demo` on 2 shared
cores: 2 min 34 s wall, 2 min 3 s of CPU at load average 2-4; 4 min 53 s wall, 2 min 9 s of CPU at 6.6-8.6;
`--quick`: 2 min 19 s wall, 1 CPU-minute at ~7.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from knowpack.io import write_json_atomic
from knowpack.runs import stage_finished

logger = logging.getLogger(__name__)

BENCHMARKS = ["world_mc", "world_truthful_mc1", "world_truthful_mc2"]
COLUMNS = ("reliability", "retention", "world_mc", "world_truthful_mc1", "world_truthful_mc2", "refusal_rate")
"""The demo table: metrics of `knowpack.evaluate.metrics.METRICS` and the benchmarks' accuracy."""
HEADERS = dict(
    zip(COLUMNS, ("reliab.", "retention", "world_mc", "TQA-w mc1", "TQA-w mc2", "refusals"), strict=True)
)


def demo_config(method: str, out: Path, *, quick: bool = False, device: str = "cpu") -> Any:
    """The run config of one demo arm (the organism presets, greedy probe, shared probe folder)."""
    from knowpack.train.config import load_config

    settings = {
        "probe.out": str(out / "probe"),
        "probe.pool": 80 if quick else 300,
        "probe.samples": 0,
        "mix.n_unknown": 10 if quick else 50,
        "method.name": method,
        "train.epochs": 30,
        "train.lr": 5e-3 if method == "lora" else 1e-2,
        "train.target_reliability": 0.95,
        "train.device": device,
        "train.threads": 1,
        "eval.benchmarks": BENCHMARKS,
        "eval.limit": 40 if quick else 200,  # items per benchmark: the benchmarks are most of the demo's time
        "out": str(out / "runs" / method),
    }
    if method == "lora":
        settings.update({"method.r": 8, "method.alpha": 16})
    else:
        settings.update({"method.quota": 10, "method.prompts": "world_mc"})
        if quick:
            settings["method.attribution_limit"] = 40
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in settings.items()])


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    device: str = "cpu",
    on_stage: Callable[[str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Run the demo into `out` (see the module docstring) on `device`; returns the summary written to
    summary.json. `threads`: torch's CPU threads for the whole demo (None: leave them as they are)."""
    from knowpack.train.run import _threads

    with _threads(threads):
        return _run_demo(Path(out), quick, device, on_stage, progress_bar)


def _run_demo(out: Path, quick: bool, device: str, on_stage, progress_bar) -> dict[str, Any]:
    from knowpack.evaluate import evaluate_run
    from knowpack.report import collect_runs, write_report
    from knowpack.report.report import collapse_notes
    from knowpack.train import train
    from knowpack.train.run import run_base_probe

    stage = on_stage or (lambda name: logger.info("%s", name))
    configs = {method: demo_config(method, out, quick=quick, device=device) for method in ("lora", "loki")}
    probe_dir = out / "probe"
    if not stage_finished(probe_dir):
        stage("probing the organism")
        with progress_bar("probe") if progress_bar else nullcontext() as progress:
            run_base_probe(configs["lora"], progress=progress)
    evals = {}
    for method, config in configs.items():
        config.probe.run, config.probe.out = str(probe_dir), None
        stage(f"implanting {config.mix.n_unknown} Unknown facts with {method}")
        run = train(config, force=True, on_stage=stage, progress_bar=progress_bar)
        stage(f"evaluating {method}")
        evals[method] = evaluate_run(run, device=device, progress_bar=progress_bar, on_stage=stage)
    summary = _summary(evals)
    stage("writing the report")
    write_report([out / "runs"], out, title="knowpack demo: LoRA vs LoKI on the model organism")
    summary["notes"] = collapse_notes(collect_runs([out / "runs"])[0])  # the report's "Read this first"
    write_json_atomic(out / "summary.json", summary)
    return summary


def _summary(evals: dict[str, dict]) -> dict[str, Any]:
    """Per model (base, lora, loki): the demo table's numbers, read through the metric registry."""
    from knowpack.evaluate.metrics import metric_value

    rows: dict[str, dict[str, Any]] = {"base": {}}
    for method, ev in evals.items():
        values = {
            column: metric_value(ev, "benchmark", task=column)
            if column in BENCHMARKS
            else metric_value(ev, column)
            for column in COLUMNS
        }
        rows[method] = {k: value for k, (value, _) in values.items()}
        for k, (_, base) in values.items():
            if rows["base"].get(k) is None:
                rows["base"][k] = base
    rows["base"]["retention"] = None  # the base's "retention" is the noise floor: shown per run instead
    noise = {m: metric_value(ev, "retention")[1] for m, ev in evals.items()}
    implanted = {m: ev["facts"]["implanted"] for m, ev in evals.items()}
    return {"models": rows, "noise_floor_retention": noise, "implanted": implanted, "columns": list(COLUMNS)}
