"""Knowledge vector attribution (KVA) for one prompt, exactly as LoKI defines it, without its cost.

    from knowpack.methods.loki import kva_scores
    result = kva_scores(model, tokenizer("Question: ...")["input_ids"])
    result.scores          # [num_layers, d_model] float64: Attr_{l,j} of row j of layer l's down_proj.weight

The definition (PAPERS.md §2): a node is row j of layer l's `down_proj.weight`, i.e. output coordinate j of
that layer's FFN. Let z_l be layer l's down_proj output at the last prompt position, ŷ the model's argmax next
token, and F(s) the softmax probability of ŷ when that output is replaced by s (everything else as usual).
With a zero baseline and m left-Riemann steps α_k = k/m (k = 0..m-1, m = 7 in the paper):

    Attr_{l,j} = z_{l,j} · (1/m) · Σ_k ∂F(α_k · z_l) / ∂s_j

The paper's code runs L·m forward + backward passes over the whole prompt. But attention is causal: changing
the last position's FFN output changes nothing at earlier positions. So here the prompt's prefix (all tokens
but the last) runs once, keeping its keys and values; then the last token runs once more as 1 + L·m rows
against that shared cache: row 0 unchanged (it gives z_l at every layer and ŷ), and one row per (layer l,
step k) whose layer-l down_proj output is replaced by the leaf α_k·z_l. One backward of Σ_rows F gives every
∂F/∂s at once (rows never see each other). This is exact, not an approximation: each row does what the full
pass does at the last position, and nothing else.

The rows are packed as positions of one sequence, all at the last token's position, each attending to the
prefix and to itself only (a custom 4D mask): the prefix cache is shared, not copied per row, and no gradient
flows into it. Where a custom mask cannot be used (flash attention) or a sliding window already dropped prefix
keys, the rows are a batch against the cache expanded to every row. `rows_per_pass` caps the rows per forward
when memory is short; later passes reuse the first pass's z and ŷ.

Module paths come from `knowpack.models.ARCHITECTURES`, so any family in that table works, with the model's
own forward doing attention, rotary embeddings, sliding windows and soft-capping.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from knowpack.errors import KnowpackError
from knowpack.methods.loki.config import STEPS
from knowpack.models import architecture, cache_keyword, module_name


@dataclass
class KVAResult:
    """KVA of one prompt."""

    scores: np.ndarray
    """[num_layers, d_model] float64: Attr_{l,j}."""
    target: int
    """ŷ: the model's argmax next token at the last position."""
    p_target: float
    """F(z): the probability of ŷ, unchanged model."""
    p_ablated: list[float]
    """F(0) per layer: the probability of ŷ with that layer's last-position down_proj output zeroed.
    Completeness of integrated gradients: scores[l].sum() ≈ p_target - p_ablated[l] (up to the m-step sum)."""


