"""`--backend ray` on a real two-node Ray cluster on this machine (`ray.cluster_utils.Cluster`, one CPU a
node): a 4-cell organism sweep equals the local backend's (sweep.json metrics, run-folder files, weights),
a cell whose worker is SIGKILLed mid-training is retried by Ray, a driver killed mid-sweep and started again
runs no cell twice, the workers write into their own scratch folder (not OUT) and the driver's OUT is
complete after, and a probe split over the cluster equals the one-process probe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from helpers import SRC, plan_files, tiny_plan_settings
from knowpack.cli import app
from knowpack.experiment.sweep import cell_status, load_sweep, run_sweep

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.organism, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ENV = {
    "PYTHONPATH": SRC,
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",  # no reports home from the test clusters
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes of one CPU each, on this machine; their workers import this checkout and keep their
    scratch run folders in `scratch` (the nodes' own folder, not any OUT)."""
    scratch = tmp_path_factory.mktemp("node-scratch")
    before = {k: os.environ.get(k) for k in [*ENV, "KNOWPACK_SCRATCH"]}
    os.environ.update(ENV, KNOWPACK_SCRATCH=str(scratch))  # what the nodes' raylets (and workers) inherit
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2}
    started = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    try:
        started.add_node(**node)
        started.wait_for_nodes()
        started.scratch = scratch
        yield started
    finally:
        started.shutdown()  # the processes this cluster started, no others
        for key, value in before.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def write_sweep(folder: Path, out: Path) -> Path:
    """4 cells (2 mix seeds x 2 LoRA ranks) on the organism, small: a 60-fact greedy probe, 6 facts, 3
    epochs."""
    data = {
        "base": str(CONFIGS / "organism" / "lora.yaml"),
        "set": {
            "probe.sample_size": 60,
            "probe.samples": 0,
            "probe.n_prompts": 2,
            "mix.n_unknown": 6,
            "train.epochs": 3,
            "train.target_reliability": None,
            "train.batch_size": 6,
        },  # fmt: skip
        "grid": {"mix.seed": [0, 1]},
        "cases": [{"method.r": 8}, {"method.r": 4}],
        "out": str(out),
        "resources": {"cpus": 1},
        "retries": 2,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The same sweep on the local backend, in this process: what every Ray run must equal."""
    root = tmp_path_factory.mktemp("local")
    summary = run_sweep(load_sweep(write_sweep(root, root / "out")))
    assert summary["finished"] == 4
    return root / "out"


def metrics(out: Path) -> list[dict]:
    """sweep.json's rows without the folder (which names OUT)."""
    rows = json.loads((out / "sweep.json").read_text())["cells"]
    return [{k: v for k, v in row.items() if k != "folder"} for row in rows]


def files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def with_probe(local: Path, out: Path) -> None:
    """Start `out` with the local sweep's shared probe (the tests below are about the cells)."""
    probe = next((local / "probe").iterdir())
    for f in probe.iterdir():
        (out / "probe" / probe.name).mkdir(parents=True, exist_ok=True)
        (out / "probe" / probe.name / f.name).write_bytes(f.read_bytes())


def sweep_command(path: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "knowpack", "sweep", str(path), "--backend", "ray", "--address", address]


def test_a_ray_sweep_equals_the_local_one(tmp_path, cluster, local):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["sweep", str(write_sweep(tmp_path, out)), "--backend", "ray", "--address", cluster.address]
    )
    assert result.exit_code == 0, result.output
    assert "4 of 4 cells finished" in result.stdout
    assert "cells on 2 nodes, 2 CPUs, 0 GPUs" in result.stderr  # the bar's first line: the cluster
    assert metrics(out) == metrics(local)
    assert files(out) == files(local)
    for name in files(local):
        if name.endswith(
            ("safetensors", "mix.jsonl", "records.jsonl")
        ):  # weights, data, probe: the same bytes
            assert (out / name).read_bytes() == (local / name).read_bytes(), name
    config = yaml.safe_load((out / "cells" / "method.r=4,mix.seed=1" / "config.yaml").read_text())
    assert config["out"] == str(out / "cells" / "method.r=4,mix.seed=1")  # OUT's paths, not a worker's
    assert config["probe"]["run"].startswith(str(out / "probe"))


