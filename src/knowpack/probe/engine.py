"""The probe's generation engine: greedy and sampled answers for many prompts at once, sharing what is shared.

    engine = Engine(model, tokenizer, samples=16, temperature=0.5, top_k=40, max_new_tokens=32, seed=0)
    results = engine.generate([Request(key, ids, prefix_len), ...])   # {key: Generation}

A probe asks 170 generations per fact (10 prompts x (1 greedy + 16 samples)), and most of their input is the
same. Three things are done once instead of many times:
1. The few-shot prefix. All facts of a relation share the exemplars of a prompt index (see prompts.py), so
   requests are grouped by their prefix tokens; the prefix is run through the model once and its KV cache is
   repeated over the batch. Only each fact's suffix (its own question) is fed: left-padded, so the padding
   sits between prefix and suffix, masked out, with positions counted over real tokens only. This is exact:
   the shared tokens are the first tokens of each prompt's own tokenization (`split_prefix` cuts where the
   prompt's tokens and its prefix text's tokens part), so the reused cache is the one the prompt would make.
2. The suffix prefill. The greedy row and the n sample rows of a prompt start from one prefill: its cache
   and last logits are gathered into 1 + n rows, and all of them decode together in one loop.
3. Finished rows. Every row stops at its first line break or EOS; the loop ends when all rows have.

Sampling is temperature + top-k with the Gumbel-max trick, whose noise is a counter-based hash of (seed,
request key, sample index, step, rank): a sample depends on its fact and prompt only, never on batch size,
order, sharding or resumption. So a probe is deterministic for a seed, also when it is split or resumed.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_M32 = 0xFFFFFFFF


@dataclass
class Request:
    """One prompt to answer: `ids` its tokens, the first `prefix_len` of them shared with other requests."""

    key: Hashable
    ids: list[int]
    prefix_len: int = 0


@dataclass
class Generation:
    """The answers to one prompt: each is the generated text up to its first line break (not included)."""

    greedy: str
    greedy_logprob: float  # log-probability of the greedy tokens, up to and including the one ending the line
    samples: list[str] = field(default_factory=list)


def split_prefix(full_ids: list[int], prefix_ids: list[int]) -> int:
    """How many leading tokens of a prompt to take from the shared prefix cache: the longest run of tokens
    that the prompt's own tokenization has in common with its prefix text's tokenization, leaving at least
    one token to feed.

    Not simply len(prefix_ids): a prefix ending in "\n\n" may tokenize as one token alone but as two before
    "Question" (byte-level BPE does exactly that). The cache is always built from the prompt's own tokens,
    so reuse is exact by construction; the text prefix only says where the shared part ends.
    """
    n = 0
    for a, b in zip(full_ids[: len(full_ids) - 1], prefix_ids, strict=False):
        if a != b:
            break
        n += 1
    return n


class Engine:
    """Batched greedy + sampled generation with prefix KV reuse (see the module docstring).

    `batch_size` is the number of rows decoded at once; a batch holds batch_size // (1 + samples) prompts.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        samples: int = 16,
        temperature: float = 0.5,
        top_k: int | None = 40,
        max_new_tokens: int = 32,
        seed: int = 0,
        batch_size: int = 256,
        reuse_prefix: bool = True,
    ):
        import torch

        if samples > 0 and not temperature > 0:
            raise ValueError(f"sampling needs a temperature > 0 (got {temperature})")
        self.model, self.tokenizer = model, tokenizer
        self.samples, self.temperature, self.top_k = samples, temperature, top_k or None
        self.max_new_tokens, self.seed, self.batch_size = max_new_tokens, seed, batch_size
        self.reuse_prefix = reuse_prefix
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stop = _stop_tokens(model, tokenizer).to(self.device)
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._torch = torch

    def generate(
        self, requests: Sequence[Request], on_batch: Callable[[int], None] | None = None
    ) -> dict[Hashable, Generation]:
        """Answers to every request, by key; `on_batch(n)` is called after each batch of n requests."""
        window = _sliding_window(self.model.config)
        if window and any(len(r.ids) + self.max_new_tokens > window for r in requests):
            # Padding between prefix and suffix takes cache slots, so a window over slots would differ from
            # a window over tokens; not exact beyond the window (no probe prompt of ours comes near it).
            logger.warning("prompts longer than the model's sliding window (%d): answers may differ", window)
        groups: dict[tuple[int, ...], list[Request]] = {}
        for r in requests:
            n = r.prefix_len if self.reuse_prefix else 0
            groups.setdefault(tuple(r.ids[:n]), []).append(r)
        per_batch = max(1, self.batch_size // (1 + self.samples))
        results: dict[Hashable, Generation] = {}
        for prefix, group in groups.items():
            for start in range(0, len(group), per_batch):
                batch = group[start : start + per_batch]
                results.update(zip([r.key for r in batch], self._batch(prefix, batch), strict=True))
                if on_batch is not None:
                    on_batch(len(batch))
        return results

    # ------------------------------------------------------------------------------------------ internals

    def _prefix_cache(self, prefix: tuple[int, ...]) -> Any:
        """The KV cache of `prefix` (batch 1), computed once and kept for the next batches (LRU of 64)."""
        from transformers import DynamicCache

        torch = self._torch
        if prefix in self._prefixes:
            self._prefixes.move_to_end(prefix)
            return self._prefixes[prefix]
        cache = DynamicCache(config=self.model.config)
        if prefix:
            with torch.inference_mode():
                ids = torch.tensor([prefix], device=self.device)
                self.model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self._prefixes[prefix] = cache
        if len(self._prefixes) > 64:
            self._prefixes.popitem(last=False)
        return cache

    def _batch(self, prefix: tuple[int, ...], batch: list[Request]) -> list[Generation]:
        torch = self._torch
        n_prefix, n_rows, n = len(prefix), len(batch), self.samples
        cache = copy.deepcopy(self._prefix_cache(prefix))
        cache.batch_repeat_interleave(n_rows)

        suffixes = [r.ids[n_prefix:] for r in batch]
        width = max(len(s) for s in suffixes)
        ids = torch.full((n_rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n_rows, n_prefix + width), dtype=torch.long)
        mask[:, :n_prefix] = 1
        for i, s in enumerate(suffixes):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, n_prefix + width - len(s) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Positions count real tokens only, so a padded row sees the same positions as the prompt alone.
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position[:, n_prefix:],
                past_key_values=cache,
                cache_position=torch.arange(n_prefix, n_prefix + width, device=self.device),
                use_cache=True,
                logits_to_keep=1,
            )
            logits, last = out.logits[:, -1].float(), position[:, -1]
            if n > 0:  # greedy rows first, then n sample rows per prompt, all from the one prefill
                rows = torch.cat([torch.arange(n_rows), torch.arange(n_rows).repeat_interleave(n)])
                rows = rows.to(self.device)
                cache.batch_select_indices(rows)
                logits, mask, last = logits[rows], mask[rows], last[rows]
            keys = self._row_keys(batch)
            tokens, logprob = self._decode(cache, logits, mask, last, keys, n_rows)

        texts = [_first_line(t) for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        return [
            Generation(
                greedy=texts[i],
                greedy_logprob=float(logprob[i]),
                samples=texts[n_rows + i * n : n_rows + (i + 1) * n],
            )
            for i in range(n_rows)
        ]

    def _decode(self, cache, logits, mask, last, keys, n_greedy):
        """Greedy for the first `n_greedy` rows, sampling for the rest, until every row ends its line."""
        torch = self._torch
        n_rows = logits.shape[0]
        done = torch.zeros(n_rows, dtype=torch.bool, device=self.device)
        logprob = torch.zeros(n_rows, dtype=torch.float64, device=self.device)
        steps = []
        for step in range(self.max_new_tokens):
            next_ids = logits.argmax(-1)
            if n_rows > n_greedy:
                next_ids[n_greedy:] = self._sample(logits[n_greedy:], keys, step)
            lp = logits.log_softmax(-1).gather(1, next_ids[:, None])[:, 0]
            logprob += torch.where(done, 0.0, lp.double())
            next_ids = torch.where(done, self.pad_id, next_ids)
            steps.append(next_ids)
            done |= self.stop[next_ids]
            if bool(done.all()) or step == self.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            out = self.model(
                input_ids=next_ids[:, None],
                attention_mask=mask,
                position_ids=last[:, None],
                past_key_values=cache,
                cache_position=torch.tensor([mask.shape[1] - 1], device=self.device),
                use_cache=True,
            )
            logits = out.logits[:, -1].float()
        tokens = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(n_rows)]
        return [_until_stop(t, self.stop) for t in tokens], logprob.tolist()

    def _sample(self, logits, keys, step: int):
        """Temperature + top-k sampling by Gumbel-max, with noise from `keys` and `step` only."""
        torch = self._torch
        k = min(self.top_k or logits.shape[-1], logits.shape[-1])
        values, index = (logits / self.temperature).topk(k, dim=-1)
        u = _uniform(keys, step, k)
        gumbel = -torch.log(-torch.log(u)).float()
        choice = (values + gumbel).argmax(-1, keepdim=True)
        return index.gather(1, choice)[:, 0]

    def _row_keys(self, batch: list[Request]):
        """A 32-bit key per sample row: a hash of (seed, request key, sample index)."""
        keys = [_hash32(f"{self.seed}|{r.key!r}|{s}") for r in batch for s in range(self.samples)]
        return self._torch.tensor(keys, dtype=self._torch.long, device=self.device)


