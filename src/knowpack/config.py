"""The one config system of knowpack: run, sweep, capacity and world configs are read by these functions.

    data, lines = read_yaml("sweep.yaml", "sweep")        # the mapping, and each key path's line
    key, value = parse_override("train.lr=1e-3")          # (("train", "lr"), 0.001): `key=value`, YAML value
    set_override(data, "train.lr=1e-3")                   # the same, written into a nested mapping
    section = build(TrainConfig, {"lr": 0}, where="run.yaml", lines=lines, prefix=("train",))
    # -> KnowpackError("run.yaml:7: train.lr: expected a number > 0, got 0.0")

Every config is a dataclass whose fields carry their type, their default (written once, here or in the
dataclass) and, for numbers, their range (`ranged(default, ge=1)`). `build` checks every key of a mapping
against such a dataclass: unknown keys, wrong types (`check_value`), values out of range (`check_range`),
values outside a set of choices, each a one-line error `file:line: key: expected ...` naming where the key was
set (the file's line, or "command line", or the experiment config that set it). The override grammar is the
same for every kind: `a.b=value`, the value read as YAML (`8`, `0.5`, `true`, `[a, b]`, `null`; empty: null).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: a lower and / or upper bound, each closed unless `*_open`."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if value != value or value in (float("inf"), float("-inf")):  # NaN, infinity: never a setting
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


def ranged(
    default: Any,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with `default` whose value (when not None) must lie within the bounds given."""
    bounds = Range(
        low=gt if gt is not None else ge,
        high=lt if lt is not None else le,
        low_open=gt is not None,
        high_open=lt is not None,
    )
    return field(default=default, metadata={"range": bounds})


def field_range(cls: type, name: str) -> Range | None:
    """The range of field `name` of dataclass `cls` (None: any value of its type)."""
    return _fields(cls)[name].metadata.get("range")


def check_field(cls: type, name: str, value: Any, what: str) -> Any:
    """`value` checked as field `name` of dataclass `cls`: its type (`check_value`), then its range.
    `what` starts the one-line error, e.g. "run.yaml:12: train.lr" or "--n-prompts"."""
    value = check_value(value, _hints(cls)[name], what)
    check_range(value, field_range(cls, name), what)
    return value


def check_range(value: Any, bounds: Range | None, what: str) -> None:
    """A one-line error unless `value` (a number, or None) lies within `bounds`."""
    if bounds is None or value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    if value not in bounds:
        kind = "an integer" if isinstance(value, int) else "a number"
        raise KnowpackError(f"{what}: expected {kind} {bounds}, got {value!r}")


