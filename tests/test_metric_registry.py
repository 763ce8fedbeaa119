"""The metric registry (`knowpack.evaluate.metrics.METRICS`) is the one place eval.json is read through: a
metric registered as a row (and written into eval.json by its function) shows up in the report, sweep.json,
a capacity budget and `knowpack eval`'s summary with no other change. Also: every row's path is where eval
really writes it, and the accessor's defaults."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import make_run, write_capacity
from knowpack.cli.evaluate import eval_summary
from knowpack.evaluate import metrics as m
from knowpack.evaluate.metrics import METRICS, Metric, metric_path, metric_value
from knowpack.experiment.capacity import load_capacity, run_capacity
from knowpack.experiment.sweep import load_sweep, write_summary
from knowpack.report import collect_runs, write_report
from knowpack.runs import end_run, start_run

FAKE = Metric(
    path=("behaviour", "{scope}", "hedging_rate"),
    definition="share of the greedy answers that hedge (a made-up metric of this test)",
    higher_is_better=False,
    baseline=m.BASE_MODEL,
    label="hedging",
    shown=("report", "sweep", "summary"),
    scope="all",
)


@pytest.fixture
def fake_metric(monkeypatch):
    """Register the made-up metric as one row: the only change a real addition makes besides its function."""
    monkeypatch.setitem(METRICS, "hedging_rate", FAKE)


def with_hedging(path, scope: str, value: float, base: float) -> None:
    """What the metric's function would add to eval.json: `m.metric(...)` under its path."""
    ev = json.loads(path.read_text())
    ev.setdefault("behaviour", {}).setdefault(scope, {})["hedging_rate"] = m.metric(
        "hedging_rate", value, base
    )
    path.write_text(json.dumps(ev))