def _stop_tokens(model: Any, tokenizer: Any):
    """A bool per vocabulary id: the token holds a line break, or is an end-of-sequence token."""
    import torch

    vocab = max(model.get_output_embeddings().weight.shape[0], len(tokenizer))
    stop = torch.zeros(vocab, dtype=torch.bool)
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    for i, piece in enumerate(pieces):
        if "\n" in piece or "\r" in piece:
            stop[i] = True
    eos = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos |= set(gen_eos) if isinstance(gen_eos, list) else {gen_eos}
    for i in eos - {None}:
        stop[i] = True
    return stop


def _sliding_window(config: Any) -> int | None:
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or getattr(config, "use_sliding_window", True) is False:
        return None
    return window


def _until_stop(tokens: list[int], stop) -> list[int]:
    for i, t in enumerate(tokens):
        if stop[t]:
            return tokens[: i + 1]
    return tokens


def _first_line(text: str) -> str:
    return _LINE_BREAK.split(text, maxsplit=1)[0]


def _hash32(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=4).digest(), "little")


def _mul32(x, c: int):
    # (x * c) mod 2**32 for x < 2**32 held in int64, in 16-bit halves so that nothing overflows int64.
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _mix(x):
    """lowbias32 (C. Wellons), elementwise on an int64 tensor of 32-bit values."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniform(keys, step: int, k: int):
    """Uniform (0, 1) noise, shape (rows, k), a pure function of (row key, step, rank); float64."""
    import torch

    row = _mix(keys ^ _hash32(f"step{step}"))
    rank = torch.arange(k, device=keys.device, dtype=torch.long)
    bits = _mix(row[:, None] ^ _mix(rank + 0x9E3779B9))
    return (bits.double() + 0.5) / 2.0**32
