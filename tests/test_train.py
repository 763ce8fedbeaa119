"""`knowpack train` and `knowpack export` end to end on tiny random Llama / Qwen2 / Mistral checkpoints (saved
locally, no download): the run folder's files, per-epoch uptake in train.json, PEFT adapters that plain
`PeftModel.from_pretrained` loads in a fresh process, exports whose logits equal base + trained weights, a
killed run reported interrupted, and one-line errors for bad input before any model is loaded."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from helpers import SRC, make_facts, overrides, source_commit
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.runs import read_run, run_status
from knowpack.train import load_config, train

pytestmark = pytest.mark.usefixtures("one_thread")


CASES = [
    ("llama", "lora", ["method.r=2", "method.alpha=4", "train.format=chat"]),
    ("qwen2", "lora", ["method.r=2", "method.dora=true", "mix.add=paraphrase", "mix.k=1"]),
    ("mistral", "lora", ["method.rslora=true", "method.target_modules=[mlp, attn]", "train.loss_on=all"]),
    ("llama", "lora", ["method.init=pissa", "method.r=2"]),  # PiSSA changes the base: saved converted
    ("llama", "full", ["mix.add=highly_known", "mix.k=0"]),
    ("qwen2", "full", ["method.train_embeddings=false"]),
    ("mistral", "loki", ["method.quota=25", "method.prompts=PROMPTS"]),
    ("llama", "loki", ["method.quota=10", "method.prompts=PROMPTS", "method.lora_rank=2"]),
]


@pytest.mark.parametrize(
    "family, method, extra", CASES, ids=[f"{f}-{m}-{i}" for i, (f, m, _) in enumerate(CASES)]
)
def test_train_writes_the_run_folder_and_export_gives_the_trained_logits(
    world, tmp_path, family, method, extra
):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}\nAnswer:"}) + "\n" for f in make_facts())
    )
    extra = [e.replace("PROMPTS", str(prompts)) for e in extra]
    if "mix.k=0" in extra:
        extra.remove("mix.add=highly_known")
    out = tmp_path / "run"
    run = train(load_config(None, overrides(world, family, out, method, *extra)))
    assert run_status(run) == "finished"
    for name in ("config.yaml", "mix.jsonl", "mix.json", "train.json", "run.json"):
        assert (run / name).is_file(), name
    weights = {"lora": "adapter", "full": "model", "loki": "loki"}[method]
    assert (run / weights).is_dir() and not (run / f".{weights}.tmp").exists()
    summary = json.loads((run / "train.json").read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    for entry in summary["epochs"]:
        assert 0.0 <= entry["reliability"] <= 1.0 and entry["loss"] is not None and entry["loss"] > 0
    assert summary["implanted"] == 4 and summary["trainable_parameters"] > 0
    record = read_run(run)
    assert record["git_commit"] == source_commit()
    assert record["versions"]["torch"] and record["peak_memory"]["cpu_rss_mib"] > 0

    from knowpack.train.export import export_run, load_run

    trained, tok, _ = load_run(run, device="cpu")
    exported = export_run(run, tmp_path / "export")
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(exported).eval()
    ids = torch.tensor([tok("Question: Where was Ada Brown born?\nAnswer:")["input_ids"]])
    with torch.no_grad():
        want, got = trained(ids).logits, plain(ids).logits
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(world["models"][family]).eval()
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, got)  # training changed something
    if method == "loki":
        changed = {n for n, p in plain.state_dict().items() if not torch.equal(p, base.state_dict()[n])}
        assert changed and all(n.endswith("mlp.down_proj.weight") for n in changed)


def test_adapter_loads_with_plain_peft_in_a_fresh_process(world, tmp_path):
    run = train(load_config(None, overrides(world, "llama", tmp_path / "run", "lora", "method.r=2")))
    from knowpack.train.export import load_run

    trained, tok, _ = load_run(run, device="cpu")
    ids = tok("Question: Where was Bo Chen born?\nAnswer:")["input_ids"]
    with torch.no_grad():
        want = trained(torch.tensor([ids])).logits[0, -1]
    code = (
        "import sys, torch; from transformers import AutoModelForCausalLM; from peft import PeftModel\n"
        f"base = AutoModelForCausalLM.from_pretrained({str(world['models']['llama'])!r})\n"
        f"m = PeftModel.from_pretrained(base, {str(run / 'adapter')!r}).eval()\n"
        f"print(m(torch.tensor([{ids!r}])).logits[0, -1].tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_a_finished_run_is_not_redone_without_force(world, tmp_path):
    config = load_config(None, overrides(world, "llama", tmp_path / "run", "lora", "train.epochs=1"))
    train(config)
    with pytest.raises(KnowpackError, match="holds a finished run"):
        train(config)
    train(config, force=True)
    assert run_status(tmp_path / "run") == "finished"


def test_a_killed_run_is_interrupted_never_finished(world, tmp_path):
    out = tmp_path / "run"
    args = overrides(world, "llama", out, "full", "train.epochs=100000", "train.track_uptake=false")
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "knowpack", "train", "/dev/null", *args], env=env)
    try:
        deadline = time.time() + 120
        while not (out / "mix.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        assert (read_run(out) or {}).get("status") == "running"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert run_status(out) == "interrupted" and not (out / "train.json").exists()
    with pytest.raises(KnowpackError, match="interrupted, not finished"):
        from knowpack.train.export import export_run

        export_run(out, tmp_path / "export")
    # SIGTERM (a scheduler stopping the job) is written down as interrupted.
    proc = subprocess.Popen([sys.executable, "-m", "knowpack", "train", "/dev/null", *args], env=env)
    try:
        deadline = time.time() + 120
        while (read_run(out) or {}).get("pid") != proc.pid and time.time() < deadline:
            time.sleep(0.2)
        while not (out / "mix.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        proc.kill()
    assert read_run(out)["status"] == "interrupted"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["probe.run=/nonexistent/probe"], "probe.run: no probe records in /nonexistent/probe"),
        (["mix.n_unknown=6"], "mix.n_unknown is 6 but probe run"),
        (
            ["mix.add=highly_known", "mix.k=1"],
            "mix needs 4 HighlyKnown facts (n_unknown 4 x k 1) but probe run",
        ),
        (["mix.stratify=colour"], "mix.stratify is 'colour'"),
        (["train.epochs=ten"], "train.epochs: expected int"),
        (["method.r=0"], "method.r: expected an integer >= 1, got 0"),
        (["facts.path=/nonexistent.jsonl"], "nonexistent.jsonl"),
    ],
)
def test_bad_input_is_one_line_before_any_model_is_loaded(world, tmp_path, extra, message, monkeypatch):
    import knowpack.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(knowpack.models, "load_model", no_model)
    args = overrides(world, "llama", tmp_path / "run", "lora", *extra)
    result = CliRunner().invoke(app, ["train", "/dev/null", *args])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith("error: ") and message in line and "\n" not in line


@pytest.mark.parametrize("method", ["lora", "loki"])
def test_training_prints_nothing_and_drives_the_callers_bars(world, tmp_path, capfd, caplog, method):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Question: {f.question}"}) + "\n" for f in make_facts())
    )
    extra = ["method.r=2"] if method == "lora" else ["method.quota=10", f"method.prompts={prompts}"]
    calls: dict[str, list] = {}

    @contextlib.contextmanager
    def progress_bar(label):
        calls[label] = []
        yield lambda done, total, **fields: calls[label].append((done, total, fields))

    config = load_config(None, overrides(world, "llama", tmp_path / "run", method, "train.epochs=3", *extra))
    with caplog.at_level(logging.INFO, logger="knowpack"):
        train(config, progress_bar=progress_bar)
    out, err = capfd.readouterr()
    assert out == "" and "{'loss'" not in err and "'train_runtime':" not in err  # no dicts printed: logged
    assert any("step" in r.message and "loss" in r.message for r in caplog.records)
    steps = calls["training"]
    assert steps[0][:2] == (0, 3) and steps[-1][0] == steps[-1][1] == 3  # one step an epoch (8 rows, bs 4)
    last = steps[-1][2]
    assert last["epoch"] == "3/3" and last["loss"] > 0 and 0 <= last["reliability"] <= 1
    assert ("LoKI attribution" in " ".join(calls)) == (method == "loki")


def test_export_keeps_the_dtype_the_base_stores(world, tmp_path):
    """A base stored in bf16 and loaded in float32 (as SmolLM2's conversion is) exports in bf16, not at twice
    the size in float32."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from knowpack.train.export import export_run, stored_dtype

    base = tmp_path / "bf16"
    model = AutoModelForCausalLM.from_pretrained(world["models"]["llama"])
    model.to(torch.bfloat16).save_pretrained(base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "dtype": "float32"}))  # float32 in memory
    for path in Path(world["models"]["llama"]).glob("*token*"):
        (base / path.name).write_bytes(path.read_bytes())
    assert stored_dtype(base) == torch.bfloat16 and stored_dtype(world["models"]["llama"]) == torch.float32
    run = train(load_config(None, overrides(world, "llama", tmp_path / "run", "lora", f"model.name={base}")))
    exported = export_run(run, tmp_path / "export")
    with safe_open(str(exported / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    plain = AutoModelForCausalLM.from_pretrained(exported)
    assert not any("lora" in name for name, _ in plain.named_parameters())


def test_the_train_and_export_verbs_write_their_files(world, tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    args = overrides(world, "llama", run, "lora", "method.r=2")
    runner = CliRunner()
    result = runner.invoke(app, ["train", "/dev/null", *args])
    assert result.exit_code == 0, result.output
    assert (
        f"{run}: 4 facts implanted with lora, reliability " in result.output
        and "2 epochs (epochs)" in result.output
    )
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "mix.jsonl",
        "mix.json",
        "adapter",
        "train.json",
        "run.json",
    }
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        p.name for p in (run / "adapter").iterdir()
    }
    assert len((run / "mix.jsonl").read_text().splitlines()) == 4 and run_status(run) == "finished"
    assert read_run(run)["kind"] == "train" and read_run(run)["method"] == "lora"

    result = runner.invoke(app, ["export", str(run), "--out", str(export)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"exported to {export}"
    files = {p.name for p in export.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not any(name.startswith("adapter") for name in files)  # merged: a plain checkpoint
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(export)
    assert not any("lora" in name for name, _ in model.named_parameters())
    result = runner.invoke(app, ["export", str(run), "--out", str(export)])
    assert result.exit_code == 1 and "is not empty; use another --out or --force" in result.output
