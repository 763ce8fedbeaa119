"""The probe's engine on tiny random Llama, Qwen2 and Mistral models: the same greedy answers as a plain
`model.generate` on each full prompt alone, with and without prefix KV reuse, in both prompt formats; samples
that depend on the seed only (not on batching); and the files `probe()` writes, resumed after a kill."""

from __future__ import annotations

import inspect
import json
import shutil
from functools import partial

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import engine_facts, reference_greedy
from knowpack.errors import KnowpackError
from knowpack.probe import probe, read_records
from knowpack.probe.config import KEYWORDS, ProbeConfig
from knowpack.probe.engine import SYNC_EVERY_CUDA, Engine, Request, prefill_chunks, split_prefix
from knowpack.probe.graphs import Replay
from knowpack.probe.prompts import build_prompts, encode
from tiny import tiny_model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


pytestmark = pytest.mark.usefixtures("one_thread")


def mixed_chat_requests(tokenizer) -> list[tuple[Request, str]]:
    """Each fact's 2 chat prompts (2 shots) as (request, prompt text): the request shares the few-shot prefix,
    except every 5th fact's, which shares nothing (rows with and without a prefix in one batch)."""
    facts = engine_facts()
    prompts = build_prompts(facts, tokenizer, n_prompts=2, shots=2, seed=0, fmt="chat")
    pairs = []
    for i, (fact, fact_prompts) in enumerate(zip(facts, prompts, strict=True)):
        for j, p in enumerate(fact_prompts):
            ids = encode(tokenizer, p.text, "chat")
            shared = 0 if i % 5 == 0 else split_prefix(ids, encode(tokenizer, p.prefix, "chat"))
            pairs.append((Request((fact.id, j), ids, shared), p.text))
    return pairs


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from knowpack.world.tokenizer import train_tokenizer

    texts = [f"Question: {f.question}\nAnswer: {f.answer}\n\n" for f in engine_facts()]
    texts += ["Answer the following question. I don't know."]
    tok = train_tokenizer(texts, vocab_size=300, out=tmp_path_factory.mktemp("tok"))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = CHATML  # a Qwen2-style (ChatML) template, special tokens and all
    return tok


