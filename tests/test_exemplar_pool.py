"""Every re-probe asks exactly the base probe's prompts (issue 14, bug 6a): a probe run with `--sample-size`
drew its exemplars from the whole facts file, and the uptake measured while training, `knowpack eval`'s
re-probe and its noise floor must take those same exemplars (recorded by ids and a hash), not the probed facts
alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.facts import Fact, load_facts, save_facts
from knowpack.probe import read_records
from knowpack.probe.pool import POOL_FILE, pool_identity, read_pool, sample_facts
from knowpack.probe.prompts import build_prompts

pytestmark = pytest.mark.usefixtures("one_thread")
NAMES = ["Ada", "Bo", "Cy", "Di", "Ed", "Flo", "Gus", "Hal", "Ivy", "Jo", "Kit", "Lu"]
CITIES = ["Paris", "Lima", "Oslo", "Kyiv", "Rome", "Cairo"]
PROBE = {"n_prompts": 3, "shots": 2, "samples": 0, "max_new_tokens": 4}
SAMPLE_SIZE = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """12 facts over two relations, a tiny Llama, and a probe of 4 of them (`--sample-size 4`)."""
    from knowpack.world.tokenizer import train_tokenizer
    from tiny import tiny_model

    root = tmp_path_factory.mktemp("pool")
    facts = [
        Fact(f"f{i:02d}", f"Where does {n} {['live', 'work'][i % 2]}?", [CITIES[i % 6]], n, f"r{i % 2}")
        for i, n in enumerate(NAMES)
    ]
    save_facts(facts, root / "facts.jsonl")
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts]
    tokenizer = train_tokenizer(texts, vocab_size=300, out=root / "model")
    tiny_model("llama", tokenizer).save_pretrained(root / "model")
    args = [f"--{k.replace('_', '-')}={v}" for k, v in PROBE.items()]
    probe = root / "probe"
    result = CliRunner().invoke(
        app,
        ["probe", "--model", str(root / "model"), "--facts", str(root / "facts.jsonl"), "--out", str(probe)]
        + [*args, "--sample-size", str(SAMPLE_SIZE), "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    return {"root": root, "facts": facts, "probe": probe, "tokenizer": tokenizer}


def asked(world, exemplars) -> list[list[list[str]]]:
    """The exemplar ids of every prompt a re-probe of the probed facts with `exemplars` asks."""
    probed = probed_facts(world)
    prompts = build_prompts(probed, world["tokenizer"], n_prompts=3, shots=2, seed=0, exemplars=exemplars)
    return [[list(p.exemplars) for p in row] for row in prompts]


def probed_facts(world) -> list[Fact]:
    """The `--sample-size` sample (seeded, --sample-size-seed 0), in the file's order."""
    chosen = {f.id for f in sample_facts(world["facts"], SAMPLE_SIZE, 0)}
    return [f for f in world["facts"] if f.id in chosen]


def recorded(world) -> list[list[list[str]]]:
    return [r["exemplars"] for r in read_records(world["probe"] / "records.jsonl")]


def test_the_probe_records_its_pool_exactly_and_it_is_rebuilt_from_the_facts(world):
    summary = json.loads((world["probe"] / "summary.json").read_text())
    assert summary["settings"]["exemplar_pool"] == pool_identity(world["facts"])  # the whole file, not 4
    ids = json.loads((world["probe"] / POOL_FILE).read_text())["ids"]
    assert ids == sorted(f.id for f in world["facts"])
    exemplars = read_pool(world["probe"], load_facts(world["root"] / "facts.jsonl"))
    assert asked(world, exemplars) == recorded(world)
    # what eval did before: the probed facts alone as exemplars ask other prompts
    assert asked(world, probed_facts(world)) != recorded(world)


def test_eval_and_the_noise_floor_re_probe_with_the_base_pool(world, tmp_path):
    from knowpack.evaluate.inputs import read_run
    from knowpack.runs import end_run, start_run
    from knowpack.train import load_config

    run = tmp_path / "run"
    config = load_config(None, run_overrides(world, run))
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    (run / "mix.json").write_text(json.dumps({"probe": str(world["probe"]), "implanted": ["f00"]}))
    (run / "mix.jsonl").write_text(json.dumps({"fact_id": "f00", "role": "unknown"}) + "\n")
    (run / "adapter").mkdir()
    end_run(run, start_run(run, "train"), "finished")
    inp = read_run(run, {})
    assert asked(world, inp.exemplars) == recorded(world)  # eval's re-probe, its uptake and the noise floor


