"""Training under a launcher with two processes (gloo on the CPU), as on two GPUs: the run folder is written
by the main process alone, uptake is measured once and broadcast, and the result equals a one-process run with
the same global batch. Also run under the device guard (KNOWPACK_DEVICE_GUARD=1) in every process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.organism, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "configs" / "organism" / "lora.yaml"
SMALL = [
    "probe.sample_size=40",
    "probe.samples=0",
    "mix.n_unknown=8",
    "train.epochs=3",
    "train.target_reliability=null",
]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KNOWPACK_DEVICE_GUARD": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _launch(*args: str) -> subprocess.CompletedProcess:
    """`accelerate launch` with two processes. `--multi_gpu` is accelerate's multi-process launcher; with no
    GPU the processes join over gloo on the CPU (accelerate's `--cpu` starts one process unless MPI is set
    up)."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    return subprocess.run(
        [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "knowpack", "--threads", "1", *args],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    two = _launch("train", str(PRESET), *SMALL, "train.batch_size=4", f"out={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("facts implanted with lora") == 1, two.stdout  # one process talks
    run = json.loads((tmp_path / "two" / "run.json").read_text())
    assert run["status"] == "finished"
    two_train = json.loads((tmp_path / "two" / "train.json").read_text())
    assert two_train["processes"] == 2
    assert not (tmp_path / "two" / ".trainer").exists()

    one = subprocess.run(
        [sys.executable, "-m", "knowpack", "--threads", "1", "train", str(PRESET), *SMALL,
         "train.batch_size=8", f"probe.run={tmp_path / 'two' / 'probe'}", f"out={tmp_path / 'one'}"],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    one_train = json.loads((tmp_path / "one" / "train.json").read_text())
    assert one_train["processes"] == 1
    assert (tmp_path / "one" / "mix.jsonl").read_text() == (tmp_path / "two" / "mix.jsonl").read_text()
    # Same examples per optimizer step; the losses differ only in how per-process means are averaged and in
    # float summation order (measured: 4e-7 relative). Reliability is a share of greedy answers: equal.
    assert len(one_train["epochs"]) == len(two_train["epochs"]) == 3
    for a, b in zip(one_train["epochs"], two_train["epochs"], strict=True):
        assert a["reliability"] == b["reliability"]
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3)


def test_two_processes_attribute_one_shard_each_and_merge_into_one_processs_counts(tmp_path):
    from safetensors.torch import load_file

    args = ["attribute", "--model", "organism", "--prompts", "world_mc", "--limit", "6"]
    two = _launch(*args, "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("prompts attributed") == 1, two.stdout
    assert sorted(p.name for p in (tmp_path / "two").glob("kva.*-of-2.safetensors")) == [
        "kva.0-of-2.safetensors",
        "kva.1-of-2.safetensors",
    ]
    one = subprocess.run(
        [sys.executable, "-m", "knowpack", "--threads", "1", *args, "--out", str(tmp_path / "one")],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    merged, alone = (load_file(tmp_path / run / "kva.safetensors") for run in ("two", "one"))
    assert merged.keys() == alone.keys()
    for key in alone:
        if key.startswith(("hist", "edges")):
            assert (merged[key] == alone[key]).all(), key  # counts: exactly one process's
        else:
            assert (merged[key] - alone[key]).abs().max() <= 1e-9 * alone[key].abs().max(), (
                key
            )  # float64 sums
