"""Read facts from files and datasets into a `FactSet`; write them back as a facts file.

    facts = load_facts("facts.jsonl")                 # knowpack's own format (docs/design.md §3.1)
    facts = load_facts("organism")                    # the bundled world's facts
    facts = load_facts("geo")                         # real-world facts from GeoNames (knowpack.real.geo)
    facts = load_facts("facts.csv")                   # columns id, question, answers (JSON list or a|b|c) ...
    facts = load_facts("counterfact.json")            # EasyEdit / CounterFact, detected from the columns
    facts = load_facts("user/dataset", split="test")  # a Hugging Face dataset (when not an existing path)
    facts = load_facts("big.jsonl", lenient=True)     # skip bad rows; see facts.skipped

Two things vary independently. The container comes from the source: a `.jsonl` / `.json` / `.csv` /
`.parquet` file, a folder written by `datasets.save_to_disk`, another folder (read by
`datasets.load_dataset`), a Hub name, or an in-memory `datasets.Dataset` / list of dicts. The layout comes
from the columns of the first row, or from `format=`:
- `facts`: knowpack's own (id, question, answers, subject, relation, paraphrases, bucket, meta);
- `kp`: the knowledge-packing paper / TriviaQA (question, answer = {value, aliases, normalized_aliases, ...});
- `easyedit`: EasyEdit (subject, prompt, target_new, rephrase_prompt, ground_truth, ...);
- `counterfact`: the original CounterFact (requested_rewrite = {prompt with "{}", subject, target_new {str}},
  paraphrase_prompts, case_id).
Foreign layouts keep the columns they do not map in `meta`; a row without an id gets `row-<n>`.

Every problem is a `FactsError` whose message is one line, `path:line: field 'x': what is wrong`; `line` is
the 1-based line of a JSONL/CSV file, or the row index + 1 for JSON arrays and datasets.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from knowpack.errors import FactsError
from knowpack.facts.normalize import normalize
from knowpack.facts.schema import Fact
from knowpack.io import write_jsonl_atomic
from knowpack.paths import geo_dir, organism_dir

logger = logging.getLogger(__name__)

FORMATS = ("auto", "facts", "kp", "easyedit", "counterfact")
_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")
_Row = tuple[int, "dict[str, Any] | FactsError"]  # (line, record or the error reading it)


class FactSet(list[Fact]):
    """A list of facts, with the `source` they came from, its `format` (layout) and the rows `skipped` in
    lenient mode."""

    def __init__(
        self,
        facts: Iterable[Fact] = (),
        *,
        source: str | None = None,
        skipped: list[FactsError] | None = None,
    ):
        super().__init__(facts)
        self.source = source
        self.format: str | None = None
        self.skipped: list[FactsError] = list(skipped or [])

    def by_id(self) -> dict[str, Fact]:
        return {fact.id: fact for fact in self}

    def counts(self, field: str) -> Counter:
        """How many facts have each value of `field` (e.g. "relation", "bucket"); None for unset."""
        return Counter(getattr(fact, field) for fact in self)

    def duplicate_questions(self) -> list[list[Fact]]:
        """Groups of facts that ask the same question (after normalization), in file order. The probe never
        takes an exemplar with the fact's own question, so such facts shrink each other's exemplars."""
        groups: dict[str, list[Fact]] = {}
        for fact in self:
            groups.setdefault(normalize(fact.question), []).append(fact)
        return [group for group in groups.values() if len(group) > 1]


def load_facts(
    source: str | os.PathLike | Any, *, format: str = "auto", lenient: bool = False, split: str = "train"
) -> FactSet:
    """Load and validate facts from `source` (see the module docstring for what it can be).

    Raises `FactsError` on the first bad row, or with `lenient=True` skips bad rows, keeps their errors in
    `.skipped` and logs a warning with the count. A source with no facts at all is always an error.
    `split` picks the split of a Hugging Face dataset.
    """
    if format not in FORMATS:
        kind = f"; a {format} file is read as such from its name ({', '.join(_FILE_SUFFIXES)})"
        raise FactsError(
            f"unknown facts format {format!r}: the format is the layout of the rows, one of "
            f"{', '.join(FORMATS)}{kind if '.' + format.lower() in _FILE_SUFFIXES else ''}"
        )
    if isinstance(source, str) and source == "organism":
        source = organism_dir() / "facts.jsonl"
        if not source.exists():
            raise FactsError(
                f"the bundled organism has no facts file at {source}; build it with `knowpack world build`"
            )
    if isinstance(source, str) and source == "geo":
        source = geo_dir() / "facts.jsonl"
        if not source.exists():
            raise FactsError(f"no geo facts at {source}; build them with `python -m knowpack.real.geo`")
    label, rows = _open(source, split)

    facts, skipped, seen, layout = FactSet(source=label), [], {}, None if format == "auto" else format
    for line, record in rows:
        try:
            if isinstance(record, FactsError):
                raise record
            if layout is None:
                layout = detect_format(record)
            fact = Fact.from_dict(_CONVERTERS[layout](record, line))
            if fact.id in seen:
                raise FactsError(f"duplicate id {fact.id!r} (first on line {seen[fact.id]})", field="id")
            seen[fact.id] = line
            facts.append(fact)
        except FactsError as err:
            err = err if err.path is not None else err.at(label, line)
            if not lenient:
                raise err from None
            skipped.append(err)
    facts.skipped, facts.format = skipped, layout
    if skipped:
        logger.warning(
            "%s: skipped %d bad row(s) of %d; first: %s",
            label,
            len(skipped),
            len(skipped) + len(facts),
            skipped[0],
        )
    if not facts:
        detail = f" ({len(skipped)} bad row(s) skipped; first: {skipped[0]})" if skipped else ""
        raise FactsError(f"no facts found{detail}", path=label)
    return facts


def save_facts(facts: Iterable[Fact], path: str | os.PathLike) -> Path:
    """Write `facts` as a facts file (JSONL), atomically: a reader sees the old file or the whole new one."""
    return write_jsonl_atomic(path, (f.to_json() for f in facts))


def detect_format(record: Any) -> str:
    """The layout of a row, from its columns (see the module docstring)."""
    keys = set(record) if isinstance(record, dict) else set()
    if "requested_rewrite" in keys:
        return "counterfact"
    if {"prompt", "target_new"} <= keys:
        return "easyedit"
    if {"question", "answers"} <= keys:
        return "facts"
    if {"question", "answer"} <= keys:
        return "kp"
    if not isinstance(record, dict):
        raise FactsError("expected a JSON object per row")
    raise FactsError(
        f"cannot tell the facts format from the columns {sorted(keys)}; expected id/question/answers "
        f"(or pass format= one of {', '.join(FORMATS[1:])})"
    )


# ------------------------------------------------------------------------------------------------ containers


def _open(source: Any, split: str) -> tuple[str, Iterator[_Row]]:
    """(label for messages, rows) for any supported source."""
    if isinstance(source, list):
        return "<list>", iter(enumerate(source, start=1))
    if hasattr(source, "column_names") and not isinstance(source, str | os.PathLike):
        if isinstance(source, dict):  # a DatasetDict
            if split not in source:
                raise FactsError(f"no split {split!r} (splits: {', '.join(source)})", path="<dataset>")
            source = source[split]
        return "<dataset>", iter(enumerate(source, start=1))
    if not isinstance(source, str | os.PathLike):
        raise FactsError(f"cannot load facts from a {type(source).__name__}")
    path = Path(source).expanduser()
    if path.is_dir():
        if not _dataset_folder(path):
            raise FactsError(
                f"{source} is a folder, not a facts file (nor a dataset folder: no data files and no "
                "datasets.save_to_disk files in it)"
            )
        return str(source), _dataset_rows(path, split)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            return str(source), _csv_rows(path)
        if suffix == ".parquet":
            return str(source), _dataset_rows(path, split)
        if suffix == ".json" and _starts_with(path, b"["):
            return str(source), _json_array_rows(path)
        return str(source), _jsonl_rows(path)
    if _looks_like_path(str(source)):
        raise FactsError("no such file or directory", path=source)
    return str(source), _dataset_rows(str(source), split)


_SAVED_DATASET = ("dataset_info.json", "state.json", "dataset_dict.json")
_DATA_SUFFIXES = (*_FILE_SUFFIXES, ".arrow", ".tsv", ".txt", ".py")


def _dataset_folder(path: Path) -> bool:
    """Whether `datasets` could read folder `path`: written by `save_to_disk`, or holding data files (at
    most two levels down, as `load_dataset`'s data layouts put them) or a loading script."""
    if any((path / name).exists() for name in _SAVED_DATASET):
        return True
    for pattern in ("*", "*/*", "*/*/*"):
        if any(p.is_file() and p.suffix.lower() in _DATA_SUFFIXES for p in path.glob(pattern)):
            return True
    return False


def _looks_like_path(text: str) -> bool:
    # A Hub id is "name" or "owner/name"; anything else that does not exist is a missing file.
    return (
        text.lower().endswith(_FILE_SUFFIXES)
        or text.startswith(("/", ".", "~"))
        or text.count("/") > 1
        or os.sep != "/"
        and os.sep in text
    )


def _starts_with(path: Path, prefix: bytes) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(prefix)


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FactsError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})") from None