@pytest.mark.parametrize("family", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("fmt", ["plain", "chat"])
def test_greedy_answers_equal_model_generate_one_prompt_at_a_time(family, fmt, tokenizer):
    model, facts = tiny_model(family, tokenizer), engine_facts()
    prompts = build_prompts(facts, tokenizer, n_prompts=2, shots=2, seed=0, fmt=fmt)
    requests, expected = [], {}
    for fact, fact_prompts in zip(facts, prompts, strict=True):
        for j, p in enumerate(fact_prompts):
            ids = encode(tokenizer, p.text, fmt)
            n = split_prefix(ids, encode(tokenizer, p.prefix, fmt))
            assert n >= len(encode(tokenizer, p.prefix, fmt)) - 1  # all but a merged "\\n\\n" at most
            requests.append(Request((fact.id, j), ids, n))
            expected[(fact.id, j)] = reference_greedy(model, tokenizer, p.text, fmt, 12)
    # samples > 0: the greedy rows decode beside sample rows from the same prefill. Batches of 2 prompts
    # (one prefix each, mostly) and of 21 (several prefixes, and rows without one: cut off every 5th).
    mixed = [Request(r.key, r.ids, 0 if i % 5 == 0 else r.prefix_len) for i, r in enumerate(requests)]
    cases = [(requests, True, 7), (requests, True, 64), (mixed, True, 64), (requests, False, 7)]
    for reqs, reuse, batch_size in cases:
        engine = Engine(
            model, tokenizer, samples=2, max_new_tokens=12, batch_size=batch_size, reuse_prefix=reuse
        )
        got = engine.generate(reqs)
        assert {k: g.greedy for k, g in got.items()} == expected, (reuse, batch_size)
    assert len({t for t in expected.values()}) > 3  # random models still say different things


def test_samples_depend_on_the_seed_not_on_batching(tokenizer):
    model, facts = tiny_model("llama", tokenizer), engine_facts()[:6]
    settings = dict(n_prompts=2, shots=2, samples=3, max_new_tokens=6)
    a = probe(model, tokenizer, facts, batch_size=4, **settings)
    b = probe(model, tokenizer, facts[::-1], batch_size=64, **settings)[::-1]
    c = probe(model, tokenizer, facts, batch_size=4, seed=1, **settings)
    assert [r["samples"] for r in a] == [r["samples"] for r in b]
    assert [r["greedy"] for r in a] == [r["greedy"] for r in b]
    assert [r["samples"] for r in a] != [r["samples"] for r in c]
    assert len({s for r in a for per_prompt in r["samples"] for s in per_prompt}) > 3  # it does sample


def test_probe_writes_files_and_resumes_after_a_kill(tokenizer, tmp_path):
    model, facts = tiny_model("qwen2", tokenizer), engine_facts()
    settings = dict(n_prompts=2, shots=2, samples=2, max_new_tokens=6, batch_size=3)
    whole = probe(model, tokenizer, facts, out=tmp_path / "whole", **settings)
    lines = (tmp_path / "whole" / "records.jsonl").read_text().splitlines(keepends=True)
    assert [json.loads(line) for line in lines] == whole and len(whole) == len(facts)

    killed = tmp_path / "killed"  # a kill mid-write: 5 whole records and a torn sixth
    probe(model, tokenizer, facts[:5], exemplars=facts, out=killed, **settings)  # the same pool
    with open(killed / "records.jsonl", "a") as f:
        f.write(lines[5][:20])
    resumed = probe(model, tokenizer, facts, out=killed, **settings)
    assert resumed == whole
    assert read_records(killed / "records.jsonl") == whole  # each id once, the torn line gone
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["facts"] == len(facts)
    assert sum(summary["categories"].values()) == len(facts)
    assert set(summary["relation"]) == {"birth_city", "employer"}
    assert summary["timing"]["prefix_reused"] == summary["timing"]["prompts"] > 0


def test_each_probe_default_is_written_once_in_probe_config(tokenizer, tmp_path):
    """`probe()` names none of the settings `ProbeConfig` holds: with no settings it probes as with
    `ProbeConfig()`, or with its values spelled out; a keyword stands in for the config's value."""
    assert not set(inspect.signature(probe).parameters) & set(KEYWORDS)
    model, pool = tiny_model("llama", tokenizer), engine_facts()
    facts = pool[:2]
    spelled = {**ProbeConfig().kwargs(), "sample_size_seed": ProbeConfig().sample_size_seed}
    runs = {
        "bare": probe(model, tokenizer, facts, exemplars=pool, out=tmp_path / "bare"),
        "config": probe(model, tokenizer, facts, ProbeConfig(), exemplars=pool, out=tmp_path / "config"),
        "spelled": probe(model, tokenizer, facts, exemplars=pool, out=tmp_path / "spelled", **spelled),
    }
    assert runs["bare"] == runs["config"] == runs["spelled"]
    assert len(runs["bare"][0]["samples"]) == ProbeConfig.n_prompts
    settings = {name: json.loads((tmp_path / name / "summary.json").read_text())["settings"] for name in runs}
    assert settings["bare"] == settings["config"] == settings["spelled"]

    config = ProbeConfig(n_prompts=2, samples=0, max_new_tokens=4)
    probe(model, tokenizer, facts, config, shots=1, exemplars=pool, out=tmp_path / "override")
    got = json.loads((tmp_path / "override" / "summary.json").read_text())["settings"]
    assert (got["n_prompts"], got["shots"], got["samples"], got["max_new_tokens"]) == (2, 1, 0, 4)
    with pytest.raises(TypeError, match="unexpected keyword argument 'prompts'"):
        probe(model, tokenizer, facts, prompts=2)
    with pytest.raises(KnowpackError, match="shots"):
        probe(model, tokenizer, facts, config, shots=-1)


def test_prompts_beyond_a_sliding_window_warn_and_reuse_no_prefix(tokenizer, caplog):
    model = tiny_model("mistral", tokenizer)
    model.config.sliding_window = 8  # far shorter than a 2-shot prompt
    facts = engine_facts()
    prompts = build_prompts(facts, tokenizer, n_prompts=1, shots=2, seed=0)
    requests = []
    for fact, (p,) in zip(facts, prompts, strict=True):
        ids = encode(tokenizer, p.text, "plain")
        requests.append(Request(fact.id, ids, split_prefix(ids, encode(tokenizer, p.prefix, "plain"))))
    with caplog.at_level("WARNING", logger="knowpack.probe.engine"):
        got = Engine(model, tokenizer, samples=1, max_new_tokens=4).generate(requests)
    assert "longer than the model's sliding window (8)" in caplog.text
    assert set(got) == {f.id for f in facts} and all(len(g.samples) == 1 for g in got.values())


def test_shared_prefix_attention_equals_attention_over_the_whole_prompt():
    """`attend` (prefix once per chunk + own keys, merged) against plain softmax attention over each row's
    prefix and own keys concatenated: grouped-query heads, prefixes of unequal length, a row without one,
    padding and causality in the own part."""
    from knowpack.probe.cascade import SharedPrefixes, attend

    torch.manual_seed(0)
    kv_heads, heads, dim, q_len, own_len = 2, 4, 8, 3, 5
    prefixes = [
        [(torch.randn(1, kv_heads, n, dim), torch.randn(1, kv_heads, n, dim)) for _ in range(2)]
        for n in (6, 4)
    ]
    group = [0, 1, 0, -1, 1, 0, 0]
    rows = len(group)
    query = torch.randn(rows, heads, q_len, dim)
    key, value = torch.randn(rows, kv_heads, own_len + 2, dim), torch.randn(rows, kv_heads, own_len + 2, dim)
    allowed = torch.ones(rows, 1, q_len, own_len, dtype=torch.bool).tril(own_len - q_len)
    allowed[1, :, :, :2] = False  # a padded row
    mask = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)

    class Layer:
        layer_idx = 1

    got, _ = attend(
        Layer, query, key, value, mask, scaling=dim**-0.5, prefixes=SharedPrefixes(prefixes, group)
    )
    for i, g in enumerate(group):
        k, v = key[i, :, :own_len], value[i, :, :own_len]
        visible = allowed[i, 0]
        if g >= 0:
            k, v = torch.cat([prefixes[g][1][0][0], k], 1), torch.cat([prefixes[g][1][1][0], v], 1)
            visible = torch.cat([torch.ones(q_len, k.shape[1] - own_len, dtype=torch.bool), visible], 1)
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        scores = (query[i] @ k.transpose(-1, -2)) * dim**-0.5
        want = scores.masked_fill(~visible, float("-inf")).softmax(-1) @ v
        torch.testing.assert_close(got[i].transpose(0, 1), want)


