"""What `evaluate_run` reads from a run folder, checked before any model is loaded.

A run is compared with its base probe: the probe its mix was drawn from (`mix.json["probe"]`), which must be
finished, made with the run's probe settings and seed, over facts of the run's facts file, with exemplars
the run's facts file gives back exactly (`knowpack.probe.pool`: recorded by their ids and a hash, never
re-derived), so that before and after differ only in the weights. Each failure is a
one-line error naming what does not match.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.evaluate.config import EvalConfig
from knowpack.facts import load_facts
from knowpack.facts.schema import Fact
from knowpack.methods import method_module
from knowpack.probe.config import check_probe_settings
from knowpack.probe.pool import read_pool
from knowpack.probe.run import read_records
from knowpack.train.config import RunConfig
from knowpack.train.export import run_config

logger = logging.getLogger(__name__)


@dataclass
class RunInputs:
    """A finished run and its base probe, ready to evaluate."""

    run: Path
    config: RunConfig
    eval: EvalConfig
    """The run's `eval` section with the caller's overrides."""
    mix: dict[str, Any]
    """mix.json: `implanted`, `relabelled`, `add`, ..."""
    trained: set[str]
    """Ids of every fact the mix trained on (any role)."""
    probe_dir: Path
    base_records: list[dict]
    probe_settings: dict[str, Any] | None
    """The base probe's recorded settings (summary.json; None for a hand-made probe)."""
    probe_kwargs: dict[str, Any]
    """`knowpack.probe` keyword arguments: the run's probe section, its correctness mode."""
    probed: list[Fact]
    """The facts of the base probe, in its order."""
    exemplars: list[Fact]
    """The facts the base probe drew its exemplars from, exactly (every re-probe of the run takes them)."""
    implanted: list[Fact]
    weights: Path


def read_run(run: str | Path, overrides: dict[str, Any], batch_size: int | None = None) -> RunInputs:
    """Read and check a run folder (see the module docstring); `overrides` are EvalConfig fields (None: the
    run's own), `batch_size` the probe's."""
    run = Path(run)
    config = run_config(run)  # not a run, or not finished: one-line errors
    ev = eval_settings(config.eval, overrides)
    mix = _read_json(run / "mix.json")
    trained = {e["fact_id"] for e in _read_jsonl(run / "mix.jsonl")}
    probe_dir = base_probe_dir(run, mix)
    base_records, summary = read_probe(probe_dir)
    kwargs = {**config.probe.kwargs(), "mode": config.facts.mode}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    check_probe_settings(summary.get("settings"), kwargs, probe_dir)
    facts = load_facts(config.facts.path)
    probed = _facts_of(base_records, facts, probe_dir)
    by_id = {f.id: f for f in probed}
    weights = run / method_module(config.method.name).WEIGHTS
    if not weights.is_dir():
        raise KnowpackError(f"{run}: no trained weights ({weights} is missing)")
    return RunInputs(
        run=run,
        config=config,
        eval=ev,
        mix=mix,
        trained=trained,
        probe_dir=probe_dir,
        base_records=base_records,
        probe_settings=summary.get("settings"),
        probe_kwargs=kwargs,
        probed=probed,
        exemplars=read_pool(probe_dir, facts, summary.get("settings") or {}),
        implanted=[by_id[i] for i in mix.get("implanted", []) if i in by_id],
        weights=weights,
    )


def eval_settings(config: EvalConfig, overrides: dict[str, Any]) -> EvalConfig:
    """`config` with the fields of `overrides` that are not None; a value out of its range (EvalConfig's
    fields) is a one-line error."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def base_probe_dir(run: Path, mix: dict) -> Path:
    """The base probe the run's mix was drawn from (`mix.json["probe"]`; a relative path was relative to
    where `knowpack train` ran, so the run's own `probe/` is the fallback)."""
    named = mix.get("probe")
    for path in ([Path(named)] if named else []) + [run / "probe"]:
        if (path / "records.jsonl").is_file():
            return path
    raise KnowpackError(f"{run}: the base probe {named or run / 'probe'} (mix.json) has no records.jsonl")


def read_probe(folder: Path) -> tuple[list[dict], dict]:
    """(records, summary) of a finished probe folder."""
    records = read_records(folder / "records.jsonl")
    if not records:
        raise KnowpackError(f"no probe records in {folder}")
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("status") not in (None, "finished"):
        raise KnowpackError(f"the probe in {folder} is not finished (status {summary.get('status')})")
    return records, summary


def _facts_of(records: list[dict], facts: list[Fact], folder: Path) -> list[Fact]:
    by_id = {f.id: f for f in facts}
    missing = [r["id"] for r in records if r["id"] not in by_id]
    if missing:
        raise KnowpackError(
            f"the base probe in {folder} has {len(missing)} facts not in the run's facts file, "
            f"e.g. {missing[0]!r}"
        )
    return [by_id[r["id"]] for r in records]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError:
        raise KnowpackError(f"{path.parent}: no {path.name}") from None
    except ValueError:
        raise KnowpackError(f"{path} is not valid JSON") from None


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        raise KnowpackError(f"{path.parent}: no {path.name}") from None
    except ValueError:
        raise KnowpackError(f"{path} is not valid JSON lines") from None


CONTROL_FREE = (
    "seed",
    "epochs",  # a control trains as many epochs as its run kept (the sweep matches them; eval.json says)
    "target_reliability",
    "patience",
    "keep_best",
    "track_uptake",
    "device",
    "threads",
    "save_checkpoints",
    "save_total_limit",
    "keep_checkpoints",
    "report_to",
)
"""Train settings a training control may differ in from its run (none of them changes what is trained)."""


def check_control(inp: RunInputs, control: RunInputs) -> dict[str, Any]:
    """A training control must be a control mix (`mix.control: true`) of the same recipe (method and its
    settings, train settings but the seed and stopping, n, additions, replay) drawn from the same base probe
    as the run; one-line errors name what differs. Returns the recipe they share."""
    where = f"the training control {control.run}"
    if not control.mix.get("control"):
        raise KnowpackError(f"{where} is not a control run (its mix.control is not true)")
    if control.probe_dir.resolve() != inp.probe_dir.resolve():
        raise KnowpackError(
            f"{where} drew from the base probe {control.probe_dir}, not the run's {inp.probe_dir}"
        )
    if control.config.eval.control:
        raise KnowpackError(f"{where} has a control of its own (eval.control); a control is read alone")
    mine, theirs = _recipe(inp.config), _recipe(control.config)
    diff = [f"{k} {theirs.get(k)!r} vs {v!r}" for k, v in mine.items() if theirs.get(k) != v]
    if diff:
        raise KnowpackError(f"{where} has another recipe than the run ({', '.join(diff)})")
    return mine


def _recipe(config: RunConfig) -> dict[str, Any]:
    """What a control must share with its run, flattened to `section.key`."""
    train = {f"train.{k}": v for k, v in asdict(config.train).items() if k not in CONTROL_FREE}
    mix = asdict(config.mix)
    return {
        "method": config.method.name,
        **{f"method.{k}": v for k, v in sorted(config.method.options.items())},
        **train,
        **{f"mix.{k}": mix[k] for k in ("n_unknown", "add", "k", "replay")},
    }
