"""The probe's generation engine: greedy and sampled answers for many prompts at once, sharing what is shared.

    engine = Engine(model, tokenizer, samples=16, temperature=0.5, top_k=40, max_new_tokens=32, seed=0)
    results = engine.generate([Request(key, ids, prefix_len), ...])   # {key: Generation}

A probe asks 170 generations per fact (10 prompts x (1 greedy + 16 samples)), and most of their input is the
same. Three things are done once instead of many times:
1. The few-shot prefix. All facts of a relation share the exemplars of a prompt index (see prompts.py), so
   each distinct prefix is run through the model once (the new ones of a batch together, left-padded) and
   its keys and values kept once (an LRU). A row's own cache holds only its suffix (its own question,
   "Question: " already in the prefix) and the tokens it generates, and the model attends through
   shared-prefix attention (cascade.py): each layer attends over a prefix once for all its rows of the
   batch and over each row's own keys, and merges the two exactly. No row copies its prefix, and a
   decode step reads each prefix once instead of once per row. Batches take whole prefix groups in order
   of their mean suffix length, so that a batch has few prefixes and pads its suffixes little (on the
   left, masked out); positions go on after the prefix and count real tokens only. This is exact: the
   shared tokens are the first tokens of each prompt's own tokenization (`split_prefix` cuts where the
   prompt's tokens and its prefix text's tokens part), so the reused keys and values are the ones the
   prompt would make. A model whose attention cannot take it (not through transformers'
   AttentionInterface, or logit soft-capping), or prompts beyond a sliding window, reuse no prefix.
2. The suffix prefill. The greedy row and the n sample rows of a prompt start from one prefill: its cache
   and last logits are gathered into 1 + n rows, and all of them decode together in one loop. The prefill
   goes, on a CPU, in chunks of suffixes of about the same length (`prefill_chunks`), each padded only to
   its own longest, where that saves more padded tokens than a model call costs: a batch of a real chat
   probe pads its suffixes by 25-46% in one call (SmolLM2 on the geo facts, 256-4096 rows), and padding is
   compute. On a GPU a call costs more than that saved (measured at the 8B shape): one call a batch.
3. Finished rows. Every row stops at its first line break or EOS, and ended rows leave the batch (a quarter
   at a time); the loop ends when all rows have. Counting them is the decode loop's only host-device
   synchronisation: on a GPU it happens every `SYNC_EVERY_CUDA` steps (ended rows decode padding in between,
   which changes no answer), so the host can queue the next steps' kernels while the GPU runs. (A review on
   an H200 counted about one more wait a step inside the eager model call, on transformers 5.17: the
   attention mask's 0 made from host data, which `cascade.own_mask` now makes on the device.) Decoding writes
   into a preallocated cache instead of a growing one that copies itself.

`compile=True` (`knowpack probe --compile`, `probe.compile`) runs the decode step's model call and the
token choice (`choose_tokens`: greedy, top-k Gumbel sampling, the greedy log-probability, the line-end test,
all in one function) through `torch.compile` with dynamic shapes: fused kernels, fewer launches per step,
and the same answers (tests/test_probe_engine.py). A few graphs serve every batch (torch specialises sizes
0 and 1: no sample rows, one row left, one prefix chunk); compiling takes ~20 s-2 min before the first
batch (over 2 minutes at the 8B shape on an H200). Off by default: on a CPU the organism's probe is no
faster compiled (BENCHMARKS.md); on a GPU `scripts/gpu_check.sh` times it beside the eager engine (step
bench-compiled).

`cuda_graphs=True` (`knowpack probe --cuda-graphs`, `probe.cuda_graphs`) decodes at shapes fixed between two
counts of ended rows (`_decode_fixed`: the attention mask is the cache's full width from the start) and
replays each step as a CUDA graph (graphs.py), captured for a batch and again after rows leave it: one launch
a step instead of thousands from Python, which is what bounds an eager 8B step on an H200 (~100 ms where the
weights are read in ~3 ms). Not with `compile`; not where the cache has sliding-window layers (their length is
a Python int that a replay would not advance: such batches decode eagerly). The same answers
(tests/test_probe_engine.py records and replays the steps on a CPU); on a CPU the steps run eagerly over the
full-width mask. Off by default until measured on a GPU (`scripts/gpu_check.sh`, step bench-graphs).

The batch: `batch_size` rows, or where it is None (the default) as many as half of a GPU's free memory
holds (`batch_rows`: each row's own cache and its logits; thousands of rows for an 8B model on an 80-141 GB
GPU), and `CPU_BATCH_ROWS` on a CPU. The free memory is read once, when the engine is made, so that the
same requests always make the same batches.

Sampling is temperature + top-k with the Gumbel-max trick, whose noise is a counter-based hash of (seed,
request key, sample index, step, rank): a sample depends on its fact and prompt only, never on batch size,
order, sharding or resumption. So a probe is deterministic for a seed, also when it is split or resumed
(log-probabilities up to float rounding: other batches pad differently, which moves the last digits).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate
from typing import Any

from knowpack.devices import free_memory, guarding
from knowpack.errors import KnowpackError
from knowpack.models import cache_keyword
from knowpack.probe.cascade import SharedPrefixes, can_share, shared_prefix_attention
from knowpack.probe.graphs import Replay

logger = logging.getLogger(__name__)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_M32 = 0xFFFFFFFF

CPU_BATCH_ROWS = 256
"""Rows decoded at once where no free memory sizes the batch (a CPU): more rows hardly go faster there."""
SYNC_EVERY_CUDA = 4
"""On a GPU, count ended rows every this many decode steps (on a CPU every step: a wasted step costs more)."""
MOST_BATCH_ROWS = 4096
"""At most this many rows however much memory is free (a decode step's kernels are saturated long before)."""
PREFILL_CALL_TOKENS = 256
"""On a CPU, what one more model call in a prefill costs, in padded tokens: the suffixes are split into chunks
of about the same length only where that saves more padding than this per extra chunk (the organism's and
SmolLM2's greedy probes ran 1.10x and 1.11x as fast, bench/prefill.py). A GPU: `GPU_PREFILL_CALL_TOKENS`."""
GPU_PREFILL_CALL_TOKENS = 10**9
"""On a GPU, one prefill call a batch: at the Llama-3.1-8B shape on an H200 the prefill cut with 256 was 0.91x
as fast as one call (padding 11.7% -> 4.4%, bench/prefill.py, BENCHMARKS.md): an eager call there, its
launches and waits, costs more than the padding it saves."""


def check_speed(backend: str, *, compile: bool, cuda_graphs: bool) -> None:
    """The engine's speed options for `backend`, as one-line errors: both are the torch engine's, and they are
    two ways to one end."""
    if compile and backend != "torch":
        raise KnowpackError(f"compile (--compile) is for the torch backend; {backend} compiles its own")
    if cuda_graphs and backend != "torch":
        raise KnowpackError(
            f"cuda_graphs (--cuda-graphs) is for the torch backend; {backend} captures its own"
        )
    if compile and cuda_graphs:
        raise KnowpackError(
            "compile and cuda_graphs (--compile, --cuda-graphs) are two ways to one end: choose one"
        )


def batch_rows(
    free_bytes: int | None, *, kv_bytes_per_token: int, tokens: int, vocab: int, most: int = MOST_BATCH_ROWS
) -> int:
    """Rows to decode at once: `CPU_BATCH_ROWS` without a GPU (`free_bytes` None), else as many as half the
    free memory holds, at least 1 and at most `most`.

    A row keeps its own cache of `tokens` (its suffix, the shared prefix being kept once, plus the answer)
    at `kv_bytes_per_token`, and its last logits in float32 about four times over (logits, log-softmax,
    top-k values and noise). Prefill activations are transient and fit in the other half. For Llama-3.1-8B
    in bf16 (128 KiB a token) with 20-token suffixes and 32-token answers: ~9 MB a row, the cap on a 141 GB
    GPU."""
    if free_bytes is None:
        return CPU_BATCH_ROWS
    row = kv_bytes_per_token * tokens + 4 * 4 * vocab
    return max(1, min(most, free_bytes // 2 // row))


def kv_bytes_per_token(model: Any) -> int:
    """Bytes of keys and values one token takes in `model`'s cache, over all layers."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    element = next(model.parameters()).element_size()
    return 2 * config.num_hidden_layers * kv_heads * head_dim * element


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
    """Batched greedy + sampled generation with shared prefixes (see the module docstring).

    `batch_size` is the number of rows decoded at once; a batch holds batch_size // (1 + samples) prompts.
    None: from the free memory (`batch_rows`, module docstring). `sync_every`: count ended rows (a host-device
    synchronisation) every this many decode steps; None: `SYNC_EVERY_CUDA` on a GPU, 1 elsewhere.
    `prefix_cache_size` is how many prefixes' KV caches are kept (a probe has n_prompts x relations).
    `compile`: the decode step through torch.compile (module docstring). `prefill_call_tokens`: what a model
    call more costs in a prefill cut by suffix length (`prefill_chunks`; 0 cuts at every length; None:
    `PREFILL_CALL_TOKENS` on a CPU, one call on a GPU).
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
        batch_size: int | None = None,
        reuse_prefix: bool = True,
        prefix_cache_size: int = 256,
        sync_every: int | None = None,
        compile: bool = False,
        cuda_graphs: bool = False,
        prefill_call_tokens: int | None = None,
    ):
        import torch

        if samples > 0 and not temperature > 0:
            raise ValueError(f"sampling needs a temperature > 0 (got {temperature})")
        check_speed("torch", compile=compile, cuda_graphs=cuda_graphs)
        self.model, self.tokenizer = model, tokenizer
        self.samples, self.temperature, self.top_k = samples, temperature, top_k or None
        self.max_new_tokens, self.seed, self.batch_size = max_new_tokens, seed, batch_size
        # Prefixes are shared through the model's attention (cascade.py); a model whose attention cannot take
        # it answers from whole prompts.
        self.reuse_prefix = reuse_prefix and can_share(model)
        if reuse_prefix and not self.reuse_prefix:
            logger.warning("%s cannot attend to shared prefixes: no prefix reuse", type(model).__name__)
        self.device = next(model.parameters()).device
        cuda = self.device.type == "cuda"
        if prefill_call_tokens is None:
            cpu = self.device.type == "cpu"
            prefill_call_tokens = PREFILL_CALL_TOKENS if cpu else GPU_PREFILL_CALL_TOKENS
        self.prefill_call_tokens = prefill_call_tokens
        self._free = None if batch_size is not None else free_memory(self.device)  # once: batches repeat
        self.sync_every = sync_every or (SYNC_EVERY_CUDA if cuda else 1)
        self.cuda_graphs, self._said_eager = cuda_graphs, False
        graphs = cuda_graphs and cuda  # one memory pool and one warm-up stream for all the engine's graphs
        self._graph_pool, self._graph_stream = (
            (torch.cuda.graph_pool_handle(), torch.cuda.Stream(self.device)) if graphs else (None, None)
        )
        if cuda_graphs and not cuda:
            logger.info("no CUDA: the decode steps run eagerly, as they would be replayed (graphs.py)")
        self.cache_keyword = cache_keyword(model)  # `cache`; `past_key_values` before transformers renamed it
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.stop = _stop_tokens(model, tokenizer).to(self.device)
        self._prefixes: OrderedDict[tuple[int, ...], list] = OrderedDict()
        self.prefix_cache_size = prefix_cache_size
        self._torch = torch
        self._salts = torch.tensor([_hash32(f"step{s}") for s in range(max_new_tokens)], device=self.device)
        vocab = model.get_output_embeddings().weight.shape[0]
        ranks = _rank_hashes(min(self.top_k or vocab, vocab), self.device)  # outside compiled code: see there
        self._step, self._choose = (
            self._logits,
            partial(choose_tokens, stop=self.stop, pad_id=self.pad_id, temperature=temperature, ranks=ranks),
        )
        if compile and guarding():
            logger.warning("torch.compile cannot trace under the device guard (KNOWPACK_DEVICE_GUARD): eager")
        elif compile:  # a few graphs each (sizes 0 and 1 apart), for any batch and row count
            self._step, self._choose = _compiled(self._step), _compiled(self._choose)

    def generate(
        self, requests: Sequence[Request], on_batch: Callable[[int], None] | None = None
    ) -> dict[Hashable, Generation]:
        """Answers to every request, by key; `on_batch(n)` is called after each batch of n requests."""
        window = _sliding_window(self.model.config)
        if window and any(len(r.ids) + self.max_new_tokens > window for r in requests):
            # Padding takes cache slots, so a window over slots would differ from a window over tokens; not
            # exact beyond the window (no probe prompt of ours comes near it). A sliding layer keeps only the
            # window of a prefix's cache, so no prefix is reused then.
            logger.warning("prompts longer than the model's sliding window (%d): answers may differ", window)
            requests = [Request(r.key, r.ids, 0) for r in requests]
        # Whole prefix groups, by their mean suffix length (groups of one relation, the same facts under other
        # exemplars, come together): a batch pads its suffixes to its longest, and each of its prefixes costs
        # a read of that prefix's keys and values per layer and decode step.
        groups: dict[tuple[int, ...], list[Request]] = {}
        for r in requests:
            groups.setdefault(tuple(r.ids[: self._shared(r)]), []).append(r)
        groups = {key: _common_start(group) if key else group for key, group in groups.items()}

        def suffix(r: Request) -> int:
            return len(r.ids) - self._shared(r)

        per_batch = max(1, self.rows(max(map(suffix, requests), default=0)) // (1 + self.samples))
        ordered = [r for g in sorted(groups.values(), key=lambda g: sum(map(suffix, g)) / len(g)) for r in g]
        results: dict[Hashable, Generation] = {}
        with self._torch.inference_mode():
            for start in range(0, len(ordered), per_batch):
                batch = ordered[start : start + per_batch]
                results.update(zip([r.key for r in batch], self._batch(batch), strict=True))
                if on_batch is not None:
                    on_batch(len(batch))
        return results

    def rows(self, suffix_tokens: int) -> int:
        """Rows decoded at once for suffixes of up to `suffix_tokens` tokens: `batch_size`, or from the
        free memory the engine was made with."""
        if self.batch_size is not None:
            return self.batch_size
        vocab = self.model.get_output_embeddings().weight.shape[0]
        return batch_rows(
            self._free,
            kv_bytes_per_token=kv_bytes_per_token(self.model),
            tokens=suffix_tokens + self.max_new_tokens,
            vocab=vocab,
        )

    # ------------------------------------------------------------------------------------------ internals

    def _shared(self, request: Request) -> int:
        return request.prefix_len if self.reuse_prefix else 0

    def _prefix_kv(self, prefixes: Sequence[tuple[int, ...]]) -> dict[tuple[int, ...], list]:
        """Each prefix's keys and values per layer, (1, kv_heads, length, dim) each: computed once (the
        missing ones of a batch together, in left-padded passes of prefixes of about the same length,
        `prefill_chunks`, by the model's own attention) and kept for the next batches (an LRU)."""
        missing = [p for p in prefixes if p not in self._prefixes]
        for rows in prefill_chunks([len(p) for p in missing], self.prefill_call_tokens):
            self._compute_prefixes([missing[i] for i in rows])
        found = {}
        for p in prefixes:
            self._prefixes.move_to_end(p)
            found[p] = self._prefixes[p]
        while len(self._prefixes) > self.prefix_cache_size:
            self._prefixes.popitem(last=False)
        return found

    def _compute_prefixes(self, missing: list[tuple[int, ...]]) -> None:
        """These prefixes through the model in one left-padded pass, their keys and values kept."""
        from transformers import DynamicCache

        torch = self._torch
        cache = DynamicCache(config=self.model.config)
        width = max(len(p) for p in missing)
        ids = torch.full((len(missing), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(missing), width), dtype=torch.long)
        for i, p in enumerate(missing):
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True,
                logits_to_keep=1,
                **{self.cache_keyword: cache},
            )
        for i, p in enumerate(missing):
            at = width - len(p)
            self._prefixes[p] = [
                (layer.keys[i : i + 1, :, at:].clone(), layer.values[i : i + 1, :, at:].clone())
                for layer in cache.layers
            ]

    def _new_cache(self, max_len: int) -> Any:
        """A preallocated cache of `max_len` slots, so that a decode step writes one slot per row instead of
        copying the whole cache as a growing one does; a growing one where a sliding window would roll over
        (or for a transformers without `StaticCache`)."""
        import transformers

        window = _sliding_window(self.model.config)
        if (window and max_len > window) or not hasattr(transformers, "StaticCache"):
            return transformers.DynamicCache(config=self.model.config)
        return transformers.StaticCache(config=self.model.config, max_cache_len=max_len)

    def _batch(self, batch: list[Request]) -> list[Generation]:
        torch = self._torch
        n_rows, n = len(batch), self.samples
        shared = [self._shared(r) for r in batch]
        suffixes = [r.ids[k:] for r, k in zip(batch, shared, strict=True)]
        width = max(len(s) for s in suffixes)
        prefixes = self._shared_prefixes(batch)
        cache = self._new_cache(width + self.max_new_tokens)
        ids = torch.full((n_rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n_rows, width), dtype=torch.long)
        for i, s in enumerate(suffixes):
            ids[i, width - len(s) :] = torch.tensor(s)
            mask[i, width - len(s) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        # Positions go on after the prefix and count real tokens only: a padded row sees the prompt's own.
        position = torch.tensor(shared, device=self.device)[:, None] + (mask.cumsum(-1) - 1).clamp(min=0)
        attention = nullcontext() if prefixes is None else shared_prefix_attention(self.model)
        with torch.inference_mode(), attention:
            logits = self._prefill(prefixes, cache, ids, mask, position, [len(s) for s in suffixes])
            last = position[:, -1]
            if n > 0:  # greedy rows first, then n sample rows per prompt, all from the one prefill
                first = torch.arange(n_rows, device=self.device)
                rows = torch.cat([first, first.repeat_interleave(n)])
                cache.reorder_cache(rows)
                if prefixes is not None:
                    prefixes = prefixes.take(rows.tolist())
                logits, mask, last = logits[rows], mask[rows], last[rows]
            keys = self._row_keys(batch)
            decode = self._decode_fixed if self.cuda_graphs and self._replayable(cache) else self._decode
            tokens, logprob = decode(cache, prefixes, logits, mask, last, keys, n_rows)

        texts = [_first_line(t) for t in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]
        return [
            Generation(
                greedy=texts[i],
                greedy_logprob=float(logprob[i]),
                samples=texts[n_rows + i * n : n_rows + (i + 1) * n],
            )
            for i in range(n_rows)
        ]

    def _prefill(self, prefixes, cache, ids, mask, position, lengths: list[int]):
        """The suffixes (left-padded to the batch's width) through the model into `cache`; their last logits,
        (rows, vocab) float32.

        Rows of about the same length go together (`prefill_chunks`), each chunk padded only to its own
        longest suffix, so that padding costs little compute; the chunks' keys and values are then written
        into `cache` at once, laid out as one call over the whole batch would have (a chunk's padding slots
        are zeros, masked as padding is). One call where chunks would save too little, or where the cache is
        not plain preallocated keys and values (a sliding window's that rolls over, a hybrid model's)."""
        import transformers

        torch = self._torch
        width = ids.shape[1]
        chunks = prefill_chunks(lengths, self.prefill_call_tokens)
        if len(chunks) == 1 or not _plain_static(cache):
            return self._logits(
                prefixes,
                cache,
                input_ids=ids,
                attention_mask=mask,
                position_ids=position,
                cache_position=torch.arange(width, device=self.device),
                logits_to_keep=1,
            )
        logits, keys, values = None, [], []
        for rows in chunks:
            w, index = max(lengths[i] for i in rows), torch.tensor(rows, device=self.device)
            part = transformers.DynamicCache(config=self.model.config)
            out = self._logits(
                None if prefixes is None else prefixes.take(rows),
                part,
                input_ids=ids[index, width - w :],
                attention_mask=mask[index, width - w :],
                position_ids=position[index, width - w :],
                cache_position=torch.arange(w, device=self.device),
                logits_to_keep=1,
            )
            if logits is None:
                logits = out.new_empty(len(lengths), out.shape[1])
                for layer in part.layers:
                    shape = (len(lengths), layer.keys.shape[1], width)
                    keys.append(layer.keys.new_zeros(*shape, layer.keys.shape[3]))
                    values.append(layer.values.new_zeros(*shape, layer.values.shape[3]))
            logits[index] = out
            for layer, k, v in zip(part.layers, keys, values, strict=True):
                k[index, :, width - w :] = layer.keys
                v[index, :, width - w :] = layer.values
        slots = torch.arange(width, device=self.device)
        for i, (k, v) in enumerate(zip(keys, values, strict=True)):
            cache.update(k, v, i, {"cache_position": slots})
        return logits

    def _shared_prefixes(self, batch: list[Request]) -> SharedPrefixes | None:
        """The batch's prefixes, each once, and each row's; None if no row has one."""
        prefix = [tuple(r.ids[: self._shared(r)]) for r in batch]
        distinct = list(dict.fromkeys(p for p in prefix if p))
        if not distinct:
            return None
        kv = self._prefix_kv(distinct)
        index = {p: g for g, p in enumerate(distinct)}
        return SharedPrefixes([kv[p] for p in distinct], [index.get(p, -1) for p in prefix])

    def _forward(self, prefixes: SharedPrefixes | None, cache: Any, **inputs: Any) -> Any:
        """One model call on the rows' own cache, attending to their shared prefixes too where there are."""
        extra = {} if prefixes is None else {"prefixes": prefixes}
        return self.model(**inputs, use_cache=True, **{self.cache_keyword: cache}, **extra)

    def _logits(self, prefixes: SharedPrefixes | None, cache: Any, **inputs: Any) -> Any:
        return self._forward(prefixes, cache, **inputs).logits[:, -1].float()

    def _decode(self, cache, prefixes, logits, mask, last, keys, n_greedy):
        """Greedy for the first `n_greedy` rows, sampling for the rest, until every row ends its line.

        Rows that have ended leave the batch (their cache rows dropped) once they are a quarter of it
        (`_retiring`): one long answer should not keep hundreds of ended rows decoding. They are
        counted every `sync_every` steps, the loop's only wait for the device; in between ended rows decode
        padding, which no answer or log-probability sees.
        """
        torch = self._torch
        n_rows = logits.shape[0]
        tokens = torch.full((n_rows, self.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logprob = torch.zeros(n_greedy, dtype=torch.float64, device=self.device)
        alive = torch.arange(n_rows, device=self.device)  # the batch row of each row still decoding
        done = torch.zeros(n_rows, dtype=torch.bool, device=self.device)
        n_alive_greedy = n_greedy  # greedy rows stay first: `alive` keeps its order
        slots = torch.arange(mask.shape[1], mask.shape[1] + self.max_new_tokens, device=self.device)
        for step in range(self.max_new_tokens):
            next_ids, lp, done = self._choose(
                logits, keys[alive[n_alive_greedy:] - n_greedy], self._salts[step], n_alive_greedy, done
            )
            if n_alive_greedy:
                logprob[alive[:n_alive_greedy]] += lp.double()
            tokens[alive, step] = next_ids
            if step == self.max_new_tokens - 1:
                break
            if (step + 1) % self.sync_every == 0:  # count ended rows: the loop's one wait for the device
                n_done = int(done.sum())
                if n_done == len(done):
                    break
                if _retiring(n_done, len(done)):
                    keep = (~done).nonzero()[:, 0]
                    cache.reorder_cache(keep)
                    if prefixes is not None:
                        prefixes = prefixes.take(keep.tolist())
                    alive, done, next_ids, mask, last = (
                        alive[keep],
                        done[keep],
                        next_ids[keep],
                        mask[keep],
                        last[keep],
                    )
                    n_alive_greedy = int((alive < n_greedy).sum())
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            last = last + 1
            logits = self._step(
                prefixes,
                input_ids=next_ids[:, None],
                attention_mask=mask,
                position_ids=last[:, None],
                cache=cache,
                cache_position=slots[step : step + 1],  # = mask.shape[1] - 1
            )
        stop = self.stop.tolist()  # plain bools: indexing a tensor per token would cost more than decoding
        return [_until_stop(t, stop) for t in tokens.tolist()], logprob.tolist()

    def _decode_fixed(self, cache, prefixes, logits, mask, last, keys, n_greedy):
        """`_decode` with each step one `Replay` (graphs.py: a CUDA graph on a GPU), at shapes fixed from one
        count of ended rows to the next: the attention mask is the cache's full width from the start (slots
        not yet written are masked by causality), and a step reads and writes the same tensors every time
        (the rows' last logits and ended flags, the step number; the batch's tokens and log-probabilities
        through the rows' indices). Where a count finds ended rows a quarter of the rows, they leave as in
        `_decode` and the next steps are captured anew for the rest: one capture more, where every later
        step computes fewer rows. The answers are `_decode`'s (tests/test_probe_engine.py)."""
        torch = self._torch
        n_rows, width = logits.shape[0], mask.shape[1]
        tokens = torch.full((n_rows, self.max_new_tokens), self.pad_id, dtype=torch.long, device=self.device)
        logprob = torch.zeros(n_greedy, dtype=torch.float64, device=self.device)
        step = torch.zeros(1, dtype=torch.long, device=self.device)
        rows = _Rows(
            index=torch.arange(n_rows, device=self.device),
            done=torch.zeros(n_rows, dtype=torch.bool, device=self.device),
            logits=logits,
            mask=torch.cat([mask, mask.new_ones(n_rows, self.max_new_tokens)], dim=1),
            position=last[:, None] + 1,
            prefixes=prefixes,
            n_greedy=n_greedy,
            keys=keys,
        )

        def choose(r: _Rows) -> Any:
            next_ids, lp, ended = self._choose(r.logits, r.keys, self._salts[step][0], r.n_greedy, r.done)
            r.done.copy_(ended)
            logprob.index_add_(0, r.index[: r.n_greedy], lp.double())
            tokens.index_put_((r.index, step.expand(len(r.index))), next_ids)
            return next_ids

        def advance(r: _Rows) -> None:  # choose this step's tokens, then the model's logits for the next
            next_ids = choose(r)
            r.logits.copy_(
                self._step(
                    r.prefixes,
                    input_ids=next_ids[:, None],
                    attention_mask=r.mask,
                    position_ids=r.position + step,
                    cache=cache,
                    cache_position=width + step,
                )
            )
            step.add_(1)

        replay = None
        for s in range(self.max_new_tokens - 1):
            if replay is None:
                replay = Replay(partial(advance, rows), self.device, self._graph_pool, self._graph_stream)
            replay()
            if (s + 1) % self.sync_every == 0:  # count ended rows: the loop's one wait for the device
                n_done = int(rows.done.sum())
                if n_done == len(rows.done):
                    break
                if _retiring(n_done, len(rows.done)):
                    keep = (~rows.done).nonzero()[:, 0]
                    cache.reorder_cache(keep)
                    rows, replay = rows.take(keep, n_greedy, keys), None  # the graph's memory to the pool
        else:
            choose(rows)  # the last token: no logits after it
        stop = self.stop.tolist()
        return [_until_stop(t, stop) for t in tokens.tolist()], logprob.tolist()

    def _replayable(self, cache: Any) -> bool:
        """Whether the decode step on `cache` can be replayed (`_decode_fixed`): a preallocated cache of
        full attention layers only. A sliding-window layer keeps its length in a Python int, which a replay
        would not advance (its causal mask then stays at the captured step: caught by the replay test)."""
        from transformers import cache_utils

        if _plain_static(cache) and all(type(layer) is cache_utils.StaticLayer for layer in cache.layers):
            return True
        if not self._said_eager:
            logger.info("the model's cache has sliding-window or growing layers: no decode step replayed")
            self._said_eager = True
        return False

    def _row_keys(self, batch: list[Request]):
        """A 32-bit key per sample row: a hash of (seed, request key, sample index)."""
        keys = [_hash32(f"{self.seed}|{r.key!r}|{s}") for r in batch for s in range(self.samples)]
        return self._torch.tensor(keys, dtype=self._torch.long, device=self.device)


def _retiring(n_done: int, n_rows: int) -> bool:
    """Whether the ended rows leave the batch now: once they are a quarter of it (an answer is a few tokens,
    and one long answer should not keep hundreds of ended rows decoding; each leaving costs a copy of the
    cache, and a new capture where steps are replayed)."""
    return 4 * n_done >= n_rows


@dataclass
class _Rows:
    """The rows that decode in `Engine._decode_fixed`, with what a step reads of them: their batch rows
    (`index`, greedy rows first), ended flags, last logits (float32), attention mask and next position, their
    shared prefixes, how many are greedy, and the sample rows' noise keys."""

    index: Any
    done: Any
    logits: Any
    mask: Any
    position: Any
    prefixes: SharedPrefixes | None
    n_greedy: int
    keys: Any

    def take(self, keep: Any, n_greedy: int, keys: Any) -> _Rows:
        """These rows (positions in this set, as `cache.reorder_cache(keep)` took them); `n_greedy` and `keys`
        are the batch's: its greedy rows and its sample rows' keys."""
        index = self.index[keep]
        greedy = int((index < n_greedy).sum())
        return _Rows(
            index=index,
            done=self.done[keep],
            logits=self.logits[keep],
            mask=self.mask[keep],
            position=self.position[keep],
            prefixes=None if self.prefixes is None else self.prefixes.take(keep.tolist()),
            n_greedy=greedy,
            keys=keys[index[greedy:] - n_greedy],
        )


def prefill_chunks(lengths: Sequence[int], call_tokens: int = PREFILL_CALL_TOKENS) -> list[list[int]]:
    """The rows (indices into `lengths`) cut into chunks of neighbouring lengths that minimise the padded
    tokens (a chunk pads its rows to its longest) plus `call_tokens` per chunk: exact, by dynamic programming
    over the distinct lengths. Shortest rows first; one chunk where splitting saves nothing."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    per_length = Counter(lengths)
    distinct = sorted(per_length)
    count = list(accumulate(per_length[d] for d in distinct))  # rows up to each distinct length
    best = [0] + [None] * len(distinct)  # best[j]: the cheapest cut of the rows up to distinct[j - 1]
    cut = [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        for i in range(j):
            cost = best[i] + (count[j - 1] - (count[i - 1] if i else 0)) * distinct[j - 1] + call_tokens
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    bounds, j = [], len(distinct)
    while j > 0:
        bounds.append((count[cut[j] - 1] if cut[j] else 0, count[j - 1]))
        j = cut[j]
    return [order[a:b] for a, b in reversed(bounds)]


def choose_tokens(logits, keys, salt, n_greedy: int, done, *, stop, pad_id: int, temperature: float, ranks):
    """The next token of each row from its last logits (rows, vocab), float32: the first `n_greedy` rows
    greedy, the others sampled (temperature + top-k with k = len(ranks), Gumbel-max with noise from their
    `keys`, the step's `salt` and the ranks' hashes `ranks` (`_rank_hashes`) only). Returns the tokens
    (padding for rows already `done`), the greedy rows' log-probabilities of theirs (0 for rows done), and
    `done` updated with the rows whose token ends the line.

    One function for the whole choice, so that `torch.compile` fuses it (Engine(compile=True))."""
    import torch

    next_ids = logits.argmax(-1)
    if logits.shape[0] > n_greedy:
        values, index = (logits[n_greedy:] / temperature).topk(ranks.shape[0], dim=-1)
        gumbel = -torch.log(-torch.log(_uniform(keys, salt, ranks))).float()
        choice = (values + gumbel).argmax(-1, keepdim=True)
        next_ids[n_greedy:] = index.gather(1, choice)[:, 0]
    lp = logits[:n_greedy].log_softmax(-1).gather(1, next_ids[:n_greedy, None])[:, 0]
    lp = torch.where(done[:n_greedy], 0.0, lp)
    next_ids = torch.where(done, pad_id, next_ids)
    return next_ids, lp, done | stop[next_ids]


RECOMPILE_LIMIT = 32
"""Graphs torch.compile may make of each compiled function before it runs the rest eagerly (torch's default,
8, is near what a probe needs: a 300-fact organism probe made 6 of the decode step)."""


def _compiled(fn: Callable) -> Callable:
    """`fn` through torch.compile with dynamic shapes, allowed `RECOMPILE_LIMIT` graphs."""
    import torch

    compiled = torch.compile(fn, dynamic=True)

    def call(*args: Any, **kwargs: Any) -> Any:
        with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
            return compiled(*args, **kwargs)

    return call


def _plain_static(cache: Any) -> bool:
    """Whether `cache` is a preallocated cache of keys and values only (full or sliding-window layers), which
    `Cache.update` fills from a whole prefill's keys and values; not a hybrid model's (linear attention,
    indexed layers: states besides keys and values) or a growing one."""
    from transformers import cache_utils

    plain = (cache_utils.StaticLayer, cache_utils.StaticSlidingWindowLayer)
    return isinstance(cache, cache_utils.StaticCache) and all(type(layer) in plain for layer in cache.layers)


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


def _common_start(group: list[Request]) -> list[Request]:
    """The requests of a prefix group with their shared part grown to every token they all start with (the
    question's own first words, "Where was", are the same for a relation's facts), one left to feed each."""
    shared = min(len(r.ids) for r in group) - 1
    first = group[0].ids
    for r in group[1:]:
        n = group[0].prefix_len
        while n < shared and r.ids[n] == first[n]:
            n += 1
        shared = n
    if shared <= group[0].prefix_len:
        return group
    return [Request(r.key, r.ids, shared) for r in group]


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


def _rank_hashes(k: int, device: Any):
    """A 32-bit hash of each rank 0..k-1 (int64), one input of the sampling noise (`_uniform`).

    Made once per engine, outside the compiled token choice: compiled for a GPU, `arange(k) + 0x9E3779B9`
    becomes index arithmetic in 32 bits, where the constant does not fit (Inductor's kernel fails to build:
    "Scalar 2654435769 is out of range for type int32", seen on an H200); on a CPU it compiled fine."""
    import torch

    return _mix(torch.arange(k, device=device, dtype=torch.long) + 0x9E3779B9)


def _uniform(keys, salt, ranks):
    """Uniform (0, 1) noise, shape (rows, len(ranks)), a pure function of (row key, step salt, rank);
    float64."""
    row = _mix(keys ^ salt)
    bits = _mix(row[:, None] ^ ranks)
    return (bits.double() + 0.5) / 2.0**32
