"""Per-epoch checkpoints and resuming: a run stopped after an epoch (an exception at an epoch's end, or a
SIGKILL'd process) and run again continues from its last checkpoint and ends exactly where an uninterrupted
run ends (fixed seeds): the same per-epoch losses and reliabilities in train.json, the same weights."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from helpers import SRC, make_facts, overrides
from knowpack.cli import app
from knowpack.runs import read_run, run_status
from knowpack.train import load_config, train
from knowpack.train.run import last_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")
WEIGHTS = {"lora": "adapter", "loki": "loki", "full": "model", "peft": "adapter"}


class Stop(Exception):
    """Stands for the process dying after an epoch."""


def weights(run: Path, method: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in sorted((run / WEIGHTS[method]).glob("*.safetensors")):
        out.update(load_file(str(path)))
    return out


def epochs(run: Path) -> list[tuple]:
    summary = json.loads((run / "train.json").read_text())
    return [(e["epoch"], e["step"], e["loss"], e["reliability"]) for e in summary["epochs"]]


def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}\nAnswer:"}) + "\n" for f in make_facts())
    )
    return path


RESUME_CASES = [
    ("lora", ["method.r=2", "method.dropout=0.1"]),  # dropout: the RNG state must resume too
    ("loki", ["method.quota=25", "method.prompts=PROMPTS"]),  # the rows are the checkpointed parameters
    ("full", []),
    ("peft", ["method.peft_type=IA3", "method.target_modules=[mlp]", "method.feedforward_modules=[mlp]"]),
]


@pytest.mark.parametrize("method, extra", RESUME_CASES, ids=[m for m, _ in RESUME_CASES])
def test_a_run_stopped_after_an_epoch_resumes_to_the_uninterrupted_result(world, tmp_path, method, extra):
    extra = [e.replace("PROMPTS", str(prompts_file(tmp_path))) for e in extra]
    settings = [
        "train.epochs=4",
        "train.batch_size=2",
        "train.lr=0.02",
        "mix.add=paraphrase",
        "mix.k=1",
        *extra,
    ]
    whole = train(load_config(None, overrides(world, "llama", tmp_path / "whole", method, *settings)))

    config = load_config(None, overrides(world, "llama", tmp_path / "cut", method, *settings))

    def die_at_epoch_3(entry):
        if entry["epoch"] == 3:
            raise Stop

    with pytest.raises(Stop):
        train(config, on_epoch=die_at_epoch_3)
    cut = tmp_path / "cut"
    assert run_status(cut) == "failed"
    assert [p.name for p in (cut / "checkpoints").iterdir()] == ["checkpoint-8"]  # epoch 2's, the last kept

    resumed = train(config)
    assert read_run(resumed)["resumed_from"].endswith("checkpoint-8")
    assert json.loads((resumed / "train.json").read_text())["resumed_from"] == "checkpoint-8"
    assert not (resumed / "checkpoints").exists()  # removed once finished
    got, want = epochs(resumed), epochs(whole)
    assert [e[:2] for e in got] == [(1, 4), (2, 8), (3, 12), (4, 16)]
    for (_, _, loss, reliability), (_, _, loss0, reliability0) in zip(got, want, strict=True):
        assert loss == pytest.approx(loss0, rel=1e-5) and reliability == reliability0
    a, b = weights(resumed, method), weights(whole, method)
    assert a.keys() == b.keys() and a
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff < 1e-5, diff
    train_loss = json.loads((resumed / "train.json").read_text())["train_loss"]
    assert train_loss == pytest.approx(json.loads((whole / "train.json").read_text())["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_sigkilled_cli_run_resumes_with_resume_to_the_uninterrupted_result(world, tmp_path):
    settings = ["train.epochs=6", "train.batch_size=1", "method.r=2", "method.dropout=0.1"]
    whole = train(load_config(None, overrides(world, "llama", tmp_path / "whole", "lora", *settings)))
    out = tmp_path / "cut"
    args = overrides(world, "llama", out, "lora", *settings)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "knowpack", "train", "/dev/null", *args], env=env)
    try:  # killed as soon as the first complete checkpoint is there
        deadline = time.time() + 120
        while not list(out.glob("checkpoints/checkpoint-*/uptake.json")) and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert run_status(out) == "interrupted" and not (out / "train.json").exists()
    result = CliRunner().invoke(app, ["train", "/dev/null", *args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "resuming from checkpoint-" in result.output
    flat = [[x for entry in epochs(run) for x in entry] for run in (out, whole)]
    assert flat[0] == pytest.approx(flat[1], rel=1e-5)
    a, b = weights(out, "lora"), weights(whole, "lora")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5


def test_resume_refuses_what_it_cannot_resume_and_restart_starts_over(world, tmp_path):
    out = tmp_path / "run"
    args = overrides(world, "llama", out, "lora", "method.r=2", "train.epochs=3")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "/dev/null", *args, "--resume"])
    assert result.exit_code == 1 and f"--resume: {out} holds no run to resume" in result.output

    def die_at_epoch_2(entry):
        if entry["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(load_config(None, args), on_epoch=die_at_epoch_2)
    assert last_checkpoint(out).name == "checkpoint-1"
    result = runner.invoke(app, ["train", "/dev/null", *args, "train.lr=0.5", "--resume"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"error: --resume: cannot resume the run in {out}: train.lr changed since"
    assert last_checkpoint(out).name == "checkpoint-1"  # the refused rerun touched nothing

    # without --resume a changed config starts over (the old checkpoint goes); --restart always does
    train(load_config(None, [*args, "train.threads=1"]), resume=False)
    record = read_run(out)
    assert record["status"] == "finished" and "resumed_from" not in record


def test_a_run_without_checkpoints_saves_none_and_starts_over(world, tmp_path):
    out = tmp_path / "run"
    args = overrides(
        world, "llama", out, "lora", "method.r=2", "train.epochs=2", "train.save_checkpoints=false"
    )

    def die_at_epoch_2(entry):
        if entry["epoch"] == 2:
            assert not list(out.glob("checkpoints/checkpoint-*"))
            raise Stop

    with pytest.raises(Stop):
        train(load_config(None, args), on_epoch=die_at_epoch_2)
    train(load_config(None, args))
    assert "resumed_from" not in read_run(out)
