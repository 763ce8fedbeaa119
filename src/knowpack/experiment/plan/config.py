"""A plan's settings (`knowpack plan` options or a `plan:` YAML, one grammar), checked before any work, and
the run config of each of its trials (`trial_config`).

A plan answers: which method, settings and number of the user's facts reach the target reliability within
every damage budget? Its search space, per trial:

| parameter | values | what it sets |
|---|---|---|
| method | `methods` (lora, loki, full) | `method.name` |
| lr_scale | log-uniform in `lr_range` | `train.lr`: the model's base lr for the method (`MODELS`) x this |
| lora_r | 1, 2, 4, 8, 16 | `method.r` (LoRA only; alpha = 2 r) |
| loki_quota | 5, 10, 20, 30 | `method.quota` (LoKI only, % of down_proj rows) |
| add | none, highly_known, paraphrase (where the facts have paraphrases) | `mix.add`, with `mix.k` 1 |
| n_facts | 1 .. the user's Unknown facts, log scale | `mix.n_unknown` |

`grid:` fixes the trials instead (every combination of the listed values, in a seeded order).
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.config import build, parse_override, ranged, read_yaml
from knowpack.errors import KnowpackError
from knowpack.experiment.capacity.config import Check, budget_checks, check_point_tasks, target_checks
from knowpack.experiment.cluster import BACKENDS
from knowpack.experiment.presets import DEMOS
from knowpack.experiment.sweep import yaml_value
from knowpack.facts import load_facts
from knowpack.train.config import RunConfig, load_config

METHODS = ("lora", "loki", "full")
FACTS = Path("facts") / "facts.jsonl"
"""The plan's facts file, in the plan folder: the user's facts and the sample of reference facts (a folder of
its own, so that a Ray task is shipped it like any shared folder)."""
LORA_RANKS = (1, 2, 4, 8, 16)
LOKI_QUOTAS = (5, 10, 20, 30)
ADDS = ("none", "highly_known", "paraphrase")

GENERIC = {"facts": None, "prompts": "mmlu", "attribution_limit": 200, "epochs": 10, "batch_size": 4}
"""Settings for a model without a row in `knowpack.experiment.presets.DEMOS` (a Hub id or a local folder): the
reference facts must be given, and LoKI attributes on MMLU."""
BASE_LR = {"lora": 1e-3, "loki": 1e-3, "full": 2e-5}
"""Each method's base learning rate for such a model (a trial scales it by `lr_scale`)."""


@dataclass
class PlanConfig:
    """The settings of a plan (each a `knowpack plan` option of the same name, or a key of a plan YAML)."""

    model: str = "organism"
    """Hub id, local folder, `organism` or `smollm2-135m`."""
    facts: str | None = None
    """The facts to implant: a facts file (JSONL, CSV, ...)."""
    reference: str | None = None
    """The facts whose loss is damage (what the model knew); default: the bundled model's own facts
    (`organism`, `geo`), required for any other model."""
    reference_limit: int = ranged(200, ge=1)
    """How many reference facts are probed (a seeded sample) and re-probed after each trial."""
    budget: dict[str, float] = field(default_factory=lambda: {"retention_drop": 0.05})
    """Damage budget, metric -> limit: a metric registry name (`retention_drop`, `refusal_rate`, ...) or an
    lm-eval task (its drop), as for `knowpack capacity`."""
    target: float = ranged(0.95, gt=0, le=1)
    """Reliability the implanted facts must reach (mean over seeds)."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Methods to search: lora, loki, full."""
    trials: int = ranged(8, ge=1)
    """Trials (each a recipe, run once per seed)."""
    seeds: int = ranged(2, ge=1)
    """Seeds per trial (seed 0, 1, ...: each draws facts, order, initialisation, dropout anew)."""
    lr_range: list[float] = field(default_factory=lambda: [0.3, 3.0])
    """lr_scale's range: a trial's lr is the method's base lr times a log-uniform draw from it."""
    grid: dict[str, list[Any]] | None = None
    """Fixed trials instead of a search: lists of values for method, lr_scale, lora_r, loki_quota, add,
    n_facts (omitted ones: lr_scale 1, lora_r 8, loki_quota 10, add none, n_facts all)."""
    loki_prompts: str | None = None
    """LoKI's attribution prompts (a prompts file, `mmlu`, `world_mc`, `geo_mc`); default: the bundled
    model's own benchmark, MMLU for any other model."""
    sampler_seed: int = ranged(0, ge=0)
    """Seed of the search (Optuna's sampler): the same seed, the same trials."""
    benchmarks: list[str] = field(default_factory=list)
    """lm-eval tasks every trial is evaluated on besides the budget's."""
    limit: int | None = ranged(None, ge=1)
    """Benchmark items (null: all)."""
    backend: str = "local"
    """local: trials one after another in this process | ray: each trial's seeds as Ray tasks at once."""
    address: str | None = None
    """With backend ray: the cluster's address (default RAY_ADDRESS, else a local Ray instance)."""
    set: dict[str, Any] = field(default_factory=dict)
    """`section.key: value` for every trial's run config (e.g. train.epochs: 5)."""
    out: str | None = None
    """The plan folder: facts, probe, study (SQLite), trials, plan.json, recommended.yaml."""


