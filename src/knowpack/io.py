"""Small file helpers every stage shares: atomic writes (no reader sees a half-written file or folder),
JSON and JSON-lines files.

Files and folders are created with the user's umask, as a plain `open()` / `mkdir` would (0644 / 0755 under
umask 022), so results can be read by teammates; `tempfile.mkstemp` / `mkdtemp` would make them private.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and `os.replace`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same folder and `os.replace`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path, lambda name: os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of `path`; on success it replaces `path` (an earlier
    folder there is removed), on error it is removed and `path` is left as it was. No reader sees a
    half-written folder.

        with atomic_dir(run / "loki") as tmp:
            (tmp / "selection.json").write_text(...)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _, tmp = _create_temp(path, lambda name: os.mkdir(name, 0o777))
    try:
        yield tmp
        if path.exists():  # two renames: a folder cannot be os.replace'd onto a non-empty one
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: str | os.PathLike, data: Any, **dumps: Any) -> Path:
    """`data` as indented JSON (UTF-8 kept as is) written atomically; `dumps` go to `json.dumps`."""
    options = {"indent": 2, "ensure_ascii": False, **dumps}
    return write_text_atomic(path, json.dumps(data, **options) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """One JSON object a line, written atomically."""
    return write_text_atomic(path, _jsonl(rows))


def append_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> None:
    """Append JSON lines and fsync: after a kill the file holds every appended batch and at most one torn
    last line (readers cut it off)."""
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        f.write(_jsonl(rows))
        f.flush()
        os.fsync(f.fileno())


def _create_temp(path: Path, create) -> tuple[Any, Path]:
    """`create(name)` on a fresh hidden sibling name of `path` (retried while the name is taken); the mode
    passed to `os.open` / `os.mkdir` goes through the umask like any other file's."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return create(tmp), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def _jsonl(rows: Iterable[Any]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
