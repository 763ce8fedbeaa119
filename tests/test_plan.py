"""`knowpack plan` on a tiny random Llama: one-line errors before any work, a grid plan's plan.json and
recommended.yaml (which `knowpack train` reproduces), an Optuna search stored in SQLite, and a plan killed at
every point of its run and rerun: the same trials and recommendation, finished trials not rerun."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import die_at, kills, plan_files, points_of, tiny_plan_settings
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.experiment.plan import load_plan, run_plan
from knowpack.runs import read_run
from knowpack.train import load_config, train

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "plan"


@pytest.fixture
def files(world, tmp_path):
    return plan_files(tmp_path)


def tiny_plan(world, files, out: Path, **options):
    return load_plan(**tiny_plan_settings(world, files, out, **options))


BAD = [
    (
        {"budget": {"retension_drop": 0.05}},
        "unknown budget metric 'retension_drop' (did you mean retention_drop?)",
    ),
    ({"budget": {"retention_drop": -1}}, "budget.retention_drop: expected a number >= 0, got -1.0"),
    ({"target": 1.5}, "target: expected a number in (0, 1], got 1.5"),
    ({"methods": ["lora", "dora"]}, "methods: ['dora'] not among lora, loki, full"),
    ({"reference": None}, "--reference is required for model"),
    ({"grid": {"rank": [1]}}, "grid: unknown parameter 'rank'"),
    ({"set": {"train.lr": 0}}, "train.lr: expected a number > 0, got 0.0"),
]


@pytest.mark.parametrize("options, error", BAD, ids=[e.split(":")[0][:30] for _, e in BAD])
def test_bad_plans_are_one_line_errors_before_any_work(world, files, tmp_path, options, error):
    with pytest.raises(KnowpackError) as e:
        tiny_plan(world, files, tmp_path / "out", **options)
    assert error in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_the_shipped_plan_configs_load(path, monkeypatch):
    monkeypatch.chdir(CONFIGS.parents[1])  # their paths are relative to the repository
    plan = load_plan(path)
    assert plan.config.grid or plan.config.trials


def test_the_cli_refuses_a_malformed_budget(files, tmp_path):
    result = CliRunner().invoke(
        app,
        ["plan", "--facts", files["facts"], "--out", str(tmp_path / "o"), "--budget", "retention_drop=0.05"],
    )
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --budget 'retention_drop=0.05': expected KEY<=NUMBER, e.g. retention_drop<=0.05"
    )


@pytest.mark.slow
def test_a_grid_plan_recommends_and_its_recipe_trains_to_the_same_reliability(
    world, files, tmp_path, monkeypatch
):
    monkeypatch.chdir(Path(files["facts"]).parent)
    plan = tiny_plan(world, files, tmp_path / "plan", facts=Path(files["facts"]).name)
    result = run_plan(plan)
    assert result["status"] == "finished"
    assert result["facts"] == Path(files["facts"]).name  # as given: plan.json holds no path of this machine
    assert result["your_facts"] == {"total": 4, "unknown": 4, "already_known": [], "partly_known": 0}
    assert len(result["trials"]) == 4 and {t["params"]["method"] for t in result["trials"]} == {
        "lora",
        "full",
    }
    for method, points in result["frontier"].items():
        assert sorted(p["n_facts"] for p in points) == [1, 2], method
    best = result["recommendation"]
    assert best is not None, result["answer"]
    feasible = [t for t in result["trials"] if t["feasible"]]
    assert best["n_facts"] == max(t["n_facts"] for t in feasible)
    assert best["reliability"]["mean"] >= 0.5 and best["top_answer_share"]["mean"] <= 1.0
    assert (
        result["answer"].startswith(("LoRA", "Full"))
        and f"implants {best['n_facts']} of your 4" in result["answer"]
    )

    recommended = tmp_path / "plan" / "recommended.yaml"
    config = load_config(recommended, [f"out={tmp_path / 'again'}"])
    assert config.mix.n_unknown == best["n_facts"] and config.method.name == best["method"]
    again = train(config)
    trial = json.loads((Path(best["folders"][0]) / "train.json").read_text())
    assert json.loads((again / "train.json").read_text())["reliability"] == trial["reliability"]

    report = CliRunner().invoke(app, ["report", str(tmp_path / "plan"), "--out", str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert f"plan: {result['answer']}" in report.output
    html = (tmp_path / "report" / "report.html").read_text()
    assert escape(result["answer"]) in html
    assert (tmp_path / "report" / "plan_front.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_search_is_an_optuna_study_and_the_same_seed_asks_the_same_trials(world, files, tmp_path):
    import optuna

    params = []
    for name in ("a", "b"):
        plan = tiny_plan(world, files, tmp_path / name, grid=None, trials=3, lr_range=[10.0, 30.0])
        result = run_plan(plan)
        params.append([t["params"] for t in result["trials"]])
        study = optuna.load_study(study_name="plan", storage=f"sqlite:///{tmp_path / name / 'study.db'}")
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
        assert [t.values[0] for t in study.trials] == [t["n_facts"] for t in result["trials"]]
    assert params[0] == params[1]
    for p in params[0]:
        assert p["method"] in ("lora", "full") and 10.0 <= p["lr_scale"] <= 30.0 and 1 <= p["n_facts"] <= 4


@pytest.mark.slow
def test_a_plan_killed_at_every_point_finishes_with_the_same_trials_without_redoing_finished_ones(
    world, files, tmp_path
):
    def run_into(out: Path) -> dict:
        return run_plan(
            tiny_plan(world, files, out, grid={"method": ["lora"], "lr_scale": [20.0], "n_facts": [1, 2]})
        )

    whole = run_into(tmp_path / "whole")
    points = points_of(lambda: run_into(tmp_path / "trace"), tmp_path / "points.txt")
    assert "write trial.json" in points and "write plan.json" in points
    # the plan's own points (its files, the study's trial records) and the first of each stage inside a
    # trial's run; every point inside training, probing and evaluation is killed at in test_faults.py
    own = ("trial.json", "plan.json", "facts.jsonl", "recommended.yaml", "claim", "train: started")
    chosen = [k for k in kills(points, last=False) if any(name in k for name in own)]
    chosen += ["write train.json@1", "write eval.json@1"]
    assert len(chosen) >= 6
    for i, kill in enumerate(chosen):
        out = tmp_path / f"cut{i}"
        die_at(lambda out=out: run_into(out), kill)
        started = {str(p): read_run(p.parent)["started_unix"] for p in out.glob("trials/*/seed=*/eval.json")}
        result = run_into(out)
        assert [t["params"] for t in result["trials"]] == [t["params"] for t in whole["trials"]], kill
        assert result["recommendation"]["trial"] == whole["recommendation"]["trial"], kill
        assert result["answer"] == whole["answer"].replace(str(tmp_path / "whole"), str(out)), kill
        for path, when in started.items():  # evaluated before the kill: not trained again
            assert read_run(Path(path).parent)["started_unix"] == when, (kill, path)
        recommended = [
            (f / "recommended.yaml").read_text().replace(str(f), "PLAN") for f in (out, tmp_path / "whole")
        ]
        hashed = [
            re.sub(r"/[0-9a-f]{12}\b", "/HASH", text) for text in recommended
        ]  # keyed by the folder too
        assert hashed[0] == hashed[1], kill
