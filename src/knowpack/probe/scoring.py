"""Scoring a fact's answers: p_greedy, p_sample and its SliCK category, as docs/design.md §4.2 has them.

    p_greedy = share of prompts whose greedy answer is correct
    p_sample = share of all samples (over all prompts) that are correct
    HighlyKnown: p_greedy = 1;  MaybeKnown: 0 < p_greedy < 1;  WeaklyKnown: p_greedy = 0 < p_sample;
    Unknown: both 0.  With no samples there is no WeaklyKnown: the knowledge-packing paper's three categories.

`transition_matrix` compares two probes of the same facts (e.g. before / after training, or two seeds of the
untouched model: the noise floor).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from knowpack.facts.normalize import DEFAULT_REFUSAL_PATTERNS, extract_answer, is_correct, is_refusal

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


def category(p_greedy: float, p_sample: float | None) -> str:
    """The SliCK category; `p_sample` None (no samples drawn) gives the paper's three categories."""
    if p_greedy == 1:
        return "HighlyKnown"
    if p_greedy > 0:
        return "MaybeKnown"
    if p_sample:
        return "WeaklyKnown"
    return "Unknown"


def score(
    greedy: Sequence[str],
    samples: Sequence[Sequence[str]],
    answers: Sequence[str],
    *,
    mode: str = "substring",
    refusal_patterns: Sequence[str] = DEFAULT_REFUSAL_PATTERNS,
) -> dict[str, Any]:
    """The scored part of a probe record from the raw generations (one greedy and a list of samples per
    prompt); answers are stored as `extract_answer` gives them."""
    if not greedy:
        raise ValueError("no prompts to score")
    judged: dict[str, bool] = {}  # samples repeat themselves ("I don't know." x 100): judge each text once

    def correct(generation: str) -> bool:
        if generation not in judged:
            judged[generation] = is_correct(generation, answers, mode)
        return judged[generation]

    greedy_ok = [correct(g) for g in greedy]
    sample_ok = [[correct(s) for s in per_prompt] for per_prompt in samples]
    n_samples = sum(len(s) for s in sample_ok)
    p_greedy = sum(greedy_ok) / len(greedy_ok)
    p_sample = sum(map(sum, sample_ok)) / n_samples if n_samples else None
    greedy_answers = [extract_answer(g) for g in greedy]
    sample_answers = [[extract_answer(s) for s in per_prompt] for per_prompt in samples]
    return {
        "category": category(p_greedy, p_sample),
        "p_greedy": p_greedy,
        "p_sample": p_sample,
        "greedy": greedy_answers,
        "samples": sample_answers,
        "greedy_correct": greedy_ok,
        "greedy_refusal": [is_refusal(a, refusal_patterns) for a in greedy_answers],
        "sample_refusal": [sum(is_refusal(a, refusal_patterns) for a in s) for s in sample_answers],
    }


def transition_matrix(before: Iterable[dict], after: Iterable[dict]) -> dict[str, Any]:
    """The 4x4 category transition matrix between two probes (records with `id` and `category`), over the
    facts present in both: `counts[a][b]` facts went from a to b; `shares[a][b]` is the row share (0 for an
    empty row). Also the number of facts compared, and the share that kept their category."""
    first = {r["id"]: r["category"] for r in before}
    second = {r["id"]: r["category"] for r in after}
    common = [i for i in first if i in second]
    counts = {a: dict.fromkeys(CATEGORIES, 0) for a in CATEGORIES}
    for i in common:
        counts[first[i]][second[i]] += 1
    shares = {}
    for a, row in counts.items():
        total = sum(row.values())
        shares[a] = {b: (n / total if total else None) for b, n in row.items()}  # no facts: None, not 0
    same = sum(counts[a][a] for a in CATEGORIES)
    return {
        "n": len(common),
        "counts": counts,
        "shares": shares,
        "unchanged": same / len(common) if common else 0.0,
    }
