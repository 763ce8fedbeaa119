"""Uptake of the implanted facts: reliability from the re-probe, zero-shot answers in the training format,
held-out paraphrases, per fact and pooled.

    answers = zero_shot(model, tok, facts, fmt="plain")          # {fact id: [greedy answer per question]}
    p = paraphrase_probe(model, tok, facts, questions, exemplars=exemplars, settings=..., mode="substring")
    measured = UptakeMeasure(tok, facts, exemplars, probe_kwargs, "plain", questions)(model, "trained")
    block = summarize_uptake(facts, base_records, after_records, measured_base, measured, source)

Reliability itself (mean p_greedy under the probe's few-shot prompts) comes from the re-probe; the rest adds
what the probe cannot show: whether the model answers in the format it was trained in, and whether the
knowledge carries over to questions it never saw (`meta["heldout_paraphrases"]`: the organism's facts carry
two, never in its corpus nor in any mix).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from knowpack.evaluate import metrics as m
from knowpack.facts.normalize import extract_answer, is_correct
from knowpack.facts.schema import Fact
from knowpack.probe.engine import Engine, Request
from knowpack.probe.prompts import encode
from knowpack.probe.run import probe
from knowpack.train.data import prompt_and_completion


def heldout_questions(fact: Fact, trained_paraphrases: bool) -> tuple[list[str], str | None]:
    """The fact's questions held out of training, and where they come from: `meta["heldout_paraphrases"]`,
    else its `paraphrases` when the mix did not train on paraphrases; ([], None) when it has neither."""
    heldout = [q for q in (fact.meta or {}).get("heldout_paraphrases") or [] if isinstance(q, str) and q]
    if heldout:
        return heldout, "meta.heldout_paraphrases"
    if not trained_paraphrases and fact.paraphrases:
        return [q for q in fact.paraphrases if q != fact.question], "paraphrases"
    return [], None


def zero_shot(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    *,
    fmt: str,
    questions: dict[str, list[str]] | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[str]]:
    """Greedy answers (as `extract_answer` gives them) to each fact's question, or, when `questions` is
    given, to each of `questions[fact.id]` (none for a fact it lacks), asked zero-shot in the training
    format (`knowpack.train.data`)."""
    asked = {f.id: questions.get(f.id, []) if questions is not None else [f.question] for f in facts}
    requests = []
    for fact in facts:
        for j, question in enumerate(asked[fact.id]):
            prompt, _ = prompt_and_completion(question, fact.answer, tokenizer, fmt)
            requests.append(Request((fact.id, j), encode(tokenizer, prompt, fmt), 0))
    engine = Engine(model, tokenizer, samples=0, max_new_tokens=max_new_tokens, batch_size=batch_size)
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, len(requests))

    generations = engine.generate(requests, on_batch=on_batch)
    return {
        f.id: [extract_answer(generations[(f.id, j)].greedy) for j in range(len(asked[f.id]))] for f in facts
    }


def accuracy(answers: dict[str, list[str]], facts: Sequence[Fact], mode: str) -> dict[str, list[bool]]:
    """Per fact, whether each answer is correct."""
    return {f.id: [is_correct(a, f.answers, mode) for a in answers.get(f.id, [])] for f in facts}


def paraphrase_probe(
    model: Any,
    tokenizer: Any,
    facts: Sequence[Fact],
    questions: dict[str, list[str]],
    *,
    exemplars: Sequence[Fact],
    settings: dict[str, Any],
    mode: str,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, list[float]]:
    """p_greedy (greedy only, the probe's few-shot prompts) of each fact asked as each of its `questions`.

    The paraphrase is put in the fact's place with the fact's id, so the probe keeps the fact itself (and its
    subject) out of the exemplars, as it does for the original question. One probe per paraphrase index."""
    out: dict[str, list[float]] = {f.id: [] for f in facts}
    rounds = max((len(questions.get(f.id, [])) for f in facts), default=0)
    for j in range(rounds):
        asked = [
            dataclasses.replace(f, question=questions[f.id][j])
            for f in facts
            if len(questions.get(f.id, [])) > j
        ]
        greedy = {**settings, "samples": 0}
        records = probe(model, tokenizer, asked, **greedy, mode=mode, exemplars=exemplars, progress=progress)
        for r in records:
            out[r["id"]].append(r["p_greedy"])
    return out


class UptakeMeasure:
    """Zero-shot answers (original questions and held-out paraphrases) and the paraphrase probe of the
    implanted `facts`, measured the same way on the base and on the trained model."""

    def __init__(
        self,
        tokenizer: Any,
        facts: Sequence[Fact],
        exemplars: Sequence[Fact],
        probe_kwargs: dict[str, Any],
        fmt: str,
        questions: dict[str, list[str]],
        progress_bar: Callable[[str], Any] | None = None,
    ):
        self.tokenizer, self.facts, self.exemplars, self.kwargs = tokenizer, facts, exemplars, probe_kwargs
        self.fmt, self.questions, self.bar = fmt, questions, progress_bar

    def __call__(
        self, model: Any, label: str, facts: Sequence[Fact] | None = None
    ) -> dict[str, dict[str, list]]:
        """By fact id: `zero_shot`, `zero_shot_ok`, `paraphrase` (p_greedy), `paraphrase_zero_shot_ok`; of
        `facts` (a subset of the implanted facts) or of all of them."""
        facts = self.facts if facts is None else facts
        mode, budget = self.kwargs["mode"], self.kwargs["max_new_tokens"]
        out: dict[str, dict[str, list]] = {}
        if not facts:
            return {"zero_shot": {}, "zero_shot_ok": {}, "paraphrase": {}, "paraphrase_zero_shot_ok": {}}
        with self._bar(f"zero-shot ({label})") as progress:
            out["zero_shot"] = zero_shot(
                model, self.tokenizer, facts, fmt=self.fmt, max_new_tokens=budget, progress=progress
            )
            asked = zero_shot(
                model,
                self.tokenizer,
                facts,
                fmt=self.fmt,
                questions=self.questions,
                max_new_tokens=budget,
                progress=progress,
            )
        out["zero_shot_ok"] = accuracy(out["zero_shot"], facts, mode)
        out["paraphrase_zero_shot_ok"] = accuracy(asked, facts, mode)
        settings = {k: v for k, v in self.kwargs.items() if k != "mode"}
        with self._bar(f"held-out paraphrases ({label})") as progress:
            out["paraphrase"] = paraphrase_probe(
                model,
                self.tokenizer,
                facts,
                self.questions,
                exemplars=self.exemplars,
                settings=settings,
                mode=mode,
                progress=progress,
            )
        return out

    def _bar(self, label: str):
        return self.bar(label) if self.bar is not None else nullcontext(None)


def summarize_uptake(
    facts: Sequence[Fact],
    before: Sequence[dict],
    after: Sequence[dict],
    base: dict[str, dict[str, list]],
    trained: dict[str, dict[str, list]],
    source: str | None,
) -> dict[str, Any]:
    """eval.json's `uptake`: each metric on the trained model beside the base model's, and per fact."""
    first, second = {r["id"]: r for r in before}, {r["id"]: r for r in after}

    def pooled(table: dict[str, list]) -> float | None:
        return _mean([float(v) for f in facts for v in table.get(f.id, [])])

    def per(table: dict[str, list], f: Fact) -> float | None:
        return _mean([float(v) for v in table.get(f.id, [])])

    def both(name: str, key: str, **extra: Any) -> dict[str, Any]:
        return m.metric(name, pooled(trained[key]), pooled(base[key]), **extra)

    n, pairs = len(facts), sum(len(trained["paraphrase"].get(f.id, [])) for f in facts)
    hk = {f.id: [float(second[f.id]["category"] == m.HK)] for f in facts}
    hk_base = {f.id: [float(first[f.id]["category"] == m.HK)] for f in facts}
    reliability = _mean([second[f.id]["p_greedy"] for f in facts])
    per_fact = [
        {
            "id": f.id,
            "answer": f.answer,
            "category_base": first[f.id]["category"],
            "category": second[f.id]["category"],
            "p_greedy_base": first[f.id]["p_greedy"],
            "p_greedy": second[f.id]["p_greedy"],
            "zero_shot_base": _first(base["zero_shot_ok"].get(f.id)),
            "zero_shot": _first(trained["zero_shot_ok"].get(f.id)),
            "zero_shot_answer": _first(trained["zero_shot"].get(f.id)),
            "generalization_base": per(base["paraphrase"], f),
            "generalization": per(trained["paraphrase"], f),
            "generalization_zero_shot": per(trained["paraphrase_zero_shot_ok"], f),
        }
        for f in facts
    ]
    return {
        "n": n,
        "reliability": m.metric(
            "reliability", reliability, _mean([first[f.id]["p_greedy"] for f in facts]), n=n
        ),
        "highly_known_share": m.metric("highly_known_share", pooled(hk), pooled(hk_base), n=n),
        "zero_shot_accuracy": both("zero_shot_accuracy", "zero_shot_ok", n=n),
        "generalization": both("generalization", "paraphrase", n=pairs, source=source),
        "generalization_zero_shot": both(
            "generalization_zero_shot", "paraphrase_zero_shot_ok", n=pairs, source=source
        ),
        "per_fact": per_fact,
    }


def idk_refusal_rate(
    before: Sequence[dict], after: Sequence[dict], ids: Sequence[str], patterns: Sequence[str]
) -> dict[str, Any]:
    """Refusal rate of the facts relabelled "I don't know." (SliCK's remedy), after beside before."""
    chosen = set(ids)
    old = m.refusal_rate([r for r in before if r["id"] in chosen], patterns)
    new = m.refusal_rate([r for r in after if r["id"] in chosen], patterns)
    return m.metric("idk_refusal_rate", new["value"], old["value"], n=len(chosen))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _first(values: list | None) -> Any:
    return values[0] if values else None
