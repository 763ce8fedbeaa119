"""load_model on tiny random checkpoints (no downloads), and the architecture table."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub

from knowpack.errors import KnowpackError, ModelError  # noqa: E402
from knowpack.models import ARCHITECTURES, architecture, load_model, module_name  # noqa: E402

VOCAB = ["<unk>", "</s>", "Question:", "Answer:", "Where", "is", "Paris", "?", "France"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>")


def tiny_llama():
    from tiny import tiny_model

    return tiny_model("llama", tiny_tokenizer())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def test_load_model_from_a_local_folder(checkpoint):
    import torch

    model, tok = load_model(str(checkpoint), device="cpu")
    assert model.config.model_type == "llama" and not model.training
    assert next(model.parameters()).dtype == torch.float32
    assert tok.pad_token == "</s>" and tok.padding_side == "left"  # eos stands in for the missing pad token
    assert model.config.pad_token_id == tok.pad_token_id == 1
    batch = tok(["Where is Paris ?", "Paris"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1].tolist() == [0, 0, 0, 1]  # padded on the left
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, 6)


def test_load_model_dtype(checkpoint):
    import torch

    model, _ = load_model(checkpoint, dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ModelError, match="unknown dtype 'float8'"):
        load_model(checkpoint, dtype="float8")


def test_pickle_checkpoint_is_refused(tmp_path):
    import torch

    model = tiny_llama()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(
        ModelError, match=r"only pickle weights \(pytorch_model\.bin\); knowpack loads safetensors"
    ):
        load_model(tmp_path)


def test_missing_model_folder(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowpackError, match="no safetensors weights"):
        load_model(tmp_path / "empty")


def test_unknown_hub_id_is_a_model_error():
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("huggingface_hub was imported before offline mode was set; would reach for the network")
    with pytest.raises(ModelError, match="cannot load model 'nobody/no-such-model'"):
        load_model("nobody/no-such-model")


@pytest.mark.parametrize("family", sorted(ARCHITECTURES))
def test_architecture_rows_have_the_same_keys(family):
    spec = ARCHITECTURES[family]
    assert set(spec) == set(ARCHITECTURES["llama"])
    assert spec["layers"] == "model.layers" and spec["down_proj"] == "mlp.down_proj"
    for target in spec["mlp_targets"]:  # every MLP target is one of the named projections
        assert any(isinstance(p, str) and p.endswith("." + target) for p in spec.values())


def test_architecture_lookup_and_module_names():
    model = tiny_llama()
    assert architecture(model) is ARCHITECTURES["llama"]
    assert architecture(model.config)["mlp_targets"] == ["gate_proj", "up_proj", "down_proj"]
    name = module_name(model, 1, "down_proj")
    assert name == "model.layers.1.mlp.down_proj"
    assert model.get_submodule(name).weight.shape == (
        model.config.hidden_size,
        model.config.intermediate_size,
    )
    for key in ("gate_proj", "up_proj"):
        model.get_submodule(module_name(model, 0, key))
    assert ARCHITECTURES["phi3"]["fused_gate_up"] and ARCHITECTURES["phi3"]["gate_proj"] is None


def test_unknown_architecture_is_a_clear_error():
    class Config:
        model_type = "gpt2"

    with pytest.raises(
        ModelError, match=r"unsupported model family 'gpt2' \(supported: gemma, gemma2, llama"
    ):
        architecture(Config())
