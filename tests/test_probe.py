"""The probe's parts that need no model: exemplar rules, the chat format, categories, shards, transitions."""

from __future__ import annotations

import pytest

from helpers import probe_world
from knowpack.errors import KnowpackError
from knowpack.facts import Fact
from knowpack.probe import category, parse_shard, read_records, score, transition_matrix
from knowpack.probe.engine import _rank_hashes, _uniform, split_prefix
from knowpack.probe.prompts import SYSTEM, build_prompts, render
from knowpack.prompts import plain_prompt


class NoTemplate:
    chat_template = None
    name_or_path = "tiny"


class Recorder:
    """Renders chat messages as text, to check what the probe hands the template."""

    chat_template = "x"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_exemplars_same_relation_never_the_fact_nor_its_subject():
    facts = probe_world()
    by_id = {f.id: f for f in facts}
    prompts = build_prompts(facts, NoTemplate(), n_prompts=5, shots=3, seed=0)
    for fact, row in zip(facts, prompts, strict=True):
        assert len(row) == 5
        for p in row:
            chosen = [by_id[i] for i in p.exemplars]
            assert len(chosen) == 3
            assert all(e.relation == fact.relation and e.subject != fact.subject for e in chosen)
            assert p.text == plain_prompt([(e.question, e.answer) for e in chosen], fact.question)
            assert p.text.startswith(p.prefix) and p.prefix.endswith("\n\nQuestion: ")


def test_exemplars_are_fixed_per_prompt_index_by_the_seed():
    facts = probe_world(12)
    a = build_prompts(facts, NoTemplate(), n_prompts=4, shots=2, seed=0)
    b = build_prompts(facts[::-1], NoTemplate(), n_prompts=4, shots=2, seed=0)[::-1]
    c = build_prompts(facts, NoTemplate(), n_prompts=4, shots=2, seed=1)
    assert a == b  # not dependent on the order or the other facts asked
    assert a != c
    # Under one prompt index, most facts of a relation share the exemplars, hence the prefix.
    born = [row[0].exemplars for f, row in zip(facts, a, strict=True) if f.relation == "born"]
    assert max(born.count(e) for e in set(born)) >= len(born) - 3
    assert len({row[j].exemplars for row in a[:1] for j in range(4)}) > 1  # prompts differ


def test_too_few_of_a_relation_falls_back_to_the_whole_pool():
    facts = probe_world(3, relations=("born",)) + [Fact("rare", "Q rare?", ["zzz"], "someone", "rare")]
    prompts = build_prompts(facts, NoTemplate(), n_prompts=2, shots=2, seed=0)
    for p in prompts[-1]:
        assert "rare" not in p.exemplars and len(p.exemplars) == 2
    with pytest.raises(KnowpackError, match="only 3 eligible exemplar"):
        build_prompts(facts, NoTemplate(), n_prompts=1, shots=4, seed=0)


def test_an_exemplar_pool_of_other_facts():
    facts, pool = probe_world(2), probe_world(8)[4:]
    prompts = build_prompts(facts, NoTemplate(), n_prompts=2, shots=3, exemplars=pool)
    pool_ids = {f.id for f in pool}
    assert all(set(p.exemplars) <= pool_ids for row in prompts for p in row)


def test_chat_format_messages_and_missing_template():
    facts = probe_world(4)
    p = build_prompts(facts, Recorder(), n_prompts=1, shots=1, fmt="chat")[0][0]
    assert p.text.startswith(f"<system>{SYSTEM}</system><user>Question: ")
    assert "<assistant>Answer: " in p.text
    assert p.text.endswith(f"<user>Question: {facts[0].question}</user><assistant>")
    assert p.text.startswith(p.prefix) and p.prefix.endswith("<user>Question: ")
    with pytest.raises(KnowpackError, match="tokenizer .tiny. has no chat template; use plain prompts"):
        build_prompts(facts, NoTemplate(), fmt="chat")
    assert render([("a?", "b")], "c?", None, "plain") == plain_prompt([("a?", "b")], "c?")


