"""Data of the geo tasks (written by knowpack.real.geo: regenerate rather than edit).

The JSONL files lie next to this file, so the task loads them wherever the folder is installed.
"""

import json
from pathlib import Path

import datasets

HERE = Path(__file__).resolve().parent


def _read(name):
    with open(HERE / f"{name}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_geo_mc(**metadata):
    """`custom_dataset` of geo_mc (lm-eval passes the task metadata as keywords: unused)."""
    test, dev = datasets.Dataset.from_list(_read("geo_mc")), datasets.Dataset.from_list(_read("geo_mc_dev"))
    return datasets.DatasetDict({"test": test, "dev": dev})


def load_geo_misconceptions(**metadata):
    """`custom_dataset` of geo_misconceptions (0-shot: a test split only)."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(_read("geo_misconceptions"))})


def load_geo_text(**metadata):
    """`custom_dataset` of geo_text (a rolling log-likelihood takes no shots)."""
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(_read("geo_text"))})
