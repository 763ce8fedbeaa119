"""Benchmarks through lm-evaluation-harness on the in-memory model: damage measured the way papers report it.

    from knowpack.evaluate.benchmarks import run_benchmarks
    run_benchmarks(model, tokenizer, ["world_mc", "world_truthful_mc2"], limit=50)  # the organism's own tasks
    run_benchmarks(model, tokenizer, ["geo_mc"])                                      # the geo facts' MMLU
    run_benchmarks(model, tokenizer, ["mmlu", "truthfulqa_mc1", "truthfulqa_mc2"])  # real ones (data needed)

The model is wrapped, not reloaded: a LoRA-adapted (PEFT), LoKI or freshly trained model is scored as it is.

Offline: a task of your own is a YAML in a folder passed as `include_path` (`--tasks-dir`); with
`dataset_path: json` and `dataset_kwargs: {data_files: {test: /abs/path/test.jsonl}}` it reads local files and
runs with `HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1` (tests/test_eval_benchmarks.py does). lm-eval's own tasks
(`mmlu`, `truthfulqa_mc2`, ...) run offline from a datasets cache filled beforehand on a machine online
(`lm_eval --tasks mmlu --limit 1 ...` or `datasets.load_dataset("cais/mmlu", "all")`), copied to
`HF_DATASETS_CACHE` / `HF_HOME`, and the same two variables set.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from knowpack import output
from knowpack.errors import KnowpackError
from knowpack.evaluate.metrics import metric
from knowpack.paths import geo_dir, organism_dir

log = logging.getLogger(__name__)

ROLLING_METRICS_YAML = """\
metric_list:
  - metric: word_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
"""
"""The metric list of a local `loglikelihood_rolling` task (world_text, geo_text), as lm-eval's wikitext
reports it: word and byte perplexity and bits per byte, each lower-is-better, spelled out so that lm-eval
warns of no defaults."""

PAPER_SHOTS: dict[str, int] = {"mmlu": 5}
"""Shots for lm-eval tasks whose own default is not how the papers report them (num_fewshot None)."""


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    *,
    include_path: Path | str | list | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run lm-eval `tasks` on `model` and return `{"tasks": {task: {metric: value, metric_stderr: …}}, …}`.

    `world_*` tasks (and the group `world`) are the organism's local tasks: `organism_dir() / "tasks"` is
    searched when one is asked for and `include_path` (a folder of task YAMLs, or a list) has no world
    tasks of its own; `geo_mc`, `geo_misconceptions` and `geo_text` likewise from `geo_dir() / "tasks"` (the
    real-model testbed's MMLU, imitative falsehoods and language-model loss). Other
    names (`mmlu`, `truthfulqa_mc1`, …) are lm-eval's own tasks and need their Hugging Face dataset: online,
    or offline with `HF_DATASETS_OFFLINE=1` and a pre-populated datasets cache.
    An unknown task is a one-line error (`check_tasks`). `limit` caps the items per task (a float below 1
    is a share); `num_fewshot` overrides the tasks' own shots except where a task fixes 0 (TruthfulQA-style
    tasks); left None, a task runs with its own shots, or with `PAPER_SHOTS` (mmlu: 5, as the papers report
    it; lm-eval's own default is 0). `batch_size` None is lm-eval's "auto" (the largest batch that fits) on
    an accelerator and 16 on a CPU. The model is left in the train/eval mode it came in.

    Tasks run one at a time; `progress(done, total)` counts them. lm-eval's own per-request progress bars are
    off (knowpack prints nothing itself; its logging and `progress` say how far it is), and the rest of its
    bars follow tqdm's `TQDM_DISABLE`, which `knowpack` sets unless `-v`.
    """
    import lm_eval

    task_manager = check_tasks(tasks, include_path)
    include_path = _include_paths(tasks, include_path)
    if batch_size is None:
        batch_size = 16 if next(model.parameters()).device.type == "cpu" else "auto"
    merged = _evaluate_tasks(
        model, tokenizer, tasks, task_manager, limit=limit, num_fewshot=num_fewshot, batch_size=batch_size,
        seed=seed, progress=progress,
    )  # fmt: skip
    metrics = {name: _metrics(values) for name, values in merged["results"].items()}
    summary = {
        # A group without an aggregate metric (our `world`) reports nothing of its own: left out.
        "tasks": {name: values for name, values in metrics.items() if values},
        "lm_eval_version": lm_eval.__version__,
        "settings": {
            "tasks": list(tasks),
            "include_path": [str(p) for p in include_path] or None,
            "limit": limit,
            "num_fewshot": num_fewshot,
            "batch_size": batch_size,
            "seed": seed,
        },
        "task_versions": dict(merged["versions"]),
        "n-shot": dict(merged["n-shot"]),
        "n-samples": dict(merged["n-samples"]),
        "doc_ids": dict(merged["doc_ids"]),
    }
    for name, metrics in summary["tasks"].items():
        log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None))
    return summary


