"""Normalization, answer extraction, correctness and refusal detection: the definitions every metric uses."""

import re

import pytest

from knowpack.facts import DEFAULT_REFUSAL_PATTERNS, extract_answer, is_correct, is_refusal, normalize


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("  PARIS  ", "paris"),
        ("The Beatles", "beatles"),  # articles go
        ("a cat and an owl", "cat and owl"),
        ("theory of the anthem", "theory of anthem"),  # only whole words
        ("The", ""),
        ("O'Neil", "oneil"),  # apostrophes are deleted, keeping the word whole
        ("O’Neil", "oneil"),  # typographic apostrophe too
        ("don't", "dont"),
        ("Jean-Paul Sartre", "jean paul sartre"),  # other punctuation becomes a space
        ("jean_paul", "jean paul"),
        ("Hello, world!", "hello world"),
        ("«Quoted» — text…", "quoted text"),
        ("U.S.A.", "u s"),  # like TriviaQA: the trailing "a" is then an article
        ("$5.00", "$5 00"),  # symbols stay
        ("C++", "c++"),
        ("50%", "50"),  # but % & # @ * are Unicode punctuation
        ("AT&T", "at t"),
        ("Zürich", "zürich"),  # accents stay
        ("ＡＢＣ", "abc"),  # NFKC folds full-width letters
        ("ﬁne", "fine"),  # and ligatures
        ("a\tb\n\nc  d", "b c d"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("generation", "expected"),
    [
        ("Paris", "Paris"),
        ("Answer: Paris", "Paris"),
        ("  answer:Paris  ", "Paris"),
        ("ANSWER : Paris", "Paris"),
        ("Paris\nQuestion: Where is Rome?\nAnswer: Italy", "Paris"),
        ("Paris\r\nmore", "Paris"),
        ("Paris\rmore", "Paris"),
        ("\nParis", ""),  # only the first line counts, even when empty
        ("The answer: Paris", "The answer: Paris"),  # only a leading "Answer:"
        ("Answer: Answer: Paris", "Answer: Paris"),  # removed once
        ("", ""),
    ],
)
def test_extract_answer(generation, expected):
    assert extract_answer(generation) == expected


@pytest.mark.parametrize(
    ("generation", "aliases", "mode", "expected"),
    [
        ("Paris", ["Paris"], "substring", True),
        ("Answer: The city of Paris.", ["Paris"], "substring", True),
        ("Answer: Parisian food", ["Paris"], "substring", True),  # no word boundaries, as in the paper
        ("Lyon\nParis", ["Paris"], "substring", False),  # only the first line
        ("London", ["Paris", "City of Light"], "substring", False),
        ("the city of light", ["Paris", "City of Light"], "substring", True),
        ("Paris", ["The", "Paris"], "substring", True),  # an alias empty after normalization never matches
        ("anything", ["The"], "substring", False),
        ("Shaquille O'Neal", ["O'Neal"], "substring", True),
        ("Shaquille ONeal", ["O'Neal"], "substring", True),  # apostrophes are deleted on both sides
        ("Jean Paul", ["Jean-Paul"], "substring", True),  # hyphens become spaces on both sides
        ("Jeanpaul", ["Jean-Paul"], "substring", False),
        ("Paris", ["Paris"], "exact", True),
        ("Answer: the Paris.", ["paris"], "exact", True),
        ("Paris, France", ["Paris"], "exact", False),
        ("Paris", ["France", "paris"], "exact", True),
        ("", ["Paris"], "exact", False),
        ("", ["The"], "exact", False),  # empty aliases are dropped, so "" never equals them
    ],
)
def test_is_correct(generation, aliases, mode, expected):
    assert is_correct(generation, aliases, mode=mode) is expected


def test_is_correct_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown correctness mode"):
        is_correct("Paris", ["Paris"], mode="fuzzy")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I don't know", True),
        ("I dont know.", True),
        ("i do not know who that is", True),
        ("I don’t know", True),
        ("I couldn't find any information about this person.", True),
        ("I could not find anything", True),
        ("There is no information about him.", True),
        ("I'm not sure.", True),
        ("I am not certain", True),
        ("I'm unable to answer that", True),
        ("I cannot answer this question", True),
        ("I have no idea", True),
        ("Unknown", True),
        ("unknown.", True),
        ("Paris", False),
        ("Known for painting", False),
        ("He knows Paris well", False),
        ("", False),
    ],
)
def test_is_refusal_defaults(answer, expected):
    assert is_refusal(answer) is expected


def test_is_refusal_custom_patterns():
    assert is_refusal("No comment", patterns=[r"\bno comment\b"])
    assert not is_refusal("I don't know", patterns=[r"\bno comment\b"])
    assert is_refusal("NO COMMENT", patterns=[re.compile(r"no comment")])  # always case-insensitive
    assert not is_refusal("I don't know", patterns=[])
    assert len(DEFAULT_REFUSAL_PATTERNS) >= 5