def test_the_model_attends_as_before_after_generating(tokenizer):
    model = tiny_model("llama", tokenizer)
    before = model.config._attn_implementation
    ids = encode(tokenizer, "Question: Where was Bo Chen born?\nAnswer:", "plain")
    Engine(model, tokenizer, samples=1, max_new_tokens=3).generate(
        [Request("a", ids, 4), Request("b", ids, 0)]
    )
    assert model.config._attn_implementation == before
    assert all(layer.self_attn.config._attn_implementation == before for layer in model.model.layers)


def test_shared_prefix_attention_in_bf16_is_as_exact_as_sdpa():
    """In a bf16 model, `attend` computes in float32 (scores, mask, softmax, both partial products, the
    merge) and rounds once at the end, as a fused attention kernel does: its error against float64 attention
    over the same bf16 inputs is that of torch's SDPA, the one bf16 rounding of the output, not more.
    (With scores rounded to bf16 before the softmax it was 3-8x larger, eager attention's error.)"""
    from knowpack.probe.cascade import SharedPrefixes, attend

    torch.manual_seed(0)
    bf16, kv_heads, heads, dim, own_len = torch.bfloat16, 2, 8, 48, 9
    prefixes = [
        [(torch.randn(1, kv_heads, n, dim, dtype=bf16), torch.randn(1, kv_heads, n, dim, dtype=bf16))]
        for n in (200, 170)
    ]
    group = [0, 0, 1, -1, 1, 0]
    rows = len(group)
    query = (torch.randn(rows, heads, 1, dim) * 4).to(bf16)  # peaked attention: scores up to ~40
    key, value = (
        torch.randn(rows, kv_heads, own_len, dim, dtype=bf16),
        torch.randn(rows, kv_heads, own_len, dim, dtype=bf16),
    )
    allowed = torch.ones(rows, 1, 1, own_len, dtype=torch.bool)
    allowed[1, ..., :3] = False  # a padded row
    mask = torch.zeros(allowed.shape, dtype=bf16).masked_fill(~allowed, torch.finfo(bf16).min)

    class Layer:
        layer_idx = 0

    got, _ = attend(
        Layer, query, key, value, mask, scaling=dim**-0.5, prefixes=SharedPrefixes(prefixes, group)
    )
    ours, sdpa = [], []
    for i, g in enumerate(group):
        k, v, visible = key[i], value[i], allowed[i, 0]
        if g >= 0:
            k, v = torch.cat([prefixes[g][0][0][0], k], 1), torch.cat([prefixes[g][0][1][0], v], 1)
            visible = torch.cat([torch.ones(1, k.shape[1] - own_len, dtype=torch.bool), visible], 1)
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        scores = (query[i].double() @ k.double().transpose(-1, -2)) * dim**-0.5
        exact = scores.masked_fill(~visible, float("-inf")).softmax(-1) @ v.double()
        fused = torch.nn.functional.scaled_dot_product_attention(
            query[i][None], k[None], v[None], attn_mask=visible, scale=dim**-0.5
        )[0]
        ours.append(float((got[i].transpose(0, 1).double() - exact).abs().max() / exact.abs().max()))
        sdpa.append(float((fused.double() - exact).abs().max() / exact.abs().max()))
    assert max(ours) <= 1.05 * max(sdpa) and max(ours) < 2**-8, (ours, sdpa)