def check_ranges(config: Any, prefix: str) -> None:
    """Check every ranged field of a dataclass instance (its `__post_init__`); errors name `prefix.field`."""
    for f in dataclasses.fields(config):
        check_range(getattr(config, f.name), f.metadata.get("range"), f"{prefix}.{f.name}")


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_value(value: Any, annotation: Any, what: str) -> Any:
    """`value` if it fits the type `annotation` (ints are accepted as floats); else a one-line error."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        kinds = [arg for arg in args if arg is not type(None)]
        if len(kinds) == 1 and typing.get_origin(kinds[0]) in (list, dict):
            return check_value(value, kinds[0], what)  # the inner error names the bad item
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
        _, item = typing.get_args(annotation) or (Any, Any)
        return {k: check_value(v, item, f"{what}.{k}") for k, v in value.items()}
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


MAX_YAML_NODES = 100_000
"""The most nodes a config may hold with its aliases expanded: a real config has a few hundred, while a
few hundred bytes of nested aliases ("billion laughs") expand to billions."""


def key_lines(node: Any, where: str = "config", limit: int = MAX_YAML_NODES) -> dict[tuple, int]:
    """YAML key path -> 1-based line (`yaml.compose`'s node), for errors that point into the file. A list
    item's path holds its index: ("cases", 2, "mix.k").

    The walk is also the file's check: a key given twice in one mapping, an alias that contains itself, or
    more than `limit` nodes once aliases are expanded is a one-line error naming `where` and the line."""
    out: dict[tuple, int] = {}
    _walk(node, (), out, where, [limit], set())
    return out


def _walk(node: Any, prefix: tuple, out: dict, where: str, budget: list[int], open_: set[int]) -> None:
    from yaml.nodes import MappingNode, SequenceNode

    budget[0] -= 1
    if budget[0] < 0:
        raise KnowpackError(
            f"{where}:{node.start_mark.line + 1}: the config expands to more than {MAX_YAML_NODES:,} values "
            "through its aliases (&anchor / *alias); write it out or use fewer aliases"
        )
    if not isinstance(node, MappingNode | SequenceNode):
        return
    if id(node) in open_:
        raise KnowpackError(
            f"{where}:{node.start_mark.line + 1}: an alias refers to a value that contains it"
        )
    open_.add(id(node))
    if isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            out[prefix + (i,)] = item.start_mark.line + 1
            _walk(item, prefix + (i,), out, where, budget, open_)
    else:
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name, line = str(key_node.value), key_node.start_mark.line + 1
            if key_node.tag != "tag:yaml.org,2002:merge" and name in seen:
                raise KnowpackError(
                    f"{where}:{line}: duplicate key {'.'.join(map(str, prefix + (name,)))} (first given at "
                    f"line {seen[name]}); give each key once"
                )
            seen[name] = line
            out[prefix + (name,)] = line
            _walk(value_node, prefix + (name,), out, where, budget, open_)
    open_.discard(id(node))


def at(where: str, lines: dict, key: tuple[str, ...]) -> str:
    """Where `key` was set: `file:line`, or the place an override came from (the nearest key above it that
    was set when the key itself was not, e.g. a whole `method` mapping given by a sweep's case)."""
    for n in range(len(key), 0, -1):
        line = lines.get(key[:n])
        if isinstance(line, str):
            return line
        if line is not None:
            return f"{where}:{line}"
    return where


def read_yaml(path: str | os.PathLike, kind: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """A `kind` config file (YAML) as a mapping, with each key path's line (`key_lines`); unreadable, not
    UTF-8, not YAML or not a mapping: one-line errors naming the file (and the line)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise KnowpackError(f"{path}: cannot read the {kind} config ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise KnowpackError(f"{path}: not valid UTF-8 (byte at offset {e.start})") from None
    loader = yaml.SafeLoader(text)
    try:  # composed and checked (duplicate keys, aliases' expansion) before any value is built
        node = loader.get_single_node()
        lines = key_lines(node, str(path)) if node is not None else {}
        data = (loader.construct_document(node) if node is not None else None) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise KnowpackError(f"{path}{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise KnowpackError(f"{path}: a {kind} config is a mapping of keys, got {_type(data)}")
    return data, lines


def parse_override(item: str) -> tuple[tuple[str, ...], Any]:
    """`a.b=value` -> (("a", "b"), value read as YAML; text YAML cannot read stays text; empty: None)."""
    import yaml

    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise KnowpackError(f"bad override {item!r}: expected key=value, e.g. mix.n_unknown=50")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return tuple(key.strip().split(".")), value


def set_override(data: dict, item: str) -> tuple[str, ...]:
    """Apply `a.b=value` to the nested mapping `data` (`data["a"]["b"] = value`); returns the key path."""
    parts, value = parse_override(item)
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return parts


def build(
    cls: type,
    data: dict[str, Any],
    *,
    where: str,
    lines: dict,
    prefix: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> Any:
    """`cls(**data)` after checking every key: known to the dataclass, of its field's type and range, and
    among `choices[key]` where given. Errors name `where` and the key's line: `file:line: a.key: expected
    ...`; `prefix` is the key path of `data` in the file (a section's name)."""
    fields = _fields(cls)
    kwargs = {}
    for key, item in data.items():
        place = at(where, lines, (*prefix, key))
        name = ".".join((*prefix, str(key)))
        if key not in fields:
            raise KnowpackError(f"{place}: unknown key {name}; expected one of {', '.join(fields)}")
        item = check_field(cls, key, item, f"{place}: {name}")
        allowed = (choices or {}).get(key)
        if allowed is not None and item not in allowed:
            shown = ", ".join("null" if c is None else str(c) for c in allowed)
            raise KnowpackError(f"{place}: {name} is {item!r}; expected one of {shown}")
        kwargs[key] = item
    try:
        return cls(**kwargs)
    except KnowpackError as e:
        raise KnowpackError(f"{at(where, lines, prefix) if prefix else where}: {e}") from None
