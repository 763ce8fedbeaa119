"""`method.name: peft`: any PEFT tuner as a method row, its options checked by PEFT's own config class, the
mlp / attn groups expanded from the architecture table; each case trains a tiny Llama, saves a PEFT adapter,
and exports a plain checkpoint whose logits equal base + adapter. IA3's adapter loads with plain PEFT in a
fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from helpers import overrides
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.runs import run_status
from knowpack.train import load_config, train

pytestmark = pytest.mark.usefixtures("one_thread")

CASES = [
    ("IA3", ["method.target_modules=[mlp]", "method.feedforward_modules=[mlp]"]),
    ("IA3", ["method.target_modules=[attn, down_proj]", "method.feedforward_modules=[down_proj]"]),
    ("VERA", ["method.r=4", "method.target_modules=[attn]"]),
    ("LOHA", ["method.r=2", "method.alpha=4", "method.target_modules=[mlp]"]),
    ("LOKR", ["method.r=2", "method.target_modules=all-linear"]),
    (
        "ADALORA",
        ["method.init_r=4", "method.target_r=2", "method.total_step=2", "method.target_modules=[mlp]"],
    ),
    ("lora", ["method.r=2", "method.target_modules=[mlp]", "method.use_rslora=true"]),  # case-insensitive
]


@pytest.mark.parametrize("peft_type, extra", CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CASES)])
def test_a_peft_tuner_trains_saves_and_exports(world, tmp_path, peft_type, extra):
    args = overrides(world, "llama", tmp_path / "run", "peft", f"method.peft_type={peft_type}", *extra)
    run = train(load_config(None, args))
    assert run_status(run) == "finished"
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["peft_type"] == peft_type.upper() and adapter["task_type"] == "CAUSAL_LM"
    groups = {"mlp": {"gate_proj", "up_proj", "down_proj"}, "attn": {"q_proj", "k_proj", "v_proj", "o_proj"}}
    wanted = next(e for e in extra if e.startswith("method.target_modules=")).split("=")[1].strip("[]")
    if wanted != "all-linear":
        names = set().union(*(groups.get(n.strip(), {n.strip()}) for n in wanted.split(",")))
        assert set(adapter["target_modules"]) == names  # the groups expanded from the architecture table
    summary = json.loads((run / "train.json").read_text())
    assert summary["method"] == "peft" and summary["trainable_parameters"] > 0
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]

    from transformers import AutoModelForCausalLM

    from knowpack.train.export import export_run, load_run

    trained, tok, _ = load_run(run, device="cpu")
    plain = AutoModelForCausalLM.from_pretrained(export_run(run, tmp_path / "export")).eval()
    base = AutoModelForCausalLM.from_pretrained(world["models"]["llama"]).eval()
    ids = torch.tensor([tok("Question: Where was Ada Brown born?\nAnswer:")["input_ids"]])
    with torch.no_grad():
        want, got = trained(ids).logits, plain(ids).logits
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(base(ids).logits, got)  # training changed something


@pytest.mark.slow  # a fresh Python process imports torch, transformers and peft: ~10 s
def test_an_ia3_adapter_loads_with_plain_peft_in_a_fresh_process(world, tmp_path):
    args = overrides(
        world, "llama", tmp_path / "run", "peft", "method.peft_type=IA3", "method.target_modules=[mlp]",
        "method.feedforward_modules=[mlp]",
    )  # fmt: skip
    run = train(load_config(None, args))
    from knowpack.train.export import load_run

    trained, tok, _ = load_run(run, device="cpu")
    ids = tok("Question: Where was Bo Chen born?\nAnswer:")["input_ids"]
    with torch.no_grad():
        want = trained(torch.tensor([ids])).logits[0, -1]
    code = (
        "import torch; from transformers import AutoModelForCausalLM; from peft import PeftModel\n"
        f"base = AutoModelForCausalLM.from_pretrained({str(world['models']['llama'])!r})\n"
        f"m = PeftModel.from_pretrained(base, {str(run / 'adapter')!r}).eval()\n"
        "assert type(m.peft_config['default']).__name__ == 'IA3Config'\n"
        f"print(m(torch.tensor([{ids!r}])).logits[0, -1].tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = torch.tensor(json.loads(result.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["method.target_modules=[mlp]"], "method peft needs method.peft_type"),
        (["method.peft_type=NOPE"], "method.peft_type is 'NOPE'; expected one of"),
        (
            ["method.peft_type=PREFIX_TUNING"],
            "method.peft_type PREFIX_TUNING does not change the model's weights",
        ),
        (["method.peft_type=IA3", "method.rank=4"], "unknown key method.rank for PEFT IA3Config"),
        (["method.peft_type=IA3", "method.task_type=SEQ_CLS"], "unknown key method.task_type"),
        (
            [
                "method.peft_type=IA3",
                "method.target_modules=[q_proj]",
                "method.feedforward_modules=[down_proj]",
            ],
            "method.feedforward_modules: `feedforward_modules` should be a subset of `target_modules`",
        ),
    ],
)
def test_bad_peft_options_are_one_line_before_any_model_is_loaded(
    world,
    tmp_path,
    extra,
    message,
    monkeypatch,
):
    import knowpack.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(knowpack.models, "load_model", no_model)
    args = overrides(world, "llama", tmp_path / "run", "peft", *extra)
    result = CliRunner().invoke(app, ["train", "/dev/null", *args])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith("error: command line: ") and message in line and "\n" not in line
    assert not (tmp_path / "run").exists()


def test_the_peft_options_name_their_line_in_the_config_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "method:\n  name: peft\n  peft_type: LOHA\n  r: 2\n  rank_dropout: 0.1\n  colour: red\n"
    )
    with pytest.raises(KnowpackError, match=r"run.yaml:6: unknown key method.colour for PEFT LoHaConfig"):
        load_config(config)
    config.write_text("method:\n  name: peft\n  peft_type: LOHA\n  r: 2\n")
    assert load_config(config).to_dict()["method"] == {"name": "peft", "peft_type": "LOHA", "r": 2}