def test_the_cache_goes_by_its_current_keyword(tokenizer, caplog):
    """transformers 5.x renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40): the
    engine and KVA pass the cache under the name the model's forward takes, and no deprecation is raised."""
    import warnings

    from knowpack.methods.loki.kva import kva_scores

    model = tiny_model("llama", tokenizer)
    ids = encode(tokenizer, "Question: Where was Bo Chen born?\nAnswer:", "plain")
    with warnings.catch_warnings(), caplog.at_level("WARNING"):
        warnings.simplefilter("error", FutureWarning)
        Engine(model, tokenizer, samples=1, max_new_tokens=3).generate([Request("a", ids, 4)])
        kva_scores(model, ids)
    assert "deprecated" not in caplog.text


def test_batch_rows_from_free_memory():
    """256 rows without a GPU; on one, half the free memory over a row's cache and logits, in [1, 4096]."""
    from knowpack.probe.engine import CPU_BATCH_ROWS, batch_rows

    llama8b = dict(kv_bytes_per_token=2 * 32 * 8 * 128 * 2, vocab=128256)  # bf16: 128 KiB a token
    row = 131072 * 52 + 16 * 128256  # 20-token suffix + 32 new tokens, and the logits: ~8.9 MB
    assert batch_rows(None, tokens=52, **llama8b) == CPU_BATCH_ROWS == 256
    assert batch_rows(2 * 1000 * row, tokens=52, **llama8b) == 1000
    assert batch_rows(2 * 1000 * row - 1, tokens=52, **llama8b) == 999
    assert batch_rows(60 * 2**30, tokens=52, **llama8b) == 3632  # an 80 GB GPU beside the 16 GB model
    assert batch_rows(120 * 2**30, tokens=52, **llama8b) == 4096  # an H200: the cap
    assert batch_rows(120 * 2**30, tokens=252, **llama8b) == 1836  # whole chat prompts, no prefix reuse
    assert batch_rows(2**20, tokens=52, **llama8b) == 1  # never 0


def test_the_batch_size_from_memory_gives_the_same_answers(tokenizer, monkeypatch):
    """batch_size None: 256 rows on a CPU; with free memory (faked) for few rows, batches of that many rows,
    and the answers of any batch size."""
    from knowpack.probe import engine as engine_module
    from knowpack.probe.engine import kv_bytes_per_token

    model, facts = tiny_model("llama", tokenizer), engine_facts()
    config = model.config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4  # float32
    assert kv_bytes_per_token(model) == per_token
    requests = [
        Request(f.id, encode(tokenizer, p.text, "plain"), 0)
        for f, prompts in zip(
            facts, build_prompts(facts, tokenizer, n_prompts=1, shots=2, seed=0), strict=True
        )
        for p in prompts
    ]
    assert Engine(model, tokenizer, samples=2).rows(10) == 256
    expected = Engine(model, tokenizer, samples=2, max_new_tokens=8, batch_size=64).generate(requests)

    longest = max(len(r.ids) for r in requests) + 8
    vocab = model.get_output_embeddings().weight.shape[0]
    free = 2 * 7 * (per_token * longest + 16 * vocab)  # room for 7 rows: 2 prompts of 1 + 2 rows a batch
    monkeypatch.setattr(engine_module, "free_memory", lambda device: free)
    engine = Engine(model, tokenizer, samples=2, max_new_tokens=8)
    batches = []
    monkeypatch.setattr(
        engine, "_batch", lambda batch, run=engine._batch: batches.append(len(batch)) or run(batch)
    )
    got = engine.generate(requests)
    assert engine.rows(longest - 8) == 7 and set(batches) == {2} and sum(batches) == len(requests)
    assert {k: g.greedy for k, g in got.items()} == {k: g.greedy for k, g in expected.items()}
    assert {k: g.samples for k, g in got.items()} == {k: g.samples for k, g in expected.items()}


