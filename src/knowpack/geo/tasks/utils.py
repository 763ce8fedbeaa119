"""Data of knowpack's geo tasks (written by knowpack.real.geo: regenerate rather than edit).

The JSONL files lie next to this file, so the tasks load them wherever the folder is installed. lm-eval calls
each loader with the task's metadata as keywords (unused).
"""

import json
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


def load_geo_mc(**metadata):
    """`custom_dataset` of geo_mc."""
    return _splits("geo_mc")


def load_geo_misconceptions(**metadata):
    """`custom_dataset` of geo_misconceptions."""
    return _splits("geo_misconceptions", dev=False)


def load_geo_text(**metadata):
    """`custom_dataset` of geo_text."""
    return _splits("geo_text", dev=False)
