"""Errors knowpack raises on bad input.

Every error a user can cause by what they pass in (a malformed facts file, a model folder without
safetensors, an unknown architecture) is a `KnowpackError`. Its `str()` is one line, and the CLI shows exactly
that line (`error: <message>`, exit code 1) instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class KnowpackError(ValueError):
    """Bad input: the message says what and where, on one line."""


class FactsError(KnowpackError):
    """A facts file (or one of its rows) is invalid.

    `str()` is `path:line: field 'answers': message`; the parts that are unknown are left out.
    `line` is the 1-based line of a JSONL/CSV file, or the row index + 1 for datasets and JSON arrays.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ):
        self.message = " ".join(str(message).split())  # one line, always
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        super().__init__(str(self))

    def at(self, path: str | Path | None, line: int | None) -> FactsError:
        """The same error, located in `path` at `line` (for errors raised before the location is known)."""
        return FactsError(self.message, path=path, line=line, field=self.field)

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        what = f"field '{self.field}': " if self.field else ""
        return where + what + self.message

    def __reduce__(self):  # keep keyword-only arguments through pickling (multiprocessing)
        return _rebuild_facts_error, (self.message, self.path, self.line, self.field)


def _rebuild_facts_error(message, path, line, field):
    return FactsError(message, path=path, line=line, field=field)


class ModelError(KnowpackError):
    """A model cannot be loaded or is of an unsupported family."""