def test_counting_ended_rows_every_few_steps_changes_no_answer(tokenizer):
    """`sync_every` 4 (a GPU's default) and 32 (never before the last step): ended rows decode padding in
    between, and the greedy answers, their log-probabilities and the samples are those of every step."""
    model, facts = tiny_model("qwen2", tokenizer), engine_facts()
    prompts = build_prompts(facts, tokenizer, n_prompts=2, shots=2, seed=0)
    requests = [
        Request((f.id, j), encode(tokenizer, p.text, "plain"), 0)
        for f, fact_prompts in zip(facts, prompts, strict=True)
        for j, p in enumerate(fact_prompts)
    ]

    def answers(sync_every: int):
        engine = Engine(model, tokenizer, samples=3, max_new_tokens=12, batch_size=16, sync_every=sync_every)
        return engine.generate(requests)

    every_step = answers(1)
    lengths = {len(g.greedy) for g in every_step.values()}
    assert len(lengths) > 2  # answers end at different steps: rows retire while others decode
    for sync_every in (4, 32):
        got = answers(sync_every)
        assert {k: (g.greedy, g.samples) for k, g in got.items()} == {
            k: (g.greedy, g.samples) for k, g in every_step.items()
        }
        for key, g in got.items():
            assert g.greedy_logprob == pytest.approx(every_step[key].greedy_logprob, rel=1e-5, abs=1e-6)


@pytest.mark.slow
@pytest.mark.no_device_guard  # a TorchFunctionMode in Python, which torch.compile cannot trace
@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile's CPU kernels need a C compiler")
def test_the_compiled_decode_step_gives_the_same_answers_in_whole_graphs(tokenizer):
    """Engine(compile=True): the decode step and the token choice through torch.compile (inductor) give the
    greedy answers and samples of the eager engine, log-probabilities to float rounding, in graphs without
    breaks (a break is a return to Python, one more launch per step on a GPU); other batch sizes and requests
    add a few graphs at most (sizes 0 and 1 are special), not one per shape (every step's mask is wider)."""
    import torch._dynamo

    model = tiny_model("qwen2", tokenizer)
    requests = [r for r, _ in mixed_chat_requests(tokenizer)]

    def answers(compile: bool, batch_size: int, chosen=requests):
        settings = dict(samples=3, max_new_tokens=12, batch_size=batch_size, compile=compile)
        return Engine(model, tokenizer, **settings).generate(chosen)

    eager = {
        16: answers(False, 16),
        7: answers(False, 7, requests[::3]),
        11: answers(False, 11, requests[1::2]),
    }
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    try:
        compiled = {
            16: answers(True, 16),
            7: answers(True, 7, requests[::3]),
            11: answers(True, 11, requests[1::2]),
        }
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        breaks = dict(torch._dynamo.utils.counters["graph_break"])
    finally:
        torch._dynamo.reset()
    assert breaks == {}
    assert 2 <= graphs <= 16  # 10 here; without dynamic shapes, one per step and batch shape: hundreds
    for size, got in compiled.items():
        assert {k: (g.greedy, g.samples) for k, g in got.items()} == {
            k: (g.greedy, g.samples) for k, g in eager[size].items()
        }
        for key, g in got.items():
            assert g.greedy_logprob == pytest.approx(eager[size][key].greedy_logprob, rel=1e-5, abs=1e-5)
    assert len({g.greedy for g in eager[16].values()}) > 3


def test_compile_under_the_device_guard_warns_and_decodes_eagerly(tokenizer, caplog):
    model = tiny_model("llama", tokenizer)  # every test runs under the guard (conftest.py)
    engine = Engine(model, tokenizer, samples=0, max_new_tokens=4, compile=True)
    assert "cannot trace under the device guard" in caplog.text
    assert engine._step == engine._logits  # the eager step


