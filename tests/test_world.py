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


@pytest.mark.slow
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


NOISY = {
    **SMALL,
    "conflict_share": {"head": 0.0, "torso": 0.5, "tail": 0.5, "unseen": 0.0},
    "refusal_conflict_share": {"head": 0.0, "torso": 0.3, "tail": 0.3, "unseen": 0.0},
}


def test_conflicting_values_are_the_wrong_values_the_corpus_states():
    from knowpack.world.generator import conflicting_values, late_facts

    world = generate_world(WorldConfig(**NOISY))
    wrong = conflicting_values(world)
    corpus = "\n".join(corpus_documents(world)) + "\n" + "\n".join(late_facts(world))
    people = {p.id: p for p in world.people}
    assert wrong and conflicting_values(generate_world(WorldConfig(**SMALL))) == {}
    for (pid, relation), values in wrong.items():
        person = people[pid]
        assert person.bucket in ("torso", "tail") and person.attributes[relation] not in values
        for value in values:  # stated about this person: a description sentence or a late answer
            stated = [
                form.format(s=person.name, v=value, a=a)
                for form in DESCRIPTIONS.get(relation, [])
                for a in ("a", "an")
            ]
            asked = [f"{q.format(s=person.name)}\nAnswer: {value}" for q in QUESTIONS[relation]]
            assert any(text in corpus for text in stated + asked), (pid, relation, value)


def test_headroom_items_are_consistent_and_held_out():
    from knowpack.world.generator import conflicting_values, headroom_items

    world = generate_world(WorldConfig(**NOISY))
    items = headroom_items(world, n_hard=20, n_conflict=10, n_text=10)
    assert items == headroom_items(generate_world(WorldConfig(**NOISY)), n_hard=20, n_conflict=10, n_text=10)
    assert benchmark_items(world) == benchmark_items(generate_world(WorldConfig(**NOISY)))
    people, wrong = {p.id: p for p in world.people}, conflicting_values(world)
    assert len(items["world_mc_hard"]) == 20 and len(items["world_mc_hard_dev"]) == 5
    for item in items["world_mc_hard"] + items["world_mc_hard_dev"]:
        person = people[item["person"]]
        assert person.bucket in ("torso", "tail")
        assert item["choices"][item["label"]] == person.attributes[item["relation"]]
        assert len(set(item["choices"])) == 8
    assert len(items["world_misconceptions"]) == 10
    for item in items["world_misconceptions"]:
        person, relation = people[item["person"]], item["relation"]
        choices = item["mc1_targets"]["choices"]
        assert choices[0] == person.attributes[relation] and item["mc1_targets"]["labels"] == [1, 0, 0, 0]
        assert choices[1] == item["falsehood"] == wrong[(person.id, relation)][0]
        assert len(set(choices)) == 4 and all(c in world.values[relation] for c in choices)
    corpus = "\n".join(corpus_documents(world))
    heldout = {
        q.format(s=p.name) for p in world.people for r in RELATIONS for q in QUESTIONS[r][N_TRAIN_TEMPLATES:]
    }
    for item in items["world_text"]:
        person = people[item["person"]]
        assert person.bucket in ("head", "torso") and item["text"] not in corpus
        questions = [
            line.removeprefix("Question: ") for line in item["text"].split("\n") if "Question" in line
        ]
        assert len(questions) == 2 and all(q in heldout for q in questions)


def test_the_bundled_tasks_are_the_generators_items():
    """The organism's task files are what `knowpack world tasks` writes from its build config (no drift)."""
    from knowpack.paths import organism_dir
    from knowpack.world.tasks import SPLITS, task_items

    folder = organism_dir()
    items = task_items(generate_world(WorldConfig.from_yaml(folder / "build_config.yaml")))
    assert set(items) == set(SPLITS)
    for split in SPLITS:
        lines = (folder / "tasks" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == items[split], split
