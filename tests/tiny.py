"""Tiny random causal LMs built from a config (no download), shared by the tests."""

from __future__ import annotations

import torch


def tiny_model(family: str, tokenizer):
    """A random 2-layer model of `family` (llama, qwen2, mistral) sized to `tokenizer`, seeded per family."""
    import transformers

    config_class = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "mistral": transformers.MistralConfig,
    }[family]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,  # large logits: no near-ties that float noise could flip
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed({"llama": 0, "qwen2": 1, "mistral": 2}[family])
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A Qwen2-style (ChatML) chat template."""


def tiny_tokenizer(texts, out, *, vocab_size: int = 300, chat: bool = True):
    """A byte-level BPE tokenizer trained on `texts` (no download), with the ChatML template when `chat`."""
    from knowpack.world.tokenizer import train_tokenizer

    tok = train_tokenizer(list(texts), vocab_size=vocab_size, out=out)
    if chat:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = CHATML
    return tok


def save_tiny(family: str, tokenizer, out):
    """A tiny random model of `family` with `tokenizer`, saved as a local checkpoint; returns the folder."""
    model = tiny_model(family, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