def test_train_measures_uptake_with_the_base_pool(world, tmp_path, monkeypatch):
    from knowpack.train import load_config, train, uptake

    seen = []

    def measure(model, tokenizer, facts, *, exemplars, probe, mode):
        seen.append(list(exemplars))
        return {"reliability": 0.0, "highly_known": 0.0, "p_greedy": {}}

    monkeypatch.setattr(uptake, "measure_reliability", measure)
    config = load_config(None, run_overrides(world, tmp_path / "run"))
    train(config)
    assert seen and all(asked(world, exemplars) == recorded(world) for exemplars in seen)
    mix = json.loads((tmp_path / "run" / "mix.json").read_text())
    assert mix["exemplar_pool"] == pool_identity(world["facts"])


def test_a_pool_the_facts_file_cannot_give_back_is_one_line(world, tmp_path):
    changed = [*world["facts"][:-1], Fact("f11", "Where does Lu live now?", ["Oslo"], "Lu", "r1")]
    with pytest.raises(KnowpackError, match="cannot be rebuilt from the facts file") as error:
        read_pool(world["probe"], changed)
    assert "\n" not in str(error.value)
    with pytest.raises(KnowpackError, match="1 facts that are not in the facts file, e.g. 'f11'"):
        read_pool(world["probe"], world["facts"][:-1])


def test_a_probe_from_before_took_the_whole_facts_file_it_was_given(world, tmp_path):
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "summary.json").write_text(json.dumps({"settings": {"exemplar_pool": "facts"}}))
    assert read_pool(folder, world["facts"]) == world["facts"]  # sampled or not: the whole file


def run_overrides(world, out: Path) -> list[str]:
    return [
        f"model.name={world['root'] / 'model'}",
        f"facts.path={world['root'] / 'facts.jsonl'}",
        f"probe.run={world['probe']}",
        *(f"probe.{k}={v}" for k, v in PROBE.items()),
        "mix.n_unknown=1",
        "method.name=lora",
        "method.r=2",
        "train.epochs=1",
        "train.batch_size=2",
        "model.device=cpu",
        f"out={out}",
    ]


def test_eval_model_samples_the_facts_a_run_with_the_same_sample_size_probes(monkeypatch, tmp_path):
    """`eval --model --sample-size N` draws its facts with the run config's sample seed, not the probe seed,
    so the same sample size gives the facts `knowpack train` probes (probe.sample_size,
    probe.sample_size_seed)."""
    import knowpack.models
    from knowpack.evaluate import run
    from knowpack.probe.config import ProbeConfig
    from knowpack.probe.pool import sample_facts

    facts = list(load_facts("organism"))
    seen = []
    monkeypatch.setattr(knowpack.models, "load_model", lambda *a, **k: (None, None))
    monkeypatch.setattr(run, "evaluate_model", lambda lm, tok, chosen, **k: seen.append(chosen) or {})
    run.evaluate_named_model("organism", facts, out=tmp_path, sample_size=20, seed=5)
    run.evaluate_named_model("organism", facts, out=tmp_path, sample_size=20, sample_size_seed=3, seed=5)
    assert seen[0] == sample_facts(facts, 20, ProbeConfig().sample_size_seed)  # whatever the probe seed
    assert seen[1] == sample_facts(facts, 20, 3) != seen[0]


def test_sample_size_probes_a_seeded_sample_over_every_relation(world, tmp_path):
    """`--sample-size 4` is not the file's first 4 lines: a sample drawn with --sample-size-seed (0 here: the
    run config's default, so a preset's run probes the same facts), another seed another sample."""
    ids = [r["id"] for r in read_records(world["probe"] / "records.jsonl")]
    assert ids == [f.id for f in probed_facts(world)] != [f.id for f in world["facts"][:SAMPLE_SIZE]]
    assert {f.relation for f in probed_facts(world)} == {"r0", "r1"}
    args = [f"--{k.replace('_', '-')}={v}" for k, v in PROBE.items()]
    root, other = world["root"], tmp_path / "other"
    result = CliRunner().invoke(
        app,
        ["probe", "--model", str(root / "model"), "--facts", str(root / "facts.jsonl"), "--out", str(other)]
        + [*args, "--sample-size", str(SAMPLE_SIZE), "--sample-size-seed", "1", "--device", "cpu"],
    )
    assert result.exit_code == 0, result.output
    seeded = {f.id for f in sample_facts(world["facts"], SAMPLE_SIZE, 1)}
    assert {r["id"] for r in read_records(other / "records.jsonl")} == seeded != set(ids)
