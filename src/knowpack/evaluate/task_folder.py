"""The one writer of knowpack's own lm-eval task folders: the organism's world tasks (`knowpack.world.tasks`)
and the geo tasks (`knowpack.real.geo`).

A task folder holds each split as JSONL, a `utils.py` whose `custom_dataset` loaders read them from next to
its own file (so the folder works wherever it is installed, and never touches the Hub), and the task YAMLs.
`utils_py` writes that module from a list of `Loader`s; `write_task_folder` writes a folder. The bundled
folders are committed: tests/test_task_files.py checks that their code and YAMLs are what their writers
produce.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from knowpack.io import write_text_atomic


@dataclass(frozen=True)
class Loader:
    """`load_<split>` in utils.py: `<split>.jsonl` as the test split and, with `dev`, `<split>_dev.jsonl` as
    the few-shot split, for the tasks `serves` names."""

    split: str
    serves: str
    dev: bool = True


# `custom_dataset` is called by lm-eval as fn(**task metadata, **dataset_kwargs) and must return a
# DatasetDict holding the splits that `test_split` / `fewshot_split` name.
UTILS_PY = Template('''\
"""Data$scoring of knowpack's $what tasks (written by $writer: regenerate rather than edit).

The JSONL files lie next to this file, so the tasks load them wherever the folder is installed. lm-eval calls
each loader with the task's metadata as keywords (unused).
"""

$imports
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
$loaders$extra''')

LOADER_PY = Template('''

def load_$split(**metadata):
    """`custom_dataset` of $serves."""
    return _splits("$split"$dev)
''')


def utils_py(
    what: str, writer: str, loaders: Sequence[Loader], *, extra: str = "", imports: Sequence[str] = ()
) -> str:
    """The text of a task folder's `utils.py`: its `loaders`, then `extra` (more functions the YAMLs name,
    with the modules they import in `imports`)."""
    code = "".join(
        LOADER_PY.substitute(split=x.split, serves=x.serves, dev="" if x.dev else ", dev=False")
        for x in loaders
    )
    return UTILS_PY.substitute(
        what=what,
        writer=writer,
        scoring=" and scoring" if extra else "",
        imports="\n".join(f"import {name}" for name in sorted({"json", *imports})),
        loaders=code,
        extra=f"\n\n{extra}" if extra else "",
    )


def write_task_folder(
    out: str | Path, data: dict[str, list[dict]], files: dict[str, str], *, compact: bool = False
) -> Path:
    """Write each split of `data` as `<name>.jsonl` (one JSON object a line; `compact`: without spaces) and
    each of `files` (name -> text: utils.py, the YAMLs) into `out`, each file atomically; returns `out`."""
    out = Path(out)
    separators = (",", ":") if compact else None
    for name, rows in data.items():
        lines = (json.dumps(row, ensure_ascii=False, separators=separators) + "\n" for row in rows)
        write_text_atomic(out / f"{name}.jsonl", "".join(lines))
    for name, text in files.items():
        write_text_atomic(out / name, text)
    return out