@pytest.mark.parametrize(
    ("greedy", "samples", "expected", "p_greedy", "p_sample"),
    [
        (["Paris", "Paris."], [["x"], ["y"]], "HighlyKnown", 1.0, 0.0),
        (["Paris", "Lyon"], [["x"], ["y"]], "MaybeKnown", 0.5, 0.0),
        (["Lyon", "Rome"], [["x", "Paris"], ["y", "z"]], "WeaklyKnown", 0.0, 0.25),
        (["Lyon", "Rome"], [["x", "w"], ["y", "z"]], "Unknown", 0.0, 0.0),
        (["Lyon", "Rome"], [[], []], "Unknown", 0.0, None),  # --samples 0: three categories
        (["Answer: the city of Paris\nRome"], [[]], "HighlyKnown", 1.0, None),
        (["Rome\nParis"], [[]], "Unknown", 0.0, None),  # only the first line counts
    ],
)
def test_categories(greedy, samples, expected, p_greedy, p_sample):
    scored = score(greedy, samples, ["Paris"])
    assert (scored["category"], scored["p_greedy"], scored["p_sample"]) == (expected, p_greedy, p_sample)


def test_exact_mode_and_refusals():
    scored = score(["the city of Paris", "Paris"], [["I don't know.", "Paris"], ["no idea", "x"]], ["Paris"])
    assert scored["greedy_correct"] == [True, True]
    exact = score(["the city of Paris", "Paris"], [[], []], ["Paris"], mode="exact")
    assert exact["category"] == "MaybeKnown"
    assert scored["sample_refusal"] == [1, 1] and scored["greedy_refusal"] == [False, False]
    assert category(0.0, None) == "Unknown" and category(0.0, 0.1) == "WeaklyKnown"


@pytest.mark.parametrize("spec", ["3/2", "2/2", "-1/2", "a/b", "1", "1/2/3", "0/0"])
def test_bad_shards_are_one_line_errors(spec):
    with pytest.raises(KnowpackError, match="bad shard") as err:
        parse_shard(spec)
    assert "\n" not in str(err.value)


def test_transition_matrix_counts_and_row_shares():
    a = [{"id": "1", "category": "HighlyKnown"}, {"id": "2", "category": "HighlyKnown"}]
    a += [{"id": "3", "category": "Unknown"}, {"id": "4", "category": "Unknown"}]
    b = [{"id": "1", "category": "HighlyKnown"}, {"id": "2", "category": "MaybeKnown"}]
    b += [{"id": "3", "category": "Unknown"}, {"id": "5", "category": "Unknown"}]
    m = transition_matrix(a, b)
    assert m["n"] == 3 and m["unchanged"] == pytest.approx(2 / 3)
    assert m["counts"]["HighlyKnown"] == {"HighlyKnown": 1, "MaybeKnown": 1, "WeaklyKnown": 0, "Unknown": 0}
    assert m["shares"]["HighlyKnown"]["MaybeKnown"] == 0.5 and m["shares"]["Unknown"]["Unknown"] == 1.0
    # No fact was WeaklyKnown before: its row's shares are undefined (None), not 0 (a metric over no facts).
    assert m["shares"]["WeaklyKnown"] == dict.fromkeys(m["shares"]["WeaklyKnown"], None)


def test_read_records_torn_line_and_corruption(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n{"id": "c", "cat')
    assert [r["id"] for r in read_records(path, repair=True)] == ["a", "b"]
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n'
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(KnowpackError, match="records.jsonl:2: not a probe record"):
        read_records(path)


def test_split_prefix_and_sampling_noise():
    import torch

    assert split_prefix([1, 5, 6, 7, 8], [1, 5, 6]) == 3
    assert split_prefix([1, 5, 6, 7, 8], [1, 5, 9]) == 2  # e.g. "\n\n" one token alone, two before text
    assert split_prefix([1, 5, 6], [1, 5, 6]) == 2  # at least one token left to feed
    assert split_prefix([1, 5], [2]) == 0
    keys = torch.tensor([0, 1, 2**32 - 1])
    ranks = _rank_hashes(1000, "cpu")
    u = _uniform(keys, 3, ranks)
    assert u.shape == (3, 1000)
    assert torch.equal(u, _uniform(keys, 3, ranks)) and not torch.equal(u, _uniform(keys, 4, ranks))
    assert 0 < u.min() and u.max() < 1 and abs(u.mean().item() - 0.5) < 0.02