def test_prefill_chunks_cut_by_length_where_padding_costs_more_than_a_call():
    lengths = [3, 40, 3, 40] + [10] * 100
    # 104 rows padded to 40 = 4160 tokens; cut at 10 | 40: 1008 + 80 + a call more
    assert prefill_chunks(lengths, 256) == [[0, 2, *range(4, 104)], [1, 3]]
    assert prefill_chunks(lengths, 5000) == [sorted(range(104), key=lambda i: lengths[i])]
    assert prefill_chunks(lengths, 0) == [[0, 2], list(range(4, 104)), [1, 3]]
    assert prefill_chunks([7, 7, 7], 0) == [[0, 1, 2]]


@pytest.mark.parametrize(("family", "reuse"), [("llama", True), ("llama", False), ("mistral", True)])
def test_a_prefill_cut_into_chunks_gives_the_same_answers(tokenizer, family, reuse):
    """Every distinct suffix length its own model call (prefill_call_tokens 0), the chunks' caches written
    into the batch's: the greedy answers of `model.generate`, the samples and log-probabilities of one call
    over the batch; with prefixes and without (rows without one mixed in), and in sliding-window layers."""
    model = tiny_model(family, tokenizer)
    pairs = mixed_chat_requests(tokenizer)
    requests = [r for r, _ in pairs]
    expected = {r.key: reference_greedy(model, tokenizer, text, "chat", 12) for r, text in pairs}
    settings = dict(samples=2, max_new_tokens=12, batch_size=96, reuse_prefix=reuse)
    whole = Engine(model, tokenizer, prefill_call_tokens=10**9, **settings).generate(requests)
    engine = Engine(model, tokenizer, prefill_call_tokens=0, **settings)
    calls = []
    forward = engine._logits
    engine._logits = lambda *a, **k: calls.append(k["input_ids"].shape) or forward(*a, **k)
    got = engine.generate(requests)
    prefills = [shape for shape in calls if shape[1] > 1]
    assert len(prefills) > 3 and len({shape[1] for shape in prefills}) > 3  # cut: chunks of their own widths
    assert {k: g.greedy for k, g in got.items()} == expected
    assert {k: g.samples for k, g in got.items()} == {k: g.samples for k, g in whole.items()}
    for key, g in got.items():
        assert g.greedy_logprob == pytest.approx(whole[key].greedy_logprob, rel=1e-5, abs=1e-5)


WAITS = {
    "_local_scalar_dense": "a value read on the host (.item(), int(), bool())",
    "nonzero": "an output size known only on the device",
    "masked_select": "an output size known only on the device",
    "is_nonzero": "a value read on the host",
    "equal": "a value read on the host",
    "_unique2": "an output size known only on the device",
    "unique_consecutive": "an output size known only on the device",
    "lift_fresh": "a tensor made from host data (torch.tensor), copied to the device",
}
"""Operations that make the host wait for a GPU, or copy host data to it: on a CPU they run as anything else,
and a CUDA graph cannot capture them."""


class WaitsSeen(TorchDispatchMode):
    """The operations of `WAITS` that run inside, by name, into `seen`."""

    def __init__(self, seen: list[str]):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name.split("::")[-1] in WAITS:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


class RecordedReplay(Replay):
    """graphs.Replay as a CUDA graph behaves, on a CPU: the first call eager, the second records the step's
    operations (make_fx: the Python runs once, as in a capture) and every later call replays the record, so
    that state kept in Python (a counter the step advances outside tensors) stays as it was recorded, exactly
    as it would in a graph. The first call's operations are also checked for waits (`WAITS`, into `waits`)."""

    made: list[RecordedReplay] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.made.append(self)
        self.replays, self.waits = 0, []

    def __call__(self) -> None:
        self.calls += 1
        if self.calls == 1:
            with WaitsSeen(self.waits):
                self.fn()
        elif self.graph is None:
            self.graph = make_fx(self.fn)()
        else:
            self.graph()
            self.replays += 1


