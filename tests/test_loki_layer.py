"""The LoKI layer on tiny random Llama, Qwen2 and Mistral models (and the organism), LoKI and LoKI*:
only the chosen rows train, the forward and its gradients are those of the nn.Linear with the rows written
in, save -> load onto a fresh base -> merge -> export give the trained logits, and bad input is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub

import knowpack  # noqa: E402
from knowpack.errors import KnowpackError  # noqa: E402
from knowpack.methods.loki.layer import (  # noqa: E402
    LokiLinear,
    apply_loki,
    export_loki,
    load_loki,
    loki_modules,
    merge_loki,
    read_loki,
    save_loki,
)
from knowpack.models import module_name  # noqa: E402
from tiny import tiny_model  # noqa: E402

FAMILIES = ["llama", "qwen2", "mistral"]
METHODS = {"loki": {}, "loki*": {"lora_rank": 4, "lora_alpha": 8.0}}
SELECTION = {0: [1, 5, 9, 30], 1: [0, 17]}  # tiny models: down_proj 32 x 64
CASES = [(family, method) for family in FAMILIES for method in METHODS]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(knowpack.organism_dir())  # a real tokenizer, no download


def batch(seed: int = 0, vocab: int = 2048) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 9), generator=torch.Generator().manual_seed(seed))


def train(model, steps: int = 3, lr: float = 1e-2, all_params: bool = False) -> torch.optim.Optimizer:
    """A few AdamW steps with weight decay. `all_params`: hand the optimizer every parameter, as careless
    code would; frozen ones get no grad, so AdamW gives them no state and no decay."""
    params = list(model.parameters()) if all_params else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    model.train()
    for step in range(steps):
        ids = batch(step)
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    return opt


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def down(model, layer: int) -> nn.Module:
    return model.get_submodule(module_name(model, layer, "down_proj"))


def down_key(model, layer: int) -> str:
    return module_name(model, layer, "down_proj") + ".weight"


def assert_only_chosen_rows_differ(before: dict, after: dict, model, selection: dict) -> None:
    assert before.keys() == after.keys()
    chosen = {down_key(model, layer): rows for layer, rows in selection.items() if rows}
    for key, old in before.items():
        new = after[key]
        assert new.dtype == old.dtype, key
        if key not in chosen:
            assert torch.equal(new, old), f"{key} changed"
            continue
        changed = (new != old).any(dim=1).nonzero().flatten().tolist()
        assert changed == chosen[key], f"{key}: rows {changed} changed, chose {chosen[key]}"


@pytest.mark.parametrize("family,method", CASES)
def test_only_the_chosen_rows_are_trainable(tokenizer, family, method):
    model = tiny_model(family, tokenizer)
    apply_loki(model, SELECTION, **METHODS[method])
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    prefix = {layer: module_name(model, layer, "down_proj") for layer in SELECTION}
    if method == "loki":
        assert trainable.keys() == {f"{prefix[layer]}.rows" for layer in SELECTION}
        for layer, rows in SELECTION.items():
            assert trainable[f"{prefix[layer]}.rows"].shape == (len(rows), 64)
    else:
        names = {f"{prefix[layer]}.{ab}" for layer in SELECTION for ab in ("lora_A", "lora_B")}
        assert trainable.keys() == names
        assert trainable[f"{prefix[1]}.lora_A"].shape == (4, 64)
        assert trainable[f"{prefix[1]}.lora_B"].shape == (2, 4)
    assert all(p.dtype == torch.float32 for p in trainable.values())
    assert set(loki_modules(model)) == {0, 1}
    # the frozen weight keeps its state-dict key; the wrapper adds only its own parameters
    assert down_key(model, 0) in model.state_dict()


@pytest.mark.parametrize("family,method", CASES)
def test_training_changes_only_the_chosen_rows(tokenizer, family, method):
    model = tiny_model(family, tokenizer)
    before = snapshot(model)
    apply_loki(model, SELECTION, **METHODS[method])
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = train(model, all_params=True)

    for name, param in model.named_parameters():  # weight decay never reached a frozen weight
        if not param.requires_grad:
            assert torch.equal(param, frozen[name]), name
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(opt.state) == len(trainable) and all(p in opt.state for p in trainable)
    merge_loki(model)
    assert_only_chosen_rows_differ(before, snapshot(model), model, SELECTION)


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_and_gradients_equal_the_linear_with_the_rows_written_in(tokenizer, family):
    model, reference = tiny_model(family, tokenizer), tiny_model(family, tokenizer)
    apply_loki(model, SELECTION)
    torch.manual_seed(5)
    with torch.no_grad():
        for layer, module in loki_modules(model).items():
            module.rows.normal_(0, 0.3)
            down(reference, layer).weight[SELECTION[layer]] = module.rows
    for p in reference.parameters():
        p.requires_grad_(False)
    ids = batch()
    outputs = []
    for m in (model, reference):
        embeds = m.get_input_embeddings()(ids).detach().requires_grad_()
        for layer in SELECTION:
            down(m, layer).weight.requires_grad_(m is reference)
        logits = m(inputs_embeds=embeds).logits
        logits.square().mean().backward()
        outputs.append((logits.detach(), embeds.grad))
    assert torch.equal(outputs[0][0], outputs[1][0])  # bit for bit the substituted nn.Linear
    torch.testing.assert_close(outputs[0][1], outputs[1][1], rtol=1e-5, atol=1e-7)
    for layer, module in loki_modules(model).items():
        ref_grad = down(reference, layer).weight.grad
        torch.testing.assert_close(module.rows.grad, ref_grad[SELECTION[layer]], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("bias,shape", [(True, (3, 5, 64)), (False, (7, 64))])
def test_loki_linear_with_bias_and_any_batch_shape(bias, shape):
    torch.manual_seed(0)
    base = nn.Linear(64, 32, bias=bias)
    layer = LokiLinear(base, [2, 3, 31])
    with torch.no_grad():
        layer.rows.add_(1.0)
        plain = nn.Linear(64, 32, bias=bias)
        plain.load_state_dict(base.state_dict())
        plain.weight[[2, 3, 31]] = layer.rows
    x = torch.randn(*shape, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    assert torch.equal(layer(x), plain(x_ref))
    layer(x).sum().backward()
    plain(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(layer.rows.grad, plain.weight.grad[[2, 3, 31]])
    assert base.weight.grad is None and (base.bias is None or base.bias.grad is None)


@pytest.mark.parametrize("family", FAMILIES)
def test_loki_star_starts_as_the_base_and_trains_only_chosen_rows(tokenizer, family):
    model = tiny_model(family, tokenizer)
    ids = batch()
    with torch.no_grad():
        base_logits = model(ids).logits
    apply_loki(model, SELECTION, lora_rank=4, lora_alpha=8.0, lora_dropout=0.1)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, base_logits)  # B = 0: exactly the base
    train(model)
    assert all(m.lora_B.abs().sum() > 0 for m in loki_modules(model).values())
    with torch.no_grad():
        assert not torch.allclose(model(ids).logits, base_logits)


@pytest.mark.parametrize("family,method", CASES)
@pytest.mark.parametrize("merge", [True, False])
def test_save_then_load_onto_a_fresh_base_gives_the_trained_logits(
    tokenizer, tmp_path, family, method, merge
):
    model = tiny_model(family, tokenizer)
    apply_loki(model, SELECTION, **METHODS[method])
    train(model)
    ids = batch(7)
    with torch.no_grad():
        trained = model(ids).logits
    save_loki(model, tmp_path / "loki", settings={"quota": 10, "strategy": "layer_low"})

    meta, tensors = read_loki(tmp_path / "loki")
    assert meta["selection"] == {str(k): v for k, v in SELECTION.items()}
    assert meta["shape"] == {"model_type": family, "num_layers": 2, "rows": 32, "cols": 64}
    assert meta["settings"] == {"quota": 10, "strategy": "layer_low"}
    assert (meta["lora"] is None) == (method == "loki")
    assert tensors["layers.1.rows"].shape == (2, 64) and tensors["layers.1.rows"].dtype == torch.float32
    for layer, module in loki_modules(model).items():
        assert torch.equal(tensors[f"layers.{layer}.rows"], module.trained_rows())

    fresh = load_loki(tiny_model(family, tokenizer), tmp_path / "loki", merge=merge)
    assert bool(loki_modules(fresh)) is not merge
    with torch.no_grad():
        logits = fresh(ids).logits
    if method == "loki" or not merge:
        assert torch.equal(logits, trained)
    else:  # LoKI* merged: (W + s B A) x instead of W x + s B (A x), rounding apart
        torch.testing.assert_close(logits, trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family,method", CASES)
def test_merge_gives_a_plain_model_with_the_trained_logits(tokenizer, family, method):
    model = tiny_model(family, tokenizer)
    names = [n for n, _ in model.named_parameters()]
    apply_loki(model, SELECTION, **METHODS[method])
    train(model)
    ids = batch(3)
    with torch.no_grad():
        trained = model(ids).logits
    merge_loki(model)
    assert loki_modules(model) == {}
    assert type(down(model, 0)) is nn.Linear
    assert [n for n, _ in model.named_parameters()] == names
    with torch.no_grad():
        logits = model(ids).logits
    if method == "loki":
        assert torch.equal(logits, trained)
    else:
        torch.testing.assert_close(logits, trained, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_bf16_base_keeps_frozen_weights_bf16(tokenizer, method):
    model = tiny_model("llama", tokenizer).to(torch.bfloat16)
    before = snapshot(model)
    apply_loki(model, SELECTION, **METHODS[method])
    assert all(p.dtype == torch.bfloat16 for p in model.parameters() if not p.requires_grad)
    assert all(p.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    train(model, lr=5e-2)
    ids = batch(4)
    with torch.no_grad():
        trained = model(ids).logits
    assert trained.dtype == torch.bfloat16
    merge_loki(model)
    after = snapshot(model)
    assert all(v.dtype == torch.bfloat16 for v in after.values())
    assert_only_chosen_rows_differ(before, after, model, SELECTION)
    if method == "loki":  # the fp32 rows, rounded to bf16 once: merging changes no logit
        with torch.no_grad():
            assert torch.equal(model(ids).logits, trained)


def test_under_autocast_equals_the_linear_with_the_rows_written_in(tokenizer):
    model, reference = tiny_model("qwen2", tokenizer), tiny_model("qwen2", tokenizer)
    apply_loki(model, SELECTION)
    with torch.no_grad():
        for layer, module in loki_modules(model).items():
            module.rows.add_(0.25)
            down(reference, layer).weight[SELECTION[layer]] = module.rows
    ids = batch(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids, labels=ids)
        ref = reference(ids).logits
    assert torch.equal(logits.logits, ref)
    logits.loss.backward()
    assert all(
        m.rows.grad is not None and m.rows.grad.dtype == torch.float32 for m in loki_modules(model).values()
    )


def test_layers_without_rows_stay_frozen_and_unwrapped(tokenizer):
    model = tiny_model("llama", tokenizer)
    before = snapshot(model)
    apply_loki(model, {"0": [], 1: [3]})
    assert set(loki_modules(model)) == {1}
    train(model)
    merge_loki(model)
    assert_only_chosen_rows_differ(before, snapshot(model), model, {1: [3]})


def test_shape_mismatch_and_bad_selections_are_one_line_errors(tokenizer, tmp_path):
    import transformers

    model = tiny_model("llama", tokenizer)
    save_loki(apply_loki(model, SELECTION), tmp_path / "loki")
    other = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    bad = transformers.AutoModelForCausalLM.from_config(other)
    cases = [
        (lambda: load_loki(bad, tmp_path / "loki"), "saved for a model with 2 layers, down_proj 32x64"),
        (lambda: load_loki(tiny_model("qwen2", tokenizer), tmp_path), "no selection.json"),
        (
            lambda: apply_loki(tiny_model("llama", tokenizer), {2: [0]}),
            "layer 2; the llama model has 2 layers",
        ),
        (lambda: apply_loki(tiny_model("llama", tokenizer), {0: [32]}), "row 32 is out of range"),
        (lambda: apply_loki(tiny_model("llama", tokenizer), {0: [4, 4]}), "row 4 is listed twice"),
        (lambda: apply_loki(tiny_model("llama", tokenizer), {"x": [1]}), "'x' is not a layer number"),
        (lambda: apply_loki(tiny_model("llama", tokenizer), {0: [1.5]}), "rows must be integers"),
        (lambda: apply_loki(model, SELECTION), "already has LoKI layers"),
        (lambda: apply_loki(tiny_model("llama", tokenizer), SELECTION, lora_alpha=4), "need lora_rank"),
        (lambda: apply_loki(tiny_model("llama", tokenizer), SELECTION, lora_rank=0), "lora_rank must be"),
        (lambda: save_loki(tiny_model("llama", tokenizer), tmp_path / "x"), "no LoKI layers to save"),
    ]
    gpt2 = transformers.AutoModelForCausalLM.from_config(
        transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16)
    )
    cases.append((lambda: apply_loki(gpt2, {0: [1]}), "unsupported model family 'gpt2'"))
    for call, message in cases:
        with pytest.raises(KnowpackError) as info:
            call()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert not (tmp_path / "x").exists()
    # a failed apply left the model untouched: nothing wrapped, everything still trainable
    fresh = tiny_model("llama", tokenizer)
    with pytest.raises(KnowpackError):
        apply_loki(fresh, {0: [1], 1: [99]})
    assert loki_modules(fresh) == {} and all(p.requires_grad for p in fresh.parameters())


@pytest.mark.slow
def test_export_loads_in_a_fresh_process_with_the_trained_logits(tokenizer, tmp_path):
    from safetensors.torch import load_file

    base_dir = tmp_path / "base"
    tiny_model("mistral", tokenizer).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    base = load_file(base_dir / "model.safetensors")
    ids, trained = batch(11), {}
    torch.save(ids, tmp_path / "ids.pt")
    for method, options in METHODS.items():
        model = tiny_model("mistral", tokenizer)
        apply_loki(model, SELECTION, **options)
        train(model)
        with torch.no_grad():
            trained[method] = model(ids).logits
        save_loki(model, tmp_path / method / "loki")
        out = export_loki(base_dir, tmp_path / method / "loki", tmp_path / method / "export")
        exported = load_file(out / "model.safetensors")
        assert_only_chosen_rows_differ(base, exported, model, SELECTION)
        assert json.loads((out / "config.json").read_text())["model_type"] == "mistral"

    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "ids = torch.load(sys.argv[1])\n"
        "for path in sys.argv[2:]:\n"
        "    model = AutoModelForCausalLM.from_pretrained(path + '/export').eval()\n"
        "    with torch.no_grad():\n"
        "        torch.save(model(ids).logits, path + '/logits.pt')\n"
    )
    folders = [str(tmp_path / method) for method in METHODS]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "ids.pt"), *folders], check=True, env=env)
    for method in METHODS:
        logits = torch.load(tmp_path / method / "logits.pt")
        torch.testing.assert_close(logits, trained[method], rtol=1e-5, atol=1e-5)


@pytest.mark.organism
@pytest.mark.parametrize("method", METHODS)
def test_on_the_organism(tmp_path, method):
    model, tok = knowpack.load_model("organism", device="cpu")
    before = snapshot(model)
    rows = model.config.hidden_size
    gen = torch.Generator().manual_seed(0)
    selection = {
        layer: sorted(torch.randperm(rows, generator=gen)[: rows // 10].tolist())
        for layer in range(model.config.num_hidden_layers)
    }  # q = 10 in every layer
    apply_loki(model, selection, **METHODS[method])
    ids = tok(["Question: Where was Ada born?\nAnswer: Paris"], return_tensors="pt")["input_ids"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.1)
    for _ in range(2):
        model(ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    with torch.no_grad():
        trained = model(ids).logits
    save_loki(model, tmp_path / "loki")
    fresh, _ = knowpack.load_model("organism", device="cpu")
    load_loki(fresh, tmp_path / "loki")
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, trained, rtol=1e-5, atol=1e-5)
    merge_loki(model)
    assert_only_chosen_rows_differ(before, snapshot(model), model, selection)
