"""`train()`: mix + implant, one run folder per run (what `knowpack train CONFIG` does).

    from knowpack.train import load_config, train
    run = train(load_config("configs/organism/lora.yaml", ["mix.n_unknown=50", "out=runs/lora50"]))

The run folder (docs/design.md §3.5):
    config.yaml        the resolved config (every default filled in)
    mix.jsonl          the training examples; mix.json their provenance (which facts, which seed, counts)
    adapter/ | loki/ | model/    the trained weights (PEFT adapter; LoKI rows; a full checkpoint)
    train.json         per epoch: loss, reliability, HighlyKnown share, seconds; why training stopped
    run.json           provenance and status (knowpack.runs): running -> finished | interrupted | failed
    probe/             the probe this run drew its mix from, when it ran one (probe.run not given)
    checkpoints/       while training: the last epoch's checkpoint (Trainer format, plus uptake.json: the
                       uptake history and early-stopping state), removed when the run finishes

Everything that can be checked without a model is checked first (config, the model folder's files, facts
file, probe run and its settings, whether the probe has enough facts for the mix), so bad input fails in a
second with one line and leaves no run folder. Files are written
atomically; the weights go to a temporary folder renamed into place at the end. A run stopped by Ctrl-C or
SIGTERM is marked `interrupted`; one killed outright is reported interrupted by `knowpack.runs.run_status`.

Resuming: a rerun of an interrupted or failed run whose folder holds a complete checkpoint, with the same
config, continues from that checkpoint (weights, optimizer, scheduler, RNG, data order, the uptake history
and the early-stopping state), and ends where an uninterrupted run would have (tests/test_resume.py).
`resume=True` (`knowpack train --resume`) insists on it, `resume=False` starts over.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from knowpack import models
from knowpack.devices import barrier, broadcast, is_main_process, start_processes, world_size
from knowpack.errors import KnowpackError
from knowpack.facts import load_facts
from knowpack.faults import point
from knowpack.io import (
    honour_umask,
    is_temp,
    remove_temps,
    remove_tree,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)
from knowpack.methods import method_config, method_module
from knowpack.models import check_model
from knowpack.probe.config import check_probe_settings
from knowpack.probe.pool import pool_identity, read_pool, sample_facts
from knowpack.probe.run import probe, read_records
from knowpack.runs import RUN_FILE, end_run, run_status, start_run
from knowpack.train.config import RunConfig, load_config
from knowpack.train.data import Collator, encode_examples
from knowpack.train.mix import add_replay, build_mix, check_mix, check_replay, load_replay

logger = logging.getLogger(__name__)

_KEEP_ON_RESTART = ("probe",)  # a rerun keeps the probe it drew from (resumable, settings-checked)
CHECKPOINTS = "checkpoints"
UPTAKE_STATE = "uptake.json"  # in each checkpoint, written after the Trainer's files: marks it complete
_RESUME_MAY_CHANGE = {  # settings that do not change what is trained
    ("train", "threads"),
    ("model", "device"),
    ("train", "report_to"),
    ("train", "keep_checkpoints"),
}


def train(
    config: RunConfig,
    *,
    force: bool = False,
    resume: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
    progress_bar: Callable[[str], Any] | None = None,
) -> Path:
    """Run `config` into its `out` folder; returns the folder. See the module docstring.

    A folder that holds a finished run is refused unless `force`. An interrupted or failed one is resumed
    from its last checkpoint when it has one and the config is the same (`resume=None`), or redone;
    `resume=True` makes a missing checkpoint or a changed config an error, `resume=False` always redoes it.
    Under a launcher with several processes (`accelerate launch`, `torchrun`) every process trains its share
    of each batch on its own device, and only the main process probes, measures uptake (broadcast, so that
    all stop at the same epoch) and writes the run folder.
    `on_epoch(entry)` sees each epoch's train.json entry, `on_stage(name)` each stage as it starts;
    `progress_bar(label)` is a context manager yielding a `progress(done, total, **fields)` callback: the
    probe's and LoKI's attribution's bars count prompts, training's counts optimizer steps with fields
    `epoch`, `loss` and `reliability` (the last epoch's). Nothing is printed: the Trainer's own log lines
    go to this module's logger (INFO) and its tqdm bar is off.
    """
    stage = on_stage or (lambda name: logger.info("%s", name))
    start_processes(config.model.device)
    main = is_main_process()  # one process owns the run folder: checks, clears, marks and writes it
    out = _check_out(config, force) if main else Path(config.out or "")
    checkpoint = _resume_point(config, out, resume) if main else None
    if main:
        remove_temps(out)  # what a killed write left (the run is not running: _check_out)
    checkpoint = broadcast(None if checkpoint is None else str(checkpoint))
    check_model(config.model.name)
    facts = load_facts(config.facts.path)
    replay = load_replay(config.mix.replay.path) if config.mix.replay else None
    records, exemplars = _probe_run(config, facts) if config.probe.run else (None, None)
    if records is not None:
        check_mix(config.mix, records, where=f"probe run {config.probe.run}")
    if replay is not None:
        check_replay(config.mix, replay)
    options = method_config(config.method.name, config.method.options)
    record = None
    if main:
        # marked running before anything is removed: a kill while clearing leaves an interrupted run
        extra = {"resumed_from": checkpoint} if checkpoint else {}
        record = start_run(out, "train", method=config.method.name, **extra)
        if checkpoint is None:
            _clear(out)
        write_text_atomic(out / "config.yaml", _yaml(config.to_dict()))
        point("train: started")
    barrier()
    try:
        with _sigterm_as_interrupt(), _threads(config.train.threads):
            result = _train(
                config,
                options,
                facts,
                records,
                exemplars,
                replay,
                out,
                checkpoint,
                stage,
                on_epoch,
                progress_bar,
            )
    except KeyboardInterrupt:
        if main:
            end_run(out, record, "interrupted")
        raise
    except BaseException as e:
        if main:
            end_run(out, record, "failed", error=f"{type(e).__name__}: {str(e).strip()[:500]}")
        raise
    if main:
        _remove_checkpoints(config, out)
        end_run(out, record, "finished", **result)
    barrier()
    return out


def _train(
    config: RunConfig,
    options: Any,
    facts,
    records,
    exemplars,
    replay,
    out: Path,
    checkpoint: str | None,
    stage,
    on_epoch,
    bar,
) -> dict[str, Any]:
    """Load, probe (unless `probe.run` gave the records), mix, prepare the method, fit with the uptake
    callback, keep the best epoch (`keep_best`), save: the body of `train`, in every process."""
    from transformers import set_seed

    stage(f"loading {config.model.name}")
    model, tokenizer = models.load_model(
        config.model.name,
        dtype=config.model.dtype,
        device=config.model.device,
        trust_remote_code=config.model.trust_remote_code,
    )
    main = is_main_process()
    if records is None:
        records, exemplars = _probe_in_run(config, model, tokenizer, facts, out, stage, bar)
    mix = _mix(config, facts, records, exemplars, replay, out, main)
    fmt = config.train.format or config.probe.format
    rows = encode_examples(mix.examples, tokenizer, fmt=fmt, loss_on=config.train.loss_on)
    method = method_module(config.method.name)
    context = {"tokenizer": tokenizer, "run_dir": out, "config": config, "facts": facts, "progress_bar": bar}
    set_seed(config.train.seed)
    stage(f"preparing {config.method.name}")
    model = method.prepare(model, options, context)
    point("train: prepared")
    if config.train.gradient_checkpointing and hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need an input grad
    uptake = _uptake(config, tokenizer, mix, exemplars, on_epoch)
    if checkpoint is not None:
        uptake.restore(Path(checkpoint) / UPTAKE_STATE)
        stage(f"resuming from {Path(checkpoint).name} (epoch {len(uptake.history)})")
    before = _trainable(model)
    stage(f"training ({len(rows)} examples, up to {config.train.epochs} epochs)")
    runtime, loss = _fit(config, model, tokenizer, rows, uptake, context, out, checkpoint, bar)
    point("train: fitted")
    if uptake.restore_best(model):
        stage(f"keeping epoch {uptake.best_epoch}'s weights (the best reliability)")
    model.eval()

    barrier()  # every process is done with the Trainer's folder before it goes
    last = _kept_epoch(uptake)
    if not main:
        return {"reliability": last.get("reliability"), "epochs_run": len(uptake.history)}
    stage("saving")
    _save(method, model, out, options, context, config)
    summary = _summary(config, model, rows, mix, before, uptake, last, checkpoint, runtime, loss)
    write_json_atomic(out / "train.json", summary)
    return {"reliability": summary["reliability"], "epochs_run": summary["epochs_run"]}


def _summary(config, model, rows, mix, before, uptake, last, checkpoint, runtime, loss) -> dict[str, Any]:
    """train.json: the mix's size, the per-epoch history, why it stopped and whose weights were kept."""
    return {
        "method": config.method.name,
        "examples": len(rows),
        "implanted": len(mix.implanted),
        "trainable_parameters": before,
        "epochs": uptake.history,
        "epochs_run": len(uptake.history),
        "stopped": uptake.stopped or "epochs",
        "kept_epoch": last.get("epoch"),  # whose weights were saved: the last, or with keep_best the best
        "reliability": last.get("reliability"),
        "highly_known": last.get("highly_known"),
        "train_loss": loss,
        "train_seconds": round(runtime, 3),
        "resumed_from": checkpoint and Path(checkpoint).name,
        "device": str(next(model.parameters()).device),
        "processes": world_size(),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }


def _probe_in_run(config: RunConfig, model, tokenizer, facts, out: Path, stage, bar) -> tuple[list, list]:
    """(records, exemplars) of the base probe made inside the run (`<out>/probe` or `probe.out`): the
    main process probes, the others read its records."""

    stage("probing (what does the model know?)")
    if is_main_process():
        with bar("probe") if bar else nullcontext(None) as progress:
            records = _run_probe(config, model, tokenizer, facts, out, progress)
    barrier()
    if not is_main_process():  # the main process has probed: read its records
        records = read_records(Path(config.probe.out or out / "probe") / "records.jsonl")
    check_mix(config.mix, records, where=f"the probe in {config.probe.out or out / 'probe'}")
    return records, read_pool(config.probe.out or out / "probe", facts)


def _mix(config: RunConfig, facts, records, exemplars, replay, out: Path, main: bool) -> Any:
    """The training mix (`build_mix`, replay added), its provenance naming the probe and its exemplars;
    written to mix.jsonl / mix.json by the main process."""

    mix = build_mix(facts, records, config.mix)
    if replay is not None:
        add_replay(mix, replay, config.mix)
    mix.provenance["probe"] = str(config.probe.run or config.probe.out or out / "probe")
    mix.provenance["exemplar_pool"] = pool_identity(exemplars)
    if main:
        write_jsonl_atomic(out / "mix.jsonl", mix.examples)
        write_json_atomic(out / "mix.json", mix.provenance)
    return mix


def _uptake(config: RunConfig, tokenizer, mix, exemplars, on_epoch) -> Any:
    """The callback measuring reliability on the implanted facts after every epoch (the probe's prompts),
    with the run's stopping rule."""
    from knowpack.train.uptake import UptakeCallback, measure_reliability  # torch: keeps knowpack.train light

    def measure(m: Any) -> dict[str, Any]:
        return measure_reliability(
            m, tokenizer, mix.implanted, exemplars=exemplars, probe=config.probe, mode=config.facts.mode
        )

    return UptakeCallback(
        measure if config.train.track_uptake and mix.implanted else None,
        target=config.train.target_reliability,
        patience=config.train.patience,
        on_epoch=on_epoch,
        keep_best=config.train.keep_best,
    )


def _fit(config, model, tokenizer, rows, uptake, context, out, checkpoint, bar) -> tuple[float, float | None]:
    """Train with the Trainer (from `checkpoint` when resuming): (seconds, mean loss over every step)."""
    from transformers import PrinterCallback

    from knowpack.train.callbacks import LogCallback, ProgressCallback, Trainer  # torch: keeps train light

    trainer = Trainer(
        model=model,
        args=_arguments(config, out),
        train_dataset=_Rows(rows),
        data_collator=Collator(tokenizer.pad_token_id),
        callbacks=[uptake, LogCallback(), *context.get("callbacks", [])],  # a method's own (AdaLoRA's)
        uptake=uptake,
    )
    trainer.remove_callback(PrinterCallback)  # it print()s every log dict; LogCallback logs them
    if checkpoint is not None and uptake.stopped:  # it had stopped (target, patience) before the kill
        trainer._load_from_checkpoint(checkpoint)  # the weights it stopped with; nothing left to train
        return 0.0, _mean_loss(uptake.history)
    with bar("training") if bar else nullcontext(None) as progress:
        if progress is not None:
            trainer.add_callback(ProgressCallback(progress, uptake))
        output = trainer.train(resume_from_checkpoint=checkpoint)
    # resumed, the Trainer's mean loss covers the steps since the checkpoint only: weigh the epochs
    loss = _mean_loss(uptake.history) if checkpoint else output.training_loss
    return output.metrics.get("train_runtime", 0.0), loss


def _save(method: Any, model: Any, out: Path, options: Any, context: dict, config: RunConfig) -> None:
    """The trained weights into `<out>/<method.WEIGHTS>` (atomically: a temporary folder renamed, its files
    given the umask's modes)."""
    weights = out / method.WEIGHTS
    tmp = out / f".{method.WEIGHTS}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    method.save(model, tmp, options, context)
    honour_umask(tmp)
    point("save: weights written")
    remove_tree(weights)
    tmp.rename(weights)


def _remove_checkpoints(config: RunConfig, out: Path) -> None:
    """The checkpoints gone once train.json is written (unless kept): each folder renamed away first, so a
    kill midway leaves no half-removed checkpoint (`remove_tree`; the next run clears the rest)."""
    if not config.train.keep_checkpoints:
        remove_tree(out / CHECKPOINTS)
    remove_tree(out / "initial_adapter")


def _arguments(config: RunConfig, out: Path) -> Any:
    from transformers import TrainingArguments

    t = config.train
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns).
    fields = TrainingArguments.__dataclass_fields__
    checkpointing = (
        "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"
    )
    return TrainingArguments(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,
        logging_strategy="epoch",
        save_strategy="epoch" if t.save_checkpoints else "no",
        save_total_limit=t.save_total_limit,
        eval_strategy="no",
        report_to=t.report_to,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=config.model.device == "cpu",
        disable_tqdm=True,  # the caller's progress_bar shows the steps; the library prints nothing
        **{checkpointing: t.gradient_checkpointing},
        **t.trainer_args,
    )


