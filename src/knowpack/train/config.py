"""The run config: one YAML file with the sections DESIGN.md names, checked before any model is loaded.

    config = load_config("configs/organism/lora.yaml", ["mix.n_unknown=50", "out=runs/lora50"])
    config.mix.n_unknown       # 50
    config.method.options      # {"r": 8, "alpha": 16, ...}, checked by the method's own config class

Sections: `model`, `facts`, `probe`, `mix`, `method`, `train`, `eval`, and the top-level `out`. Every key
can be overridden on the command line as `section.key=value` (the value is read as YAML: `8`, `0.5`, `true`,
`[a, b]`, `null`). Unknown keys and values of the wrong type are one-line errors naming the file, the line
and the key. `method` holds `name` (lora | loki | full) and that method's own settings, which the method's
config dataclass checks (see `knowpack.methods`).
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError


@dataclass
class ModelConfig:
    name: str = "organism"
    """Hub id, local folder, `organism` or `smollm2-135m` (SmolLM2-135M-Instruct, converted on first use)."""
    dtype: str = "auto"
    """Weights' dtype when loaded: auto | float32 | bfloat16 | float16."""
    trust_remote_code: bool = False
    """Run a model's own Python code from the Hub. Off unless you ask for it."""


@dataclass
class FactsConfig:
    path: str = "organism"
    """Facts file (JSONL, CSV, JSON, Parquet, HF dataset), `organism` or `geo` (real facts from GeoNames)."""
    mode: str = "substring"
    """Correctness: substring (the paper's) | exact."""


@dataclass
class ProbeConfig:
    run: str | None = None
    """A finished probe folder (records.jsonl) of this model on these facts. Null: probe here, into `out`."""
    out: str | None = None
    """Where to probe when `run` is null (default `<run out>/probe`); an existing probe there is resumed."""
    pool: int | None = None
    """Probe only this many facts, a seeded random sample (the organism presets: a few hundred)."""
    pool_seed: int = 0
    n_prompts: int = 10
    shots: int = 4
    samples: int = 16
    temperature: float = 0.5
    top_k: int = 40
    max_new_tokens: int = 32
    format: str = "plain"
    """Prompt format of the probe and of the uptake measurement: plain | chat."""
    seed: int = 0
    batch_size: int = 256

    def kwargs(self) -> dict[str, Any]:
        """These settings as `knowpack.probe()` keyword arguments."""
        return {
            "n_prompts": self.n_prompts,
            "shots": self.shots,
            "samples": self.samples,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "fmt": self.format,
            "seed": self.seed,
            "batch_size": self.batch_size,
        }


@dataclass
class MixConfig:
    n_unknown: int = 50
    """How many Unknown facts to implant (random by `seed`)."""
    add: str = "none"
    """What to add for each Unknown fact: none | paraphrase | highly_known | maybe_known."""
    k: int = 0
    """How many additions per Unknown fact."""
    seed: int = 0
    """Which facts: a new seed draws new facts."""
    stratify: str | None = None
    """Draw the Unknown facts evenly over `relation` or `bucket` (null: uniformly)."""
    idk_share: float = 0.0
    """Share of the drawn Unknown facts relabelled "I don't know." (SliCK's remedy) instead of implanted."""


@dataclass
class MethodConfig:
    name: str = "lora"
    """lora | loki | full."""
    options: dict[str, Any] = field(default_factory=dict)
    """Every other key of the `method` section; the method's own config class checks them."""


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    scheduler: str = "constant"
    """A transformers scheduler name: constant | linear | cosine | ..."""
    warmup_ratio: float = 0.0
    format: str | None = None
    """Training example format: plain | chat (null: the probe's format). Zero-shot, as in the paper."""
    loss_on: str = "completion"
    """completion: prompt tokens masked (default) | all: every token, as the paper's code did."""
    precision: str = "fp32"
    """fp32 | bf16 | fp16 (mixed precision through the Trainer)."""
    gradient_checkpointing: bool = False
    report_to: str = "none"
    """none | tensorboard | wandb."""
    seed: int = 0
    target_reliability: float | None = None
    """Stop after the epoch whose reliability reaches this (null: train all epochs)."""
    patience: int | None = None
    """Stop when reliability has not improved for this many epochs (null: never)."""
    track_uptake: bool = True
    """Measure reliability on the implanted facts after every epoch (greedy, the probe's prompts)."""
    device: str | None = None
    """cpu | cuda | ... (null: the Trainer's choice)."""
    threads: int | None = None
    """CPU threads for torch during the run, probe included (null: torch's default). The organism presets use
    1: with other processes on the cores, 2 threads spin-wait on each other (BENCHMARKS.md)."""


