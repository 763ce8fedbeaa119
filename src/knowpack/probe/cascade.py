"""Shared-prefix ("cascade") attention: rows that share a prompt prefix keep its keys and values once.

    with shared_prefix_attention(model):
        model(input_ids=..., cache=cache, prefixes=SharedPrefixes(kv, group), ...)

The probe's rows share long few-shot prefixes (~210 tokens of a chat prompt) and differ in a short suffix.
Copying the prefix's keys and values into every row's cache costs a copy per row, and attention over it is a
matrix-vector product per row per decode step, reading the whole prefix each time. Here each row's cache holds
only its own tokens (suffix and generated ones), and attention is computed in two parts that are merged
exactly (the log-sum-exp of each partial softmax gives the weight of its part):
- over the shared prefix: the queries of a prefix's rows (in chunks of a few rows) against its keys at once,
  one batched matrix product for all prefixes of the batch;
- over the row's own keys, as usual (the model's mask: padding and causality).
Positions must continue after the prefix (the caller's position_ids): keys carry their rotary embedding.

The model attends this way while inside `shared_prefix_attention` (a transformers attention implementation,
registered under SHARED_PREFIX and restored on exit); `prefixes` reaches it as a forward keyword, which
transformers passes through to every attention layer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

SHARED_PREFIX = "knowpack_shared_prefix"


class SharedPrefixes:
    """The prefixes a batch's rows attend to besides their own cache, laid out for one product per layer.

    `kv[g][layer]` is prefix g's (keys, values) at a layer, (1, kv_heads, length, dim) each, as the model's
    cache made them; `group[i]` is row i's prefix (-1: none). The rows of a prefix are cut into chunks of
    `size` rows, each chunk with its own copy of its prefix's keys and values: queries (chunks, kv_heads,
    size * q_heads_per_kv_head * q_len, dim) against keys (chunks, kv_heads, length, dim), shorter prefixes
    padded and masked. A row without a prefix attends to an empty one (every key masked): its weight in the
    merge comes out 0.
    """

    def __init__(self, kv: list[list[tuple[torch.Tensor, torch.Tensor]]], group: list[int]):
        import torch  # torch stays out of `import knowpack.probe` (the CLI's start)

        self.kv, self.group = kv, group
        members: dict[int, list[int]] = {}
        for i, g in enumerate(group):
            members.setdefault(g, []).append(i)
        self.size = _chunk_size([len(rows) for rows in members.values()])
        chunks = [
            (g, rows[s : s + self.size])
            for g, rows in members.items()
            for s in range(0, len(rows), self.size)
        ]
        slot = [0] * len(group)
        for c, (_, rows) in enumerate(chunks):
            for j, i in enumerate(rows):
                slot[i] = c * self.size + j
        first = kv[0][0][0]
        self.slot = torch.tensor(slot, device=first.device)  # each row's place among the chunks' rows
        self.n_slots = len(chunks) * self.size
        lengths = [kv[g][0][0].shape[2] if g >= 0 else 0 for g, _ in chunks]
        length = max(*lengths, 1)  # a chunk of rows without prefixes: one masked key
        self.bias = None  # additive, (chunks, 1, 1, length): masks padding; None where there is none
        if min(lengths) < length:
            masked = (
                torch.arange(length, device=first.device)[None, :]
                >= torch.tensor(lengths, device=first.device)[:, None]
            )
            bias = torch.zeros(masked.shape, device=first.device).masked_fill(
                masked, torch.finfo(torch.float32).min
            )
            self.bias = bias[:, None, None, :]
        empty = first.new_zeros(1, first.shape[1], 0, first.shape[3])
        self.layers = []  # per layer: keys transposed (chunks, kv_heads, dim, length), values; float32
        for layer in range(len(kv[0])):
            keys, values = (
                torch.cat([_pad(kv[g][layer][j] if g >= 0 else empty, length) for g, _ in chunks]).float()
                for j in (0, 1)
            )
            self.layers.append((keys.transpose(-1, -2).contiguous(), values))

    def take(self, rows: list[int]) -> SharedPrefixes:
        """The prefixes of these rows (the cache's rows after `reorder_cache(rows)`)."""
        return SharedPrefixes(self.kv, [self.group[i] for i in rows])


def _chunk_size(counts: list[int]) -> int:
    """The most rows per chunk that pads them to at most twice as many: a decode step reads each chunk's
    prefix once, and a query more costs little beside that, while one prefix's many rows should not pad every
    other prefix's few to as many."""
    for size in range(max(counts), 0, -1):
        if sum(-(-n // size) * size for n in counts) <= 2 * sum(counts):
            return size
    return 1


def can_share(model: Any) -> bool:
    """Whether `model` can attend with shared prefixes: its attention layers go through transformers'
    AttentionInterface and use nothing this attention lacks (logit soft-capping)."""
    softcapping = getattr(model.config, "attn_logit_softcapping", None)
    return model._can_set_attn_implementation() and softcapping is None


@contextmanager
def shared_prefix_attention(model: Any) -> Iterator[None]:
    """`model` attends with `attend` while inside (forward calls must pass `prefixes=`); its own attention
    implementation is restored on exit."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(SHARED_PREFIX, attend)
    AttentionMaskInterface.register(SHARED_PREFIX, own_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation(SHARED_PREFIX)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def attend(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    scaling: float,
    prefixes: SharedPrefixes,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of each row's queries over its prefix and its own keys (an AttentionInterface function).

    query (rows, heads, q_len, dim); key, value (rows, kv_heads, slots, dim): the rows' own cache, of which
    the first written ones count (`own_mask`); attention_mask (rows, 1, q_len, written slots), additive.
    Returns (rows, q_len, heads, dim).
    """
    rows, heads, length, dim = query.shape
    kv_heads, written = key.shape[1], attention_mask.shape[-1]
    # In float32 whatever the model's dtype, as fused kernels (SDPA, flash) compute inside, rounded once at
    # the end: in bf16, scores rounded before the softmax (a step of 0.125 at 20) and partial outputs rounded
    # before the merge gave 3-8x SDPA's error (tests/test_probe_engine.py).
    # The query heads that share a key head side by side: (rows, kv_heads, group * q_len, dim), so that keys
    # are never repeated for grouped-query attention.
    q = (query.float() * scaling).reshape(rows, kv_heads, -1, dim)
    scores = q @ key[:, :, :written].float().transpose(-1, -2)
    per_head = scores.view(rows, kv_heads, -1, length, written)
    per_head.add_(attention_mask[:, :, None])  # one mask for every query head, added in float32
    own, own_lse = _softmax_product(scores, value[:, :, :written].float())

    # The rows' queries into their chunks' slots, every chunk against its prefix in one product.
    slots = q.new_zeros(prefixes.n_slots, *q.shape[1:])
    slots[prefixes.slot] = q
    block = slots.view(-1, prefixes.size, *q.shape[1:]).transpose(1, 2).flatten(2, 3)
    keys_t, values = prefixes.layers[module.layer_idx]
    scores = block @ keys_t
    if prefixes.bias is not None:
        scores += prefixes.bias
    shared, shared_lse = _softmax_product(scores, values)
    shared = shared.view(-1, kv_heads, prefixes.size, *own.shape[2:]).transpose(1, 2).flatten(0, 1)
    shared_lse = shared_lse.view(-1, kv_heads, prefixes.size, own.shape[2]).transpose(1, 2).flatten(0, 1)
    shared, shared_lse = shared[prefixes.slot], shared_lse[prefixes.slot]

    # softmax over prefix and own keys together = the two partial results weighted by their total mass
    weight = (shared_lse - own_lse).sigmoid()[..., None]
    out = (own + weight * (shared - own)).to(query.dtype)
    return out.view(rows, heads, length, dim).transpose(1, 2).contiguous(), None


def own_mask(
    *, kv_length: int, attention_mask: torch.Tensor, dtype: torch.dtype | None = None, **kwargs: Any
) -> torch.Tensor:
    """The model's additive mask (eager attention's) over the own cache's written slots only (the 2D mask's
    length), not over every slot of a preallocated cache (`kv_length`): `attend` reads no more than those.

    transformers' boolean mask (`sdpa_mask`, as its `eager_mask` makes it) turned additive here, on the
    mask's device: `eager_mask` before transformers 5.24 made its 0 with `torch.tensor(0.0, device=...)`, a
    copy from the host and a wait for it at every step on a GPU, which a CUDA graph cannot capture."""
    import torch
    from transformers.masking_utils import sdpa_mask

    dtype = torch.float32 if dtype is None else dtype
    kwargs.pop("allow_is_causal_skip", None)
    kwargs.pop("allow_torch_fix", None)
    allowed = sdpa_mask(
        kv_length=attention_mask.shape[-1],
        attention_mask=attention_mask,
        allow_is_causal_skip=False,
        allow_torch_fix=False,  # a fix for torch < 2.5 (5.0 and 5.17 take it; 5.24 takes it as **kwargs)
        **kwargs,
    )
    return torch.where(allowed, torch.zeros((), dtype=dtype, device=allowed.device), torch.finfo(dtype).min)


def _softmax_product(scores: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(scores) @ value and the log-sum-exp of the scores per query (float32); overwrites `scores`."""
    top = scores.amax(-1, keepdim=True)
    probs = scores.sub_(top).exp_()
    total = probs.sum(-1, keepdim=True)
    return (probs @ value) / total, (top + total.log())[..., 0]


def _pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """(1, heads, n, dim) -> (1, heads, length, dim), zeros after (masked out, never attended)."""
    import torch

    return torch.nn.functional.pad(tensor, (0, 0, 0, length - tensor.shape[2]))
