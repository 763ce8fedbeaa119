"""knowpack: implant new facts into causal LLMs (LoRA / LoKI / full fine-tuning) and measure the damage.

The public API is imported lazily, so that `import knowpack` (and `knowpack --help`) stays fast and does not
import torch or transformers until a model is actually loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "load_model": "knowpack.models",
    "load_facts": "knowpack.facts.loaders",
    "save_facts": "knowpack.facts.loaders",
    "organism_dir": "knowpack.paths",
    "geo_dir": "knowpack.paths",
    "probe": "knowpack.probe",  # a callable module: knowpack.probe(...) and knowpack.probe.transition_matrix
    "Fact": "knowpack.facts.schema",
    "normalize": "knowpack.facts.normalize",
    "is_correct": "knowpack.facts.normalize",
    "KnowpackError": "knowpack.errors",
}

__all__ = [
    "__version__",
    "load_model",
    "load_facts",
    "save_facts",
    "organism_dir",
    "geo_dir",
    "probe",
    "Fact",
    "normalize",
    "is_correct",
    "KnowpackError",
]

if TYPE_CHECKING:
    from knowpack.errors import KnowpackError
    from knowpack.facts.loaders import load_facts, save_facts
    from knowpack.facts.normalize import is_correct, normalize
    from knowpack.facts.schema import Fact
    from knowpack.models import load_model
    from knowpack.paths import geo_dir, organism_dir
    from knowpack.probe import probe


def __getattr__(name: str) -> Any:
    if name in _API:
        module = importlib.import_module(_API[name])
        value = module if _API[name] == f"knowpack.{name}" else getattr(module, name)
        globals()[name] = value  # next time without __getattr__
        return value
    raise AttributeError(f"module 'knowpack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
