"""`run_plan`: search method x settings x mix x number of facts with Optuna, every trial's seeds ordinary run
folders (trained, then evaluated), and recommend the recipe that implants the most of the user's facts at
the target reliability within every damage budget.

Files in the plan folder (`out`):
    facts/facts.jsonl  the user's facts and a seeded sample of the reference facts: what is probed
    probe/<hash>/      the base probe of those facts (shared by every trial)
    attribution/<hash>/  LoKI's attribution (shared by LoKI trials)
    study.db           the Optuna study (SQLite): trials, parameters, objectives, constraints
    trials/<k>/trial.json   trial k's parameters and its study number, written before it runs
    trials/<k>/seed=<s>/    the run folder of its seed s (config.yaml, weights, train.json, eval.json, ...)
    plan.json          rewritten after every trial: the trials, each method's front, the recommendation
    recommended.yaml   a run config that trains the recommended recipe (`knowpack train recommended.yaml`)

Resuming: a plan killed at any point and run again asks no trial twice. Trial k's sampler is seeded by
(sampler_seed, k) and sees only the finished trials, so trial k's parameters do not depend on when the
process was stopped; a trial whose parameters are in `trial.json` is run (its runs resume) and told to the
study; a trial the study holds without a `trial.json` (a kill between asking and writing it) is told failed,
which the sampler ignores. Objectives: the number of facts (maximised) and the first budget's measure
(minimised), both means over seeds; constraints (Optuna's `constraints_func`): the target minus reliability
and each budget's measure minus its limit, all <= 0 for a feasible trial.
"""

from __future__ import annotations

import json
import logging
import random
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from knowpack.errors import KnowpackError
from knowpack.evaluate.run import evaluate_run
from knowpack.evaluate.stats import interval, method_note
from knowpack.experiment.plan.config import (
    ADDS,
    FACTS,
    LOKI_QUOTAS,
    LORA_RANKS,
    Plan,
    default_params,
    grid_trials,
    trial_config,
)
from knowpack.experiment.sweep import Cell, cell_status, prepare_shared, share_work
from knowpack.facts import load_facts
from knowpack.io import remove_temps, write_json_atomic, write_jsonl_atomic, write_text_atomic
from knowpack.probe.run import read_records
from knowpack.train.run import train

logger = logging.getLogger(__name__)

PLAN_FILE, RECOMMENDED_FILE, STUDY_FILE = "plan.json", "recommended.yaml", "study.db"


def run_plan(
    plan: Plan,
    *,
    on_event: Callable[[str, str], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
    runner: Runner | None = None,
) -> dict[str, Any]:
    """Run the plan (see the module docstring); writes and returns plan.json. `on_event(name, event)` hears
    each trial's seeds (start / reuse) and verdicts (fits / misses); `on_stage` and `progress_bar` go to
    the probe, training and evaluation. `runner` makes the shared work and runs a trial's seeds (default:
    `LocalRunner`, here, one after another; `knowpack.experiment.backends.PlanOnRay`: Ray tasks)."""
    import optuna

    note = on_event or (lambda name, event: logger.info("%s: %s", name, event))
    runner = runner or LocalRunner(on_stage, progress_bar)
    out = plan.out
    out.mkdir(parents=True, exist_ok=True)
    remove_temps(out, of=[PLAN_FILE, RECOMMENDED_FILE])
    remove_temps(out / FACTS.parent, of=[FACTS.name])
    _write_facts(plan)
    base = trial_config(plan, default_params(plan, {}), seed=0, folder=out)
    share_work(base, out)
    runner.shared([base])
    probe = Path(base.probe.run or base.probe.out)  # made here, or by a worker (the Ray runner)
    user = _user_facts(plan, probe)
    state = {"plan": plan, "user": user, "probe": str(probe), "trials": []}
    plan.highly_known = _highly_known(probe, user)
    if not user["unknown"]:
        return _finish(state, "finished")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="plan",
        storage=f"sqlite:///{out / STUDY_FILE}",
        directions=["maximize", "minimize"],
        load_if_exists=True,
    )
    fixed = _fixed_trials(plan, len(user["unknown"]))
    for k in range(len(fixed) if fixed is not None else plan.config.trials):
        trial = _trial(study, plan, k, len(user["unknown"]), fixed)
        try:
            result = _run_trial(plan, k, trial["params"], note, runner)
        except KnowpackError as e:  # a recipe the facts cannot feed (too few HighlyKnown facts to add ...)
            result = _failed(plan, trial["params"], str(e))
        _tell(study, trial["number"], result)
        state["trials"].append({"index": k, "number": trial["number"], **result})
        note(f"trial {k}", "fits" if result["feasible"] else "misses")
        _finish(state, "running")
    return _finish(state, "finished")


