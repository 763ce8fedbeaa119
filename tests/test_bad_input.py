"""Bad input, one table: every case is one line `error: ...` and exit code 1, with no traceback, before any
model is loaded (the loaders are replaced by ones that fail the test) and before any file is written (the
whole test folder is compared before and after). No model is loaded, so the table runs in seconds."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowpack.cli import app
from knowpack.facts import Fact, save_facts

ROOT = Path(__file__).resolve().parents[1]
LORA = str(ROOT / "configs" / "organism" / "lora.yaml")
LOKI = str(ROOT / "configs" / "organism" / "loki.yaml")
PEOPLE = ["Ada Brown", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Ford", "Flo Grant"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Bad files of every kind a user handed us, in one folder (FOLDER in the table's arguments)."""
    root = tmp_path_factory.mktemp("bad")
    facts = [Fact(f"f{i}", f"Where was {p} born?", ["Paris"], p, "birth_city") for i, p in enumerate(PEOPLE)]
    save_facts(facts, root / "facts.jsonl")
    save_facts([Fact(f"d{i}", "Where was Ada born?", ["Paris"]) for i in range(4)], root / "same.jsonl")
    (root / "configs").mkdir()
    (root / "configs" / "run.yaml").write_text("model:\n  name: organism\n")
    # a finished probe made with other settings than lora.yaml's (samples 0, not 16)
    probe = root / "probe3"
    probe.mkdir()
    records = [{"id": f.id, "category": "Unknown"} for f in facts]
    (probe / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    settings = {"n_prompts": 10, "shots": 4, "samples": 0, "seed": 0, "format": "plain", "mode": "substring"}
    (probe / "summary.json").write_text(json.dumps({"status": "finished", "settings": settings}))
    # model folders whose weights are cut short or random bytes
    organism = ROOT / "src" / "knowpack" / "organism"
    for name, data in [
        ("truncated", (organism / "model.safetensors").read_bytes()[:100_000]),
        ("random", bytes(range(256)) * 400),
    ]:
        (root / name).mkdir()
        (root / name / "config.json").write_text((organism / "config.json").read_text())
        (root / name / "model.safetensors").write_bytes(data)
    (root / "sweep.yaml").write_text(
        f"base: {LORA}\nset:\n  train.epochs: 2\n  train.epoch: 3\ngrid:\n  mix.seed: [0, 1]\n"
        f"out: {root / 'sweep-out'}\n"
    )
    (root / "capacity.yaml").write_text(
        f"base: {LORA}\ntarget:\n  reliability: 2\nout: {root / 'capacity-out'}\n"
    )
    return root


OUT = "out=FOLDER/run"
PROBE = ["probe", "--out", "FOLDER/p", "--facts", "FOLDER/facts.jsonl"]
CASES = [
    # run config: every numeric setting has a range (issue 18)
    (["train", LORA, "train.lr=0", OUT], "command line: train.lr: expected a number > 0, got 0.0"),
    (["train", LORA, "train.lr=.nan", OUT], "command line: train.lr: expected a number > 0, got nan"),
    (["train", LORA, "probe.temperature=.inf", OUT], "probe.temperature: expected a number > 0"),
    (["train", LORA, "train.lr=-1", OUT], "train.lr: expected a number > 0, got -1.0"),
    (["train", LORA, "train.epochs=0", OUT], "train.epochs: expected an integer >= 1, got 0"),
    (["train", LORA, "train.batch_size=0", OUT], "train.batch_size: expected an integer >= 1, got 0"),
    (["train", LORA, "train.batch_size=-4", OUT], "train.batch_size: expected an integer >= 1, got -4"),
    (["train", LORA, "train.warmup_ratio=1", OUT], "train.warmup_ratio: expected a number in [0, 1)"),
    (["train", LORA, "train.target_reliability=2", OUT], "train.target_reliability: expected a number in"),
    (["train", LORA, "method.dropout=1", OUT], "method.dropout: expected a number in [0, 1), got 1.0"),
    (["train", LORA, "method.r=0", OUT], "method.r: expected an integer >= 1, got 0"),
    (["train", LORA, "method.alpha=0", OUT], "method.alpha: expected a number > 0"),
    (["train", LOKI, "method.quota=200", OUT], "command line: method.quota: expected a number in (0, 100]"),
    (["train", LOKI, "method.lora_dropout=-0.1", OUT], "method.lora_dropout: expected a number in [0, 1)"),
    (["train", LORA, "probe.temperature=0", OUT], "probe.temperature: expected a number > 0, got 0.0"),
    (["train", LORA, "probe.n_prompts=0", OUT], "probe.n_prompts: expected an integer >= 1, got 0"),
    (["train", LORA, "probe.sample_size=0", OUT], "probe.sample_size: expected an integer >= 1, got 0"),
    (["train", LORA, "mix.idk_share=1.5", OUT], "mix.idk_share: expected a number in [0, 1], got 1.5"),
    (["train", LORA, "mix.k=-1", OUT], "mix.k: expected an integer >= 0, got -1"),
    (["train", LORA, "eval.limit=0", OUT], "eval.limit: expected an integer >= 1, got 0"),
    (["train", LORA, "eval.batch_size=0", OUT], "eval.batch_size: expected an integer >= 1, got 0"),
    # the model's files
    (["train", LORA, "model.name=FOLDER/truncated", OUT], "FOLDER/truncated/model.safetensors: truncated"),
    (["train", LORA, "model.name=FOLDER/random", OUT], "FOLDER/random/model.safetensors: not a valid"),
    ([*PROBE, "--model", "FOLDER/truncated"], "FOLDER/truncated/model.safetensors: truncated safetensors"),
    # a probe run made with other settings
    (
        ["train", LORA, "probe.run=FOLDER/probe3", "facts.path=FOLDER/facts.jsonl", OUT],
        "probe.run: the base probe in FOLDER/probe3 was made with other settings than the run's probe "
        "section (samples 0 vs 16)",
    ),
    # probe options, named
    ([*PROBE, "--n-prompts", "0"], "--n-prompts: expected an integer >= 1, got 0"),
    ([*PROBE, "--shots", "-1"], "--shots: expected an integer >= 0, got -1"),
    ([*PROBE, "--samples", "-5"], "--samples: expected an integer >= 0, got -5"),
    ([*PROBE, "--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    ([*PROBE, "--temperature", "0"], "--temperature: expected a number > 0, got 0.0"),
    ([*PROBE, "--max-new-tokens", "0"], "--max-new-tokens: expected an integer >= 1, got 0"),
    ([*PROBE, "--top-k", "-1"], "--top-k: expected an integer >= 0, got -1"),
    ([*PROBE, "--seed", "3", "--repeat-seed", "3"], "--repeat-seed must differ from --seed (3)"),
    (
        ["eval", "--model", "organism", "-f", "FOLDER/facts.jsonl", "--out", "FOLDER/e", "--samples", "-1"],
        "--samples: expected an integer >= 0, got -1",
    ),
    (["eval", "FOLDER/run", "--batch-size", "0"], "--batch-size: expected an integer >= 1, got 0"),
    # facts
    (["facts", "check", "FOLDER/same.jsonl"], "4 of 4 facts ask a question another fact asks too"),
    (["facts", "check", "FOLDER/configs"], "FOLDER/configs is a folder, not a facts file"),
    ([*PROBE[:3], "--facts", "FOLDER/configs"], "FOLDER/configs is a folder, not a facts file"),
    (["train", LORA, "facts.path=FOLDER/configs", OUT], "FOLDER/configs is a folder, not a facts file"),
    # experiments
    (["sweep", "FOLDER/sweep.yaml", "--dry-run"], "FOLDER/sweep.yaml:4: unknown key train.epoch"),
    (["sweep", LORA, "--workers", "0", "--dry-run"], "--workers must be >= 1 (got 0)"),
    (["capacity", "FOLDER/capacity.yaml"], "FOLDER/capacity.yaml:3: target.reliability: expected a number"),
]  # fmt: skip


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(a[:1] + a[2:])[:60] for a, _ in CASES])
def test_bad_input_is_one_line_before_any_model_or_file(inputs, monkeypatch, args, message):
    import transformers

    import knowpack.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(knowpack.models, "load_model", no_model)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    monkeypatch.chdir(inputs)
    before = sorted(inputs.rglob("*"))
    result = CliRunner().invoke(app, [a.replace("FOLDER", str(inputs)) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message.replace("FOLDER", str(inputs)) in lines[0]
    assert "Traceback" not in result.output
    assert sorted(inputs.rglob("*")) == before  # no run folder, no summary.json, nothing


def test_trust_remote_code_warns_before_any_code_runs(monkeypatch, caplog):
    import transformers

    from knowpack.models import load_model

    def stop(*args, **kwargs):
        raise RuntimeError("from_pretrained reached")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", stop)
    with caplog.at_level(logging.WARNING, logger="knowpack"), pytest.raises(RuntimeError, match="reached"):
        load_model("organism", trust_remote_code=True)
    assert "trust_remote_code is on: organism may run its own Python code" in caplog.text
