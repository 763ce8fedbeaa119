"""What training shows while it runs, without printing: the Trainer's log dicts as log lines, and a progress
callback driven by the optimizer steps, with the epoch, the loss and the uptake callback's reliability.

    trainer.remove_callback(PrinterCallback)        # the Trainer would print() every log dict
    trainer.add_callback(LogCallback())             # ... logged at INFO instead (`knowpack -v` shows them)
    trainer.add_callback(ProgressCallback(progress, uptake))   # progress(step, steps, epoch=, loss=, ...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger("knowpack.train")


class LogCallback(TrainerCallback):
    """The Trainer's log dicts (loss, grad norm, learning rate ...) as one INFO line each (`knowpack -v`)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            logger.info("step %d: %s", state.global_step, shown)


class ProgressCallback(TrainerCallback):
    """Drives a `progress(done, total, **fields)` bar: optimizer steps, with the epoch and the last epoch's
    loss and reliability (from the uptake callback's history)."""

    def __init__(self, progress: Callable[..., None], uptake: Any):
        self.progress, self.uptake = progress, uptake

    def _show(self, state, total: int, **more: Any) -> None:
        if not state.is_world_process_zero:
            return
        last = self.uptake.history[-1] if self.uptake.history else {}
        self.progress(
            state.global_step,
            total,
            epoch=f"{int(state.epoch or 0)}/{int(state.num_train_epochs)}",
            loss=last.get("loss"),
            reliability=last.get("reliability"),
            **more,
        )

    def on_train_begin(self, args, state, control, **kwargs):
        self._show(state, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        self._show(state, state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._show(state, state.max_steps)

    def on_train_end(self, args, state, control, **kwargs):
        # stopped early (the reliability target reached, or patience): the bar ends full, saying why
        self._show(state, state.global_step, stopped=self.uptake.stopped or "epochs")
