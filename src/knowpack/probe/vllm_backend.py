"""The probe's optional vLLM backend: the same requests in and the same answers out as engine.py.

    pip install 'knowpack[vllm]'
    knowpack probe --model M --facts F --out DIR --backend vllm
    records = knowpack.probe("M", None, facts, backend="vllm")     # a name / folder, or a vllm.LLM

Thin on purpose. Each `Request` (the prompt's own token ids, so exactly the tokens the torch engine sees)
becomes one greedy vLLM request (temperature 0, n 1) and, with samples, one request for all its n samples
(temperature, top-k, a seed of its own); all stop at the first line break (or EOS) and come back as the same
`Generation`s, so scoring, records and summaries do not know which backend ran. The shared work engine.py
does by hand is vLLM's automatic prefix caching here: the few-shot prefix is computed once, and a prompt's
greedy and sample requests share its prefill.

What differs from the torch engine: vLLM's kernels and batching may flip a near-tie, so greedy answers are
not guaranteed to be the same text, and samples come from vLLM's own generator. They are still seeded per
request from (seed, fact, prompt index), so independent of batching, sharding and resumption. A probe
records its backend in its settings, so a folder is never resumed with the other one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from knowpack.errors import KnowpackError
from knowpack.models import _check_local, _is_local, model_source, warn_remote_code
from knowpack.models import _first_line as _error_line
from knowpack.probe.engine import Generation, Request, _first_line, _hash32

LINE_BREAKS = ["\n", "\r"]


def import_vllm() -> Any:
    """The `vllm` module, or a one-line error saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise KnowpackError(
            "the vLLM backend needs vLLM, which is not installed: pip install 'knowpack[vllm]'"
        ) from None
    return vllm


def load(
    name: str | os.PathLike, *, dtype: str = "auto", seed: int = 0, **llm_kwargs: Any
) -> tuple[Any, Any]:
    """A `vllm.LLM` and the transformers tokenizer of a Hub id, a local folder, "organism" or
    "smollm2-135m".

    The tokenizer builds the prompts (and their chat template) exactly as for the torch backend. Weights are
    read from safetensors only, as `knowpack.load_model` does; prefix caching is on (the shared few-shot
    prefix); `llm_kwargs` go to `vllm.LLM` (e.g. tensor_parallel_size, gpu_memory_utilization).
    """
    vllm = import_vllm()
    source = model_source(name)
    source = _check_local(source) if _is_local(source) else str(source)
    import transformers

    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise KnowpackError(f"cannot load the tokenizer of {str(name)!r}: {_error_line(e)}") from None
    if llm_kwargs.get("trust_remote_code"):
        warn_remote_code(name)
    settings = dict(dtype=dtype, seed=seed, enable_prefix_caching=True, load_format="safetensors")
    llm = vllm.LLM(model=source, tokenizer=source, **{**settings, **llm_kwargs})
    return llm, tokenizer


def model_name(llm: Any) -> str | None:
    """The model a `vllm.LLM` was made from (for the probe's settings)."""
    config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
    return getattr(config, "model", None)


class VllmEngine:
    """engine.Engine's interface (`generate(requests) -> {key: Generation}`) over a `vllm.LLM`."""

    def __init__(
        self,
        llm: Any,
        *,
        samples: int = 16,
        temperature: float = 0.5,
        top_k: int | None = 40,
        max_new_tokens: int = 32,
        seed: int = 0,
    ):
        if samples > 0 and not temperature > 0:
            raise ValueError(f"sampling needs a temperature > 0 (got {temperature})")
        self.vllm = import_vllm()
        self.llm = llm
        self.samples, self.temperature, self.top_k = samples, temperature, top_k or None
        self.max_new_tokens, self.seed = max_new_tokens, seed

    def params(self, request: Request) -> list[Any]:
        """The vLLM `SamplingParams` of one request: greedy, then (with samples) one for all its samples."""
        common = dict(max_tokens=self.max_new_tokens, stop=LINE_BREAKS)
        # logprobs=0: only the chosen token's log-probability, which makes vLLM report the cumulative one.
        params = [self.vllm.SamplingParams(n=1, temperature=0.0, logprobs=0, **common)]
        if self.samples > 0:
            params.append(
                self.vllm.SamplingParams(
                    n=self.samples,
                    temperature=self.temperature,
                    top_k=self.top_k or -1,  # -1: no top-k
                    seed=_hash32(f"{self.seed}|{request.key!r}"),
                    **common,
                )
            )
        return params

    def generate(
        self, requests: Sequence[Request], on_batch: Callable[[int], None] | None = None
    ) -> dict[Hashable, Generation]:
        """Answers to every request, by key; vLLM schedules its batches itself: `on_batch` comes once."""
        prompts, params = [], []
        for r in requests:
            for p in self.params(r):
                prompts.append({"prompt_token_ids": list(r.ids)})
                params.append(p)
        outputs = iter(self.llm.generate(prompts, params, use_tqdm=False))
        results = {}
        for r in requests:
            greedy = next(outputs).outputs[0]
            samples = next(outputs).outputs if self.samples > 0 else []
            results[r.key] = Generation(
                greedy=_first_line(greedy.text),
                greedy_logprob=float(greedy.cumulative_logprob),
                samples=[_first_line(s.text) for s in samples],
            )
        if on_batch is not None:
            on_batch(len(requests))
        return results
