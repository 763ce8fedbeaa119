"""The Ray backend's overhead per sweep cell against the local backend, on the organism, in one run.

    OMP_NUM_THREADS=1 python bench/ray_overhead.py                 # 4 cells, a local Ray instance of 1 CPU
    OMP_NUM_THREADS=1 python bench/ray_overhead.py --cells 8 --epochs 5

The same sweep twice (LoRA on the organism, `--cells` mix seeds, a 60-fact greedy probe, 6 facts, `--epochs`
epochs): first `run_sweep` in this process (the local backend, one worker), then `run_sweep_on_ray` on a
local Ray instance of `--cpus` CPUs started here (one cell a CPU: with 1 CPU the cells run one after
another, as locally). Both sweeps start with the shared base probe made (the local run makes it and the Ray
run is given a copy), so what is timed is the cells: per cell, local vs Ray, their ratio, and Ray's start-up
apart. Ray's
overhead per cell is its worker processes (each imports torch and loads the model for its first task), the
run folders shipped through the object store, and the driver writing them into OUT. The sweep.json metrics of
the two runs are compared (they must be equal).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def sweep_file(folder: Path, out: Path, cells: int, epochs: int) -> Path:
    data = {
        "base": str(ROOT / "configs" / "organism" / "lora.yaml"),
        "set": {
            "probe.sample_size": 60,
            "probe.samples": 0,
            "probe.n_prompts": 2,
            "mix.n_unknown": 6,
            "train.epochs": epochs,
            "train.target_reliability": None,
            "train.batch_size": 6,
        },  # fmt: skip
        "grid": {"mix.seed": list(range(cells))},
        "out": str(out),
        "resources": {"cpus": 1},
    }
    path = folder / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rows(out: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "folder"}
        for r in json.loads((out / "sweep.json").read_text())["cells"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of the local Ray instance")
    args = parser.parse_args()

    import ray
    import torch

    import knowpack
    from knowpack.experiment.backends import run_sweep_on_ray
    from knowpack.experiment.sweep import load_sweep, run_sweep

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    try:
        local_out, ray_out = work / "local", work / "ray"
        local = load_sweep(sweep_file(work, local_out, args.cells, args.epochs))
        # the shared probe first, untimed, so that both timings are the cells'
        from knowpack.experiment.sweep import prepare_shared

        prepare_shared(local.cells[0].config)
        local = load_sweep(sweep_file(work, local_out, args.cells, args.epochs))
        start = time.perf_counter()
        run_sweep(local)
        local_s = time.perf_counter() - start
        shutil.copytree(local_out / "probe", ray_out / "probe")

        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup_s = time.perf_counter() - start
        try:
            start = time.perf_counter()
            run_sweep_on_ray(load_sweep(sweep_file(work, ray_out, args.cells, args.epochs)))
            ray_s = time.perf_counter() - start
        finally:
            ray.shutdown()
        same = rows(local_out) == rows(ray_out)
        per_local, per_ray = local_s / args.cells, ray_s / args.cells
        result = {
            "cells": args.cells,
            "epochs": args.epochs,
            "ray_cpus": args.cpus,
            "local_s_per_cell": round(per_local, 2),
            "ray_s_per_cell": round(per_ray, 2),
            "overhead_s_per_cell": round(per_ray - per_local, 2),
            "ratio": round(per_ray / per_local, 2),
            "ray_startup_s": round(startup_s, 2),
            "same_metrics": same,
            "versions": {
                "knowpack": knowpack.__version__,
                "ray": ray.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
