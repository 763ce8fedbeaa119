"""Knowledge vector attribution (KVA) of a prompt or a batch, exactly as LoKI defines it, without its cost.

    from knowpack.methods.loki import kva_scores
    result = kva_scores(model, tokenizer("Question: ...")["input_ids"])
    result.scores          # [num_layers, d_model] float64: Attr_{l,j} of row j of layer l's down_proj.weight
    results = kva_batch(model, [ids_a, ids_b, ids_c])   # several prompts in the same passes, same scores

The definition (docs/papers.md §2.2): a node is row j of layer l's `down_proj.weight`, i.e. output coordinate
j of that layer's FFN. Let z_l be layer l's down_proj output at the last prompt position, ŷ the model's argmax
next token, and F(s) the softmax probability of ŷ when that output is replaced by s (everything else as
usual). With a zero baseline and m left-Riemann steps α_k = k/m (k = 0..m-1, m = 7 in the paper):

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

Several prompts (`kva_batch`) share the passes: their prefixes run in one call, right-padded to the longest
(causal attention: a real token never sees the padding after it, so its keys and values are the unpadded
ones), and the forward carries P sequences of 1 + L·m rows, sequence p attending to prompt p's real prefix
positions and each row to itself, at prompt p's own last position. One backward of the sum over all prompts
gives each prompt's gradients (no row sees another prompt's). Same scores as one prompt at a time, up to
float rounding (other matrix shapes sum in another order). Where rows cannot be packed, the prompts go one
at a time. Meant for GPUs, which one prompt's 225 single-token rows of an 8B model leave mostly idle (not
measured yet); `prompts_per_pass` sizes the batch from free memory.

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

from knowpack.devices import free_memory
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
    return kva_batch(model, [input_ids], steps=steps, rows_per_pass=rows_per_pass)[0]


def kva_batch(
    model: Any,
    prompts: Sequence[Sequence[int] | torch.Tensor],
    *,
    steps: int = STEPS,
    rows_per_pass: int | None = None,
) -> list[KVAResult]:
    """`kva_scores` of several prompts (token ids, no padding, any lengths) in the same passes (module
    docstring); one result per prompt, in order. `rows_per_pass` caps the (layer, step) rows of each prompt
    per forward, so a forward holds len(prompts) x rows_per_pass rows."""
    if steps < 1:
        raise KnowpackError(f"steps must be >= 1 (got {steps})")
    downs = down_projs(model)
    device = next(model.parameters()).device
    batch = [torch.as_tensor(ids, dtype=torch.long, device=device).reshape(-1) for ids in prompts]
    if any(ids.numel() == 0 for ids in batch):
        raise KnowpackError("cannot attribute an empty prompt")
    num_layers = len(downs)
    per_pass = max(1, (rows_per_pass or num_layers * steps) // steps)  # whole layers per forward
    alphas = [k / steps for k in range(steps)]  # α_k

    with _inference_mode(model):
        results = _attribute_together(model, downs, batch, alphas, per_pass) if len(batch) > 1 else None
        if results is None:  # rows that cannot be packed: one prompt at a time
            results = [_attribute_together(model, downs, [ids], alphas, per_pass)[0] for ids in batch]
    return results


def prompts_per_pass(
    free_bytes: int | None,
    *,
    num_layers: int,
    hidden: int,
    intermediate: int,
    vocab: int,
    element_bytes: int,
    steps: int = STEPS,
    most: int = 16,
) -> int:
    """How many prompts `kva_batch` should take at once: 1 without a GPU (`free_bytes` None: on a CPU one
    prompt's rows already keep the cores busy), else as many as half the free memory holds, at most `most`.

    An estimate, not a measurement: a row keeps, per layer, what the backward to the earlier layers' leaves
    needs (frozen weights: no matmul inputs; about 4 x intermediate + 8 x hidden elements), and its logits in
    float32 three times over (the logits, their softmax, its gradient). For Llama-3.1-8B in bf16 that is
    ~1.6 GB a prompt of 225 rows: 2 prompts beside the model on a 24 GB card, 16 on an 80 GB one."""
    if free_bytes is None:
        return 1
    rows = 1 + num_layers * steps
    row_bytes = num_layers * (4 * intermediate + 8 * hidden) * element_bytes + 3 * 4 * vocab
    return max(1, min(most, free_bytes // 2 // (rows * row_bytes)))


def model_prompts_per_pass(model: Any, steps: int = STEPS) -> int:
    """`prompts_per_pass` for `model` on its device, from the free memory there now."""
    downs = down_projs(model)
    weight = downs[0].weight  # [d_model, intermediate]
    return prompts_per_pass(
        free_memory(weight.device),
        num_layers=len(downs),
        hidden=weight.shape[0],
        intermediate=weight.shape[1],
        vocab=model.get_output_embeddings().weight.shape[0],
        element_bytes=weight.element_size(),
        steps=steps,
    )


def down_projs(model: Any) -> list[torch.nn.Module]:
    """Each decoder layer's down_proj module, found through the architecture table."""
    layers = model.get_submodule(architecture(model)["layers"])
    return [model.get_submodule(module_name(model, layer, "down_proj")) for layer in range(len(layers))]


# ------------------------------------------------------------------------------------------------ internals


def _attribute_together(model, downs, batch: list[torch.Tensor], alphas, per_pass: int):
    """The results of the prompts of `batch` from shared passes; None when their rows cannot be packed
    (then they go one at a time: an unpacked batch holds one prompt)."""
    num_layers = len(downs)
    prefixes = _padded_prefixes(batch)
    past = _prefix_cache(model, prefixes)
    packed = _can_pack(model, past, prefixes.shape[1])
    if len(batch) > 1 and not packed:
        return None
    state = _State(len(batch), num_layers)
    for start in range(0, num_layers, per_pass):
        layers = list(range(start, min(num_layers, start + per_pass)))
        _one_pass(model, downs, batch, past, layers, alphas, state, packed)
    return state.results()


class _State:
    """What the passes of a batch of prompts share: z_l and ŷ of every prompt (from the first pass), and the
    results."""

    def __init__(self, prompts: int, num_layers: int):
        self.prompts = prompts
        self.z: list[torch.Tensor | None] = [None] * num_layers  # [prompts, d_model] each
        self.target: torch.Tensor | None = None  # [prompts]
        self.p_target: list[float] = []
        self.p_ablated = np.full((prompts, num_layers), np.nan)
        self.grad_mean: list[np.ndarray | None] = [None] * num_layers  # [prompts, d_model] each

    def results(self) -> list[KVAResult]:
        z = np.stack([z.double().cpu().numpy() for z in self.z], axis=1)  # [prompts, layers, d_model]
        scores = z * np.stack(self.grad_mean, axis=1)
        targets = self.target.tolist()
        return [
            KVAResult(scores[p], targets[p], self.p_target[p], self.p_ablated[p].tolist())
            for p in range(self.prompts)
        ]


def _one_pass(model, downs, batch, past, layers, alphas, state: _State, packed: bool) -> None:
    """One forward of each prompt's last token as rows (row 0 unchanged on the first pass, then one row per
    (layer, step) of `layers`) against the prefix cache, and one backward; fills `state`.

    Packed: prompt p's rows are query positions of sequence p, all at its last token's position, each seeing
    the prompt's prefix and itself (a custom 4D mask), so the prefix cache is shared, never copied, and no
    gradient flows into it. Otherwise (flash attention, a sliding window that already dropped prefix keys,
    old caches; one prompt only) the rows are a batch against a cache expanded to every row. Either way each
    row computes exactly what a single-token forward would."""
    steps, prompts = len(alphas), len(batch)
    clean = 1 if state.target is None else 0  # the first pass carries the unchanged row 0
    rows = clean + len(layers) * steps
    leaves: dict[int, torch.Tensor] = {}

    def hook_for(layer: int):
        def hook(module, inputs, output):
            flat = output.reshape(
                prompts, rows, output.shape[-1]
            )  # [prompts, rows, d_model] in either layout
            if state.z[layer] is None:
                state.z[layer] = flat[:, 0].detach()
            if layer not in leaves and layer in layers:
                first = clean + layers.index(layer) * steps
                z = state.z[layer].to(_at_least_fp32(output.dtype))  # α·z not rounded to bf16 twice
                scale = torch.tensor(alphas, dtype=z.dtype, device=z.device)[None, :, None]
                leaf = (scale * z[:, None]).to(output.dtype).requires_grad_(True)  # [prompts, steps, d_model]
                leaves[layer] = leaf
                flat = flat.clone()
                flat[:, first : first + steps] = leaf
                output = flat.view_as(output)
            return output

        return hook

    handles = [down.register_forward_hook(hook_for(layer)) for layer, down in enumerate(downs)]
    try:
        with torch.enable_grad():
            logits = model(**_row_inputs(model, batch, past, rows, packed), use_cache=True).logits
            logits = logits.reshape(prompts, rows, -1).to(_at_least_fp32(logits.dtype))
            if clean:
                state.target = logits[:, 0].argmax(-1)
                p_target = logits[:, 0].detach().softmax(-1).gather(1, state.target[:, None])[:, 0]
                state.p_target = p_target.tolist()
            probs = logits[:, clean:].softmax(-1)
            probs = probs.gather(2, state.target[:, None, None].expand(prompts, rows - clean, 1))[..., 0]
            grads = torch.autograd.grad(probs.sum(), [leaves[layer] for layer in layers])
    finally:
        for handle in handles:
            handle.remove()
    probs = probs.detach().view(prompts, len(layers), steps).cpu().numpy()
    for i, (layer, grad) in enumerate(zip(layers, grads, strict=True)):
        state.grad_mean[layer] = grad.double().mean(1).cpu().numpy()
        state.p_ablated[:, layer] = probs[:, i, 0]  # α_0 = 0: the output zeroed


def _row_inputs(model, batch: list[torch.Tensor], past: Any, rows: int, packed: bool) -> dict[str, Any]:
    """Forward arguments that run each prompt's last token `rows` times against the prefix cache `past`."""
    device = batch[0].device
    if not packed:
        (ids,) = batch
        return {"input_ids": ids[-1:].expand(rows, 1), cache_keyword(model): _expand(past, rows)}
    dtype = next(model.parameters()).dtype
    if not dtype.is_floating_point:
        dtype = torch.float32
    width = max(ids.numel() for ids in batch) - 1  # the padded prefix
    allowed = torch.zeros(len(batch), rows, width + rows, dtype=torch.bool, device=device)
    for p, ids in enumerate(batch):
        allowed[p, :, : ids.numel() - 1] = True  # prompt p's real prefix positions, not its padding
    allowed[:, :, width:] |= torch.eye(rows, dtype=torch.bool, device=device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)  # additive: eager adds it, sdpa takes it as is
    lengths = torch.tensor([ids.numel() for ids in batch], device=device)
    return {
        "input_ids": torch.stack([ids[-1] for ids in batch])[:, None].expand(-1, rows),
        "position_ids": (lengths - 1)[:, None].expand(-1, rows),
        "attention_mask": mask[:, None],
        cache_keyword(model): _expand(past, len(batch)),  # a copy the forward appends to; `past` stays
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
    """Keys and values of every prefix position at every layer, in one call: `prefix` is one prompt's prefix
    or a right-padded [prompts, width] batch of them (None when empty). Causal attention keeps padding out of
    the real positions' keys and values."""
    if prefix.numel() == 0:
        return None
    with torch.no_grad():
        output = model.base_model(input_ids=prefix.reshape(-1, prefix.shape[-1]), use_cache=True)
    return getattr(output, cache_keyword(model))


def _padded_prefixes(batch: list[torch.Tensor]) -> torch.Tensor:
    """[prompts, width]: every prompt's tokens but the last, right-padded (with token 0) to the longest."""
    width = max(ids.numel() for ids in batch) - 1
    prefixes = torch.zeros(len(batch), width, dtype=torch.long, device=batch[0].device)
    for p, ids in enumerate(batch):
        prefixes[p, : ids.numel() - 1] = ids[:-1]
    return prefixes


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
