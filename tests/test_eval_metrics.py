"""The evaluation metrics pinned on hand-made probe records with known answers (no model): transition counts
and shares, positive / negative shift with their denominators, retention, refusal rate with configurable
patterns, answer diversity and entropy, explosion, confidence, three categories without samples, and the
eval.json entries (value beside base, noise floor as the base of a comparison)."""

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


def test_compare_knowledge_sets_every_number_beside_the_noise_floor():
    repeat = [rec("a", HK), rec("b", HK), rec("c", UK), rec("d", UK), rec("e", UK), rec("f", UK)]
    out = m.compare_knowledge(BEFORE, AFTER, {"a", "b", "c", "d", "e", "f"}, repeat)
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
    assert out["explosion"]["base"] is None  # no repeat probe given: no noise floor
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