def _kept_epoch(uptake: Any) -> dict[str, Any]:
    """The history entry of the epoch whose weights the run ends with: the best with keep_best, else the
    last ({} without history)."""
    if uptake.best_epoch is not None:
        return next(e for e in uptake.history if e["epoch"] == uptake.best_epoch)
    return uptake.history[-1] if uptake.history else {}


def _mean_loss(history: list[dict[str, Any]]) -> float | None:
    """The mean loss over every step, from the epochs' mean losses (each weighed by its steps)."""
    total, steps, last = 0.0, 0, 0
    for entry in history:
        if entry.get("loss") is None:
            return None
        total += entry["loss"] * (entry["step"] - last)
        steps += entry["step"] - last
        last = entry["step"]
    return total / steps if steps else None


class _Rows:
    """A list as a map-style dataset (the Trainer wants __len__ / __getitem__)."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def _check_out(config: RunConfig, force: bool) -> Path:
    if not config.out:
        raise KnowpackError("no run folder: set out=DIR (on the command line or in the config)")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise KnowpackError(f"out {out} exists and is not a folder")
    status = run_status(out)
    if status == "finished" and not force:
        raise KnowpackError(f"{out} holds a finished run; use another out= or --force to redo it")
    if status == "running":
        raise KnowpackError(f"{out} holds a run that is still running (pid in {out / 'run.json'})")
    ours = (
        [p for p in out.iterdir() if p.name not in _KEEP_ON_RESTART and not is_temp(p.name)]
        if out.exists()
        else []
    )
    if status is None and ours:  # a kill's temporaries do not make a folder someone else's
        raise KnowpackError(f"out {out} is a non-empty folder that is not a knowpack run; use another out=")
    return out


def _resume_point(config: RunConfig, out: Path, resume: bool | None) -> Path | None:
    """The checkpoint an interrupted or failed run in `out` continues from, or None to start over."""
    status = run_status(out)
    if resume is False or status not in ("interrupted", "failed"):
        if resume and status is None:
            raise KnowpackError(f"--resume: {out} holds no run to resume")
        return None
    checkpoint = last_checkpoint(out)
    changed = _changed_settings(config, out)
    if checkpoint is None or changed:
        why = f"{out} has no complete checkpoint" if checkpoint is None else f"{changed} changed since"
        if resume:
            raise KnowpackError(f"--resume: cannot resume the run in {out}: {why}")
        # a changed config is worth a warning; a run that died before its first epoch ended is not
        (logger.warning if changed else logger.info)("starting the run in %s over: %s", out, why)
        return None
    return checkpoint


def last_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint in `out/checkpoints`: the uptake state was written into it last, and
    every file it lists is there with its size."""
    folders = [p for p in (out / CHECKPOINTS).glob("checkpoint-*") if _complete(p)]
    return max(folders, key=lambda p: int(p.name.removeprefix("checkpoint-")), default=None)


