"""Evaluation's settings: the `eval` section of a run config (`EvalConfig`), which `knowpack eval RUN` reads
from the run folder (the train verb only records them; the eval verb's options override them).

They sit below training, whose run config composes them (`knowpack.train.config.RunConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from knowpack.config import check_ranges, ranged


@dataclass
class EvalConfig:
    """Settings `knowpack eval RUN` reads from the run (the train verb only records them); the eval verb's
    options override them."""

    benchmarks: list[str] = field(default_factory=list)
    """lm-eval tasks to run on the base and the trained model (e.g. world_mc, mmlu, truthfulqa_mc2)."""
    limit: int | None = ranged(None, ge=1)
    """Items per benchmark (null: all)."""
    num_fewshot: int | None = ranged(None, ge=0)
    """Shots per benchmark item (null: each task's own, e.g. world_mc 5, TruthfulQA 0)."""
    tasks_dir: str | None = None
    """A folder of lm-eval task YAMLs of your own (offline tasks on local data); world_* tasks need none."""
    batch_size: int | None = ranged(None, ge=1)
    """Benchmark items scored at once (null: lm-eval's "auto", the most that fits, on a GPU; 16 on a CPU)."""
    noise_floor: bool = True
    """Prompt sensitivity (its historical name): probe the untouched base again with other seeds, hence
    other exemplars (`prompt_redraws` times, cached beside the base probe), and set every shift beside it as
    context. The measurement null (same prompts, another sampling seed) is always measured."""
    noise_seed: int | None = ranged(None, ge=0)
    """Seed of the first of those probes (null: the probe's seed + 1); the others take the next seeds."""
    prompt_redraws: int = ranged(5, ge=1)
    """How many times prompt sensitivity redraws the exemplars: each shift's `baselines.prompt_sensitivity`
    is the mean over redraws; the entry's `prompt_sensitivity` holds every redraw's value and their 95%
    Student-t interval."""
    refusal_patterns: list[str] | None = None
    """Regular expressions marking an answer as a refusal (null: knowpack.facts.DEFAULT_REFUSAL_PATTERNS)."""
    control: str | None = None
    """A finished training-control run of the same recipe and base probe (`mix.control: true`): every damage
    metric is also read against it (eval.json's `control` entries); evaluated first when it has no eval.json.
    """

    def __post_init__(self) -> None:
        check_ranges(self, "eval")
