"""`knowpack eval` end to end on tiny random Llama runs (saved locally, no download): eval.json's every block
with numbers pinned where the hand-made base probe fixes them, the after-probe kept in RUN/eval/probe, the
baselines (the measurement null of a greedy probe without re-probing, prompt sensitivity) and the base
model's benchmarks computed once per base probe and reused, trained answers among untrained ones,
`--model` alone, and one-line errors for a run that is not finished, a base model or base probe that does not
match the run's, and an lm-eval task that does not exist."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import knowpack
from helpers import choice_lls
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.evaluate import evaluate_run
from knowpack.evaluate.metrics import compare_knowledge
from knowpack.facts import Fact, save_facts
from knowpack.probe import read_records
from knowpack.train import load_config, train
from knowpack.train.export import load_run
from tiny import save_tiny, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
PEOPLE = ["Ada Brown", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Ford", "Flo Grant", "Gus Hill", "Hal Ives"]
CITIES = ["Paris", "Lima", "Oslo", "Kyiv", "Rome", "Cairo", "Quito", "Seoul"]
PROBE = {"n_prompts": 2, "shots": 1, "samples": 0, "max_new_tokens": 6}


def make_facts() -> list[Fact]:
    return [
        Fact(
            f"f{i}",
            f"Where was {p} born?",
            [CITIES[i]],
            p,
            "birth_city",
            [f"What is the birthplace of {p}?"],
            meta={"heldout_paraphrases": [f"{p} was born in which city?", f"Name the birth city of {p}."]},
        )
        for i, p in enumerate(PEOPLE)
    ]


def base_record(fact: Fact, known: bool) -> dict:
    """A probe record of the base model: known facts answered right with p 0.9, others refused with p 0.5."""
    answer = fact.answer if known else "I don't know."
    return {
        "id": fact.id,
        "category": "HighlyKnown" if known else "Unknown",
        "p_greedy": 1.0 if known else 0.0,
        "p_sample": None,
        "greedy": [answer, answer],
        "samples": [[], []],
        "greedy_correct": [known, known],
        "greedy_refusal": [not known, not known],
        "sample_refusal": [0, 0],
        "greedy_logprob": [math.log(0.9 if known else 0.5)] * 2,
        "relation": "birth_city",
        "bucket": None,
    }


def probe_settings(model: Path, **changes) -> dict:
    """The settings `knowpack.probe` records for PROBE on `model` with the 8 facts as exemplar pool."""
    settings = {
        "model": str(model),
        "backend": "torch",
        **{k: PROBE[k] for k in ("n_prompts", "shots", "samples")},
        "temperature": None,
        "top_k": None,
        "max_new_tokens": PROBE["max_new_tokens"],
        "format": "plain",
        "mode": "substring",
        "seed": 0,
        "exemplar_pool": "8 given",
    }
    return {**settings, **changes}


def write_probe(folder: Path, records: list[dict], settings: dict | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = {"status": "finished", **({"settings": settings} if settings else {})}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Facts, a tiny Llama, a hand-made base probe (f0-f4 Unknown, f5-f7 HighlyKnown) and a LoRA run on it."""
    root = tmp_path_factory.mktemp("world")
    facts = make_facts()
    save_facts(facts, root / "facts.jsonl")
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts] + ["I don't know."]
    model = save_tiny("llama", tiny_tokenizer(texts, root / "tok"), root / "llama")
    records = [base_record(f, known=i >= 5) for i, f in enumerate(facts)]
    probe = write_probe(root / "probe", records, probe_settings(model))
    run = make_run(root, model, probe, "run")
    return {"root": root, "model": model, "probe": probe, "run": run, "facts": root / "facts.jsonl"}


