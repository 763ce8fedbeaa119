"""The run config, the mix and the training examples, without training: config checks (unknown keys, types,
line numbers, overrides), the mix drawn from hand-made probe records, and completion-only masking token by
token on a chat-template tokenizer."""

from __future__ import annotations

import pytest

from knowpack.errors import KnowpackError
from knowpack.facts import Fact
from knowpack.prompts import REFUSAL
from knowpack.train.config import MixConfig, load_config
from knowpack.train.data import IGNORE, Collator, encode_example, prompt_and_completion
from knowpack.train.mix import build_mix
from tiny import tiny_tokenizer

CONFIG = """\
model:
  name: organism
mix:
  n_unknown: 5
  add: paraphrase
  k: 2
method:
  name: lora
  r: 4
train:
  epochs: 3
  lr: 0.01
out: runs/x
"""


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_config_defaults_overrides_and_method_options(tmp_path):
    config = load_config(write(tmp_path, CONFIG), ["mix.n_unknown=7", "method.alpha=8", "train.lr=1e-3"])
    assert config.mix.n_unknown == 7 and config.mix.add == "paraphrase" and config.mix.k == 2
    assert config.method.name == "lora" and config.method.options == {"r": 4, "alpha": 8}
    assert config.train.lr == 1e-3 and config.train.epochs == 3 and config.out == "runs/x"
    assert config.probe.n_prompts == 10 and config.probe.samples == 16  # docs/design.md §4.2 defaults
    assert config.to_dict()["method"] == {"name": "lora", "r": 4, "alpha": 8}
    again = load_config(None, [f"{k}={v}" for k, v in [("out", "o"), ("train.epochs", 2)]])
    assert again.out == "o" and again.train.epochs == 2


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        (CONFIG.replace("  k: 2", "  kk: 2"), [], "run.yaml:6: unknown key mix.kk"),
        (
            CONFIG.replace("epochs: 3", "epochs: three"),
            [],
            "run.yaml:11: train.epochs: expected int, got str",
        ),
        (CONFIG.replace("lr: 0.01", "lr: [1]"), [], "run.yaml:12: train.lr: expected float"),
        (CONFIG.replace("  r: 4", "  rank: 4"), [], "run.yaml:9: unknown key method.rank for method lora"),
        (
            CONFIG.replace("name: lora", "name: qlora"),
            [],
            "method.name is 'qlora'; expected one of lora, loki",
        ),
        (CONFIG.replace("add: paraphrase", "add: synonyms"), [], "mix.add is 'synonyms'"),
        (CONFIG, ["mix.seed=x"], "command line: mix.seed: expected int, got str"),
        (CONFIG, ["nonsense"], "bad override 'nonsense'"),
        (CONFIG, ["extra.key=1"], "unknown section 'extra'"),
        (
            CONFIG.replace("  r: 4\n", ""),
            ["method.quota=200", "method.name=loki"],
            "command line: method.quota: expected a number in (0, 100], got 200.0",
        ),
        ("model: [1, 2\n", [], "run.yaml:2: not valid YAML"),
    ],
)
def test_bad_configs_are_one_line_errors(tmp_path, text, overrides, message):
    with pytest.raises(KnowpackError) as error:
        load_config(write(tmp_path, text), overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def facts_and_records(n: int = 12):
    facts, records = [], []
    cats = ["Unknown", "Unknown", "HighlyKnown", "MaybeKnown"]
    for i in range(n):
        paraphrases = [f"Q{i} asked another way {j}?" for j in range(3)]
        facts.append(
            Fact(
                f"f{i}",
                f"Q{i}?",
                [f"A{i}"],
                f"S{i}",
                ["r1", "r2"][i % 2],
                paraphrases,
                "head",
                {"heldout_paraphrases": [f"H{i}?"]},
            )
        )
        records.append({"id": f"f{i}", "category": cats[i % 4]})
    return facts, records


def test_mix_draws_by_seed_and_adds_what_was_asked():
    facts, records = facts_and_records(40)
    unknown = {r["id"] for r in records if r["category"] == "Unknown"}
    a = build_mix(facts, records, MixConfig(n_unknown=5, seed=0))
    b = build_mix(facts, records, MixConfig(n_unknown=5, seed=0))
    c = build_mix(facts, records, MixConfig(n_unknown=5, seed=1))
    assert [f.id for f in a.implanted] == [f.id for f in b.implanted] != [f.id for f in c.implanted]
    assert {f.id for f in a.implanted} <= unknown and len(a.examples) == 5

    para = build_mix(facts, records, MixConfig(n_unknown=4, add="paraphrase", k=5, seed=0))
    assert para.provenance["roles"] == {"unknown": 4, "paraphrase": 20}
    assert para.provenance["paraphrases_repeated"] == 4 * 2  # 3 paraphrases each, cycled to 5
    by_id = {f.id: f for f in facts}
    for e in para.examples:
        fact = by_id[e["fact_id"]]
        assert e["answer"] == fact.answer
        if e["role"] == "paraphrase":
            assert e["question"] in fact.paraphrases and e["question"] not in fact.meta["heldout_paraphrases"]

    hk = build_mix(facts, records, MixConfig(n_unknown=3, add="highly_known", k=2, seed=0))
    added = [e["fact_id"] for e in hk.examples if e["role"] == "highly_known"]
    assert len(added) == len(set(added)) == 6
    assert all(records[int(i[1:])]["category"] == "HighlyKnown" for i in added)

    idk = build_mix(facts, records, MixConfig(n_unknown=10, idk_share=0.3, seed=0))
    relabelled = [e for e in idk.examples if e["role"] == "idk"]
    assert len(relabelled) == 3 and all(e["answer"] == REFUSAL for e in relabelled)
    assert len(idk.implanted) == 7


def test_mix_stratified_and_impossible_mixes():
    facts, records = facts_and_records(40)
    mix = build_mix(facts, records, MixConfig(n_unknown=10, stratify="relation", seed=3))
    relations = [f.relation for f in mix.implanted]
    assert relations.count("r1") == relations.count("r2") == 5
    with pytest.raises(KnowpackError, match="mix.n_unknown is 30 but probe has only 20 Unknown facts"):
        build_mix(facts, records, MixConfig(n_unknown=30))
    with pytest.raises(KnowpackError, match="needs 40 HighlyKnown facts"):
        build_mix(facts, records, MixConfig(n_unknown=4, add="highly_known", k=10))
    with pytest.raises(KnowpackError, match="mix.k is 0"):
        build_mix(facts, records, MixConfig(n_unknown=4, add="paraphrase"))


def test_mix_draws_only_from_draw_from_and_adds_from_the_rest(tmp_path):
    from knowpack.facts import save_facts

    facts, records = facts_and_records(40)
    mine = [f for f in facts if int(f.id[1:]) < 12]  # f0..f11: Unknown are f0, f1, f4, f5, f8, f9
    save_facts(mine, tmp_path / "mine.jsonl")
    config = MixConfig(n_unknown=6, add="highly_known", k=1, seed=2, draw_from=str(tmp_path / "mine.jsonl"))
    mix = build_mix(facts, records, config)
    assert {f.id for f in mix.implanted} == {"f0", "f1", "f4", "f5", "f8", "f9"}
    assert len([e for e in mix.examples if e["role"] == "highly_known"]) == 6
    with pytest.raises(
        KnowpackError,
        match=r"mix.n_unknown is 7 but probe has only 6 Unknown facts .*among the facts of mix.draw_from",
    ):
        build_mix(facts, records, MixConfig(n_unknown=7, draw_from=str(tmp_path / "mine.jsonl")))
    with pytest.raises(KnowpackError, match=r"mix.draw_from: .*missing.jsonl"):
        build_mix(facts, records, MixConfig(n_unknown=1, draw_from=str(tmp_path / "missing.jsonl")))


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    texts = ["Question: Where was Ada born?\nAnswer: Paris\n\n", "Answer the following question."]
    return tiny_tokenizer(texts, tmp_path_factory.mktemp("tok"))


def test_completion_only_masking_token_by_token_chat(chat_tokenizer):
    tok = chat_tokenizer
    prompt, completion = prompt_and_completion("Where was Ada born?", "Paris", tok, "chat")
    assert prompt.endswith("<|im_start|>assistant\n") and "Question: Where was Ada born?" in prompt
    assert completion == "Answer: Paris<|im_end|>\n"
    row = encode_example("Where was Ada born?", "Paris", tok, "chat", "completion")
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tok(completion, add_special_tokens=False)["input_ids"]
    assert row["input_ids"] == prompt_ids + completion_ids
    for i, (token, label) in enumerate(zip(row["input_ids"], row["labels"], strict=True)):
        if i < len(prompt_ids):
            assert label == IGNORE, (i, tok.decode([token]))
        else:
            assert label == token, (i, tok.decode([token]))
    trained = tok.decode([t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != IGNORE])
    assert trained == completion
    assert tok.convert_tokens_to_ids("<|im_end|>") in [lab for lab in row["labels"] if lab != IGNORE]
    everything = encode_example("Where was Ada born?", "Paris", tok, "chat", "all")
    assert everything["labels"] == everything["input_ids"]


def test_plain_examples_and_right_padding(chat_tokenizer):
    tok = chat_tokenizer
    prompt, completion = prompt_and_completion("Where was Ada born?", "Paris", tok, "plain")
    assert (prompt, completion) == ("Question: Where was Ada born?\nAnswer:", " Paris\n")
    rows = [encode_example(q, "Paris", tok, "plain", "completion") for q in ("Where was Ada born?", "Ada?")]
    batch = Collator(tok.pad_token_id)(rows)
    short = min(len(r["input_ids"]) for r in rows)
    i = [len(r["input_ids"]) for r in rows].index(short)
    assert batch["attention_mask"][i, short:].sum() == 0 and batch["attention_mask"][i, :short].all()
    assert (batch["labels"][i, short:] == IGNORE).all()
    assert batch["input_ids"][i, :short].tolist() == rows[i]["input_ids"]  # padding on the right


@pytest.mark.parametrize(
    "extra, overrides, mix_seed, train_seed",
    [
        ("seed: 3\n", [], 3, 3),  # one key draws everything
        ("seed: 3\n", ["mix.seed=1"], 1, 3),  # ... unless a section sets its own
        ("seed: 3\ntrain:\n  seed: 7\n", [], 3, 7),
        ("mix:\n  seed: 1\n", ["seed=5"], 5, 5),  # a later `seed=` override replaces the file's seeds
        ("mix:\n  seed: 1\n", ["seed=5", "mix.seed=2"], 2, 5),  # but not one overridden beside it
        ("", [], 0, 0),  # no seed at all: each section's default
    ],
)
def test_one_seed_sets_the_mix_and_train_seeds_together(tmp_path, extra, overrides, mix_seed, train_seed):
    import yaml

    config = load_config(write(tmp_path, "model:\n  name: organism\n" + extra), overrides)
    assert (config.mix.seed, config.train.seed) == (mix_seed, train_seed)
    saved = tmp_path / "config.yaml"  # what a run folder keeps, read back as it is
    saved.write_text(yaml.safe_dump(config.to_dict()))
    again = load_config(saved)
    assert (again.mix.seed, again.train.seed, again.seed) == (mix_seed, train_seed, config.seed)


def test_a_bad_seed_is_named_with_its_line(tmp_path):
    with pytest.raises(KnowpackError, match=r"run.yaml:2: seed: expected int or null, got str"):
        load_config(write(tmp_path, "model: {name: organism}\nseed: many\n"))
    with pytest.raises(KnowpackError, match=r"command line: seed: .*>= 0"):
        load_config(None, ["seed=-1"])


def test_a_run_folder_from_before_the_seed_key_still_reads(tmp_path):
    config = load_config(write(tmp_path, CONFIG.replace("  k: 2\n", "  k: 2\n  seed: 4\n")))
    assert config.seed is None and config.mix.seed == 4 and config.train.seed == 0
