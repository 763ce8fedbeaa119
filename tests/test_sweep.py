"""`knowpack sweep` on a tiny random Llama: the cells of grid x cases at predictable paths, --dry-run, a
shared probe done once, finished cells skipped, and a sweep killed mid-cell that, rerun, ends with exactly
the results of an uninterrupted one."""

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

from helpers import SRC, make_facts
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.experiment.sweep import cell_status, load_sweep, run_sweep
from knowpack.facts import save_facts
from knowpack.runs import read_run
from tiny import save_tiny, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A run config for a tiny Llama that probes its facts itself (the sweep shares that probe)."""
    root = tmp_path_factory.mktemp("sweep-world")
    facts = make_facts()
    save_facts(facts, root / "facts.jsonl")
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts]
    tok = tiny_tokenizer(texts + ["Answer the following question."], root / "tok")
    model = save_tiny("llama", tok, root / "model")
    config = {
        "model": {"name": str(model)},
        "facts": {"path": str(root / "facts.jsonl")},
        "probe": {"n_prompts": 2, "shots": 1, "samples": 2, "max_new_tokens": 4},
        "mix": {"n_unknown": 2},
        "method": {"name": "lora", "r": 2, "alpha": 4},
        "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "device": "cpu"},
    }
    path = root / "base.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_sweep(tmp_path: Path, base: Path, out: Path, **extra) -> Path:
    data = {
        "base": str(base),
        "set": {"train.epochs": 2},
        "grid": {"mix.seed": [0, 1]},
        "cases": [{"mix.add": "none", "mix.k": 0}, {"mix.add": "paraphrase", "mix.k": 1}],
        "out": str(out),
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def results(out: Path) -> dict[str, list]:
    """Per cell: the per-epoch (loss, reliability) of train.json: what must not depend on interruptions."""
    found = {}
    for train_json in sorted((out / "cells").glob("*/train.json")):
        epochs = json.loads(train_json.read_text())["epochs"]
        found[train_json.parent.name] = [(e["loss"], e["reliability"]) for e in epochs]
    return found


def test_cells_dry_run_and_a_whole_sweep(tmp_path, base):
    path = write_sweep(tmp_path, base, tmp_path / "out")
    sweep = load_sweep(path)
    names = [c.name for c in sweep.cells]
    assert names == [
        "mix.add=none,mix.k=0,mix.seed=0",
        "mix.add=paraphrase,mix.k=1,mix.seed=0",
        "mix.add=none,mix.k=0,mix.seed=1",
        "mix.add=paraphrase,mix.k=1,mix.seed=1",
    ]
    assert all(c.folder == tmp_path / "out" / "cells" / c.name for c in sweep.cells)
    result = CliRunner().invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 0 and result.output.count("todo") == 4 and "4 cells" in result.output

    summary = run_sweep(sweep)
    assert summary["finished"] == summary["total"] == 4
    assert all(cell_status(c) == "finished" for c in sweep.cells)
    probes = list((tmp_path / "out" / "probe").iterdir())
    assert len([p for p in probes if p.is_dir()]) == 1  # one probe of the base, shared by every cell
    for cell in sweep.cells:
        resolved = yaml.safe_load((cell.folder / "config.yaml").read_text())
        assert (
            resolved["probe"]["run"] == str(probes[0])
            and resolved["mix"]["seed"] == cell.overrides["mix.seed"]
        )
    mixes = {c.name: json.loads((c.folder / "mix.json").read_text())["implanted"] for c in sweep.cells}
    assert mixes[names[0]] != mixes[names[2]]  # another seed, other facts

    events = []
    run_sweep(load_sweep(path), on_cell=lambda cell, event: events.append(event))
    assert events == ["skip"] * 4


def test_the_sweep_verb_runs_cells_in_worker_processes(tmp_path, base):
    """`knowpack sweep --workers 2` for real (not --dry-run): two spawned workers share the cells, sweep.json
    lists both finished; the same command again skips them."""
    path = write_sweep(tmp_path, base, tmp_path / "out", cases=None, grid={"mix.seed": [0, 1]})
    result = CliRunner().invoke(app, ["sweep", str(path), "--workers", "2", "train.epochs=1"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 cells finished" in result.stdout
    summary = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["finished", "finished"]
    assert all(c["reliability"] is not None and c["epochs_run"] == 1 for c in summary["cells"])
    assert {read_run(tmp_path / "out" / "cells" / c["cell"])["pid"] for c in summary["cells"]} != {
        os.getpid()
    }
    again = CliRunner().invoke(app, ["sweep", str(path)])
    assert again.exit_code == 0 and again.stderr.count("[skip]") == 2, again.output


def test_workers_need_callbacks_other_processes_can_import(tmp_path, base):
    sweep = load_sweep(write_sweep(tmp_path, base, tmp_path / "out"))
    with pytest.raises(KnowpackError, match="must be module-level functions"):
        run_sweep(sweep, workers=2, on_cell=lambda cell, event: None)
    with pytest.raises(KnowpackError, match="--workers must be >= 1"):
        run_sweep(sweep, workers=0)


def test_an_evaluating_sweep_evaluates_each_cell_once(tmp_path, base):
    out = tmp_path / "out"
    path = write_sweep(
        tmp_path, base, out, evaluate=True, grid={"mix.seed": [0]}, cases=[{"mix.add": "none"}]
    )
    sweep = load_sweep(path)
    (cell,) = sweep.cells
    summary = run_sweep(sweep)
    ev = json.loads((cell.folder / "eval.json").read_text())
    (row,) = summary["cells"]
    assert row["status"] == "finished" and row["eval_reliability"] == ev["uptake"]["reliability"]["value"]
    assert row["retention"] == ev["knowledge_shift"]["untrained"]["retention"]["value"]

    trained_at = (cell.folder / "train.json").stat().st_mtime_ns
    (cell.folder / "eval.json").unlink()
    assert cell_status(cell) == "trained"  # trained, not yet evaluated: not finished
    events = []
    assert run_sweep(load_sweep(path), on_cell=lambda c, event: events.append(event))["finished"] == 1
    assert events == ["start", "done"] and (cell.folder / "eval.json").exists()
    assert (cell.folder / "train.json").stat().st_mtime_ns == trained_at  # only evaluated again


def test_a_labelled_case_replaces_a_section_and_names_its_cells(tmp_path, base):
    cases = [{"label": "full", "method": {"name": "full"}, "train.lr": 1e-4}, {"mix.add": "none"}]
    sweep = load_sweep(write_sweep(tmp_path, base, tmp_path / "o", cases=cases))
    names = [c.name for c in sweep.cells]
    assert names == [
        "case=full,mix.seed=0",
        "mix.add=none,mix.seed=0",
        "case=full,mix.seed=1",
        "mix.add=none,mix.seed=1",
    ]
    full = sweep.cells[0].config
    assert full.method.name == "full" and full.method.options == {} and full.train.lr == 1e-4
    assert sweep.cells[1].config.method.options == {"r": 2, "alpha": 4}  # the base's section, untouched
    assert sweep.cells[0].overrides["case"] == "full"


def test_bad_sweeps_are_one_line_errors(tmp_path, base):
    with pytest.raises(KnowpackError, match="unknown key"):
        load_sweep(write_sweep(tmp_path, base, tmp_path / "o", gird={}))
    with pytest.raises(
        KnowpackError, match=r"cell mix.add=none,mix.k=0,mix.seed=0: .*sweep.yaml:\d+: unknown key mix.sed"
    ):
        load_sweep(write_sweep(tmp_path, base, tmp_path / "o", set={"mix.sed": 1}))
    with pytest.raises(KnowpackError, match="grid.mix.seed must be a non-empty list"):
        load_sweep(write_sweep(tmp_path, base, tmp_path / "o", grid={"mix.seed": 3}))
    with pytest.raises(KnowpackError, match="a case's label must be a non-empty string"):
        load_sweep(write_sweep(tmp_path, base, tmp_path / "o", cases=[{"label": 3}]))
    with pytest.raises(KnowpackError, match=r"sweep.yaml:\d+: evaluate: expected bool, got str 'yes'"):
        load_sweep(write_sweep(tmp_path, base, tmp_path / "o", evaluate="yes"))


def test_a_sweep_killed_mid_cell_and_rerun_equals_an_uninterrupted_one(tmp_path, base):
    whole = tmp_path / "whole"
    run_sweep(
        load_sweep(write_sweep(tmp_path / "a", base, whole) if (tmp_path / "a").mkdir() is None else None)
    )

    out = tmp_path / "killed"
    (tmp_path / "b").mkdir()
    path = write_sweep(tmp_path / "b", base, out)
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "knowpack", "sweep", str(path)], env=env)
    try:
        deadline, second = time.time() + 300, None
        while time.time() < deadline and second is None:
            done = [c for c in load_sweep(path).cells if cell_status(c) == "finished"]
            running = [
                c for c in load_sweep(path).cells if (read_run(c.folder) or {}).get("status") == "running"
            ]
            if done and running:
                second = running[0]
            time.sleep(0.1)
        assert second is not None, "the sweep never got to a second cell"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    cells = load_sweep(path).cells
    assert any(cell_status(c) == "interrupted" for c in cells)
    summary = run_sweep(load_sweep(path))
    assert summary["finished"] == 4
    assert results(out) == results(whole)


def test_the_shipped_sweep_configs_resolve():
    paths = sorted((Path(__file__).resolve().parents[1] / "configs" / "replicate").glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        sweep = load_sweep(path)
        assert path.read_text().startswith(f"# knowpack sweep configs/replicate/{path.name}")
        assert sweep.cells and len({c.folder for c in sweep.cells}) == len(sweep.cells)


def test_the_shared_probe_is_keyed_by_the_models_files_not_only_its_name(tmp_path, base):
    """Other weights behind the same model folder (a retrained model, a new organism) get another base probe
    and attribution folder; the same files, saved again, the same ones."""
    import torch

    from knowpack.models import model_fingerprint

    model_dir = Path(yaml.safe_load(base.read_text())["model"]["name"])
    copy = tmp_path / "model"
    copy.mkdir()
    for f in model_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    path = write_sweep(tmp_path, base, tmp_path / "out", set={"model.name": str(copy)})

    def probe_folder() -> str:
        return load_sweep(path).cells[0].config.probe.out

    first, fingerprint = probe_folder(), model_fingerprint(copy)
    assert fingerprint == model_fingerprint(model_dir) and len(fingerprint) == 16
    (copy / "config.json").write_text((copy / "config.json").read_text())  # touched, same bytes
    assert probe_folder() == first
    from safetensors.torch import load_file, save_file

    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + torch.ones_like(weights[name])
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(copy) != fingerprint and probe_folder() != first
    assert model_fingerprint("no-org/not-in-the-cache-model") is None
    assert model_fingerprint("not a repo id//") is None


def test_cells_of_one_recipe_share_one_training_control(tmp_path, base, monkeypatch):
    """Six cells, two recipes (lr 0.01, 0.02) of three seeds each: each recipe's control is trained once per
    seed and epoch count its cells kept (counted at `knowpack.train.train`): seed 2 of lr 0.01 stopped after 1
    of its 2 epochs, so its control trains 1 epoch (the same optimizer steps); a case may opt out."""

    from knowpack.runs import end_run, start_run

    calls = []

    def fake_train(config, force=False, **_):
        calls.append(config)
        early = (config.train.lr, config.mix.seed) == (0.01, 2) and not config.mix.control
        kept = 1 if early else config.train.epochs
        end_run(config.out, start_run(config.out, "train"), "finished")
        (Path(config.out) / "train.json").write_text(json.dumps({"epochs_run": 2, "kept_epoch": kept}))
        return Path(config.out)

    monkeypatch.setattr("knowpack.experiment.sweep.train", fake_train)  # where the sweep calls it
    cases = [{"train.lr": 0.01}, {"train.lr": 0.02}, {"label": "none", "train.lr": 0.03, "control": False}]
    grid = {"seed": [0, 1, 2]}  # one draw of everything random: mix.seed and train.seed
    sweep = load_sweep(write_sweep(tmp_path, base, tmp_path / "out", cases=cases, control=True, grid=grid))
    assert len(sweep.cells) == 9
    run_sweep(sweep)
    controls = [c for c in calls if c.mix.control]
    assert len([c for c in calls if not c.mix.control]) == 9
    got = sorted((c.train.lr, c.mix.seed, c.train.seed, c.train.epochs) for c in controls)
    assert got == [(lr, s, s, 1 if (lr, s) == (0.01, 2) else 2) for lr in (0.01, 0.02) for s in range(3)]
    assert all(c.train.target_reliability is None for c in controls)
    assert not any(c.train.keep_best for c in controls)
    assert sorted(p.name for p in (tmp_path / "out" / "controls").iterdir() if p.is_dir()) == sorted(
        Path(c.out).name for c in controls
    )
    run_sweep(load_sweep(write_sweep(tmp_path, base, tmp_path / "out", cases=cases, control=True, grid=grid)))
    assert len(calls) == 15  # all finished: nothing trained again


def test_replicate_seeds_vary_the_facts_and_the_training_together():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs" / "replicate"
    sweep = load_sweep(root / "loki.yaml")
    seeds = {(c.config.seed, c.config.mix.seed, c.config.train.seed) for c in sweep.cells}
    assert seeds == {(s, s, s) for s in range(5)} and len(sweep.cells) == 25
