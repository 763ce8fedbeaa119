"""Held-out evaluation (docs/design.md §5.3): LoKI's attribution prompts are never items a benchmark scores.

From the shipped files alone (no model): world_mc's and geo_mc's attribution prompts are their attribution
splits, under item ids after the test split's, and share no question with the items lm-eval scores. With a
tiny model: the attribution summary records the prompt ids it attributed, and a benchmark run records the doc
ids it scored, in the same ids, disjoint. (The organism LoKI run end to end: tests/test_demo.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from knowpack.heldout import ATTRIBUTION, split_attribution
from knowpack.methods.loki.prompt_sets import load_prompts
from knowpack.paths import geo_dir, organism_dir

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = {"world_mc": organism_dir, "geo_mc": geo_dir}


def rows(folder, name):
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text("utf-8").splitlines()]


@pytest.mark.parametrize("task", TASKS)
def test_attribution_prompts_are_a_split_the_task_never_scores(task):
    folder = TASKS[task]() / "tasks"
    scored, held = rows(folder, task), rows(folder, f"{task}_attribution")
    assert len(held) == ATTRIBUTION[task] and len(scored) == {"world_mc": 200, "geo_mc": 300}[task]
    prompts = load_prompts(task, tokenizer=None)  # the bundled tasks need no tokenizer
    ids = [p.id for p in prompts]
    assert ids == list(range(len(scored), len(scored) + len(held)))  # the task's own item ids
    assert not set(ids) & set(range(len(scored)))  # lm-eval's doc ids of the test split, with any limit
    asked = {p.text.rsplit("Question: ", 1)[1].removesuffix("\nAnswer:") for p in prompts}
    assert asked == {r["question"] for r in held} and not asked & {r["question"] for r in scored}
    # the yaml reads only the test and dev splits: the attribution split is no lm-eval split
    assert f"{task}_attribution" not in (folder / "utils.py").read_text()


def test_the_split_keeps_the_first_items_for_the_test_and_at_most_half_for_attribution():
    items = {"geo_mc": list(range(395)), "geo_mc_dev": [0]}
    split = split_attribution(items, "geo_mc")
    assert split["geo_mc"] == list(range(300)) and split["geo_mc_attribution"] == list(range(300, 395))
    small = split_attribution({"world_mc": list(range(9))}, "world_mc")  # a tiny world: half at most
    assert small["world_mc"] == list(range(5)) and small["world_mc_attribution"] == [5, 6, 7, 8]


@pytest.mark.slow
def test_attribution_records_its_prompt_ids_and_a_benchmark_its_doc_ids_disjoint(tmp_path):
    """geo_mc on a tiny random Llama: attribute the real model's preset prompts (the first of the
    attribution split), score the benchmark with a limit as the presets do; both ids recorded, disjoint."""
    from knowpack.evaluate.benchmarks import compare_benchmarks, run_benchmarks
    from knowpack.methods.loki.attribution import attribute
    from tiny import tiny_model, tiny_tokenizer

    folder = geo_dir() / "tasks"
    texts = [f"Question: {r['question']}\nAnswer: {' '.join(r['choices'])}" for r in rows(folder, "geo_mc")]
    tokenizer = tiny_tokenizer(texts, tmp_path / "tok", chat=False)
    torch.manual_seed(0)
    model = tiny_model("llama", tokenizer).eval()
    prompts = load_prompts("geo_mc", tokenizer)[:3]
    attribute(model, tokenizer, prompts, out=tmp_path / "kva", source="geo_mc")
    summary = json.loads((tmp_path / "kva" / "summary.json").read_text())
    assert summary["prompt_ids"] == [300, 301, 302]
    scored = run_benchmarks(model, tokenizer, ["geo_mc"], limit=4, batch_size=4)
    block = compare_benchmarks(scored, None)
    assert block["doc_ids"] == {"geo_mc": [0, 1, 2, 3]} == scored["doc_ids"]
    assert not set(summary["prompt_ids"]) & set(block["doc_ids"]["geo_mc"])