def kva_scores(
    model: Any,
    input_ids: Sequence[int] | torch.Tensor,
    *,
    steps: int = STEPS,
    rows_per_pass: int | None = None,
) -> KVAResult:
    """KVA scores of every down_proj row of every layer for one prompt (token ids, no padding)."""
    if steps < 1:
        raise KnowpackError(f"steps must be >= 1 (got {steps})")
    downs = down_projs(model)
    device = next(model.parameters()).device
    ids = torch.as_tensor(input_ids, dtype=torch.long, device=device).reshape(-1)
    if ids.numel() == 0:
        raise KnowpackError("cannot attribute an empty prompt")
    num_layers = len(downs)
    per_pass = max(1, (rows_per_pass or num_layers * steps) // steps)  # whole layers per forward
    alphas = [k / steps for k in range(steps)]  # α_k

    with _inference_mode(model):
        past = _prefix_cache(model, ids[:-1])
        packed = _can_pack(model, past, ids.numel() - 1)
        state = _State(num_layers)
        for start in range(0, num_layers, per_pass):
            layers = list(range(start, min(num_layers, start + per_pass)))
            _one_pass(model, downs, ids, past, layers, alphas, state, packed)

    z = [state.z[layer].double().cpu().numpy() for layer in range(num_layers)]
    scores = np.stack([z[layer] * state.grad_mean[layer] for layer in range(num_layers)])
    return KVAResult(scores, state.target, state.p_target, state.p_ablated)


def down_projs(model: Any) -> list[torch.nn.Module]:
    """Each decoder layer's down_proj module, found through the architecture table."""
    layers = model.get_submodule(architecture(model)["layers"])
    return [model.get_submodule(module_name(model, layer, "down_proj")) for layer in range(len(layers))]


# ------------------------------------------------------------------------------------------------ internals


class _State:
    """What the passes of one prompt share: z_l and ŷ (from the first pass), and the results."""

    def __init__(self, num_layers: int):
        self.z: list[torch.Tensor | None] = [None] * num_layers
        self.target: int | None = None
        self.p_target = float("nan")
        self.p_ablated = [float("nan")] * num_layers
        self.grad_mean: list[np.ndarray | None] = [None] * num_layers


def _one_pass(model, downs, ids, past, layers, alphas, state: _State, packed: bool) -> None:
    """One forward of the last token as rows (row 0 unchanged on the first pass, then one row per (layer,
    step) of `layers`) against the prefix cache, and one backward; fills `state`.

    Packed: the rows are query positions of one sequence, all at the last token's position, each seeing the
    prefix and itself (a custom 4D mask), so the prefix cache is shared, never copied, and no gradient flows
    into it. Otherwise (flash attention, a sliding window that already dropped prefix keys, old caches) the
    rows are a batch against a cache expanded to every row. Either way each row computes exactly what a
    single-token forward would."""
    steps = len(alphas)
    clean = 1 if state.target is None else 0  # the first pass carries the unchanged row 0
    rows = clean + len(layers) * steps
    leaves: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(module, inputs, output):
            flat = output.reshape(rows, output.shape[-1])  # [rows, d_model] in either layout
            if state.z[layer] is None:
                state.z[layer] = flat[0].detach()
            if layer not in leaves and layer in layers:
                first = clean + layers.index(layer) * steps
                z = state.z[layer].to(_at_least_fp32(output.dtype))  # α·z not rounded to bf16 twice
                scale = torch.tensor(alphas, dtype=z.dtype, device=z.device)[:, None]
                leaf = (scale * z).to(output.dtype).requires_grad_(True)
                leaves[layer] = leaf
                flat = flat.clone()
                flat[first : first + steps] = leaf
                output = flat.view_as(output)
            return output

        return hook

    handles = [down.register_forward_hook(hook_for(layer)) for layer, down in enumerate(downs)]
    try:
        with torch.enable_grad():
            logits = model(**_row_inputs(model, ids, past, rows, packed), use_cache=True).logits
            logits = logits.reshape(rows, -1).to(_at_least_fp32(logits.dtype))
            if clean:
                state.target = int(logits[0].argmax())
                state.p_target = float(logits[0].detach().softmax(-1)[state.target])
            probs = logits[clean:].softmax(-1)[:, state.target]
            grads = torch.autograd.grad(probs.sum(), [leaves[layer] for layer in layers])
    finally:
        for handle in handles:
            handle.remove()
    probs = probs.detach().view(len(layers), steps)
    for i, (layer, grad) in enumerate(zip(layers, grads, strict=True)):
        state.grad_mean[layer] = grad.double().mean(0).cpu().numpy()
        state.p_ablated[layer] = float(probs[i, 0])  # α_0 = 0: the output zeroed


def _row_inputs(model, ids: torch.Tensor, past: Any, rows: int, packed: bool) -> dict[str, Any]:
    """Forward arguments that run the last token `rows` times against the prefix cache `past`."""
    last, prefix = ids[-1:], ids.numel() - 1
    if not packed:
        return {"input_ids": last.expand(rows, 1), cache_keyword(model): _expand(past, rows)}
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
    allowed = torch.zeros(rows, prefix + rows, dtype=torch.bool, device=ids.device)
    allowed[:, :prefix] = True
    allowed[:, prefix:].fill_diagonal_(True)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)  # additive: eager adds it, sdpa takes it as is
    return {
        "input_ids": last.expand(1, rows),
        "position_ids": torch.full((1, rows), prefix, dtype=torch.long, device=ids.device),
        "attention_mask": mask[None, None],
        cache_keyword(model): _expand(past, 1),  # a copy the forward appends to; `past` stays as it is
    }


def _can_pack(model: Any, past: Any, prefix: int) -> bool:
    """Whether rows can be packed into one sequence: an attention that takes a custom 4D mask, and a cache
    that holds every prefix position in every layer (a sliding window may have dropped the oldest)."""
    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if past is None:
        return True
    if not hasattr(past, "layers"):
        return False
    return all(
        getattr(layer, "keys", None) is not None and layer.keys.shape[-2] == prefix for layer in past.layers
    )


def _at_least_fp32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _prefix_cache(model, prefix: torch.Tensor) -> Any:
    """Keys and values of every prefix position at every layer (None for a one-token prompt)."""
    if prefix.numel() == 0:
        return None
    with torch.no_grad():
        return getattr(model.base_model(input_ids=prefix[None], use_cache=True), cache_keyword(model))


def _expand(past: Any, batch: int) -> Any:
    """A cache showing `past` (batch 1) to `batch` rows; the forward appends to it, `past` stays as it is."""
    if past is None:
        return None
    if not hasattr(past, "layers"):  # caches before transformers 4.56 have no per-layer objects
        cache = copy.deepcopy(past)
        cache.batch_repeat_interleave(batch)
        return cache
    cache = copy.copy(past)
    cache.layers = []
    for layer in past.layers:
        layer = copy.copy(layer)
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            # Views, not copies: DynamicLayer.update concatenates into new tensors.
            layer.keys = layer.keys.expand(batch, -1, -1, -1)
            layer.values = layer.values.expand(batch, -1, -1, -1)
        cache.layers.append(layer)
    return cache


@contextlib.contextmanager
def _inference_mode(model) -> Iterator[None]:
    """Eval mode (no dropout) and frozen weights (no weight gradients), restored afterwards."""
    training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)
