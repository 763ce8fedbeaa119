"""The evaluation metrics pinned on hand-made probe records with known answers (no model): transition counts
and shares, positive / negative shift with their denominators, retention, refusal rate with configurable
patterns, answer diversity and entropy, explosion, confidence, three categories without samples, and the
eval.json entries (value beside base, the measurement null as the base of a comparison, prompt sensitivity
and a training control beside it), and trained answers taking over untrained facts' answers."""

from __future__ import annotations

import math

import pytest

from knowpack.errors import KnowpackError
from knowpack.evaluate import metrics as m

HK, MK, WK, UK = "HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown"


def rec(id, category, greedy=("x",), p_sample=0.0, logprobs=None, correct=None, samples=None):
    return {
        "id": id,
        "category": category,
        "p_sample": p_sample,
        "greedy": list(greedy),
        "samples": samples if samples is not None else [[] for _ in greedy],
        "greedy_logprob": logprobs,
        "greedy_correct": correct,
    }


# a: HK->HK, b: HK->UK, c: MK->HK, d: UK->MK, e: UK->WK, f: WK->UK
BEFORE = [rec("a", HK), rec("b", HK), rec("c", MK), rec("d", UK), rec("e", UK), rec("f", WK)]
AFTER = [rec("a", HK), rec("b", UK), rec("c", HK), rec("d", MK), rec("e", WK), rec("f", UK)]


def test_transition_counts_and_row_shares():
    t = m.transitions(BEFORE, AFTER)
    assert t["categories"] == [HK, MK, WK, UK] and t["n"] == 6
    assert t["counts"][HK] == {HK: 1, MK: 0, WK: 0, UK: 1}
    assert t["counts"][UK] == {HK: 0, MK: 1, WK: 1, UK: 0}
    assert t["counts"][WK][UK] == 1 and t["counts"][MK][HK] == 1
    assert t["shares"][HK] == {HK: 0.5, MK: 0.0, WK: 0.0, UK: 0.5}
    assert t["shares"][UK][MK] == 0.5 and t["shares"][WK][UK] == 1.0
    assert t["unchanged"] == pytest.approx(1 / 6)
    only = m.transitions(BEFORE, AFTER, ids={"a", "b"})
    assert only["n"] == 2 and only["counts"][HK][UK] == 1 and only["counts"][MK][HK] == 0


def test_shift_counts_weakly_known_as_unknown_and_states_its_denominators():
    s = m.shift(m.transitions(BEFORE, AFTER))
    pos, neg = s["positive"], s["negative"]
    # Up: c (MK->HK) and d (UK->MK); e (UK->WK) and f (WK->UK) are no shift in the paper's 3 categories.
    assert pos["count"] == 2 and pos["eligible"] == 4  # c, d, e, f could move up
    assert pos["value"] == 0.5 and pos["share_of_all"] == pytest.approx(2 / 6)
    assert pos["moves"]["Unknown->MaybeKnown"] == {"count": 1, "share": pytest.approx(1 / 3)}  # of d, e, f
    assert pos["moves"]["MaybeKnown->HighlyKnown"] == {"count": 1, "share": 1.0}
    assert pos["moves"]["Unknown->HighlyKnown"] == {"count": 0, "share": 0.0}
    # Down: b (HK->UK) only; a, b, c could move down.
    assert neg["count"] == 1 and neg["eligible"] == 3 and neg["value"] == pytest.approx(1 / 3)
    assert neg["moves"]["HighlyKnown->Unknown"] == {"count": 1, "share": 0.5}
    assert neg["moves"]["MaybeKnown->Unknown"] == {"count": 0, "share": 0.0}


def test_shift_of_nothing_is_none_not_zero():
    s = m.shift(m.transitions([rec("a", UK)], [rec("a", UK)]))
    assert s["positive"]["value"] == 0.0 and s["negative"]["value"] is None and s["negative"]["eligible"] == 0


def test_retention():
    assert m.retention(BEFORE, AFTER) == {"value": 0.5, "kept": 1, "n": 2}
    assert m.retention(BEFORE, AFTER, ids={"a"}) == {"value": 1.0, "kept": 1, "n": 1}
    assert m.retention(BEFORE, AFTER, ids={"c"})["value"] is None  # no HighlyKnown fact before


