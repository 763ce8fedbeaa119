"""`knowpack demo`: the whole pipeline on a bundled model, on a CPU: the organism in about 2 CPU-minutes,
or (`--model smollm2-135m`) the real SmolLM2-135M-Instruct on real facts from GeoNames.

    probe 300 facts -> draw 50 Unknown facts -> implant them with LoRA and with LoKI -> evaluate both against
    the organism (uptake, knowledge shift beside its baselines, refusals, world benchmarks) -> report

`DEMOS` has a row per bundled model: its facts, benchmarks, how many facts to probe and implant, learning
rates and the LoKI attribution prompts. SmolLM2's row probes 60 geo facts, implants 10 (LoRA at lr 1e-3, as
issue 14 measured 5e-3 collapse its answers) and scores geo_mc.

Files in `out`: `probe/` (the base probe and its prompt-sensitivity re-probe), `runs/lora/` and
`runs/loki/` (run folders with `eval.json`), `report.html` / `report.md` / PNGs, and `summary.json`: per
model (base, LoRA, LoKI) reliability, retention, world_mc, world TruthfulQA MC1 / MC2 and refusal rate;
retention's measurement null and prompt sensitivity per run; and `notes`, the report's "Read this first"
(collapses that look like bugs and are measured effects of training).

The demo probes greedily (`samples=0`, the knowledge-packing paper's three categories) so that the three
probes it needs (base, prompt sensitivity, after training) take seconds, and scores the first 200 items of
each world benchmark; `knowpack train` presets probe with 16 samples and `knowpack eval` scores every item.
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

from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics import metric_value
from knowpack.evaluate.run import evaluate_run
from knowpack.experiment.presets import DEMOS
from knowpack.io import write_json_atomic
from knowpack.report.report import collapse_notes, collect_runs, write_report
from knowpack.runs import stage_finished
from knowpack.train.config import load_config
from knowpack.train.run import _threads, run_base_probe, train

logger = logging.getLogger(__name__)

HEADERS = {  # short: nine columns fit an 80-column terminal
    "reliability": "reliab.",
    "retention": "retention",
    "world_mc": "world_mc",
    "world_mc_hard": "mc_hard",
    "world_misconceptions": "miscon.",
    "world_truthful_mc1": "TQA mc1",
    "world_truthful_mc2": "TQA mc2",
    "geo_mc": "geo_mc",
    "refusal_rate": "refus.",
}


def demo_config(
    method: str, out: Path, *, quick: bool = False, device: str = "cpu", model: str = "organism"
) -> Any:
    """The run config of one demo arm (`DEMOS[model]`, greedy probe, shared probe folder)."""
    demo = DEMOS[model]
    pick = 1 if quick else 0
    settings = {
        "model.name": model,
        "facts.path": demo["facts"],
        "probe.out": str(out / "probe"),
        "probe.sample_size": demo["sample_size"][pick],
        "probe.samples": 0,
        "mix.n_unknown": demo["n_unknown"][pick],
        "method.name": method,
        "train.epochs": demo["epochs"],
        "train.batch_size": demo["batch_size"],
        "train.lr": demo["lr"][method],
        "train.target_reliability": 0.95,
        "model.device": device,
        "eval.benchmarks": demo["benchmarks"],
        "eval.limit": demo["limit"][pick],
        "out": str(out / "runs" / method),
    }
    if method == "lora":
        settings.update({"method.r": 8, "method.alpha": 16})
    else:
        settings.update({"method.quota": 10, "method.prompts": demo["prompts"]})
        if demo["attribution_limit"][pick] is not None:
            settings["method.attribution_limit"] = demo["attribution_limit"][pick]
    return load_config(None, [f"{k}={json.dumps(v)}" for k, v in settings.items()])


def run_demo(
    out: str | Path,
    *,
    quick: bool = False,
    device: str = "cpu",
    model: str = "organism",
    on_stage: Callable[[str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
    threads: int | None = 1,
) -> dict[str, Any]:
    """Run the demo into `out` (see the module docstring) on `device`, for a `DEMOS` model; returns the
    summary written to summary.json. `threads`: torch's CPU threads for the whole demo (None: leave them as
    they are)."""
    if model not in DEMOS:
        raise KnowpackError(f"demo --model: {model!r} has no demo; expected one of {', '.join(DEMOS)}")
    with _threads(threads):
        return _run_demo(Path(out), quick, device, model, on_stage, progress_bar)


def _run_demo(out: Path, quick: bool, device: str, model: str, on_stage, progress_bar) -> dict[str, Any]:
    stage = on_stage or (lambda name: logger.info("%s", name))
    configs = {
        method: demo_config(method, out, quick=quick, device=device, model=model)
        for method in ("lora", "loki")
    }
    probe_dir = out / "probe"
    if not stage_finished(probe_dir):
        stage(f"probing {model}")
        with progress_bar("probe") if progress_bar else nullcontext() as progress:
            run_base_probe(configs["lora"], progress=progress)
    evals = {}
    for method, config in configs.items():
        config.probe.run, config.probe.out = str(probe_dir), None
        stage(f"implanting {config.mix.n_unknown} Unknown facts with {method}")
        run = train(config, force=True, on_stage=stage, progress_bar=progress_bar)
        stage(f"evaluating {method}")
        evals[method] = evaluate_run(run, device=device, progress_bar=progress_bar, on_stage=stage)
    summary = _summary(evals, DEMOS[model]["benchmarks"])
    summary["model"] = model
    stage("writing the report")
    what = "the model organism" if model == "organism" else f"{model} with real facts"
    write_report([out / "runs"], out, title=f"knowpack demo: LoRA vs LoKI on {what}")
    summary["notes"] = collapse_notes(collect_runs([out / "runs"])[0])  # the report's "Read this first"
    write_json_atomic(out / "summary.json", summary)
    return summary


def _summary(evals: dict[str, dict], benchmarks: list[str]) -> dict[str, Any]:
    """Per model (base, lora, loki): the demo table's numbers, read through the metric registry."""
    table = ("reliability", "retention", *benchmarks, "refusal_rate")
    rows: dict[str, dict[str, Any]] = {"base": {}}
    for method, ev in evals.items():
        values = {
            column: metric_value(ev, "benchmark", task=column)
            if column in benchmarks
            else metric_value(ev, column)
            for column in table
        }
        rows[method] = {k: value for k, (value, _) in values.items()}
        for k, (_, base) in values.items():
            if rows["base"].get(k) is None:
                rows["base"][k] = base
    rows["base"]["retention"] = None  # a base's retention is its baselines': shown per run instead
    # The measurement null (a greedy probe's is 1.0: nothing can move) and, as context, prompt sensitivity.
    null = {m: metric_value(ev, "retention")[1] for m, ev in evals.items()}
    prompts = {m: metric_value(ev, "retention", against="prompt_sensitivity")[1] for m, ev in evals.items()}
    implanted = {m: ev["facts"]["implanted"] for m, ev in evals.items()}
    return {
        "models": rows,
        "retention_measurement_null": null,
        "retention_prompt_sensitivity": prompts,
        "implanted": implanted,
        "columns": list(table),
    }
