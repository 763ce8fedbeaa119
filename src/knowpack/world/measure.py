"""What the organism knows: greedy accuracy per popularity bucket, and its SliCK categories.

`bucket_accuracy` is the check that the organism is fit for purpose (its model card numbers): greedy answers
to plain 4-shot prompts whose exemplars are facts of the same relation about `head` people (never the person
asked about), drawn by seed. `category_shares` runs the real SliCK probe (`knowpack.probe`, its defaults) on
a seeded sample of each bucket and weights the counts by the bucket's size: the share of the world's facts
in each category, which the probe issue asks to be at least 10% for every category.
"""

from __future__ import annotations

import random
from collections import defaultdict

from knowpack.facts.normalize import extract_answer, is_correct, is_refusal
from knowpack.facts.schema import Fact
from knowpack.probe.run import probe
from knowpack.probe.scoring import CATEGORIES
from knowpack.prompts import plain_prompt


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 16, batch_size: int = 64):
    """Greedy continuations of `prompts`, each cut at its first line break."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    newline_ids = {
        i for t, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([t])
    }

    class _AllHaveNewline(StoppingCriteria):
        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[:, self.start :]
            done = torch.zeros(new.shape[0], dtype=torch.bool, device=new.device)
            for i in newline_ids:
                done |= (new == i).any(dim=1)
            return done

    answers: list[str] = []
    tokenizer.padding_side = "left"
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
        width = enc["input_ids"].shape[1]
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([_AllHaveNewline(width)]),
            )
        texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        answers.extend(extract_answer(t) for t in texts)
    return answers


def few_shot_prompts(facts: list[dict], exemplars: list[dict], shots: int = 4, seed: int = 0) -> list[str]:
    """A plain `shots`-shot prompt per fact, exemplars drawn from `exemplars`: the same relation, other
    people."""
    rng = random.Random(seed)
    by_relation: dict[str, list[dict]] = defaultdict(list)
    for f in exemplars:
        by_relation[f["relation"]].append(f)
    prompts = []
    for fact in facts:
        candidates = [e for e in by_relation[fact["relation"]] if e["subject"] != fact["subject"]]
        shown = rng.sample(candidates, shots)
        prompts.append(plain_prompt([(e["question"], e["answers"][0]) for e in shown], fact["question"]))
    return prompts


def bucket_accuracy(model, tokenizer, facts: list[dict], *, limit: int | None = None, seed: int = 0) -> dict:
    """Accuracy and refusal rate per bucket (and per relation) of greedy plain 4-shot answers."""
    rng = random.Random(seed)
    exemplars = [f for f in facts if f["bucket"] == "head"]
    chosen: list[dict] = []
    for bucket in ("head", "torso", "tail", "unseen"):
        rows = [f for f in facts if f["bucket"] == bucket]
        chosen.extend(rng.sample(rows, limit) if limit and limit < len(rows) else rows)
    answers = greedy_answers(model, tokenizer, few_shot_prompts(chosen, exemplars, seed=seed))
    stats: dict = defaultdict(lambda: [0, 0, 0])
    for fact, answer in zip(chosen, answers, strict=True):
        for key in (fact["bucket"], f"{fact['bucket']}/{fact['relation']}"):
            stats[key][0] += is_correct(answer, fact["answers"])
            stats[key][1] += is_refusal(answer)
            stats[key][2] += 1
    return {k: {"accuracy": c / n, "refusal": r / n, "n": n} for k, (c, r, n) in sorted(stats.items())}


def category_shares(
    model, tokenizer, facts: list[dict], *, per_bucket: int = 150, sample_seed: int = 11
) -> dict:
    """SliCK categories of a seeded sample of `per_bucket` facts per bucket (the probe's defaults: 10
    prompts of 4 shots, 1 greedy + 16 samples each, seed 0; exemplars from all `facts`): counts per bucket,
    and the world's share of each category with every bucket weighted by its number of facts."""
    rng = random.Random(sample_seed)
    all_facts = [Fact.from_dict(f) for f in facts]
    sizes: dict[str, int] = defaultdict(int)
    for f in all_facts:
        sizes[f.bucket] += 1
    counts: dict[str, dict[str, int]] = {}
    for bucket in ("head", "torso", "tail", "unseen"):
        rows = [f for f in all_facts if f.bucket == bucket]
        sample = rng.sample(rows, per_bucket) if per_bucket < len(rows) else rows
        found = [r["category"] for r in probe(model, tokenizer, sample, exemplars=all_facts)]
        counts[bucket] = {c: found.count(c) for c in CATEGORIES}
    total = sum(sizes[b] for b in counts)
    shares = {
        c: sum(sizes[b] * counts[b][c] / max(1, sum(counts[b].values())) for b in counts) / total
        for c in CATEGORIES
    }
    return {
        "per_bucket": per_bucket,
        "sample_seed": sample_seed,
        "probe_seed": 0,
        "counts": counts,
        "shares": shares,
    }