def test_three_categories_without_samples():
    before = [rec("a", HK, p_sample=None), rec("b", MK, p_sample=None), rec("c", UK, p_sample=None)]
    after = [rec("a", MK, p_sample=None), rec("b", MK, p_sample=None), rec("c", HK, p_sample=None)]
    t = m.transitions(before, after)
    assert t["categories"] == [HK, MK, UK] and set(t["counts"]) == {HK, MK, UK}
    assert all(set(row) == {HK, MK, UK} for row in t["counts"].values())
    s = m.shift(t)
    assert s["positive"]["count"] == 1 and s["positive"]["eligible"] == 2  # c UK->HK; b, c could move up
    assert s["negative"]["moves"]["HighlyKnown->MaybeKnown"]["count"] == 1
    with pytest.raises(KnowpackError, match="WeaklyKnown"):
        m.transitions(before, [rec("a", WK, p_sample=None)], categories=(HK, MK, UK))


def test_refusal_rate_with_default_and_configured_patterns():
    records = [
        rec("a", UK, ["I don't know.", "Paris", "I have no idea who that is", "Nope."]),
        rec("b", UK, ["Lima", "unknown"], samples=[["I don't know.", "Lima"], []]),
    ]
    r = m.refusal_rate(records)
    assert r["refusals"] == 3 and r["answers"] == 6 and r["value"] == 0.5
    assert r["samples_value"] == 0.5
    r = m.refusal_rate(records, [r"\bnope\b"])
    assert r["refusals"] == 1 and r["value"] == pytest.approx(1 / 6)
    with pytest.raises(KnowpackError, match="bad refusal pattern"):
        m.refusal_rate(records, ["(unclosed"])


def test_diversity_and_entropy():
    records = [rec("a", HK, ["The Paris!", "paris"]), rec("b", UK, ["Lima", "Oslo", "I don't know", ""])]
    d = m.diversity(records)
    # paris x2, lima, oslo: refusals and empty answers left out
    assert d["answers"] == 4 and d["unique_answers"] == 3
    assert d["unique_share"] == 0.75 and d["top_answer_share"] == 0.5
    assert d["answer_entropy"] == pytest.approx(1.5)  # -(.5 log .5 + 2 x .25 log .25)
    assert d["top_answers"][0] == ["paris", 2]
    single = m.diversity([rec("a", HK, ["Rome", "Rome"])])
    assert single["answer_entropy"] == 0.0 and math.copysign(1, single["answer_entropy"]) == 1
    empty = m.diversity([rec("a", UK, ["I don't know"])])
    assert (
        empty["unique_answers"] == 0 and empty["answer_entropy"] is None and empty["top_answer_share"] is None
    )


def test_explosion_lists_answers_more_frequent_than_the_base_maximum():
    base = [rec("a", HK, ["Paris", "Paris"]), rec("b", UK, ["Lima", "I don't know"]), rec("z", UK, ["Z"] * 9)]
    after = [rec("a", HK, ["Rome", "Paris"]), rec("b", UK, ["Rome", "Rome"])]
    e = m.explosion(base, after)  # "z" is not among the facts compared: the base maximum is paris x2
    assert e["base_max_count"] == 2 and e["value"] == 1
    assert e["answers"] == [["rome", 3]] and e["share"] == 0.75
    assert m.explosion(base, base[:2])["value"] == 0


def test_confidence_is_mean_probability_of_greedy_answers():
    records = [
        rec("a", MK, ["Paris", "Lima"], logprobs=[math.log(0.5), math.log(0.25)], correct=[True, False]),
        rec("b", UK, ["x"]),  # no log-probs: not counted
    ]
    c = m.confidence(records)
    assert c["value"] == pytest.approx(0.375) and c["incorrect"] == pytest.approx(0.25) and c["answers"] == 2


def test_compare_knowledge_sets_every_number_beside_the_measurement_null():
    null = [rec("a", HK), rec("b", HK), rec("c", UK), rec("d", UK), rec("e", UK), rec("f", UK)]
    out = m.compare_knowledge(BEFORE, AFTER, {"a", "b", "c", "d", "e", "f"}, null)
    assert out["n"] == 6
    pos, neg = out["positive_shift"], out["negative_shift"]
    assert pos["metric"] == "positive_shift" and pos["value"] == 0.5 and pos["base"] == 0.0
    assert neg["value"] == pytest.approx(1 / 3) and neg["base"] == pytest.approx(1 / 3)  # c MK->UK
    assert neg["delta"] == pytest.approx(0.0)
    assert neg["moves"]["MaybeKnown->Unknown"] == {
        "count": 0,
        "share": 0.0,
        "base_count": 1,
        "base_share": 1.0,
    }
    assert out["retention"]["value"] == 0.5 and out["retention"]["base"] == 1.0
    assert out["transitions"]["counts"][HK][UK] == 1 and out["transitions"]["base"]["counts"][MK][UK] == 1
    alone = m.compare_knowledge(BEFORE, AFTER)
    assert alone["positive_shift"]["base"] is None and alone["transitions"]["base"] is None


