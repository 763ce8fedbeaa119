"""The probe's few-shot prompts: N_ex prompts of k shots per fact, in the `plain` or `chat` format.

    prompts = build_prompts(facts, tokenizer, n_prompts=10, shots=4, seed=0, fmt="plain")
    prompts[i][j]          # fact i under prompt index j: a `Prompt` (text, prefix, exemplar ids)

Exemplars (docs/design.md §4.2): drawn from `exemplars`, a list of facts (by default the facts themselves),
of the same relation where the fact has one and `exemplars` has enough, never the fact itself and never a fact
about the same subject (an exemplar "Where was X born? Paris" would give away "Which country is X from?").
They are fixed per prompt index by the seed: for prompt index j and relation r the exemplars of r are
shuffled once, and every fact takes
the first k eligible exemplars of that order. So almost all facts of a relation share one exemplar list
under prompt j, hence one text prefix, and the engine computes that prefix's KV cache once.

`Prompt.prefix` is the text before the fact's own question ("" when it cannot be split); the prompt text
always starts with it. The `plain` format is `knowpack.prompts.plain_prompt` (what the organism was
pretrained on); `chat` is the tokenizer's chat template with system "Answer the following question.",
user "Question: q", assistant "Answer: a", and the generation prompt added.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.facts.normalize import normalize
from knowpack.facts.schema import Fact
from knowpack.prompts import plain_prompt

FORMATS = ("plain", "chat")
SYSTEM = "Answer the following question."
_SENTINEL = "\x00knowpack-question\x00"  # stands in for the question when finding the prefix


@dataclass(frozen=True)
class Prompt:
    """One few-shot prompt for one fact: the full text, the shared text before the question, exemplar ids."""

    text: str
    prefix: str
    exemplars: tuple[str, ...]


def build_prompts(
    facts: Sequence[Fact],
    tokenizer: Any,
    *,
    n_prompts: int = 10,
    shots: int = 4,
    seed: int = 0,
    fmt: str = "plain",
    exemplars: Sequence[Fact] | ExemplarOrders | None = None,
) -> list[list[Prompt]]:
    """`n_prompts` prompts per fact (see the module docstring); `exemplars` are the facts the
    few-shot examples are drawn from (default: `facts`), or their `ExemplarOrders` for this seed, made once
    where prompts are built in chunks from the same exemplars."""
    if fmt not in FORMATS:
        raise KnowpackError(f"unknown prompt format {fmt!r}; expected plain or chat")
    if n_prompts < 1 or shots < 0:
        raise KnowpackError(f"need n_prompts >= 1 and shots >= 0 (got {n_prompts} and {shots})")
    if fmt == "chat":
        check_chat_template(tokenizer)
    if isinstance(exemplars, ExemplarOrders):
        if exemplars.seed != seed:
            raise ValueError(f"exemplar orders of seed {exemplars.seed} given for seed {seed}")
        orders = exemplars
    else:
        orders = ExemplarOrders(list(facts if exemplars is None else exemplars), seed)
    prefixes: dict[tuple[str, ...], str] = {}
    out = []
    for fact in facts:
        row = []
        for j in range(n_prompts):
            chosen = choose_exemplars(fact, orders, j, shots)
            key = tuple(e.id for e in chosen)
            pairs = [(e.question, e.answer) for e in chosen]
            if key not in prefixes:
                prefixes[key] = _prefix(render(pairs, _SENTINEL, tokenizer, fmt))
            text = render(pairs, fact.question, tokenizer, fmt)
            prefix = prefixes[key] if text.startswith(prefixes[key]) else ""
            row.append(Prompt(text, prefix, key))
        out.append(row)
    return out


def render(pairs: Sequence[tuple[str, str]], question: str, tokenizer: Any, fmt: str) -> str:
    """The prompt text for exemplar (question, answer) pairs and the question asked."""
    if fmt == "plain":
        return plain_prompt(pairs, question)
    messages = [{"role": "system", "content": SYSTEM}]
    for q, a in pairs:
        messages += [
            {"role": "user", "content": f"Question: {q}"},
            {"role": "assistant", "content": f"Answer: {a}"},
        ]
    messages.append({"role": "user", "content": f"Question: {question}"})
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja errors, e.g. a template that rejects the system role
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KnowpackError(f"the tokenizer's chat template failed: {first}") from None


def encode(tokenizer: Any, text: str, fmt: str) -> list[int]:
    """Token ids of a prompt: plain text gets the tokenizer's special tokens (BOS); a rendered chat template
    already holds them, so it is encoded as is (what `apply_chat_template(tokenize=True)` does)."""
    return tokenizer(text, add_special_tokens=(fmt == "plain"))["input_ids"]


def check_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise KnowpackError(
            f"tokenizer {name!r} has no chat template; use plain prompts "
            "(--prompt-format plain; probe.format: plain in a run config)"
        )


def choose_exemplars(fact: Fact, orders: ExemplarOrders, j: int, shots: int) -> list[Fact]:
    """The first `shots` eligible exemplars of prompt index j: same relation when it has enough."""
    if shots == 0:
        return []
    if fact.relation is not None:
        chosen = _first_eligible(fact, orders, orders.order(j, fact.relation), shots)
        if len(chosen) == shots:
            return chosen
    chosen = _first_eligible(fact, orders, orders.order(j, None), shots)
    if len(chosen) < shots:
        raise KnowpackError(_too_few(fact, orders, len(chosen), shots))
    return chosen


def _too_few(fact: Fact, orders: ExemplarOrders, eligible: int, shots: int) -> str:
    """Why `exemplars` hold too few eligible ones for `fact`: how many of them each rule left out."""
    exemplars = orders.by_relation[None]
    question = normalize(fact.question)
    same_question = sum(1 for e in exemplars if e.id != fact.id and orders.question(e) == question)
    same_subject = sum(
        1 for e in exemplars if e.id != fact.id and fact.subject is not None and e.subject == fact.subject
    )
    reasons = ["one is the fact itself"] if any(e.id == fact.id for e in exemplars) else []
    reasons += [f"{same_question} ask the same question"] if same_question else []
    reasons += [f"{same_subject} are about the same subject"] if same_subject else []
    why = f" ({', '.join(reasons)})" if reasons else ""
    hint = "; `knowpack facts check` lists facts that share a question" if same_question else ""
    return (
        f"the exemplars hold only {eligible} eligible exemplar(s) for fact {fact.id!r} of their "
        f"{len(exemplars)} facts{why}; {shots} shots need more{hint}"
    )


class ExemplarOrders:
    """Seeded shuffles of `exemplars` (the facts few-shot examples are drawn from), one per (prompt index,
    relation), made on first use."""

    def __init__(self, exemplars: Sequence[Fact], seed: int):
        self.seed = seed
        self.by_relation: dict[str | None, list[Fact]] = defaultdict(list)
        for e in exemplars:
            if e.relation is not None:
                self.by_relation[e.relation].append(e)
        self.by_relation[None] = list(exemplars)  # all of them, for facts without a relation or too few of it
        self.cache: dict[tuple[int, str | None], list[Fact]] = {}
        self._questions: dict[str, str] = {}
        self._sorted: dict[str | None, list[Fact]] = {}

    def question(self, e: Fact) -> str:
        """The normalized question of exemplar `e` (normalized on first use: most are never looked at)."""
        if e.id not in self._questions:
            self._questions[e.id] = normalize(e.question)
        return self._questions[e.id]

    def order(self, j: int, relation: str | None) -> list[Fact]:
        key = (j, relation)
        if key not in self.cache:
            # Sorted first, so the order depends on the exemplars' content, not on the order it came in.
            if relation not in self._sorted:
                self._sorted[relation] = sorted(self.by_relation.get(relation, []), key=lambda e: e.id)
            order = list(self._sorted[relation])
            # A string seed is hashed with SHA-512 by `random`: stable across runs and platforms.
            random.Random(f"knowpack-probe:{self.seed}:{j}:{relation}").shuffle(order)
            self.cache[key] = order
        return self.cache[key]


def _first_eligible(fact: Fact, orders: ExemplarOrders, order: list[Fact], shots: int) -> list[Fact]:
    question = normalize(fact.question)
    chosen = []
    for e in order:
        if e.id == fact.id or orders.question(e) == question:
            continue
        if fact.subject is not None and e.subject == fact.subject:
            continue
        chosen.append(e)
        if len(chosen) == shots:
            break
    return chosen


def _prefix(rendered: str) -> str:
    """The text before the question itself ("Question: " included: the more that is shared, the less each
    fact feeds), from a prompt rendered with the sentinel as its question."""
    at = rendered.find(f"Question: {_SENTINEL}")
    return rendered[: at + len("Question: ")] if at >= 0 else ""