def _jsonl_rows(path: Path) -> Iterator[_Row]:
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            if line == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            try:
                yield line, json.loads(_decode(raw))
            except FactsError as err:
                yield line, err
            except json.JSONDecodeError as e:
                yield line, FactsError(f"malformed JSON: {e.msg} (column {e.colno})")


def _json_array_rows(path: Path) -> Iterator[_Row]:
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise FactsError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x})", path=path, line=line) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise FactsError(f"malformed JSON: {e.msg} (column {e.colno})", path=path, line=e.lineno) from None
    if not isinstance(data, list):
        raise FactsError("expected a JSON array of objects", path=path)
    yield from enumerate(data, start=1)


_CSV_LIST_COLUMNS = ("answers", "paraphrases")


def _csv_rows(path: Path) -> Iterator[_Row]:
    # Decode leniently here and check each row for the escapes, so one bad row does not sink the file.
    text = path.read_bytes().removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        raise FactsError("empty CSV file (expected a header row)", path=path)
    header = [h.strip() for h in header]
    if any(_has_bad_bytes(h) for h in header):
        raise FactsError("not valid UTF-8 in the header", path=path, line=1)
    line = reader.line_num
    for cells in reader:
        start, line = line + 1, reader.line_num
        if not any(c.strip() for c in cells):
            continue
        try:
            yield start, _csv_record(header, cells)
        except FactsError as err:
            yield start, err


