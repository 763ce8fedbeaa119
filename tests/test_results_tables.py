"""scripts/results_tables.py: the tables render alike from run folders and from their compact records, and
`--check` fails when a generated table in RESULTS.md is not what the committed records give (CI runs it on
the repository's own RESULTS.md)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SPEC = importlib.util.spec_from_file_location("results_tables", ROOT / "scripts" / "results_tables.py")
results_tables = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(results_tables)


def fake_cell(
    folder: Path,
    method: str,
    seed: int,
    retention: float,
    geo: float,
    *,
    lr: float = 1e-3,
    reliability: float = 1.0,
    bits: float | None = None,
) -> None:
    """A finished, evaluated run folder with what the real-model tables read (and some they do not)."""
    folder.mkdir(parents=True)
    config = {
        "seed": seed,
        "mix": {"seed": seed, "n_unknown": 10, "add": "none", "k": 0},
        "method": {"name": method},
        "train": {"lr": lr, "epochs": 10, "target_reliability": 0.95, "seed": seed, "device": "cpu"},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "run.json").write_text(json.dumps({"status": "finished"}))
    epochs = [
        {"epoch": 1, "step": 3, "reliability": 0.5, "loss": 1.0},
        {"epoch": 2, "step": 6, "reliability": 1},
    ]
    (folder / "train.json").write_text(
        json.dumps({"epochs_run": 2, "kept_epoch": 2, "epochs": epochs, "trainable_parameters": 7})
    )
    task = {"acc": {"metric": "benchmark", "value": geo, "base": 0.8, "stderr": 0.01, "n": 100}}
    text = {} if bits is None else {"bits_per_byte": {"metric": "benchmark", "value": bits, "base": 1.0}}
    uptake = {"metric": "reliability", "value": reliability, "base": 0.0, "per_fact": [1, 2]}
    ev = {
        "uptake": {"reliability": uptake},
        "knowledge_shift": {"untrained": {"retention": {"value": retention, "base": 1.0, "n": 40}}},
        "benchmarks": {"tasks": {"geo_mc": task, "geo_misconceptions": task, "geo_text": text}},
    }
    (folder / "eval.json").write_text(json.dumps(ev))


@pytest.fixture()
def runs(tmp_path):
    real = tmp_path / "runs" / "smollm2-h"
    for seed, (lora, loki) in enumerate([(0.6, 0.9), (0.5, 0.8), (0.4, 0.85), (0.55, 0.95), (0.62, 0.9)]):
        fake_cell(real / f"lora-s{seed}", "lora", seed, lora, 0.78 + seed / 100)
        fake_cell(real / f"loki-s{seed}", "loki", seed, loki, 0.80 + seed / 200)
    return tmp_path


def test_records_render_the_tables_as_the_run_folders_do_and_check_catches_a_change(runs, capsys):
    records = runs / "records"
    args = [
        "--real",
        str(runs / "runs" / "smollm2-h"),
        "--runs",
        str(runs / "runs"),
        "--records",
        str(records),
    ]
    args += ["--capacity", str(runs / "none")]
    assert results_tables.main([*args, "--collect"]) == 0
    kept = json.loads((records / "smollm2-h.json").read_text())
    assert len(kept["cells"]) == 10 and "per_fact" not in json.dumps(kept)  # compact: no per-fact data
    from_runs = results_tables.real(runs / "runs" / "smollm2-h")
    assert results_tables.real(records / "smollm2-h.json") == from_runs
    assert (
        "Student-t intervals over seeds; ✓: reproduced, Holm-corrected over this table's 12 tests"
        in from_runs
    )

    results = runs / "RESULTS.md"
    results.write_text("# Results\n\n<!-- results_tables: real -->\nold\n<!-- /results_tables -->\n\nText.\n")
    assert results_tables.main([*args, "--check", str(results)]) == 1
    assert "table 'real' differs" in capsys.readouterr().err
    assert results_tables.main([*args, "--write", str(results)]) == 0
    assert from_runs in results.read_text() and results.read_text().endswith("\n\nText.\n")
    assert results_tables.main([*args, "--check", str(results)]) == 0
    results.write_text(results.read_text().replace("LoKI − LoRA", "LoKI - LoRA"))  # a hand edit
    assert results_tables.main([*args, "--check", str(results)]) == 1


def test_results_md_equals_what_its_committed_records_give():
    """The CI check: every generated table in RESULTS.md is what docs/results/records renders."""
    import os

    here = Path.cwd()
    try:
        os.chdir(ROOT)
        assert results_tables.main(["--check"]) == 0
    finally:
        os.chdir(here)


def fake_plan(folder: Path, scales: list[float], seeds: int) -> Path:
    """A finished plan folder (plan.json, trials/<i>/trial.json, trials/<i>/seed=<s>/): per method and lr
    scale, reliability rising and retention falling with the lr, LoKI keeping more than LoRA."""
    (folder / "trials").mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"status": "finished", "seeds": seeds}))
    keeps = {"lora": 0.6, "loki": 0.85, "full": 0.8}
    index = 0
    for method, keep in keeps.items():
        for scale in scales:
            trial = folder / "trials" / str(index)
            for seed in range(seeds):
                wobble = (seed % 3 - 1) / 50
                fake_cell(
                    trial / f"seed={seed}",
                    method,
                    seed,
                    keep - 0.1 * scale + wobble,
                    0.8,
                    lr=1e-3 * scale,
                    reliability=min(1.0, 0.7 + 0.1 * scale + wobble / 2),
                    bits=1.0 + scale / 10 + (0.1 if method == "lora" else 0.0),
                )
            params = {"method": method, "lr_scale": scale, "n_facts": 10}
            (trial / "trial.json").write_text(json.dumps({"index": index, "params": params}))
            index += 1
    return folder


def test_plan_tables_read_the_trials_alike_from_folders_and_records(tmp_path):
    headline = fake_plan(tmp_path / "headline", [1.0], seeds=10)
    fake_cell(headline / "trials" / "0" / "seed=10", "lora", 10, 0.0, 0.0)  # beyond the plan's seeds: unread
    front = fake_plan(tmp_path / "front", [0.3, 1.0, 2.0, 3.0], seeds=3)
    records = tmp_path / "records"
    args = ["--headline", str(headline), "--front", str(front), "--records", str(records)]
    args += ["--runs", str(tmp_path / "none"), "--real", str(tmp_path / "none")]
    assert results_tables.main([*args, "--capacity", str(tmp_path / "none"), "--collect"]) == 0
    kept = json.loads((records / "smollm2-headline.json").read_text())
    assert len(kept["cells"]) == 30 and kept["cells"][0]["params"]["lr_scale"] == 1.0
    text = results_tables.headline(headline)
    assert results_tables.headline(records / "smollm2-headline.json") == text
    # LoKI keeps 0.25 more retention than LoRA on every seed (paired): reproduced after Holm's correction
    assert "| LoKI − LoRA | 10 | +0.000 [+0.000, +0.000] | +0.250 [+0.250, +0.250] ✓ |" in text
    assert "| LoRA | 10 |" in text and "Holm-corrected over this table's 9 tests" in text
    table = results_tables.front(front)
    assert results_tables.front(records / "smollm2-front.json") == table
    assert "| LoKI | x0.3 (0.0003) | 3 | 0.730 [0.705, 0.755] |" in table
    # compared where both fronts reach, every resample counted: 3 seeds give intervals but no verdict
    assert "| 0.900 | LoKI − LoRA | +0.250 [+0.250, +0.250] (too few seeds) | 2000 of 2000 |" in table
    # the highest reliability both fronts reach (0.9967, rounded down: within reach), where a quarter of the
    # resamples fall short and are counted, not dropped
    assert "| 0.996 | LoKI − LoRA | +0.250 [+0.250, +0.250] (too few seeds) | 1482 of 2000 |" in table
