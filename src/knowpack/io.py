"""Small file helpers every stage shares: atomic writes (no reader sees a half-written file or folder),
JSON and JSON-lines files, tensors, and the removal of what a killed write left behind.

Files and folders are created with the user's umask, as a plain `open()` / `mkdir` would (0644 / 0755 under
umask 022), so results can be read by teammates; `tempfile.mkstemp` / `mkdtemp` would make them private, and
so does safetensors' `save_file` (0600): tensors go through `save_tensors`, and folders another library wrote
(`save_pretrained`) through `honour_umask`.

Every temporary name is a hidden sibling of its target (`.NAME.<hex>.tmp`, `.NAME.old-<pid>`,
`.NAME.removing`), so that `remove_temps` can clear a folder of what a killed process left there.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from knowpack.faults import point


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
        point(f"write {path.name}")
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
        honour_umask(tmp)
        point(f"folder {path.name}")
        if path.exists():  # two renames: a folder cannot be os.replace'd onto a non-empty one
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            point(f"folder {path.name}: old moved")
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
    text = _jsonl(rows)
    with open(path, "a", encoding="utf-8", newline="\n") as f:
        f.write(text[: len(text) // 2])
        f.flush()
        point(f"append {Path(path).name}")  # a kill here leaves a torn last line
        f.write(text[len(text) // 2 :])
        f.flush()
        os.fsync(f.fileno())


def save_tensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """A safetensors file written atomically with the umask's mode (safetensors' `save_file` makes 0600)."""
    from safetensors.torch import save

    return write_bytes_atomic(path, save(tensors, metadata=metadata))


def honour_umask(folder: str | os.PathLike) -> None:
    """Give every file and folder under `folder` (itself included) the mode a plain `open()` / `mkdir` would
    have: libraries that write through private temporary files (safetensors) leave 0600 behind."""
    mask = os.umask(0)
    os.umask(mask)
    root = Path(folder)
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


_TEMP = re.compile(r"^\..+\.([0-9a-f]{8}\.tmp|tmp|old-\d+|removing)$")


def is_temp(name: str) -> bool:
    """Whether a file or folder name is one of the temporary names a killed write may leave."""
    return bool(_TEMP.match(name))


def remove_temps(folder: str | os.PathLike, of: Iterable[str] | None = None) -> list[Path]:
    """Remove what killed writes left in `folder` and below (the hidden temporary names of this module and
    of `remove_tree`); returns what went. Only for what this process owns: a run's folder, or (`of`) the
    temporaries of these file names in `folder` alone (a shard's, beside other shards' in one folder)."""
    gone: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return gone
    if of is None:
        found = sorted(root.rglob(".*"), key=lambda p: len(p.parts))
    else:
        names = set(of)
        found = [p for p in root.glob(".*") if any(p.name.startswith(f".{n}.") for n in names)]
    for path in found:
        if is_temp(path.name) and (path.exists() or path.is_symlink()):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            gone.append(path)
    return gone


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder so that a kill midway leaves either the whole folder or nothing under its name: it is
    renamed to a hidden `.NAME.removing` first (which `remove_temps` finishes off)."""
    path = Path(path)
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.removing")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    point(f"remove {path.name}")
    shutil.rmtree(doomed)


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
