"""Where the work of a sweep, a capacity search, a probe or an attribution runs: `local` (this machine; a
sweep's `--workers N` processes claim cells in OUT) or `ray` (tasks on a Ray cluster, `pip install
'knowpack[ray]'`).

One code path decides the work (`knowpack.experiment.sweep` the cells, `knowpack.experiment.capacity` the
points, `knowpack.probe.run` / `knowpack.methods.loki.attribution` the shards and their merge); this module
only runs each piece as a Ray task and brings its files home:

- a task runs in a fresh scratch folder on its own node (`$KNOWPACK_SCRATCH`, else the node's temp folder),
  with the paths under OUT that it reads or writes moved there, and returns the files it wrote; the driver
  writes them into OUT, a folder at a time (`knowpack.io.atomic_dir`), with OUT's paths in their text. So
  the workers need no shared filesystem, and OUT holds the same files as with the local backend. What the
  task reads from outside OUT (the model, a facts file) must be there on every node: a Hub id, `organism`, or
  a path every node has.
- a task whose worker process or node dies is rerun by Ray (`retries:` in the sweep or capacity config);
  a driver stopped and started again finds the finished cells in OUT and runs only the rest.
- `resources:` in the sweep or capacity config asks each task for `{gpus: 1, cpus: 4}` (any other key is a
  custom Ray resource); without it a task takes one GPU where the cluster has GPUs, else one CPU.

`--address ADDRESS` (default: `RAY_ADDRESS`) joins a running cluster; with neither, a local Ray instance is
started for the command and stopped after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.run import evaluate_run
from knowpack.experiment.capacity.config import point_cell
from knowpack.experiment.capacity.search import _evaluation, _train_and_evaluate, run_capacity
from knowpack.experiment.cluster import ClusterFile, import_ray
from knowpack.experiment.plan.config import FACTS
from knowpack.experiment.plan.search import run_plan, train_and_evaluate
from knowpack.experiment.sweep import (
    _train_cell,
    cell_status,
    matched_control,
    prepare_control,
    prepare_shared,
    write_summary,
)
from knowpack.io import atomic_dir, write_bytes_atomic, write_json_atomic
from knowpack.runs import run_status, stage_finished

logger = logging.getLogger(__name__)

SCRATCH_ENV = "KNOWPACK_SCRATCH"
"""A node's folder for its tasks' scratch run folders (default: the node's temp folder); each task's
folder is removed once its files are returned."""
_RESOURCE_NAMES = {"gpus": "num_gpus", "cpus": "num_cpus", "memory": "memory"}


@contextlib.contextmanager
def connect(address: str | None = None) -> Iterator[Any]:
    """Yield `ray`, connected to `address` (default `RAY_ADDRESS`), or to a local instance started here and
    stopped after. A process already connected (a library user's `ray.init`) keeps its connection."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    _reachable(address)
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KnowpackError(f"cannot join the Ray cluster at {address}: {first}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _reachable(address: str) -> None:
    """A one-line error unless a `HOST:PORT` address answers (Ray itself retries an unreachable one for
    minutes); `local`, `auto` and `ray://` addresses are Ray's to resolve."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise KnowpackError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): start one (ray start --head) or check "
            "--address / RAY_ADDRESS"
        ) from None


def cluster_line(ray: Any) -> str:
    """The cluster's resources in a few words: `2 nodes, 4 CPUs, 1 GPU`."""
    total = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    cpus, gpus = int(total.get("CPU", 0)), int(total.get("GPU", 0))
    return f"{nodes} node{'s' * (nodes != 1)}, {cpus} CPU{'s' * (cpus != 1)}, {gpus} GPU{'s' * (gpus != 1)}"


def task_options(ray: Any, cluster: ClusterFile | None) -> dict[str, Any]:
    """`.options(...)` of a task: the config's resources (default one GPU where the cluster has one, else
    one CPU) and its retries on a dead worker or node (an error the task raises is not retried)."""
    cluster = cluster or ClusterFile()
    if cluster.resources is None:
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        wanted: dict[str, Any] = {"num_gpus": 1, "num_cpus": 0} if has_gpu else {"num_cpus": 1}
    else:
        wanted = {"num_cpus": 0}
        custom = {}
        for key, value in cluster.resources.items():
            if key in _RESOURCE_NAMES:
                wanted[_RESOURCE_NAMES[key]] = value
            else:
                custom[key] = value
        if custom:
            wanted["resources"] = custom
    return {**wanted, "max_retries": cluster.retries, "retry_exceptions": False}


# ------------------------------------------------------------------------------------------------ tasks


class Tasks:
    """Submits jobs as Ray tasks that run in a scratch folder and return their files; writes each returned
    folder into OUT (`write`). `out`: the driver's OUT, whose paths the tasks see moved to their scratch."""

    def __init__(self, ray: Any, out: Path, cluster: ClusterFile | None = None):
        self.ray, self.out = ray, Path(out)
        self.options = task_options(ray, cluster)
        self._remote = ray.remote(_run_in_scratch)
        self._inputs: dict[Path, Any] = {}

    def submit(
        self,
        job: Callable,
        args: tuple,
        *,
        reads: list[Path] = (),
        writes: list[Path],
        name: str = "knowpack",
    ) -> Any:
        """Run `job(*args)` as a task; `reads`: folders under OUT it needs (shipped once each), `writes`:
        folders under OUT it makes (returned). Returns the task's ObjectRef (`collect` reads it)."""
        refs = [self._input(folder) for folder in reads]
        return self._remote.options(name=name, **self.options).remote(
            job, args, str(self.out), [self._rel(f) for f in writes], *refs
        )

    def collect(self, ref: Any, *, by_file: bool = False) -> str | None:
        """Wait for a task, write the folders it made into OUT (each atomically; `by_file`: each file
        atomically, into a folder other tasks write too) and merge what it added to the folders it read
        (`merge`); returns the one-line error of a job that failed (its folders are written too, as a
        failed run is locally)."""
        try:
            written, added, error = self.ray.get(ref)
        except self.ray.exceptions.RayError as e:
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            return f"{type(e).__name__}: {lines[-1] if lines else ''}".strip()
        self.write(written, by_file=by_file)
        self.merge(added)
        return error

    def write(self, files: dict[str, dict[str, bytes]], *, by_file: bool = False) -> None:
        """Write each folder (relative to OUT: its files' bytes by relative path) into OUT atomically, or
        (`by_file`) each file, the summaries last (what says a shard is finished)."""
        for folder, content in files.items():
            self._inputs.pop(self.out / folder, None)
            if by_file:
                for rel in sorted(content, key=lambda rel: Path(rel).name.startswith("summary")):
                    write_bytes_atomic(self.out / folder / rel, content[rel])
                continue
            with atomic_dir(self.out / folder) as tmp:
                for rel, data in content.items():
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(data)

    def merge(self, files: dict[str, dict[str, bytes]]) -> None:
        """Add what a task wrote into a shared folder it read (the evaluation's base measurements in the
        base probe's folder, `knowpack.evaluate.base`): new files as they are, a cache file's entries
        joined with OUT's (`_joined`); any other file OUT has is kept."""
        for folder, content in files.items():
            self._inputs.pop(self.out / folder, None)
            for rel, data in content.items():
                path = self.out / folder / rel
                if not path.exists():
                    write_bytes_atomic(path, data)
                elif (joined := _joined(path.read_bytes(), data)) is not None:
                    write_json_atomic(path, joined)

    def _input(self, folder: Path) -> Any:
        folder = Path(folder)
        if folder not in self._inputs:
            self._inputs[folder] = self.ray.put({self._rel(folder): read_folder(folder)})
        return self._inputs[folder]

    def _rel(self, folder: Path) -> str:
        try:
            return str(Path(folder).relative_to(self.out))
        except ValueError:
            raise KnowpackError(f"{folder} is not under {self.out}: tasks return folders in OUT") from None


def read_folder(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` but lock files (relative path -> bytes); none when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    return {str(p.relative_to(folder)): p.read_bytes() for p in found}


def _joined(old: bytes, new: bytes) -> dict | None:
    """A cache file (`{"entries": {key: entry}}`, `knowpack.evaluate.base`) with the entries, and the facts
    of an entry, of `new` that `old` lacks added; None: keep `old` (not such a file, or nothing new). Both
    sides measured the same base model with the same settings, so an entry both have is the same."""
    import json

    try:
        before, after = json.loads(old), json.loads(new)
        entries, added = before["entries"], after["entries"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(entries, dict) or not isinstance(added, dict):
        return None
    changed = False
    for key, entry in added.items():
        if key not in entries:
            entries[key], changed = entry, True
        elif isinstance(entry, dict) and isinstance(entries[key], dict):
            for item, value in entry.items():
                if item not in entries[key]:
                    entries[key][item], changed = value, True
    return before if changed else None


_TEXT = (".json", ".jsonl", ".yaml", ".yml", ".txt", ".md", ".log", ".csv")


def _moved(files: dict[str, bytes], old: str, new: str) -> dict[str, bytes]:
    """`files` with the folder `old` written as `new` in their text (the paths a run folder records)."""
    before, after = (old.rstrip("/") + "/").encode(), (new.rstrip("/") + "/").encode()
    return {rel: data.replace(before, after) if rel.endswith(_TEXT) else data for rel, data in files.items()}


def _move(value: Any, old: str, new: str) -> Any:
    """`value` (a dataclass, mapping, list, str or path, nested) with paths under `old` moved under `new`."""
    import dataclasses

    if isinstance(value, str):
        return new + value[len(old) :] if value == old or value.startswith(old.rstrip("/") + "/") else value
    if isinstance(value, Path):
        return Path(_move(str(value), old, new))
    if isinstance(value, dict):
        return {k: _move(v, old, new) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_move(v, old, new) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {f.name: _move(getattr(value, f.name), old, new) for f in dataclasses.fields(value)}
        return dataclasses.replace(value, **changes) if _settable(value) else value
    return value


def _settable(value: Any) -> bool:
    import dataclasses

    return all(f.init for f in dataclasses.fields(value))


def _run_in_scratch(
    job: Callable, args: tuple, out: str, writes: list[str], *inputs: dict[str, dict[str, bytes]]
) -> tuple[dict[str, dict[str, bytes]], dict[str, dict[str, bytes]], str | None]:
    """The body of every task (on a worker): a scratch folder stands for OUT; the folders `inputs` carry
    are written there, `job(*args)` runs with OUT's paths moved to it. Returns, with OUT's paths back in
    their text: the folders `writes`, the files new or changed in the other folders it was given, and the
    job's one-line error (None: it succeeded)."""
    root = Path(os.environ.get(SCRATCH_ENV) or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="knowpack-", dir=root)
    try:
        for shipped in inputs:
            for folder, files in shipped.items():
                for rel, data in _moved(files, out, scratch).items():
                    (Path(scratch) / folder / rel).parent.mkdir(parents=True, exist_ok=True)
                    (Path(scratch) / folder / rel).write_bytes(data)
        error = None
        try:
            job(*_move(args, out, scratch))
        except KnowpackError as e:
            error = str(e).replace(scratch.rstrip("/") + "/", out.rstrip("/") + "/")  # OUT's paths
        files = {folder: _moved(read_folder(Path(scratch) / folder), scratch, out) for folder in writes}
        added = {}
        for shipped in inputs:
            for folder, given in shipped.items():
                now = _moved(read_folder(Path(scratch) / folder), scratch, out)
                added[folder] = {rel: data for rel, data in now.items() if given.get(rel) != data}
        written = {folder: content for folder, content in files.items() if content}
        return written, {f: c for f, c in added.items() if c and f not in writes}, error
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def slots(ray: Any, options: dict[str, Any]) -> int:
    """How many tasks with `options` the cluster runs at once (its CPUs, GPUs and custom resources over a
    task's; at least 1)."""
    total = ray.cluster_resources()
    wanted = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0)}
    wanted.update(options.get("resources") or {})
    fits = [int(total.get(name, 0) // need) for name, need in wanted.items() if need]
    return max(1, min(fits)) if fits else 1


# ------------------------------------------------------------------------------------------------ sweeps


def run_sweep_on_ray(
    sweep: Any,
    *,
    address: str | None = None,
    on_cell: Callable[[Any, str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """`knowpack.experiment.sweep.run_sweep` on a Ray cluster: the cells not finished in OUT each a task
    (after the shared probe and attribution, each a task once), training controls a task once per recipe
    and length, then `OUT/sweep.json`; returns it. `on_cell(cell, event)` hears skip / start / done /
    failed; `progress_bar(label)` (a context manager yielding `progress(done, total, **fields)`) shows one
    bar over the cells, the cluster's resources in its label."""
    note = on_cell or (lambda cell, event: logger.info("%s: %s", cell.name, event))
    with connect(address) as ray:
        tasks = Tasks(ray, sweep.out, sweep.cluster)
        todo = []
        for cell in sweep.cells:
            if cell_status(cell) == "finished":
                note(cell, "skip")
            else:
                todo.append(cell)
        prepare_shared_on_ray(tasks, [cell.config for cell in todo])
        label = f"cells on {cluster_line(ray)}"
        with progress_bar(label) if progress_bar else contextlib.nullcontext(None) as progress:
            _CellLoop(tasks, todo, note, progress, len(sweep.cells)).run()
    return write_summary(sweep)


def shared_folders(config: Any) -> list[Path]:
    """The shared folders (`knowpack.experiment.sweep.share_work`) a run config reads: its base probe and
    LoKI attribution in OUT."""
    folders = [Path(config.probe.out)] if config.probe.run is None and config.probe.out else []
    attribution = config.method.options.get("attribution_out") if config.method.name == "loki" else None
    return folders + ([Path(attribution)] if attribution else [])


def prepare_shared_on_ray(tasks: Tasks, configs: list[Any], inputs: list[Path] = ()) -> None:
    """Make every shared probe, then every LoKI attribution, the configs read: each once, as a task, into
    OUT (`knowpack.experiment.sweep.prepare_shared` on a worker). Those finished in OUT are kept. `inputs`:
    other folders under OUT the work reads (a plan's facts)."""
    for which in (0, -1):  # the probes first (an attribution task then finds its probe done)
        jobs: dict[Path, Any] = {}
        for config in configs:
            folders = shared_folders(config)
            if folders and not stage_finished(folders[which]) and folders[which] not in jobs:
                reads = [*inputs, *(f for f in folders if stage_finished(f))]
                writes = [f for f in folders if not stage_finished(f)]
                jobs[folders[which]] = tasks.submit(
                    prepare_shared, (config,), reads=reads, writes=writes, name="knowpack shared"
                )
        for folder, ref in jobs.items():
            error = tasks.collect(ref)
            if error is not None:
                raise KnowpackError(f"shared work {folder}: {error}")


def _evaluate_against(run: Path, control: Path) -> None:
    """`knowpack eval RUN --control CONTROL` (a task's job)."""
    evaluate_run(run, control=control)


class _CellLoop:
    """Submits the cells, and a cell with a training control in three steps (train; the control, once per
    folder; evaluate against it), writing each result into OUT as it comes."""

    def __init__(self, tasks: Tasks, cells: list[Any], note, progress, total: int):
        self.tasks, self.cells, self.note, self.progress = tasks, cells, note, progress
        self.total, self.done, self.failed = total, total - len(cells), 0
        self.pending: dict[Any, tuple[str, Any]] = {}  # ref -> (step, cell or control folder)
        self.controls: dict[Path, list[Any]] = {}  # control folder in the making -> cells waiting on it
        self.slots = slots(tasks.ray, tasks.options)

    def run(self) -> None:
        # An evaluating cell first goes alone: it measures the base model once (`knowpack.evaluate.base`,
        # merged into the shared probe's folder) and the others, given that folder, reuse it.
        evaluates = any(cell.evaluate for cell in self.cells)
        later = self.cells[1:] if evaluates else []
        for cell in self.cells[: 1 if evaluates else None]:
            self.note(cell, "start")
            self._first(cell)
        self._show()
        while self.pending or later:
            if not self.pending:
                for cell in later:
                    self.note(cell, "start")
                    self._first(cell)
                later = []
            ready, _ = self.tasks.ray.wait(list(self.pending), num_returns=1)
            step, item = self.pending.pop(ready[0])
            error = self.tasks.collect(ready[0])
            if step == "control":
                for cell in self.controls.pop(item):
                    self._failed(cell, f"its training control {item}: {error}") if error else self._last(cell)
            elif error is not None:
                self._failed(item, error)
            elif step == "train":
                self._control(item)
            else:
                self.done += 1
                self.note(item, "done")
            self._show()

    def _submit(self, step: str, item: Any, job: Callable, args: tuple, reads: list, writes: list) -> None:
        ref = self.tasks.submit(job, args, reads=reads, writes=writes, name=f"knowpack {step}")
        self.pending[ref] = (step, item)

    def _first(self, cell: Any) -> None:
        """Train (and, without a control, evaluate) the cell; a trained cell with a control goes on to it."""
        import dataclasses

        finished = run_status(cell.folder) == "finished"
        shared = shared_folders(cell.config)
        if cell.control is None:
            reads = shared + ([cell.folder] if finished else [])
            self._submit("cell", cell, _train_cell, (cell,), reads, [cell.folder])
        elif finished:
            self._control(cell)
        else:
            train_only = dataclasses.replace(cell, control=None, evaluate=False)
            self._submit("train", cell, _train_cell, (train_only,), shared, [cell.folder])

    def _control(self, cell: Any) -> None:
        """The cell is trained: its control (matched to its epochs) is made once, then it is evaluated."""
        ctl = matched_control(cell)
        folder = Path(ctl.out)
        made = run_status(folder) == "finished" and (not cell.evaluate or (folder / "eval.json").exists())
        if made:
            return self._last(cell)
        if folder in self.controls:
            self.controls[folder].append(cell)
            return
        self.controls[folder] = [cell]
        self._submit("control", folder, prepare_control, (ctl, cell.evaluate), shared_folders(ctl), [folder])

    def _last(self, cell: Any) -> None:
        """The cell's evaluation against its control (the folder the driver named: a control's name hashes
        its base probe's path, which a worker sees moved); without evaluation the cell is done."""
        if not cell.evaluate:
            self.done += 1
            return self.note(cell, "done")
        control = Path(matched_control(cell).out)
        reads = [*shared_folders(cell.config), cell.folder, control]
        self._submit("evaluate", cell, _evaluate_against, (cell.folder, control), reads, [cell.folder])

    def _failed(self, cell: Any, error: str) -> None:
        self.failed += 1
        logger.error("%s: %s", cell.name, error)
        self.note(cell, "failed")

    def _show(self) -> None:
        if self.progress is None:
            return
        running = min(len(self.pending), self.slots)
        queued = self.total - self.done - self.failed - running
        self.progress(self.done, self.total, running=running, failed=self.failed, queued=max(queued, 0))


# ------------------------------------------------------------------------------------------------ capacity


def run_capacity_on_ray(
    capacity: Any, *, address: str | None = None, on_event: Callable[[str, str], None] | None = None
) -> dict[str, Any]:
    """`knowpack.experiment.capacity.run_capacity` with every run of a point a Ray task: the shared probe
    (and attribution) first, then each point's seeds at once, each trained and evaluated on a worker."""
    with connect(address) as ray:
        tasks = Tasks(ray, capacity.out, capacity.cluster)
        prepare_shared_on_ray(tasks, [point_cell(capacity, capacity.start, capacity.seeds[0]).config])
        runner = _PointRunner(tasks, capacity)
        try:
            return run_capacity(capacity, run_point=runner, on_event=on_event)
        finally:
            for ref in runner.refs.values():  # seeds a rule `all` failure made moot
                ray.cancel(ref, force=True)


class _PointRunner:
    """`run_point` of the capacity search on Ray: asked for one seed of a point, it submits every seed of
    that point not yet evaluated (the search asks for them next), then waits for the one asked."""

    def __init__(self, tasks: Tasks, capacity: Any):
        self.tasks, self.capacity, self.refs, self.started = tasks, capacity, {}, False

    def __call__(self, cell: Any) -> None:
        s = self.capacity
        if cell.name not in self.refs:
            job = _train_and_evaluate(s, None, None)
            # the first run goes alone: it measures the base model once, for the others to reuse
            for seed in s.seeds if self.started else [cell.overrides["mix.seed"]]:
                other = point_cell(s, cell.overrides["mix.n_unknown"], seed)
                if other.name in self.refs or (other.name != cell.name and _evaluation(s, other)):
                    continue
                trained = [other.folder] if run_status(other.folder) == "finished" else []
                self.refs[other.name] = self.tasks.submit(
                    job, (other,), reads=shared_folders(other.config) + trained, writes=[other.folder],
                    name="knowpack point",
                )  # fmt: skip
        self.started = True
        error = self.tasks.collect(self.refs.pop(cell.name))
        if error is not None:
            raise KnowpackError(f"{cell.name}: {error}")


# ------------------------------------------------------------------------------------------------ shards


def run_shards_on_ray(
    job: Callable[..., Any],
    out: Path,
    kwargs: dict[str, Any],
    *,
    shards: int | None = None,
    address: str | None = None,
    progress_bar: Callable[[str], Any] | None = None,
) -> int:
    """`job(out=OUT, shard="i/n", **kwargs)` for every shard i of n not finished in OUT (its
    `summary.i-of-n.json` says so), each a Ray task; their files written into OUT as they come. `shards`:
    n (default: the shard count OUT was started with, else the cluster's GPUs, else its CPUs). Returns n;
    the caller merges (`merge_shards`)."""
    counts = {p.name.split("-of-")[1].split(".")[0] for p in Path(out).glob("summary.*-of-*.json")}
    with connect(address) as ray:
        total = ray.cluster_resources()
        n = shards or (int(counts.pop()) if len(counts) == 1 else None)  # a started probe: its shards
        n = n or int(total.get("GPU", 0)) or max(1, int(total.get("CPU", 1)))
        tasks = Tasks(ray, out)
        refs = {}
        for i in range(n):
            if not _shard_finished(out, i, n):
                args = (job, {**kwargs, "out": out, "shard": f"{i}/{n}"})
                refs[tasks.submit(_call, args, writes=[out], name="knowpack shard")] = i
        label = f"{len(refs)} of {n} shards on {cluster_line(ray)}"
        with progress_bar(label) if progress_bar else contextlib.nullcontext(None) as progress:
            done = n - len(refs)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                i = refs.pop(ready[0])
                error = tasks.collect(ready[0], by_file=True)
                if error is not None:
                    raise KnowpackError(f"shard {i}/{n}: {error}")
                done += 1
                if progress is not None:
                    progress(done, n)
    return n


def _call(job: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    return job(**kwargs)


def _shard_finished(out: Path, i: int, n: int) -> bool:
    import json

    try:
        return json.loads((Path(out) / f"summary.{i}-of-{n}.json").read_text()).get("status") == "finished"
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ plan


def run_plan_on_ray(
    plan: Any, *, address: str | None = None, on_event: Callable[[str, str], None] | None = None
) -> dict[str, Any]:
    """`knowpack.experiment.plan.run_plan` with every seed of a trial a Ray task (`PlanOnRay`); the search
    itself (the Optuna study, plan.json) stays on the driver."""
    with connect(address) as ray:
        return run_plan(plan, on_event=on_event, runner=PlanOnRay(Tasks(ray, plan.out), plan))


class PlanOnRay:
    """A plan's runner on Ray: the shared probe and attribution as tasks (`prepare_shared_on_ray`), a trial's
    seeds at once, each trained and evaluated on a worker; the plan's very first run goes alone, so that the
    base model is measured once (its measurements come back into the shared probe folder)."""

    def __init__(self, tasks: Tasks, plan: Any):
        self.tasks, self.started, self.facts = tasks, False, plan.out / FACTS.parent

    def shared(self, configs: list[Any]) -> None:
        prepare_shared_on_ray(self.tasks, configs, [self.facts])

    def run(self, plan: Any, cells: list[Any]) -> None:
        batches = [cells] if self.started else [cells[:1], cells[1:]]
        self.started = True
        for batch in batches:
            refs = {}
            for cell in batch:
                trained = [cell.folder] if run_status(cell.folder) == "finished" else []
                reads = [self.facts, *shared_folders(cell.config), *trained]
                refs[cell.folder] = self.tasks.submit(
                    train_and_evaluate, (plan, cell), reads=reads, writes=[cell.folder], name="knowpack trial"
                )
            errors = [f"{folder}: {e}" for folder, ref in refs.items() if (e := self.tasks.collect(ref))]
            if errors:
                raise KnowpackError(errors[0])