def _write_facts(plan: Plan) -> None:
    """`out/facts.jsonl`: the user's facts and `reference_limit` reference facts drawn by seed 0 (not
    rewritten once there: the probe keys on it)."""
    path = plan.out / FACTS
    user = load_facts(plan.facts)
    ids, questions = {u.id for u in user}, {u.question for u in user}
    reference = [f for f in load_facts(plan.reference) if f.id not in ids and f.question not in questions]
    drawn = random.Random(0).sample(reference, min(plan.config.reference_limit, len(reference)))
    rows = [f.to_json() for f in [*user, *drawn]]
    if path.exists():
        if path.read_text(encoding="utf-8").splitlines() != [json.dumps(r, ensure_ascii=False) for r in rows]:
            raise KnowpackError(f"{path} holds other facts (another plan?); use another --out")
        return
    write_jsonl_atomic(path, rows)


def _user_facts(plan: Plan, probe: Path) -> dict[str, list[str]]:
    """The user's facts by base-probe category: those already known need no implanting."""
    ids = set(plan.fact_ids)
    by_category: dict[str, list[str]] = {}
    for record in read_records(probe / "records.jsonl"):
        if record["id"] in ids:
            by_category.setdefault(record["category"], []).append(record["id"])
    return {
        "total": len(ids),
        "unknown": by_category.get("Unknown", []),
        "known": by_category.get("HighlyKnown", []),
        "partly": by_category.get("MaybeKnown", []) + by_category.get("WeaklyKnown", []),
    }


def _highly_known(probe: Path, user: dict) -> int:
    """How many reference facts the model knows (HighlyKnown): the `highly_known` mix draws from them."""
    mine = set(user["unknown"]) | set(user["known"]) | set(user["partly"])
    return sum(
        r["category"] == "HighlyKnown" and r["id"] not in mine for r in read_records(probe / "records.jsonl")
    )


def _distributions(plan: Plan, n_unknown: int, fixed: list[dict] | None) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if fixed is not None:  # a grid: each parameter takes the grid's values
        return {k: CategoricalDistribution(sorted({t[k] for t in fixed}, key=str)) for k in fixed[0]}
    low, high = plan.config.lr_range
    adds = [
        a
        for a in ADDS
        if (a != "paraphrase" or plan.paraphrases) and (a != "highly_known" or plan.highly_known)
    ]
    return {
        "method": CategoricalDistribution(plan.config.methods),
        "lr_scale": FloatDistribution(low, high, log=True),
        "lora_r": CategoricalDistribution(LORA_RANKS),
        "loki_quota": CategoricalDistribution(LOKI_QUOTAS),
        "add": CategoricalDistribution(adds),
        "n_facts": IntDistribution(1, n_unknown, log=n_unknown > 1),
    }


def _fixed_trials(plan: Plan, n_unknown: int) -> list[dict[str, Any]] | None:
    """A grid's trials in a seeded order (None: a search)."""
    if plan.config.grid is None:
        return None
    trials = grid_trials(plan, n_unknown)
    for t in trials:
        if not 1 <= t["n_facts"] <= n_unknown:
            raise KnowpackError(f"grid.n_facts: {t['n_facts']} is not in 1..{n_unknown} (the Unknown facts)")
    random.Random(plan.config.sampler_seed).shuffle(trials)
    return trials


