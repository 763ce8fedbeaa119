"""Evaluation: uptake of implanted facts, knowledge shift, behaviour and benchmarks (`knowpack eval`).

metrics.py holds the metrics as pure functions of probe records; uptake.py the zero-shot and held-out
paraphrase measurements; base.py what is cached once per base model (noise floor, benchmarks); benchmarks.py
lm-evaluation-harness on the in-memory model; run.py `evaluate_run` / `evaluate_model`, which write eval.json.
"""

from __future__ import annotations

from typing import Any

__all__ = ["evaluate_model", "evaluate_named_model", "evaluate_run"]


def __getattr__(name: str) -> Any:
    if name in __all__:  # lazy: `import knowpack.evaluate` stays light
        from knowpack.evaluate import run  # lazy: keeps knowpack.evaluate light (CLI)

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
