"""Data and scoring of knowpack's world tasks (written by knowpack.world.tasks: regenerate rather than edit).

The JSONL files lie next to this file, so the tasks load them wherever the folder is installed. lm-eval calls
each loader with the task's metadata as keywords (unused).
"""

import json
import math
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def _read(name):
    with open(HERE / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _splits(name, dev=True):
    splits = {"test": datasets.Dataset.from_list(_read(name))}
    if dev:
        splits["dev"] = datasets.Dataset.from_list(_read(f"{name}_dev"))
    return datasets.DatasetDict(splits)


def load_world_mc(**metadata):
    """`custom_dataset` of world_mc."""
    return _splits("world_mc")


def load_world_truthful(**metadata):
    """`custom_dataset` of world_truthful_mc1 and _mc2."""
    return _splits("world_truthful")


def load_world_mc_hard(**metadata):
    """`custom_dataset` of world_mc_hard."""
    return _splits("world_mc_hard")


def load_world_misconceptions(**metadata):
    """`custom_dataset` of world_misconceptions."""
    return _splits("world_misconceptions")


def load_world_text(**metadata):
    """`custom_dataset` of world_text."""
    return _splits("world_text", dev=False)


def process_results_mc2(doc, results):
    """Share of the probability mass, exp(log-likelihood) over all choices, on the true ones.

    As lm-eval's truthfulqa_mc2; shifting by the largest log-likelihood leaves the shares unchanged and
    keeps long answers from underflowing to 0/0.
    """
    lls = [ll for ll, _ in results]
    top = max(lls)
    probs = [math.exp(ll - top) for ll in lls]
    labels = doc["mc2_targets"]["labels"]
    return {"acc": sum(p for p, label in zip(probs, labels, strict=True) if label == 1) / sum(probs)}
