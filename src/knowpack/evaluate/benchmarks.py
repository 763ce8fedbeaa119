"""Benchmarks through lm-evaluation-harness on the in-memory model: damage measured the way papers report it.

    from knowpack.evaluate.benchmarks import run_benchmarks
    run_benchmarks(model, tokenizer, ["world_mc", "world_truthful_mc2"], limit=50)  # the organism's own tasks
    run_benchmarks(model, tokenizer, ["mmlu", "truthfulqa_mc1", "truthfulqa_mc2"])  # real ones (data needed)

The model is wrapped, not reloaded, so a LoRA-adapted or freshly trained model is scored as it is.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError

log = logging.getLogger(__name__)


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    *,
    include_path: Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> dict:
    """Run lm-eval `tasks` on `model` and return `{"tasks": {task: {metric: value, metric_stderr: …}}, …}`.

    `world_*` tasks (and the group `world`) are the organism's local tasks: `include_path` defaults to
    `organism_dir() / "tasks"` when one is asked for. Other names (`mmlu`, `truthfulqa_mc1`, …) are lm-eval's
    own tasks and need their Hugging Face dataset: online, or offline with `HF_DATASETS_OFFLINE=1` and a
    pre-populated datasets cache. `limit` caps the items per task (a float below 1 is a share);
    `num_fewshot` overrides the tasks' own shots except where a task fixes 0 (TruthfulQA-style tasks).
    The model is left in the train/eval mode it came in.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if not tasks:
        raise KnowpackError("benchmarks: no tasks given")
    if include_path is None and any(t == "world" or t.startswith("world_") for t in tasks):
        from knowpack.paths import organism_dir

        include_path = organism_dir() / "tasks"
    if include_path is not None and not Path(include_path).is_dir():
        raise KnowpackError(
            f"benchmarks: no task folder at {include_path} (build it with `knowpack world build`)"
        )

    task_manager = _task_manager(tasks, include_path)
    was_training = model.training
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        log.info("lm-eval %s: %s (limit=%s, num_fewshot=%s)", lm_eval.__version__, tasks, limit, num_fewshot)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            limit=limit,
            task_manager=task_manager,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    finally:
        model.train(was_training)  # HFLM switches the model to eval mode
    metrics = {name: _metrics(values) for name, values in results["results"].items()}
    summary = {
        # A group without an aggregate metric (our `world`) reports nothing of its own: left out.
        "tasks": {name: values for name, values in metrics.items() if values},
        "lm_eval_version": lm_eval.__version__,
        "settings": {
            "tasks": list(tasks),
            "include_path": str(include_path) if include_path is not None else None,
            "limit": limit,
            "num_fewshot": num_fewshot,
            "batch_size": batch_size,
            "seed": seed,
        },
        "task_versions": dict(results.get("versions", {})),
        "n-shot": dict(results.get("n-shot", {})),
        "n-samples": dict(results.get("n-samples", {})),
    }
    for name, metrics in summary["tasks"].items():
        log.info("%s: %s", name, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if v is not None))
    return summary


def _task_manager(tasks: list[str], include_path: Path | None):
    """A TaskManager that knows `tasks`; lm-eval's own ~15k tasks are indexed (slow) only when needed."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(t in local.all_tasks for t in tasks):
            return local
    return TaskManager(include_path=str(include_path) if include_path is not None else None)


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