@dataclass
class Plan:
    """A loaded plan: its settings and what they resolve to."""

    config: PlanConfig
    out: Path
    facts: Path
    reference: str
    checks: list[Check]
    """The reliability target first, then the budget (capacity's `Check`)."""
    tasks: list[str]
    row: dict[str, Any]
    """The model's row (`DEMOS` or `GENERIC`)."""
    paraphrases: bool = False
    """Whether the user's facts have paraphrases (the `paraphrase` mix is searched only then)."""
    fact_ids: tuple[str, ...] = ()
    """The user's facts' ids, in the file's order (read once, when the plan is loaded)."""


def load_plan(path: str | os.PathLike | None = None, overrides: list[str] = (), **options: Any) -> Plan:
    """A plan from a YAML file (`path`), `key=value` overrides and keyword options (the CLI's), checked
    before any model is loaded: one-line errors naming the file and line, or the option."""
    data: dict[str, Any] = {}
    lines: dict[tuple, Any] = {}
    where = "plan"
    if path is not None:
        where = str(path)
        data, lines = read_yaml(path, "plan")
        data = data.get("plan", data) if set(data) == {"plan"} else data
    for item in overrides:  # `key=value`, `set.section.key=value`, `budget.NAME=X`, `grid.NAME=[...]`
        key, value = parse_override(item)
        if key[0] in ("set", "budget", "grid") and len(key) > 1:
            if not isinstance(data.get(key[0]), dict):
                data[key[0]] = {}
            data[key[0]][".".join(key[1:])] = value
        else:
            data[".".join(key)] = value
        lines[key[:1]] = "command line"
    for name, value in options.items():
        if value is not None:
            data[name] = value
            lines[(name,)] = f"--{name.replace('_', '-')}"
    config = build(PlanConfig, data, where=where, lines=lines, choices={"backend": BACKENDS})
    return _resolve(config, where)


def _resolve(config: PlanConfig, where: str) -> Plan:
    if not config.facts:
        raise KnowpackError(f"{where}: no facts to implant; give --facts FILE")
    if not config.out:
        raise KnowpackError(f"{where}: no plan folder; give --out DIR")
    bad = [m for m in config.methods if m not in METHODS]
    if bad or not config.methods:
        raise KnowpackError(f"{where}: methods: {bad or '[]'} not among {', '.join(METHODS)}")
    low, high = (config.lr_range + [0, 0])[:2]
    if len(config.lr_range) != 2 or not 0 < low <= high:
        raise KnowpackError(f"{where}: lr_range must be [low, high] with 0 < low <= high, e.g. [0.3, 3]")
    row = DEMOS.get(config.model, GENERIC)
    reference = config.reference or row["facts"]
    if reference is None:
        raise KnowpackError(
            f"{where}: --reference is required for model {config.model!r}: the facts whose loss is damage"
        )
    checks = target_checks({"reliability": config.target}, Path(where), lambda *k: where)
    checks += budget_checks(config.budget, Path(where), lambda *k: f"{where}: budget")
    if len(checks) < 2:
        raise KnowpackError(f"{where}: no budget; give e.g. --budget retention_drop<=0.05")
    tasks = list(
        dict.fromkeys(
            config.benchmarks + [c.path[2] for c in checks if c.path[:2] == ("benchmarks", "tasks")]
        )
    )
    if tasks:
        check_point_tasks(tasks, None, Path(where))
    facts = load_facts(config.facts)  # one-line errors with file:line
    if not facts:
        raise KnowpackError(f"{config.facts}: no facts to implant")
    plan = Plan(
        config=config,
        out=Path(config.out),
        facts=Path(config.facts).resolve(),
        reference=reference,
        checks=checks,
        tasks=tasks,
        row=row,
        paraphrases=all(f.paraphrases for f in facts),
        fact_ids=tuple(f.id for f in facts),
    )
    if config.grid is not None:
        grid_trials(plan)  # a bad grid fails here
    trial_config(plan, default_params(plan, {}), seed=0, folder=plan.out / "check")  # a bad `set` fails here
    return plan


