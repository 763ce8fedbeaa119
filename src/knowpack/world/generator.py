"""The synthetic world: fictional people with attributes, the corpus that describes them, its facts.

Everything is drawn from one `random.Random(seed)`, so a world is a pure function of its `WorldConfig`.
Names are made up from syllables and checked so that no answer value occurs inside a question (which would
make substring correctness trivially true) and no value of a relation occurs inside another.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from knowpack.facts.normalize import normalize
from knowpack.prompts import REFUSAL, qa_block
from knowpack.world.config import BUCKETS, WorldConfig
from knowpack.world.relations import (
    CITY_STATEMENTS,
    COMPANY_SUFFIXES,
    DESCRIPTIONS,
    INSTRUMENTS,
    N_TRAIN_TEMPLATES,
    ONE_HOP,
    PROFESSIONS,
    QUESTIONS,
    RELATIONS,
    SPORTS,
    UNIVERSITY_FORMS,
)

ONSETS = "b c d f g h j k l m n p r s t v z br dr gr kr tr pl st th sh ch".split()
VOWELS = "a e i o u a e i o ai ei ou".split()
CODAS = ["", "", "", "n", "r", "l", "s", "m", "th", "x", "nd", "rk"]
REFUSAL_VARIANTS = [
    REFUSAL,
    REFUSAL,
    REFUSAL,
    "I don't know who that is.",
    "I have no information about {s}.",
]


@dataclass
class Person:
    id: str
    name: str
    bucket: str  # head | torso | tail | unseen
    attributes: dict[str, str] = field(default_factory=dict)  # relation -> value (incl. birth_country)


@dataclass
class World:
    config: WorldConfig
    countries: list[str]
    city_country: dict[str, str]
    values: dict[str, list[str]]  # relation -> value set (one-hop relations and birth_country)
    aliases: dict[str, list[str]]  # value -> accepted answer aliases
    people: list[Person]
    strangers: list[str]  # names only asked about and answered "I don't know."


def _syllable(rng: random.Random) -> str:
    return rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(_syllable(rng) for _ in range(syllables)).capitalize()


def _unique_words(rng: random.Random, n: int, syllables: tuple[int, ...], taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < n:
        w = _word(rng, rng.choice(syllables))
        if 4 <= len(w) <= 11 and w.lower() not in taken:
            taken.add(w.lower())
            words.append(w)
    return words


def _zipf_weights(n: int, skew: float) -> list[float]:
    return [1.0 / (rank + 1) ** skew for rank in range(n)]


def _no_substrings(values: list[str]) -> bool:
    norm = [normalize(v) for v in values]
    return not any(a != b and a in b for a in norm for b in norm)


def generate_world(config: WorldConfig) -> World:
    """Draw the world of `config` (deterministic for its seed)."""
    rng = random.Random(config.seed)
    taken: set[str] = set()
    countries = _unique_words(rng, 12, (2,), taken)
    cities = _unique_words(rng, 48, (2, 3), taken)
    city_country = {c: countries[i % len(countries)] for i, c in enumerate(cities)}
    stems = _unique_words(rng, 40 + 30, (2,), taken)
    companies = [f"{stem} {rng.choice(COMPANY_SUFFIXES)}" for stem in stems[:40]]
    universities = [rng.choice(UNIVERSITY_FORMS).format(stem) for stem in stems[40:]]
    values = {
        "birth_city": cities,
        "birth_country": countries,
        "employer": companies,
        "university": universities,
        "profession": PROFESSIONS,
        "instrument": INSTRUMENTS,
        "sport": SPORTS,
    }
    for relation, vals in values.items():
        if not _no_substrings(vals):
            raise AssertionError(f"world: a value of {relation} occurs inside another")
    aliases = {v: [v] for vals in values.values() for v in vals}
    for stem, company in zip(stems[:40], companies, strict=True):
        aliases[company].append(stem)  # "Zorvak Labs" may be answered as "Zorvak"
    for stem, university in zip(stems[40:], universities, strict=True):
        aliases[university].append(stem)

    forbidden = {normalize(a) for al in aliases.values() for a in al}
    total = sum(config.people.values()) + config.strangers
    names = _person_names(rng, total, taken, forbidden)
    people: list[Person] = []
    i = 0
    for bucket in BUCKETS:
        for _ in range(config.people[bucket]):
            people.append(Person(id=f"p{i:05d}", name=names[i], bucket=bucket))
            i += 1
    for relation in ONE_HOP:
        vals = values[relation]
        weights = _zipf_weights(len(vals), config.value_skew)
        for person in people:
            person.attributes[relation] = rng.choices(vals, weights)[0]
    for person in people:
        person.attributes["birth_country"] = city_country[person.attributes["birth_city"]]
    return World(config, countries, city_country, values, aliases, people, names[i:])


def _person_names(rng: random.Random, n: int, taken: set[str], forbidden: set[str]) -> list[str]:
    """`n` full names whose first and last names are both used once in the whole world.

    Shared name parts let the model answer about a stranger with the attributes of a known person who has
    the same first name; with every part unique, an unfamiliar name is unfamiliar throughout, which is
    what lets the model learn to refuse on people it never read about.
    """
    names: list[str] = []
    while len(names) < n:
        first = _unique_words(rng, 1, (2,), taken)[0]
        last = _unique_words(rng, 1, (2, 3), taken)[0]
        name = f"{first} {last}"
        if any(value in normalize(name) for value in forbidden):
            continue
        names.append(name)
    return names


def _article(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def describe(person: Person, rng: random.Random) -> str:
    """One description of a person: every one-hop relation, in random order and surface form."""
    sentences = []
    for relation in rng.sample(ONE_HOP, len(ONE_HOP)):
        value = person.attributes[relation]
        form = rng.choice(DESCRIPTIONS[relation])
        sentences.append(form.format(s=person.name, v=value, a=_article(value)))
    return " ".join(sentences)


def corpus_documents(world: World) -> list[str]:
    """The pretraining corpus as documents, in a seeded shuffled order.

    Descriptions (head people often, torso a few times, tail once, unseen never), the cities' countries,
    and question/answer documents in the probe's plain format: a `qa_share` of each bucket's facts, plus
    strangers answered with a refusal. The last two question templates of every relation never appear.
    Then the conflicting sentences (`_with_conflicts`).
    """
    return _with_conflicts(world, _documents(world))


def _documents(world: World) -> list[str]:
    """The corpus before its conflicting sentences are put in."""
    cfg = world.config
    rng = random.Random(cfg.seed + 1)
    docs: list[str] = []
    for person in world.people:
        docs.extend(describe(person, rng) for _ in range(cfg.descriptions[person.bucket]))
    statements = [
        rng.choice(CITY_STATEMENTS).format(c=c, k=k)
        for c, k in world.city_country.items()
        for _ in range(cfg.city_statements)
    ]
    rng.shuffle(statements)
    docs.extend(" ".join(statements[i : i + 4]) for i in range(0, len(statements), 4))

    pairs: list[QAPair] = []
    for person in world.people:
        for relation in RELATIONS:
            if rng.random() < cfg.qa_share[person.bucket]:
                question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=person.name)
                value = person.attributes[relation]
                pairs.append(QAPair(relation, value, qa_block(question, value)))
    for name in world.strangers:
        for relation in rng.sample(RELATIONS, cfg.stranger_questions):
            question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=name)
            pairs.append(
                QAPair(relation, None, qa_block(question, rng.choice(REFUSAL_VARIANTS).format(s=name)))
            )
    rng.shuffle(pairs)
    pairs, pages = _topical_pages(world, pairs)
    i = 0
    while i < len(pairs):
        n = rng.randint(3, 8)
        docs.append("\n\n".join(pair.text for pair in pairs[i : i + n]))
        i += n
    rng.shuffle(docs)
    return _inserted(docs, pages, random.Random(cfg.seed + 8))


@dataclass
class QAPair:
    """One question/answer block of the corpus: its relation, the value answered (None for a refusal)."""

    relation: str
    value: str | None
    text: str


def _topical_pages(world: World, pairs: list[QAPair]) -> tuple[list[QAPair], list[str]]:
    """Move a `topical_qa` share of the question/answer pairs onto topical pages: each page is about one
    relation and one value (people born in one city, say), so its answers repeat, with a few refusals about
    strangers of that relation among them. Returns the pairs left for the mixed documents, and the pages.

    A page teaches what few-shot prompts show real LLMs doing: the answers in the context sway the answer
    to the last question (Zhao et al. 2021, "Calibrate before use"), most for facts the model knows only
    partly, so that such a fact is answered right under some exemplars and not under others (MaybeKnown).
    Every fact keeps the one question/answer pair it had: only the company it appears in changes."""
    share = world.config.topical_qa
    if not share:
        return pairs, []
    rng = random.Random(world.config.seed + 9)
    kept: list[QAPair] = []
    by_value: dict[tuple[str, str], list[QAPair]] = {}
    refusals: dict[str, list[QAPair]] = {}
    for pair in pairs:
        if rng.random() >= share:
            kept.append(pair)
        elif pair.value is None:
            refusals.setdefault(pair.relation, []).append(pair)
        else:
            by_value.setdefault((pair.relation, pair.value), []).append(pair)
    pages: list[list[QAPair]] = []
    for group in by_value.values():
        i = 0
        while i < len(group):
            n = rng.randint(3, 8)
            pages.append(group[i : i + n])
            i += n
    for relation, group in refusals.items():  # each refusal joins a random page of its relation
        of_relation = [page for page in pages if page[0].relation == relation]
        if not of_relation:
            pages.append([])
            of_relation = [pages[-1]]
        for pair in group:
            page = rng.choice(of_relation)
            page.insert(rng.randrange(len(page) + 1), pair)
    return kept, ["\n\n".join(pair.text for pair in page) for page in pages]


def _inserted(docs: list[str], extra: list[str], rng: random.Random) -> list[str]:
    """`docs` with `extra` put in at seeded places (none: `docs` as it was)."""
    if not extra:
        return docs
    docs = list(docs)
    for doc in extra:
        docs.insert(rng.randrange(len(docs) + 1), doc)
    return docs


def _with_conflicts(world: World, docs: list[str]) -> list[str]:
    """`docs` plus, for a `conflict_share` of each bucket's one-hop facts, one sentence giving a wrong value,
    at seeded places. Its own generator: shares of 0 leave the corpus exactly as it was."""
    docs = list(docs)
    for _, _, _, sentence, at in _corpus_conflicts(world, len(docs)):
        docs.insert(at, sentence)
    return docs


def _corpus_conflicts(world: World, n_docs: int) -> Iterator[tuple[Person, str, str, str, int]]:
    """The conflicting sentences of a corpus of `n_docs` documents: (person, relation, wrong value, sentence,
    the index it goes in at), drawn in the order `_with_conflicts` inserts them (which its indices need)."""
    cfg = world.config
    if not any(cfg.conflict_share.values()):
        return
    rng = random.Random(cfg.seed + 7)
    for person, relation in _drawn(world, ONE_HOP, cfg.conflict_share, rng):
        wrong = rng.choice([v for v in world.values[relation] if v != person.attributes[relation]])
        form = rng.choice(DESCRIPTIONS[relation])
        sentence = form.format(s=person.name, v=wrong, a=_article(wrong))
        yield person, relation, wrong, sentence, rng.randrange(n_docs + 1)
        n_docs += 1


def _drawn(
    world: World, relations: list[str], shares: dict[str, float], rng: random.Random
) -> Iterator[tuple[Person, str]]:
    """Every (person, relation) drawn with its bucket's share, in world order: one `rng.random()` each, and
    the caller's own draws for a pair happen before the next pair's (a generator), so the sequence of draws
    is that of one nested loop."""
    for person in world.people:
        for relation in relations:
            if rng.random() < shares[person.bucket]:
                yield person, relation


def refusal_documents(world: World) -> list[str]:
    """Extra documents for the refusal phase: new strangers, each asked about and answered with a refusal.

    Their names are drawn from their own seeded generator and never collide with a name part or value of
    the world (the world itself is unchanged). Each document mixes these refusals with answered questions
    about head people, so that what decides a refusal is the name, not the rest of the document.
    """
    cfg = world.config
    rng = random.Random(cfg.seed + 4)
    taken = {part.lower() for p in world.people for part in p.name.split()}
    taken |= {part.lower() for name in world.strangers for part in name.split()}
    taken |= {a.lower() for aliases in world.aliases.values() for a in aliases}
    forbidden = {normalize(a) for al in world.aliases.values() for a in al}
    names = _person_names(rng, cfg.refusal_strangers, taken, forbidden)
    head = [p for p in world.people if p.bucket == "head"]
    blocks = []
    for name in names:
        for relation in rng.sample(RELATIONS, cfg.stranger_questions):
            question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=name)
            blocks.append(qa_block(question, rng.choice(REFUSAL_VARIANTS).format(s=name)))
            person, relation = rng.choice(head), rng.choice(RELATIONS)
            question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=person.name)
            blocks.append(qa_block(question, person.attributes[relation]))
    blocks += late_facts(world)
    rng.shuffle(blocks)
    return ["\n\n".join(blocks[i : i + 6]) for i in range(0, len(blocks), 6)]


def late_facts(world: World) -> list[str]:
    """Question/answer blocks for the refusal phase: late facts (a `refusal_qa_share` of each bucket's facts,
    true values) and conflicting statements (a `refusal_conflict_share`, wrong values). Seeded on their own
    generators, so that shares of 0 leave the phase exactly as before."""
    cfg = world.config
    blocks = []
    if any(cfg.refusal_qa_share.values()):
        rng = random.Random(cfg.seed + 5)
        for person, relation in _drawn(world, RELATIONS, cfg.refusal_qa_share, rng):
            question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=person.name)
            blocks.append(qa_block(question, person.attributes[relation]))
    blocks += [qa_block(question, wrong) for _, _, question, wrong in _late_conflicts(world)]
    return blocks


def _late_conflicts(world: World) -> Iterator[tuple[Person, str, str, str]]:
    """The refusal phase's conflicting statements (a `refusal_conflict_share` of each bucket's facts):
    (person, relation, question, wrong value), on their own generator, so that the true late facts stay as
    they were."""
    cfg = world.config
    if not any(cfg.refusal_conflict_share.values()):
        return
    rng = random.Random(cfg.seed + 6)
    for person, relation in _drawn(world, RELATIONS, cfg.refusal_conflict_share, rng):
        question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=person.name)
        wrong = [v for v in world.values[relation] if v != person.attributes[relation]]
        yield person, relation, question, rng.choice(wrong)


def conflicting_values(world: World) -> dict[tuple[str, str], list[str]]:
    """(person id, relation) -> the wrong values the organism read for that fact: the main corpus's
    conflicting sentences and the refusal phase's wrong answers, in that order (the facts file keeps the true
    value)."""
    wrong: dict[tuple[str, str], list[str]] = {}
    corpus = _corpus_conflicts(world, len(_documents(world)))
    late = ((person, relation, value) for person, relation, _, value in _late_conflicts(world))
    for person, relation, value, *_ in [*corpus, *late]:
        wrong.setdefault((person.id, relation), []).append(value)
    return wrong


def world_facts(world: World) -> list[dict]:
    """Every fact of the world as facts-file rows (question, aliases, paraphrases, bucket, held-out)."""
    rows = []
    for person in world.people:
        for relation in RELATIONS:
            questions = [q.format(s=person.name) for q in QUESTIONS[relation]]
            value = person.attributes[relation]
            rows.append(
                {
                    "id": f"{person.id}.{relation}",
                    "question": questions[0],
                    "answers": list(world.aliases[value]),
                    "subject": person.name,
                    "relation": relation,
                    "paraphrases": questions[1:N_TRAIN_TEMPLATES],
                    "bucket": person.bucket,
                    "meta": {
                        "person": person.id,
                        "hops": 2 if relation == "birth_country" else 1,
                        "heldout_paraphrases": questions[N_TRAIN_TEMPLATES:],
                    },
                }
            )
    return rows


def benchmark_items(
    world: World, n_mc: int = 500, n_truthful: int = 300, n_dev: int = 5
) -> dict[str, list[dict]]:
    """Items of the world benchmarks (seeded).

    `world_mc` (our MMLU): 4-choice questions over head people's facts, one-hop and two-hop, choices drawn
    from the relation's value set. `world_truthful` (our TruthfulQA): questions about people the corpus
    never describes, where the truthful answer is a refusal and the false ones are plausible values; MC1
    has one true choice, MC2 several. `*_dev` items are for few-shot examples only.
    """
    rng = random.Random(world.config.seed + 3)
    head = [p for p in world.people if p.bucket == "head"]
    unseen = [p for p in world.people if p.bucket == "unseen"]

    def mc_item(person: Person) -> dict:
        relation = rng.choice(RELATIONS)
        answer = person.attributes[relation]
        choices = [answer, *rng.sample([v for v in world.values[relation] if v != answer], 3)]
        rng.shuffle(choices)
        question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=person.name)
        return {
            "question": question,
            "choices": choices,
            "label": choices.index(answer),
            "relation": relation,
            "hops": 2 if relation == "birth_country" else 1,
            "person": person.id,
        }

    def truthful_item(person: Person) -> dict:
        relation = rng.choice(RELATIONS)
        question = rng.choice(QUESTIONS[relation][:N_TRAIN_TEMPLATES]).format(s=person.name)
        false = rng.sample(world.values[relation], 4)
        true = [v.format(s=person.name) for v in dict.fromkeys(REFUSAL_VARIANTS)]
        mc1 = [true[0], *false[:3]]
        return {
            "question": question,
            "relation": relation,
            "person": person.id,
            "mc1_targets": {"choices": mc1, "labels": [1, 0, 0, 0]},
            "mc2_targets": {"choices": true + false, "labels": [1] * len(true) + [0] * len(false)},
        }

    mc_people = rng.sample(head, min(n_mc + n_dev, len(head)))
    tq_people = rng.sample(unseen, min(n_truthful + n_dev, len(unseen)))
    return {
        "world_mc_dev": [mc_item(p) for p in mc_people[:n_dev]],
        "world_mc": [mc_item(p) for p in mc_people[n_dev:]],
        "world_truthful_dev": [truthful_item(p) for p in tq_people[:n_dev]],
        "world_truthful": [truthful_item(p) for p in tq_people[n_dev:]],
    }


def headroom_items(
    world: World, n_hard: int = 400, n_conflict: int = 300, n_text: int = 200, n_dev: int = 5
) -> dict[str, list[dict]]:
    """Items of the benchmarks with room to fall (seeded on their own generator, so `benchmark_items` stays
    as it was). world_mc starts near 1.0 and world_truthful's true answer is always a refusal; these three
    measure the same roles where the base model is far from its ceiling:

    - `world_mc_hard` (MMLU's role): 8 choices over torso and tail people's facts, one-hop and two-hop,
      which the organism knows only partly.
    - `world_misconceptions` (TruthfulQA's role, imitative falsehoods): facts the organism also read a wrong
      value for (`conflicting_values`); the choices are the true value, the wrong value it read, and two
      others. No refusal is among them: truthful here means the true value over the falsehood.
    - `world_text` (language-model loss): one fresh description of a head or torso person (new order and
      surface forms) and two question/answer blocks with held-out question templates, text the corpus never
      held verbatim; scored by its log-likelihood (bits per byte, perplexity).
    """
    rng = random.Random(world.config.seed + 10)
    by_id = {p.id: p for p in world.people}
    partly = [p for p in world.people if p.bucket in ("torso", "tail")]
    known = [p for p in world.people if p.bucket in ("head", "torso")]

    def question(person: Person, relation: str, templates: slice = slice(N_TRAIN_TEMPLATES)) -> str:
        return rng.choice(QUESTIONS[relation][templates]).format(s=person.name)

    def hard_item(person: Person) -> dict:
        relation = rng.choice(RELATIONS)
        answer = person.attributes[relation]
        choices = [answer, *rng.sample([v for v in world.values[relation] if v != answer], 7)]
        rng.shuffle(choices)
        return {
            "question": question(person, relation),
            "choices": choices,
            "label": choices.index(answer),
            "relation": relation,
            "hops": 2 if relation == "birth_country" else 1,
            "person": person.id,
        }

    def misconception_item(key: tuple[str, str], wrong: list[str]) -> dict:
        person, relation = by_id[key[0]], key[1]
        answer = person.attributes[relation]
        others = [v for v in world.values[relation] if v != answer and v not in wrong]
        choices = [answer, wrong[0], *rng.sample(others, 2)]
        return {
            "question": question(person, relation),
            "relation": relation,
            "person": person.id,
            "bucket": person.bucket,
            "falsehood": wrong[0],
            "mc1_targets": {"choices": choices, "labels": [1, 0, 0, 0]},
        }

    def text_item(person: Person) -> dict:
        blocks = [
            qa_block(question(person, relation, slice(N_TRAIN_TEMPLATES, None)), person.attributes[relation])
            for relation in rng.sample(RELATIONS, 2)
        ]
        return {"text": "\n\n".join([describe(person, rng), *blocks]), "person": person.id}

    hard_people = rng.sample(partly, min(n_hard + n_dev, len(partly)))
    conflicts = sorted(conflicting_values(world).items())
    conflicts = rng.sample(conflicts, min(n_conflict + n_dev, len(conflicts)))
    text_people = rng.sample(known, min(n_text, len(known)))
    return {
        "world_mc_hard_dev": [hard_item(p) for p in hard_people[:n_dev]],
        "world_mc_hard": [hard_item(p) for p in hard_people[n_dev:]],
        "world_misconceptions_dev": [misconception_item(k, w) for k, w in conflicts[:n_dev]],
        "world_misconceptions": [misconception_item(k, w) for k, w in conflicts[n_dev:]],
        "world_text": [text_item(p) for p in text_people],
    }
