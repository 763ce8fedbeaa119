"""Kill at every point: each verb's process is SIGKILLed at every named point its uninterrupted run passes
(knowpack.faults), then run again to the end; the result must equal the uninterrupted run's (the same files,
weights within float rounding of a resumed run, the same results) with no temporary file left and nothing
stuck (no rerun refused).

The points of a run are read from the run itself (KNOWPACK_POINTS): a point added to the code is killed at
here without a change to this file. A point passed several times is killed at its first and its last
passing. The killed process is a fork of this one (torch already imported: a kill costs the run alone)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import die_at, kills, make_facts, overrides, points_of
from knowpack.io import is_temp
from knowpack.runs import read_run
from knowpack.train import load_config, train

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN_CASES = {
    "lora": ["method.r=2", "method.dropout=0.1"],
    "loki": ["method.quota=25", "method.prompts=PROMPTS"],
    "full": [],
    "peft": ["method.peft_type=IA3", "method.target_modules=[mlp]", "method.feedforward_modules=[mlp]"],
}
# What may differ between an uninterrupted run and a killed-then-rerun one: timings, process, resumption.
# Any key naming seconds or a rate is a timing too.
VOLATILE = {"started", "started_unix", "ended", "time", "peak_memory", "pid", "command", "resumed_from"}
VOLATILE |= {"timing", "git_commit"}  # a rerun may come from another checkout of the code


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def same_json(a: object, b: object, where: str) -> None:
    """Equal JSON values, leaving out timings; floats within a resumed run's rounding."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {
            k
            for k in a.keys() | b.keys()
            if k not in VOLATILE and "seconds" not in k and "per_second" not in k
        }
        assert {k for k in keys if k in a} == {k for k in keys if k in b}, where
        for k in keys:
            same_json(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same_json(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), where
    else:
        assert a == b, where


def same_result(got: Path, want: Path) -> None:
    """The folder a killed-then-rerun command left equals the uninterrupted one's: the same files and no
    temporary; the same tensors (float rounding); the same JSON and JSON-lines results (timings aside)."""
    assert files(got) == files(want)
    assert not [p for p in got.rglob("*") if is_temp(p.name)]

    def text(path: Path) -> str:  # the folder's own name aside
        return path.read_text().replace(str(got), str(want))

    for name in files(want):
        a, b = got / name, want / name
        if name.endswith(".safetensors"):
            x, y = load_file(str(a)), load_file(str(b))
            assert x.keys() == y.keys(), name
            for key in x:
                assert torch.allclose(x[key].double(), y[key].double(), atol=1e-5, rtol=1e-4), (name, key)
        elif name.endswith(".json"):
            same_json(json.loads(text(a)), json.loads(text(b)), name)
        elif name.endswith(".jsonl"):
            rows = [[json.loads(line) for line in text(p).splitlines()] for p in (a, b)]
            same_json(rows[0], rows[1], name)
        elif name.endswith((".yaml", ".txt", ".md")):
            assert text(a) == text(b), name


def check_every_kill(run_into: Callable[[Path], object], root: Path, last: bool = True) -> int:
    """Kill `run_into(folder)` at every point of its uninterrupted run (`kills`), rerun it, compare; returns
    how many kills were made."""
    whole = root / "whole"
    points = points_of(lambda: run_into(whole), root / "points.txt")
    assert points, "the run passed no point"
    for i, kill in enumerate(kills(points, last)):
        folder = root / f"cut{i}"
        die_at(lambda folder=folder: run_into(folder), kill)
        run_into(folder)
        try:
            same_result(folder, whole)
        except AssertionError as e:
            raise AssertionError(f"killed at {kill!r}: {e}") from e
    return len(kills(points, last))


@pytest.mark.slow
@pytest.mark.parametrize("method", list(TRAIN_CASES))
def test_train_killed_at_every_point_reruns_to_the_uninterrupted_run(world, tmp_path, method):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}\nAnswer:"}) + "\n" for f in make_facts())
    )
    extra = [e.replace("PROMPTS", str(prompts)) for e in TRAIN_CASES[method]]
    settings = ["train.epochs=2", "train.batch_size=2", "train.lr=0.02", *extra]

    def run_into(out: Path) -> None:
        train(load_config(None, overrides(world, "llama", out, method, *settings)))

    # each point's first passing (the first epoch's checkpoint writes); runs stopped at a later epoch and
    # resumed from its checkpoint are test_resume.py's
    made = check_every_kill(run_into, tmp_path, last=False)
    assert made >= 10
    assert read_run(tmp_path / "cut0")["status"] == "finished"


