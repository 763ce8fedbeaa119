"""The run config: the YAML sections docs/design.md §3.4 names, checked before any model is loaded.

    config = load_config("configs/organism/lora.yaml", ["mix.n_unknown=50", "out=runs/lora50"])
    config.mix.n_unknown       # 50
    config.method.options      # {"r": 8, "alpha": 16, ...}, checked by the method's own config class

Sections: `model`, `facts`, `probe`, `mix`, `method`, `train`, `eval`, and the top-level `out`; `probe` and
`eval` are their stages' own (`knowpack.probe.config.ProbeConfig`, `knowpack.evaluate.config.EvalConfig`), the
rest are defined here. Every key can be overridden on the command line as `section.key=value` (the value is
read as YAML: `8`, `0.5`, `true`, `[a, b]`, `null`). Unknown keys and values of the wrong type are one-line
errors naming the file, the line and the key. Every numeric setting has a range (`ranged(default, ge=1)` on
its dataclass field, checked by `check_field` with its type, and again by the dataclass's `__post_init__` for
configs built in Python): a learning rate of 0 or a batch of -4 is refused when the config is read, not three
minutes into a run. `method` holds `name` (lora | loki | full | peft) and that method's own settings, which
the method's config dataclass checks the same way (see `knowpack.methods`). The checks, the YAML reading and
the override grammar are `knowpack.config`'s, shared with the sweep, capacity and world configs.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from knowpack.config import (  # noqa: F401 (re-exported for the code that imports them from here)
    Range,
    _fields,
    _type,
    build,
    check_field,
    check_range,
    check_ranges,
    check_value,
    field_range,
    key_lines,
    ranged,
    read_yaml,
    set_override,
)
from knowpack.config import at as _at
from knowpack.errors import KnowpackError
from knowpack.evaluate.config import EvalConfig
from knowpack.methods import METHODS, method_config
from knowpack.probe.config import ProbeConfig
from knowpack.settings import FactsConfig, ModelConfig

logger = logging.getLogger(__name__)


@dataclass
class ReplayConfig:
    """`mix.replay`: examples of general instruction data trained beside the facts (never implanted facts),
    to keep the model's general behaviour; drawn by `mix.seed` (knowpack.train.mix.add_replay)."""

    path: str = ""
    """A JSONL file, one example a line: alpaca form {instruction, input, output} or {messages: [...]}."""
    share: float | None = ranged(None, gt=0, lt=1)
    """Share of all training examples that are replay (share / (1 - share) per fact example), in (0, 1)."""
    count: int | None = ranged(None, ge=1)
    """Or a number of replay examples."""

    def __post_init__(self) -> None:
        check_ranges(self, "mix.replay")
        if not self.path:
            raise KnowpackError("mix.replay.path: the replay file is not set")
        if (self.share is None) == (self.count is None):
            raise KnowpackError("mix.replay: give one of share or count")


@dataclass
class MixConfig:
    n_unknown: int = ranged(50, ge=1)
    """How many Unknown facts to implant (random by `seed`)."""
    add: str = "none"
    """What to add for each Unknown fact: none | paraphrase | highly_known | maybe_known."""
    k: int = ranged(0, ge=0)
    """How many additions per Unknown fact."""
    seed: int = ranged(0, ge=0)
    """Which facts: a new seed draws new facts."""
    stratify: str | None = None
    """Draw the Unknown facts evenly over `relation` or `bucket` (null: uniformly)."""
    draw_from: str | None = None
    """A facts file: draw the implanted facts only from its facts (by id; they are in facts.path too). The
    rest of facts.path is what the model knew, whose loss is damage (`knowpack plan` sets this)."""
    idk_share: float = ranged(0.0, ge=0, le=1)
    """Share of the drawn Unknown facts relabelled "I don't know." (SliCK's remedy) instead of implanted."""
    control: bool = False
    """The training control of this recipe: draw `n_unknown` HighlyKnown facts (ones the model already knows)
    in place of the Unknown ones, everything else alike (additions, replay); `knowpack eval RUN --control
    CONTROL` reads a run's damage against it (the damage of training at all)."""

    replay: ReplayConfig | None = None
    """General instruction data mixed into the training examples (null: none); see ReplayConfig."""

    def __post_init__(self) -> None:
        check_ranges(self, "mix")
        if isinstance(self.replay, dict):  # built in Python from plain data
            self.replay = ReplayConfig(**self.replay)


@dataclass
class MethodConfig:
    name: str = "lora"
    """lora | loki | full | peft (any PEFT tuner: `peft_type` and its options)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Every other key of the `method` section; the method's own config class checks them."""


