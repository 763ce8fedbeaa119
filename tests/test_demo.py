"""`knowpack demo --quick` on the bundled organism, end to end: probe, LoRA and LoKI on the same Unknown
facts, evaluation, report; the files it writes and that they hold real, learned measurements."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from knowpack.cli import app
from knowpack.probe import read_records

pytestmark = [pytest.mark.organism, pytest.mark.slow]


def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    models = summary["models"]
    assert set(models) == {"base", "lora", "loki"}
    assert models["base"]["reliability"] == 0.0  # Unknown facts: never right before training
    assert models["lora"]["reliability"] >= 0.9 and models["loki"]["reliability"] >= 0.9
    assert models["base"]["world_mc"] > 0.9  # the organism knows its world (0.997 on every item)
    for m in ("lora", "loki"):  # retention counted here: untrained facts HighlyKnown before and after
        trained = {
            json.loads(line)["fact_id"] for line in (out / "runs" / m / "mix.jsonl").read_text().splitlines()
        }
        before = {r["id"]: r["category"] for r in read_records(out / "probe" / "records.jsonl")}
        after = {
            r["id"]: r["category"]
            for r in read_records(out / "runs" / m / "eval" / "probe" / "records.jsonl")
        }
        known = [i for i in before if i not in trained and before[i] == "HighlyKnown"]
        kept = sum(after[i] == "HighlyKnown" for i in known)
        assert models[m]["retention"] == pytest.approx(kept / len(known)), m
        assert summary["retention_measurement_null"][m] == 1.0  # a greedy probe: nothing can move
        assert 0 < summary["retention_prompt_sensitivity"][m] < 1  # other exemplars move some facts
    mixes = [json.loads((out / "runs" / m / "mix.json").read_text())["implanted"] for m in ("lora", "loki")]
    assert mixes[0] == mixes[1]  # the same facts for both methods
    for m in ("lora", "loki"):
        assert (out / "runs" / m / "eval.json").is_file()
    # held out: the LoKI run's attribution prompts (world_mc's attribution split) are no item world_mc scored
    selection = json.loads((out / "runs" / "loki" / "loki" / "selection.json").read_text())
    attribution = json.loads((Path(selection["settings"]["attribution"]) / "summary.json").read_text())
    scored = json.loads((out / "runs" / "loki" / "eval.json").read_text())["benchmarks"]["doc_ids"]
    assert attribution["prompt_ids"] == list(range(200, 240))  # --quick: the split's first 40 (200-394)
    assert scored["world_mc"] == list(range(40))  # --quick: the test split's first 40
    assert not set(attribution["prompt_ids"]) & set(scored["world_mc"])
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "loki" in page and "lora" in page
    assert "What the numbers mean" in page and "0.000 → " in page  # definitions; base → after
    assert isinstance(summary["notes"], list)  # the report's "Read this first", also in summary.json
    assert "reliab." in result.output and "report.html" in result.output