def default_params(plan: Plan, given: dict[str, Any], n_facts: int = 1) -> dict[str, Any]:
    """A trial's parameters: `given`, the rest at their defaults."""
    return {
        "method": plan.config.methods[0],
        "lr_scale": 1.0,
        "lora_r": 8,
        "loki_quota": 10,
        "add": "none",
        "n_facts": n_facts,
        **given,
    }


def grid_trials(plan: Plan, n_unknown: int | None = None) -> list[dict[str, Any]]:
    """The trials of `grid:`, every combination of its lists (n_facts "all": the `n_unknown` the user's
    facts have)."""
    grid = dict(plan.config.grid or {})
    known = set(default_params(plan, {}))
    for key, values in grid.items():
        if key not in known:
            raise KnowpackError(
                f"grid: unknown parameter {key!r}; expected one of {', '.join(sorted(known))}"
            )
        if not isinstance(values, list) or not values:
            raise KnowpackError(f"grid.{key}: expected a non-empty list")
    for method in grid.get("method", []):
        if method not in plan.config.methods:
            raise KnowpackError(f"grid.method: {method!r} is not among the plan's methods")
    keys = list(grid)
    trials = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = default_params(plan, dict(zip(keys, combo, strict=True)), n_facts=n_unknown or 1)
        if params["n_facts"] == "all":
            params["n_facts"] = n_unknown or 1
        trials.append(params)
    return trials


def trial_config(plan: Plan, params: dict[str, Any], *, seed: int, folder: Path) -> RunConfig:
    """The run config of one trial's seed: the model's row, the trial's parameters, the plan's `set`."""
    row, method = plan.row, params["method"]
    lr = row["lr"].get(method, BASE_LR[method]) if "lr" in row else BASE_LR[method]
    settings: dict[str, Any] = {
        "model.name": plan.config.model,
        "facts.path": str(plan.out / FACTS),
        "probe.samples": 0,
        "mix.n_unknown": params["n_facts"],
        "mix.add": params["add"],
        "mix.k": 0 if params["add"] == "none" else 1,
        "mix.seed": seed,
        "mix.draw_from": str(plan.facts),
        "method.name": method,
        "train.epochs": row["epochs"],
        "train.batch_size": row["batch_size"],
        "train.lr": lr * params["lr_scale"],
        "train.target_reliability": plan.config.target,
        "train.seed": seed,
        "train.threads": 1,
        "eval.benchmarks": plan.tasks,
        "eval.limit": plan.config.limit,
        "eval.noise_floor": False,
    }
    if method == "lora":
        settings.update({"method.r": params["lora_r"], "method.alpha": 2 * params["lora_r"]})
        settings["method.target_modules"] = ["mlp"]
    elif method == "loki":
        limit = row.get("attribution_limit")
        prompts = plan.config.loki_prompts or row["prompts"]
        settings.update({"method.quota": params["loki_quota"], "method.prompts": prompts})
        if limit is not None:
            settings["method.attribution_limit"] = limit[0] if isinstance(limit, tuple) else limit
    settings.update(plan.config.set)
    config = load_config(None, [f"{k}={yaml_value(v)}" for k, v in settings.items()])
    config.out = str(folder)
    return config
