"""Every preset in configs/ is a valid run config, and the paper presets run, unchanged but for the model and
the data, on a tiny random model of the same family (the real ones need a GPU and the Hub)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import make_facts
from knowpack.runs import run_status
from knowpack.train import load_config, train
from tiny import save_tiny, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = sorted(p for d in ("organism", "paper", "smollm2") for p in (CONFIGS / d).glob("*.yaml"))


def test_there_are_presets():
    names = {p.relative_to(CONFIGS).as_posix() for p in PRESETS}
    assert {"organism/lora.yaml", "organism/loki.yaml", "organism/full.yaml"} <= names
    assert {"paper/llama31-8b-lora.yaml", "paper/mistral7b-lora.yaml"} <= names
    assert {"smollm2/lora.yaml", "smollm2/loki.yaml", "smollm2/full.yaml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_every_preset_loads_and_starts_with_the_command_that_runs_it(path):
    config = load_config(path, ["out=somewhere"])
    assert path.read_text().startswith(f"# knowpack train configs/{path.relative_to(CONFIGS).as_posix()}")
    assert config.out == "somewhere"


@pytest.mark.parametrize(
    "preset, family",
    [
        ("paper/llama31-8b-lora.yaml", "llama"),
        ("paper/llama31-8b-lora-code.yaml", "llama"),
        ("paper/mistral7b-lora.yaml", "mistral"),
        ("paper/llama31-8b-loki.yaml", "llama"),
    ],
)
def test_paper_presets_run_on_a_tiny_model_of_the_same_family(tmp_path, preset, family):
    facts = make_facts()
    from knowpack.facts import save_facts

    save_facts(facts, tmp_path / "facts.jsonl")
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts]
    tok = tiny_tokenizer(texts + ["Answer the following question."], tmp_path / "tok")
    model = save_tiny(family, tok, tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f.question}]}) + "\n" for f in facts)
    )
    overrides = [
        f"model.name={model}",
        "model.dtype=float32",
        f"facts.path={tmp_path / 'facts.jsonl'}",
        "probe.n_prompts=2",
        "probe.max_new_tokens=4",
        "mix.n_unknown=2",
        "train.epochs=1",
        "train.precision=fp32",  # bf16 autocast on CPU is slow and not what the presets check
        "model.device=cpu",
        f"out={tmp_path / 'run'}",
    ]
    config = load_config(CONFIGS / preset, overrides)
    if config.method.name == "loki":
        config.method.options["prompts"] = str(prompts)
    run = train(config)
    assert run_status(run) == "finished"
    resolved = load_config(run / "config.yaml")
    assert resolved.method == config.method and resolved.train.format == "chat"
