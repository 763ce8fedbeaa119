"""The probe's engine on the bundled organism: the same greedy answers as a plain `model.generate` on each
full prompt alone (tests/test_probe_engine.py shows it on tiny random Llama, Qwen2 and Mistral models)."""

from __future__ import annotations

import random

import pytest

import knowpack
from helpers import reference_greedy
from knowpack.probe.engine import Engine, Request, split_prefix
from knowpack.probe.prompts import build_prompts, encode

pytestmark = [pytest.mark.organism, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
MAX_NEW_TOKENS = 16  # longer than any answer of the world; both sides cut at the same length anyway


def test_greedy_answers_equal_model_generate_on_the_organism():
    model, tokenizer = knowpack.load_model("organism", device="cpu")
    facts = knowpack.load_facts("organism")
    rng = random.Random(0)
    sample = []  # 10 facts of each bucket: known, partly known, barely known, never seen (refusals)
    for bucket in ("head", "torso", "tail", "unseen"):
        sample += rng.sample([f for f in facts if f.bucket == bucket], 10)
    prompts = build_prompts(sample, tokenizer, n_prompts=2, shots=4, seed=0, exemplars=facts)
    requests, expected = [], {}
    for fact, fact_prompts in zip(sample, prompts, strict=True):
        for j, p in enumerate(fact_prompts):
            ids = encode(tokenizer, p.text, "plain")
            requests.append(
                Request((fact.id, j), ids, split_prefix(ids, encode(tokenizer, p.prefix, "plain")))
            )
            expected[(fact.id, j)] = reference_greedy(model, tokenizer, p.text, "plain", MAX_NEW_TOKENS)
    assert all(r.prefix_len > 0 for r in requests)
    # samples > 0: greedy rows decode beside sample rows from the same prefill, several prompts a batch
    engine = Engine(model, tokenizer, samples=4, max_new_tokens=MAX_NEW_TOKENS, batch_size=40)
    got = engine.generate(requests)
    assert {k: g.greedy for k, g in got.items()} == expected
    answers = set(expected.values())
    assert len(answers) > 20 and " I don't know." in answers  # real answers, and the organism's refusal
