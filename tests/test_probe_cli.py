"""`knowpack probe` end to end on a tiny random Llama saved to disk: the files, shards + merge, the noise
floor, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from helpers import engine_facts
from knowpack.cli import app
from knowpack.probe import CATEGORIES, read_records

runner = CliRunner()
FAST = ["--n-prompts", "2", "--shots", "2", "--samples", "2", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """A facts file and a tiny Llama folder (safetensors, tokenizer without a chat template)."""
    from knowpack.world.tokenizer import train_tokenizer
    from tiny import tiny_model

    torch.set_num_threads(1)  # tiny matrices: one thread is fastest (see test_probe_engine.one_thread)
    root = tmp_path_factory.mktemp("probe_cli")
    facts = engine_facts()
    (root / "facts.jsonl").write_text("".join(json.dumps(f.to_json()) + "\n" for f in facts))
    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in facts]
    tokenizer = train_tokenizer(texts, vocab_size=300, out=root / "model")
    for path in (root / "model").glob("chat_template*"):  # a tokenizer without a chat template
        path.unlink()
    tiny_model("llama", tokenizer).save_pretrained(root / "model")
    return root


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_probe_writes_records_and_summary_then_shards_merge_to_the_same(paths):
    base = ["probe", "--model", paths / "model", "--facts", paths / "facts.jsonl", *FAST, "--device", "cpu"]
    result = invoke(*base, "--out", paths / "whole", "--repeat-seed", "7")
    assert result.exit_code == 0, result.output
    whole = read_records(paths / "whole" / "records.jsonl")
    assert len(whole) == 16
    assert {"id", "category", "p_greedy", "p_sample", "greedy", "samples"} <= set(whole[0])
    summary = json.loads((paths / "whole" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["settings"]["seed"] == 0
    noise = json.loads((paths / "whole" / "noise_floor.json").read_text())
    assert noise["n"] == 16 and set(noise["counts"]) == set(CATEGORIES)
    assert (paths / "whole" / "repeat-seed-7" / "records.jsonl").exists()

    for shard in ("0/2", "1/2"):
        result = invoke(*base, "--out", paths / "sharded", "--shard", shard)
        assert result.exit_code == 0, result.output
    result = invoke("probe", "--merge", "--out", paths / "sharded")
    assert result.exit_code == 0, result.output
    merged = {r["id"]: r for r in read_records(paths / "sharded" / "records.jsonl")}
    assert merged.keys() == {r["id"] for r in whole}
    for r in whole:  # the same answers; log-probabilities up to float rounding (other batches, other padding)
        assert merged[r["id"]]["greedy_logprob"] == pytest.approx(r["greedy_logprob"], abs=1e-4)
        assert {**merged[r["id"]], "greedy_logprob": None} == {**r, "greedy_logprob": None}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/2"], "error: bad shard '3/2': need 0 <= i < n (shards are 0-based)\n"),
        (["--prompt-format", "chat"], "error: tokenizer "),
        (["--model", "/no/such/model"], "error: model folder not found: /no/such/model\n"),
        (["--facts", "missing.jsonl"], "error: missing.jsonl: no such file or directory\n"),
        (["--mode", "fuzzy"], "error: unknown correctness mode 'fuzzy'"),
        (["--facts", "bad-answers.jsonl"], "error: bad-answers.jsonl:2: field 'answers': is an empty list\n"),
        (["--facts", "bad-json.jsonl"], "error: bad-json.jsonl:2: malformed JSON: "),
        (["--facts", "empty.jsonl"], "error: empty.jsonl: no facts found\n"),
        (["--exemplars", "missing.jsonl"], "error: missing.jsonl: no such file or directory\n"),
        (["--backend", "tpu"], "error: unknown backend 'tpu'; expected torch or vllm\n"),
        (["--backend", "vllm", "--device", "cpu"], "error: --device is for the torch backend; "),
        (["--backend", "vllm"], "error: the vLLM backend needs vLLM, which is not installed: pip install "),
    ],
)
def test_bad_input_is_one_line_and_exit_1(paths, args, message, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as where vLLM is not installed, also if it is here
    monkeypatch.chdir(paths)
    good = '{"id": "a", "question": "Where was Ada born?", "answers": ["Paris"]}\n'
    (paths / "bad-answers.jsonl").write_text(good + '{"id": "b", "question": "Q?", "answers": []}\n')
    (paths / "bad-json.jsonl").write_text(good + "{not json\n")
    (paths / "empty.jsonl").write_text("")
    base = {"--model": paths / "model", "--facts": paths / "facts.jsonl"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    result = invoke("probe", *flat, *FAST, "--out", paths / "bad")
    assert result.exit_code == 1, result.output
    # one line, and the last one (loading a model may show transformers' progress bar before it)
    error = result.stderr[result.stderr.index("error: ") :]
    assert error.startswith(message) and error.count("\n") == 1, result.stderr


def test_help_shows_the_backends():
    result = runner.invoke(app, ["probe", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0
    assert "--backend" in result.output and "pip install 'knowpack[vllm]'" in result.output
