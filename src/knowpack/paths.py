"""Where knowpack's bundled files live."""

from __future__ import annotations

from pathlib import Path


def organism_dir() -> Path:
    """The bundled model organism: HF checkpoint, tokenizer, `facts.jsonl`, `tasks/`, `CARD.md`."""
    return Path(__file__).parent / "organism"


def geo_dir() -> Path:
    """The bundled real-world facts (`--facts geo`): `facts.jsonl`, `tasks/` (geo_mc), `CARD.md`."""
    return Path(__file__).parent / "geo"