@pytest.mark.slow
def test_attribute_killed_at_every_point_resumes_mid_run_to_the_uninterrupted_counts(world, tmp_path):
    """Saved after every prompt (checkpoint_seconds=0): kills land between saves, inside them (records
    appended, stats not yet written) and in the final write, so mid-run resumption is exercised."""
    from knowpack.methods.loki import attribute, load_prompts
    from knowpack.models import load_model

    model, tokenizer = load_model(world["models"]["llama"], device="cpu")
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}\nAnswer:"}) + "\n" for f in make_facts())
    )
    prompts = load_prompts(path, tokenizer)[:4]

    def run_into(out: Path) -> None:
        attribute(model, tokenizer, prompts, out=out, checkpoint_seconds=0, prompts_per_pass=1)

    points = points_of(lambda: run_into(tmp_path / "trace"), tmp_path / "attribute-points.txt")
    assert Counter(points)["append records.jsonl"] == 4  # one save a prompt: mid-run saves to resume from
    assert check_every_kill(run_into, tmp_path) >= 6


@pytest.mark.slow
def test_probe_killed_at_every_point_reruns_to_the_same_records(world, tmp_path):
    from knowpack.facts import load_facts
    from knowpack.models import load_model
    from knowpack.probe.run import probe

    model, tokenizer = load_model(world["models"]["llama"], device="cpu")
    eight = load_facts(world["facts"])  # 130 facts: two chunks of 64 and one of 2, each appended when done
    facts = [
        dataclasses.replace(f, id=f"{f.id}-{i}", question=f"{f.question} ({i})")
        for i in range(17)
        for f in eight
    ][:130]

    def run_into(out: Path) -> None:
        probe(
            model, tokenizer, facts, n_prompts=2, shots=1, samples=2, max_new_tokens=4, out=out, batch_size=6
        )

    points = points_of(lambda: run_into(tmp_path / "trace"), tmp_path / "probe-points.txt")
    assert Counter(points)["append records.jsonl"] == 3, points  # killed between chunks too
    assert check_every_kill(run_into, tmp_path) >= 4


@pytest.mark.slow
def test_sweep_killed_at_every_point_reruns_to_the_uninterrupted_sweep(world, tmp_path):
    import yaml

    from knowpack.experiment.sweep import load_sweep, run_sweep

    base = tmp_path / "base.yaml"
    base.write_text(
        yaml.safe_dump(
            {
                "model": {"name": str(world["models"]["llama"])},
                "facts": {"path": str(world["facts"])},
                "probe": {"n_prompts": 2, "shots": 1, "samples": 0, "max_new_tokens": 4},
                "mix": {"n_unknown": 2},
                "method": {"name": "lora", "r": 2, "alpha": 4},
                "train": {"epochs": 2, "batch_size": 2, "lr": 0.01, "device": "cpu"},
            }
        )
    )

    def run_into(out: Path) -> None:
        path = out.with_name(out.name + ".yaml")
        path.write_text(yaml.safe_dump({"base": str(base), "grid": {"mix.seed": [0, 1]}, "out": str(out)}))
        summary = run_sweep(load_sweep(path))
        assert summary["finished"] == summary["total"] == 2

    # each cell is a training run, killed at its every point above: here each point's first passing
    assert check_every_kill(run_into, tmp_path, last=False) >= 12


# ---------------------------------------------------------------- each case of a fault found by hand


