"""The `Fact`: one question with its accepted answers, the unit every knowpack stage works on.

On disk a fact is one line of a facts file (JSONL), exactly the dict `Fact.to_json()` returns:
`id` (unique str), `question`, `answers` (aliases, at least one, none empty after normalization), and the
optional `subject`, `relation`, `paraphrases` (questions with the same answer), `bucket`, `meta` (an object).
`Fact.from_dict` is the one place that checks a record; the loaders add the file and line to its errors.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from knowpack.errors import FactsError
from knowpack.facts.normalize import normalize

BUCKETS = ("head", "torso", "tail", "unseen")
"""Popularity of a fact's subject: described often, a few times, once, never (the organism's world)."""

REQUIRED_FIELDS = ("id", "question", "answers")
OPTIONAL_FIELDS = ("subject", "relation", "paraphrases", "bucket", "meta")


@dataclass
class Fact:
    """One fact: a question and the aliases of its answer."""

    id: str
    question: str
    answers: list[str]
    subject: str | None = None
    relation: str | None = None
    paraphrases: list[str] = field(default_factory=list)
    bucket: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The canonical answer (the first alias), e.g. the training target."""
        return self.answers[0]

    def to_json(self) -> dict[str, Any]:
        """The record as written to a facts file (all keys, always, for a stable schema)."""
        return {
            "id": self.id,
            "question": self.question,
            "answers": list(self.answers),
            "subject": self.subject,
            "relation": self.relation,
            "paraphrases": list(self.paraphrases),
            "bucket": self.bucket,
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, record: Any) -> Fact:
        """Check a facts-file record and build the Fact; raises `FactsError` naming the bad field.

        Optional fields may be missing or null; an empty optional string counts as missing.
        Unknown keys are rejected (extra data belongs in `meta`).
        """
        if not isinstance(record, dict):
            raise FactsError(f"expected a JSON object, got {_type_name(record)}")
        known = REQUIRED_FIELDS + OPTIONAL_FIELDS
        unknown = [k for k in record if k not in known]
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise FactsError(
                f"unknown field ({hint}put extra data in 'meta'; known fields: {', '.join(known)})",
                field=unknown[0],
            )
        for name in REQUIRED_FIELDS:
            if record.get(name) is None:
                raise FactsError("missing required field", field=name)
        fact = cls(
            id=_string(record["id"], "id"),
            question=_string(record["question"], "question"),
            answers=_strings(record["answers"], "answers", allow_empty_list=False),
            subject=_optional_string(record.get("subject"), "subject"),
            relation=_optional_string(record.get("relation"), "relation"),
            paraphrases=_strings(record.get("paraphrases") or [], "paraphrases", allow_empty_list=True),
            bucket=_optional_string(record.get("bucket"), "bucket"),
            meta=_meta(record.get("meta")),
        )
        fact.check()
        return fact

    def check(self) -> None:
        """Whole-fact checks: aliases non-empty when normalized and not inside a question; a known bucket."""
        aliases = []
        for alias in self.answers:
            norm = normalize(alias)
            if not norm:
                raise FactsError(f"alias {alias!r} is empty after normalization", field="answers")
            aliases.append((alias, norm))
        questions = [("question", self.question)] + [
            (f"paraphrases[{i}]", p) for i, p in enumerate(self.paraphrases)
        ]
        for name, text in questions:
            norm_q = normalize(text)
            if not norm_q:
                raise FactsError("is empty after normalization", field=name)
            for alias, norm in aliases:
                # substring matching would count a model that echoes the question as correct
                if norm in norm_q:
                    raise FactsError(f"contains its own answer {alias!r} (normalized {norm!r})", field=name)
        if self.bucket is not None and self.bucket not in BUCKETS:
            raise FactsError(
                f"unknown bucket {self.bucket!r}; expected one of {', '.join(BUCKETS)}", field="bucket"
            )


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise FactsError(f"expected a string, got {_type_name(value)}", field=name)
    if not value.strip():
        raise FactsError("is empty", field=name)
    return value


def _optional_string(value: Any, name: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _string(value, name)


def _strings(value: Any, name: str, *, allow_empty_list: bool) -> list[str]:
    if not isinstance(value, list | tuple):
        raise FactsError(f"expected a list of strings, got {_type_name(value)}", field=name)
    if not value and not allow_empty_list:
        raise FactsError("is an empty list", field=name)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise FactsError(f"item {i} is {_type_name(item)}, expected a string", field=name)
        if not item.strip() and name != "answers":  # empty aliases get the normalization message
            raise FactsError(f"item {i} is empty", field=name)
    return list(value)


def _meta(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FactsError(f"expected an object, got {_type_name(value)}", field="meta")
    return dict(value)
