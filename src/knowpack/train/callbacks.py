"""What training shows while it runs, without printing: the Trainer's log dicts as log lines, and a progress
callback driven by the optimizer steps, with the epoch, the loss and the uptake callback's reliability; and
the Trainer knowpack trains with, which adds each epoch's uptake to the epoch's log (so that the trackers of
`report_to`, tensorboard or wandb, get it) and checkpoints only the trainable weights of a model it did not
wrap in PEFT when some of them are frozen (LoKI's rows, not all of down_proj).

    trainer.remove_callback(PrinterCallback)        # the Trainer would print() every log dict
    trainer.add_callback(LogCallback())             # ... logged at INFO instead (`knowpack -v` shows them)
    trainer.add_callback(ProgressCallback(progress, uptake))   # progress(step, steps, epoch=, loss=, ...)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import TrainerCallback

from knowpack.io import save_tensors

logger = logging.getLogger("knowpack.train")
TRAINABLE_FILE = "trainable.safetensors"


class Trainer(transformers.Trainer):
    """transformers' Trainer, with the uptake callback's last epoch (reliability, highly_known) logged beside
    the epoch's loss, and checkpoints of frozen-in-part plain models holding their trainable weights only."""

    def __init__(self, *args: Any, uptake: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.uptake = uptake

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.uptake is not None and "loss" in logs:
            logs = {**logs, **self.uptake.pop_metrics()}
        super().log(logs, start_time)

    def _partly_frozen(self) -> bool:
        if hasattr(self.model, "peft_config"):  # PEFT saves its adapter alone already
            return False
        return any(not p.requires_grad for p in self.model.parameters())

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self._partly_frozen():
            return super()._save(output_dir, state_dict)

        trainable = {n: p.detach().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
        save_tensors(trainable, Path(output_dir) / TRAINABLE_FILE)
        torch.save(self.args, Path(output_dir) / "training_args.bin")  # as the Trainer's own _save does

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        path = Path(resume_from_checkpoint) / TRAINABLE_FILE
        if not path.is_file():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from safetensors.torch import load_file

        model = model if model is not None else self.model
        params = dict(model.named_parameters())
        for name, value in load_file(str(path)).items():
            with torch.no_grad():
                params[name].copy_(value.to(params[name].device))


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