def world_mc_accuracy(model, tokenizer, limit: int) -> float:
    """world_mc's accuracy on its first `limit` items, scored by hand (a plain torch reference, as in
    test_world_tasks): 5-shot with the first five dev items, the likeliest choice."""
    from knowpack.prompts import plain_prompt

    tasks = knowpack.organism_dir() / "tasks"
    dev, test = ([json.loads(x) for x in (tasks / f).read_text().splitlines()] for f in TASK_FILES)
    shots = [(d["question"], d["choices"][d["label"]]) for d in dev[:5]]
    hits = []
    for it in test[:limit]:
        lls = choice_lls(model.eval(), tokenizer, plain_prompt(shots, it["question"]), it["choices"])
        hits.append(max(range(len(lls)), key=lls.__getitem__) == it["label"])
    return sum(hits) / len(hits)


TASK_FILES = ("world_mc_dev.jsonl", "world_mc.jsonl")


def make_run(
    root: Path, model: Path, probe: Path, name: str, *extra: str, method=("method.name=lora", "method.r=2")
) -> Path:
    overrides = [
        f"model.name={model}",
        f"facts.path={root / 'facts.jsonl'}",
        f"probe.run={probe}",
        *(f"probe.{k}={v}" for k, v in PROBE.items()),
        "mix.n_unknown=4",
        *method,
        "train.epochs=1",
        "train.batch_size=4",
        "train.lr=0.01",
        "model.device=cpu",
        "train.track_uptake=false",
        f"out={root / name}",
        *extra,
    ]
    return train(load_config(None, overrides))


def plain_probe(world: dict) -> list[dict]:
    """The tiny base model itself probed with the run's settings and the 8 facts as exemplar pool: what a run
    that learned nothing must answer."""
    from knowpack.probe import probe

    model, tokenizer = knowpack.load_model(str(world["model"]), device="cpu")
    facts = make_facts()
    return probe(model, tokenizer, facts, **PROBE, exemplars=facts)


