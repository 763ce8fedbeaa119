"""The bundled lm-eval task folders (the organism's world tasks, the geo tasks) are committed next to the code
that writes them: their code and YAMLs must be exactly what that one writer produces
(`knowpack.evaluate.task_folder`), so that no second copy of a template can drift."""

from __future__ import annotations

import pytest

from knowpack.evaluate.task_folder import Loader, utils_py, write_task_folder
from knowpack.paths import geo_dir, organism_dir
from knowpack.real.geo import task_files as geo_task_files
from knowpack.world.tasks import task_files as world_task_files

FOLDERS = {
    "organism": (organism_dir, world_task_files, "knowpack world tasks"),
    "geo": (geo_dir, geo_task_files, "python -m knowpack.real.geo"),
}
"""Each bundled folder: where it is, what its writer writes beside the data, the command that rewrites it."""


@pytest.mark.parametrize("name", sorted(FOLDERS))
def test_the_committed_task_code_and_yamls_are_what_the_writer_writes(name):
    folder, task_files, command = FOLDERS[name]
    tasks = folder() / "tasks"
    expected = task_files()
    committed = {p.name for p in tasks.iterdir() if p.is_file() and p.suffix != ".jsonl"}
    assert committed == set(expected)  # no file the writer does not write, none missing
    stale = [f for f, text in expected.items() if (tasks / f).read_text(encoding="utf-8") != text]
    assert stale == [], (
        f"regenerate {tasks} ({', '.join(stale)}): python -m knowpack.world / knowpack.real.geo"
    )


def test_a_written_folder_loads_its_splits(tmp_path):
    """The one writer's utils.py reads each split from next to itself, with or without a few-shot split."""
    pytest.importorskip("datasets")
    import importlib.util

    rows = {"t": [{"q": "a"}, {"q": "b"}], "t_dev": [{"q": "c"}], "u": [{"q": "d"}]}
    files = {"utils.py": utils_py("test", "tests", [Loader("t", "t"), Loader("u", "u", dev=False)])}
    out = write_task_folder(tmp_path / "tasks", rows, files, compact=True)
    assert (out / "t.jsonl").read_text() == '{"q":"a"}\n{"q":"b"}\n'
    spec = importlib.util.spec_from_file_location("task_utils", out / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    assert utils.load_t(version=1.0)["test"]["q"] == ["a", "b"] and utils.load_t()["dev"]["q"] == ["c"]
    assert set(utils.load_u()) == {"test"}


def test_the_organism_task_folder_is_rebuilt_byte_for_byte(tmp_path):
    """Data included: the world and its items are a pure function of the build's config (`knowpack world
    tasks`); the geo folder's rebuild is tests/test_geo_facts.py's."""
    from knowpack.world.build import write_world_tasks

    built = write_world_tasks(organism_dir(), tmp_path / "tasks")
    shipped = organism_dir() / "tasks"
    names = sorted(p.name for p in shipped.iterdir() if p.is_file())
    assert names == sorted(p.name for p in built.iterdir())
    assert [n for n in names if (built / n).read_bytes() != (shipped / n).read_bytes()] == []
