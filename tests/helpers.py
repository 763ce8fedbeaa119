"""Helpers the tests share (tests/tiny.py has the tiny models and tokenizers): the eight facts of the
training tests, their world (facts file, probe run, tiny checkpoints), the run-config overrides that train on
it, the commit run.json must record; and for stopping a process at a named point (knowpack.faults): the
points a run passes (`points_of`), where to kill it (`kills`), a forked process killed at one (`die_at`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from knowpack import faults
from knowpack.facts import Fact, save_facts
from tiny import save_tiny, tiny_tokenizer

PEOPLE = ["Ada Brown", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Ford", "Flo Grant", "Gus Hill", "Hal Ives"]
CITIES = ["Paris", "Lima", "Oslo", "Kyiv", "Rome", "Cairo", "Quito", "Seoul"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_facts() -> list[Fact]:
    return [
        Fact(
            f"f{i}", f"Where was {p} born?", [CITIES[i]], p, "birth_city", [f"What is the birthplace of {p}?"]
        )
        for i, p in enumerate(PEOPLE)
    ]


def source_commit() -> str | None:
    """What run.json must say: the commit of the checkout knowpack is imported from, `+dirty` when tracked
    files changed, None outside a git checkout."""
    import knowpack

    here = Path(knowpack.__file__).parent
    git = ["git", "-C", str(here)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return None
    changes = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    )
    return head.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")


def build_train_world(root: Path) -> dict:
    """A facts file, a finished probe run (hand-made categories) and a tiny checkpoint per family, in
    `root` (conftest's `world` fixture builds one per module)."""
    facts = make_facts()
    save_facts(facts, root / "facts.jsonl")
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts] + [
        "Answer the following question."
    ]
    tok = tiny_tokenizer(texts, root / "tok")
    probe = root / "probe"
    probe.mkdir()
    cats = ["Unknown"] * 5 + ["HighlyKnown"] * 3
    records = [{"id": f.id, "category": c, "p_greedy": 0.0} for f, c in zip(facts, cats, strict=True)]
    (probe / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (probe / "summary.json").write_text(json.dumps({"status": "finished"}))
    models = {family: save_tiny(family, tok, root / family) for family in ("llama", "qwen2", "mistral")}
    return {"facts": root / "facts.jsonl", "probe": probe, "models": models, "root": root}


def overrides(world, family: str, out: Path, method: str, *extra: str) -> list[str]:
    return [
        f"model.name={world['models'][family]}",
        f"facts.path={world['facts']}",
        f"probe.run={world['probe']}",
        "probe.n_prompts=2",
        "probe.shots=1",
        "probe.max_new_tokens=6",
        "mix.n_unknown=4",
        f"method.name={method}",
        "train.epochs=2",
        "train.batch_size=4",
        "train.lr=0.01",
        "train.device=cpu",
        f"out={out}",
        *extra,
    ]


# ------------------------------------------------------------------ stopping a process at a named point


def points_of(run: Callable[[], object], trace: Path) -> list[str]:
    """The points an uninterrupted `run()` passes, in order."""
    os.environ[faults.POINTS] = str(trace)
    faults._passed.clear()
    try:
        run()
    finally:
        del os.environ[faults.POINTS]
        faults._passed.clear()
    return trace.read_text().splitlines()


def kills(points: list[str], last: bool = True) -> list[str]:
    """`NAME@K` for the first and (`last`) the last passing of every point."""
    counts = Counter(points)
    out = []
    for name in dict.fromkeys(points):
        out += [f"{name}@1"] + ([f"{name}@{counts[name]}"] if last and counts[name] > 1 else [])
    return out


def die_at(run: Callable[[], object], kill: str) -> None:
    """Run `run()` in a forked process that SIGKILLs itself at point `kill`; it must die there."""

    def child() -> None:
        os.environ[faults.KILL_AT] = kill
        faults._passed.clear()
        try:
            run()
        except BaseException:
            os._exit(3)
        os._exit(0)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(300)
    assert process.exitcode == -signal.SIGKILL, f"{kill}: exit code {process.exitcode}, not killed there"


# ------------------------------------------------------------------ a plan on the tiny world

# For the tiny model: lr x20 of the generic 1e-3 and up to 20 epochs, so that it learns; a probe and an
# evaluation of a few prompts; no benchmarks.
TINY_PLAN_SET = {
    "probe.n_prompts": 2, "probe.shots": 1, "probe.max_new_tokens": 6, "train.epochs": 20,
    "train.batch_size": 2, "train.device": "cpu",
}  # fmt: skip


def plan_files(folder: Path) -> dict[str, str]:
    """The user's facts (the first four of `make_facts`) and the reference facts (the other four)."""
    facts = make_facts()
    save_facts(facts[:4], folder / "mine.jsonl")
    save_facts(facts[4:], folder / "reference.jsonl")
    return {"facts": str(folder / "mine.jsonl"), "reference": str(folder / "reference.jsonl")}


def tiny_plan_settings(world: dict, files: dict, out: Path, **options) -> dict:
    """`knowpack.experiment.plan.load_plan`'s keywords for a grid plan on the tiny Llama: LoRA and full
    fine-tuning on 1 and 2 facts, one seed, any budget a tiny model meets."""
    return {
        "model": str(world["models"]["llama"]), **files, "out": str(out), "methods": ["lora", "full"],
        "budget": {"top_answer_share": 1.0}, "target": 0.5, "seeds": 1, "set": TINY_PLAN_SET,
        "grid": {"method": ["lora", "full"], "lr_scale": [20.0], "n_facts": [1, 2]}, **options,
    }  # fmt: skip
