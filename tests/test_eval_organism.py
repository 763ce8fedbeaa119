"""Evaluation on the bundled organism (seeded, CPU): the untouched base shows no shift at all (its measurement
null is zero for greedy categories) while prompt sensitivity moves categories, and LoRA on 50 Unknown facts
shows uptake, shift against the null, refusals before vs after and world_mc before vs after (BENCHMARKS.md
has the time this takes)."""

from __future__ import annotations

from pathlib import Path

import pytest

import knowpack
from knowpack.evaluate import evaluate_model, evaluate_run
from knowpack.train import load_config, train

pytestmark = [pytest.mark.organism, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FAST = ["probe.sample_size=300", "probe.samples=0", "mix.n_unknown=50"]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """One greedy probe of 300 organism facts, shared by the runs below (and so is its prompt sensitivity)."""
    from knowpack.train.run import run_base_probe

    out = tmp_path_factory.mktemp("probe") / "probe"
    run_base_probe(load_config("configs/organism/lora.yaml", [*FAST, f"probe.out={out}"]))
    return out


_UP = {("Unknown", "HighlyKnown"), ("Unknown", "MaybeKnown"), ("MaybeKnown", "HighlyKnown")}
_DOWN = {("HighlyKnown", "Unknown"), ("HighlyKnown", "MaybeKnown"), ("MaybeKnown", "Unknown")}


def _categories(folder) -> dict[str, str]:
    """Fact id -> category of a probe folder (a greedy probe: no WeaklyKnown)."""
    from knowpack.probe import read_records

    return {r["id"]: r["category"] for r in read_records(Path(folder) / "records.jsonl")}


def lora_run(folder, probe_run, *extra: str):
    config = load_config(
        "configs/organism/lora.yaml", [*FAST, f"probe.run={probe_run}", f"out={folder}", *extra]
    )
    return train(config)


def test_the_untouched_base_shows_no_shift_and_prompt_sensitivity_some(tmp_path, probe_run):
    # lr 1e-12 (0 is refused: train.lr > 0): the LoRA adapter's zero B moves by ~1e-12, so the "trained"
    # model answers as the base model does.
    run = lora_run(
        tmp_path / "noop", probe_run, "train.lr=1e-12", "train.epochs=1", "train.track_uptake=false"
    )
    ev = evaluate_run(run, benchmarks=[])  # the shifts alone: the benchmarks are other tests'
    floor = ev["knowledge_shift"]["all"]
    assert floor["transitions"]["unchanged"] == 1.0 and floor["transitions"]["base"]["unchanged"] == 1.0
    assert floor["transitions"]["prompt_sensitivity"]["unchanged"] < 1.0
    base = _categories(probe_run)
    redraws = [_categories(f) for f in ev["knowledge_shift"]["baselines"]["prompt_sensitivity"]["folders"]]
    assert len(redraws) == 5 and len({tuple(r.values()) for r in redraws}) > 1  # other exemplars each time
    for block in ("trained", "untrained", "all"):
        shift = ev["knowledge_shift"][block]
        for name in ("positive_shift", "negative_shift"):
            entry = shift[name]
            # nothing moved: 0 of the facts that could have, None where none could
            assert entry["count"] == 0 and entry["value"] == (0.0 if entry["eligible"] else None), (
                block,
                name,
            )
        retention = shift["retention"]
        assert retention["value"] == (1.0 if retention["n"] else None), block
    # prompt sensitivity of every fact, counted here from the base probe's and each redraw's categories
    # (greedy: three of them); the baseline is their mean over redraws
    all_ = ev["knowledge_shift"]["all"]
    ids = list(base)
    for name, moves in (("positive_shift", _UP), ("negative_shift", _DOWN)):
        could = [i for i in ids if base[i] in {a for a, _ in moves}]
        moved = [sum((base[i], repeat[i]) in moves for i in could) / len(could) for repeat in redraws]
        assert all_[name]["eligible"] == len(could)
        assert all_[name]["prompt_sensitivity"]["draws"] == pytest.approx(moved), name
        assert all_[name]["baselines"]["prompt_sensitivity"] == pytest.approx(sum(moved) / 5), name
        assert all_[name]["base"] == 0.0, name  # the measurement null
    known = [i for i in ids if base[i] == "HighlyKnown"]
    kept = [sum(repeat[i] == "HighlyKnown" for i in known) / len(known) for repeat in redraws]
    assert all_["retention"]["n"] == len(known) and all_["retention"]["base"] == 1.0
    assert all_["retention"]["prompt_sensitivity"]["draws"] == pytest.approx(kept)
    low, high = all_["retention"]["prompt_sensitivity"]["interval"]
    assert low < sum(kept) / 5 < high
    behaviour = ev["behaviour"]["all"]
    for name in ("refusal_rate", "unique_answers", "top_answer_share", "answer_entropy", "confidence"):
        assert behaviour[name]["value"] == pytest.approx(behaviour[name]["base"], abs=1e-6), name
    assert behaviour["explosion"]["value"] == 0
    up = ev["uptake"]
    for name in ("reliability", "zero_shot_accuracy", "generalization", "generalization_zero_shot"):
        assert up[name]["delta"] == pytest.approx(0.0, abs=1e-9), name
    assert ev["knowledge_shift"]["baselines"]["prompt_sensitivity"]["reused"] == 0


def test_a_model_against_its_own_probe_with_the_same_seed_shows_no_shift(tmp_path):
    model, tok = knowpack.load_model("organism", device="cpu")
    facts = knowpack.load_facts("organism")
    chosen = facts[::400]
    settings = {"samples": 0, "n_prompts": 4}
    evaluate_model(model, tok, chosen, out=tmp_path / "a", probe_kwargs=settings, exemplars=facts)
    ev = evaluate_model(
        model,
        tok,
        chosen,
        out=tmp_path / "b",
        probe_kwargs=settings,
        exemplars=facts,
        compare=tmp_path / "a" / "probe",
    )
    shift = ev["knowledge_shift"]["all"]
    assert shift["n"] == len(chosen) and shift["transitions"]["unchanged"] == 1.0
    assert (
        sum(ev["probe"]["categories"].values()) == len(chosen)
        and ev["probe"]["categories"]["HighlyKnown"] > 0
    )
    assert ev["behaviour"]["all"]["refusal_rate"]["delta"] == 0.0


def test_lora_on_50_unknown_facts_shows_uptake_shift_refusals_and_world_mc(tmp_path, probe_run):
    run = lora_run(tmp_path / "lora50", probe_run)
    ev = evaluate_run(run, benchmarks=["world_mc"])
    up = ev["uptake"]
    assert up["n"] == 50 and up["reliability"]["base"] == 0.0 and up["reliability"]["value"] >= 0.9
    # Unknown under every few-shot prompt; asked zero-shot, the base may still hit one now and then.
    assert up["zero_shot_accuracy"]["value"] >= 0.9 and up["zero_shot_accuracy"]["base"] <= 0.1
    assert up["generalization"]["source"] == "meta.heldout_paraphrases" and up["generalization"]["n"] == 100
    assert up["generalization"]["value"] > up["generalization"]["base"]
    shift = ev["knowledge_shift"]
    assert shift["baselines"]["prompt_sensitivity"]["reused"] == 5  # probed by the first test
    assert (
        shift["trained"]["positive_shift"]["value"] >= 0.9
        and shift["trained"]["positive_shift"]["base"] < 0.1
    )
    untrained = shift["untrained"]
    assert untrained["n"] == 250 and untrained["negative_shift"]["base"] == 0.0
    assert untrained["retention"]["base"] == 1.0 >= untrained["retention"]["value"]
    refusals = ev["behaviour"]["untrained"]["refusal_rate"]
    assert refusals["base"] > 0.1 and refusals["value"] < refusals["base"]  # the paper: it stops refusing
    world_mc = ev["benchmarks"]["tasks"]["world_mc"]["acc"]
    assert world_mc["base"] >= 0.95 and 0.0 <= world_mc["value"] <= 1.0
    items = (knowpack.organism_dir() / "tasks" / "world_mc.jsonl").read_text().splitlines()
    assert ev["benchmarks"]["n-samples"]["world_mc"]["effective"] == len(items)


def test_the_measurement_null_of_an_untrained_lora_run_is_zero_for_greedy_categories(tmp_path):
    """A LoRA run that learned nothing (its adapter as PEFT initialises it, saved and loaded back), re-probed
    with the same prompts and another sampling seed: the greedy answers are the base's, so nothing moves
    between HighlyKnown, MaybeKnown and the rest; only the samples (WeaklyKnown <-> Unknown) differ. A greedy
    probe's null is probed too: the same answers as the base probe, through the adapter."""
    from knowpack.evaluate import metrics as m
    from knowpack.evaluate.base import measurement_null_records
    from knowpack.evaluate.null import null_recipe, untrained_model
    from knowpack.probe import probe
    from knowpack.train import load_config

    model, tok = knowpack.load_model("organism", device="cpu")
    facts = knowpack.load_facts("organism")
    chosen = facts[::250]
    config = load_config("configs/organism/lora.yaml")
    recipe = null_recipe(config, tmp_path / "unused")

    def untrained(into):
        return untrained_model(model, tok, config, tmp_path / "unused", into)

    settings = {"samples": 4, "n_prompts": 4, "seed": 3, "exemplars": facts}
    base = probe(model, tok, chosen, **settings, out=tmp_path / "probe")
    null, block = measurement_null_records(
        untrained, tok, chosen, folder=tmp_path / "probe", recipe=recipe, probe_kwargs=settings
    )
    folder = Path(block["folder"])
    assert folder.parent.parent == tmp_path / "probe" and folder.name == "sample-seed-4"
    assert (folder.parent / "weights" / "adapter_config.json").is_file() and block["reused"] is False
    for b, n in zip(base, null, strict=True):
        assert (b["greedy"], b["exemplars"], b["p_greedy"]) == (n["greedy"], n["exemplars"], n["p_greedy"])
    assert any(b["samples"] != n["samples"] for b, n in zip(base, null, strict=True))  # the seed did change
    shift = m.compare_knowledge(base, null)
    assert {c for c in shift["categories"]} >= {"HighlyKnown", "MaybeKnown", "Unknown"}
    assert shift["positive_shift"]["value"] == 0.0 and shift["negative_shift"]["value"] == 0.0
    assert shift["retention"]["value"] == 1.0 and shift["retention"]["n"] > 0
    counts = shift["transitions"]["counts"]
    for a in ("HighlyKnown", "MaybeKnown"):
        assert counts[a][a] == sum(counts[a].values())  # no greedy category moved
    again, reused = measurement_null_records(
        untrained, tok, chosen, folder=tmp_path / "probe", recipe=recipe, probe_kwargs=settings
    )
    assert again == null and reused["reused"] is True

    greedy = {**settings, "samples": 0}
    records = probe(model, tok, chosen, **greedy, out=tmp_path / "greedy")
    same, block = measurement_null_records(
        untrained, tok, chosen, folder=tmp_path / "greedy", recipe=recipe, probe_kwargs=greedy
    )
    assert [(r["greedy"], r["category"]) for r in same] == [(r["greedy"], r["category"]) for r in records]
    assert "untrained lora run" in block["computed"]


def test_an_untrained_run_starts_from_the_runs_own_initial_values(tmp_path):
    """The untrained LoRA adapter is drawn with train.seed, as the run's is: the same tensors whatever the
    process drew before (LoRA's A is random; B = 0), and the caller's random state is left as it was."""
    import torch
    from safetensors.torch import load_file

    from knowpack.evaluate.null import untrained_model
    from knowpack.train import load_config

    model, tok = knowpack.load_model("organism", device="cpu")
    config = load_config("configs/organism/lora.yaml")
    saved = []
    for draw, into in ((1, "a"), (2, "b")):
        torch.manual_seed(draw)
        untrained_model(model, tok, config, tmp_path / "unused", tmp_path / into)
        saved.append(load_file(tmp_path / into / "weights" / "adapter_model.safetensors"))
    assert saved[0].keys() == saved[1].keys() and all(torch.equal(saved[0][k], saved[1][k]) for k in saved[0])
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    untrained_model(model, tok, config, tmp_path / "unused", tmp_path / "c")
    assert torch.equal(torch.rand(3), expected)  # the caller's random stream goes on where it was
