"""The probe's vLLM backend without vLLM: a fake `vllm` module records the SamplingParams and prompts it is
handed and answers with canned text, so what can go wrong on our side (request -> params, answers -> records,
the settings, the install message) is checked here; vLLM itself is not."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import pytest

from helpers import probe_world
from knowpack.errors import KnowpackError
from knowpack.probe import probe
from knowpack.probe.engine import Request
from knowpack.probe.vllm_backend import VllmEngine, import_vllm, load

INSTALL = "the vLLM backend needs vLLM, which is not installed: pip install 'knowpack[vllm]'"


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.__dict__.update(kwargs)


class LLM:
    """Greedy answers "g<prompt length>", samples "s<seed mod 1000>-<i>", each followed by a second line."""

    def __init__(self, model: str = "fake-model", **kwargs):
        self.kwargs = {"model": model, **kwargs}
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(model=model))
        self.calls = []

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            if params.temperature == 0:
                texts = [f" g{len(prompt['prompt_token_ids'])}\nQuestion: next"]
            else:
                texts = [f" s{params.seed % 1000}-{i}\r\nmore" for i in range(params.n)]
            completions = [SimpleNamespace(text=t, cumulative_logprob=-0.25) for t in texts]
            outputs.append(SimpleNamespace(outputs=completions))
        return outputs

    def get_tokenizer(self):
        return CharTokenizer()


class CharTokenizer:
    """One token per character: enough for plain prompts."""

    chat_template = None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_requests_become_greedy_and_sample_params(fake_vllm):
    engine = VllmEngine(LLM(), samples=3, temperature=0.5, top_k=40, max_new_tokens=7, seed=0)
    greedy, sampled = engine.params(Request(("f1", 0), [1, 2, 3], 2))
    stop = {"max_tokens": 7, "stop": ["\n", "\r"]}
    assert greedy.kwargs == {"n": 1, "temperature": 0.0, "logprobs": 0, **stop}
    assert sampled.kwargs == {"n": 3, "temperature": 0.5, "top_k": 40, "seed": sampled.seed, **stop}
    # a seed per (probe seed, fact, prompt index): the same whatever the batch, different for another
    assert engine.params(Request(("f1", 0), [9], 0))[1].seed == sampled.seed
    assert engine.params(Request(("f1", 1), [1, 2, 3], 2))[1].seed != sampled.seed
    other = VllmEngine(LLM(), samples=3, max_new_tokens=7, seed=1)
    assert other.params(Request(("f1", 0), [1, 2, 3], 2))[1].seed != sampled.seed
    no_top_k = VllmEngine(LLM(), samples=2, top_k=0).params(Request("k", [1]))
    assert no_top_k[1].top_k == -1  # vLLM's "no top-k"
    assert len(VllmEngine(LLM(), samples=0).params(Request("k", [1]))) == 1  # greedy only


def test_answers_come_back_as_generations_by_key(fake_vllm):
    llm = LLM()
    engine = VllmEngine(llm, samples=2, max_new_tokens=5, seed=0)
    requests = [Request(("a", 0), [1, 2, 3], 2), Request(("b", 0), [1, 2, 3, 4, 5], 2)]
    got = engine.generate(requests)
    ((prompts, params),) = llm.calls  # one call for everything; vLLM schedules the batches
    assert prompts == [{"prompt_token_ids": [1, 2, 3]}] * 2 + [{"prompt_token_ids": [1, 2, 3, 4, 5]}] * 2
    assert [p.temperature for p in params] == [0.0, 0.5, 0.0, 0.5]
    assert got[("a", 0)].greedy == " g3" and got[("b", 0)].greedy == " g5"  # cut at the line break
    seed = params[1].seed % 1000
    assert got[("a", 0)].samples == [f" s{seed}-0", f" s{seed}-1"]
    assert got[("a", 0)].greedy_logprob == -0.25
    greedy_only = VllmEngine(LLM(), samples=0).generate(requests)
    assert greedy_only[("b", 0)].samples == []


def test_probe_with_the_vllm_backend_writes_the_same_records(fake_vllm, tmp_path):
    facts = probe_world(4)
    llm = LLM("my/model")
    records = probe(llm, None, facts, n_prompts=2, shots=2, samples=2, backend="vllm", out=tmp_path)
    assert [r["id"] for r in records] == [f.id for f in facts]
    assert all(r["category"] == "Unknown" and len(r["samples"][0]) == 2 for r in records)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["backend"] == "vllm" and summary["settings"]["model"] == "my/model"
    assert summary["status"] == "finished" and summary["facts"] == len(facts)
    with pytest.raises(KnowpackError, match="other settings .*backend 'vllm' vs 'torch'"):
        hf_model = SimpleNamespace(name_or_path="my/model")  # stops at the settings, before any generation
        probe(hf_model, CharTokenizer(), facts, n_prompts=2, shots=2, samples=2, out=tmp_path)
    with pytest.raises(KnowpackError, match="backend 'vllm' takes a vllm.LLM or a model name or folder"):
        probe(object(), CharTokenizer(), facts, backend="vllm")


def test_load_resolves_the_organism_and_asks_for_prefix_caching(fake_vllm):
    from knowpack.paths import organism_dir

    llm, tokenizer = load("organism", dtype="bfloat16", seed=3, gpu_memory_utilization=0.5)
    assert llm.kwargs == {
        "model": str(organism_dir()),
        "tokenizer": str(organism_dir()),
        "dtype": "bfloat16",
        "seed": 3,
        "enable_prefix_caching": True,
        "load_format": "safetensors",
        "gpu_memory_utilization": 0.5,
    }
    assert tokenizer("Question:")["input_ids"]  # the organism's own tokenizer builds the prompts
    with pytest.raises(KnowpackError, match="model folder not found: /no/such/model"):
        load("/no/such/model")


def test_without_vllm_a_one_line_install_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an environment without vLLM does on import
    with pytest.raises(KnowpackError) as err:
        import_vllm()
    assert str(err.value) == INSTALL
    with pytest.raises(KnowpackError, match="pip install 'knowpack\\[vllm\\]'"):
        probe("organism", None, probe_world(2), backend="vllm")
    with pytest.raises(KnowpackError, match="unknown backend 'tpu'; expected torch or vllm"):
        probe(object(), None, probe_world(2), backend="tpu")