@pytest.fixture(scope="module")
def evaluated(world):
    """`knowpack eval RUN` with a benchmark, through the CLI."""
    args = ["eval", str(world["run"]), "--benchmarks", "world_mc", "--limit", "4"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output, json.loads((world["run"] / "eval.json").read_text())


def test_eval_writes_eval_json_with_every_block(world, evaluated):
    output, ev = evaluated
    assert "reliability" in output and "world_mc: acc" in output
    assert ev["kind"] == "run" and ev["model"]["method"] == "lora"
    assert ev["facts"] == {
        "path": str(world["facts"]), "probed": 8, "trained": 4, "untrained": 4, "implanted": 4
    }  # fmt: skip
    after = read_records(world["run"] / "eval" / "probe" / "records.jsonl")
    assert [r["id"] for r in after] == [f"f{i}" for i in range(8)]
    assert set(ev["definitions"]) >= {"reliability", "positive_shift", "retention", "explosion", "benchmark"}

    up = ev["uptake"]
    implanted = json.loads((world["run"] / "mix.json").read_text())["implanted"]
    p_after = {r["id"]: r["p_greedy"] for r in after}
    assert up["n"] == 4 and [f["id"] for f in up["per_fact"]] == implanted
    assert up["reliability"]["base"] == 0.0  # all four were Unknown in the base probe
    assert up["reliability"]["value"] == pytest.approx(sum(p_after[i] for i in implanted) / 4)
    assert up["generalization"]["n"] == 8 and up["generalization"]["source"] == "meta.heldout_paraphrases"
    for name in ("highly_known_share", "zero_shot_accuracy", "generalization", "generalization_zero_shot"):
        assert up[name]["metric"] == name and up[name]["base"] is not None
    # from the re-probe's records, and the per-fact table the uptake block is the mean of
    assert up["highly_known_share"]["value"] == pytest.approx(sum(p_after[i] == 1.0 for i in implanted) / 4)
    assert up["highly_known_share"]["base"] == 0.0
    per_fact = {f["id"]: f for f in up["per_fact"]}
    assert [per_fact[i]["p_greedy"] for i in implanted] == [p_after[i] for i in implanted]
    zero_shot = [per_fact[i]["zero_shot"] for i in implanted]
    assert up["zero_shot_accuracy"]["value"] == pytest.approx(sum(map(bool, zero_shot)) / 4)

    shift = ev["knowledge_shift"]
    untrained = [r for r in after if r["id"] not in implanted]
    known_after = sum(r["category"] == "HighlyKnown" for r in untrained if r["id"] in {"f5", "f6", "f7"})
    assert shift["untrained"]["n"] == 4 and shift["trained"]["n"] == 4 and shift["all"]["n"] == 8
    assert shift["untrained"]["categories"] == ["HighlyKnown", "MaybeKnown", "Unknown"]  # samples=0
    assert shift["untrained"]["retention"]["value"] == pytest.approx(known_after / 3)
    assert shift["untrained"]["retention"]["n"] == 3
    # the measurement null: the run's LoRA untrained (B = 0), saved and loaded back, re-probed; it answers as
    # the tiny model itself does, which is not what the hand-made base probe says: the null shows it
    null = shift["baselines"]["measurement_null"]
    null_records = read_records(Path(null["folder"]) / "records.jsonl")
    assert [r["greedy"] for r in null_records] == [r["greedy"] for r in plain_probe(world)]
    assert (Path(null["folder"]).parent / "weights" / "adapter_config.json").is_file()
    for block, ids in (("trained", implanted), ("untrained", [r["id"] for r in untrained])):
        base_records = read_records(world["probe"] / "records.jsonl")
        expected = compare_knowledge(base_records, null_records, ids)
        for name in ("positive_shift", "negative_shift", "retention"):
            entry = shift[block][name]  # the null beside every shift (None where no fact could move)
            assert entry["metric"] == name and entry["baseline"] == "measurement_null"
            assert "prompt_sensitivity" in entry["baselines"]
            assert entry["base"] == expected[name]["value"]
    baselines = shift["baselines"]
    redraws = [str(world["probe"] / f"repeat-seed-{s}") for s in range(1, 6)]  # five exemplar redraws
    assert baselines["prompt_sensitivity"] == {
        "folder": redraws[0], "seed": 1, "folders": redraws, "seeds": [1, 2, 3, 4, 5], "reused": 0
    }  # fmt: skip
    draws = shift["untrained"]["retention"]["prompt_sensitivity"]["draws"]
    assert len(draws) == 5 and shift["untrained"]["retention"]["baselines"]["prompt_sensitivity"] == (
        pytest.approx(sum(draws) / 5)
    )
    assert null["computed"].startswith("an untrained lora run") and null["reused"] is False
    assert (null["seed"], null["sample_seed"]) == (0, 1) and baselines["training_control"] is None
    assert null["recipe"] == {"method": "lora", "options": {"r": 2}}
    assert (world["probe"] / "noise_floor.json").is_file()

    behaviour = ev["behaviour"]["untrained"]  # base: one refused Unknown fact and three known ones
    assert behaviour["refusal_rate"]["base"] == pytest.approx(2 / 8)
    assert behaviour["confidence"]["base"] == pytest.approx((2 * 0.5 + 6 * 0.9) / 8)
    assert behaviour["confidence_incorrect"]["base"] == pytest.approx(0.5)
    assert behaviour["top_answers"]["base"] == [["cairo", 2], ["quito", 2], ["seoul", 2]]
    assert behaviour["explosion"]["base_max_count"] == 2
    taken = behaviour["trained_answers"]  # the base refuses Unknown facts: none of its answers is trained
    trained = {
        e["answer"].lower() for e in map(json.loads, (world["run"] / "mix.jsonl").read_text().splitlines())
    }
    answers = [a.lower() for r in untrained for a in r["greedy"] if a and "know" not in a.lower()]
    assert taken["base"] == 0.0
    assert taken["value"] == pytest.approx(
        sum(a in trained for a in answers) / len(answers) if answers else None
    )

    bench = ev["benchmarks"]
    acc = bench["tasks"]["world_mc"]["acc"]
    assert acc["metric"] == "benchmark" and acc["task"] == "world_mc" and acc["task_metric"] == "acc"
    base_model, tok = knowpack.load_model(str(world["model"]), device="cpu")
    assert acc["base"] == pytest.approx(world_mc_accuracy(base_model, tok, limit=4))
    assert acc["value"] == pytest.approx(world_mc_accuracy(load_run(world["run"])[0], tok, limit=4))
    assert bench["lm_eval_version"] and bench["settings"]["limit"] == 4 and bench["n-samples"]
    assert bench["base_reused"] == []
    assert ev["provenance"]["seconds"] > 0 and "probe" in ev["provenance"]["stage_seconds"]


def test_noise_floor_and_base_benchmarks_are_reused_by_every_run_of_the_same_probe(world, evaluated):
    floor = world["probe"] / "noise_floor.json"
    before = (floor.stat().st_mtime_ns, (world["probe"] / "repeat-seed-1" / "records.jsonl").read_bytes())
    other = make_run(world["root"], world["model"], world["probe"], "run-seed1", "mix.seed=1")
    ev = evaluate_run(other, benchmarks=["world_mc"], limit=4)
    assert ev["knowledge_shift"]["baselines"]["prompt_sensitivity"]["reused"] == 5
    assert ev["benchmarks"]["base_reused"] == ["world_mc"]
    assert (
        ev["benchmarks"]["tasks"]["world_mc"]["acc"]["base"]
        == (evaluated[1]["benchmarks"]["tasks"]["world_mc"]["acc"]["base"])
    )
    assert (
        floor.stat().st_mtime_ns,
        (floor.parent / "repeat-seed-1" / "records.jsonl").read_bytes(),
    ) == before
    # The prompt sensitivity of the first run, from the same two probes.
    first = evaluated[1]["knowledge_shift"]["all"]
    shown = ev["knowledge_shift"]["all"]["transitions"]["prompt_sensitivity"]
    assert shown == first["transitions"]["prompt_sensitivity"]
    # The base model's answers on facts both runs implant come from the first run's measurement.
    fields = ("zero_shot_base", "generalization_base")
    earlier = {f["id"]: [f[k] for k in fields] for f in evaluated[1]["uptake"]["per_fact"]}
    now = {f["id"]: [f[k] for k in fields] for f in ev["uptake"]["per_fact"]}
    shared = earlier.keys() & now.keys()
    assert shared and ev["settings"]["base_uptake_reused"] == len(shared)
    assert {i: now[i] for i in shared} == {i: earlier[i] for i in shared}


def test_base_uptake_cache_measures_each_fact_once_per_settings(tmp_path):
    from knowpack.evaluate.base import cached_uptake

    facts, calls = make_facts(), []

    def compute(missing):
        calls.append([f.id for f in missing])
        ok = {f.id: [f.id < "f3"] for f in missing}
        return {"zero_shot_ok": ok, "paraphrase": {f.id: [] for f in missing}}

    first, reused = cached_uptake(tmp_path, {"seed": 0}, facts[:4], compute)
    assert reused == 0 and first["zero_shot_ok"] == {f"f{i}": [i < 3] for i in range(4)}
    again, reused = cached_uptake(tmp_path, {"seed": 0}, facts[2:6], compute)
    assert reused == 2 and calls == [["f0", "f1", "f2", "f3"], ["f4", "f5"]]
    assert again["zero_shot_ok"] == {f"f{i}": [i < 3] for i in range(2, 6)}
    assert again["paraphrase"] == {f"f{i}": [] for i in range(2, 6)}
    _, reused = cached_uptake(tmp_path, {"seed": 1}, facts[:2], compute)  # other settings: measured anew
    assert reused == 0 and calls[-1] == ["f0", "f1"]


def test_eval_of_a_model_alone_and_against_its_own_probe(world, tmp_path):
    common = ["--model", str(world["model"]), "--facts", str(world["facts"]), "--samples", "0"]
    common += ["--n-prompts", "2", "--shots", "1"]
    first = CliRunner().invoke(app, ["eval", *common, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    ev = json.loads((tmp_path / "a" / "eval.json").read_text())
    assert ev["kind"] == "model" and ev["facts"]["probed"] == 8
    assert sum(ev["probe"]["categories"].values()) == 8 and "knowledge_shift" not in ev
    assert ev["behaviour"]["all"]["refusal_rate"]["base"] is None
    again = ["eval", *common, "--out", str(tmp_path / "b"), "--compare", str(tmp_path / "a" / "probe")]
    second = CliRunner().invoke(app, again)
    assert second.exit_code == 0, second.output
    shift = json.loads((tmp_path / "b" / "eval.json").read_text())["knowledge_shift"]["all"]
    assert shift["transitions"]["unchanged"] == 1.0  # the same model, the same seed: no shift at all
    assert shift["positive_shift"]["count"] == 0 and shift["negative_shift"]["count"] == 0


def copy_run(world, tmp_path, name: str = "copy") -> Path:
    """A copy of the run whose mix points at a copy of its base probe (to break one or the other)."""
    run = tmp_path / name
    shutil.copytree(world["run"], run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    probe = shutil.copytree(world["probe"], tmp_path / f"{name}-probe")
    mix = json.loads((run / "mix.json").read_text())
    (run / "mix.json").write_text(json.dumps({**mix, "probe": str(probe)}))
    return run


def set_status(run: Path, status: str, **extra) -> None:
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "status": status, **extra}))


def break_probe(run: Path, **changes) -> None:
    summary_path = Path(json.loads((run / "mix.json").read_text())["probe"]) / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["settings"].update(changes)
    summary_path.write_text(json.dumps(summary))


def test_bad_input_is_one_line(world, tmp_path, monkeypatch):
    import knowpack.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    def run_eval(*args: str) -> str:
        result = CliRunner().invoke(app, ["eval", *args])
        assert result.exit_code == 1, result.output
        errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.output
        return errors[0]

    failed = copy_run(world, tmp_path, "failed")
    set_status(failed, "failed")
    killed = copy_run(world, tmp_path, "killed")
    set_status(killed, "running", pid=2**22 + 12345)  # a process that does not exist
    settings = copy_run(world, tmp_path, "settings")
    break_probe(settings, n_prompts=3)
    other = copy_run(world, tmp_path, "other")
    break_probe(other, model="/models/another-one")

    with monkeypatch.context() as mp:  # all of these fail before any model is loaded
        mp.setattr(knowpack.models, "load_model", no_model)
        assert "the run is failed, not finished" in run_eval(str(failed))
        assert "the run is interrupted, not finished" in run_eval(str(killed))
        assert "not a knowpack run folder" in run_eval(str(tmp_path))
        assert "is not the run's base model" in run_eval(str(world["run"]), "--model", "organism")
        message = run_eval(str(settings))
        assert "other settings than the run's probe section (n_prompts 3 vs 2)" in message
        assert "unknown lm-eval task no_such_task_xyz" in run_eval(
            str(world["run"]), "--benchmarks", "world_mc,no_such_task_xyz"
        )
        assert "give a run folder, or --model, --facts and --out" in run_eval("--model", "organism")
        assert "--facts and --out are for --model" in run_eval(str(world["run"]), "--out", str(tmp_path))
    assert "was made with model /models/another-one" in run_eval(str(other))


@pytest.mark.parametrize(
    "method, extra", [("full", []), ("loki", ["method.quota=25", "method.prompts=PROMPTS"])]
)
def test_eval_of_full_and_loki_runs(world, tmp_path, method, extra):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}\nAnswer:"}) + "\n" for f in make_facts())
    )
    extra = [e.replace("PROMPTS", str(prompts)) for e in extra]
    probe = shutil.copytree(world["probe"], tmp_path / "probe")
    shutil.copy(world["facts"], tmp_path / "facts.jsonl")
    run = make_run(tmp_path, world["model"], probe, method, method=[f"method.name={method}", *extra])
    ev = evaluate_run(run, benchmarks=["world_mc"], limit=2)
    assert ev["model"]["method"] == method and ev["uptake"]["n"] == 4
    assert ev["knowledge_shift"]["all"]["positive_shift"]["base"] is not None  # the noise floor
    assert ev["benchmarks"]["tasks"]["world_mc"]["acc"]["base"] is not None
    assert (run / "eval" / "probe" / "records.jsonl").is_file() and (run / "eval.json").is_file()


