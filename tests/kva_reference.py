"""The slow, plain KVA reference (the paper's way), and random models of every family, for tests/test_kva.py
and bench/kva.py.

`naive_kva` is written for reading, not speed: for each layer and each of the m steps, one full forward of
the whole prompt with a hook that puts α_k·z_l in place of the last position's down_proj output, and one
backward for ∂F/∂(α_k·z_l). L·m passes per prompt, as LoKI's code does.
"""

from __future__ import annotations

import torch

FAMILIES = ("llama", "qwen2", "mistral", "qwen3", "gemma", "gemma2", "phi3")


def random_model(
    family: str,
    *,
    layers: int = 4,
    hidden: int = 32,
    intermediate: int = 64,
    heads: int = 4,
    kv_heads: int = 2,
    vocab: int = 128,
    seed: int = 0,
):
    """A random causal LM of `family` from a config (no download), fp32, eval mode."""
    import transformers

    config = transformers.AutoConfig.for_model(
        family,
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=1024,
        initializer_range=0.3,  # large logits: no near-ties in the argmax that float noise could flip
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def naive_kva(model, input_ids, steps: int = 7) -> tuple[torch.Tensor, int]:
    """KVA scores [layers, d_model] (float64) and the target token, the slow way (module docstring)."""
    ids = torch.as_tensor(input_ids).reshape(1, -1)
    downs = [layer.mlp.down_proj for layer in model.model.layers]
    for p in model.parameters():
        p.requires_grad_(False)

    # The unchanged model: z_l (last position's down_proj output of every layer) and its argmax token.
    z = {}
    hooks = [
        down.register_forward_hook(
            lambda mod, inp, out, layer=layer: z.__setitem__(layer, out[0, -1].detach())
        )
        for layer, down in enumerate(downs)
    ]
    with torch.no_grad():
        target = int(model(ids).logits[0, -1].argmax())
    for hook in hooks:
        hook.remove()

    scores = torch.zeros(len(downs), z[0].numel(), dtype=torch.float64)
    for layer, down in enumerate(downs):
        grad_sum = torch.zeros_like(z[layer], dtype=torch.float64)
        for k in range(steps):
            scaled = (k / steps * z[layer]).requires_grad_(True)

            def replace(mod, inp, out, scaled=scaled):
                out = out.clone()
                out[0, -1] = scaled
                return out

            hook = down.register_forward_hook(replace)
            with torch.enable_grad():
                logits = model(ids).logits[0, -1]
                prob = logits.to(torch.promote_types(logits.dtype, torch.float32)).softmax(-1)[target]
                (grad,) = torch.autograd.grad(prob, scaled)
            hook.remove()
            grad_sum += grad.double()
        scores[layer] = z[layer].double() * grad_sum / steps
    return scores, target