def _csv_record(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) > len(header):
        raise FactsError(f"row has {len(cells)} cells but the header has {len(header)} columns")
    record: dict[str, Any] = {}
    for name, cell in zip(header, cells, strict=False):
        if _has_bad_bytes(cell):
            raise FactsError("not valid UTF-8", field=name)
        cell = cell.strip()
        if not cell:
            record[name] = None
        elif name in _CSV_LIST_COLUMNS:
            record[name] = _csv_list(cell, name)
        elif name == "meta":
            record[name] = _json_cell(cell, name, "a JSON object")
        else:
            record[name] = cell
    return record


def _csv_list(cell: str, name: str) -> Any:
    if cell.startswith("["):
        return _json_cell(cell, name, "a JSON list")
    return [part.strip() for part in cell.split("|")]


def _json_cell(cell: str, name: str, what: str) -> Any:
    try:
        return json.loads(cell)
    except json.JSONDecodeError as e:
        raise FactsError(f"is not {what}: {e.msg} (column {e.colno})", field=name) from None


def _has_bad_bytes(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _dataset_rows(source: Path | str, split: str) -> Iterator[_Row]:
    import datasets  # lazy: heavy, and only needed for datasets

    try:
        if isinstance(source, Path) and source.suffix.lower() == ".parquet":
            data = datasets.load_dataset("parquet", data_files=str(source), split="train")
        elif isinstance(source, Path) and any(
            (source / name).exists() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
        ):
            data = datasets.load_from_disk(str(source))
        else:
            data = datasets.load_dataset(str(source), split=split)
    except Exception as e:  # anything the datasets library raises is "cannot load this source"
        raise FactsError(f"cannot load dataset: {type(e).__name__}: {str(e)[:300]}", path=source) from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise FactsError(f"no split {split!r} (splits: {', '.join(data)})", path=source)
        data = data[split]
    yield from enumerate(data, start=1)


# ------------------------------------------------------------------------------------------------ layouts


def _from_facts(record: dict[str, Any], line: int) -> dict[str, Any]:
    return record


def _from_kp(record: dict[str, Any], line: int) -> dict[str, Any]:
    answer = record.get("answer")
    if isinstance(answer, dict):
        value = answer.get("value")
        aliases = ([value] if value else []) + list(answer.get("aliases") or [])
    elif isinstance(answer, str):
        aliases = [answer]
    elif isinstance(answer, list):
        aliases = answer
    else:
        raise FactsError("missing, or not an object {value, aliases}, a string or a list", field="answer")
    rest = {k: v for k, v in record.items() if k not in ("id", "question_id", "question", "answer")}
    return {
        "id": _id(record.get("id", record.get("question_id")), line),
        "question": record.get("question"),
        "answers": _unique(aliases),
        **{k: rest.pop(k) for k in ("subject", "relation", "paraphrases", "bucket") if k in rest},
        "meta": rest,
    }


def _from_easyedit(record: dict[str, Any], line: int) -> dict[str, Any]:
    subject, prompt = record.get("subject"), record.get("prompt")
    target = record.get("target_new")
    paraphrases = record.get("rephrase_prompt")
    rest = {
        k: v
        for k, v in record.items()
        if k not in ("case_id", "id", "subject", "prompt", "target_new", "rephrase_prompt")
    }
    return {
        "id": _id(record.get("case_id", record.get("id")), line),
        "question": _fill(prompt, subject),
        "answers": [target] if isinstance(target, str) else target,
        "subject": subject,
        "paraphrases": [paraphrases] if isinstance(paraphrases, str) else paraphrases,
        "meta": rest,
    }


def _from_counterfact(record: dict[str, Any], line: int) -> dict[str, Any]:
    rewrite = record.get("requested_rewrite")
    if not isinstance(rewrite, dict):
        raise FactsError("expected an object {prompt, subject, target_new, ...}", field="requested_rewrite")
    subject = rewrite.get("subject")
    target_new, target_true = rewrite.get("target_new"), rewrite.get("target_true")
    if not (isinstance(target_new, dict) and isinstance(target_new.get("str"), str)):
        raise FactsError("expected an object with a string 'str'", field="requested_rewrite.target_new")
    meta = {
        k: v for k, v in record.items() if k not in ("case_id", "requested_rewrite", "paraphrase_prompts")
    }
    if isinstance(target_true, dict) and "str" in target_true:
        meta["target_true"] = target_true["str"]
    return {
        "id": _id(record.get("case_id"), line),
        "question": _fill(rewrite.get("prompt"), subject),
        "answers": [target_new["str"]],
        "subject": subject,
        "relation": rewrite.get("relation_id"),
        "paraphrases": record.get("paraphrase_prompts"),
        "meta": meta,
    }


_CONVERTERS = {
    "facts": _from_facts,
    "kp": _from_kp,
    "easyedit": _from_easyedit,
    "counterfact": _from_counterfact,
}


def _id(value: Any, line: int) -> str:
    return f"row-{line}" if value is None or value == "" else str(value)


def _fill(prompt: Any, subject: Any) -> Any:
    # CounterFact prompts hold "{}" where the subject goes; str.format would trip on other braces.
    if isinstance(prompt, str) and isinstance(subject, str):
        return prompt.replace("{}", subject)
    return prompt


def _unique(items: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out
