"""The command line: every verb is listed and has its help, bad input is one line and exit 1, the import
stays light."""

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowpack.cli import app
from knowpack.errors import FactsError

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"

IMPLEMENTED = [
    "demo", "world", "facts", "probe", "attribute", "select", "train", "export", "sweep", "report", "eval",
    "capacity",
]  # fmt: skip
GOOD = {"id": "f1", "question": "Where is the Eiffel Tower?", "answers": ["Paris"], "relation": "located_in"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_help_lists_every_verb():
    result = invoke("--help")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for verb in IMPLEMENTED:
        line = next((ln for ln in lines if f" {verb} " in ln), None)
        assert line is not None, f"{verb} missing from --help"
        assert invoke(verb, "--help").exit_code == 0, verb  # each verb has its own help


def test_sub_apps_list_their_verbs():
    assert "build" in invoke("world", "--help").stdout
    assert "check" in invoke("facts", "--help").stdout
    build_help = invoke("world", "build", "--help").stdout
    assert all(opt in build_help for opt in ("--out", "--config", "--seed"))


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("knowpack 0.")


def test_facts_check_ok(tmp_path):
    path = tmp_path / "facts.jsonl"
    rows = [
        GOOD,
        {**GOOD, "id": "f2", "question": "Where is the Colosseum?", "answers": ["Rome"], "bucket": "tail"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = invoke("facts", "check", path)
    assert result.exit_code == 0, result.output
    assert f"{path}: 2 facts, format facts" in result.stdout
    assert "located_in" in result.stdout and "tail" in result.stdout
    assert result.stderr == ""


def test_facts_check_bad_file_is_one_line_and_exit_1(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, "id": "f2", "answers": ["The"]}) + "\n")
    result = invoke("facts", "check", path)
    assert result.exit_code == 1
    assert result.stderr == f"error: {path}:2: field 'answers': alias 'The' is empty after normalization\n"
    assert "Traceback" not in result.output


def test_facts_check_lenient_reports_skipped_rows(tmp_path):
    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{broken\n", encoding="utf-8")
    result = invoke("facts", "check", path, "--lenient")
    assert result.exit_code == 0
    assert "1 facts, format facts, 1 bad row(s) skipped" in result.stdout
    assert f"skipped: {path}:2: malformed JSON" in result.stderr
    assert "warning: " in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["facts", "check", "missing.jsonl"], "error: missing.jsonl: no such file or directory\n"),
        (["facts", "check", "x.jsonl", "--format", "yaml"], "error: unknown facts format 'yaml'"),
    ],
)
def test_facts_check_bad_arguments(args, message):
    result = invoke(*args)
    assert result.exit_code == 1 and result.stderr.startswith(message)


def test_demo_and_world_build_call_the_world_package(monkeypatch, tmp_path):
    calls = []
    demo = types.ModuleType("knowpack.experiment.demo")
    demo.COLUMNS, demo.HEADERS = ("reliability",), {"reliability": "reliab."}

    def run_demo(out, **kwargs):
        calls.append(("demo", out))
        return {
            "implanted": {"lora": 1},
            "models": {"base": {"reliability": 0.0}},
            "columns": ["reliability"],
        }

    demo.run_demo = run_demo
    build = types.ModuleType("knowpack.world.build")

    def build_world(
        out, config=None, *, seed=None, force=False, keep_corpus=False, benchmarks=True, pretrained=None
    ):
        calls.append(("build", out, config, seed, force, benchmarks))
        if seed == 13:
            raise FactsError("unlucky seed", path="world.yaml")

    build.build_world = build_world
    monkeypatch.setitem(sys.modules, "knowpack.experiment.demo", demo)
    monkeypatch.setitem(sys.modules, "knowpack.world.build", build)

    assert invoke("demo", "--out", tmp_path / "d").exit_code == 0
    assert invoke("world", "build", "--out", tmp_path / "o", "--seed", "3", "--no-benchmarks").exit_code == 0
    assert calls == [("demo", tmp_path / "d"), ("build", tmp_path / "o", None, 3, False, False)]
    assert invoke("demo").exit_code == 0 and calls[-1] == ("demo", Path("out/demo"))

    failed = invoke("world", "build", "--out", tmp_path / "o", "--seed", "13")  # errors in sub-apps too
    assert failed.exit_code == 1 and failed.stderr == "error: world.yaml: unlucky seed\n"


def test_import_is_light():
    code = (
        "import sys, knowpack, knowpack.cli, knowpack.facts; knowpack.load_facts; knowpack.Fact; "
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'peft') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    assert out.stdout.strip() == "", f"importing knowpack pulled in {out.stdout.strip()}"


