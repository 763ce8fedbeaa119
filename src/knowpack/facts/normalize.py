"""Answer normalization and correctness: what "the model answered correctly" means everywhere in knowpack.

docs/design.md §4.1 fixes the definition: lower-case, strip punctuation and articles, collapse white space; an
answer is the generation up to its first line break without a leading "Answer:"; `substring` mode (the
knowledge-packing paper's) counts an answer correct when some normalized alias occurs in it, `exact` mode when
they are equal.

Choices made where the definition is silent (tests in tests/test_normalize.py pin each one):
- Unicode is NFKC-normalized first, so full-width letters and ligatures compare equal to plain ones; accents
  stay ("Zürich" -> "zürich").
- Punctuation is every Unicode category P* (. , - _ ( ) " ! ? « » ‘ “ …). It becomes a space, so "Jean-Paul",
  "Jean Paul" and "jean_paul" all normalize to "jean paul" (TriviaQA's normalizer does the same).
- Apostrophes are deleted instead, so a word stays one word: "O'Neil" -> "oneil", "don't" -> "dont". That
  covers ' ’ ‘ ʼ and the symbol-category look-alikes ` and ´.
- Symbols (categories S*: $ € + = < > ^ | © …) are kept: "$5" differs from "5" and "C++" from "C". Note that
  % & # @ * are punctuation (Po) in Unicode, so "50%" -> "50" and "AT&T" -> "at t".
- Articles a / an / the are removed as whole words only ("theory" stays).
- Substring matching has no word boundaries, as in the paper: alias "paris" matches "parisian". The facts
  loader therefore rejects facts whose alias occurs inside their own question.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable, Sequence

_APOSTROPHES = frozenset("'\u2019\u2018\u02bc`\u00b4")
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_ANSWER_PREFIX = re.compile(r"answer\s*:", re.IGNORECASE)

# Searched case-insensitively anywhere in the answer. Short phrases, because refusals vary in their wording;
# a false positive needs a real answer to contain one of these exact phrases.
DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI (?:do not|don['’]?t) know\b",
    r"\bI (?:could not|couldn['’]?t|cannot|can ?not|can['’]?t|was unable to|am unable to) find\b",
    r"\bno (?:available |relevant |reliable )?information\b",
    r"\b(?:I['’]?m|I am) not (?:sure|certain|aware)\b",
    r"\b(?:I['’]?m|I am) unable to\b",
    r"\bI (?:cannot|can ?not|can['’]?t) (?:answer|say|tell|provide|determine)\b",
    r"\bI have no (?:idea|information|knowledge|data|record)\b",
    r"\bno idea\b",
    r"\bunknown\b",
)


def _strip_punctuation(text: str) -> str:
    out = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        out.append(" " if unicodedata.category(ch).startswith("P") else ch)
    return "".join(out)


def normalize(text: str) -> str:
    """Lower-case, strip punctuation and the articles a/an/the, collapse white space (see the module doc)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _strip_punctuation(text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def extract_answer(generation: str) -> str:
    """The answer part of a generation: up to its first line break, without a leading "Answer:".

    Only the first line counts, even when it is empty (a generation starting with a line break has answered
    nothing); this is the paper's rule and keeps models from getting credit for a later line.
    """
    first = _LINE_BREAK.split(generation, maxsplit=1)[0].lstrip()
    match = _ANSWER_PREFIX.match(first)
    if match:
        first = first[match.end() :]
    return first.strip()


def is_correct(generation: str, aliases: Iterable[str], mode: str = "substring") -> bool:
    """Whether `generation` answers with one of `aliases`.

    `substring`: some normalized, non-empty alias occurs in the normalized answer (no word boundaries).
    `exact`: the normalized answer equals some normalized alias.
    """
    answer = normalize(extract_answer(generation))
    targets = [a for a in (normalize(alias) for alias in aliases) if a]
    if mode == "substring":
        return any(t in answer for t in targets)
    if mode == "exact":
        return answer in targets
    raise ValueError(f"unknown correctness mode {mode!r}; expected 'substring' or 'exact'")


@functools.lru_cache(maxsize=32)
def _compile(patterns: tuple[str | re.Pattern, ...]) -> re.Pattern:
    parts = [p.pattern if isinstance(p, re.Pattern) else p for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts), re.IGNORECASE)


def is_refusal(answer: str, patterns: Sequence[str | re.Pattern] = DEFAULT_REFUSAL_PATTERNS) -> bool:
    """Whether `answer` (best: the output of `extract_answer`) declines to answer.

    `patterns` are regular expressions searched case-insensitively; any match is a refusal.
    """
    if not patterns:
        return False
    return _compile(tuple(patterns)).search(answer) is not None
