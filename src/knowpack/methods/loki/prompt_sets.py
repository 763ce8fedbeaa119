"""The prompts KVA runs on: a JSONL prompts file, MMLU (as LoKI uses it), or a bundled multiple-choice task.

    prompts = load_prompts("prompts.jsonl", tokenizer)      # {"prompt": "..."} or {"messages": [...]} a line
    prompts = load_prompts("mmlu", tokenizer)                # cais/mmlu's validation split, <= 50 a subject
    prompts = load_prompts("mmlu:/data/mmlu", tokenizer)     # a local copy (save_to_disk or data files)
    prompts = load_prompts("world_mc", tokenizer)            # the organism's MMLU-like benchmark
    prompts = load_prompts("geo_mc", tokenizer)              # the real facts' (GeoNames) MMLU stand-in

- JSONL (docs/design.md §3.2): one object a line with `prompt` (text, used as is, the tokenizer adds its BOS)
  or `messages` (chat turns; the tokenizer's chat template is applied with the generation prompt), and an
  optional `id` (string or integer, unique; default `line-N`). A bad line is a one-line error naming the
  file, the line and the field.
- MMLU: the first `per_subject` (default 50) questions of every subject of MMLU's validation split
  (`knowpack.heldout.MMLU_SPLIT`), in dataset order, as LoKI's code presents them: one user turn "There is a
  single choice question about <Subject>. Answer the question by replying A, B, C or D.", the question, the
  lettered choices, "Answer: " and a line break, in the chat template with the generation prompt. Columns:
  question, choices, subject. LoKI took test questions (57 subjects x 50, ~2,850 prompts); the validation
  split (1,531 questions, fewer than 50 in most subjects) is what lm-eval's `mmlu`, which scores the test
  split, never sees (docs/design.md §5.3). Ids `mmlu_<subject>/validation/<i>`.
- `world_mc` / `geo_mc` (`MC_TASKS`): the questions of a bundled task's attribution split
  (`knowpack.heldout`: items the task never scores), exactly as the lm-eval task shows its own to the model
  (its 5 dev exemplars with their answers, then the question; the probe's plain format): the organism's
  world_mc, or geo_mc of the real-model testbed (SmolLM2 with `--facts geo`). Ids: the items' ids in the
  task (integers after the test split's).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.heldout import MMLU_SPLIT, attribution_items
from knowpack.paths import geo_dir, organism_dir
from knowpack.prompts import plain_prompt

WORLD_MC_SHOTS = 5
"""world_mc's and geo_mc's `num_fewshot` (first_n sampler over their dev split)."""

MC_TASKS = {"world_mc": organism_dir, "geo_mc": geo_dir}
"""Bundled multiple-choice tasks that `load_prompts` takes by name -> the folder whose tasks/ holds them."""

MMLU_HUB_NAME = "cais/mmlu"


@dataclass(frozen=True)
class Prompt:
    """One attribution prompt: its id (a benchmark item's own where it is one), rendered text, and whether a
    chat template rendered it (then it already holds its special tokens and is encoded as is)."""

    id: str | int
    text: str
    chat: bool = False

    def encode(self, tokenizer: Any) -> list[int]:
        return tokenizer(self.text, add_special_tokens=not self.chat)["input_ids"]


def load_prompts(source: str | os.PathLike, tokenizer: Any, *, per_subject: int | None = 50) -> list[Prompt]:
    """Prompts from `source`: a JSONL path, `mmlu` / `mmlu:NAME_OR_PATH`, or `world_mc` (module docstring)."""
    text = str(source)
    if text in MC_TASKS:
        return mc_task_prompts(text)
    if text == "mmlu" or text.startswith("mmlu:"):
        return mmlu_prompts(text.partition(":")[2] or MMLU_HUB_NAME, tokenizer, per_subject=per_subject)
    path = Path(source)
    if not path.is_file():
        raise KnowpackError(
            f"prompts file not found: {path} (or give 'mmlu', 'mmlu:NAME_OR_PATH', {', '.join(MC_TASKS)})"
        )
    return jsonl_prompts(path, tokenizer)


def jsonl_prompts(path: str | os.PathLike, tokenizer: Any) -> list[Prompt]:
    """A JSONL prompts file; every bad line is a one-line error `path:line: field 'x': what`."""
    path = Path(path)
    prompts, first_line = [], {}
    with open(path, encoding="utf-8", errors="strict") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            prompt = _jsonl_prompt(path, number, line, tokenizer)
            if prompt.id in first_line:
                raise _error(
                    path, number, "id", f"duplicate id {prompt.id!r} (first on line {first_line[prompt.id]})"
                )
            first_line[prompt.id] = number
            prompts.append(prompt)
    if not prompts:
        raise KnowpackError(f"{path}: no prompts")
    return prompts


def mmlu_prompts(source: str, tokenizer: Any, *, per_subject: int | None = 50) -> list[Prompt]:
    """MMLU validation questions, `per_subject` of each subject (None: all), in LoKI's chat prompt."""
    _need_chat_template(tokenizer, "MMLU prompts")
    rows = _dataset(source)
    taken: dict[str, int] = {}
    prompts = []
    for number, row in enumerate(rows, start=1):
        subject = str(row.get("subject") or "")
        if per_subject is not None and taken.get(subject, 0) >= per_subject:
            continue
        question, choices = row.get("question"), row.get("choices")
        if not isinstance(question, str) or not question.strip():
            raise _error(source, number, "question", "expected a non-empty string", row_word="row")
        if (
            not isinstance(choices, list)
            or not 2 <= len(choices) <= 10
            or not all(isinstance(c, str) for c in choices)
        ):
            raise _error(source, number, "choices", "expected a list of 2 to 10 strings", row_word="row")
        messages = [{"role": "user", "content": _mmlu_text(subject, question, choices)}]
        text = _render(tokenizer, messages, f"{source}: row {number}")
        item = f"mmlu_{subject or 'mmlu'}/{MMLU_SPLIT}/{taken.get(subject, 0)}"
        prompts.append(Prompt(item, text, chat=True))
        taken[subject] = taken.get(subject, 0) + 1
    if not prompts:
        raise KnowpackError(f"{source}: no MMLU questions")
    return prompts


def mc_task_prompts(name: str, tasks_dir: str | os.PathLike | None = None) -> list[Prompt]:
    """The questions of a bundled task's attribution split (`MC_TASKS`: world_mc, geo_mc; items the task
    never scores), each with the task's 5 dev exemplars as lm-eval shows its own, under its item id."""
    tasks = Path(tasks_dir) if tasks_dir is not None else MC_TASKS[name]() / "tasks"
    dev = _read_jsonl(tasks / f"{name}_dev.jsonl")[:WORLD_MC_SHOTS]
    exemplars = [(item["question"], item["choices"][item["label"]]) for item in dev]
    held = attribution_items(name, tasks)
    return [Prompt(i, plain_prompt(exemplars, item["question"])) for i, item in held]


def world_mc_prompts(tasks_dir: str | os.PathLike | None = None) -> list[Prompt]:
    """The organism's world_mc attribution questions with the task's 5 dev exemplars (`mc_task_prompts`)."""
    return mc_task_prompts("world_mc", tasks_dir)


# ------------------------------------------------------------------------------------------------ internals


def _jsonl_prompt(path: Path, number: int, line: str, tokenizer: Any) -> Prompt:
    try:
        record = json.loads(line)
    except ValueError:
        raise KnowpackError(f"{path}:{number}: not valid JSON") from None
    if not isinstance(record, dict):
        raise KnowpackError(f"{path}:{number}: expected a JSON object")
    raw_id = record.get("id", f"line-{number}")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise _error(path, number, "id", "expected a non-empty string or an integer")
    has_prompt, has_messages = "prompt" in record, "messages" in record
    if has_prompt == has_messages:
        what = "has both 'prompt' and 'messages'; give one" if has_prompt else "needs 'prompt' or 'messages'"
        raise KnowpackError(f"{path}:{number}: {what}")
    if has_prompt:
        text = record["prompt"]
        if not isinstance(text, str) or not text:
            raise _error(path, number, "prompt", "expected a non-empty string")
        return Prompt(str(raw_id), text)
    messages = record["messages"]
    if not isinstance(messages, list) or not messages or not all(_is_turn(m) for m in messages):
        raise _error(path, number, "messages", 'expected a list of {"role": str, "content": str} objects')
    _need_chat_template(tokenizer, f"{path}:{number}: 'messages'")
    return Prompt(str(raw_id), _render(tokenizer, messages, f"{path}:{number}"), chat=True)


def _is_turn(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str)
    )