@pytest.mark.parametrize("method", ["lora", "loki"])
def test_a_run_whose_checkpoint_removal_was_cut_short_resumes(world, tmp_path, method):
    """Killed after the weights were saved, with the last checkpoint half removed (only its uptake.json
    left, as an interrupted cleanup left it): the rerun must not take that checkpoint for complete."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}"}) + "\n" for f in make_facts())
    )
    extra = [e.replace("PROMPTS", str(prompts)) for e in TRAIN_CASES[method]]
    settings = [
        "train.epochs=3",
        "train.batch_size=2",
        "train.lr=0.02",
        "train.target_reliability=null",
        *extra,
    ]

    def run_into(out: Path) -> None:
        train(load_config(None, overrides(world, "llama", out, method, *settings)))

    run_into(tmp_path / "whole")
    cut = tmp_path / "cut"
    die_at(lambda: run_into(cut), "save: weights written@1")
    last = max((cut / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    for path in last.iterdir():
        if path.name != "uptake.json":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    run_into(cut)
    same_result(cut, tmp_path / "whole")


BAD_YAML = {
    "billion laughs": (
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(
            f"{y}: &{y} [{', '.join(['*' + x] * 9)}]\n" for x, y in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        r"run\.yaml:\d+: the config expands to more than 100,000 values through its aliases",
    ),
    "duplicate section": (
        "train:\n  threads: 1\nmodel:\n  name: organism\ntrain:\n  lr: 0.1\n",
        r"run\.yaml:5: duplicate key train \(first given at line 1\); give each key once",
    ),
    "duplicate key": (
        "train:\n  lr: 0.1\n  lr: 0.2\n",
        r"run\.yaml:3: duplicate key train\.lr \(first given at line 2\)",
    ),
    "recursive alias": ("mix: &m {k: [*m]}\n", r"run\.yaml:1: an alias refers to a value that contains it"),
    "empty": (
        "",
        r"run\.yaml: the run config is empty: with every default it would probe all the organism's",
    ),
    "only a comment": ("# nothing yet\n", r"run\.yaml: the run config is empty"),
}


@pytest.mark.parametrize("case", list(BAD_YAML))
def test_hostile_or_empty_run_configs_are_one_line_errors_at_once(tmp_path, case):
    from typer.testing import CliRunner

    from knowpack.cli import app

    text, error = BAD_YAML[case]
    path = tmp_path / "run.yaml"
    path.write_text(text)
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and re.search(error, result.output), result.output


def test_sweep_and_world_configs_refuse_the_same(tmp_path):
    from knowpack.errors import KnowpackError
    from knowpack.experiment.sweep import load_sweep
    from knowpack.world.config import load_world_config

    laughs = BAD_YAML["billion laughs"][0]
    for name, load in (("sweep.yaml", load_sweep), ("world.yaml", load_world_config)):
        path = tmp_path / name
        path.write_text(laughs)
        with pytest.raises(KnowpackError, match="expands to more than 100,000 values"):
            load(path)
        path.write_text("out: a\nout: b\n")
        with pytest.raises(KnowpackError, match=rf"{name}:2: duplicate key out"):
            load(path)


@pytest.mark.parametrize("method", ["lora", "loki", "full"])
def test_weights_checkpoints_and_exports_honour_the_umask(world, tmp_path, method):
    from knowpack.train.export import export_run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}"}) + "\n" for f in make_facts())
    )
    extra = [e.replace("PROMPTS", str(prompts)) for e in TRAIN_CASES[method]]
    before = os.umask(0o022)
    try:
        out = tmp_path / "run"
        train(
            load_config(None, overrides(world, "llama", out, method, "train.keep_checkpoints=true", *extra))
        )
        export_run(out, tmp_path / "export")
    finally:
        os.umask(before)
    found = [p for p in [*out.rglob("*"), *(tmp_path / "export").rglob("*")] if p.is_file()]
    assert any(p.suffix == ".safetensors" and "checkpoint-" in str(p) for p in found)
    assert any(p.suffix == ".safetensors" and "export" in str(p) for p in found)
    private = [str(p) for p in found if p.stat().st_mode & 0o777 != 0o644]
    assert not private


def test_file_system_refusals_are_one_line_errors(world, tmp_path):
    from typer.testing import CliRunner

    from knowpack.cli import app

    runner = CliRunner()
    if os.geteuid() == 0:  # root writes into read-only folders: /sys refuses even root
        blocked = Path("/sys/knowpack-test-run")
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o500)
        blocked = tmp_path / "ro" / "run"
    result = runner.invoke(
        app, ["train", "/dev/null", *overrides(world, "llama", blocked, "lora", "method.r=2")]
    )
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"error: {blocked}") and "ermi" in result.output  # not permitted / denied

    run = tmp_path / "run"
    train(load_config(None, overrides(world, "llama", run, "lora", "method.r=2", "train.epochs=1")))
    afile = tmp_path / "a-file"
    afile.write_text("x")
    result = runner.invoke(app, ["export", str(run), "--out", str(afile)])
    assert result.exit_code == 1, result.output
    assert (
        result.output.strip() == f"error: export folder {afile} exists and is not a folder; use another --out"
    )

    from knowpack.methods.loki import attribute, load_prompts
    from knowpack.models import load_model

    model, tokenizer = load_model(world["models"]["llama"], device="cpu")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Question: Where was Ada Brown born?"}) + "\n")
    attribute(model, tokenizer, load_prompts(prompts, tokenizer), out=tmp_path / "kva")
    result = runner.invoke(app, ["select", str(tmp_path / "kva"), "--quota", "10", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"error: --out {tmp_path} is a folder; the selection is one JSON file, "
        f"e.g. {tmp_path / 'selection.json'}"
    )


def test_a_worker_whose_last_cell_is_another_workers_exits_0_and_says_so(world, tmp_path):
    import socket

    import yaml
    from typer.testing import CliRunner

    from knowpack.cli import app
    from knowpack.experiment.sweep import load_sweep

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"model": {"name": str(world["models"]["llama"])}}))
    common = {"facts.path": str(world["facts"]), "probe.run": str(world["probe"]), "probe.n_prompts": 2}
    common |= {"probe.shots": 1, "mix.n_unknown": 2, "train.epochs": 1, "method.r": 2}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {"base": str(base), "set": common, "grid": {"mix.seed": [0, 1]}, "out": str(tmp_path / "out")}
        )
    )
    cells = load_sweep(sweep).cells
    other = cells[1].folder.with_name(cells[1].folder.name + ".claim")  # a live worker (this process) has it
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": 0}))
    from knowpack.runs import start_run

    start_run(cells[1].folder, "train")  # running, in this live process
    result = CliRunner().invoke(app, ["sweep", str(sweep)])
    assert result.exit_code == 0, result.output
    assert "1 of 2 cells finished" in result.output
    assert (
        f"cell {cells[1].name} is being run by worker {socket.gethostname()}:{os.getpid()}" in result.output
    )


@pytest.mark.slow
def test_export_killed_at_every_point_reruns_to_the_same_checkpoint(world, tmp_path):
    from knowpack.train.export import export_run

    run = tmp_path / "run"
    train(load_config(None, overrides(world, "llama", run, "lora", "method.r=2", "train.epochs=1")))
    assert check_every_kill(lambda out: export_run(run, out, force=True), tmp_path / "exports") >= 1
    assert not [p for p in (tmp_path / "exports").iterdir() if is_temp(p.name)]


@pytest.mark.slow
def test_capacity_killed_at_every_point_reruns_to_the_same_answer(fake_base, tmp_path):
    """The search's own writes (claims, capacity.json after every point, the plot), with points that train
    nothing (their runs' kills are the train test's): the same answer, points and files."""
    from helpers import fake_point, write_capacity
    from knowpack.experiment.capacity import load_capacity, run_capacity

    def run_into(out: Path) -> None:
        path = write_capacity(out.parent, fake_base, out=str(out), max=20, budget={"retention": 0.5})
        path.rename(out.parent / f"{out.name}.yaml")
        reliability = lambda n, seed: 1.0 if n <= 11 else 0.5  # noqa: E731
        result = run_capacity(
            load_capacity(out.parent / f"{out.name}.yaml"), run_point=fake_point([], reliability)
        )
        assert result["answer"] == 11

    assert check_every_kill(run_into, tmp_path, last=False) >= 3
