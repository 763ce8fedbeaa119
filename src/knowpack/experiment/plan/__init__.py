"""`knowpack plan`: which method, settings and how many of the user's facts fit a damage budget.

    from knowpack.experiment.plan import load_plan, run_plan
    plan = load_plan(facts="my_facts.jsonl", budget={"retention_drop": 0.05}, trials=8, seeds=2, out="plan")
    result = run_plan(plan)          # plan.json: recommendation, each method's front, the trials
    print(result["answer"])

config.py: the settings (one grammar for the CLI's options and a plan YAML) and each trial's run config;
search.py: the Optuna search, resumable, and the recommendation; plot.py: each method's front.
"""

from knowpack.experiment.plan.config import Plan, PlanConfig, load_plan
from knowpack.experiment.plan.search import run_plan

__all__ = ["Plan", "PlanConfig", "load_plan", "run_plan"]