def start_sweep(tmp_path: Path, cluster, local: Path) -> tuple[Path, Path, subprocess.Popen]:
    """The 4-cell sweep on the cluster in a process of its own, from the local sweep's probe: (OUT, its
    config, the process, stderr piped)."""
    out = tmp_path / "out"
    path = write_sweep(tmp_path, out)
    with_probe(local, out)
    proc = subprocess.Popen(sweep_command(path, cluster.address), env={**os.environ, **ENV}, text=True,
                            stderr=subprocess.PIPE)  # fmt: skip
    return out, path, proc


def test_a_worker_killed_mid_cell_is_retried_and_writes_only_its_own_folder(tmp_path, cluster, local):
    """The worker training a cell is SIGKILLed (its pid from its scratch run.json, in the nodes' scratch
    folder: at that moment OUT has no such cell); Ray reruns the cell and the driver's OUT ends complete."""
    out, path, proc = start_sweep(tmp_path, cluster, local)
    try:
        killed, deadline = None, time.time() + 240
        while killed is None and time.time() < deadline:
            for run in cluster.scratch.glob("knowpack-*/cells/*/run.json"):
                try:
                    record = json.loads(run.read_text())
                except ValueError:
                    continue
                if record.get("status") == "running" and (run.parent / "mix.json").exists():
                    assert not (out / "cells" / run.parent.name).exists()  # only in the worker's folder
                    time.sleep(1.0)  # into training
                    os.kill(record["pid"], signal.SIGKILL)
                    killed = run.parent.name
                    break
            time.sleep(0.05)
        assert killed is not None, "no cell started training"
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert stderr.count("[done]") == 4 and "[failed]" not in stderr
    left = list(
        cluster.scratch.glob(f"knowpack-*/cells/{killed}/run.json")
    )  # the killed worker's, unfinished
    assert left and all(json.loads(p.read_text())["status"] == "running" for p in left)
    assert metrics(out) == metrics(local)
    assert files(out) == files(local)