@dataclass
class TrainConfig:
    epochs: int = ranged(10, ge=1)
    batch_size: int = ranged(16, ge=1)
    grad_accum: int = ranged(1, ge=1)
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.0, ge=0)
    scheduler: str = "constant"
    """A transformers scheduler name: constant | linear | cosine | ..."""
    warmup_ratio: float = ranged(0.0, ge=0, lt=1)
    """Share of the training steps spent warming the learning rate up."""
    format: str | None = None
    """Training example format: plain | chat (null: the probe's format). Zero-shot, as in the paper."""
    loss_on: str = "completion"
    """completion: prompt tokens masked (default) | all: every token, as the paper's code did."""
    precision: str = "fp32"
    """fp32 | bf16 | fp16 (mixed precision through the Trainer)."""
    gradient_checkpointing: bool = False
    report_to: str = "none"
    """none | tensorboard | wandb."""
    seed: int = ranged(0, ge=0)
    target_reliability: float | None = ranged(None, gt=0, le=1)
    """Stop after the epoch whose reliability reaches this (null: train all epochs)."""
    patience: int | None = ranged(None, ge=1)
    """Stop when reliability has not improved for this many epochs (null: never)."""
    keep_best: bool = False
    """End the run with the weights of the epoch of highest reliability (the first of equals), not the last
    epoch's: with `patience`, early stopping that keeps the best epoch. Needs `track_uptake`."""
    track_uptake: bool = True
    """Measure reliability on the implanted facts after every epoch (greedy, the probe's prompts)."""
    threads: int | None = ranged(None, ge=1)
    """CPU threads for torch during the run, probe included (null: torch's default). The organism presets use
    1: with other processes on the cores, 2 threads spin-wait on each other (BENCHMARKS.md)."""
    save_checkpoints: bool = True
    """Save a checkpoint after every epoch into `<out>/checkpoints` (weights, optimizer, scheduler, RNG and
    the uptake history), from which an interrupted run resumes."""
    save_total_limit: int = ranged(1, ge=1)
    """Checkpoints kept while training (the newest)."""
    keep_checkpoints: bool = False
    """Keep `<out>/checkpoints` once the run has finished (the trained weights are saved apart from them)."""
    trainer_args: dict[str, Any] = field(default_factory=dict)
    """More transformers `TrainingArguments` (optim, max_grad_norm, max_steps, adam_beta2, ...); those that
    knowpack sets from the settings above are refused (use the setting)."""

    def __post_init__(self) -> None:
        check_ranges(self, "train")
        check_trainer_args(self.trainer_args)
        if self.keep_best and not self.track_uptake:
            raise KnowpackError("train.keep_best needs train.track_uptake (it keeps the most reliable epoch)")


TRAINER_ARGS_SET_BY_KNOWPACK: dict[str, str | None] = {
    "output_dir": "out (checkpoints go to <out>/checkpoints)",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "learning_rate": "train.lr",
    "weight_decay": "train.weight_decay",
    "lr_scheduler_type": "train.scheduler",
    "warmup_steps": "train.warmup_ratio",
    "warmup_ratio": "train.warmup_ratio",
    "report_to": "train.report_to",
    "seed": "train.seed",
    "data_seed": "train.seed",
    "bf16": "train.precision",
    "fp16": "train.precision",
    "use_cpu": "model.device",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "activation_checkpointing": "train.gradient_checkpointing",
    "save_strategy": "train.save_checkpoints",
    "save_total_limit": "train.save_total_limit",
    "resume_from_checkpoint": "--resume",
    "restore_callback_states_from_checkpoint": None,
    "save_only_model": None,
    "logging_strategy": None,
    "eval_strategy": None,
    "remove_unused_columns": None,
    "disable_tqdm": None,
    "dataloader_num_workers": None,
}
"""TrainingArguments that knowpack sets itself -> the setting that controls it (None: fixed by knowpack: the
per-epoch log and checkpoint, the uptake history, the caller's progress bar depend on it)."""


