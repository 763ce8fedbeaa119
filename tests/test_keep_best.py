"""`train.keep_best`: the run ends with the weights of its most reliable epoch, not the last one's, and keeps
them across a resume (the best epoch's parameters travel in every checkpoint)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from helpers import overrides
from knowpack.cli.train import summary_line
from knowpack.errors import KnowpackError
from knowpack.train import load_config, train
from knowpack.train.uptake import BEST_STATE, UptakeCallback

pytestmark = pytest.mark.usefixtures("one_thread")


def _epoch_end(callback: UptakeCallback, model, epoch: int) -> SimpleNamespace:
    control = SimpleNamespace(should_training_stop=False)
    callback.on_epoch_end(None, SimpleNamespace(epoch=epoch, global_step=epoch), control, model=model)
    return control


def test_the_best_epochs_parameters_come_back_and_survive_a_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # only trainable parameters are kept
    scores = iter([0.2, 0.7, 0.7, 0.4])
    callback = UptakeCallback(lambda m: {"reliability": next(scores), "highly_known": 0.0}, keep_best=True)
    seen = []
    for epoch in (1, 2, 3, 4):
        with torch.no_grad():
            model.weight.add_(1.0)
        seen.append(model.weight.detach().clone())
        _epoch_end(callback, model, epoch)
    assert callback.best_epoch == 2  # the first of equals

    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    args = SimpleNamespace(output_dir=str(tmp_path))
    callback.on_save(args, SimpleNamespace(is_world_process_zero=True, global_step=4), None)
    assert set(load_file(str(folder / BEST_STATE))) == {"weight"}

    resumed = UptakeCallback(None, keep_best=True)
    resumed.restore(folder / "uptake.json")
    assert resumed.best_epoch == 2 and len(resumed.history) == 4
    for cb in (callback, resumed):
        with torch.no_grad():
            model.weight.copy_(seen[3])
        assert cb.restore_best(model)
        assert torch.equal(model.weight, seen[1])


def test_no_restore_when_the_last_epoch_is_the_best():
    model = torch.nn.Linear(2, 2)
    scores = iter([0.1, 0.5])
    callback = UptakeCallback(lambda m: {"reliability": next(scores), "highly_known": 0.0}, keep_best=True)
    for epoch in (1, 2):
        _epoch_end(callback, model, epoch)
    assert callback.best_epoch == 2 and not callback.restore_best(model)


def test_the_cli_line_names_the_kept_epoch_only_when_it_is_not_the_last():
    summary = {"implanted": 10, "method": "lora", "reliability": 0.94, "epochs_run": 10, "stopped": "epochs"}
    kept = summary_line(Path("runs/a"), dict(summary, kept_epoch=6))
    assert kept.endswith("reliability 0.940 at epoch 6 (its weights kept), 10 epochs (epochs)")
    last = summary_line(Path("runs/a"), dict(summary, kept_epoch=10))
    assert last == "runs/a: 10 facts implanted with lora, reliability 0.940, 10 epochs (epochs)"


def test_keep_best_needs_uptake():
    with pytest.raises(KnowpackError, match="keep_best needs train.track_uptake"):
        load_config(None, ["train.keep_best=true", "train.track_uptake=false"])


def test_a_run_with_keep_best_saves_the_weights_of_its_best_epoch(world, tmp_path):
    settings = ["train.epochs=6", "train.lr=0.05", "train.batch_size=2", "train.keep_best=true"]
    run = train(load_config(None, overrides(world, "llama", tmp_path / "best", "lora", *settings)))
    summary = json.loads((run / "train.json").read_text())
    reliabilities = [e["reliability"] for e in summary["epochs"]]
    best = reliabilities.index(max(reliabilities)) + 1
    # Reliability stays 0 on this tiny random model: the first of equals, epoch 1, is kept, not the last.
    assert summary["kept_epoch"] == best < len(reliabilities)
    assert summary["reliability"] == max(reliabilities)
    line = summary_line(run, summary)  # what `knowpack train` ends with
    assert f"reliability {max(reliabilities):.3f} at epoch {best} (its weights kept), 6 epochs" in line
    # The same recipe stopped at the best epoch (constant lr: the same trajectory) saves the same weights.
    short = [s.replace("train.epochs=6", f"train.epochs={best}") for s in settings if "keep_best" not in s]
    ref = train(load_config(None, overrides(world, "llama", tmp_path / "short", "lora", *short)))
    a, b = (
        load_file(str(run / "adapter/adapter_model.safetensors")),
        load_file(str(ref / "adapter/adapter_model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
