"""`knowpack world build` end to end on a tiny world: the files it writes, and bit-for-bit reproducibility."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from knowpack.cli import app

TINY = {
    "people": {"head": 24, "torso": 8, "tail": 8, "unseen": 16},
    "strangers": 8,
    "city_statements": 2,
    "vocab_size": 400,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_layers": 2,
    "num_heads": 2,
    "seq_len": 64,
    "batch_size": 8,
    "epochs": 2,
    "warmup_steps": 5,
    "eval_every": 1,
    "refusal_epochs": 1,
    "refusal_strangers": 8,
    "refusal_lr": 1e-3,
    "category_sample": 4,
}


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _build(out, config, *extra):
    result = CliRunner().invoke(app, ["world", "build", "--out", str(out), "--config", str(config), *extra])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_build_writes_an_organism_and_is_reproducible(tmp_path, tiny_config):
    a = _build(tmp_path / "a", tiny_config)
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "facts.jsonl",
        "world.json",
        "build_config.yaml",
        "metrics.json",
        "CARD.md",
        "tasks/world_mc.yaml",
    ):
        assert (a / name).is_file(), name
    assert not list(tmp_path.glob(".a.building-*")), "the temporary folder must be renamed away"
    metrics = json.loads((a / "metrics.json").read_text())
    assert set(metrics["buckets"]) >= {"head", "torso", "tail", "unseen"}
    assert "world_mc" in metrics["benchmarks"]["tasks"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][-1]["phase"] == "refusal"
    categories = metrics["categories"]  # the real SliCK probe on 4 facts per bucket
    assert [sum(c.values()) for c in categories["counts"].values()] == [4, 4, 4, 4]
    assert sum(categories["shares"].values()) == pytest.approx(1.0)
    assert "## SliCK categories" in (a / "CARD.md").read_text()

    # Same config, same seed: the same weights, to the byte.
    b = _build(tmp_path / "b", a / "build_config.yaml", "--no-benchmarks")
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "facts.jsonl").read_bytes() == (b / "facts.jsonl").read_bytes()
    again = json.loads((b / "metrics.json").read_text())
    assert again["buckets"] == metrics["buckets"] and again["categories"] == categories


def test_build_refuses_to_overwrite(tmp_path, tiny_config):
    (tmp_path / "x").mkdir()
    result = CliRunner().invoke(
        app, ["world", "build", "--out", str(tmp_path / "x"), "--config", str(tiny_config)]
    )
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_build_rejects_a_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    result = CliRunner().invoke(app, ["world", "build", "--out", str(tmp_path / "o"), "--config", str(bad)])
    assert result.exit_code == 1
    assert "unknown key" in result.output and "epochz" in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_refusal_phase_from_a_stored_pretraining_is_the_same_as_a_whole_build(tmp_path, tiny_config):
    whole = _build(tmp_path / "whole", tiny_config, "--no-benchmarks")
    pretrained_only = tmp_path / "p.yaml"
    pretrained_only.write_text(yaml.safe_dump({**TINY, "refusal_epochs": 0}))
    p = _build(tmp_path / "p", pretrained_only, "--no-benchmarks")
    again = _build(tmp_path / "again", tiny_config, "--no-benchmarks", "--pretrained", str(p))
    assert (whole / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    history = json.loads((again / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]

    # Reusing a build with other settings, or one that went through the refusal phase, is refused.
    result = CliRunner().invoke(
        app,
        [
            "world",
            "build",
            "--out",
            str(tmp_path / "x"),
            "--config",
            str(tiny_config),
            "--pretrained",
            str(whole),
        ],
    )
    assert result.exit_code == 1 and "refusal phase" in result.output