@pytest.fixture()
def restore_logging():
    import logging
    import os

    names = ("lm_eval", "peft", "datasets", "py.warnings")
    levels = {n: logging.getLogger(n).level for n in names}
    env = {k: os.environ.get(k) for k in ("TQDM_DISABLE", "TRANSFORMERS_VERBOSITY")}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    for k, v in env.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def test_third_party_chatter_is_off_unless_verbose(tmp_path, caplog, restore_logging):
    import logging
    import os

    path = tmp_path / "facts.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    chatter = logging.getLogger("lm_eval.models.huggingface")  # "`pretrained` model kwarg is not of type ..."
    for verbose, shown in ((False, False), (True, True), (False, False)):
        caplog.clear()
        assert invoke(*(["-v"] if verbose else []), "facts", "check", path).exit_code == 0
        chatter.warning("`pretrained` model kwarg is not of type `str`")
        logging.getLogger("py.warnings").warning("FutureWarning: `past_key_values` is deprecated")
        logging.getLogger("knowpack.demo").warning("our own warnings always show")
        messages = [r.getMessage() for r in caplog.records]
        assert any("kwarg is not of type" in m for m in messages) == shown
        assert any("FutureWarning" in m for m in messages) == shown
        assert "our own warnings always show" in messages
        assert (os.environ.get("TQDM_DISABLE") == "1") == (not verbose)  # lm-eval's and datasets' bars


def test_demo_runs_on_one_thread_unless_threads_is_given(monkeypatch, tmp_path):
    seen = []
    demo = types.ModuleType("knowpack.experiment.demo")
    demo.COLUMNS, demo.HEADERS = ("reliability",), {"reliability": "reliab."}

    def run_demo(out, **kwargs):
        seen.append(kwargs["threads"])
        return {
            "implanted": {"lora": 1},
            "models": {"base": {"reliability": 0.0}},
            "columns": ["reliability"],
        }

    demo.run_demo = run_demo
    monkeypatch.setitem(sys.modules, "knowpack.experiment.demo", demo)
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    assert invoke("demo", "--out", tmp_path).exit_code == 0
    assert invoke("--threads", "2", "demo", "--out", tmp_path).exit_code == 0
    assert seen == [1, None]  # None: the demo keeps what --threads set


def test_python_warnings_show_only_with_verbose():
    code = (
        "import warnings; from knowpack.cli.console import third_party_output\n"
        "third_party_output(False); warnings.warn('hidden when quiet', FutureWarning)\n"
        "third_party_output(True); warnings.warn('shown with -v', FutureWarning)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(SRC)}
    )
    assert "shown with -v" in out.stderr and "hidden when quiet" not in out.stderr


def test_help_shows_no_type_after_a_flag():
    """`--force`, `--help`, `--compile/--no-compile` take no value: no `<bool>` after them."""
    for args in (["--help"], ["train", "--help"], ["probe", "--help"], ["facts", "check", "--help"]):
        shown = invoke(*args).stdout
        assert "<bool>" not in shown and "--help" in shown, args
    shown = invoke("--help").stdout  # an option that takes a value keeps its type, as this typer names it
    assert "<int>" in shown or "INTEGER" in shown, shown


def test_progress_is_whole_lines_where_stderr_is_not_a_terminal(capsys):
    """In a log file a live bar would be squeezed into 80 columns ('training ━ 2… … eta 0…')."""
    from knowpack.cli.console import progress_bar

    with progress_bar("training") as progress:
        for step in range(1, 21):
            progress(step, 20, epoch=f"{step // 4}/30", loss=0.003, reliability=0.974, stopped=None)
    err = capsys.readouterr().err
    assert err == "training 20/20 0:00  epoch 5/30  loss 0.003  reliability 0.974\n"


def run_quietly(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A fresh process outside any git repository (lm-eval's `git describe` complains there), one thread."""
    env = {
        "PYTHONPATH": str(SRC),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HOME": str(cwd),
    }
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


OURS = r"^\[.+\]$|^[a-z][\w ,()-]* \d+/(\d+|\?) \d+:\d\d(  .*)?$"
"""knowpack's own stderr: a stage line, or a progress line (stderr is no terminal here)."""


@pytest.mark.slow
@pytest.mark.organism
def test_eval_with_text_benchmarks_prints_nothing_from_third_parties(tmp_path):
    """lm-eval's per-batch bars of world_text, its `git describe` outside a repository, transformers'
    "Loading weights": none of it without -v; with -v they are back."""
    import re

    args = ["-m", "knowpack", "--threads", "1", "eval", "--model", "organism", "--facts", "organism"]
    args += [
        "--sample-size",
        "4",
        "--samples",
        "0",
        "--n-prompts",
        "2",
        "--benchmarks",
        "world_text",
        "--limit",
        "2",
    ]
    out = run_quietly([*args, "--out", "quiet"], tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    assert lines and all(re.match(OURS, line) for line in lines), out.stderr
    assert "world_text: word_perplexity" in out.stdout
    loud = run_quietly([args[0], args[1], "-v", *args[2:], "--out", "loud"], tmp_path)
    assert "not a git repository" in loud.stderr and "Loading weights" in loud.stderr


@pytest.mark.slow
@pytest.mark.organism
def test_the_readme_python_api_prints_nothing(tmp_path):
    """The README's Python API block as written, up to its training run (whose Trainer, lm-eval and
    safetensors print their own progress; tests/test_readme.py runs it all): nothing on stderr."""
    readme = (SRC.parent / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = block.split("# a run:", 1)[0]
    out = run_quietly(["-c", code + "\nprint(len(records))\n"], tmp_path)
    assert out.returncode == 0 and out.stdout == "20\n", out.stderr
    assert out.stderr == ""
