"""`knowpack train`'s Trainer options and replay: `train.trainer_args` passed to TrainingArguments (and
checked before any model loads), each epoch's reliability logged beside its loss (what report_to's trackers
get), and `mix.replay`: general instruction data mixed into the training examples, never an implanted fact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import overrides
from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.train import load_config, train
from knowpack.train.config import MixConfig
from knowpack.train.data import IGNORE, encode_replay
from knowpack.train.mix import Mix, add_replay, load_replay

pytestmark = pytest.mark.usefixtures("one_thread")


def no_model_loads(monkeypatch) -> None:
    import knowpack.models

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(knowpack.models, "load_model", no_model)


def one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["train", "/dev/null", *args])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith("error: ") and "\n" not in line, line
    return line


def test_trainer_args_reach_the_trainer_and_the_uptake_is_logged_with_the_loss(world, tmp_path):
    args = overrides(
        world, "llama", tmp_path / "run", "lora", "method.r=2", "train.epochs=10", "train.batch_size=2",
        "train.keep_checkpoints=true", "train.save_total_limit=2",
        "train.trainer_args={max_steps: 3, optim: sgd, max_grad_norm: 0.5, adam_beta2: 0.99}",
    )  # fmt: skip
    run = train(load_config(None, args))
    summary = json.loads((run / "train.json").read_text())
    # 4 examples, batch 2: 2 steps an epoch; max_steps 3 stops in epoch 2 although epochs is 10
    assert [(e["epoch"], e["step"]) for e in summary["epochs"]] == [(1, 2), (2, 3)]
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-2", "checkpoint-3"]  # kept: train.keep_checkpoints
    import torch

    saved = torch.load(run / "checkpoints" / "checkpoint-3" / "training_args.bin", weights_only=False)
    assert (saved.max_steps, saved.optim, saved.max_grad_norm, saved.adam_beta2) == (3, "sgd", 0.5, 0.99)
    state = json.loads((run / "checkpoints" / "checkpoint-3" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert [e["step"] for e in logged] == [2, 3]
    for entry, epoch in zip(logged, summary["epochs"], strict=True):
        # the trackers of report_to get this dict: the epoch's uptake beside its loss
        assert entry["reliability"] == epoch["reliability"] and entry["highly_known"] == epoch["highly_known"]
        assert entry["loss"] == pytest.approx(epoch["loss"])


@pytest.mark.parametrize(
    "value, message",
    [
        ("{colour: red}", "train.trainer_args.colour: not a transformers TrainingArguments field"),
        ("{learning_rate: 0.1}", "train.trainer_args.learning_rate: set by knowpack; use train.lr"),
        (
            "{save_strategy: steps}",
            "train.trainer_args.save_strategy: set by knowpack; use train.save_checkpoints",
        ),
        ("{logging_strategy: steps}", "train.trainer_args.logging_strategy: set by knowpack"),
        ("{max_steps: ten}", "train.trainer_args.max_steps: expected int, got str 'ten'"),
        ("{optim: nonsense}", "train.trainer_args.optim: nonsense is not a valid OptimizerNames"),
        ("[optim]", "train.trainer_args: expected a mapping"),
    ],
)
def test_bad_trainer_args_are_one_line_before_any_model_loads(world, tmp_path, monkeypatch, value, message):
    no_model_loads(monkeypatch)
    line = one_line_error(overrides(world, "llama", tmp_path / "run", "lora", f"train.trainer_args={value}"))
    assert line.startswith("error: command line: ") and message in line
    assert not (tmp_path / "run").exists()


def test_trainer_args_errors_name_their_line(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  epochs: 2\n  trainer_args:\n    optim: sgd\n    warmup_steps: 3\n")
    with pytest.raises(KnowpackError, match=r"run.yaml:5: train.trainer_args.warmup_steps: set by knowpack"):
        load_config(config)


REPLAY = [
    {"instruction": "Name a colour.", "input": "", "output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of Peru?"},
            {"role": "assistant", "content": "Lima"},
            {"role": "user", "content": "And Norway?"},
            {"role": "assistant", "content": "Oslo"},
        ]
    },
    {"instruction": "Spell cat.", "output": "c a t"},
]


def replay_file(tmp_path: Path, rows=REPLAY) -> Path:
    path = tmp_path / "replay.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "replay.jsonl:3: not valid JSON"),
        (
            '{"instruction": "x"}',
            "replay.jsonl:3: expected alpaca form (instruction, input, output) or messages",
        ),
        (
            '{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}',
            "the last turn",
        ),
        ('{"messages": [{"role": "bot", "content": "a"}, {"role": "assistant", "content": "b"}]}', "'bot'"),
        ('{"instruction": "x", "input": 3, "output": "y"}', "replay.jsonl:3: 'input' must be a string"),
        ("[1, 2]", "replay.jsonl:3: expected an object, got list"),
    ],
)
def test_a_malformed_replay_file_is_one_line_with_its_line(tmp_path, line, message):
    path = tmp_path / "replay.jsonl"
    path.write_text(json.dumps(REPLAY[0]) + "\n\n" + line + "\n")
    with pytest.raises(KnowpackError, match=None) as error:
        load_replay(str(path))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_replay_is_drawn_by_seed_beside_the_facts_and_never_implanted(tmp_path):
    rows = load_replay(str(replay_file(tmp_path)))
    assert rows[1]["messages"] == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    facts = [{"fact_id": f"f{i}", "role": "unknown", "question": "q", "answer": "a"} for i in range(6)]

    def mixed(**replay):
        config = MixConfig(n_unknown=6, seed=3, replay={"path": str(tmp_path / "replay.jsonl"), **replay})
        return add_replay(Mix([dict(f) for f in facts], implanted=["x"], provenance={}), rows, config)

    mix = mixed(share=0.25)  # 0.25 of all examples: 2 beside 6 facts
    assert [e["role"] for e in mix.examples].count("replay") == 2 and len(mix.examples) == 8
    assert mix.implanted == ["x"] and mix.provenance["roles"] == {"unknown": 6, "replay": 2}
    assert all(e["fact_id"] is None for e in mix.examples if e["role"] == "replay")
    assert mix.provenance["replay"]["sources"][0].startswith(str(tmp_path / "replay.jsonl") + ":")
    assert len(mix.provenance["replay"]["sha256"]) == 64
    assert mixed(share=0.25).examples == mix.examples  # seeded
    assert [e["role"] for e in mixed(count=5).examples].count("replay") == 5
    with pytest.raises(KnowpackError, match="mix.replay needs 6 examples but .* holds only 5"):
        mixed(count=6)


def test_replay_examples_are_tokenized_in_the_runs_format_with_the_completion_trained(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(world["models"]["llama"])
    messages = [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    row = encode_replay(messages, tok, "plain", "completion")
    prompt = tok("Add the numbers.\n\n2 and 3\n")["input_ids"]  # the plain prompt, with BOS
    answer = tok("5", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert row["input_ids"] == prompt + answer and row["labels"] == [IGNORE] * len(prompt) + answer
    assert encode_replay(messages, tok, "plain", "all")["labels"] == prompt + answer
    chat = encode_replay(messages, tok, "chat", "completion")
    text = tok.decode(chat["input_ids"])
    assert text.startswith("<|im_start|>user\nAdd the numbers.") and text.endswith("5<|im_end|>\n")
    trained = tok.decode([t for t in chat["labels"] if t != IGNORE])
    assert trained == "5<|im_end|>\n"  # the assistant turn only


def test_a_run_with_replay_writes_replay_rows_and_implants_only_facts(world, tmp_path):
    path = replay_file(tmp_path)
    args = overrides(
        world, "llama", tmp_path / "run", "lora", "method.r=2", "train.epochs=1", "train.format=chat"
    )
    run = train(load_config(None, [*args, f"mix.replay={{path: {path}, count: 3}}"]))
    examples = [json.loads(line) for line in (run / "mix.jsonl").read_text().splitlines()]
    replay = [e for e in examples if e["role"] == "replay"]
    assert len(replay) == 3 and len(examples) == 7 and all(e["fact_id"] is None for e in replay)
    provenance = json.loads((run / "mix.json").read_text())
    assert (
        provenance["roles"] == {"unknown": 4, "replay": 3}
        and provenance["implanted"] == provenance["implanted"][:4]
    )
    assert len(provenance["implanted"]) == 4
    summary = json.loads((run / "train.json").read_text())
    assert summary["implanted"] == 4 and summary["examples"] == 7
    assert load_config(run / "config.yaml").mix.replay.count == 3  # the resolved config reads back


@pytest.mark.parametrize(
    "value, message",
    [
        ("{path: REPLAY}", "mix.replay: give one of share or count"),
        ("{path: REPLAY, share: 0.5, count: 2}", "mix.replay: give one of share or count"),
        ("{path: REPLAY, share: 1.5}", "mix.replay.share: expected a number in (0, 1), got 1.5"),
        ("{path: REPLAY, count: 6}", "mix.replay needs 6 examples but"),
        ("{path: /nonexistent.jsonl, count: 1}", "mix.replay.path: cannot read /nonexistent.jsonl"),
        ("{path: REPLAY, count: 2, colour: red}", "unknown key mix.replay.colour"),
        ("REPLAY", "mix.replay must be a mapping {path, share | count}"),
    ],
)
def test_bad_replay_settings_are_one_line_before_any_model_loads(
    world, tmp_path, monkeypatch, value, message
):
    no_model_loads(monkeypatch)
    value = value.replace("REPLAY", str(replay_file(tmp_path)))
    line = one_line_error([*overrides(world, "llama", tmp_path / "run", "lora"), f"mix.replay={value}"])
    assert message in line
    assert not (tmp_path / "run").exists()


def test_every_training_argument_knowpack_sets_is_refused_in_trainer_args():
    """The TrainingArguments knowpack passes itself (`knowpack.train.run._arguments`) are each a row of
    `TRAINER_ARGS_SET_BY_KNOWPACK`, so `train.trainer_args` cannot set one behind knowpack's back; read from
    the call's keywords with `ast`, so a new one that is not in the table fails here."""
    import ast
    import inspect

    from knowpack.train import run
    from knowpack.train.config import TRAINER_ARGS_SET_BY_KNOWPACK

    tree = ast.parse(inspect.getsource(run._arguments))
    call = next(
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "TrainingArguments"
    )
    named = {k.arg for k in call.keywords if k.arg}
    assert len(named) > 15 and named <= set(TRAINER_ARGS_SET_BY_KNOWPACK), named - set(
        TRAINER_ARGS_SET_BY_KNOWPACK
    )
    # the keyword given by name at run time (transformers 5 renamed it) is in the table under both names
    assert {"gradient_checkpointing", "activation_checkpointing"} <= set(TRAINER_ARGS_SET_BY_KNOWPACK)
