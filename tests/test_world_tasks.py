"""The world benchmarks as local lm-eval tasks, run on a tiny random Llama through `run_benchmarks`.

The scores lm-eval reports are checked against a plain-torch reference that scores the organism's plain
prompt format directly, so a drift in the task YAMLs (prompt, delimiters, shots, MC2 scoring) shows up here.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from helpers import choice_lls
from knowpack.prompts import plain_prompt
from knowpack.world.config import WorldConfig
from knowpack.world.generator import generate_world
from knowpack.world.tasks import SPLITS, task_items, write_tasks

WORLD_TASKS = ["world_mc", "world_truthful_mc1", "world_truthful_mc2"]
HEADROOM_TASKS = ["world_mc_hard", "world_misconceptions", "world_text"]


@pytest.fixture(scope="module")
def items() -> dict[str, list[dict]]:
    noise = {"head": 0.0, "torso": 0.5, "tail": 0.5, "unseen": 0.0}
    world = generate_world(
        WorldConfig(
            people={"head": 20, "torso": 15, "tail": 15, "unseen": 20}, strangers=5, conflict_share=noise
        )
    )
    # 5 dev + 15 test items of world_mc and world_truthful (20 head / 20 unseen people), 25 of world_mc_hard
    # (torso and tail), the facts read wrongly for world_misconceptions, 35 texts (head and torso)
    return task_items(world)


@pytest.fixture(scope="module")
def tiny(items, tmp_path_factory):
    """A random 2-layer Llama and a byte-level BPE trained on the items' text, as the organism's is."""
    from knowpack.world.tokenizer import train_tokenizer
    from tiny import tiny_model

    texts = [
        it.get("question", "") + " " + " ".join(it.get("choices", []))
        for split in items.values()
        for it in split
    ]
    texts += [" ".join(it["mc2_targets"]["choices"]) for it in items["world_truthful"]]
    texts += [
        it["question"] + " " + " ".join(it["mc1_targets"]["choices"]) for it in items["world_misconceptions"]
    ]
    texts += [it["text"] for it in items["world_text"]]
    tokenizer = train_tokenizer(texts, vocab_size=400, out=tmp_path_factory.mktemp("tokenizer"))
    return tiny_model("llama", tokenizer), tokenizer


@pytest.fixture(scope="module")
def world_run(items, tiny, tmp_path_factory):
    """One lm-eval run over the six world tasks (shared by the tests below: lm-eval is slow to start)."""
    from knowpack.evaluate.benchmarks import run_benchmarks

    model, tokenizer = tiny
    task_dir = tmp_path_factory.mktemp("tasks")
    write_tasks(items, task_dir)
    model.train()  # run_benchmarks must hand it back in the mode it came in
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_OFFLINE", "1")
        summary = run_benchmarks(
            model, tokenizer, WORLD_TASKS + HEADROOM_TASKS, include_path=task_dir, batch_size=8
        )
    return summary


def test_write_tasks_files(items, tmp_path):
    from lm_eval.tasks import TaskManager

    write_tasks(items, tmp_path / "built")
    for name in SPLITS:
        lines = (tmp_path / "built" / f"{name}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == items[name]
    # The data is found relative to the folder, wherever it ends up.
    (tmp_path / "built").rename(tmp_path / "installed")
    manager = TaskManager(include_path=str(tmp_path / "installed"), include_defaults=False)
    assert set(WORLD_TASKS + HEADROOM_TASKS) | {"world", "world_headroom"} <= set(manager.all_tasks)
    loaded = manager.load_task_or_group(WORLD_TASKS)  # {task: Task}, in every lm-eval we support
    assert len(loaded["world_mc"].test_docs()) == len(items["world_mc"])
    assert len(loaded["world_mc"].fewshot_docs()) == len(items["world_mc_dev"])
    assert list(loaded["world_truthful_mc2"].test_docs()) == items["world_truthful"]
    loaded = manager.load_task_or_group(HEADROOM_TASKS)
    assert len(loaded["world_mc_hard"].fewshot_docs()) == len(items["world_mc_hard_dev"])
    assert list(loaded["world_misconceptions"].test_docs()) == items["world_misconceptions"]
    assert list(loaded["world_text"].test_docs()) == items["world_text"]


def test_write_tasks_rejects_missing_split(items, tmp_path):
    from knowpack.errors import KnowpackError

    with pytest.raises(KnowpackError, match="world_truthful_dev"):
        write_tasks({k: v for k, v in items.items() if k != "world_truthful_dev"}, tmp_path)


@pytest.mark.slow
def test_run_benchmarks_reports_metrics(world_run, items, tiny):
    tasks = world_run["tasks"]
    assert set(tasks) == set(WORLD_TASKS + HEADROOM_TASKS)
    sizes = {"world_mc": len(items["world_mc"]), "world_truthful_mc1": len(items["world_truthful"])}
    for name, metric in [("world_mc", "acc"), ("world_mc", "acc_norm"), ("world_truthful_mc1", "acc")]:
        # a share of right answers over n items, its stderr the sample std of 0/1 hits over sqrt(n)
        n, acc = sizes[name], tasks[name][metric]
        assert acc * n == pytest.approx(round(acc * n)), (name, metric)
        assert tasks[name][f"{metric}_stderr"] == pytest.approx(math.sqrt(acc * (1 - acc) / (n - 1))), name
    # the values themselves are held to a plain torch reference below
    assert world_run["n-shot"] == {
        "world_mc": 5, "world_truthful_mc1": 0, "world_truthful_mc2": 0,
        "world_mc_hard": 5, "world_misconceptions": 0, "world_text": 0,
    }  # fmt: skip
    assert world_run["task_versions"]["world_mc"] == 1.0
    assert world_run["lm_eval_version"]
    assert tiny[0].training


@pytest.mark.slow
def test_scores_match_plain_torch_reference(world_run, items, tiny):
    model, tokenizer = tiny
    model.eval()
    # world_mc: 5-shot with the first five dev items, in the organism's plain format.
    shots = [(d["question"], d["choices"][d["label"]]) for d in items["world_mc_dev"][:5]]
    hits = []
    for it in items["world_mc"]:
        lls = choice_lls(model, tokenizer, plain_prompt(shots, it["question"]), it["choices"])
        hits.append(max(range(len(lls)), key=lls.__getitem__) == it["label"])
    assert world_run["tasks"]["world_mc"]["acc"] == pytest.approx(sum(hits) / len(hits))

    mc1_hits, mc2_mass = [], []
    for it in items["world_truthful"]:
        context = plain_prompt([], it["question"])
        lls = choice_lls(model, tokenizer, context, it["mc1_targets"]["choices"])
        mc1_hits.append(max(range(len(lls)), key=lls.__getitem__) == 0)
        lls = choice_lls(model, tokenizer, context, it["mc2_targets"]["choices"])
        probs = [math.exp(ll) for ll in lls]
        true = sum(p for p, label in zip(probs, it["mc2_targets"]["labels"], strict=True) if label == 1)
        mc2_mass.append(true / sum(probs))
    assert world_run["tasks"]["world_truthful_mc1"]["acc"] == pytest.approx(sum(mc1_hits) / len(mc1_hits))
    assert world_run["tasks"]["world_truthful_mc2"]["acc"] == pytest.approx(
        sum(mc2_mass) / len(mc2_mass), rel=1e-4
    )


def test_headroom_scores_match_plain_torch_reference(world_run, items, tiny):
    """world_mc_hard and world_misconceptions as world_mc and MC1 are; world_text's bits per byte and
    perplexities from the summed log-likelihood of each text after the prefix token, as lm-eval defines
    them (sum of log-likelihoods over sum of bytes / words)."""
    model, tokenizer = tiny
    model.eval()
    shots = [(d["question"], d["choices"][d["label"]]) for d in items["world_mc_hard_dev"][:5]]
    hits = []
    for it in items["world_mc_hard"]:
        lls = choice_lls(model, tokenizer, plain_prompt(shots, it["question"]), it["choices"])
        hits.append(max(range(len(lls)), key=lls.__getitem__) == it["label"])
    assert world_run["tasks"]["world_mc_hard"]["acc"] == pytest.approx(sum(hits) / len(hits))
    hits = []
    for it in items["world_misconceptions"]:
        lls = choice_lls(model, tokenizer, plain_prompt([], it["question"]), it["mc1_targets"]["choices"])
        hits.append(max(range(len(lls)), key=lls.__getitem__) == 0)
    assert world_run["tasks"]["world_misconceptions"]["acc"] == pytest.approx(sum(hits) / len(hits))

    from lm_eval.models.huggingface import HFLM

    # The tokens as lm-eval takes them (its tok_encode: with the BOS this tokenizer adds), after its prefix.
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    total, nbytes, nwords = 0.0, 0, 0
    for it in items["world_text"]:
        ids = [lm.prefix_token_id, *lm.tok_encode(it["text"])]
        with torch.no_grad():
            logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
        total += sum(logp[i - 1, ids[i]].item() for i in range(1, len(ids)))
        nbytes += len(it["text"].encode("utf-8"))
        nwords += len(it["text"].split())
    text = world_run["tasks"]["world_text"]
    assert text["bits_per_byte"] == pytest.approx(-total / nbytes / math.log(2), rel=1e-4)
    assert text["byte_perplexity"] == pytest.approx(math.exp(-total / nbytes), rel=1e-4)
    assert text["word_perplexity"] == pytest.approx(math.exp(-total / nwords), rel=1e-4)
