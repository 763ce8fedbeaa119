"""knowpack.io's atomic writers: the file appears whole or not at all, and with the user's umask (a teammate
can read results under umask 022, as with a plain `open()`)."""

from __future__ import annotations

import os
import stat

import pytest

from knowpack.io import (
    append_jsonl,
    atomic_dir,
    write_bytes_atomic,
    write_json_atomic,
    write_jsonl_atomic,
    write_text_atomic,
)

WRITERS = {
    "text": lambda p: write_text_atomic(p, "x\n"),
    "bytes": lambda p: write_bytes_atomic(p, b"x"),
    "json": lambda p: write_json_atomic(p, {"a": 1}),
    "jsonl": lambda p: write_jsonl_atomic(p, [{"a": 1}]),
    "append": lambda p: append_jsonl(p, [{"a": 1}]),
}


@pytest.fixture()
def umask():
    def set_umask(value: int) -> None:
        os.umask(value)

    before = os.umask(0o022)
    os.umask(before)
    yield set_umask
    os.umask(before)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_get_the_umask_like_a_plain_open(tmp_path, umask, writer, mask, expected):
    umask(mask)
    plain = tmp_path / "plain"
    plain.write_text("x")
    path = tmp_path / "result.json"
    WRITERS[writer](path)
    assert mode(path) == mode(plain) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "result.json"]  # no temporary left


def test_a_replaced_file_gets_the_umask_too(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "summary.json"
    path.write_text("old")
    path.chmod(0o600)
    write_json_atomic(path, {"new": True})
    assert mode(path) == 0o644 and path.read_text() == '{\n  "new": true\n}\n'


def test_atomic_dir_gets_the_umask_and_replaces_the_old_folder(tmp_path, umask):
    umask(0o022)
    write_text_atomic(tmp_path / "a" / "b" / "c.txt", "folders made on the way too")
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o755
    target = tmp_path / "loki"
    target.mkdir()
    (target / "old").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "selection.json").write_text("{}")
    assert mode(target) == 0o755 and [p.name for p in target.iterdir()] == ["selection.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "loki"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "bad.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []
