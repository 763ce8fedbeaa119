"""`knowpack sweep CONFIG`: a grid of training runs, one run folder per cell, resumable and parallel.

    # configs/replicate/packing-cpu.yaml (shortened)
    base: ../organism/lora.yaml          # a run config (relative to this file)
    set: {train.epochs: 10}              # overrides for every cell
    grid:                                # the cells: every combination of these ...
      mix.n_unknown: [10, 50]
      mix.seed: [0, 1, 2]
    cases:                               # ... times each of these (keys that must vary together)
      - {mix.add: none, mix.k: 0}
      - {mix.add: paraphrase, mix.k: 10}
      - {label: loki, method: {name: loki, quota: 10}}   # a whole section; `label` names the cell
    out: runs/mixes
    evaluate: true                       # also `knowpack eval` each cell (its eval section's benchmarks)
    control: true                        # and read each cell's damage against a training control

Each cell is a run folder at a predictable path, `OUT/cells/<key=value,...>` (the keys that vary, sorted; a
case with a `label` shows as `case=<label>` instead of its keys).
A cell whose run is `finished` (and, with `evaluate: true`, has its `eval.json`) is skipped; a trained cell
missing its evaluation is only evaluated; an interrupted or failed one is redone; a cell another process is
running is left to it. Workers claim a cell by creating `OUT/cells/<cell>.claim` exclusively (O_EXCL), so
several processes, or machines sharing the folder, can run one sweep: `knowpack sweep CONFIG --workers 2`, or
the same command on every machine. A claim whose process is gone (same host) is taken over.

Work every cell shares is done once, under a lock: the probe of the base model (`OUT/probe/<hash>`, keyed by
model name and files, facts and probe settings) and the work its method declares shared
(`knowpack.methods.SharedWork`: LoKI's attribution, `OUT/attribution/<hash>`, for cells that attribute).
Nothing reads a run whose status is not `finished`.

Training controls (`control: true` for every cell, or `control: true / false` in a case): the cell's recipe
trained on as many HighlyKnown facts (`mix.control: true`) for as many epochs as the cell's saved weights had
(the same optimizer steps: a cell that stopped early at epoch 5 is read against 5 epochs of control), with
the cell's seeds, at `OUT/controls/<hash>`, keyed by the recipe (`control_key`: model, facts, probe, method
and its settings, train settings but stopping, n, additions, replay), the seed and those epochs: one control
per seed, trained and evaluated ONCE, under a lock, and every cell of that recipe, seed and length reads its
damage against it (`knowpack eval --control`; eval.json's `baselines.training_control`). A control does not
stop early: reliability on facts it already knew says nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.config import at, build, parse_override, read_yaml
from knowpack.errors import KnowpackError
from knowpack.evaluate.inputs import _recipe
from knowpack.evaluate.metrics import benchmark_values, headline, metric_entry
from knowpack.evaluate.run import evaluate_run
from knowpack.experiment.cluster import ClusterFile, cluster_settings, config_keys
from knowpack.faults import point
from knowpack.io import remove_temps, write_json_atomic
from knowpack.methods import method_module
from knowpack.models import model_fingerprint
from knowpack.runs import process_gone, run_status, stage_finished, trained_epochs
from knowpack.train.config import RunConfig, load_config
from knowpack.train.run import run_base_probe, train

logger = logging.getLogger(__name__)


@dataclass
class Cell:
    """One point of the grid: its name (folder), its overrides, its resolved config."""

    name: str
    overrides: dict[str, Any]
    config: RunConfig
    folder: Path
    evaluate: bool = False
    control: RunConfig | None = None
    """The cell's training control at the cell's epoch budget (`matched_control` sets its epochs to those the
    cell's weights had), or None."""


@dataclass
class Sweep:
    """A loaded sweep config."""

    path: Path
    base: Path | None
    common: dict[str, Any]
    grid: dict[str, list[Any]]
    cases: list[dict[str, Any]]
    out: Path
    evaluate: bool = False
    control: bool = False
    cells: list[Cell] = field(default_factory=list)
    cluster: ClusterFile = field(default_factory=ClusterFile)
    """`resources` and `retries` for `--backend ray` (`knowpack.experiment.backends`)."""


@dataclass
class SweepFile(ClusterFile):
    """The keys of a sweep config and their types (checked with their lines by `knowpack.config.build`);
    `resources` and `retries` are `ClusterFile`'s."""

    base: str | None = None
    """The run config every cell starts from (relative to the sweep config)."""
    set: dict[str, Any] | None = None
    """`section.key: value` for every cell."""
    grid: dict[str, Any] | None = None
    """`section.key: [values]`: the cells are every combination."""
    cases: list[dict] | None = None
    """... times each of these mappings (keys that vary together; `label` names the cell)."""
    out: str | None = None
    evaluate: bool = False
    """Also evaluate each cell (`knowpack eval`)."""
    control: bool = False
    """Train a training control once per recipe and evaluate each cell against it (a case may say
    `control: false` or `true` for its cells)."""


_SWEEP_KEYS = config_keys(SweepFile)


def load_sweep(path: str | os.PathLike, overrides: list[str] = ()) -> Sweep:
    """Read a sweep config and resolve every cell's run config (all checked before anything runs).
    `overrides`: `out=DIR`, a sweep key (`evaluate=true`) or a run config key (`train.lr=1e-3`) for every
    cell, in `knowpack.config`'s `key=value` grammar."""
    path = Path(path)
    lines: dict[tuple, int | str] = {}
    data = read_mapping(path, "sweep", _SWEEP_KEYS, lines)
    for item in overrides:
        key, value = parse_override(item)
        if key == ("out",):
            data["out"] = item.partition("=")[2]
        elif len(key) == 1 and key[0] in _SWEEP_KEYS:
            data[key[0]] = value
        else:
            data["set"] = {**(data.get("set") or {}), ".".join(key): value}
            key = ("set", ".".join(key))
        lines[key] = "command line"
    checked = build(SweepFile, data, where=str(path), lines=lines)
    base = (path.parent / checked.base).resolve() if checked.base else None
    common, grid = dict(checked.set or {}), dict(checked.grid or {})
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise KnowpackError(
                f"{at(str(path), lines, ('grid', key))}: grid.{key} must be a non-empty list of values"
            )
    cases = checked.cases or [{}]
    if not checked.out:
        raise KnowpackError(f"{path}: no out folder (set out: DIR, or out=DIR on the command line)")
    sweep = Sweep(path, base, common, grid, cases, Path(checked.out), checked.evaluate, checked.control)
    sweep.cluster = cluster_settings(checked, at(str(path), lines, ("resources",)))
    sweep.cells = _cells(sweep, lines)
    return sweep


def read_mapping(
    path: Path, kind: str, keys: tuple[str, ...], lines: dict[tuple, int | str] | None = None
) -> dict[str, Any]:
    """An experiment config (YAML) as a mapping of `keys` (`knowpack.config.read_yaml`); an unknown key is a
    one-line error with its line. `lines`, when given, is filled with each key path's line."""
    data, found = read_yaml(path, kind)
    unknown = [k for k in data if k not in keys]
    if unknown:
        where = at(str(path), found, (unknown[0],))
        raise KnowpackError(f"{where}: unknown key {unknown[0]}; expected one of {', '.join(keys)}")
    if lines is not None:
        lines.update(found)
    return data


def origins(path: Path, lines: dict[tuple, int | str], keys: dict[str, tuple]) -> dict[str, str]:
    """Run config key -> where an experiment config set it (`path:line`, or "command line"), for
    `load_config(..., origins=)`: `keys` maps each key to its path in the experiment config's YAML."""
    out = {}
    for key, where in keys.items():
        line = lines.get(where)
        out[key] = line if isinstance(line, str) else f"{path}:{line}" if line else str(path)
    return out


def _cells(sweep: Sweep, lines: dict[tuple, int | str]) -> list[Cell]:
    keys = list(sweep.grid)
    cases = []
    for index, case in enumerate(sweep.cases):
        case = dict(case)
        label = case.pop("label", None)
        if label is not None and not (isinstance(label, str) and label):
            raise KnowpackError(f"{sweep.path}: a case's label must be a non-empty string, not {label!r}")
        control = case.pop("control", sweep.control)
        if not isinstance(control, bool):
            raise KnowpackError(f"{sweep.path}: a case's control must be true or false, not {control!r}")
        cases.append((label, case, index, control))
    varying = set(keys) | {k for label, case, _, _ in cases if label is None for k in case}
    cells, names = [], set()
    for values in itertools.product(*(sweep.grid[k] for k in keys)):
        for label, case, index, control in cases:
            point = {**dict(zip(keys, values, strict=True)), **case}
            shown = {k: point[k] for k in sorted(varying) if k in point and (label is None or k in keys)}
            if label is not None:
                shown["case"] = label
            name = cell_name(dict(sorted(shown.items())))
            if name in names:
                raise KnowpackError(f"{sweep.path}: two cells are the same ({name}); check grid and cases")
            names.add(name)
            folder = sweep.out / "cells" / name
            settings = {**sweep.common, **point}
            where = {k: ("set", k) for k in sweep.common}
            where.update({k: ("grid", k) for k in keys})
            where.update({k: ("cases", index, k) for k in case})
            try:
                config = load_config(
                    sweep.base,
                    [f"{k}={yaml_value(v)}" for k, v in settings.items()],
                    origins=origins(sweep.path, lines, where),
                )
            except KnowpackError as e:
                raise KnowpackError(f"cell {name}: {e}") from None
            config.out = str(folder)
            share_work(config, sweep.out)
            ctl = control_config(config, sweep.out) if control else None
            overrides = point if label is None else {"case": label, **point}
            cells.append(Cell(name, overrides, config, folder, sweep.evaluate, ctl))
    return cells


def cell_name(point: dict[str, Any]) -> str:
    """`key=value,...` in key order: the cell's folder name (path separators in values replaced)."""
    parts = []
    for key, value in point.items():
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        parts.append(f"{key}={text.replace('/', '_').replace(os.sep, '_')}")
    return ",".join(parts) or "default"


def yaml_value(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def share_work(config: RunConfig, out: Path) -> None:
    """Point a cell at the sweep's shared probe and its method's shared work (LoKI's attribution), keyed by
    what determines them: the model's name and, where it can be told, its files
    (`knowpack.models.model_fingerprint`), and their settings."""
    if config.probe.run is None and config.probe.out is None:
        key = {**_model_key(config), "facts": config.facts.path, "mode": config.facts.mode}
        settings = config.probe.kwargs()
        for speed in config.probe.SPEED_ONLY:  # how fast, not what (batch_size stays, as sweeps keyed it)
            settings.pop(speed)
        # under the old names (`pool`, `pool_seed`), so that sweeps from before the rename find their probes
        key.update(pool=config.probe.sample_size, pool_seed=config.probe.sample_size_seed, **settings)
        config.probe.out = str(out / "probe" / _hash(key))
    options = config.method.options
    work = method_module(config.method.name).shared_work(options)
    if work is not None and not options.get(f"{work.name}_out"):
        key = {**_model_key(config), **work.key}
        options[f"{work.name}_out"] = str(out / work.name / _hash(key))


def control_key(config: RunConfig) -> dict[str, Any]:
    """What makes two cells share a training control: the base probe, the method and its settings, the train
    settings but those a control may differ in (`knowpack.evaluate.inputs.CONTROL_FREE`), n, additions and
    replay (`knowpack.evaluate.inputs.check_control` checks the same), and the seed: a control per seed, so
    that each seed's damage is read against a control of the same draw (facts, order, initialisation)."""
    probe = config.probe.run or config.probe.out
    seeds = {"mix.seed": config.mix.seed, "train.seed": config.train.seed}
    return {**_model_key(config), "facts": config.facts.path, "probe": probe, **_recipe(config), **seeds}


def control_config(config: RunConfig, out: Path, epochs: int | None = None) -> RunConfig:
    """The training control of a cell's recipe and seed: a copy of its config with `mix.control`
    (HighlyKnown facts in place of Unknown ones), the cell's seeds, no relabelling, no early stopping,
    `epochs` epochs (default the cell's budget), at `OUT/controls/<hash of the recipe, seed and epochs>`."""
    ctl = copy.deepcopy(config)
    ctl.seed = None  # the cell's mix and train seeds, already resolved, stay
    epochs = epochs or config.train.epochs
    ctl.mix = dataclasses.replace(ctl.mix, control=True, idk_share=0.0)
    ctl.train = dataclasses.replace(
        ctl.train, epochs=epochs, target_reliability=None, patience=None, keep_best=False
    )
    ctl.eval = dataclasses.replace(ctl.eval, control=None)
    ctl.out = str(out / "controls" / _hash({**control_key(config), "epochs": epochs}))
    return ctl


def matched_control(cell: Cell) -> RunConfig:
    """The cell's control for as many epochs as its trained weights had (`knowpack.runs.trained_epochs`;
    the budget when the run has no train.json): the same recipe, the same optimizer steps."""
    out = Path(cell.control.out).parent.parent
    return control_config(cell.config, out, trained_epochs(cell.folder))


def _model_key(config: RunConfig) -> dict[str, Any]:
    """The model part of a shared folder's key: its name and, where they can be told, its files (another
    model behind the same name gets another probe)."""
    weights = model_fingerprint(config.model.name)
    return (
        {"model": config.model.name} if weights is None else {"model": config.model.name, "weights": weights}
    )


def _hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------------ running


def cell_status(cell: Cell) -> str:
    """finished | trained (finished, its evaluation still to do) | interrupted | failed | running | todo."""
    status = run_status(cell.folder) or "todo"
    if status == "finished" and cell.evaluate and not (cell.folder / "eval.json").exists():
        return "trained"
    return status


def run_sweep(
    sweep: Sweep,
    *,
    run_cell: Callable[[Cell], None] | None = None,
    on_cell: Callable[[Cell, str], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Run every cell not finished (claiming each), then write `OUT/sweep.json`; returns it.

    `run_cell(cell)` trains one cell (default: `knowpack.train.train(cell.config, force=True)`, then
    `knowpack.evaluate.evaluate_run(cell.folder)` when the sweep evaluates);
    `on_cell(cell, event)` hears "start" / "skip" / "busy" / "done" / "failed"; `on_stage` and
    `progress_bar` go to the default `run_cell`'s training and evaluation (as in `knowpack.train.train`).
    `workers` > 1: that many processes (spawned) run the cells, each claiming cells as one worker does;
    `on_cell` and `run_cell` go to them and must be picklable (module-level functions), `on_stage` and
    `progress_bar` do not (several bars on one terminal garble it).
    """
    if workers < 1:
        raise KnowpackError(f"--workers must be >= 1 (got {workers})")
    if workers > 1:
        return _run_workers(sweep, workers, run_cell, on_cell)
    run_cell = run_cell or functools.partial(_train_cell, on_stage=on_stage, progress_bar=progress_bar)
    note = on_cell or (lambda cell, event: logger.info("%s: %s", cell.name, event))
    (sweep.out / "cells").mkdir(parents=True, exist_ok=True)
    remove_temps(sweep.out, of=["sweep.json"])
    for cell in sweep.cells:
        if cell_status(cell) == "finished":
            note(cell, "skip")
            continue
        claim = claim_cell(cell)
        if claim is None:
            note(cell, "busy")
            continue
        try:
            if cell_status(cell) == "finished":  # finished by another worker since we looked
                note(cell, "skip")
                continue
            note(cell, "start")
            try:
                run_cell(cell)
            except KnowpackError as e:
                logger.error("%s: %s", cell.name, e)
                note(cell, "failed")
                continue
            note(cell, "done")
        finally:
            claim.unlink(missing_ok=True)
    return write_summary(sweep)


def _run_workers(sweep: Sweep, workers: int, run_cell, on_cell) -> dict[str, Any]:
    """`workers` spawned processes, each `run_sweep(sweep)` with one worker; then sweep.json."""
    import multiprocessing
    import pickle

    try:
        pickle.dumps((sweep, run_cell, on_cell))
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        raise KnowpackError(
            f"workers={workers}: run_cell and on_cell go to other processes and must be module-level "
            f"functions ({e})"
        ) from None
    context = multiprocessing.get_context("spawn")  # no forked torch / OpenMP state
    procs = [
        context.Process(target=run_sweep, args=(sweep,), kwargs={"run_cell": run_cell, "on_cell": on_cell})
        for _ in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    failed = [proc.exitcode for proc in procs if proc.exitcode]
    if failed:
        raise KnowpackError(f"{len(failed)} of {workers} sweep workers failed (exit codes {failed})")
    return write_summary(sweep)


def _train_cell(cell: Cell, on_stage=None, progress_bar=None) -> None:
    if run_status(cell.folder) != "finished":
        prepare_shared(cell.config, progress_bar)
        train(cell.config, force=True, on_stage=on_stage, progress_bar=progress_bar)
    control = matched_control(cell) if cell.control is not None else None
    if control is not None:
        prepare_control(control, cell.evaluate, on_stage, progress_bar)
    if cell.evaluate:
        where = None if control is None else control.out
        evaluate_run(cell.folder, control=where, on_stage=on_stage, progress_bar=progress_bar)


def prepare_control(ctl: RunConfig, evaluate: bool, on_stage=None, progress_bar=None) -> None:
    """Make a training control exist, trained and (`evaluate`) evaluated, one process at a time: the first
    cell of a recipe and length does it, the others find it done."""
    folder = Path(ctl.out)
    with _lock(folder):
        if run_status(folder) != "finished":
            prepare_shared(ctl, progress_bar)
            train(ctl, force=True, on_stage=on_stage, progress_bar=progress_bar)
        if evaluate and not (folder / "eval.json").exists():
            evaluate_run(folder, on_stage=on_stage, progress_bar=progress_bar)


def prepare_shared(config: RunConfig, progress_bar: Callable[[str], Any] | None = None) -> None:
    """Make the shared probe / attribution exist (one process at a time), then point the cell at them.
    `progress_bar(label)`: a context manager yielding a `progress(done, total)` callback (the CLI's bar)."""
    if config.probe.run is None and config.probe.out is not None:
        probe = Path(config.probe.out)
        with _lock(probe):
            if not stage_finished(probe):
                with progress_bar("base probe") if progress_bar else nullcontext(None) as progress:
                    run_base_probe(config, progress)
        config.probe.run, config.probe.out = str(probe), None
    options = config.method.options
    work = method_module(config.method.name).shared_work(options)
    folder = options.get(f"{work.name}_out") if work is not None else None
    if folder:
        with _lock(Path(folder)):
            if not stage_finished(folder):
                work.run(config, Path(folder), progress_bar)
        options[work.name] = options.pop(f"{work.name}_out")


def write_summary(sweep: Sweep) -> dict[str, Any]:
    """`OUT/sweep.json`: every cell with its status and, when finished, its train.json headline numbers (and
    eval.json's, when the sweep evaluates)."""
    rows = []
    for cell in sweep.cells:
        status = cell_status(cell)
        row: dict[str, Any] = {
            "cell": cell.name,
            "folder": str(cell.folder),
            "status": status,
            **cell.overrides,
        }
        if status == "running":
            row["worker"] = claim_holder(cell)
        if status == "finished":
            try:
                result = json.loads((cell.folder / "train.json").read_text())
                row.update(reliability=result.get("reliability"), epochs_run=result.get("epochs_run"))
            except (OSError, ValueError):
                pass
            if cell.evaluate:
                row.update(_eval_headline(cell.folder / "eval.json"))
        rows.append(row)
    summary = {
        "config": str(sweep.path),
        "cells": rows,
        "finished": sum(r["status"] == "finished" for r in rows),
        "total": len(rows),
    }
    write_json_atomic(sweep.out / "sweep.json", summary, default=str)
    return summary


_HEADLINE_KEYS = {"reliability": "eval_reliability"}
"""sweep.json's name of a headline metric where it differs from the registry's (train.json's reliability
already has the name)."""


def _eval_headline(path: Path) -> dict[str, Any]:
    """eval.json's headline numbers for sweep.json (`knowpack.evaluate.metrics.headline("sweep")`) and each
    benchmark's change (`<task>_delta`, its `acc`); the report reads the whole file."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    row = {
        _HEADLINE_KEYS.get(name, name): metric_entry(result, name).get("value") for name in headline("sweep")
    }
    for task in dict.fromkeys(task for task, _ in benchmark_values(result)):
        row[f"{task}_delta"] = metric_entry(result, "benchmark", task=task).get("delta")
    return row


# ------------------------------------------------------------------------------------------------ claims


def claim_cell(cell: Cell) -> Path | None:
    """Create `<cell>.claim` exclusively; take over a claim whose process is gone. None: someone has it."""
    path = cell.folder.with_name(cell.folder.name + ".claim")
    # what a worker killed while claiming left; one claiming now retries if its temporary goes (_exclusive)
    remove_temps(path.parent, of=[path.name])
    return _exclusive(path)


def _exclusive(path: Path) -> Path | None:
    """The claim (or lock) file `path`, created whole or not at all: its record is written to a temporary
    file, which is then hard-linked to `path` (exclusive, like O_EXCL), so that no claim is ever seen empty,
    even after a kill."""
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    for _ in range(3):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(record)
            point(f"claim {path.suffix}: written")
            os.link(tmp, path)
        except FileExistsError:
            if not _stale(path):
                return None
            path.unlink(missing_ok=True)
            continue
        except FileNotFoundError:  # another process cleared killed claims' temporaries: try again
            continue
        finally:
            tmp.unlink(missing_ok=True)
        return path
    return None


def _stale(path: Path) -> bool:
    holder = _holder(path)
    return holder is not None and process_gone(holder)


def _holder(path: Path) -> dict[str, Any] | None:
    """The record of the process holding a claim or lock file (None: none, or unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def claim_holder(cell: Cell) -> str | None:
    """`host:pid` of the worker whose claim on `cell` stands (None: unclaimed)."""
    holder = _holder(cell.folder.with_name(cell.folder.name + ".claim"))
    return None if holder is None else f"{holder.get('host')}:{holder.get('pid')}"


class _lock:
    """Hold `<folder>.lock` (waiting for it) while shared work in `folder` is done."""

    def __init__(self, folder: Path | None, poll: float = 1.0):
        self.path = None if folder is None else folder.with_name(folder.name + ".lock")
        self.poll = poll

    def __enter__(self):
        if self.path is None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_temps(self.path.parent, of=[self.path.name])
        while _exclusive(self.path) is None:
            time.sleep(self.poll)
        return self

    def __exit__(self, *exc):
        if self.path is not None:
            self.path.unlink(missing_ok=True)
        return False
