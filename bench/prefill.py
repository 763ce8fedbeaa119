"""The probe's suffix prefill cut by length (`engine.prefill_chunks`) against one call per batch.

    .venv/bin/python bench/prefill.py                                    # the organism, greedy, ~1 min
    .venv/bin/python bench/prefill.py --model smollm2-135m --facts geo --format chat --n 20   # ~5 min
    python bench/prefill.py --shape llama3-8b --dtype bfloat16 --device cuda --threads 0 --n 40 --rounds 2

Both sides are `knowpack.probe` on the same facts and prompts: ours cut with `PREFILL_CALL_TOKENS` (the
engine's default on a CPU), the reference with one prefill call per batch (every suffix padded to the
batch's longest: the engine's default on a GPU, where the cut measured 0.91x at the 8B shape). They run
in turn, `--rounds` times each after a warm-up; the medians' ratio is the speedup. Also printed: the share
of the prefill's token slots that are padding on each side, and whether
the categories and greedy answers are the same. `--n` facts per (relation, bucket) cell for geo (its
sample_per_bucket), else facts spread over the organism's cells as bench/probe.py draws them. `--shape`:
bench/probe.py's llama-chat model instead of `--model` (random weights of that shape, the organism's facts
in a Llama-3.1-style chat template: what scripts/gpu_check.sh runs at the 8B shape).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

import knowpack
from knowpack.probe import engine as engine_module
from knowpack.probe import run as run_module

sys.path.insert(0, str(Path(__file__).parent))
from probe import SHAPES, llama_chat, sample_facts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="organism")
    parser.add_argument("--facts", default="organism")
    parser.add_argument("--format", default="plain", choices=["plain", "chat"])
    parser.add_argument("--n", type=int, default=280, help="facts (geo: per relation and bucket)")
    parser.add_argument("--samples", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=None, help="rows at once (default: the engine's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=sorted(SHAPES), help="bench/probe.py's llama-chat model")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", help="auto (the model's), float32, bfloat16, float16")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--json", help="append one JSON line to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    if args.shape:
        args.device = args.device or "cpu"
        args.dtype = "float32" if args.dtype == "auto" else args.dtype
        model, tokenizer, args.format = llama_chat(args)
        args.model, args.facts = f"llama-chat {args.shape} (random)", "organism"
    else:
        model, tokenizer = knowpack.load_model(args.model, device=args.device, dtype=args.dtype)
    pool = knowpack.load_facts(args.facts)
    if args.facts == "geo":
        from knowpack.real.geo import sample_per_bucket

        facts = sample_per_bucket(pool, args.n)
    else:
        facts = sample_facts(pool, args.n)
    slots = {"ours": [0, 0], "reference": [0, 0]}  # [real suffix tokens, token slots computed]
    side = ["ours"]
    prefill = engine_module.Engine._prefill

    def counting(self, prefixes, cache, ids, mask, position, lengths):
        chunks = engine_module.prefill_chunks(lengths, self.prefill_call_tokens)
        if not engine_module._plain_static(cache):  # _prefill makes one call then
            chunks = [list(range(len(lengths)))]
        slots[side[0]][0] += sum(lengths)
        slots[side[0]][1] += sum(len(c) * max(lengths[i] for i in c) for c in chunks)
        return prefill(self, prefixes, cache, ids, mask, position, lengths)

    engine_module.Engine._prefill = counting
    settings = dict(exemplars=pool, fmt=args.format, samples=args.samples, batch_size=args.batch_size)

    def probe(name: str) -> tuple[float, list]:
        side[0] = name
        # the reference: one call a batch, as the engine makes on a GPU
        call_tokens = (
            engine_module.GPU_PREFILL_CALL_TOKENS
            if name == "reference"
            else engine_module.PREFILL_CALL_TOKENS
        )
        run_module.Engine = _engine_with(call_tokens)
        start = time.perf_counter()
        records = knowpack.probe(model, tokenizer, facts, **settings)
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, records

    probe("ours"), probe("reference")  # warm-up
    slots.update(ours=[0, 0], reference=[0, 0])
    times: dict[str, list[float]] = {"ours": [], "reference": []}
    for _ in range(args.rounds):
        for name in ("ours", "reference"):
            seconds, records = probe(name)
            times[name].append(seconds)
            if name == "ours":
                ours_records = records
            else:
                reference_records = records
    pairs = list(zip(ours_records, reference_records, strict=True))
    same_category = sum(a["category"] == b["category"] for a, b in pairs)
    same_greedy = sum(a["greedy"] == b["greedy"] for a, b in pairs)
    ours_s, reference_s = statistics.median(times["ours"]), statistics.median(times["reference"])
    row = {
        "model": args.model,
        "facts": f"{args.facts} ({len(facts)})",
        "format": args.format,
        "samples": args.samples,
        "ours_s": round(ours_s, 2),
        "reference_s": round(reference_s, 2),
        "speedup": round(reference_s / ours_s, 3),
        "ours_padding": f"{1 - slots['ours'][0] / slots['ours'][1]:.1%}",
        "reference_padding": f"{1 - slots['reference'][0] / slots['reference'][1]:.1%}",
        "same_category": f"{same_category}/{len(facts)}",
        "same_greedy_answers": f"{same_greedy}/{len(facts)}",
        "rounds": args.rounds,
    }
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, {model.device}"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {machine}")
    print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps({**row, "machine": machine}) + "\n")


def _engine_with(call_tokens: int) -> type:
    """The engine class with `prefill_call_tokens` set (what `knowpack.probe` makes its engine from)."""

    class Engine(engine_module.Engine):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, prefill_call_tokens=call_tokens, **kwargs)

    return Engine


if __name__ == "__main__":
    main()
