"""Learned behaviour on the bundled organism (seeded, CPU): LoRA and LoKI implant Unknown facts to high
reliability, and the LoKI export differs from the organism only in the chosen down_proj rows."""

from __future__ import annotations

import json

import pytest
import torch

import knowpack
from knowpack.train import load_config, train

pytestmark = [pytest.mark.organism, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

FAST = ["probe.sample_size=150", "probe.samples=0", "mix.n_unknown=20", "train.epochs=12"]


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory):
    """One greedy probe of 150 organism facts, shared by the runs below."""
    from knowpack.train.run import run_base_probe

    out = tmp_path_factory.mktemp("probe") / "probe"
    run_base_probe(load_config("configs/organism/lora.yaml", [*FAST, f"probe.out={out}"]))
    return out


@pytest.mark.parametrize("preset", ["lora", "loki"])
def test_organism_presets_implant_unknown_facts(tmp_path, probe_run, preset):
    config = load_config(
        f"configs/organism/{preset}.yaml", [*FAST, f"probe.run={probe_run}", f"out={tmp_path / 'run'}"]
    )
    run = train(config)
    summary = json.loads((run / "train.json").read_text())
    first = summary["epochs"][0]["reliability"]
    assert summary["reliability"] >= 0.9, summary["epochs"]
    assert first < summary["reliability"]  # learned over the epochs, not there from the start
    records = {r["id"]: r for r in map(json.loads, (probe_run / "records.jsonl").read_text().splitlines())}
    implanted = json.loads((run / "mix.json").read_text())["implanted"]
    assert all(records[i]["category"] == "Unknown" for i in implanted)

    if preset == "loki":
        from transformers import AutoModelForCausalLM

        from knowpack.train.export import export_run

        exported = AutoModelForCausalLM.from_pretrained(
            export_run(run, tmp_path / "export"), dtype=torch.float32
        )
        base, _ = knowpack.load_model("organism", dtype="float32", device="cpu")
        selection = json.loads((run / "loki" / "selection.json").read_text())["selection"]
        base_state = base.state_dict()
        for name, tensor in exported.state_dict().items():
            if not name.endswith("mlp.down_proj.weight"):
                assert torch.equal(tensor, base_state[name]), name
                continue
            layer = int(name.split(".")[2])
            changed = (tensor != base_state[name]).any(dim=1).nonzero().flatten().tolist()
            assert set(changed) <= set(selection[str(layer)]) and changed