def _evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    task_manager: Any,
    *,
    limit,
    num_fewshot,
    batch_size,
    seed,
    progress,
) -> dict[str, dict]:
    """lm-eval's results, versions, n-shot and n-samples of every task, run one at a time (PAPER_SHOTS
    where no shots are given), and the ids of the items it scored (`doc_ids`: per task, lm-eval's `doc_id`,
    the item's index in the task's test split); the model is left in the train/eval mode it came in."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    was_training = model.training
    merged: dict[str, dict] = {"results": {}, "versions": {}, "n-shot": {}, "n-samples": {}, "doc_ids": {}}
    try:
        lm = _quiet_hflm(HFLM)(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        for done, task in enumerate(tasks):
            if progress is not None:
                progress(done, len(tasks))
            shots = num_fewshot if num_fewshot is not None else PAPER_SHOTS.get(task)
            log.info("lm-eval %s: %s (limit=%s, num_fewshot=%s)", lm_eval.__version__, task, limit, shots)
            with _quiet_children():
                results = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=[task],
                    num_fewshot=shots,
                    limit=limit,
                    task_manager=task_manager,
                    log_samples=True,  # for the ids of the items scored (held-out checks)
                    random_seed=seed,
                    numpy_random_seed=seed,
                    torch_random_seed=seed,
                    fewshot_random_seed=seed,
                )
            for key in ("results", "versions", "n-shot", "n-samples"):
                merged[key].update(results.get(key, {}))
            for name, samples in (results.get("samples") or {}).items():
                merged["doc_ids"][name] = sorted({s["doc_id"] for s in samples})
        if progress is not None:
            progress(len(tasks), len(tasks))
    finally:
        model.train(was_training)  # HFLM switches the model to eval mode
    return merged


@contextlib.contextmanager
def _quiet_children() -> Iterator[None]:
    """The programs lm-eval runs write their stderr to /dev/null unless `knowpack.output.THIRD_PARTY_OUTPUT`
    (`knowpack -v`): outside a git repository, the `git describe` it runs for its results' git hash prints
    "fatal: not a git repository" once per task. Python's own stderr (knowpack's lines) is kept."""
    if output.THIRD_PARTY_OUTPUT:
        yield
        return
    try:
        own = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a stream with no file (a test runner's capture)
        own = False
    sys.stderr.flush()
    kept = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    previous = sys.stderr
    os.dup2(null, 2)
    if own:  # Python writes on to the real stderr, through the saved descriptor
        sys.stderr = os.fdopen(os.dup(kept), "w", buffering=1, encoding=previous.encoding, errors="replace")
    try:
        yield
    finally:
        if own:
            sys.stderr.flush()
            sys.stderr.close()
            sys.stderr = previous
        os.dup2(kept, 2)
        os.close(kept)
        os.close(null)


def _quiet_hflm(base: type) -> type:
    """lm-eval's HF model without its per-request tqdm bars (lm-eval turns them on explicitly, so tqdm's
    `TQDM_DISABLE` cannot)."""

    class QuietHFLM(base):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            # loglikelihood_rolling (world_text, geo_text) asks for its bar with disable_tqdm=False
            return super()._loglikelihood_tokens(requests, disable_tqdm=True, **kwargs)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


def higher_is_better(measure: str) -> bool | None:
    """Whether a larger value of an lm-eval metric (`acc`, `bits_per_byte`, ...) is better, as lm-eval's own
    metric registry says (perplexities and bits per byte: no); None for a metric it does not know."""
    from lm_eval.api.registry import is_higher_better

    return is_higher_better(measure.split(",", 1)[0])


def task_description(task: str) -> str | None:
    """What a local task (world_*, geo_*) measures, in one line: the comment its YAML opens with (written
    with the task); None for lm-eval's own tasks and unknown names."""
    for folder in (organism_dir() / "tasks", geo_dir() / "tasks"):
        path = folder / f"{task}.yaml"
        if path.is_file():
            said = [line[1:].strip() for line in path.read_text().splitlines() if line.startswith("#")]
            return next((line for line in said if not line.startswith("Written by")), None)
    return None


