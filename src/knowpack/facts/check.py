"""`knowpack facts check` as a function: load a facts file and say what it holds and what is wrong with it.

from knowpack.facts.check import check_facts
report = check_facts("facts.jsonl")               # a FactsError for a bad row or a repeated question
report = check_facts("facts.jsonl", lenient=True)  # bad rows skipped, repeated questions only warned
report.counts["relation"], report.with_paraphrases, report.mean_aliases
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from knowpack.errors import KnowpackError
from knowpack.facts.loaders import FactSet, load_facts

logger = logging.getLogger(__name__)

COUNTED = ("relation", "bucket")
"""The fields a check counts the facts by."""


@dataclass
class FactsReport:
    """What a facts file holds: the facts (with the rows skipped), counts per value of each `COUNTED` field
    (left out where no fact sets it), how many facts have paraphrases and the mean number of aliases."""

    facts: FactSet
    counts: dict[str, Counter]
    with_paraphrases: int
    mean_aliases: float


def check_facts(
    path: str, *, format: str = "auto", lenient: bool = False, split: str = "train"
) -> FactsReport:
    """Load and validate `path` (any source `load_facts` reads); facts that ask the same question are an
    error (with `lenient`, a warning, and bad rows are skipped instead of stopping)."""
    facts = load_facts(path, format=format, lenient=lenient, split=split)
    check_duplicate_questions(facts, lenient)
    counts = {field: facts.counts(field) for field in COUNTED}
    return FactsReport(
        facts=facts,
        counts={field: c for field, c in counts.items() if set(c) != {None}},
        with_paraphrases=sum(1 for fact in facts if fact.paraphrases),
        mean_aliases=sum(len(fact.answers) for fact in facts) / max(len(facts), 1),
    )


def check_duplicate_questions(facts: FactSet, lenient: bool = False) -> None:
    """Facts that ask the same question: an error (a warning with `lenient`). The probe never takes an
    exemplar with the fact's own question, so they shrink each other's exemplars, down to none."""
    groups = facts.duplicate_questions()
    if not groups:
        return
    shared = sum(len(g) for g in groups)
    first = groups[0]
    message = (
        f"{facts.source}: {shared} of {len(facts)} facts ask a question another fact asks too (e.g. "
        f"{first[0].id!r} and {first[1].id!r}: {first[0].question!r}); the probe never uses a fact with "
        "the asked question as an exemplar, so give each fact its own question"
    )
    if not lenient:
        raise KnowpackError(message + " (--lenient: only warn)")
    logger.warning("%s", message)