def test_a_new_row_is_read_by_the_report(fake_metric, tmp_path):
    make_run(tmp_path / "runs" / "lora", "lora", 50, 0, 0.9)
    with_hedging(tmp_path / "runs" / "lora" / "eval.json", "all", 0.25, 0.125)
    (row,), _ = collect_runs([tmp_path / "runs"])
    assert (row["hedging_rate"], row["hedging_rate_base"]) == (0.25, 0.125)
    md = (write_report([tmp_path / "runs"], tmp_path / "report") / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method / mix | n | seed |"))
    row = next(line for line in md.splitlines() if line.startswith("| lora | 50 | 0 |"))
    cells = dict(zip(header.split(" | "), row.split(" | "), strict=True))
    assert cells["hedging"] == "0.125 → 0.250" and cells["refusals"] == "0.400 → 0.000"
    assert f"- **hedging**: {FAKE.definition} (before the arrow: the base model)." in md


def test_a_new_row_is_in_sweep_json_and_the_eval_summary(fake_metric, tmp_path, fake_base):
    path = tmp_path / "sweep.yaml"
    sweep_config = {"base": str(fake_base), "grid": {"mix.seed": [0]}, "out": str(tmp_path / "sw")}
    path.write_text(yaml.safe_dump({**sweep_config, "evaluate": True}))
    sweep = load_sweep(path)
    (cell,) = sweep.cells
    cell.folder.mkdir(parents=True)
    end_run(cell.folder, start_run(cell.folder, "train"), "finished")
    (cell.folder / "train.json").write_text(json.dumps({"reliability": 1.0, "epochs_run": 2}))
    (cell.folder / "eval.json").write_text(
        json.dumps({"uptake": {"reliability": m.metric("reliability", 1, 0)}})
    )
    with_hedging(cell.folder / "eval.json", "all", 0.5, 0.25)
    (row,) = write_summary(sweep)["cells"]
    assert row["status"] == "finished" and row["hedging_rate"] == 0.5 and row["eval_reliability"] == 1
    summary = eval_summary(json.loads((cell.folder / "eval.json").read_text()))
    behaviour = next(line for line in summary.splitlines() if line.startswith("behaviour: "))
    assert "hedging 0.500 (base 0.250)" in behaviour.split(", ") or behaviour.endswith(
        "hedging 0.500 (base 0.250)"
    )


def test_a_new_row_can_be_a_capacity_budget(fake_metric, tmp_path, fake_base):
    path = write_capacity(tmp_path, fake_base, budget={"hedging_rate": 0.3}, max=8)

    def run_point(cell) -> None:
        n = cell.config.mix.n_unknown
        end_run(cell.folder, start_run(cell.folder, "train"), "finished")
        (cell.folder / "eval.json").write_text(
            json.dumps({"uptake": {"reliability": m.metric("reliability", 1, 0)}})
        )
        # the budget reads the untrained facts (capacity.BUDGET_SCOPE); hedging grows with n
        with_hedging(cell.folder / "eval.json", "untrained", n / 20, 0.0)

    result = run_capacity(load_capacity(path), run_point=run_point)
    assert result["answer"] == 6  # 6 / 20 = 0.3 <= 0.3; 7 / 20 > 0.3
    (check,) = [c for c in result["checks"] if c["name"] == "hedging_rate"]
    assert check == {
        "name": "hedging_rate",
        "kind": "at_most",  # higher_is_better False: at most the limit
        "limit": 0.3,
        "eval_json": ["behaviour", "untrained", "hedging_rate"],
        "against": None,
    }
    failed = next(p for p in result["points"] if p["n"] == 7)
    assert failed["why"] == ["seed 0: hedging_rate 0.35 > 0.3"]


def test_a_drop_budget_names_its_baseline(tmp_path, fake_base):
    path = write_capacity(tmp_path, fake_base, budget={"retention_drop": 0.1, "refusal_rate": 0.2})
    checks = {c.name: c for c in load_capacity(path).checks}
    assert (checks["retention_drop"].kind, checks["retention_drop"].metric) == ("drop", "retention")
    assert checks["retention_drop"].path == ("knowledge_shift", "untrained", "retention")
    assert checks["refusal_rate"].kind == "change"
    assert checks["refusal_rate"].path == ("behaviour", "untrained", "refusal_rate")


def test_the_accessor_fills_scopes_and_benchmarks():
    ev = {
        "behaviour": {"all": {"refusal_rate": {"value": 0.5, "base": 0.25}}},
        "knowledge_shift": {"untrained": {"retention": {"value": 0.875, "base": 1.0}}},
        "benchmarks": {"tasks": {"world_mc": {"acc": {"value": 0.75, "base": 1.0}}}},
    }
    assert metric_value(ev, "refusal_rate") == (0.5, 0.25)  # default scope: all
    assert metric_value(ev, "retention") == (0.875, 1.0)  # default scope: untrained
    assert metric_value(ev, "retention", scope="trained") == (None, None)
    assert metric_value(ev, "benchmark", task="world_mc") == (0.75, 1.0)  # default measure: acc
    assert m.benchmark_values(ev) == {("world_mc", "acc"): (0.75, 1.0)}
    with pytest.raises(Exception, match="say which task"):
        metric_path("benchmark")


def test_every_row_is_where_eval_writes_it():
    """The registry against what eval.json's writers build (metrics.compare_*, evaluate.uptake): every row's
    path leads to an entry that names the row."""
    from knowpack.evaluate.uptake import idk_refusal_rate, summarize_uptake
    from knowpack.facts import Fact

    before = [
        {"id": "a", "category": "HighlyKnown", "p_greedy": 1.0, "greedy": ["x"], "greedy_logprob": [-0.1]}
    ]
    after = [{"id": "a", "category": "Unknown", "p_greedy": 0.0, "greedy": ["y"], "greedy_logprob": [-0.2]}]
    table = {"zero_shot_ok": {"a": [True]}, "zero_shot": {"a": ["x"]}, "paraphrase": {"a": [1.0]}}
    table["paraphrase_zero_shot_ok"] = {"a": [True]}
    uptake = summarize_uptake([Fact(id="a", question="q?", answers=["x"])], before, after, table, table, None)
    uptake["idk_refusal_rate"] = idk_refusal_rate(before, after, ["a"], m.check_patterns(None))
    ev = {
        "uptake": uptake,
        "knowledge_shift": {"untrained": m.compare_knowledge(before, after, {"a"}, before)},
        "behaviour": {
            "all": m.compare_behaviour(before, after, {"a"}, None, before),
            "untrained": {"trained_answers": m.trained_answers(before, after, {"a"}, {"y"})},
        },
        "benchmarks": {"tasks": {"t": {"acc": m.metric("benchmark", 0.5, 0.75)}}},
    }
    for name in METRICS:
        assert m.metric_entry(ev, name, task="t").get("metric") == name, name