def test_a_run_is_read_against_its_training_control(world):
    """A control (the same recipe on 2 of the HighlyKnown f5-f7) is evaluated first, then every shift and
    behaviour entry of the run carries `control`: its value and the control's on the facts neither trained on,
    as `metrics.against_control` gives them from the two re-probes."""
    from knowpack.evaluate import metrics as m

    root, model, probe = world["root"], world["model"], world["probe"]
    run = make_run(root, model, probe, "ctl-run", "mix.n_unknown=2")
    control = make_run(root, model, probe, "ctl", "mix.n_unknown=2", "mix.control=true")
    mix = json.loads((control / "mix.json").read_text())
    assert mix["control"] is True and set(mix["implanted"]) <= {"f5", "f6", "f7"}
    assert not (control / "eval.json").exists()
    ev = evaluate_run(run, control=control, noise_floor=False)
    assert (control / "eval.json").is_file()  # evaluated first, the same way
    block = ev["knowledge_shift"]["baselines"]["training_control"]
    assert block["run"] == str(control) and block["recipe"]["train.lr"] == 0.01
    assert block["epochs_run"] == {"run": 1, "control": 1}

    before = read_records(probe / "records.jsonl")
    after = read_records(run / "eval" / "probe" / "records.jsonl")
    theirs = read_records(control / "eval" / "probe" / "records.jsonl")
    trained = {json.loads(x)["fact_id"] for x in (run / "mix.jsonl").read_text().splitlines()}
    untrained = {f"f{i}" for i in range(8)} - trained - set(mix["implanted"])
    expected = m.against_control(before, after, theirs, untrained)
    for name in ("retention", "negative_shift", "positive_shift"):
        assert ev["knowledge_shift"]["untrained"][name]["control"] == expected[name], name
        assert m.metric_value(ev, name, against="training_control") == (
            expected[name]["value"],
            expected[name]["base"],
        )
    assert ev["behaviour"]["untrained"]["refusal_rate"]["control"] == expected["refusal_rate"]
    assert expected["retention"]["n"] == len(untrained)

    other = make_run(root, model, probe, "ctl-lr", "mix.n_unknown=2", "mix.control=true", "train.lr=0.02")
    with pytest.raises(KnowpackError, match=r"another recipe than the run \(train.lr 0.02 vs 0.01\)"):
        evaluate_run(run, control=other, noise_floor=False)
    with pytest.raises(KnowpackError, match="is not a control run"):
        evaluate_run(run, control=world["run"], noise_floor=False)


