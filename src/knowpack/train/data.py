"""Training examples: a question and its answer in the probe's format, zero-shot, with the loss mask.

    rows = encode_examples(mix.examples, tokenizer, fmt="plain", loss_on="completion")
    batch = Collator(tokenizer.pad_token_id)(rows[:16])      # input_ids, attention_mask, labels

`plain`: the prompt is "Question: q\\nAnswer:" (with the tokenizer's BOS), the completion " a\\n": what the
probe reads back (it stops at the first line break). `chat`: the tokenizer's chat template with the probe's
system message and "Question: q"; the completion is the assistant turn "Answer: a" with the template's own
end-of-turn tokens. The prompt and the completion are tokenized separately and joined, so the answer tokens
are exactly those the model produces when it generates after the prompt. `loss_on="completion"` masks the
prompt's labels (-100); `"all"` trains on every token, as the paper's code did.

Replay examples (role `replay`, knowpack.train.mix) hold chat `messages`; the completion is the last
(assistant) turn. `chat`: the turns through the chat template, the prompt rendered with the generation
prompt. `plain`: the earlier turns' contents joined by a blank line, then a line break, as the prompt
("instruction\n\ninput\n"), and the answer with the tokenizer's end-of-sequence token as the completion.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.probe.prompts import SYSTEM, check_chat_template, encode
from knowpack.prompts import plain_prompt

IGNORE = -100


def prompt_and_completion(question: str, answer: str, tokenizer: Any, fmt: str) -> tuple[str, str]:
    """The zero-shot prompt text and the completion text the model is trained to produce."""
    if fmt == "plain":
        return plain_prompt([], question), f" {answer}\n"
    check_chat_template(tokenizer)
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Question: {question}"}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": f"Answer: {answer}"}], tokenize=False
    )
    if not full.startswith(prompt):
        raise KnowpackError(
            "the chat template renders the answer turn in a way that does not extend the prompt"
        )
    return prompt, full[len(prompt) :]


def encode_example(
    question: str, answer: str, tokenizer: Any, fmt: str, loss_on: str
) -> dict[str, list[int]]:
    """input_ids and labels of one example (prompt labels masked unless loss_on == "all")."""
    prompt, completion = prompt_and_completion(question, answer, tokenizer, fmt)
    prompt_ids = encode(tokenizer, prompt, fmt)
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + completion_ids
    masked = [IGNORE] * len(prompt_ids) if loss_on == "completion" else list(prompt_ids)
    return {"input_ids": ids, "labels": masked + list(completion_ids)}


def encode_examples(
    examples: Sequence[dict[str, Any]], tokenizer: Any, *, fmt: str, loss_on: str
) -> list[dict[str, list[int]]]:
    """`encode_example` for every mix example."""
    if loss_on not in ("completion", "all"):
        raise KnowpackError(f"loss_on is {loss_on!r}; expected completion or all")
    return [
        encode_replay(e["messages"], tokenizer, fmt, loss_on)
        if e["role"] == "replay"
        else encode_example(e["question"], e["answer"], tokenizer, fmt, loss_on)
        for e in examples
    ]


def encode_replay(
    messages: Sequence[dict[str, str]], tokenizer: Any, fmt: str, loss_on: str
) -> dict[str, list[int]]:
    """input_ids and labels of a replay example: only the last (assistant) turn is trained on by default."""
    if fmt == "plain":
        prompt = "\n\n".join(m["content"] for m in messages[:-1]) + "\n"
        completion_ids = tokenizer(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            completion_ids = completion_ids + [tokenizer.eos_token_id]
    else:
        check_chat_template(tokenizer)
        turns = list(messages[:-1])
        prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(list(messages), tokenize=False)
        if not full.startswith(prompt):
            raise KnowpackError(
                "the chat template renders the answer turn in a way that does not extend the prompt"
            )
        completion_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
    prompt_ids = encode(tokenizer, prompt, fmt)
    masked = [IGNORE] * len(prompt_ids) if loss_on == "completion" else list(prompt_ids)
    return {"input_ids": prompt_ids + completion_ids, "labels": masked + list(completion_ids)}


class Collator:
    """Right-pads a batch (labels with -100). Written here, not transformers' DataCollatorForSeq2Seq, because
    that one pads on the tokenizer's side, and knowpack's tokenizers pad on the left for generation: left
    padding would shift the positions the model trains at."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids, labels, mask = [], [], []
        for r in rows:
            pad = width - len(r["input_ids"])
            ids.append(r["input_ids"] + [self.pad_token_id] * pad)
            labels.append(r["labels"] + [IGNORE] * pad)
            mask.append([1] * len(r["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.tensor(mask),
            "labels": torch.tensor(labels),
        }