def compare_benchmarks(after: dict, base: dict | None, reused: list[str] | None = None) -> dict[str, Any]:
    """eval.json's `benchmarks`: every metric of `after` (a `run_benchmarks` summary) as a `benchmark` entry
    (knowpack.evaluate.metrics) beside `base`'s value and both stderrs, with its direction
    (`higher_is_better`: false for a perplexity); the harness version and settings; `doc_ids`, per task, the
    ids of the items scored (the trained model's)."""
    tasks: dict[str, dict] = {}
    for task, values in after["tasks"].items():
        old = (base or {}).get("tasks", {}).get(task, {})
        tasks[task] = {
            name: metric(
                "benchmark",
                value,
                old.get(name),
                task=task,
                task_metric=name,
                stderr=values.get(f"{name}_stderr"),
                base_stderr=old.get(f"{name}_stderr"),
                higher_is_better=higher_is_better(name),
            )
            for name, value in values.items()
            if not name.endswith("_stderr")
        }
    fields = ("lm_eval_version", "settings", "task_versions", "n-shot", "n-samples", "doc_ids")
    return {"tasks": tasks, **{k: after.get(k) for k in fields}, "base_reused": reused}


def check_tasks(tasks: list[str], include_path: Path | str | list | None = None):
    """The lm-eval TaskManager that knows every one of `tasks`; an unknown name, an empty list or a missing
    task folder is a one-line error (call it before loading a model). lm-eval's own ~15k tasks are indexed
    (about 20 s) only when a name is not a local one."""
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise KnowpackError("benchmarks: no tasks given")
    paths = [str(p) for p in _include_paths(tasks, include_path)]
    if paths:
        local = TaskManager(include_path=paths, include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    manager = _full_index(tuple(paths))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (searched lm-eval's tasks and {', '.join(paths)})" if paths else ""
        raise KnowpackError(
            f"unknown lm-eval task{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{where}; "
            "`lm-eval ls tasks` lists them"
        )
    return manager


@functools.lru_cache(maxsize=4)
def _full_index(paths: tuple[str, ...]):
    """lm-eval's own tasks and those in `paths`, indexed once per process (it takes about 20 s)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths) or None)


def _include_paths(tasks: list[str], include_path: Path | str | list | None) -> list[Path]:
    """The task folders to search: `include_path`, the organism's when a world task is asked for, and the
    geo facts' when a geo task (`geo_mc`, `geo_misconceptions`, `geo_text`) is."""
    if include_path is None:
        paths = []
    elif isinstance(include_path, (list, tuple)):
        paths = [Path(p) for p in include_path]
    else:
        paths = [Path(include_path)]
    for path in paths:
        if not path.is_dir():
            raise KnowpackError(f"benchmarks: no task folder at {path}")
    world = any(t == "world" or t.startswith("world_") for t in tasks)
    if world and not any(next(p.rglob("world*.yaml"), None) for p in paths):
        organism_tasks = organism_dir() / "tasks"
        if not organism_tasks.is_dir():
            raise KnowpackError(f"benchmarks: no task folder at {organism_tasks} (`knowpack world build`)")
        paths.append(organism_tasks)
    geo = any(t.startswith("geo_") for t in tasks)  # geo_mc, geo_misconceptions, geo_text
    if geo and not any(next(p.rglob("geo_mc.yaml"), None) for p in paths):
        paths.append(geo_dir() / "tasks")
    return paths


def _metrics(values: dict) -> dict[str, float | None]:
    """`{"acc,none": 0.5, "acc_stderr,none": "N/A", "alias": …}` -> `{"acc": 0.5, "acc_stderr": None}`."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        if "," not in key:  # alias, sample_len, …
            continue
        metric, filter_name = key.split(",", 1)
        name = metric if filter_name == "none" else key
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
        else:
            out[name] = None  # "N/A" (a stderr of one item) or NaN
    return out
