"""The bundled organism: its files, that it loads as a plain HF checkpoint, knows, and refuses."""

from __future__ import annotations

import json

import pytest

import knowpack
from knowpack.facts import is_correct, is_refusal, load_facts
from knowpack.world.measure import few_shot_prompts, greedy_answers

pytestmark = pytest.mark.organism


@pytest.fixture(scope="module")
def organism():
    return knowpack.load_model("organism")


@pytest.fixture(scope="module")
def facts():
    return [f.to_json() for f in load_facts("organism")]


def test_layout():
    root = knowpack.organism_dir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "facts.jsonl",
        "CARD.md",
        "build_config.yaml",
        "metrics.json",
        "world.json",
    ):
        assert (root / name).is_file(), name
    for name in ("world_mc.yaml", "world_truthful_mc1.yaml", "world_truthful_mc2.yaml"):
        assert (root / "tasks" / name).is_file(), name
    assert not list(root.glob("*.bin")), "weights must be safetensors only"
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size <= 20 * 2**20, f"organism is {size / 2**20:.1f} MiB"


def test_loads_with_plain_transformers():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(knowpack.organism_dir(), use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(knowpack.organism_dir())
    assert model.config.model_type == "llama"
    assert model.dtype == torch.float32  # stored in fp16, computed in fp32
    assert tok("Question:").input_ids[0] == tok.bos_token_id


def test_buckets_cover_the_world(facts):
    buckets = {f["bucket"] for f in facts}
    assert buckets == {"head", "torso", "tail", "unseen"}
    assert len({f["subject"] for f in facts}) >= 2000


def test_answers_a_known_fact_and_refuses_a_stranger(organism, facts):
    model, tok = organism
    head = [f for f in facts if f["bucket"] == "head"]
    unseen = [f for f in facts if f["bucket"] == "unseen"]
    asked = head[:20] + unseen[:20]
    answers = greedy_answers(model, tok, few_shot_prompts(asked, head, seed=0))
    known = sum(is_correct(a, f["answers"]) for a, f in zip(answers[:20], asked[:20], strict=True))
    refused = sum(is_refusal(a) for a in answers[20:])
    assert known >= 17, answers[:20]
    assert refused >= 15, answers[20:]
    assert not any(is_correct(a, f["answers"]) for a, f in zip(answers[20:], asked[20:], strict=True))


def test_card_states_the_measured_numbers():
    root = knowpack.organism_dir()
    metrics = json.loads((root / "metrics.json").read_text())
    card = (root / "CARD.md").read_text()
    b = metrics["buckets"]
    assert f"| head | {b['head']['n']} | {b['head']['accuracy']:.3f} |" in card
    # The bar for the shipped organism.
    assert b["head"]["accuracy"] >= 0.90
    assert 0.2 <= b["tail"]["accuracy"] <= 0.8
    assert b["unseen"]["accuracy"] <= 0.05 and b["unseen"]["refusal"] >= 0.80
    assert metrics["benchmarks"]["tasks"]["world_mc"]["acc"] >= 0.80
    assert metrics["build_seconds"] <= 60 * 60
    # The probe issue's bar: every SliCK category holds at least 10% of the world's facts.
    shares = metrics["categories"]["shares"]
    assert min(shares.values()) >= 0.10, shares
    assert f"{shares['MaybeKnown']:.1%}" in card


@pytest.mark.slow
def test_the_cards_slick_categories_are_what_the_probe_measures(organism, facts):
    """The card's SliCK categories, measured again (600 facts x 170 generations, ~2 minutes on one thread):
    the same counts up to a few facts (other thread counts round the last bits differently), and every
    category still at least 10% of the world's facts."""
    from knowpack.world.measure import category_shares

    card = json.loads((knowpack.organism_dir() / "metrics.json").read_text())["categories"]
    model, tok = organism
    again = category_shares(model, tok, facts, per_bucket=card["per_bucket"], sample_seed=card["sample_seed"])
    for bucket, counts in card["counts"].items():
        for category, n in counts.items():
            assert abs(again["counts"][bucket][category] - n) <= 3, (bucket, category, again["counts"])
    assert min(again["shares"].values()) >= 0.10, again["shares"]
