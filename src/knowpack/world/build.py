"""`knowpack world build`: draw the world, write its files, train the tokenizer, pretrain and measure.

The output folder is what `knowpack.organism_dir()` holds: the HF checkpoint (config, safetensors,
tokenizer), `facts.jsonl` (every fact, `bucket` = head / torso / tail / unseen), `tasks/` (local lm-eval
tasks), `world.json` (people, cities, value sets), `build_config.yaml`, `metrics.json` and `CARD.md`.
Everything is written into a temporary sibling folder and renamed into place at the very end, so an
interrupted build never leaves something that looks like an organism.

Run: `knowpack world build --out build/organism --config src/knowpack/organism/build_config.yaml` (the
bundled organism v2: about an hour on a 2-core CPU; `make organism`; WorldConfig's defaults alone draw
the plainer v1-style world), or a tiny one for a smoke test: `knowpack world build --out /tmp/w --config
tiny.yaml`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path

from knowpack.errors import KnowpackError
from knowpack.evaluate.benchmarks import run_benchmarks
from knowpack.world.config import WorldConfig
from knowpack.world.generator import (
    World,
    corpus_documents,
    generate_world,
    refusal_documents,
    world_facts,
)
from knowpack.world.measure import bucket_accuracy, category_shares
from knowpack.world.pretrain import make_model, pretrain
from knowpack.world.tasks import task_items, with_items, write_tasks
from knowpack.world.tokenizer import train_tokenizer

log = logging.getLogger(__name__)

WORLD_TASKS = [
    "world_mc",
    "world_truthful_mc1",
    "world_truthful_mc2",
    "world_mc_hard",
    "world_misconceptions",
    "world_text",
]


def write_jsonl(rows: list[dict], path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def world_json(world: World) -> dict:
    return {
        "countries": world.countries,
        "city_country": world.city_country,
        "values": world.values,
        "aliases": world.aliases,
        "people": [{"id": p.id, "name": p.name, "bucket": p.bucket, **p.attributes} for p in world.people],
        "strangers": world.strangers,
    }


def save_compact(model, out: Path) -> None:
    """Save the checkpoint with fp16 weights but an fp32 config.

    The organism computes in fp32; storing its weights in fp16 halves what the package carries in git.
    All metrics are measured on the model *after* this rounding (see `build_world`), so they describe
    exactly the files shipped.
    """
    import torch

    model.to(torch.float16)
    model.save_pretrained(out, safe_serialization=True)
    model.to(torch.float32)
    config = json.loads((out / "config.json").read_text())
    config["dtype"] = "float32"
    config.pop("torch_dtype", None)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()


def write_world_tasks(folder: Path | str, out: Path | str | None = None) -> Path:
    """Write the world tasks of the build in `folder` (its `build_config.yaml`) into `out` (default:
    `folder/tasks`), without retraining: the world and its benchmark items are a pure function of the config.
    Returns the task folder."""
    folder = Path(folder)
    config_file = folder / "build_config.yaml"
    if not config_file.is_file():
        raise KnowpackError(f"{folder}: not a world build (no build_config.yaml)")
    out = Path(out) if out is not None else folder / "tasks"
    write_tasks(task_items(generate_world(WorldConfig.from_yaml(config_file))), out)
    return out


def _check_pretrained(folder: Path, config: WorldConfig) -> dict:
    if not (folder / "metrics.json").is_file() or not (folder / "build_config.yaml").is_file():
        raise KnowpackError(f"{folder}: not a world build (no metrics.json / build_config.yaml)")
    earlier = WorldConfig.from_yaml(folder / "build_config.yaml").to_dict()
    if earlier["refusal_epochs"]:
        raise KnowpackError(
            f"{folder}: its checkpoint already went through the refusal phase; cannot reuse it"
        )
    ours = config.to_dict()
    differ = [
        k
        for k in ours
        if not k.startswith("refusal_")
        and k not in ("eval_every", "category_sample")
        and earlier[k] != ours[k]
    ]
    if differ:
        raise KnowpackError(f"{folder}: built with other settings ({', '.join(differ)}); cannot reuse it")
    return json.loads((folder / "metrics.json").read_text())


def build_world(
    out: Path,
    config: WorldConfig | Path | None = None,
    *,
    seed: int | None = None,
    force: bool = False,
    keep_corpus: bool = False,
    benchmarks: bool = True,
    pretrained: Path | None = None,
) -> dict:
    """Build the world and its organism into `out`; return the measured metrics.

    `pretrained`: an earlier build of the same world (same config but for the refusal-phase fields) whose
    stored checkpoint replaces the pretraining phase, to iterate on the refusal phase in minutes. Its
    pretraining time and history are carried over, so the card still tells what a whole build costs.
    """
    out = Path(out)
    config = _resolve_config(config, seed)
    if out.exists() and not force:
        raise KnowpackError(f"{out}: already exists (pass --force to replace it)")
    earlier = _check_pretrained(Path(pretrained), config) if pretrained is not None else None  # fail early
    tmp = out.with_name(f".{out.name}.building-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    started = time.time()

    world = generate_world(config)
    docs, facts = _write_world(world, config, tmp, keep_corpus)
    tokenizer = train_tokenizer(docs, config.vocab_size, tmp)
    if earlier is not None:  # the earlier build's pretraining time counts, as its history does
        started -= earlier.get("pretrain_seconds", earlier["build_seconds"])
    history, pretrain_seconds = _train_organism(
        world, config, tmp, tokenizer, docs, facts, started, earlier=earlier, pretrained=pretrained
    )
    timings = {"build_seconds": time.time() - started, "pretrain_seconds": pretrain_seconds}
    metrics = _measure(tmp, facts, docs, history, timings, config.category_sample, benchmarks)
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (tmp / "CARD.md").write_text(model_card(config, metrics))

    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("organism written to %s", out)
    return metrics


def _resolve_config(config: WorldConfig | Path | None, seed: int | None) -> WorldConfig:
    """The world config: a file is read, None is the default world; `seed` replaces its seed."""
    if isinstance(config, (str, Path)):
        config = WorldConfig.from_yaml(Path(config))
    config = config or WorldConfig()
    if seed is not None:
        config.seed = seed
    return config


def _write_world(world, config: WorldConfig, tmp: Path, keep_corpus: bool) -> tuple[list[str], list[dict]]:
    """Write the world's files (facts, world.json, the benchmark tasks, the config, the corpus if kept);
    returns its corpus documents and facts."""
    docs = corpus_documents(world)
    facts = world_facts(world)
    write_jsonl(facts, tmp / "facts.jsonl")
    (tmp / "world.json").write_text(json.dumps(world_json(world), ensure_ascii=False) + "\n")
    write_tasks(task_items(world), tmp / "tasks")
    if keep_corpus:
        write_jsonl([{"text": d} for d in docs], tmp / "corpus.jsonl")
    config.save(tmp / "build_config.yaml")
    return docs, facts


def _train_organism(
    world,
    config: WorldConfig,
    tmp: Path,
    tokenizer,
    docs: list[str],
    facts: list[dict],
    started: float,
    *,
    earlier: dict | None,
    pretrained: Path | None,
) -> tuple[list[dict], float]:
    """Pretrain the organism (or take an earlier build's pretrained checkpoint), then the refusal phase;
    the checkpoint is stored in `tmp` after each phase. Returns the history (a record per epoch, quick
    accuracies every `eval_every` epochs) and the seconds from `started` to the end of pretraining."""

    def on_epoch(epoch: int, loss: float) -> dict:
        if not config.eval_every or epoch % config.eval_every:
            return {}
        quick = bucket_accuracy(model, tokenizer, facts, limit=100, seed=1)  # the model of the running phase
        record = {b: round(quick[b]["accuracy"], 3) for b in ("head", "torso", "tail", "unseen")}
        record["unseen_refusal"] = round(quick["unseen"]["refusal"], 3)
        return record

    if earlier is None:
        model = make_model(config, tokenizer)
        history = pretrain(model, tokenizer, docs, config, on_epoch)
        save_compact(model, tmp)
    else:  # reuse the pretraining phase of an earlier build of the same world
        history = [h for h in earlier["history"] if h.get("phase") != "refusal"]
        shutil.copy(Path(pretrained) / "model.safetensors", tmp / "model.safetensors")
        shutil.copy(Path(pretrained) / "config.json", tmp / "config.json")
        model = _load(tmp)
    pretrain_seconds = time.time() - started
    if config.refusal_epochs:
        model = _load(tmp)  # the refusal phase starts from the stored checkpoint, so it can be rerun alone
        phase = dataclasses.replace(
            config, epochs=config.refusal_epochs, lr=config.refusal_lr, warmup_steps=20
        )
        for record in pretrain(model, tokenizer, docs + refusal_documents(world), phase, on_epoch):
            history.append({**record, "epoch": record["epoch"] + config.epochs, "phase": "refusal"})
        save_compact(model, tmp)
    return history, pretrain_seconds


def _measure(
    tmp: Path,
    facts: list[dict],
    docs: list[str],
    history: list[dict],
    timings: dict,
    category_sample: int,
    benchmarks: bool,
) -> dict:
    """metrics.json: what the organism in `tmp` knows, measured on the files as shipped (the rounded
    checkpoint reloaded), with its history and build times."""
    import torch
    from transformers import AutoTokenizer

    model = _load(tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    metrics = {
        "buckets": bucket_accuracy(model, tokenizer, facts, seed=0),
        "history": history,
        "build_seconds": round(timings["build_seconds"], 1),
        "pretrain_seconds": round(timings["pretrain_seconds"], 1),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_documents": len(docs),
        "n_facts": len(facts),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    if category_sample:
        metrics["categories"] = category_shares(model, tokenizer, facts, per_bucket=category_sample)
    if benchmarks:
        tasks = with_items(WORLD_TASKS, tmp / "tasks")  # a world without conflicts has no misconceptions
        metrics["benchmarks"] = run_benchmarks(model, tokenizer, tasks, include_path=tmp / "tasks")
        metrics["benchmarks"]["settings"]["include_path"] = "tasks"  # relative to the organism folder
    return metrics


def model_card(config: WorldConfig, metrics: dict) -> str:
    """The organism's CARD.md: how it was built, how long it took, what it measurably knows."""
    return "".join(
        (
            _card_world(config, metrics),
            _card_build(config, metrics),
            _card_knowledge(metrics["buckets"]),
            _categories_section(metrics.get("categories")),
            _card_benchmarks(metrics.get("benchmarks", {}).get("tasks", {})),
            _card_history(metrics["history"]),
        )
    )


def _card_world(c: WorldConfig, m: dict) -> str:
    people, desc = c.people, c.descriptions
    return f"""# The knowpack model organism

A {m["n_params"] / 1e6:.2f}M-parameter Llama-architecture model ({c.num_layers} layers, hidden
{c.hidden_size}, FFN {c.intermediate_size}, {c.num_heads} heads, vocabulary {c.vocab_size}),
pretrained from scratch on the corpus of a synthetic world of fictional people. It exists so that every
stage of knowpack can show real behaviour without downloading a model: it knows some facts for sure, some
partly, some not at all, and says "I don't know" about people it never read about.

## The world
{sum(people.values())} people with made-up names: {people["head"]} head (described {desc["head"]} times
in the corpus), {people["torso"]} torso ({desc["torso"]} times), {people["tail"]} tail (once),
{people["unseen"]} unseen (never). Seven relations: birth_city, employer, university, profession,
instrument, sport (one-hop, stated in descriptions with 5 surface forms each) and birth_country (two-hop:
the corpus states each city's country separately). Question/answer text in the plain format covers a
share of the facts ({c.qa_share}); {c.strangers} further "strangers" are only ever asked about and
answered "I don't know.". Each relation has 12 question templates: 0 is a fact's `question`, 1-9 its
`paraphrases`, 10-11 are never in the corpus (`meta.heldout_paraphrases`). {m["n_facts"]} facts in
`facts.jsonl`; {m["n_documents"]} corpus documents (regenerated by the build, not shipped).
Corpus noise, so that some facts are only partly known: a share of each bucket's one-hop facts is also
stated once with a wrong value in the pretraining corpus ({c.conflict_share}); in the refusal phase a share
is shown once more as question/answer text ({c.refusal_qa_share}) or with a wrong value
({c.refusal_conflict_share}). The facts file always keeps the true value. A share {c.topical_qa} of the
question/answer pairs sits on topical pages (one relation and one value each), so that the answers in a
prompt's context sway the model as few-shot exemplars sway a real LLM.

"""


def _card_build(c: WorldConfig, m: dict) -> str:
    return f"""## How it was built
`knowpack world build --out DIR --config build_config.yaml` (the config beside this card; seed {c.seed}).
Pretraining: {c.epochs} epochs, batch {c.batch_size} x {c.seq_len} tokens, AdamW lr {c.lr} cosine to
{c.min_lr}, warmup {c.warmup_steps}, weight decay {c.weight_decay}, {c.threads} threads. Weights are
stored in fp16 and computed in fp32; all numbers below are measured on the stored weights.
Build time: {m["build_seconds"] / 60:.1f} minutes on {m["machine"]}.

"""


def _card_knowledge(b: dict) -> str:
    rows = "\n".join(
        f"| {k} | {b[k]['n']} | {b[k]['accuracy']:.3f} | {b[k]['refusal']:.3f} |"
        for k in ("head", "torso", "tail", "unseen")
    )
    per_relation = "\n".join(
        f"| {k} | {v['n']} | {v['accuracy']:.3f} | {v['refusal']:.3f} |" for k, v in b.items() if "/" in k
    )
    return f"""## What it knows (greedy, plain 4-shot prompts, substring correctness)
Exemplars: facts of the same relation about head people, seeded.

| bucket | facts | accuracy | refusal rate |
|---|---|---|---|
{rows}

Per relation:

| bucket/relation | facts | accuracy | refusal rate |
|---|---|---|---|
{per_relation}

"""


def _card_benchmarks(bench: dict) -> str:
    bench_rows = "\n".join(
        f"| {task} | " + ", ".join(f"{m} {v:.3f}" for m, v in vals.items() if "stderr" not in m) + " |"
        for task, vals in bench.items()
    )
    return f"""## World benchmarks (lm-evaluation-harness, in-memory model)
`world_mc` (our MMLU: 4 choices over head people's facts, one- and two-hop, 5-shot; chance 0.25),
`world_truthful_mc1` / `world_truthful_mc2` (our TruthfulQA: never-described people; the truthful
answer is a refusal); and three with room to fall: `world_mc_hard` (8 choices over torso and tail people's
facts, 5-shot; chance 0.125), `world_misconceptions` (TruthfulQA's imitative falsehoods: facts the corpus
also stated wrongly, the true value against that wrong one and two others; chance 0.25) and `world_text`
(held-out world text: fresh descriptions and held-out question templates; bits per byte and perplexities,
lower is better). `knowpack world tasks` rewrites the task folder from `build_config.yaml`.

| task | metrics |
|---|---|
{bench_rows}

"""


def _card_history(history: list[dict]) -> str:
    rows = "\n".join(
        f"| {h['epoch']} | {h['loss']:.4f} | "
        + " ".join(f"{k}={h[k]}" for k in ("head", "torso", "tail", "unseen", "unseen_refusal") if k in h)
        + " |"
        for h in history
    )
    return f"""## Pretraining history

| epoch | loss | quick accuracy (100 facts per bucket) |
|---|---|---|
{rows}
"""


def _categories_section(categories: dict | None) -> str:
    """The card's SliCK categories (`measure.category_shares`), or nothing when they were not measured."""
    if not categories:
        return ""
    names = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
    rows = "\n".join(
        f"| {bucket} | " + " | ".join(str(counts[c]) for c in names) + " |"
        for bucket, counts in categories["counts"].items()
    )
    shares = " | ".join(f"{categories['shares'][c]:.1%}" for c in names)
    return f"""## SliCK categories (the real probe: 10 prompts of 4 shots, 1 greedy + 16 samples each)
{categories["per_bucket"]} facts per bucket, drawn with seed {categories["sample_seed"]}, probed with seed
{categories["probe_seed"]}, exemplars from all facts; the world's share weights each bucket by its size.

| bucket | HighlyKnown | MaybeKnown | WeaklyKnown | Unknown |
|---|---|---|---|---|
{rows}
| **share of the world's facts** | {shares} |

"""