@pytest.mark.no_device_guard  # make_fx traces below the guard's TorchFunctionMode
@pytest.mark.parametrize(
    ("family", "reuse"), [("llama", True), ("llama", False), ("qwen2", True), ("mistral", True)]
)
def test_replayed_decode_steps_give_the_eager_answers_and_never_wait(
    tokenizer, family, reuse, monkeypatch, caplog
):
    """Engine(cuda_graphs=True): the decode loop whose steps are recorded once and replayed (as CUDA graphs
    would be; ended rows counted every few steps, as on a GPU) gives the eager engine's greedy answers (those
    of `model.generate`), samples and log-probabilities, where rows end at different steps (and leave the
    batch: the rest is captured anew) and some rows have no prefix, or where no prefix is reused (the
    model's own attention, SDPA); its step makes no operation that waits for the device. A sliding-window
    cache (Mistral's 4096) is not replayed: its length lives in a Python int that a replay would not advance
    (its answers would go wrong)."""
    import logging

    from knowpack.probe import engine as engine_module

    monkeypatch.setattr(engine_module, "Replay", RecordedReplay)
    monkeypatch.setattr(RecordedReplay, "made", [])
    batches = []
    model = tiny_model(family, tokenizer)
    pairs = mixed_chat_requests(tokenizer)
    requests = [r for r, _ in pairs]
    expected = {r.key: reference_greedy(model, tokenizer, text, "chat", 12) for r, text in pairs}
    for batch_size, chosen in ((24, requests), (7, requests[::3])):  # 7: prompts alone, rows leave early
        settings = dict(samples=3, max_new_tokens=12, batch_size=batch_size, reuse_prefix=reuse)
        eager = Engine(model, tokenizer, **settings).generate(chosen)
        with caplog.at_level(logging.INFO, logger="knowpack.probe.engine"):
            graphs = Engine(model, tokenizer, cuda_graphs=True, sync_every=SYNC_EVERY_CUDA, **settings)
            got = graphs.generate(chosen, batches.append)
        assert {k: g.greedy for k, g in got.items()} == {r.key: expected[r.key] for r in chosen}
        assert {k: g.samples for k, g in got.items()} == {k: g.samples for k, g in eager.items()}
        for key, g in got.items():
            assert g.greedy_logprob == pytest.approx(eager[key].greedy_logprob, rel=1e-5, abs=1e-5)
    assert len({len(g) for g in expected.values()}) > 2  # rows end at different steps
    made = RecordedReplay.made
    if family == "mistral":
        assert made == [] and "sliding-window" in caplog.text
    else:
        assert len(made) > len(batches) > 3  # rows that ended left a batch, the rest captured anew
        assert all(r.replays > 0 or r.calls < 3 for r in made)  # the last steps may end the loop early
        assert sum(r.replays for r in made) > sum(r.calls for r in made) / 2
        assert [w for r in made for w in r.waits] == []


def test_cuda_graphs_and_compile_are_one_choice(tokenizer):
    model = tiny_model("llama", tokenizer)
    with pytest.raises(ValueError, match="choose one"):
        Engine(model, tokenizer, compile=True, cuda_graphs=True)


def test_replay_on_cuda_warms_up_then_captures_once_and_replays(monkeypatch):
    """graphs.Replay's CUDA path, with torch.cuda's stream and graph calls stood in for (no GPU here): the
    first call runs the step on a side stream, the second captures it into a graph of the pool given and
    replays it, later calls only replay, all on the model's GPU (not the current one); a step that cannot be
    captured is a one-line error."""
    from contextlib import contextmanager

    events = []

    class Stream:
        def __init__(self, device=None):
            assert device == torch.device("cuda:1")

        def wait_stream(self, other):
            events.append("wait")

    @contextmanager
    def device(which):
        assert which == torch.device("cuda:1")
        yield

    class Graph:
        def replay(self):
            events.append("replay")

    @contextmanager
    def on(stream):
        events.append("side stream")
        yield

    @contextmanager
    def capture(graph, pool=None, capture_error_mode="global"):
        events.append(f"capture into {pool}, {capture_error_mode}")
        yield

    current = partial(Stream, torch.device("cuda:1"))
    for name, value in [("Stream", Stream), ("current_stream", current), ("stream", on), ("device", device)]:
        monkeypatch.setattr(torch.cuda, name, value)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", capture)
    step = Replay(lambda: events.append("step"), torch.device("cuda:1"), pool="pool")
    for _ in range(3):
        step()
    assert events == [
        "wait", "side stream", "step", "wait",  # warm-up: eager, on a side stream
        "capture into pool, thread_local", "step", "replay",  # captured (the step's Python runs), replayed
        "replay",
    ]  # fmt: skip

    def waits():
        if step.calls > 1:  # the warm-up runs; the capture fails
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    step = Replay(waits, torch.device("cuda:1"))
    step()
    with pytest.raises(KnowpackError, match=r"cannot be captured .*\(CUDA error: operation not permitted"):
        step()
