"""knowpack: implant new facts into causal LLMs (LoRA / LoKI / full fine-tuning) and measure the damage.

The public API is one level deep, every name in one table (`_API`), each imported when first read, so that
`import knowpack` (and `knowpack --help`) stays fast and does not import torch or transformers until a model
is actually loaded:

    import knowpack
    model, tok = knowpack.load_model("organism")
    facts = knowpack.load_facts("organism")
    records = knowpack.probe(model, tok, facts[:20], exemplars=facts)
    run = knowpack.train(knowpack.load_config("configs/organism/lora.yaml", ["out=runs/lora50"]))
    knowpack.evaluate(run)

`knowpack.probe`, `train`, `evaluate` and `report` are functions, though the subpackages that hold them have
the same names: the package's module class keeps each public name bound to its function when Python binds a
subpackage to its parent on import (`from knowpack.probe.scoring import transition_matrix` still imports from
the subpackage; only attribute access through `knowpack.probe.` no longer reaches it).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    # the stages, in the order a user meets them
    "load_model": "knowpack.models",
    "load_facts": "knowpack.facts.loaders",
    "probe": "knowpack.probe.run",
    "attribute": "knowpack.methods.loki.attribution",
    "load_prompts": "knowpack.methods.loki.prompt_sets",
    "select": "knowpack.methods.loki.select:select_nodes",
    "train": "knowpack.train.run",
    "evaluate": "knowpack.evaluate.run:evaluate_run",
    "sweep": "knowpack.experiment.sweep:run_sweep",
    "capacity": "knowpack.experiment.capacity.search:run_capacity",
    "report": "knowpack.report.report:write_report",
    "export": "knowpack.train.export:export_run",
    # their settings
    "load_config": "knowpack.train.config",
    "load_sweep": "knowpack.experiment.sweep",
    "load_capacity": "knowpack.experiment.capacity.config",
    "RunConfig": "knowpack.train.config",
    "ProbeConfig": "knowpack.probe.config",
    "EvalConfig": "knowpack.evaluate.config",
    # facts, answers, files
    "save_facts": "knowpack.facts.loaders",
    "Fact": "knowpack.facts.schema",
    "normalize": "knowpack.facts.normalize",
    "is_correct": "knowpack.facts.normalize",
    "organism_dir": "knowpack.paths",
    "geo_dir": "knowpack.paths",
    "KnowpackError": "knowpack.errors",
}
"""Each public name -> the module that defines it (`module:name` where the name there differs)."""

__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from knowpack.errors import KnowpackError
    from knowpack.evaluate.config import EvalConfig
    from knowpack.evaluate.run import evaluate_run as evaluate
    from knowpack.experiment.capacity.config import load_capacity
    from knowpack.experiment.capacity.search import run_capacity as capacity
    from knowpack.experiment.sweep import load_sweep
    from knowpack.experiment.sweep import run_sweep as sweep
    from knowpack.facts.loaders import load_facts, save_facts
    from knowpack.facts.normalize import is_correct, normalize
    from knowpack.facts.schema import Fact
    from knowpack.methods.loki.attribution import attribute
    from knowpack.methods.loki.prompt_sets import load_prompts
    from knowpack.methods.loki.select import select_nodes as select
    from knowpack.models import load_model
    from knowpack.paths import geo_dir, organism_dir
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.run import probe
    from knowpack.report.report import write_report as report
    from knowpack.train.config import RunConfig, load_config
    from knowpack.train.export import export_run as export
    from knowpack.train.run import train


class _Public:
    """One public name of the package: the object its module defines, imported when first read. Python's
    import binds a loaded subpackage (`knowpack.probe`, `knowpack.train`, ...) to its parent; that binding
    is kept out of the public name, which stays the function (a test may still patch it)."""

    def __init__(self, name: str, where: str):
        self.name = name
        self.module, _, self.attr = where.partition(":")
        self.value: Any = None
        self.loaded = False

    def __get__(self, package: types.ModuleType | None, owner: type | None = None) -> Any:
        if package is None:
            return self
        if not self.loaded:
            self.value, self.loaded = (
                getattr(importlib.import_module(self.module), self.attr or self.name),
                True,
            )
        return self.value

    def __set__(self, package: types.ModuleType, value: Any) -> None:
        if isinstance(value, types.ModuleType) and value.__name__ == f"{package.__name__}.{self.name}":
            return  # the import system binding the subpackage of the same name
        self.value, self.loaded = value, True

    def __delete__(self, package: types.ModuleType) -> None:
        self.value, self.loaded = None, False


class _Package(types.ModuleType):
    """The `knowpack` module's class: its public names (`_API`) as `_Public` attributes."""

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_API))


for _name, _where in _API.items():
    setattr(_Package, _name, _Public(_name, _where))
del _name, _where

sys.modules[__name__].__class__ = _Package
