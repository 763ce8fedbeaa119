"""The world generator: deterministic for a seed, and a world whose facts are well-formed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from knowpack.errors import KnowpackError
from knowpack.facts import load_facts
from knowpack.facts.normalize import is_refusal, normalize
from knowpack.world.build import write_jsonl
from knowpack.world.config import WorldConfig
from knowpack.world.generator import benchmark_items, corpus_documents, generate_world, world_facts
from knowpack.world.relations import DESCRIPTIONS, N_TRAIN_TEMPLATES, ONE_HOP, QUESTIONS, RELATIONS

SMALL = {"people": {"head": 30, "torso": 20, "tail": 20, "unseen": 30}, "strangers": 10}


def test_same_seed_same_world_and_corpus():
    a, b = generate_world(WorldConfig(**SMALL)), generate_world(WorldConfig(**SMALL))
    assert world_facts(a) == world_facts(b)
    assert corpus_documents(a) == corpus_documents(b)
    assert benchmark_items(a) == benchmark_items(b)


def test_other_seed_other_world():
    a = generate_world(WorldConfig(**SMALL))
    b = generate_world(WorldConfig(**SMALL, seed=1))
    assert [p.name for p in a.people] != [p.name for p in b.people]


def test_default_world_meets_the_spec():
    world = generate_world(WorldConfig())
    names = [p.name for p in world.people] + world.strangers
    assert len(world.people) >= 2000
    assert len(set(names)) == len(names)
    assert len([r for r in RELATIONS if r != "birth_country"]) >= 6
    assert all(len(forms) >= 4 for forms in DESCRIPTIONS.values())
    assert all(len(qs) >= 10 for qs in QUESTIONS.values())
    assert {p.bucket for p in world.people} == {"head", "torso", "tail", "unseen"}


def test_descriptions_follow_popularity():
    world = generate_world(WorldConfig(**SMALL))
    text = "\n".join(corpus_documents(world))
    for person in world.people:
        # The first word of the name always opens a description sentence or follows "of"/"in" etc.
        seen = person.name in text
        assert seen == (person.bucket != "unseen"), person
    # Two-hop: the corpus states the cities' countries but descriptions never name a country.
    for person in world.people:
        if person.bucket == "tail":
            assert f"{person.name} was born in {person.attributes['birth_country']}" not in text


def test_heldout_paraphrases_never_in_corpus():
    world = generate_world(WorldConfig(**SMALL))
    text = "\n".join(corpus_documents(world))
    for fact in world_facts(world):
        assert fact["meta"]["heldout_paraphrases"]
        for question in fact["meta"]["heldout_paraphrases"]:
            assert question not in text
        assert len(fact["paraphrases"]) == N_TRAIN_TEMPLATES - 1


def test_facts_file_loads_and_no_answer_in_question(tmp_path):
    world = generate_world(WorldConfig(**SMALL))
    path = tmp_path / "facts.jsonl"
    write_jsonl(world_facts(world), path)
    facts = load_facts(path)  # strict: would raise on an answer inside its question, duplicates, ...
    assert len(facts) == len(world.people) * len(RELATIONS)
    for fact in facts:
        assert not any(normalize(a) in normalize(fact.question) for a in fact.answers)
        assert fact.bucket in {"head", "torso", "tail", "unseen"}


def test_benchmark_items_are_consistent():
    world = generate_world(WorldConfig(**SMALL))
    items = benchmark_items(world, n_mc=10, n_truthful=10)
    people = {p.id: p for p in world.people}
    for item in items["world_mc"]:
        person = people[item["person"]]
        assert person.bucket == "head"
        assert item["choices"][item["label"]] == person.attributes[item["relation"]]
        assert len(set(item["choices"])) == 4
    for item in items["world_truthful"]:
        assert people[item["person"]].bucket == "unseen"
        assert item["mc1_targets"]["labels"] == [1, 0, 0, 0]
        assert sum(item["mc2_targets"]["labels"]) >= 2


def test_config_rejects_unknown_keys(tmp_path):
    from knowpack.errors import KnowpackError

    path = tmp_path / "w.yaml"
    path.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(KnowpackError, match="unknown key"):
        WorldConfig.from_yaml(path)


def test_late_facts_in_the_refusal_phase():
    from knowpack.world.generator import late_facts, refusal_documents

    plain = generate_world(WorldConfig(**SMALL))
    assert late_facts(plain) == []
    late = generate_world(
        WorldConfig(**SMALL, refusal_qa_share={"head": 0, "torso": 0, "tail": 1.0, "unseen": 0})
    )
    blocks = late_facts(late)
    tail = [p for p in late.people if p.bucket == "tail"]
    assert len(blocks) == len(tail) * len(RELATIONS)
    names = {p.name for p in tail}
    assert all(any(n in b for n in names) for b in blocks)
    assert all(b in "\n\n".join(refusal_documents(late)) for b in blocks[:20])
    with pytest.raises(KnowpackError, match="unseen"):
        WorldConfig(**SMALL, refusal_qa_share={"head": 0, "torso": 0, "tail": 0, "unseen": 0.5})

    shares = {"head": 0, "torso": 0, "tail": 1.0, "unseen": 0}
    noisy = generate_world(WorldConfig(**SMALL, refusal_conflict_share=shares))
    conflicts = late_facts(noisy)
    assert len(conflicts) == len(tail) * len(RELATIONS)  # one wrong statement per tail fact
    for block in conflicts:
        question, answer = block.removeprefix("Question: ").split("\nAnswer: ")
        asked = [
            (p, r)
            for p in noisy.people
            for r in RELATIONS
            if question in {q.format(s=p.name) for q in QUESTIONS[r]}
        ]
        assert len(asked) == 1 and asked[0][0].bucket == "tail"
        person, relation = asked[0]
        assert answer != person.attributes[relation] and answer in noisy.values[relation]


def test_conflicting_sentences_in_the_main_corpus():
    plain = generate_world(WorldConfig(**SMALL))
    assert "conflict_share" in dataclasses.asdict(plain.config)
    base_docs = corpus_documents(plain)
    shares = {"head": 0, "torso": 0, "tail": 1.0, "unseen": 0}
    noisy = generate_world(WorldConfig(**SMALL, conflict_share=shares))
    docs = corpus_documents(noisy)
    added = list(docs)
    for doc in base_docs:  # the corpus is the same but for the added sentences, in the same order
        added.remove(doc)
    tail = [p for p in noisy.people if p.bucket == "tail"]
    assert len(added) == len(tail) * len(ONE_HOP)  # one wrong sentence per tail one-hop fact
    for sentence in added:
        (person,) = [p for p in noisy.people if p.name in sentence]
        assert person.bucket == "tail"
        assert not any(person.attributes[r] in sentence for r in ONE_HOP)  # never a true value
    with pytest.raises(KnowpackError, match="unseen"):
        WorldConfig(**SMALL, conflict_share={"head": 0, "torso": 0, "tail": 0, "unseen": 0.5})


def test_topical_pages_group_answers_by_relation_and_value():
    plain = generate_world(WorldConfig(**SMALL))
    assert corpus_documents(plain) == corpus_documents(generate_world(WorldConfig(**SMALL, topical_qa=0.0)))
    world = generate_world(WorldConfig(**SMALL, topical_qa=1.0))
    docs = corpus_documents(world)
    qa_docs = [d for d in docs if d.startswith("Question: ")]
    assert qa_docs, "every question/answer pair is on a topical page"
    refusals = 0
    for page in qa_docs:
        answers = [block.split("\nAnswer: ")[1] for block in page.split("\n\n")]
        refusals += sum(map(is_refusal, answers))
        assert len({a for a in answers if not is_refusal(a)}) <= 1, page  # one value per page
    assert refusals == len(world.strangers) * world.config.stranger_questions

    # The same pairs as the mixed corpus, only regrouped: every fact keeps its exposure.
    def blocks(documents):
        return sorted(b for d in documents if d.startswith("Question: ") for b in d.split("\n\n"))

    assert blocks(docs) == blocks(corpus_documents(plain))
    with pytest.raises(KnowpackError, match="topical_qa"):
        WorldConfig(**SMALL, topical_qa=1.5)
