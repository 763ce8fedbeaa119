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

import torch
import yaml

from knowpack import faults
from knowpack.facts import Fact, save_facts
from knowpack.io import remove_temps
from knowpack.probe.prompts import encode
from knowpack.runs import end_run, start_run
from tiny import save_tiny, tiny_tokenizer

PEOPLE = ["Ada Brown", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Ford", "Flo Grant", "Gus Hill", "Hal Ives"]
CITIES = ["Paris", "Lima", "Oslo", "Kyiv", "Rome", "Cairo", "Quito", "Seoul"]
FIRMS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


def make_facts() -> list[Fact]:
    return [
        Fact(
            f"f{i}", f"Where was {p} born?", [CITIES[i]], p, "birth_city", [f"What is the birthplace of {p}?"]
        )
        for i, p in enumerate(PEOPLE)
    ]


def engine_facts() -> list[Fact]:
    """The probe engine's tests' facts: each person's birth city and employer (no paraphrases)."""
    facts = []
    for i, person in enumerate(PEOPLE):
        facts.append(Fact(f"city-{i}", f"Where was {person} born?", [CITIES[i]], person, "birth_city"))
        facts.append(Fact(f"firm-{i}", f"Who employs {person}?", [FIRMS[i]], person, "employer"))
    return facts


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
        "model.device=cpu",
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
    "train.batch_size": 2, "model.device": "cpu",
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


# ------------------------------------------------------------------ result files made by hand

CATS = ["HighlyKnown", "MaybeKnown", "Unknown"]


def entry(value, base):
    return {
        "metric": "x",
        "value": value,
        "base": base,
        "delta": None if None in (value, base) else value - base,
    }


def make_run(
    folder: Path, method: str, n: int, seed: int, reliability: float, status: str = "finished"
) -> None:
    folder.mkdir(parents=True)
    config = {
        "model": {"name": "organism"},
        "mix": {"n_unknown": n, "add": "none", "k": 0, "seed": seed},
        "method": {"name": method, **({"r": 8} if method == "lora" else {"quota": 10})},
        "train": {"lr": 0.005},
        "out": str(folder),
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "run.json").write_text(json.dumps({"status": status, "host": "elsewhere", "pid": 1}))
    epochs = [{"epoch": e, "reliability": reliability * e / 3, "loss": 1.0 / e} for e in (1, 2, 3)]
    train = {"reliability": reliability, "epochs": epochs, "epochs_run": 3, "trainable_parameters": 100}
    (folder / "train.json").write_text(json.dumps(train))
    shares = {a: {b: float(a == b) for b in CATS} for a in CATS}
    damage = 0.1 if method == "lora" else 0.02
    ev = {
        "kind": "run",
        "uptake": {"reliability": entry(reliability, 0.0)},
        "knowledge_shift": {
            "untrained": {
                "retention": entry(1 - damage * n / 50, 0.99),
                "negative_shift": entry(damage, 0.01),
                "transitions": {"shares": shares, "base": {"shares": shares}},
            }
        },
        "behaviour": {
            "all": {
                "refusal_rate": entry(0.0, 0.4),
                "unique_share": entry(0.05, 0.07),
                "explosion": entry(2, 0),
            }
        },
        "benchmarks": {"tasks": {"world_mc": {"acc": entry(1 - damage, 1.0)}}},
    }
    (folder / "eval.json").write_text(json.dumps(ev))


def build_fake_base(tmp_path: Path) -> Path:
    """(conftest's `fake_base` fixture) A run config whose probe run is hand-made: 20 Unknown and 10
    HighlyKnown facts (no model is loaded)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    cats = ["Unknown"] * 20 + ["HighlyKnown"] * 10
    records = [{"id": f"f{i}", "category": c, "p_greedy": 0.0} for i, c in enumerate(cats)]
    (probe / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (probe / "summary.json").write_text(json.dumps({"status": "finished"}))
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": "tiny"}, "probe": {"run": str(probe)}}))
    return path


def write_capacity(tmp_path: Path, base: Path, **extra) -> Path:
    data = {
        "base": str(base),
        "target": {"reliability": 0.9},
        "seeds": [0, 1],
        "max": 50,
        "out": str(tmp_path / "out"),
        **extra,
    }
    path = tmp_path / "capacity.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fake_point(calls: list, reliability, retention=lambda n: 1.0):
    """A `run_point` that trains nothing: a finished run.json and an eval.json with the given numbers."""

    def run_point(cell) -> None:
        calls.append(cell.name)
        n, seed = cell.config.mix.n_unknown, cell.config.mix.seed
        assert cell.config.train.seed == seed and cell.config.out == str(cell.folder)
        remove_temps(cell.folder)  # as train() does: what a run killed in this folder left
        end_run(cell.folder, start_run(cell.folder, "train"), "finished")
        ev = {
            "uptake": {"reliability": {"value": reliability(n, seed), "base": 0.0}},
            "knowledge_shift": {"untrained": {"retention": {"value": retention(n), "base": 0.98}}},
        }
        (cell.folder / "eval.json").write_text(json.dumps(ev))

    return run_point


# ------------------------------------------------------------------ slow references and small worlds


def loglikelihood(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context), summed over the continuation's tokens (slow reference)."""
    whole = tokenizer(context + continuation)["input_ids"]
    n_context = len(tokenizer(context)["input_ids"])
    with torch.no_grad():
        logp = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(logp[i - 1, whole[i]].item() for i in range(n_context, len(whole)))


def choice_lls(model, tokenizer, context: str, choices: list[str]) -> list[float]:
    return [loglikelihood(model, tokenizer, context, " " + choice) for choice in choices]


def reference_greedy(model, tokenizer, text: str, fmt: str, max_new_tokens: int) -> str:
    """The straightforward way: `model.generate` on the full prompt alone, cut at the first line break."""
    ids = torch.tensor([encode(tokenizer, text, fmt)])
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[0]


def probe_world(n_people: int = 6, relations=("born", "works")) -> list[Fact]:
    facts = []  # (test_probe, test_probe_vllm) relations x people, each a fact with a made-up answer
    for i in range(n_people):
        for r in relations:
            facts.append(Fact(f"{r}-{i}", f"Q {r} person{i}?", [f"ans{r}{i}x"], f"person{i}", r))
    return facts