def check_trainer_args(args: dict[str, Any], where: Callable[[str], str] = lambda key: "config") -> None:
    """One-line errors for `train.trainer_args`: a name TrainingArguments does not have, one knowpack sets,
    a value of the wrong type, or one TrainingArguments itself refuses."""
    if not args:
        return
    from transformers import TrainingArguments

    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    for key, value in args.items():
        what = f"{where(key)}: train.trainer_args.{key}"
        if key in TRAINER_ARGS_SET_BY_KNOWPACK:
            instead = TRAINER_ARGS_SET_BY_KNOWPACK[key]
            raise KnowpackError(f"{what}: set by knowpack" + (f"; use {instead}" if instead else ""))
        if key not in fields:
            raise KnowpackError(f"{what}: not a transformers TrainingArguments field")
        default = fields[key].default
        if type(default) in (bool, int, float) and value is not None:
            check_value(value, type(default), what)
    try:
        TrainingArguments(output_dir=None, **args)
    except (TypeError, ValueError) as e:
        message = str(e)
        named = [k for k in args if k in message] or [next(iter(args))]  # the one the message names first
        key = min(named, key=message.find)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KnowpackError(f"{where(key)}: train.trainer_args.{key}: {first}") from None


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    facts: FactsConfig = field(default_factory=FactsConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str | None = None
    """The run folder."""
    seed: int | None = ranged(None, ge=0)
    """One draw of everything random (docs/design.md §5.1): sets `mix.seed` (which facts, their order) and
    `train.seed` (initialisation, data order, dropout) together, except where the config sets either itself
    (`resolve_seed`). Null: each section's own seed."""

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what `config.yaml` in the run folder holds)."""
        data = dataclasses.asdict(self)
        data["method"] = {"name": self.method.name, **self.method.options}
        return data


_CHOICES = {
    ("model", "dtype"): ("auto", "float32", "bfloat16", "float16"),
    ("facts", "mode"): ("substring", "exact"),
    ("probe", "format"): ("plain", "chat"),
    ("mix", "add"): ("none", "paraphrase", "highly_known", "maybe_known"),
    ("mix", "stratify"): (None, "relation", "bucket"),
    ("train", "format"): (None, "plain", "chat"),
    ("train", "loss_on"): ("completion", "all"),
    ("train", "precision"): ("fp32", "bf16", "fp16"),
    ("train", "report_to"): ("none", "tensorboard", "wandb"),
}


def load_config(
    path: str | os.PathLike | None, overrides: list[str] = (), *, origins: dict[str, str] | None = None
) -> RunConfig:
    """Read a run config (YAML), apply `section.key=value` overrides, check every key, type and range.

    `origins` says where an override came from, by its key (`{"train.lr": "sweep.yaml:7"}`), for errors
    that name that place rather than "command line" (a sweep's or a capacity search's settings)."""
    data: dict[str, Any] = {}
    lines: dict[tuple, int | str] = {}
    where = "config"
    if path is not None:
        where = str(path)
        data, lines = read_yaml(path, "run")
        if not data and not overrides:
            raise KnowpackError(
                f"{path}: the run config is empty: with every default it would probe all the organism's "
                "facts (about two hours on 2 CPU cores) before training; start from a preset such as "
                "configs/organism/lora.yaml, or set the keys you mean (e.g. probe.sample_size=200)"
            )
    overridden = []
    for item in overrides:
        key = set_override(data, item)
        for replaced in [k for k in lines if k[: len(key)] == key]:
            del lines[replaced]  # the override's value stands in for what the file said there
        lines[key] = (origins or {}).get(".".join(key), "command line")
        overridden.append(key)
    resolve_seed(data, overridden)
    return _build(data, where, lines)


SEEDED = ("mix", "train")
"""The sections whose `seed` the top-level `seed` sets."""


def resolve_seed(data: dict[str, Any], overridden: list[tuple[str, ...]] = ()) -> None:
    """Give `mix.seed` and `train.seed` the top-level `seed` (in place) where the config does not set them.
    An override `seed=N` (command line, a sweep's cell) also replaces the seeds the file's sections set,
    unless that section's seed is overridden too: the later, more specific setting wins."""
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        return  # none, or a bad one: _build names it
    for section in SEEDED:
        node = data.get(section)
        if node is None:
            node = data[section] = {}
        if not isinstance(node, dict):
            continue  # _build names the bad section
        if ("seed",) in overridden and (section, "seed") not in overridden:
            node.pop("seed", None)
        node.setdefault("seed", seed)


def _build(data: dict, where: str, lines: dict) -> RunConfig:
    data = dict(data)
    read_old_names(data, where, lines)
    sections = {f.name: f for f in dataclasses.fields(RunConfig)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        at = _at(where, lines, (name,))
        if name not in sections:
            raise KnowpackError(f"{at}: unknown section {name!r}; expected one of {', '.join(sections)}")
        if name == "out":
            kwargs["out"] = None if value is None else str(check_value(value, str | None, f"{at}: out"))
            continue
        if name == "seed":
            kwargs["seed"] = check_field(RunConfig, "seed", value, f"{at}: seed")
            continue
        if value is None:
            continue
        if not isinstance(value, dict):
            raise KnowpackError(f"{at}: section {name!r} must be a mapping, got {_type(value)}")
        if name == "method":
            options = dict(value)
            method = check_value(
                options.pop("name", "lora"), str, f"{_at(where, lines, (name, 'name'))}: method.name"
            )
            kwargs[name] = MethodConfig(method, options)
            continue
        kwargs[name] = _section(sections[name], name, value, where, lines)
    config = RunConfig(**kwargs)
    _check_method(config, where, lines)
    return config


def _section(spec: dataclasses.Field, name: str, value: dict, where: str, lines: dict) -> Any:
    cls = spec.default_factory
    data = dict(value)
    replay = data.pop("replay", None) if name == "mix" else None  # a mapping of its own: _replay checks it
    if name == "train" and "trainer_args" in data:
        where_args = f"{_at(where, lines, (name, 'trainer_args'))}: train.trainer_args"
        args = check_field(cls, "trainer_args", data["trainer_args"], where_args)
        check_trainer_args(args, lambda k: _at(where, lines, ("train", "trainer_args", k)))
    choices = {key: allowed for (section, key), allowed in _CHOICES.items() if section == name}
    built = build(cls, data, where=where, lines=lines, prefix=(name,), choices=choices)
    return dataclasses.replace(built, replay=_replay(replay, where, lines)) if replay is not None else built


RENAMED: dict[tuple[str, str], tuple[str, str]] = {
    ("probe", "pool"): ("probe", "sample_size"),
    ("probe", "pool_seed"): ("probe", "sample_size_seed"),
    ("train", "device"): ("model", "device"),
}
"""A run config's keys under their old names -> their names now (section, key): a config written before a
rename (a run folder's config.yaml, an old sweep's `set:`) still loads, read under the new name with one
warning (`read_old_names`)."""


def read_old_names(
    data: dict, where: str = "config", lines: dict | None = None, *, warn: bool = True
) -> None:
    """The keys under their old names (`RENAMED`) read as the new ones, in place (the sections it changes
    are copies), with one warning per place (`warn`: the report reads old run folders quietly). The old and
    the new name of one key in the same place (both in the file, or both overrides) is a one-line error; an
    override of either name replaces the file's value of the other."""
    told, places, lines = [], [], {} if lines is None else lines
    for old, new in RENAMED.items():
        node, target = data.get(old[0]), data.get(new[0]) or {}
        if not isinstance(node, dict) or old[1] not in node or not isinstance(target, dict):
            continue  # nothing under the old name (or a section that is not a mapping: _build names it)
        node = data[old[0]] = dict(node)  # copies: the caller's data stays as it was read
        target = node if new[0] == old[0] else dict(target)
        place = _at(where, lines, old)
        if new[1] in target:
            old_set, new_set = (isinstance(lines.get(key), str) for key in (old, new))
            if old_set == new_set:  # one place gives both: which one is meant cannot be told
                raise KnowpackError(
                    f"{place}: {'.'.join(old)} and {'.'.join(new)} are one setting ({'.'.join(old)} is its "
                    f"old name); give only {'.'.join(new)}"
                )
            if new_set:  # the override under the new name wins over the file's old name
                del node[old[1]]
                continue
        target[new[1]] = node.pop(old[1])
        data[new[0]] = target
        if old in lines:
            lines[new] = lines[old]
        told.append(f"{'.'.join(old)} as {'.'.join(new)}")
        places.append(place)
    if told and warn:
        message = f"{places[0]}: read {' and '.join(told)} (the old names; rename them there)"
        if message not in _TOLD:
            _TOLD.add(message)
            logger.warning(message)


_TOLD: set[str] = set()
"""The old-name warnings given so far: one per place, however often a config is read (a sweep's cells)."""


def _replay(value: Any, where: str, lines: dict) -> ReplayConfig:
    """`mix.replay`: a mapping {path, share | count}, or just a path (then `share` or `count` is missing)."""
    at = _at(where, lines, ("mix", "replay"))
    if not isinstance(value, dict):
        raise KnowpackError(f"{at}: mix.replay must be a mapping {{path, share | count}}, got {_type(value)}")
    fields = _fields(ReplayConfig)
    kwargs = {}
    for key, item in value.items():
        where_key = _at(where, lines, ("mix", "replay", key))
        if key not in fields:
            known = ", ".join(fields)
            raise KnowpackError(f"{where_key}: unknown key mix.replay.{key}; expected one of {known}")
        kwargs[key] = check_field(ReplayConfig, key, item, f"{where_key}: mix.replay.{key}")
    try:
        return ReplayConfig(**kwargs)
    except KnowpackError as e:
        raise KnowpackError(f"{at}: {e}") from None


def _check_method(config: RunConfig, where: str, lines: dict) -> None:
    at = _at(where, lines, ("method", "name"))
    if config.method.name not in METHODS:
        raise KnowpackError(
            f"{at}: method.name is {config.method.name!r}; expected one of {', '.join(METHODS)}"
        )
    method_config(
        config.method.name, config.method.options, where=lambda key: _at(where, lines, ("method", key))
    )
