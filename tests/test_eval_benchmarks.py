"""Benchmarks in evaluation: the organism's shipped world_truthful_mc2 through lm-eval on a LoRA-wrapped tiny
model equals the normalized probability mass on the true choices computed from the choices' log-likelihoods;
a task of one's own on local data runs offline via `knowpack eval --tasks-dir`; unknown tasks fail early."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import choice_lls
from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import check_tasks, run_benchmarks
from knowpack.paths import organism_dir
from knowpack.prompts import plain_prompt
from tiny import save_tiny, tiny_model, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
SRC = str(Path(__file__).resolve().parents[1] / "src")
N = 4  # items of world_truthful_mc2 scored


def truthful_items() -> list[dict]:
    lines = (organism_dir() / "tasks" / "world_truthful.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:N]]


@pytest.fixture(scope="module")
def lora_model(tmp_path_factory):
    """A tiny random Llama in a PEFT LoRA whose adapter is not zero (so the adapter is what gets scored)."""
    from peft import LoraConfig, get_peft_model

    texts = [it["question"] + " " + " ".join(it["mc2_targets"]["choices"]) for it in truthful_items()]
    tokenizer = tiny_tokenizer(texts, tmp_path_factory.mktemp("tok"), chat=False)
    base = tiny_model("llama", tokenizer)
    torch.manual_seed(0)
    config = LoraConfig(r=2, lora_alpha=8, target_modules=["down_proj"], init_lora_weights=False)
    return get_peft_model(base, config).eval(), tokenizer


@pytest.mark.slow
def test_world_truthful_mc2_through_lm_eval_equals_the_mass_on_true_choices(lora_model):
    model, tokenizer = lora_model
    summary = run_benchmarks(model, tokenizer, ["world_truthful_mc2"], limit=N, batch_size=4)
    assert summary["n-samples"]["world_truthful_mc2"]["effective"] == N
    masses = []
    for item in truthful_items():
        lls = choice_lls(model, tokenizer, plain_prompt([], item["question"]), item["mc2_targets"]["choices"])
        probs = [math.exp(ll - max(lls)) for ll in lls]
        labels = item["mc2_targets"]["labels"]
        masses.append(sum(p for p, label in zip(probs, labels, strict=True) if label) / sum(probs))
    assert summary["tasks"]["world_truthful_mc2"]["acc"] == pytest.approx(sum(masses) / N, rel=1e-5)
    with model.disable_adapter():  # the adapter changes the scores: it is the adapted model that was scored
        plain = choice_lls(
            model, tokenizer, plain_prompt([], item["question"]), item["mc2_targets"]["choices"]
        )
    assert plain != pytest.approx(lls, rel=1e-6)


LOCAL_TASK = """\
task: tiny_capitals
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
target_delimiter: " "
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.mark.slow
def test_a_local_task_runs_offline_through_knowpack_eval(tmp_path):
    from knowpack.facts import Fact, save_facts

    items = [
        {"question": "Where was Ada born?", "choices": ["Paris", "Lima", "Oslo"], "label": 0},
        {"question": "Where was Bo born?", "choices": ["Paris", "Lima", "Oslo"], "label": 1},
        {"question": "Where was Cy born?", "choices": ["Paris", "Lima", "Oslo"], "label": 2},
    ]
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "capitals.jsonl").write_text("".join(json.dumps(it) + "\n" for it in items))
    (tasks / "tiny_capitals.yaml").write_text(LOCAL_TASK.format(data=tasks / "capitals.jsonl"))
    facts = [Fact(f"f{i}", it["question"], [it["choices"][it["label"]]]) for i, it in enumerate(items)]
    save_facts(facts, tmp_path / "facts.jsonl")
    texts = [f"Question: {it['question']}\nAnswer: {' '.join(it['choices'])}\n\n" for it in items]
    model = save_tiny("llama", tiny_tokenizer(texts, tmp_path / "tok", chat=False), tmp_path / "llama")
    env = {
        **os.environ,
        "PYTHONPATH": SRC,
        "OMP_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",  # nothing may be fetched: the data and the task are local
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "datasets-cache"),
    }
    command = [sys.executable, "-m", "knowpack", "eval", "--model", str(model), "--facts"]
    command += [str(tmp_path / "facts.jsonl"), "--out", str(tmp_path / "out"), "--samples", "0"]
    command += ["--n-prompts", "1", "--shots", "1", "--benchmarks", "tiny_capitals"]
    command += ["--tasks-dir", str(tasks)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    bench = json.loads((tmp_path / "out" / "eval.json").read_text())["benchmarks"]
    acc = bench["tasks"]["tiny_capitals"]["acc"]
    assert acc["metric"] == "benchmark" and acc["value"] in (0.0, 1 / 3, 2 / 3, 1.0)
    assert bench["n-samples"]["tiny_capitals"]["effective"] == 3
    assert bench["settings"]["include_path"] == [str(tasks)]
    assert any((tmp_path / "datasets-cache").iterdir())  # the data went through the local datasets cache


def test_unknown_tasks_and_task_folders_are_one_line_errors(tmp_path):
    with pytest.raises(KnowpackError, match="no tasks given"):
        check_tasks([])
    with pytest.raises(KnowpackError, match="no task folder at"):
        check_tasks(["world_mc"], tmp_path / "missing")
    with pytest.raises(KnowpackError, match="unknown lm-eval task world_nothing"):
        check_tasks(["world_mc", "world_nothing"])
    assert "world_mc" in check_tasks(["world_mc", "world_truthful_mc2"]).all_tasks  # local: no full index


@pytest.mark.slow
def test_tasks_run_with_the_papers_shots_unless_told(lora_model, monkeypatch):
    from knowpack.evaluate import benchmarks

    model, tokenizer = lora_model
    monkeypatch.setitem(benchmarks.PAPER_SHOTS, "world_mc", 2)  # as mmlu: 5 where lm-eval's default is 0
    tasks = ["world_mc", "world_truthful_mc1"]
    summary = run_benchmarks(model, tokenizer, tasks, limit=2, batch_size=4)
    assert summary["n-shot"] == {"world_mc": 2, "world_truthful_mc1": 0}
    assert set(summary["tasks"]) == set(tasks)
    told = run_benchmarks(model, tokenizer, ["world_mc"], limit=2, num_fewshot=1, batch_size=4)
    assert told["n-shot"] == {"world_mc": 1}


def test_compare_benchmarks_names_each_measures_direction():
    """eval.json's benchmark entries carry lm-eval's direction: accuracy up, perplexity and bits per byte
    down; value, base and delta as the two summaries say."""
    from knowpack.evaluate.benchmarks import compare_benchmarks, higher_is_better

    after = {"tasks": {"world_text": {"bits_per_byte": 0.9, "bits_per_byte_stderr": None}, "t": {"acc": 0.5}}}
    base = {"tasks": {"world_text": {"bits_per_byte": 0.8}, "t": {"acc": 0.75}}}
    tasks = compare_benchmarks(after, base)["tasks"]
    bpb, acc = tasks["world_text"]["bits_per_byte"], tasks["t"]["acc"]
    assert (bpb["value"], bpb["base"], bpb["higher_is_better"]) == (0.9, 0.8, False)
    assert bpb["delta"] == pytest.approx(0.1)
    assert (acc["value"], acc["base"], acc["delta"], acc["higher_is_better"]) == (0.5, 0.75, -0.25, True)
    assert [higher_is_better(m) for m in ("word_perplexity", "byte_perplexity", "acc_norm")] == [
        False,
        False,
        True,
    ]
    assert higher_is_better("no_such_metric") is None
