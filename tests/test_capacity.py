"""`knowpack capacity`: the search itself on a pure pass/fail function (exponential, cut to the cap, then
bisection), the whole loop with a fake "run a point" (the rule over seeds, budget reasons, capacity.json and
the plot, finished points reused and interrupted ones redone), one-line errors for bad configs, and one
end-to-end CLI run on a tiny random Llama (trained, evaluated on a world benchmark, rerun from its files)."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from helpers import fake_point, make_facts, write_capacity
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.experiment.capacity import load_capacity, run_capacity, search_capacity
from knowpack.facts import save_facts
from knowpack.runs import read_run
from tiny import save_tiny, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("start", "cap", "largest", "answer", "tried"),
    [
        (1, 100, 13, 13, [1, 2, 4, 8, 16, 12, 14, 13]),
        (1, 10, 13, 10, [1, 2, 4, 8, 10]),  # the cap passes: the answer is the cap
        (1, 100, 100, 100, [1, 2, 4, 8, 16, 32, 64, 100]),
        (1, 100, 0, None, [1]),  # nothing fits
        (3, 100, 13, 13, [3, 6, 12, 24, 18, 15, 13, 14]),
        (8, 100, 5, 5, [8, 4, 6, 5]),  # the start fails: bisected below it
        (20, 10, 13, 10, [10]),  # a start above the cap starts at the cap
    ],
)
def test_search_is_exponential_then_binary(start, cap, largest, answer, tried):
    assert search_capacity(start, cap, lambda n: n <= largest) == (answer, tried)


def test_search_finds_the_largest_passing_n_for_every_threshold():
    for cap in (1, 7, 16, 50):
        for largest in range(0, 60):
            answer, tried = search_capacity(1, cap, lambda n, largest=largest: n <= largest)
            assert answer == (min(largest, cap) or None)
            assert len(tried) == len(set(tried)) and max(tried) <= cap


# ------------------------------------------------------------------------------------------------ fake points


def test_capacity_with_fake_points_json_plot_and_resume(tmp_path, fake_base):
    path = write_capacity(tmp_path, fake_base, budget={"retention": 0.5})
    out = tmp_path / "out"
    calls = []
    result = run_capacity(
        load_capacity(path), run_point=fake_point(calls, lambda n, s: 1.0 if n <= 13 else 0.5)
    )
    assert result["answer"] == 13 and not result["capped"]
    assert result["tried"] == [1, 2, 4, 8, 16, 12, 14, 13]
    assert result["cap"] == {"max": 50, "supply": 20, "effective": 20}  # 20 Unknown facts in the probe
    on_disk = json.loads((out / "capacity.json").read_text())
    assert on_disk["answer"] == 13 and on_disk["status"] == "finished"
    assert [p["n"] for p in on_disk["points"]] == [1, 2, 4, 8, 12, 13, 14, 16]
    failing = next(p for p in on_disk["points"] if p["n"] == 14)
    assert not failing["pass"] and failing["why"] == ["seed 0: reliability 0.5 < 0.9"]
    assert failing["failed"] == ["reliability"]
    assert failing["seeds_skipped"] == [1]  # rule all: the point failed at its first seed
    passing = next(p for p in on_disk["points"] if p["n"] == 13)
    assert passing["pass"] and [r["seed"] for r in passing["runs"]] == [0, 1]
    retention = passing["runs"][0]["metrics"]["retention"]
    assert retention == {"value": 1.0, "base": 0.98, "measured": 1.0, "limit": 0.5, "kind": "at_least"}
    assert (out / "points" / "n=13,seed=1" / "eval.json").is_file()
    assert (out / "capacity.png").read_bytes().startswith(PNG)
    assert len(calls) == 6 * 2 + 2  # passing points (1, 2, 4, 8, 12, 13) ran both seeds, failing ones one

    again = []  # a rerun reuses every finished, evaluated point
    rerun = run_capacity(
        load_capacity(path), run_point=fake_point(again, lambda n, s: 1.0 if n <= 13 else 0.5)
    )
    assert again == [] and rerun["answer"] == 13

    run_json = out / "points" / "n=13,seed=1" / "run.json"  # killed mid-training
    run_json.write_text(json.dumps({**read_run(run_json.parent), "status": "running", "pid": 2**22 + 7}))
    (out / "points" / "n=8,seed=0" / "eval.json").unlink()  # trained, killed before its eval
    again = []
    run_capacity(load_capacity(path), run_point=fake_point(again, lambda n, s: 1.0 if n <= 13 else 0.5))
    assert sorted(again) == ["n=13,seed=1", "n=8,seed=0"]


def test_rule_all_vs_mean(tmp_path, fake_base):
    def reliability(n, seed):  # seed 0 holds up to 13 facts, seed 1 up to 6
        return (1.0 if n <= 13 else 0.8) if seed == 0 else (1.0 if n <= 6 else 0.85)

    answers = {}
    for rule in ("all", "mean"):
        (tmp_path / rule).mkdir()
        path = write_capacity(tmp_path / rule, fake_base, rule=rule)
        answers[rule] = run_capacity(load_capacity(path), run_point=fake_point([], reliability))["answer"]
    assert answers == {"all": 6, "mean": 13}  # means: 1.0 up to 6, 0.925 up to 13, then 0.825


def test_budget_reasons_and_the_cap(tmp_path, fake_base):
    path = write_capacity(tmp_path, fake_base, seeds=[0], budget={"retention": 0.9})
    events = []
    result = run_capacity(
        load_capacity(path),
        run_point=fake_point([], lambda n, s: 1.0, lambda n: 1 - n / 100),
        on_event=lambda name, event: events.append((event, name)),
    )
    assert result["answer"] == 10 and result["tried"] == [1, 2, 4, 8, 16, 12, 10, 11]
    eleven = next(p for p in result["points"] if p["n"] == 11)
    assert eleven["why"] == ["seed 0: retention 0.89 < 0.9"]
    assert ("fail", "n=11: seed 0: retention 0.89 < 0.9") in events
    assert ("pass", "n=10: reliability 1, retention 0.9") in events and ("start", "n=10,seed=0") in events
    capped = run_capacity(
        load_capacity(path, ["max=5", f"out={tmp_path / 'capped'}"]),
        run_point=fake_point([], lambda n, s: 1.0),
    )
    assert capped["answer"] == 5 and capped["capped"] and capped["tried"] == [1, 2, 4, 5]


def test_a_retention_drop_budget_is_measured_from_its_base(tmp_path, fake_base):
    # fake_point's base retention (its measurement null) is 0.98: 1 - n/100 is within 0.05 up to n = 7
    path = write_capacity(tmp_path, fake_base, seeds=[0], budget={"retention_drop": 0.05})
    result = run_capacity(
        load_capacity(path), run_point=fake_point([], lambda n, s: 1.0, lambda n: 1 - n / 100)
    )
    assert result["answer"] == 7 and result["tried"] == [1, 2, 4, 8, 6, 7]
    assert next(p for p in result["points"] if p["n"] == 8)["why"] == ["seed 0: retention drop 0.06 > 0.05"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"budjet": {}}, "unknown key budjet"),
        ({"target": None}, "no target"),
        ({"target": {"reliabilty": 0.9}}, "unknown target metric 'reliabilty'"),
        ({"budget": {"retension": 0.9}}, "unknown budget metric 'retension' (did you mean retention?)"),
        ({"budget": {"retention": "high"}}, "budget.retention: expected a number in [0, 1], got 'high'"),
        ({"budget": {"retention": 1.5}}, "budget.retention: expected a number in [0, 1], got 1.5"),
        ({"target": {"reliability": 0}}, None),
        ({"target": {"reliability": 2}}, "target.reliability: expected a number in [0, 1], got 2.0"),
        ({"budget": {"world_mc": -0.1}}, "budget.world_mc: expected a number >= 0, got -0.1"),
        ({"seeds": [-1]}, "seeds must be a non-empty list of distinct integers >= 0"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"rule": "most"}, "rule is 'most'"),
        ({"max": 0}, "max must be an integer >= start"),
        ({"set": {"mix.n_unknown": 5}}, "set.mix.n_unknown is the search's to set"),
        ({"set": {"train.epoks": 5}}, "unknown key train.epoks"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, fake_base, extra, message):
    path = write_capacity(tmp_path, fake_base, **extra)
    if message is None:  # a good config (the edge of a range)
        load_capacity(path)
        return
    with pytest.raises(KnowpackError) as e:
        load_capacity(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    result = CliRunner().invoke(app, ["capacity", str(path)])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and message in result.stderr


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A run config for a tiny random Llama that probes its facts itself (the points share that probe)."""
    root = tmp_path_factory.mktemp("capacity-world")
    facts = make_facts()
    save_facts(facts, root / "facts.jsonl")
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts]
    tok = tiny_tokenizer(texts + ["Answer the following question."], root / "tok")
    config = {
        "model": {"name": str(save_tiny("llama", tok, root / "model"))},
        "facts": {"path": str(root / "facts.jsonl")},
        "probe": {"n_prompts": 2, "shots": 1, "samples": 0, "max_new_tokens": 4},
        "method": {"name": "lora", "r": 2, "alpha": 4},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "device": "cpu"},
    }
    path = root / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_capacity_cli_end_to_end_on_a_tiny_model(tmp_path, tiny_base):
    path = write_capacity(
        tmp_path,
        tiny_base,
        target={"reliability": 0.0},
        budget={"world_mc": 1.0, "refusal_rate": 1.0},
        seeds=[0],
        max=4,
        limit=2,
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["capacity", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{out}: capacity 4 facts (the cap: 4)" in result.stdout
    found = json.loads((out / "capacity.json").read_text())
    assert (
        found["answer"] == 4
        and found["tried"] == [1, 2, 4]
        and found["settings"]["benchmarks"] == ["world_mc"]
    )
    for point in found["points"]:
        (run,) = point["runs"]
        world_mc = run["metrics"]["world_mc"]
        assert world_mc["measured"] == pytest.approx(world_mc["base"] - world_mc["value"])
        ev = json.loads((out / "points" / f"n={point['n']},seed=0" / "eval.json").read_text())
        assert ev["uptake"]["n"] == point["n"] and run["metrics"]["reliability"]["value"] is not None
    assert len([p for p in (out / "probe").iterdir() if p.is_dir()]) == 1  # one base probe for every point
    assert (out / "capacity.png").read_bytes().startswith(PNG)

    rerun = CliRunner().invoke(app, ["capacity", str(path)])
    assert rerun.exit_code == 0 and rerun.stderr.count("[reuse]") == 3 and "[start]" not in rerun.stderr

    point = (
        out / "points" / "n=2,seed=0"
    )  # trained, then killed during its eval: evaluated again, not retrained
    (point / "eval.json").unlink()
    trained = (point / "train.json").stat().st_mtime_ns
    again = CliRunner().invoke(app, ["capacity", str(path)])
    assert (
        again.exit_code == 0 and again.stderr.count("[start]") == 1 and "[start] n=2,seed=0" in again.stderr
    )
    assert (point / "eval.json").is_file() and (point / "train.json").stat().st_mtime_ns == trained


def test_rule_share_runs_every_seed_and_the_answer_states_its_confidence(tmp_path, fake_base):
    def reliability(n, seed):  # every seed holds 4 facts; seeds 0-3 hold 8; seeds 0-1 hold 16
        return 1.0 if n <= 4 or (n <= 8 and seed < 4) or (n <= 16 and seed < 2) else 0.5

    path = write_capacity(tmp_path, fake_base, rule="share", min_share=0.8, seeds=[0, 1, 2, 3, 4])
    calls = []
    result = run_capacity(load_capacity(path), run_point=fake_point(calls, reliability))
    assert result["answer"] == 8 and result["tried"] == [1, 2, 4, 8, 16, 12, 10, 9]
    assert len(calls) == 8 * 5  # every seed of every point, failing points too
    points = {p["n"]: p for p in result["points"]}
    assert (
        points[8]["pass"]
        and points[8]["why"] == []
        and points[8]["seed_failures"] == ["seed 4: reliability 0.5 < 0.9"]
    )
    assert points[9]["why"][0] == "2 of 5 seeds pass (< 0.8)"
    rate = points[8]["pass_rate"]
    assert (rate["passed"], rate["total"]) == (4, 5)
    assert (round(rate["low"], 3), round(rate["high"], 3)) == (0.376, 0.964)  # Wilson, as tabulated
    confidence = result["confidence"]
    assert confidence["answer"] == 8 and confidence["first_failing"] == 9
    assert confidence["statement"] == (
        "n = 8: 4 of 5 seeds pass (95% interval of the pass rate 0.38-0.96); "
        "n = 9: 2 of 5 seeds pass (95% interval of the pass rate 0.12-0.77)"
    )
    assert json.loads((tmp_path / "out" / "capacity.json").read_text())["confidence"] == confidence


def test_a_benchmark_budget_follows_the_measures_direction(tmp_path, fake_base):
    """An accuracy may drop by its budget; bits per byte (lower is better, as lm-eval's registry says) may
    rise by its budget: a fall of bits per byte is no damage."""
    budget = {"world_mc_hard": 0.02, "world_text/bits_per_byte": 0.05}
    checks = {c.name: c for c in load_capacity(write_capacity(tmp_path, fake_base, budget=budget)).checks}
    hard, text = checks["world_mc_hard"], checks["world_text/bits_per_byte"]
    assert (hard.kind, dict(hard.where)) == ("drop", {"task": "world_mc_hard", "measure": "acc"})
    assert (text.kind, dict(text.where)) == ("rise", {"task": "world_text", "measure": "bits_per_byte"})

    def ev(acc: float, bpb: float) -> dict:
        tasks = {
            "world_mc_hard": {"acc": {"value": acc, "base": 0.76}},
            "world_text": {"bits_per_byte": {"value": bpb, "base": 0.83}},
        }
        return {"benchmarks": {"tasks": tasks}}

    assert hard.measure(ev(0.70, 0.83))["measured"] == pytest.approx(0.06)
    assert hard.judge(0.06) == "world_mc_hard drop 0.06 > 0.02"
    assert text.measure(ev(0.76, 0.90))["measured"] == pytest.approx(0.07)
    assert text.judge(0.07) == "world_text bits_per_byte rise 0.07 > 0.05"
    assert text.measure(ev(0.76, 0.70))["measured"] == pytest.approx(-0.13)
    assert text.judge(-0.13) is None