def test_compare_behaviour_before_and_after():
    before = [rec("a", UK, ["I don't know", "Paris"]), rec("b", UK, ["Lima", "Lima"])]
    after = [rec("a", HK, ["Rome", "Rome"]), rec("b", HK, ["Rome", "Lima"])]
    out = m.compare_behaviour(before, after)
    assert out["refusal_rate"] == {
        "metric": "refusal_rate",
        "value": 0.0,
        "base": 0.25,
        "delta": -0.25,
        "answers": 4,
    }
    assert out["explosion"]["value"] == 1 and out["explosion"]["answers"] == [["rome", 3]]
    assert out["explosion"]["base"] is None  # no null probe given: no measurement null
    assert out["unique_answers"]["value"] == 2 and out["unique_answers"]["base"] == 2
    alone = m.compare_behaviour(None, after)
    assert alone["refusal_rate"]["base"] is None and "explosion" not in alone
    assert m.compare_behaviour(before, after, ids={"b"})["n"] == 1


def test_every_metric_has_a_definition():
    with pytest.raises(KeyError):
        m.metric("no_such_metric", 1.0, 0.0)
    entry = m.metric("reliability", 0.9, 0.0, n=3)
    assert entry == {"metric": "reliability", "value": 0.9, "base": 0.0, "delta": 0.9, "n": 3}
    assert m.metric("reliability", None, 0.0)["delta"] is None


def test_prompt_sensitivity_stands_beside_the_null_as_context():
    null = list(BEFORE)  # a greedy null: the base probe again, nothing moves
    # two exemplar redraws: the first loses c (MK->UK), the second moves nothing
    prompts = [rec("a", HK), rec("b", HK), rec("c", UK), rec("d", UK), rec("e", UK), rec("f", UK)]
    out = m.compare_knowledge(BEFORE, AFTER, None, null, [prompts, list(BEFORE)])
    neg, kept = out["negative_shift"], out["retention"]
    assert neg["base"] == 0.0 and neg["baseline"] == "measurement_null"
    assert neg["baselines"] == {"prompt_sensitivity": pytest.approx(1 / 6)}  # mean of 1/3 (c of a, b, c), 0
    assert neg["prompt_sensitivity"]["draws"] == [pytest.approx(1 / 3), 0.0]
    low, high = neg["prompt_sensitivity"]["interval"]  # Student-t over 2 redraws: t(0.975, 1) = 12.706
    assert high - 1 / 6 == pytest.approx(12.7062 / 6, rel=1e-4)  # the standard error: 1/6
    assert low == pytest.approx(1 / 3 - high)
    assert kept["value"] == 0.5 and kept["base"] == 1.0
    assert kept["baselines"]["prompt_sensitivity"] == 1.0
    assert out["transitions"]["base"]["unchanged"] == 1.0
    assert out["transitions"]["prompt_sensitivity"]["counts"][MK][UK] == 1  # the first redraw's
    ev = {"knowledge_shift": {"all": out}}
    assert m.metric_value(ev, "retention", scope="all") == (0.5, 1.0)
    assert m.metric_value(ev, "retention", against="prompt_sensitivity", scope="all") == (0.5, 1.0)
    assert m.metric_value(ev, "negative_shift", against="prompt_sensitivity", scope="all")[1] == (
        pytest.approx(1 / 6)
    )
    with pytest.raises(KnowpackError, match="refusal_rate is not read against prompt_sensitivity"):
        m.metric_value(ev, "refusal_rate", against="prompt_sensitivity")


