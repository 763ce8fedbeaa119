"""What one eager decode step of the probe's engine dispatches: operations per layer, and any that wait.

    .venv/bin/python scripts/step_ops.py                     # random Llamas of 2, 4 and 8 layers, on the CPU
    .venv/bin/python scripts/step_ops.py --layers 2 --samples 0

On a GPU each operation that is not a view is a kernel launch from Python, and an eager step of an 8B model is
bound by those launches (BENCHMARKS.md, session 10); an operation that reads a value on the host or copies
host data to the device (`.item()`, `nonzero`, `torch.tensor(...)`: the `WAITS` below) makes the host wait and
cannot be captured in a CUDA graph. This lists both for the last decode step of a small probe
(bench/probe.py's llama-chat setting: the organism's tokenizer with a Llama-3.1-style chat template, shared
few-shot prefixes), counted under a `TorchDispatchMode`, with the number of layers varied: the counts grow
linearly, and the fit gives the operations of a 32-layer model's step. No timing: a count, the same on any
machine.
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from probe import SHAPES, llama_chat, sample_facts  # noqa: E402

import knowpack  # noqa: E402
from knowpack.probe import engine as engine_module  # noqa: E402

WAITS = {"_local_scalar_dense", "nonzero", "masked_select", "is_nonzero", "equal", "lift_fresh"}
VIEWS = {
    "view", "_unsafe_view", "unsqueeze", "squeeze", "transpose", "t", "permute", "slice", "select", "expand",
    "reshape", "flatten", "alias", "detach", "as_strided", "contiguous", "to",
}  # fmt: skip
"""Operations that launch no kernel here (`to` and `contiguous` do none where nothing changes: float32)."""


class Count(TorchDispatchMode):
    """Every operation dispatched inside, by name; the Python line under each of `WAITS`."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.waits: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name.split("::")[-1]
        self.ops[name] += 1
        if name in WAITS:
            frames = [f for f in traceback.extract_stack()[:-1] if "/torch/" not in f.filename]
            self.waits[f"{name} at {Path(frames[-1].filename).name}:{frames[-1].lineno}"] += 1
        return func(*args, **(kwargs or {}))


def last_step(layers: int, samples: int, facts: int) -> Count:
    """The operations of the last decode step of a probe of `facts` facts on a random Llama of `layers`."""
    SHAPES["counted"] = dict(SHAPES["tiny"], num_hidden_layers=layers)
    model, tokenizer, fmt = llama_chat(SimpleNamespace(shape="counted", device="cpu", dtype="float32"))
    pool = list(knowpack.load_facts("organism"))
    steps: list[Count] = []
    forward = engine_module.Engine._logits

    def counted(engine, prefixes, cache, **inputs):
        if inputs["input_ids"].shape[1] > 1:  # a prefill
            return forward(engine, prefixes, cache, **inputs)
        steps.append(Count())
        with steps[-1]:
            return forward(engine, prefixes, cache, **inputs)

    engine_module.Engine._logits = counted
    try:
        knowpack.probe(model, tokenizer, sample_facts(pool, facts), exemplars=pool, fmt=fmt, samples=samples,
                       max_new_tokens=4)  # fmt: skip
    finally:
        engine_module.Engine._logits = forward
    return steps[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--samples", type=int, default=2, help="sample rows a prompt (0: greedy only)")
    parser.add_argument("--facts", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {__import__('transformers').__version__}")
    counts = []
    for layers in args.layers:
        step = last_step(layers, args.samples, args.facts)
        total = sum(step.ops.values())
        launches = sum(n for name, n in step.ops.items() if name not in VIEWS)
        counts.append((layers, total, launches))
        waits = "; ".join(f"{site} x{n}" for site, n in step.waits.most_common()) or "none"
        print(f"{layers} layers: {total} operations, {launches} not views; waits: {waits}")
    if len(counts) > 1:
        (l0, t0, k0), (l1, t1, k1) = counts[0], counts[-1]
        per, per_k = (t1 - t0) / (l1 - l0), (k1 - k0) / (l1 - l0)
        print(f"a layer: {per:.0f} operations, {per_k:.0f} not views; 32 layers: "
              f"{t0 + per * (32 - l0):.0f} operations, {k0 + per_k * (32 - l0):.0f} not views")  # fmt: skip


if __name__ == "__main__":
    main()
