"""KVA over many prompts, kept as what selection needs: selection counts and running sums, never all scores.

LoKI's selection counts, per node, how often it was among the k lowest (or highest) scores of its layer on a
prompt, for the k of the chosen quota. The quota is chosen later (`knowpack select`), so the counts are kept
for every k that a quota can ask for, in one compact form: per node, a histogram of its rank over the
"edges" (the k values). A node's count for "among the k lowest" is then the number of prompts on which its
rank was below k, a sum over the histogram's first bins; "among the k highest" is a rank of at least n - k,
a sum over its last bins. So the edges are {k, n - k} for every quota counted, and:

- small models (histogram of at most 2^22 cells): every k from 1 to n - 1, so any quota is exact;
- larger ones: the k of the whole-percent quotas 1..100 and any extra `quotas` given at attribution time
  (Llama-3.1-8B: about 200 edges, 100 MiB of int32 counts per scope).

Two scopes: `layer` ranks a node within its layer (n = rows per layer, the layer-balanced strategies) and
`global` ranks it among all L·n nodes (the global strategies). Beside the counts: the number of prompts and,
in float64, the sum of scores and of |scores| per node (the scores are ~1e-5: fp16 would flush them).

Ties: on a prompt, nodes are put in one total order by (signed score, layer, row), so with equal scores the
lower layer and then the lower row counts as lower. The k lowest are the first k of that order, the k highest
its last k.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from knowpack.config import field_range
from knowpack.errors import KnowpackError
from knowpack.io import write_bytes_atomic
from knowpack.methods.loki.config import Config

DEFAULT_QUOTAS: tuple[float, ...] = tuple(range(1, 101))
"""Quotas (in %) whose counts are always kept: every whole percent."""

ALL_EDGES_CELLS = 1 << 22
"""A histogram of at most this many cells keeps every k (any quota exact)."""

SCOPES = ("layer", "global")


QUOTAS = field_range(Config, "quota")
"""The quotas there are, (0, 100] percent: the range of LoKI's `quota` setting, written once, there."""


def check_quota(quota: float) -> float:
    """The quota as a float within `QUOTAS`, or a one-line error."""
    try:
        value = float(quota)
    except (TypeError, ValueError):
        raise KnowpackError(f"quota must be a number {QUOTAS} (a percentage), got {quota!r}") from None
    if value not in QUOTAS:
        raise KnowpackError(f"quota must be a percentage {QUOTAS}, got {quota!r}")
    return value


def rows_for_quota(quota: float, n: int) -> int:
    """floor(quota · n / 100), computed exactly (12.5% of 8 rows is 1, not 0.99999)."""
    return math.floor(Fraction(str(check_quota(quota))) * n / 100)


