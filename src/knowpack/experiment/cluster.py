"""What a sweep, a capacity search, a probe or an attribution says about where it runs, checked before
anything runs: the backends (`local`, `ray`), a config's `resources` and `retries` (`ClusterFile`), and
Ray's import.

Running on Ray is `knowpack.experiment.backends`'s; this module is what the configs and the command line
read, below them all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from knowpack.config import ranged
from knowpack.errors import KnowpackError

BACKENDS = ("local", "ray")
INSTALL = "pip install 'knowpack[ray]'"


@dataclass
class ClusterFile:
    """The keys a sweep or capacity config has for `--backend ray` (checked with their lines)."""

    resources: dict[str, Any] | None = None
    """What one cell (capacity point) asks of the cluster: `{gpus: 1, cpus: 4}`, `memory` in bytes, any
    other key a custom Ray resource. Default: one GPU where the cluster has GPUs, else one CPU."""
    retries: int = ranged(3, ge=0)
    """Times Ray reruns a cell whose worker process or node died (`--backend ray`)."""


def config_keys(cls: type) -> tuple[str, ...]:
    """The keys of a sweep or capacity config class (a `ClusterFile`), `ClusterFile`'s last (an unknown
    key's error lists them in this order)."""
    own = {f.name for f in dataclasses.fields(ClusterFile)}
    names = [f.name for f in dataclasses.fields(cls)]
    return tuple(sorted(names, key=lambda name: name in own))


def cluster_settings(checked: ClusterFile, where: str) -> ClusterFile:
    """`resources` and `retries` of a checked sweep or capacity config; a resource that is not a number >= 0
    is a one-line error naming `where` (the file and the key's line)."""
    for key, value in (checked.resources or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KnowpackError(f"{where}: resources.{key} must be a number >= 0, not {value!r}")
    return ClusterFile(checked.resources, checked.retries)


def check_backend(backend: str, workers: int = 1) -> None:
    """A one-line error for an unknown backend, `--workers` beside `--backend ray` (Ray places the tasks
    itself), or `--backend ray` without Ray installed: before anything runs."""
    if backend not in BACKENDS:
        raise KnowpackError(f"unknown --backend {backend!r}; expected {' or '.join(BACKENDS)}")
    if backend == "ray" and workers != 1:
        raise KnowpackError("--workers is for --backend local; on Ray every cell is a task of its own")
    if backend == "ray":
        import_ray()


def import_ray() -> Any:
    """The `ray` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise KnowpackError(f"--backend ray needs Ray, which is not installed: {INSTALL}") from None
    return ray
