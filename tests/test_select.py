"""LoKI selection (knowpack.methods.loki.stats / select) on hand-made scores, the selection file, the prompt
sources, and `knowpack attribute` / `knowpack select` end to end: files, resume after a kill,
shards + merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from knowpack.cli import app
from knowpack.errors import KnowpackError
from knowpack.methods.loki.prompt_sets import load_prompts
from knowpack.methods.loki.select import read_selection, select_nodes, select_random, write_selection
from knowpack.methods.loki.stats import KVAStats, rows_for_quota
from knowpack.paths import organism_dir

runner = CliRunner()


def stats_of(*prompts) -> KVAStats:
    layers, rows = np.asarray(prompts[0]).shape
    stats = KVAStats(layers, rows)
    for scores in prompts:
        stats.add(np.asarray(scores, dtype=float))
    return stats


# ------------------------------------------------------------------------------------------------ selection

# Two layers of 6 rows, three prompts. Layer 0: rows 0 and 1 are always among the 3 lowest, row 5 among the
# 3 highest; layer 1 is scaled by 1e-6 (selection must not care about the scale, only the order).
A = [[-3.0, -2.0, 0.5, 1.0, -1.0, 4.0], [1e-6, 2e-6, -1e-6, 3e-6, 0.0, -2e-6]]
B = [[-1.0, -3.0, 2.0, -2.0, 0.0, 5.0], [3e-6, 1e-6, -2e-6, 2e-6, -1e-6, 0.0]]
C = [[-2.0, -1.0, -3.0, 3.0, 1.0, 2.0], [-1e-6, 3e-6, 0.0, 1e-6, -2e-6, 2e-6]]


def test_layer_balanced_keeps_the_rows_most_often_among_the_lowest():
    stats = stats_of(A, B, C)
    # k = floor(50% of 6) = 3. Layer 0: rows 0 and 1 counted 3 times, rows 2, 3, 4 once: row 2 wins the tie
    # by the lowest mean score (sums -0.5, 2, 0).
    assert stats.counts(3, "low", "layer").tolist() == [[3, 3, 1, 1, 1, 0], [1, 0, 3, 0, 3, 2]]
    assert select_nodes(stats, 50) == {0: [0, 1, 2], 1: [2, 4, 5]}
    assert stats.counts(3, "high", "layer").tolist() == [[0, 0, 2, 2, 2, 3], [2, 3, 0, 3, 0, 1]]
    # High side, layer 0: row 5 counted 3 times, rows 2, 3, 4 twice: the highest means win (row 3, row 4).
    assert select_nodes(stats, 50, "layer-balanced-high") == {0: [3, 4, 5], 1: [0, 1, 3]}


def test_global_strategies_rank_all_nodes_together():
    stats = stats_of(A, B, C)
    # K = floor(25% of 12) = 3. On prompt B the third highest is layer 1's 3e-6 (above layer 0's 0.0).
    assert stats.counts(3, "high", "global").tolist() == [[0, 0, 2, 2, 1, 3], [1, 0, 0, 0, 0, 0]]
    assert select_nodes(stats, 25, "global-high") == {0: [2, 3, 5], 1: []}
    assert stats.counts(3, "low", "global").tolist() == [[3, 3, 1, 1, 1, 0], [0] * 6]
    assert select_nodes(stats, 25, "global-low") == {0: [0, 1, 2], 1: []}


def test_abs_takes_the_smallest_mean_magnitude_and_random_is_seeded():
    stats = stats_of(A, B, C)
    assert select_nodes(stats, 34, "abs") == {0: [2, 4], 1: [2, 4]}  # k = floor(34% of 6) = 2
    one = select_random(4, 100, 10, seed=1)
    assert one == select_nodes(stats_of(np.zeros((4, 100))), 10, "random", seed=1)
    assert one != select_random(4, 100, 10, seed=2)
    assert all(len(rows) == 10 and rows == sorted(set(rows)) for rows in one.values())


def test_ties_go_to_the_lower_row_and_layer():
    flat = stats_of(np.zeros((2, 6)))
    assert select_nodes(flat, 50) == {0: [0, 1, 2], 1: [0, 1, 2]}
    # On one prompt equal scores are ordered by (layer, row): the highest three are the last three.
    assert select_nodes(flat, 50, "layer-balanced-high") == {0: [3, 4, 5], 1: [3, 4, 5]}
    assert select_nodes(flat, 25, "global-low") == {0: [0, 1, 2], 1: []}
    assert select_nodes(flat, 25, "global-high") == {0: [], 1: [3, 4, 5]}
    # Equal counts over prompts: the lower row wins.
    rising, falling = np.arange(6.0)[None].repeat(2, 0), -np.arange(6.0)[None].repeat(2, 0)
    assert select_nodes(stats_of(rising, falling), 50) == {0: [0, 1, 2], 1: [0, 1, 2]}


def test_quota_must_be_a_percentage_and_select_something():
    stats = stats_of(A)
    for bad in (0, -5, 100.5, float("nan"), "ten"):
        with pytest.raises(KnowpackError, match=r"quota must be a .*\(0, 100\]") as err:
            select_nodes(stats, bad)
        assert "\n" not in str(err.value)
    with pytest.raises(KnowpackError, match="selects none"):
        select_nodes(stats, 10)  # 10% of 6 rows is 0 rows
    with pytest.raises(KnowpackError, match="unknown strategy"):
        select_nodes(stats, 50, "lowest")
    assert select_nodes(stats, 100) == {0: list(range(6)), 1: list(range(6))}


def test_rows_for_quota_is_exact():
    assert rows_for_quota(12.5, 8) == 1 and rows_for_quota(30, 10) == 3 and rows_for_quota(10, 4096) == 409
    assert rows_for_quota(0.1, 4096) == 4 and rows_for_quota(100, 7) == 7


def test_large_models_keep_whole_percent_quotas_and_the_extra_ones_asked_for():
    big = KVAStats(1, 4096)  # 4096^2 cells > the all-edges limit: the quota grid
    big.add(np.random.default_rng(0).normal(size=(1, 4096)))
    assert len(select_nodes(big, 10)[0]) == 409
    with pytest.raises(KnowpackError, match=r"no counts for quota 12.5% .*--quotas 12.5"):
        select_nodes(big, 12.5)
    extra = KVAStats(1, 4096, quotas=[12.5])
    extra.add(np.random.default_rng(0).normal(size=(1, 4096)))
    assert len(select_nodes(extra, 12.5)[0]) == 512
    small = stats_of(np.random.default_rng(0).normal(size=(4, 64)))  # small: every k is kept
    assert len(select_nodes(small, 12.5)[0]) == 8 and len(select_nodes(small, 3.3)[0]) == 2


def test_stats_merge_and_files_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    scores = [rng.normal(size=(3, 16)) * 1e-5 for _ in range(5)]
    whole, first, second = stats_of(*scores), stats_of(*scores[:2]), stats_of(*scores[2:])
    first.merge(second)
    whole.save(tmp_path / "kva.safetensors", {"note": "x"})
    loaded, meta = KVAStats.load(tmp_path / "kva.safetensors")
    assert meta == {"note": "x"} and loaded.n == 5
    for other in (first, loaded):
        for scope in ("layer", "global"):
            np.testing.assert_array_equal(other.hist[scope], whole.hist[scope])
        np.testing.assert_allclose(other.sum, whole.sum, rtol=1e-12)
        np.testing.assert_allclose(other.sum_abs, whole.sum_abs, rtol=1e-12)
    assert whole.sum.dtype == np.float64 and abs(whole.sum).min() > 0  # 1e-5 scores kept, not flushed
    with pytest.raises(KnowpackError, match="different model shapes"):
        whole.merge(stats_of(np.zeros((2, 16))))


# --------------------------------------------------------------------------------------------- selection file


def test_selection_file_round_trip_and_shape_check(tmp_path):
    import transformers

    layers = {0: [5, 1], 1: [2]}
    path = write_selection(tmp_path / "sel.json", layers, shape=(2, 8), quota=12.5, strategy="layer-balanced")
    data = json.loads(path.read_text())
    assert data["layers"] == {"0": [1, 5], "1": [2]} and data["shape"] == {"num_layers": 2, "rows": 8}
    assert data["quota"] == 12.5 and data["strategy"] == "layer-balanced"
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2)
    assert read_selection(path, model=config) == {0: [1, 5], 1: [2]}
    other = transformers.LlamaConfig(num_hidden_layers=4, hidden_size=8, num_attention_heads=2)
    with pytest.raises(
        KnowpackError, match="2 layers x 8 down_proj rows; this model has 4 layers x 8"
    ) as err:
        read_selection(path, model=other)
    assert "\n" not in str(err.value)
    with pytest.raises(KnowpackError, match="out of range"):
        write_selection(tmp_path / "bad.json", {0: [9]}, shape=(2, 8), quota=10, strategy="random")
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(KnowpackError, match="not a selection file"):
        read_selection(tmp_path / "junk.json")
    with pytest.raises(KnowpackError, match="not found"):
        read_selection(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------ prompts


@pytest.fixture(scope="module")
def tokenizer():
    import transformers

    return transformers.AutoTokenizer.from_pretrained(organism_dir())  # has a chat template


def write_lines(path, *lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_jsonl_prompts_and_their_one_line_errors(tmp_path, tokenizer):
    good = write_lines(
        tmp_path / "p.jsonl",
        {"prompt": "Question: Where?\nAnswer:"},
        "",
        {"id": 7, "messages": [{"role": "user", "content": "Question: Who?"}]},
    )
    prompts = load_prompts(good, tokenizer)
    assert [(p.id, p.chat) for p in prompts] == [("line-1", False), ("7", True)]
    assert prompts[0].text == "Question: Where?\nAnswer:" and "Question: Who?" in prompts[1].text
    cases = [
        ("{not json", r"bad\.jsonl:2: not valid JSON"),
        ({"text": "x"}, r"bad\.jsonl:2: needs 'prompt' or 'messages'"),
        ({"prompt": "x", "messages": []}, r"bad\.jsonl:2: has both"),
        ({"prompt": ""}, r"bad\.jsonl:2: field 'prompt': expected a non-empty string"),
        ({"messages": [{"role": "user"}]}, r"bad\.jsonl:2: field 'messages'"),
        ({"id": "a", "prompt": "y"}, r"bad\.jsonl:2: field 'id': duplicate id 'a' \(first on line 1\)"),
        ({"id": [1], "prompt": "y"}, r"bad\.jsonl:2: field 'id'"),
    ]
    for line, message in cases:
        bad = write_lines(tmp_path / "bad.jsonl", {"id": "a", "prompt": "fine"}, line)
        with pytest.raises(KnowpackError, match=message) as err:
            load_prompts(bad, tokenizer)
        assert "\n" not in str(err.value)
    with pytest.raises(KnowpackError, match="prompts file not found"):
        load_prompts(tmp_path / "missing.jsonl", tokenizer)


def test_mmlu_prompts_from_a_local_dataset(tmp_path, tokenizer):
    import datasets

    rows = [
        {"question": f"Q{i}?", "subject": subject, "choices": ["w", "x", "y", "z"], "answer": i % 4}
        for subject in ("high_school_biology", "virology")
        for i in range(4)
    ]
    scored = [{**r, "question": "scored " + r["question"]} for r in rows]  # lm-eval's mmlu scores test
    splits = {"test": datasets.Dataset.from_list(scored), "validation": datasets.Dataset.from_list(rows)}
    datasets.DatasetDict(splits).save_to_disk(str(tmp_path / "mmlu"))
    prompts = load_prompts(f"mmlu:{tmp_path / 'mmlu'}", tokenizer, per_subject=3)
    assert [p.id for p in prompts] == [
        f"mmlu_{s}/validation/{i}" for s in ("high_school_biology", "virology") for i in range(3)
    ]
    assert not any("scored" in p.text for p in prompts)  # attribution never takes a scored question
    assert all(p.chat for p in prompts)
    assert (
        "There is a single choice question about High School Biology. "
        "Answer the question by replying A, B, C or D." in prompts[0].text
    )
    assert "Question: Q0?\nChoices:\nA. w\nB. x\nC. y\nD. z\nAnswer: \n" in prompts[0].text
    broken = datasets.Dataset.from_list([{**rows[0], "choices": "abcd"}])
    datasets.DatasetDict({"validation": broken}).save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(KnowpackError, match=r"row 1: field 'choices'"):
        load_prompts(f"mmlu:{tmp_path / 'broken'}", tokenizer)
    datasets.DatasetDict({"test": datasets.Dataset.from_list(scored)}).save_to_disk(str(tmp_path / "test"))
    with pytest.raises(KnowpackError, match=r"no 'validation' split \(splits: test\); attribution never"):
        load_prompts(f"mmlu:{tmp_path / 'test'}", tokenizer)


def test_world_mc_prompts_are_the_task_as_lm_eval_shows_it(tokenizer):
    """The attribution split's questions, shown as lm-eval shows the task's own, under their item ids (after
    the 200 test items, which evaluation scores and attribution never takes)."""
    prompts = load_prompts("world_mc", tokenizer)
    tasks = organism_dir() / "tasks"
    items = [json.loads(line) for line in (tasks / "world_mc_attribution.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in (tasks / "world_mc.jsonl").read_text().splitlines()]
    assert len(prompts) == len(items) == 195 and len(scored) == 200 and not prompts[0].chat
    assert [p.id for p in prompts] == list(range(200, 395))
    text = prompts[0].text
    assert text.endswith(f"Question: {items[0]['question']}\nAnswer:") and text.count("Question:") == 6
    assert not {p.text.rsplit("Question: ", 1)[1] for p in prompts} & {
        f"{s['question']}\nAnswer:" for s in scored
    }


# --------------------------------------------------------------------------------------------- CLI end to end


@pytest.fixture(scope="module")
def paths(tmp_path_factory, tokenizer):
    """A tiny random Llama saved with the organism's tokenizer, a prompts file, one whole attribution."""
    from tiny import tiny_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("attribute_cli")
    model = tiny_model("llama", tokenizer)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    lines = [{"id": f"p{i}", "prompt": f"Question: what is item {i} of the list?\nAnswer:"} for i in range(5)]
    lines.append({"id": "chat", "messages": [{"role": "user", "content": "Question: who wrote it?"}]})
    write_lines(root / "prompts.jsonl", *lines)
    result = invoke(
        "attribute",
        "--model",
        root / "model",
        "--prompts",
        root / "prompts.jsonl",
        "--out",
        root / "whole",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    return root


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    """The CLI's `error: ...` line; exactly one (progress bars of model loading may come before it)."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and result.stderr.endswith(errors[0] + "\n"), result.stderr
    return errors[0]


def same_stats(a: KVAStats, b: KVAStats) -> None:
    assert a.n == b.n
    for scope in ("layer", "global"):
        np.testing.assert_array_equal(a.hist[scope], b.hist[scope])
    np.testing.assert_allclose(a.sum, b.sum, rtol=1e-9, atol=1e-15)


def test_attribute_writes_its_files_and_select_writes_a_selection(paths):
    whole = paths / "whole"
    summary = json.loads((whole / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["prompts"] == 6 and summary["counted"] == 6
    assert summary["shape"] == {"num_layers": 2, "rows": 32} and summary["settings"]["steps"] == 7
    records = [json.loads(line) for line in (whole / "records.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["p0", "p1", "p2", "p3", "p4", "chat"]
    assert {"index", "tokens", "target", "target_text", "p_target", "p_ablated", "attr_sum"} <= set(
        records[0]
    )

    result = invoke("select", whole, "--quota", "25", "--out", paths / "sel.json")
    assert result.exit_code == 0, result.output
    data = json.loads((paths / "sel.json").read_text())
    assert data["strategy"] == "layer-balanced" and data["quota"] == 25 and data["k_per_layer"] == 8
    assert data["shape"] == {"num_layers": 2, "rows": 32} and data["source"]["n_prompts"] == 6
    assert all(len(rows) == 8 and rows == sorted(rows) for rows in data["layers"].values())
    import transformers

    config = transformers.AutoConfig.from_pretrained(paths / "model")
    assert read_selection(paths / "sel.json", model=config) == select_nodes(whole, 25)

    for strategy in ("global-high", "random", "abs"):
        result = invoke(
            "select", whole, "--quota", "25", "--strategy", strategy, "--out", paths / f"{strategy}.json"
        )
        assert result.exit_code == 0, result.output


def test_shards_merged_equal_one_run(paths):
    base = ["attribute", "--model", paths / "model", "--prompts", paths / "prompts.jsonl", "--device", "cpu"]
    for shard in ("0/2", "1/2"):
        result = invoke(*base, "--out", paths / "sharded", "--shard", shard)
        assert result.exit_code == 0, result.output
    result = invoke("select", paths / "sharded", "--quota", "25", "--out", paths / "x.json")
    assert result.exit_code == 1 and "--merge" in result.stderr
    result = invoke("attribute", "--merge", "--out", paths / "sharded")
    assert result.exit_code == 0, result.output
    same_stats(
        KVAStats.load(paths / "sharded" / "kva.safetensors")[0],
        KVAStats.load(paths / "whole" / "kva.safetensors")[0],
    )
    ids = [json.loads(line)["id"] for line in (paths / "sharded" / "records.jsonl").read_text().splitlines()]
    assert ids == ["p0", "p1", "p2", "p3", "p4", "chat"]
    assert select_nodes(paths / "sharded", 25) == select_nodes(paths / "whole", 25)


def test_resume_after_a_kill(paths, tokenizer):
    from knowpack.methods.loki.attribution import attribute
    from knowpack.models import load_model

    model, tok = load_model(paths / "model", device="cpu")
    prompts = load_prompts(paths / "prompts.jsonl", tok)
    out = paths / "killed"

    def kill_at_4(done, total):
        if done == 4:
            raise KeyboardInterrupt  # the 4th prompt is computed but not saved

    with pytest.raises(KeyboardInterrupt):
        attribute(
            model,
            tok,
            prompts,
            out=out,
            source=str(paths / "prompts.jsonl"),
            checkpoint_seconds=0,
            progress=kill_at_4,
        )
    assert json.loads((out / "summary.json").read_text())["status"] == "running"
    result = invoke("select", out, "--quota", "25", "--out", paths / "y.json")
    assert result.exit_code == 1 and "not finished (3 of 6 prompts)" in result.stderr
    with open(out / "records.jsonl", "a") as f:
        f.write('{"index": 3, "id": "p3", "tok')  # a torn line from the kill

    seen = []
    stats = attribute(
        model,
        tok,
        prompts,
        out=out,
        source=str(paths / "prompts.jsonl"),
        progress=lambda done, total: seen.append(done),
    )
    assert seen[0] == 3 and seen[-1] == 6  # carried on after the three saved prompts
    same_stats(stats, KVAStats.load(paths / "whole" / "kva.safetensors")[0])
    lines = (out / "records.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p0", "p1", "p2", "p3", "p4", "chat"]


def test_prompts_attributed_in_groups_count_as_one_at_a_time_and_resume_whole_groups(paths):
    """`--prompts-per-pass 4`: the prompts' records and counts of one at a time (scores up to float
    rounding); a kill inside the second group resumes at its first prompt and ends as an unkilled run."""
    from knowpack.methods.loki.attribution import attribute
    from knowpack.models import load_model

    base = ["attribute", "--model", paths / "model", "--prompts", paths / "prompts.jsonl", "--device", "cpu"]
    result = invoke(*base, "--out", paths / "grouped", "--prompts-per-pass", "4")
    assert result.exit_code == 0, result.output
    grouped, whole = (KVAStats.load(paths / name / "kva.safetensors")[0] for name in ("grouped", "whole"))
    assert grouped.n == whole.n
    for scope in ("layer", "global"):
        np.testing.assert_array_equal(grouped.hist[scope], whole.hist[scope])  # the same ranks
    np.testing.assert_allclose(grouped.sum, whole.sum, rtol=1e-4, atol=1e-6 * np.abs(whole.sum).max())
    assert select_nodes(paths / "grouped", 25) == select_nodes(paths / "whole", 25)

    def records(folder):
        return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]

    keys = ("index", "id", "tokens", "target")
    for one, two in zip(records(paths / "grouped"), records(paths / "whole"), strict=True):
        assert [one[k] for k in keys] == [two[k] for k in keys]
        assert one["p_target"] == pytest.approx(two["p_target"], rel=1e-5)

    model, tok = load_model(paths / "model", device="cpu")
    prompts = load_prompts(paths / "prompts.jsonl", tok)
    out, seen = paths / "grouped_killed", []

    def kill_at_5(done, total):
        seen.append(done)
        if done == 5:
            raise KeyboardInterrupt  # the second group (prompts 4 and 5) is computed but not saved

    source = str(paths / "prompts.jsonl")
    with pytest.raises(KeyboardInterrupt):
        attribute(model, tok, prompts, out=out, source=source, checkpoint_seconds=0, prompts_per_pass=4,
                  progress=kill_at_5)  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["status"], summary["prompts"]) == ("running", 4)
    seen.clear()
    stats = attribute(model, tok, prompts, out=out, source=source, prompts_per_pass=4,
                      progress=lambda done, total: seen.append(done))  # fmt: skip
    assert seen == [4, 5, 6]  # resumed at the second group's first prompt
    np.testing.assert_array_equal(stats.sum, grouped.sum)  # the same groups: the same numbers, bit for bit
    same_stats(stats, grouped)


def test_cli_bad_input_is_one_line(paths, tmp_path):
    base = ["attribute", "--model", paths / "model", "--device", "cpu"]
    write_lines(tmp_path / "bad.jsonl", {"prompt": "ok"}, {"prompt": 3})
    cases = [
        (
            [*base, "--prompts", tmp_path / "bad.jsonl", "--out", tmp_path / "a"],
            "bad.jsonl:2: field 'prompt'",
        ),
        ([*base, "--prompts", tmp_path / "none.jsonl", "--out", tmp_path / "a"], "prompts file not found"),
        (
            [*base, "--prompts", paths / "prompts.jsonl", "--out", paths / "whole", "--steps", "3"],
            "other settings",
        ),
        (
            [*base, "--prompts", paths / "prompts.jsonl", "--out", tmp_path / "a", "--shard", "2/2"],
            "bad shard",
        ),
        ([*base, "--prompts", "world_mc", "--out", tmp_path / "a", "--limit", "0"], "must be >= 1"),
        (
            ["select", paths / "whole", "--quota", "0", "--out", tmp_path / "s.json"],
            "quota must be a percentage",
        ),
        (["select", paths / "whole", "--quota", "101", "--out", tmp_path / "s.json"], "(0, 100]"),
        (
            ["select", paths / "whole", "--quota", "10", "--strategy", "top", "--out", tmp_path / "s.json"],
            "unknown strategy",
        ),
        (["select", tmp_path, "--quota", "10", "--out", tmp_path / "s.json"], "no attribution in"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in one_error_line(result)


def test_an_unsupported_architecture_is_one_line(tmp_path, tokenizer):
    import transformers

    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer))
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    result = invoke(
        "attribute",
        "--model",
        tmp_path / "gpt2",
        "--prompts",
        "world_mc",
        "--out",
        tmp_path / "o",
        "--device",
        "cpu",
    )
    assert result.exit_code == 1 and "unsupported model family 'gpt2'" in one_error_line(result)
