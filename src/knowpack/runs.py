"""Run folders: provenance and status, so that nothing half-done is ever read as a result.

Every run folder holds `run.json`: what ran (kind, command), where it came from (git commit, package versions,
host, pid), when (start, end), peak memory, and `status`: running | finished | interrupted | failed. A run
writes `running` first and its final status last; a process killed outright cannot write anything, so
`run_status` reports a `running` folder whose process is gone as `interrupted`. Sweeps and `knowpack eval`
trust a folder only when its status is `finished`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from knowpack.io import write_json_atomic

RUN_FILE = "run.json"
STATUSES = ("running", "finished", "interrupted", "failed")


def versions() -> dict[str, str]:
    """Versions of knowpack and the libraries a result depends on (those importable)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("knowpack", "torch", "transformers", "peft", "accelerate", "lm_eval", "datasets"):
        try:
            out[name] = version(name.replace("_", "-"))
        except PackageNotFoundError:
            pass
    return out


def git_commit() -> str | None:
    """The commit of knowpack's source checkout (with `+dirty` when it has changes), or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        if not commit:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def start_run(folder: str | os.PathLike, kind: str, **extra: Any) -> dict[str, Any]:
    """Write `run.json` with status `running` and the provenance; returns the record."""
    record = {
        "kind": kind,
        "status": "running",
        "command": sys.argv,
        "git_commit": git_commit(),
        "versions": versions(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "started_unix": time.time(),
        **extra,
    }
    write_json_atomic(Path(folder) / RUN_FILE, record)
    return record


def end_run(folder: str | os.PathLike, record: dict[str, Any], status: str, **extra: Any) -> dict[str, Any]:
    """Write the final status (finished | interrupted | failed) with end time, duration and peak memory."""
    assert status in STATUSES[1:], status
    record = {
        **record,
        **extra,
        "status": status,
        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - record["started_unix"], 3),
        "peak_memory": peak_memory(),
    }
    write_json_atomic(Path(folder) / RUN_FILE, record)
    return record


def read_run(folder: str | os.PathLike) -> dict[str, Any] | None:
    """`run.json` of a folder (None when there is none or it is unreadable)."""
    try:
        return json.loads((Path(folder) / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_status(folder: str | os.PathLike) -> str | None:
    """finished | interrupted | failed | running, or None for a folder that is not a run.

    A `running` record whose process no longer exists on this host is `interrupted` (it was killed).
    """
    record = read_run(folder)
    if record is None:
        return None
    status = record.get("status")
    if status == "running" and process_gone(record):
        return "interrupted"
    return status


def stage_finished(folder: str | os.PathLike) -> bool:
    """Whether a probe or attribution folder's `summary.json` says `finished` (False: missing or torn)."""
    try:
        summary = json.loads((Path(folder) / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return summary.get("status") == "finished"


def process_gone(record: dict[str, Any]) -> bool:
    """Whether the process a record names (`host`, `pid`) is gone: on this host and not running. A process
    on another host cannot be checked, so it is never reported gone."""
    if record.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return False
    return False


def peak_memory() -> dict[str, float]:
    """Peak resident memory of this process (MiB) and, on CUDA, peak allocated GPU memory (MiB)."""
    out: dict[str, float] = {}
    try:
        import resource

        scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
        out["cpu_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)
    except ImportError:
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        out["cuda_allocated_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def trained_epochs(folder: str | Path) -> int | None:
    """How many epochs the weights a finished run saved were trained for (train.json): the kept epoch
    (`train.keep_best`), else the epochs run; None without train.json."""
    try:
        summary = json.loads((Path(folder) / "train.json").read_text())
    except (OSError, ValueError):
        return None
    return summary.get("kept_epoch") or summary.get("epochs_run")
