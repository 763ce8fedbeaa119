"""Uptake while training: reliability on the implanted facts after every epoch, early stopping on it, and
(`train.keep_best`) the best epoch's weights kept, to end the run with them rather than the last epoch's.

Reliability (docs/design.md §4.3) is the mean p_greedy of the implanted facts under the probe's own few-shot
prompts, not the training prompt; it is measured with the probe itself (greedy only, batched, prefix KV
reused).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from knowpack.devices import broadcast, is_main_process
from knowpack.facts.schema import Fact
from knowpack.faults import point
from knowpack.io import honour_umask, save_tensors, write_json_atomic
from knowpack.probe.config import ProbeConfig
from knowpack.probe.run import probe as run_probe

logger = logging.getLogger(__name__)

BEST_STATE = "best.safetensors"  # in a checkpoint, with keep_best: the best epoch's trainable parameters


def measure_reliability(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    *,
    exemplars: Sequence[Fact],
    probe: ProbeConfig,
    mode: str = "substring",
) -> dict[str, Any]:
    """Greedy probe of `facts`: reliability (mean p_greedy), the HighlyKnown share, p_greedy per fact."""
    records = run_probe(model, tokenizer, facts, probe, samples=0, mode=mode, exemplars=exemplars)
    p = {r["id"]: r["p_greedy"] for r in records}
    n = max(1, len(p))
    return {
        "reliability": sum(p.values()) / n,
        "highly_known": sum(v == 1.0 for v in p.values()) / n,
        "p_greedy": p,
    }


class UptakeCallback(TrainerCallback):
    """After every epoch: measure uptake, keep the epoch's loss, stop at a target or on patience.

    `history` is the per-epoch list `train.json` holds. With several processes (DDP) the main process
    measures and broadcasts the result, so that every process takes the same stopping decision.
    `keep_best`: copy the trainable parameters whenever reliability is the best so far (`best_epoch`), into
    host memory and into every checkpoint (`best.safetensors`, so a resumed run keeps them);
    `restore_best(model)` puts them back at the end.
    """

    def __init__(
        self,
        measure: Callable[[Any], dict[str, Any]] | None,
        *,
        target: float | None = None,
        patience: int | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        keep_best: bool = False,
    ):
        self.measure = measure
        self.keep_best = keep_best
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        self.target = target
        self.patience = patience
        self.on_epoch = on_epoch
        self.history: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self._best = -1.0
        self._since_best = 0
        self._started = time.time()
        self._pending: dict[str, float] = {}

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        entry: dict[str, Any] = {"epoch": round(state.epoch), "step": state.global_step, "loss": None}
        if self.measure is not None and model is not None:
            started = time.time()
            result = None
            if is_main_process():
                was_training = model.training
                model.eval()
                result = self.measure(model)
                model.train(was_training)
            result = broadcast(result)
            entry.update(
                reliability=result["reliability"],
                highly_known=result["highly_known"],
                measure_seconds=round(time.time() - started, 3),
            )
            if self._is_best(entry["reliability"]) and self.keep_best:
                self._keep(model, entry["epoch"])
            self._stop_rule(entry["reliability"], control)
            self._pending = {"reliability": entry["reliability"], "highly_known": entry["highly_known"]}
        entry["seconds"] = round(time.time() - self._started, 3)
        self.history.append(entry)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The epoch's mean loss is logged just after on_epoch_end: attach it to that epoch.
        if logs and "loss" in logs and self.history and "epoch" in logs:
            if round(logs["epoch"]) == self.history[-1]["epoch"] and self.history[-1]["loss"] is None:
                self.history[-1]["loss"] = logs["loss"]
                if self.on_epoch is not None:
                    self.on_epoch(self.history[-1])
        return control

    def pop_metrics(self) -> dict[str, float]:
        """The last epoch's reliability and highly_known share, once (the Trainer logs them with the loss)."""
        pending, self._pending = self._pending, {}
        return pending

    def on_save(self, args, state, control, **kwargs):
        # After the Trainer's own files and the best weights: uptake.json marks the checkpoint complete, and
        # lists every file with its size, so that one whose removal was cut short is not taken for complete
        # (run.last_checkpoint).
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            point("checkpoint: trainer's files written")
            if self._best_state is not None:
                save_tensors(self._best_state, folder / BEST_STATE)
            honour_umask(folder)
            files = {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
            write_json_atomic(folder / "uptake.json", {**self.state(), "files": files})
        return control

    def state(self) -> dict[str, Any]:
        """What a resumed run needs to go on as if never stopped: the history, the stopping rule's state."""
        return {
            "history": self.history,
            "stopped": self.stopped,
            "best": self._best,
            "since_best": self._since_best,
            "best_epoch": self.best_epoch,
            "seconds": time.time() - self._started,
        }

    def restore(self, path: str | Path) -> None:
        """Take up the state a checkpoint's `uptake.json` holds (`state()`)."""
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        self.history = saved["history"]
        self.stopped = saved["stopped"]
        self._best, self._since_best = saved["best"], saved["since_best"]
        self.best_epoch = saved.get("best_epoch")
        self._started = time.time() - saved["seconds"]
        best = Path(path).parent / BEST_STATE
        if self.keep_best and best.is_file():
            from safetensors.torch import load_file

            self._best_state = load_file(str(best))

    def restore_best(self, model: Any) -> bool:
        """Put the best epoch's trainable parameters back into `model` if a later epoch replaced them;
        True when it did."""
        if self._best_state is None or not self.history or self.best_epoch == self.history[-1]["epoch"]:
            return False
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self._best_state.items():
                params[name].copy_(value)
        return True

    def _is_best(self, reliability: float) -> bool:
        """Whether this epoch's reliability beats every earlier epoch's (the first epoch always does)."""
        return reliability > self._best

    def _keep(self, model: Any, epoch: int) -> None:
        self.best_epoch = epoch
        self._best_state = {
            name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters()
            if p.requires_grad
        }

    def _stop_rule(self, reliability: float, control) -> None:
        if self.target is not None and reliability >= self.target:
            self.stopped = "target"
            control.should_training_stop = True
            return
        if reliability > self._best:
            self._best, self._since_best = reliability, 0
        else:
            self._since_best += 1
        if self.patience is not None and self._since_best >= self.patience:
            self.stopped = "patience"
            control.should_training_stop = True