def test_a_driver_killed_mid_sweep_and_restarted_runs_no_cell_twice(tmp_path, cluster, local):
    out, path, proc = start_sweep(tmp_path, cluster, local)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not any(
            cell_status(c) == "finished" for c in load_sweep(path).cells
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        _, first = proc.communicate(timeout=30)
    finally:
        proc.kill()
    done_first = {line.split()[-1] for line in first.splitlines() if line.startswith("[done]")}
    finished = {c.name for c in load_sweep(path).cells if cell_status(c) == "finished"}
    assert done_first and len(finished) < 4 and done_first <= finished

    again = subprocess.run(sweep_command(path, cluster.address), env={**os.environ, **ENV}, text=True,
                           capture_output=True, timeout=300)  # fmt: skip
    assert again.returncode == 0, again.stderr
    skipped = {line.split()[-1] for line in again.stderr.splitlines() if line.startswith("[skip]")}
    done_again = {line.split()[-1] for line in again.stderr.splitlines() if line.startswith("[done]")}
    assert skipped == finished and done_again == {c.name for c in load_sweep(path).cells} - finished
    assert metrics(out) == metrics(local)


def test_a_probe_on_ray_equals_the_one_process_probe(tmp_path, cluster):
    """300 organism facts, 2 prompts with 2 samples each: two shards on the cluster, merged, give the same
    records as one process (categories, greedy answers; log-probabilities within 1e-5)."""
    from knowpack.probe import probe_named_model, read_records

    settings = ["--sample-size", "300", "--n-prompts", "2", "--samples", "2", "--max-new-tokens", "8"]
    one = probe_named_model(
        "organism",
        "organism",
        out=tmp_path / "one",
        sample_size=300,
        n_prompts=2,
        samples=2,
        max_new_tokens=8,
    ).records
    result = CliRunner().invoke(
        app,
        [
            "probe",
            "--out",
            str(tmp_path / "ray"),
            *settings,
            "--backend",
            "ray",
            "--address",
            cluster.address,
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "ray").glob("summary.*-of-*.json")) == [
        "summary.0-of-2.json",
        "summary.1-of-2.json",
    ]
    merged = {r["id"]: r for r in read_records(tmp_path / "ray" / "records.jsonl")}
    assert len(one) == len(merged) == 300
    for record in one:
        other = merged[record["id"]]
        assert {k: v for k, v in other.items() if k != "greedy_logprob"} == {
            k: v for k, v in record.items() if k != "greedy_logprob"
        }
        assert other["greedy_logprob"] == pytest.approx(record["greedy_logprob"], abs=1.01e-5)


def test_an_evaluated_cell_with_a_training_control_on_ray_equals_the_local_one(tmp_path, cluster, local):
    """A cell read against a training control: on Ray trained, then its control (once), then evaluated
    against that control's folder in OUT; eval.json equals the local backend's (OUT's name aside)."""
    extra = {"evaluate": True, "control": True, "grid": {"mix.seed": [0]}, "cases": None}
    runs = {}
    for backend in ("local", "ray"):
        out = tmp_path / backend / "out"
        path = write_sweep(tmp_path / backend, out)
        data = {**yaml.safe_load(path.read_text()), **extra}
        data["set"].update({"eval.benchmarks": [], "train.epochs": 2})
        path.write_text(yaml.safe_dump(data))
        with_probe(local, out)
        command = ["sweep", str(path)] + (
            ["--backend", "ray", "--address", cluster.address] * (backend == "ray")
        )
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 0, result.output
        (control,) = (out / "controls").iterdir()
        cell = out / "cells" / "mix.seed=0"
        text = (cell / "eval.json").read_text().replace(str(out), "OUT").replace(control.name, "CONTROL")
        runs[backend] = json.loads(text)
        assert "OUT/controls/CONTROL" in text  # read against the control in OUT
    for ev in runs.values():
        for key in ("provenance", "timing"):
            ev.pop(key, None)
    assert runs["ray"] == runs["local"]


def test_a_failing_cell_on_ray_is_one_line_and_the_sweep_goes_on(tmp_path, cluster, local):
    out = tmp_path / "out"
    path = write_sweep(tmp_path, out)
    data = {**yaml.safe_load(path.read_text()), "grid": {"mix.n_unknown": [6, 5000]}, "cases": None}
    data["set"]["train.epochs"] = 1
    path.write_text(yaml.safe_dump(data))
    with_probe(local, out)
    result = CliRunner().invoke(app, ["sweep", str(path), "--backend", "ray", "--address", cluster.address])
    assert result.exit_code == 1
    probe = next((out / "probe").iterdir())
    assert (
        f"error: mix.n_unknown=5000: mix.n_unknown is 5000 but probe run {probe} has only" in result.stderr
    )  # one line, naming OUT's folder (not the worker's)
    assert "[failed] mix.n_unknown=5000" in result.stderr and "[done] mix.n_unknown=6" in result.stderr
    assert "1 of 2 cells finished" in result.stdout
    statuses = [c["status"] for c in json.loads((out / "sweep.json").read_text())["cells"]]
    assert statuses[0] == "finished" and statuses[1] != "finished"


def test_a_plan_on_ray_runs_its_trials_as_tasks_and_recommends_as_the_local_backend(world, tmp_path, cluster):
    """A grid plan (LoRA on 1 and 2 facts, two seeds each: the seeds of a trial run at once, one on each
    node) gives the local backend's trials, numbers and recommendation."""
    from knowpack.experiment.backends import run_plan_on_ray
    from knowpack.experiment.plan import load_plan, run_plan

    files = plan_files(tmp_path)
    grid = {"method": ["lora"], "lr_scale": [20.0], "n_facts": [1, 2]}
    results = {}
    for backend in ("local", "ray"):
        plan = load_plan(
            **tiny_plan_settings(
                world, files, tmp_path / backend, grid=grid, seeds=2, backend=backend, target=0.2
            )
        )
        if backend == "local":
            results[backend] = run_plan(plan)
        else:
            results[backend] = run_plan_on_ray(plan, address=cluster.address)
    local, remote = results["local"], results["ray"]
    assert (
        remote["answer"] == local["answer"]
        and remote["recommendation"]["trial"] == local["recommendation"]["trial"]
    )
    for a, b in zip(local["trials"], remote["trials"], strict=True):
        assert a["params"] == b["params"] and a["feasible"] == b["feasible"]
        for name, values in a["metrics"].items():
            assert values["per_seed"] == b["metrics"][name]["per_seed"], name
    assert files_of(tmp_path / "ray" / "trials") == files_of(tmp_path / "local" / "trials")
    assert not list(
        Path(cluster.scratch).glob("knowpack-*/trials")
    )  # the workers' folders, returned and gone


def files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