def _mmlu_text(subject: str, question: str, choices: list[str]) -> str:
    topic = subject.replace("_", " ").title() or "General Knowledge"
    letters = "ABCDEFGHIJ"
    lines = [
        f"There is a single choice question about {topic}. Answer the question by replying "
        f"{', '.join(letters[: len(choices) - 1])} or {letters[len(choices) - 1]}.",
        f"Question: {question}",
        "Choices:",
        *(f"{letters[i]}. {choice}" for i, choice in enumerate(choices)),
        "Answer: \n",  # sic: LoKI's text ends so
    ]
    return "\n".join(lines)


def _render(tokenizer: Any, messages: list[dict], where: str) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja errors, e.g. a template that rejects a role
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise KnowpackError(f"{where}: the tokenizer's chat template failed: {first}") from None


def _need_chat_template(tokenizer: Any, what: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise KnowpackError(f"{what} need a chat template, and tokenizer {name!r} has none")


def _dataset(source: str) -> Any:
    """MMLU's validation split (`MMLU_SPLIT`) from the Hub, a `save_to_disk` folder or data files; a saved
    single split (a Dataset, not a DatasetDict) is taken as given: the caller vouches that it is held out."""
    import datasets  # lazy: heavy

    path = Path(source).expanduser()
    try:
        if path.is_dir() and any((path / n).exists() for n in ("dataset_info.json", "dataset_dict.json")):
            data = datasets.load_from_disk(str(path))
        elif path.exists():
            data = datasets.load_dataset(str(path), split=MMLU_SPLIT)
        else:
            data = datasets.load_dataset(source, "all", split=MMLU_SPLIT)
    except Exception as e:  # whatever datasets raises means "cannot load this source"
        raise KnowpackError(f"cannot load MMLU from {source!r}: {type(e).__name__}: {str(e)[:200]}") from None
    if isinstance(data, datasets.DatasetDict):
        if MMLU_SPLIT not in data:
            raise KnowpackError(
                f"{source}: no '{MMLU_SPLIT}' split (splits: {', '.join(data)}); attribution never takes the "
                "test questions that lm-eval's mmlu scores"
            )
        data = data[MMLU_SPLIT]
    return data


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise KnowpackError(f"task data not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _error(path: Any, number: int, field: str, message: str, *, row_word: str = "") -> KnowpackError:
    where = f"{path}: row {number}" if row_word else f"{path}:{number}"
    return KnowpackError(f"{where}: field '{field}': {message}")
