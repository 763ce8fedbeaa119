"""Facts: the schema, loading / validation / saving, and the answer normalization every stage shares."""

from knowpack.errors import FactsError
from knowpack.facts.check import FactsReport, check_facts
from knowpack.facts.loaders import FORMATS, FactSet, detect_format, load_facts, save_facts
from knowpack.facts.normalize import (
    DEFAULT_REFUSAL_PATTERNS,
    extract_answer,
    is_correct,
    is_refusal,
    normalize,
)
from knowpack.facts.schema import BUCKETS, Fact

__all__ = [
    "BUCKETS",
    "DEFAULT_REFUSAL_PATTERNS",
    "FORMATS",
    "Fact",
    "FactSet",
    "FactsReport",
    "FactsError",
    "check_facts",
    "detect_format",
    "extract_answer",
    "is_correct",
    "is_refusal",
    "load_facts",
    "normalize",
    "save_facts",
]