class KVAStats:
    """Selection counts and running sums of KVA scores over prompts (see the module docstring)."""

    def __init__(self, num_layers: int, rows: int, quotas: Iterable[float] = DEFAULT_QUOTAS):
        self.num_layers, self.rows = num_layers, rows
        self.quotas = sorted({check_quota(q) for q in (*DEFAULT_QUOTAS, *quotas)})
        self.n = 0
        self.sum = np.zeros((num_layers, rows), dtype=np.float64)
        self.sum_abs = np.zeros((num_layers, rows), dtype=np.float64)
        self.edges = {scope: self._edges(self._size(scope)) for scope in SCOPES}
        self.hist = {
            scope: np.zeros((num_layers, rows, len(self.edges[scope]) + 1), dtype=np.int32)
            for scope in SCOPES
        }

    # ---------------------------------------------------------------------------------------- adding

    def add(self, scores: np.ndarray) -> None:
        """Count one prompt's scores ([num_layers, rows])."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (self.num_layers, self.rows):
            raise KnowpackError(f"scores of shape {scores.shape}; expected ({self.num_layers}, {self.rows})")
        self.n += 1
        self.sum += scores
        self.sum_abs += np.abs(scores)
        nodes = np.arange(self.num_layers * self.rows)
        for scope in SCOPES:
            ranks = _ranks(scores, scope)
            bins = np.searchsorted(self.edges[scope], ranks.ravel(), side="right")  # edges <= rank
            self.hist[scope].reshape(nodes.size, -1)[nodes, bins] += 1

    def merge(self, other: KVAStats) -> None:
        """Add another KVAStats of the same shape and edges (a shard) into this one."""
        if (other.num_layers, other.rows) != (self.num_layers, self.rows) or any(
            not np.array_equal(other.edges[s], self.edges[s]) for s in SCOPES
        ):
            raise KnowpackError("cannot merge attributions of different model shapes or quota sets")
        self.n += other.n
        self.sum += other.sum
        self.sum_abs += other.sum_abs
        for scope in SCOPES:
            self.hist[scope] += other.hist[scope]

    # ---------------------------------------------------------------------------------------- reading

    def counted(self, k: int, side: str, scope: str) -> bool:
        """Whether counts for "among the k lowest/highest" were kept."""
        n = self._size(scope)
        edge = k if side == "low" else n - k
        return 0 < k <= n and (k == n or edge in set(self.edges[scope].tolist()))

    def counts(self, k: int, side: str = "low", scope: str = "layer") -> np.ndarray:
        """[num_layers, rows]: on how many prompts each node was among the k lowest (or highest) of its
        layer (scope `layer`) or of all nodes (scope `global`)."""
        if side not in ("low", "high") or scope not in SCOPES:
            raise KnowpackError(f"unknown side {side!r} or scope {scope!r}")
        n = self._size(scope)
        if not self.counted(k, side, scope):
            raise KnowpackError(f"no counts kept for the {k} {side}est of {n} nodes ({scope} scope)")
        if k == n:
            return np.full((self.num_layers, self.rows), self.n, dtype=np.int64)
        hist = self.hist[scope].astype(np.int64)
        if side == "low":
            e = int(np.searchsorted(self.edges[scope], k))
            return hist[..., : e + 1].sum(-1)
        e = int(np.searchsorted(self.edges[scope], n - k))
        return hist[..., e + 1 :].sum(-1)

    def mean(self) -> np.ndarray:
        return self.sum / max(self.n, 1)

    def mean_abs(self) -> np.ndarray:
        return self.sum_abs / max(self.n, 1)

    # ---------------------------------------------------------------------------------------- files

    def save(self, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
        """Write a safetensors file atomically; `meta` (JSON-able) goes into its header."""
        from safetensors.numpy import save

        tensors = {"sum": self.sum, "sum_abs": self.sum_abs}
        for scope in SCOPES:
            tensors[f"hist_{scope}"] = self.hist[scope]
            tensors[f"edges_{scope}"] = self.edges[scope]
        header = {"n": self.n, "num_layers": self.num_layers, "rows": self.rows, "quotas": self.quotas}
        data = save(tensors, metadata={"knowpack_kva": json.dumps({**header, "meta": meta or {}})})
        return write_bytes_atomic(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> tuple[KVAStats, dict[str, Any]]:
        """A saved KVAStats and the `meta` it was saved with."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                header = json.loads((f.metadata() or {})["knowpack_kva"])
                tensors = {key: np.array(f.get_tensor(key)) for key in f.keys()}  # writable copies
        except (OSError, KeyError, ValueError) as e:
            raise KnowpackError(f"{path}: not a knowpack attribution file ({type(e).__name__})") from None
        stats = cls.__new__(cls)
        stats.num_layers, stats.rows, stats.n = header["num_layers"], header["rows"], header["n"]
        stats.quotas = header["quotas"]
        stats.sum, stats.sum_abs = tensors["sum"], tensors["sum_abs"]
        stats.edges = {scope: tensors[f"edges_{scope}"] for scope in SCOPES}
        stats.hist = {scope: tensors[f"hist_{scope}"] for scope in SCOPES}
        return stats, header["meta"]

    # ---------------------------------------------------------------------------------------- internals

    def _size(self, scope: str) -> int:
        return self.rows if scope == "layer" else self.num_layers * self.rows

    def _edges(self, n: int) -> np.ndarray:
        if self.num_layers * self.rows * n <= ALL_EDGES_CELLS:
            return np.arange(1, n, dtype=np.int64)
        ks = {rows_for_quota(q, n) for q in self.quotas}
        return np.array(sorted({e for k in ks for e in (k, n - k) if 0 < e < n}), dtype=np.int64)


def _ranks(scores: np.ndarray, scope: str) -> np.ndarray:
    """Each node's 0-based position in the order (score, layer, row) of its layer or of all nodes."""
    if scope == "global":
        order = np.argsort(scores.ravel(), kind="stable")
        ranks = np.empty(order.size, dtype=np.int64)
        ranks[order] = np.arange(order.size)
        return ranks.reshape(scores.shape)
    order = np.argsort(scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(scores.shape[1]), scores.shape), axis=1)
    return ranks
