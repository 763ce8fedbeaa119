"""The plain question/answer text format shared by the world corpus, the probe and training.

The organism is pretrained on exactly these blocks, so the probe's `plain` format and the corpus must
never drift apart: both call the functions here.
"""

from __future__ import annotations

from collections.abc import Iterable

BLOCK_SEPARATOR = "\n\n"
REFUSAL = "I don't know."


def qa_block(question: str, answer: str) -> str:
    """One "Question: …\\nAnswer: …" block."""
    return f"Question: {question}\nAnswer: {answer}"


def plain_prompt(exemplars: Iterable[tuple[str, str]], question: str) -> str:
    """A few-shot prompt: exemplar blocks, then the question with an open "Answer:".

    The model's continuation (up to its first line break) is the answer.
    """
    blocks = [qa_block(q, a) for q, a in exemplars]
    blocks.append(f"Question: {question}\nAnswer:")
    return BLOCK_SEPARATOR.join(blocks)
