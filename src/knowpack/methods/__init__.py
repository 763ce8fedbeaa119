"""The implanting methods, one module each with the same shape (the registry `knowpack train` dispatches on).

Every method module is a `Method` (the protocol below; tests/test_methods_contract.py checks every row):
- `Config`: a dataclass of its settings (the `method` section of a run config, less `name`);
- `WEIGHTS`: the name of the folder its trained weights take in a run folder (`adapter`, `loki`, `model`);
- `prepare(model, config, context) -> model`: the model to train (frozen where the method says so);
- `save(model, folder, config, context)`: write the trained weights into `folder` (the run's `WEIGHTS`);
- `load(base, folder) -> model`: the trained model again, from a freshly loaded base and that folder;
- `merge(model) -> model`: a plain transformers model with the training folded in (for `knowpack export`);
- `shared_work(options) -> SharedWork | None`: work before training that runs with the same settings share
  (LoKI's attribution), which `knowpack sweep` does once for all its cells; None when there is none.

A method whose settings are not a fixed set of fields (`peft`: the fields of PEFT's config class for the
chosen `peft_type`) also has `configure(options, where) -> Config`, which checks them itself.
`prepare` may add Trainer callbacks the method needs to `context["callbacks"]` (AdaLoRA's rank budget).

`context` carries what some methods need besides the model: the tokenizer, the run folder, the config.
Dispatch is a plain dict while there are few methods.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from knowpack.config import check_field
from knowpack.errors import KnowpackError

METHODS: dict[str, str] = {
    "lora": "knowpack.methods.lora",
    "loki": "knowpack.methods.loki",
    "full": "knowpack.methods.full",
    "peft": "knowpack.methods.peft",
}
"""Method name -> module (imported when used, so that reading a config stays cheap)."""


@dataclass(frozen=True)
class SharedWork:
    """Work a method does before training that runs with the same settings can share (LoKI's attribution).

    `knowpack sweep` keeps it at `OUT/<name>/<hash of the model and key>`: a cell's method options get
    `<name>_out` (that folder) while the sweep prepares, and `<name>` (the finished folder) once `run` has
    made it, one process at a time."""

    name: str
    """The option naming the finished work (`attribution`), and the sweep's folder for it."""
    key: dict[str, Any]
    """What the work depends on besides the model (its settings)."""
    run: Callable[[Any, Path, Callable[[str], Any] | None], None]
    """`run(config, folder, progress_bar)`: do it into `folder` for the run config `config` (its model)."""


@runtime_checkable
class Method(Protocol):
    """What every row of `METHODS` implements: its module has these names (see the module's docstring)."""

    Config: type
    WEIGHTS: str

    def prepare(self, model: Any, config: Any, context: dict[str, Any]) -> Any: ...

    def save(self, model: Any, folder: Path, config: Any, context: dict[str, Any]) -> None: ...

    def load(self, base: Any, folder: Path) -> Any: ...

    def merge(self, model: Any) -> Any: ...

    def shared_work(self, options: dict[str, Any]) -> SharedWork | None: ...


def method_module(name: str) -> ModuleType:
    """The module of method `name`; an unknown name is a one-line error."""
    if name not in METHODS:
        raise KnowpackError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def method_config(
    name: str, options: dict[str, Any], where: Callable[[str], str] = lambda key: "config"
) -> Any:
    """Check `options` against method `name`'s Config (unknown keys, types, ranges) and build it."""
    module = method_module(name)
    if hasattr(module, "configure"):
        return module.configure(options, where)
    cls = module.Config
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in options.items():
        if key not in fields:
            known = ", ".join(sorted(fields)) or "none"
            raise KnowpackError(
                f"{where(key)}: unknown key method.{key} for method {name}; expected: {known}"
            )
        kwargs[key] = check_field(cls, key, value, f"{where(key)}: method.{key}")
    try:
        return cls(**kwargs)
    except KnowpackError as e:
        raise KnowpackError(f"{where(next(iter(options), 'name'))}: {e}") from None