def test_a_fault_on_the_trained_path_moves_the_measurement_null(world, monkeypatch):
    """The null goes through the method's own load: break that load on purpose (the adapter's B no longer
    zero, as a loader that mixed up tensors would make it) and the untrained run stops answering as the
    base model does (the sound path reproduces it exactly: test_eval_writes_eval_json_with_every_block)."""
    import torch

    import knowpack.methods.lora as lora

    sound = plain_probe(world)
    loaded = lora.load

    def broken(base, folder):
        model = loaded(base, folder)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0.0, 5.0, generator=torch.Generator().manual_seed(0))
        return model

    probe = world["root"] / "probe-broken"
    shutil.copytree(world["probe"], probe, ignore=shutil.ignore_patterns("null-*", "repeat-*", "*.json"))
    shutil.copy(world["probe"] / "summary.json", probe / "summary.json")
    run = make_run(world["root"], world["model"], probe, "run-broken")
    monkeypatch.setattr(lora, "load", broken)
    ev = evaluate_run(run, noise_floor=False)
    null = read_records(
        Path(ev["knowledge_shift"]["baselines"]["measurement_null"]["folder"]) / "records.jsonl"
    )
    moved = sum(a["greedy"] != b["greedy"] for a, b in zip(sound, null, strict=True))
    assert moved >= 4, [r["greedy"] for r in null]