def _trial(study: Any, plan: Plan, k: int, n_unknown: int, fixed: list[dict] | None) -> dict[str, Any]:
    """Trial k's number and parameters: from its trial.json, or asked of the study (a sampler seeded by k)
    and written there before anything runs."""
    import optuna

    path = plan.out / "trials" / str(k) / "trial.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # asked, never written: a kill
    if fixed is not None:
        with warnings.catch_warnings():  # "experimental" since Optuna 2.4, and what fixing every parameter is
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            unfixed = optuna.samplers.RandomSampler(seed=k)  # samples nothing: every parameter is fixed
            study.sampler = optuna.samplers.PartialFixedSampler(fixed[k], unfixed)
    else:
        study.sampler = (
            optuna.samplers.TPESampler(  # half the trials (at least 4) at random, then TPE's model
                seed=plan.config.sampler_seed * 100_003 + k,
                constraints_func=_constraints,
                n_startup_trials=max(4, plan.config.trials // 2),
            )
        )
    asked = study.ask(_distributions(plan, n_unknown, fixed))
    record = {"index": k, "number": asked.number, "params": dict(asked.params)}
    write_json_atomic(path, record)
    return record


def _constraints(trial: Any) -> list[float]:
    return trial.user_attrs.get("constraints", [1.0])


def _tell(study: Any, number: int, result: dict[str, Any]) -> None:
    """Record a trial's objectives and constraints in the study (once); a failed trial as failed."""
    import optuna

    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state != optuna.trial.TrialState.RUNNING:
        return
    if result.get("error"):
        study.tell(number, state=optuna.trial.TrialState.FAIL)
        return
    optuna.trial.Trial(study, frozen._trial_id).set_user_attr("constraints", result["constraints"])
    study.tell(number, [result["n_facts"], result["damage"]])


def _failed(plan: Plan, params: dict, error: str) -> dict[str, Any]:
    """A trial that could not run: infeasible, with its one-line reason."""
    empty = {"mean": None, "low": None, "high": None, "n": 0}
    metrics = {c.name: {**empty, "per_seed": [], "limit": c.limit, "kind": c.kind} for c in plan.checks}
    return {
        "params": params, "method": params["method"], "n_facts": params["n_facts"],
        "reliability": metrics[plan.checks[0].name], "metrics": metrics, "feasible": False,
        "constraints": [1.0] * len(plan.checks), "damage": float("inf"), "runs": [], "error": error,
    }  # fmt: skip


def _run_trial(plan: Plan, k: int, params: dict, note, runner: Runner) -> dict[str, Any]:
    """Trial k's runs, one per seed (reused when finished and evaluated), measured against the checks."""
    cells = []
    for seed in range(plan.config.seeds):
        folder = plan.out / "trials" / str(k) / f"seed={seed}"
        cell = Cell(folder.name, {"seed": seed}, trial_config(plan, params, seed=seed, folder=folder), folder)
        share_work(cell.config, plan.out)
        cells.append(cell)
    todo = [cell for cell in cells if _evaluation(plan, cell) is None]
    for cell in cells:
        note(f"trial {k} {cell.name}", "start" if cell in todo else "reuse")
    if todo:
        runner.shared([cell.config for cell in todo])
        runner.run(plan, todo)
    runs = []
    for cell in cells:
        ev = _evaluation(plan, cell)
        if ev is None:
            raise KnowpackError(f"{cell.folder}: the trial's run ended without a finished eval.json")
        runs.append(
            {"seed": cell.overrides["seed"], "folder": str(cell.folder), "metrics": _measured(plan, ev)}
        )
    return _summarise(plan, params, runs)


class Runner(Protocol):
    """Where a plan's work runs: `shared(configs)` makes the shared probe and attribution the run configs
    read; `run(plan, cells)` trains and evaluates each cell (a trial's seeds)."""

    def shared(self, configs: list[Any]) -> None: ...

    def run(self, plan: Plan, cells: list[Cell]) -> None: ...


@dataclass
class LocalRunner:
    """Here, one run after another (the CLI's stage lines and progress bars shown)."""

    on_stage: Callable[[str], None] | None = None
    progress_bar: Callable[[str], Any] | None = None

    def shared(self, configs: list[Any]) -> None:
        for config in configs:
            prepare_shared(config, self.progress_bar)

    def run(self, plan: Plan, cells: list[Cell]) -> None:
        for cell in cells:
            train_and_evaluate(plan, cell, self.on_stage, self.progress_bar)


def train_and_evaluate(plan: Plan, cell: Cell, on_stage=None, progress_bar=None) -> None:
    """One seed of a trial: trained (unless its run is finished), then evaluated."""
    if cell_status(cell) != "finished":
        prepare_shared(cell.config, progress_bar)
        train(cell.config, force=True, on_stage=on_stage, progress_bar=progress_bar)
    evaluate_run(cell.folder, on_stage=on_stage, progress_bar=progress_bar)


def _evaluation(plan: Plan, cell: Cell) -> dict | None:
    if cell_status(cell) != "finished":
        return None
    try:
        return json.loads((cell.folder / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _measured(plan: Plan, ev: dict) -> dict[str, float | None]:
    return {c.name: c.measure(ev)["measured"] for c in plan.checks}


def _summarise(plan: Plan, params: dict, runs: list[dict]) -> dict[str, Any]:
    """A trial's numbers: each check's mean over seeds with its interval, whether the means fit, the
    objectives and constraints it is told to the study with."""
    metrics = {}
    for check in plan.checks:
        values = [r["metrics"][check.name] for r in runs]
        ci = interval(values)  # Student-t over seeds (None where a seed measured nothing)
        metrics[check.name] = {**ci, "per_seed": values, "limit": check.limit, "kind": check.kind}
    constraints = []
    for check in plan.checks:
        mean = metrics[check.name]["mean"]
        if mean is None:
            constraints.append(1.0)
        elif check.kind == "at_least":
            constraints.append(check.limit - mean)
        else:
            constraints.append(mean - check.limit)
    damage = metrics[plan.checks[1].name]["mean"]
    return {
        "params": params,
        "method": params["method"],
        "n_facts": params["n_facts"],
        "reliability": metrics[plan.checks[0].name],
        "metrics": metrics,
        "feasible": all(c <= 1e-12 for c in constraints),
        "constraints": constraints,
        "damage": damage if damage is not None else float("inf"),
        "runs": runs,
    }


def _finish(state: dict[str, Any], status: str) -> dict[str, Any]:
    """Write plan.json (and, once finished with a recommendation, recommended.yaml); returns plan.json."""
    plan, trials = state["plan"], state["trials"]
    damage = plan.checks[1].name
    fronts = {m: _front([t for t in trials if t["method"] == m], damage) for m in plan.config.methods}
    best = _best([t for t in trials if t["feasible"]])
    user = state["user"]
    result = {
        "status": status,
        "model": plan.config.model,
        "facts": plan.config.facts,  # as the user gave it: plan.json travels (the plan reads plan.facts)
        "reference": plan.reference,
        "target": {"reliability": plan.config.target},
        "budget": {c.name: c.limit for c in plan.checks[1:]},
        "seeds": plan.config.seeds,
        "interval": method_note(),
        "your_facts": {
            "total": user["total"],
            "unknown": len(user["unknown"]),
            "already_known": user["known"],
            "partly_known": len(user["partly"]),
        },
        "recommendation": _recommendation(best, plan),
        "best_per_method": {
            m: _recommendation(_best([t for t in trials if t["feasible"] and t["method"] == m]), plan)
            for m in plan.config.methods
        },
        "largest_within_budget": {m: _largest_within_budget(trials, m) for m in plan.config.methods},
        "frontier": fronts,
        "trials": [_trial_entry(t) for t in trials],
        "answer": _answer(best, plan, user, status, len(trials)),
    }
    write_json_atomic(plan.out / PLAN_FILE, result, default=str)
    if status == "finished" and best is not None:
        write_text_atomic(plan.out / RECOMMENDED_FILE, _recommended_yaml(plan, best))
    return result


def _trial_entry(trial: dict) -> dict[str, Any]:
    """A trial as plan.json lists it: finished (its numbers) or failed (its reason)."""
    keys = ("index", "number", "params", "feasible", "n_facts", "damage", "metrics", "runs")
    entry = {k: trial[k] for k in keys}
    entry["status"] = "failed" if trial.get("error") else "finished"
    if trial.get("error"):
        entry["error"] = trial["error"]
    return entry


def _best(trials: list[dict]) -> dict | None:
    """The most facts, then the least damage, then the highest reliability, then the earliest trial."""
    if not trials:
        return None
    return min(
        trials, key=lambda t: (-t["n_facts"], t["damage"], -(t["reliability"]["mean"] or 0), t["index"])
    )


def _front(trials: list[dict], damage: str) -> list[dict]:
    """A method's uptake-damage points: every trial's mean reliability and its `damage` measure (the first
    budget's), with their intervals, by number of facts."""
    points = [
        {
            "trial": t["index"],
            "n_facts": t["n_facts"],
            "reliability": t["reliability"],
            "damage": t["metrics"][damage],
            "feasible": t["feasible"],
        }
        for t in trials
    ]
    return sorted(points, key=lambda p: (p["n_facts"], p["trial"]))


def _recommendation(trial: dict | None, plan: Plan) -> dict | None:
    if trial is None:
        return None
    return {
        "trial": trial["index"],
        "method": trial["method"],
        "settings": trial["params"],
        "n_facts": trial["n_facts"],
        "reliability": trial["reliability"],
        **{c.name: trial["metrics"][c.name] for c in plan.checks[1:]},
        "folders": [r["folder"] for r in trial["runs"]],
    }


def _largest_within_budget(trials: list[dict], method: str) -> dict | None:
    """A method's trial with the most facts whose damage stays within every budget, whatever its reliability
    (what fits when nothing reaches the target)."""
    within = [t for t in trials if t["method"] == method and all(c <= 1e-12 for c in t["constraints"][1:])]
    best = _best(within)
    if best is None:
        return None
    return {"trial": best["index"], "n_facts": best["n_facts"], "reliability": best["reliability"]["mean"]}


def _answer(best: dict | None, plan: Plan, user: dict, status: str, trials: int) -> str:
    """The plan's answer in one sentence."""
    known = ""
    if user["known"]:
        known = f" {len(user['known'])} of your {user['total']} facts are already known (nothing to implant)."
    if not user["unknown"]:
        return f"None of your {user['total']} facts is Unknown to the model: nothing to implant.{known}"
    budget = ", ".join(f"{c.name} <= {c.limit:g}" for c in plan.checks[1:])
    if best is None:
        what = "so far" if status != "finished" else f"in {trials} trials"
        return (
            f"No recipe reached reliability {plan.config.target:g} within {budget} {what}; "
            f"see largest_within_budget per method.{known}"
        )
    p = best["params"]
    name = {"lora": f"LoRA (rank {p['lora_r']}", "loki": f"LoKI (quota {p['loki_quota']}%", "full": "Full "
            "fine-tuning (all weights"}[best["method"]]  # fmt: skip
    return (
        f"{name}, "
        f"lr x{p['lr_scale']:.3g}, mix {p['add']}) implants {best['n_facts']} of your {len(user['unknown'])} "
        f"Unknown facts at reliability {best['reliability']['mean']:.3f} within {budget}.{known}"
    )


def _recommended_yaml(plan: Plan, best: dict) -> str:
    """A run config that trains the recommended recipe on the user's facts, as the trial's first seed did
    (the same shared probe and attribution)."""
    import yaml

    config = trial_config(plan, best["params"], seed=0, folder=plan.out / "recommended")
    share_work(config, plan.out)
    prepare_shared(config)  # made already: points the config at them
    head = (
        f"# knowpack train {plan.out / RECOMMENDED_FILE}\n# trial {best['index']} of the plan in {plan.out}\n"
    )
    return head + yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True)