def _complete(folder: Path) -> bool:
    if not folder.name.removeprefix("checkpoint-").isdigit():
        return False
    try:
        files = json.loads((folder / UPTAKE_STATE).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError):
        return False
    if files is None:  # written before the list was kept: its removal may have been cut short
        return False
    for name, size in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _changed_settings(config: RunConfig, out: Path) -> str | None:
    """The first setting (section.key) in which `config` differs from the run's saved one, or None."""
    try:
        saved = load_config(out / "config.yaml").to_dict()
    except KnowpackError:
        return "config.yaml"
    now = config.to_dict()
    for section in sorted(set(saved) | set(now)):
        a, b = saved.get(section), now.get(section)
        if not (isinstance(a, dict) and isinstance(b, dict)):
            if a != b:
                return section
            continue
        for key in sorted(set(a) | set(b)):
            if (section, key) not in _RESUME_MAY_CHANGE and a.get(key) != b.get(key):
                return f"{section}.{key}"
    return None


def _clear(out: Path) -> None:
    """Empty a folder for a (re)run, keeping its probe and run.json (already marked running)."""
    out.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if path.name in (*_KEEP_ON_RESTART, RUN_FILE):
            continue
        remove_tree(path) if path.is_dir() else path.unlink()


def _probe_run(config: RunConfig, facts: list) -> tuple[list[dict], list]:
    """(records, exemplars) of the finished probe `probe.run`, checked against the run config before
    any model is loaded: made with the probe section's settings, over facts of the facts file, with
    exemplars the facts file gives back (the uptake measured while training asks the same prompts)."""

    folder = Path(config.probe.run)
    path = folder / "records.jsonl"
    if not path.is_file():
        raise KnowpackError(f"probe.run: no probe records in {folder} (expected {path})")
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    if summary.get("status") not in (None, "finished"):
        raise KnowpackError(
            f"probe.run: the probe in {folder} is not finished (status {summary.get('status')})"
        )
    records = read_records(path)
    if not records:
        raise KnowpackError(f"probe.run: {path} holds no records")
    settings = summary.get("settings")
    kwargs = {**config.probe.kwargs(), "mode": config.facts.mode}
    try:
        if settings is not None:  # a hand-made probe says nothing; eval warns about it
            check_probe_settings(settings, kwargs, folder)
        ids = {f.id for f in facts}
        missing = [r["id"] for r in records if r["id"] not in ids]
        if missing:
            raise KnowpackError(
                f"the probe in {folder} has {len(missing)} facts not in {config.facts.path}, "
                f"e.g. {missing[0]!r}"
            )
        exemplars = read_pool(folder, facts, settings or {})
    except KnowpackError as e:
        raise KnowpackError(f"probe.run: {e}") from None
    return records, exemplars


def run_base_probe(config: RunConfig, progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Probe the base model as `config.probe` says into `config.probe.out` (resumable); returns records."""
    if config.probe.out is None:
        raise KnowpackError("run_base_probe needs probe.out (where to write the probe)")
    facts = load_facts(config.facts.path)
    model, tokenizer = models.load_model(
        config.model.name,
        dtype=config.model.dtype,
        device=config.model.device,
        trust_remote_code=config.model.trust_remote_code,
    )
    return _run_probe(config, model, tokenizer, facts, Path(config.probe.out), progress)


def _run_probe(config: RunConfig, model: Any, tokenizer: Any, facts: list, out: Path, progress) -> list[dict]:

    p = config.probe
    chosen = sample_facts(facts, p.sample_size, p.sample_size_seed)
    return probe(
        model,
        tokenizer,
        chosen,
        p,
        mode=config.facts.mode,
        exemplars=facts,
        out=p.out or out / "probe",
        progress=progress,
    )


def _trainable(model: Any) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def _threads(n: int | None):
    """torch's CPU threads set to `n` for the run, then back."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a scheduler stopping the job) ends the run like Ctrl-C: marked interrupted."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
