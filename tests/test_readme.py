"""README.md's Python: every ```python block runs, in order, in one namespace (as a reader would type them),
on the bundled organism, in a scratch folder that sees the repository's configs. A block that needs what a
test machine lacks (the real model, a GPU, many training runs) says so on its first line, `# needs: WHAT`, and
is only compiled, and counted; few may. And the public API those blocks use: one level deep, plain functions,
light to import."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SRC

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
NEEDS = re.compile(r"^# needs: (.+)$")
MAX_SKIPPED = 2
"""The most README blocks that may be skipped for what they need."""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line, code) of every ```python block of a Markdown text."""
    return [
        (text[: m.start()].count("\n") + 2, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M)
    ]


def test_the_blocks_are_found_and_few_are_skipped():
    blocks = python_blocks(README.read_text())
    skipped = [line for line, code in blocks if NEEDS.match(code.splitlines()[0])]
    assert len(blocks) >= 3 and len(skipped) <= MAX_SKIPPED, skipped


@pytest.mark.slow
def test_every_python_block_of_the_readme_runs(tmp_path, monkeypatch, one_thread):
    """Each block's code executes without error; the skipped ones are named in the test's output."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    skipped = []
    for line, code in python_blocks(README.read_text()):
        compiled = compile(code, f"README.md:{line}", "exec")  # a skipped block is still valid Python
        needs = NEEDS.match(code.splitlines()[0])
        if needs:
            skipped.append(f"README.md:{line} (needs {needs.group(1)})")
            continue
        try:
            exec(compiled, namespace)
        except Exception as e:
            raise AssertionError(f"README.md:{line}: {type(e).__name__}: {e}") from e
    print("skipped:", *skipped, sep="\n  ")
    assert len(skipped) <= MAX_SKIPPED


def test_the_public_api_is_plain_functions_one_level_deep_and_light():
    """`import knowpack` loads no torch; every public name is there, and `knowpack.probe`, `train`,
    `evaluate` and `report` are the functions even after their subpackages are imported (Python binds a
    loaded subpackage to its parent's name)."""
    code = """
import json, sys
import knowpack
light = "torch" not in sys.modules and "transformers" not in sys.modules
import knowpack.probe.scoring, knowpack.train.config, knowpack.evaluate.metrics, knowpack.report.report
names = {name: type(getattr(knowpack, name)).__name__ for name in knowpack.__all__}
print(json.dumps({"light": light, "names": names}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    got = json.loads(out.stdout)
    assert got["light"]
    functions = "load_model load_facts probe attribute select train evaluate sweep capacity report export"
    assert {name: got["names"][name] for name in functions.split()} == dict.fromkeys(
        functions.split(), "function"
    )
    assert {got["names"][name] for name in ("RunConfig", "ProbeConfig", "EvalConfig")} == {"type"}