@dataclass
class EvalConfig:
    """Settings `knowpack eval RUN` reads from the run (the train verb only records them); the eval verb's
    options override them."""

    benchmarks: list[str] = field(default_factory=list)
    """lm-eval tasks to run on the base and the trained model (e.g. world_mc, mmlu, truthfulqa_mc2)."""
    limit: int | None = None
    """Items per benchmark (null: all)."""
    num_fewshot: int | None = None
    """Shots per benchmark item (null: each task's own, e.g. world_mc 5, TruthfulQA 0)."""
    tasks_dir: str | None = None
    """A folder of lm-eval task YAMLs of your own (offline tasks on local data); world_* tasks need none."""
    batch_size: int = 16
    """Benchmark items scored at once."""
    noise_floor: bool = True
    """Probe the untouched base a second time with another seed (cached beside the base probe) and set every
    shift beside it."""
    noise_seed: int | None = None
    """Seed of that second probe (null: the probe's seed + 1)."""
    refusal_patterns: list[str] | None = None
    """Regular expressions marking an answer as a refusal (null: knowpack.facts.DEFAULT_REFUSAL_PATTERNS)."""


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


def load_config(path: str | os.PathLike | None, overrides: list[str] = ()) -> RunConfig:
    """Read a run config (YAML), apply `section.key=value` overrides, check every key and type."""
    import yaml

    data: dict[str, Any] = {}
    lines: dict[tuple[str, ...], int] = {}
    where = "config"
    if path is not None:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise KnowpackError(f"{path}: cannot read the config ({e.strerror})") from None
        try:
            data = yaml.safe_load(text) or {}
            lines = _key_lines(yaml.compose(text))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f":{mark.line + 1}" if mark else ""
            raise KnowpackError(f"{path}{at}: not valid YAML ({getattr(e, 'problem', e)})") from None
        if not isinstance(data, dict):
            raise KnowpackError(f"{path}: a run config is a mapping of sections, got {type(data).__name__}")
    for item in overrides:
        lines[_override(data, item)] = "override"
    return _build(data, where, lines)


def _override(data: dict, item: str) -> tuple[str, ...]:
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise KnowpackError(f"bad override {item!r}: expected section.key=value, e.g. mix.n_unknown=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return tuple(parts)


def _build(data: dict, where: str, lines: dict) -> RunConfig:
    sections = {f.name: f for f in dataclasses.fields(RunConfig)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        at = _at(where, lines, (name,))
        if name not in sections:
            raise KnowpackError(f"{at}: unknown section {name!r}; expected one of {', '.join(sections)}")
        if name == "out":
            kwargs["out"] = None if value is None else str(check_value(value, str | None, f"{at}: out"))
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
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, item in value.items():
        at = _at(where, lines, (name, key))
        if key not in fields:
            raise KnowpackError(f"{at}: unknown key {name}.{key}; expected one of {', '.join(fields)}")
        item = check_value(item, hints[key], f"{at}: {name}.{key}")
        choices = _CHOICES.get((name, key))
        if choices is not None and item not in choices:
            shown = ", ".join("null" if c is None else c for c in choices)
            raise KnowpackError(f"{at}: {name}.{key} is {item!r}; expected one of {shown}")
        kwargs[key] = item
    return cls(**kwargs)


def _check_method(config: RunConfig, where: str, lines: dict) -> None:
    from knowpack.methods import METHODS, method_config

    at = _at(where, lines, ("method", "name"))
    if config.method.name not in METHODS:
        raise KnowpackError(
            f"{at}: method.name is {config.method.name!r}; expected one of {', '.join(METHODS)}"
        )
    method_config(
        config.method.name, config.method.options, where=lambda key: _at(where, lines, ("method", key))
    )


def check_value(value: Any, annotation: Any, what: str) -> Any:
    """`value` if it fits the type `annotation` (ints are accepted as floats); else a one-line error."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return check_value(value, arg, what)
            except KnowpackError:
                pass
        raise KnowpackError(f"{what}: expected {_name(annotation)}, got {_type(value)} {value!r}")
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list):
            raise KnowpackError(f"{what}: expected a list, got {_type(value)} {value!r}")
        return [check_value(v, item, what) for v in value]
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise KnowpackError(f"{what}: expected a mapping, got {_type(value)}")
        return value
    if annotation is Any:
        return value
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-3` (no dot) as a string: accept what Python reads as a number
            return float(value)
        except ValueError:
            pass
    if annotation is int and isinstance(value, bool):
        raise KnowpackError(f"{what}: expected int, got bool {value!r}")
    if annotation in (int, float, str, bool) and isinstance(value, annotation):
        return value
    raise KnowpackError(f"{what}: expected {_name(annotation)}, got {_type(value)} {value!r}")


def _name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if args:
        return " or ".join("null" if a is type(None) else _name(a) for a in args)
    return getattr(annotation, "__name__", str(annotation))


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _key_lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """YAML key path -> 1-based line, for errors that point into the file."""
    out: dict[tuple[str, ...], int] = {}
    if node is None or not hasattr(node, "value") or not isinstance(node.value, list):
        return out
    for pair in node.value:
        if not isinstance(pair, tuple):
            continue
        key_node, value_node = pair
        key = prefix + (str(key_node.value),)
        out[key] = key_node.start_mark.line + 1
        out.update(_key_lines(value_node, key))
    return out


def _at(where: str, lines: dict, key: tuple[str, ...]) -> str:
    line = lines.get(key)
    if line == "override":
        return "command line"
    return f"{where}:{line}" if line else where