def test_an_eval_json_from_before_the_baselines_reads_its_noise_floor_as_prompt_sensitivity():
    old = {"knowledge_shift": {"untrained": {"retention": {"value": 0.6, "base": 0.9}}, "noise_floor": {}}}
    assert m.metric_baselines(old, "retention") == {"prompt_sensitivity": 0.9}
    assert m.metric_value(old, "retention", against="prompt_sensitivity") == (0.6, 0.9)
    assert m.metric_value(old, "retention", against="measurement_null") == (0.6, None)


def test_against_control_compares_on_the_facts_given():
    # the control lost b (HK->UK) like the run, but not a: the run's retention 0.5 vs the control's 0.5 on
    # {a, b}; on {a} alone both kept it
    control = [rec("a", HK), rec("b", UK), rec("c", MK), rec("d", UK), rec("e", UK), rec("f", WK)]
    out = m.against_control(BEFORE, AFTER, control, {"a", "b", "c", "d"})
    assert out["retention"] == {"metric": "retention", "value": 0.5, "base": 0.5, "delta": 0.0, "n": 4}
    assert out["positive_shift"]["value"] == 1.0 and out["positive_shift"]["base"] == 0.0  # c, d moved up
    assert out["refusal_rate"]["value"] == 0.0 and "reliability" not in out
    ev = {
        "knowledge_shift": {
            "untrained": {"retention": {"value": 0.5, "base": 1.0, "control": out["retention"]}}
        }
    }
    assert m.metric_value(ev, "retention", against="training_control") == (0.5, 0.5)
    assert m.metric_baselines(ev, "retention") == {"measurement_null": 1.0, "training_control": 0.5}


def test_trained_answers_take_a_share_of_untrained_answers():
    before = [rec("u", HK, ["Paris", "Paris", "Lima"]), rec("v", UK, ["I don't know", "Oslo", "Rome"])]
    after = [rec("u", HK, ["Rome", "Rome", "Paris"]), rec("v", UK, ["Rome", "Rome", "Oslo"])]
    # before: 5 answers proper (a refusal left out), 1 is the trained "rome"; after: 4 of 6; rome is the one
    # exploded answer (4 > the base's top count, paris 2) and a trained one
    out = m.trained_answers(before, after, {"u", "v"}, {"rome", "berlin"})
    assert out["value"] == pytest.approx(4 / 6) and out["base"] == pytest.approx(1 / 5)
    assert out["exploded"] == [["rome", 4, True]] and out["exploded_trained"] == 1
    assert out["exploded_share"] == pytest.approx(4 / 6) and out["base_exploded_share"] == pytest.approx(
        1 / 5
    )
    assert m.trained_answers(before, after, {"u"}, {"berlin"})["value"] == 0.0
    assert m.trained_answers(before, after, set(), {"rome"})["value"] is None


def test_soft_retention_is_the_mean_p_greedy_after_of_the_facts_highly_known_before():
    def probe(**p):  # id -> p_greedy; HighlyKnown at 1.0
        return [{**rec(i, HK if v == 1.0 else (UK if v == 0.0 else MK)), "p_greedy": v} for i, v in p.items()]

    before = probe(a=1.0, b=1.0, c=1.0, d=0.5, e=0.0)
    after = probe(a=1.0, b=0.9, c=0.0, d=1.0, e=1.0)
    null = probe(a=1.0, b=1.0, c=0.9, d=0.5, e=0.0)
    prompts = probe(a=0.8, b=1.0, c=1.0, d=0.0, e=0.0)
    assert m.retention_soft(before, after)["value"] == pytest.approx((1.0 + 0.9 + 0.0) / 3)
    assert m.retention_soft(before, after, ids={"a", "b"})["value"] == pytest.approx(0.95)
    assert m.retention_soft(before, after, ids={"d", "e"}) == {"value": None, "n": 0}  # none HighlyKnown
    entry = m.compare_knowledge(before, after, None, null, [prompts])["retention_soft"]
    assert entry["value"] == pytest.approx(1.9 / 3) and entry["base"] == pytest.approx(2.9 / 3)
    assert entry["baselines"]["prompt_sensitivity"] == pytest.approx(2.8 / 3)
    assert entry["prompt_sensitivity"]["interval"] is None  # one redraw: no interval
    assert entry["baseline"] == "measurement_null" and entry["n"] == 3
    assert m.compare_knowledge(before, after, None, null, [prompts])["retention"]["value"] == pytest.approx(
        1 / 3
    )
    assert "retention_soft" in m.headline("report") and "retention_soft" in m.headline("sweep")
