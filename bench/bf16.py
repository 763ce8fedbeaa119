"""bf16 agreement: knowpack's probe engine and fast KVA against the plain ways, with the model in bf16.

    .venv/bin/python bench/bf16.py --model organism                       # ~11 min on 1 CPU core
    .venv/bin/python bench/bf16.py --model tiny --facts 20 --n-prompts 5  # a random tiny Llama, ~1 min
    .venv/bin/python bench/bf16.py --model organism --device cuda         # a GPU
    .venv/bin/python bench/bf16.py --model PATH --facts 25 --n-prompts 3 --sample-prompts 0   # a checkpoint

Models: `organism` (the bundled one, loaded in bf16), `tiny` (tests/tiny.py's random 2-layer Llama with the
organism's tokenizer, cast to bf16), or a local checkpoint folder (loaded in bf16; KVA on the organism only).
Prompts: plain 4-shot probe prompts of a seeded sample of the organism's
facts (`--facts` x `--n-prompts`).
- greedy: the engine's greedy answers (`Engine`, prefix reuse on) against `model.generate` on each prompt
  alone (the model's own attention, SDPA), and, as the floor of what two correct bf16 implementations agree
  on, generate with eager attention against generate with SDPA. For each disagreement with generate: the
  first token where the answers part, and there generate's margin between its two best logits, in bf16
  steps of the top logit (a near-tie: a step or two).
- samples (`--samples` per prompt, temperature 0.5, top-k 40, on `--sample-prompts` prompts of torso and
  tail facts, where answers vary): per prompt the frequency of each distinct answer from the engine and from
  generate (do_sample); total-variation distance and a chi-square test of homogeneity (answers seen < 10
  times in both pooled), against the same between two generate runs of other seeds.
- kva (`--kva-prompts` world_mc prompts; the organism only): fast KVA in bf16, and the naive L·m-pass
  reference in bf16 on the first `--naive-prompts`, against float32 arithmetic on the same weights (a float32
  copy): the largest difference relative to the largest float32 score (median over prompts); and LoKI's
  selection (layer-balanced, q = 10) from each, rows in common per layer.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

import knowpack
from knowpack.methods.loki.kva import kva_scores
from knowpack.methods.loki.select import select_nodes
from knowpack.methods.loki.stats import KVAStats
from knowpack.probe.engine import Engine, Request, split_prefix
from knowpack.probe.prompts import build_prompts, encode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kva_reference import naive_kva  # noqa: E402
from tiny import tiny_model  # noqa: E402


def first_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")[0]


def bf16_step(x: float) -> float:
    return 2.0 ** (math.floor(math.log2(abs(x))) - 7) if x else 2.0**-133


def requests_for(facts, pool, tokenizer, n_prompts: int) -> list[Request]:
    out = []
    prompts = build_prompts(facts, tokenizer, n_prompts=n_prompts, exemplars=pool)
    for fact, fact_prompts in zip(facts, prompts, strict=True):
        for j, p in enumerate(fact_prompts):
            ids = encode(tokenizer, p.text, "plain")
            out.append(Request((fact.id, j), ids, split_prefix(ids, encode(tokenizer, p.prefix, "plain"))))
    return out


def generate(model, tokenizer, ids, device, **kwargs):
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        return model.generate(
            x, attention_mask=torch.ones_like(x), pad_token_id=tokenizer.pad_token_id, **kwargs
        )


def greedy(model, tokenizer, requests, device, max_new_tokens: int) -> None:
    start = time.perf_counter()
    ours = Engine(model, tokenizer, samples=0, max_new_tokens=max_new_tokens).generate(requests)
    reference, eager, margins = {}, {}, []
    for r in requests:
        out = generate(
            model,
            tokenizer,
            r.ids,
            device,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            output_scores=True,
            return_dict_in_generate=True,
        )
        tokens = out.sequences[0, len(r.ids) :].tolist()
        reference[r.key] = first_line(tokenizer.decode(tokens, skip_special_tokens=True))
        answer = ours[r.key].greedy
        if answer != reference[r.key]:
            step = next(
                k
                for k in range(len(tokens))
                if not answer.startswith(
                    first_line(tokenizer.decode(tokens[: k + 1], skip_special_tokens=True))
                )
                or "\n" in tokenizer.decode(tokens[: k + 1])
            )
            top = out.scores[step][0].float().topk(2).values.tolist()
            margins.append(
                (step, (top[0] - top[1]) / bf16_step(top[0]), top[0] - top[1], answer, reference[r.key])
            )
    model.set_attn_implementation("eager")
    for r in requests:
        out = generate(model, tokenizer, r.ids, device, do_sample=False, max_new_tokens=max_new_tokens)
        eager[r.key] = first_line(tokenizer.decode(out[0, len(r.ids) :], skip_special_tokens=True))
    model.set_attn_implementation("sdpa")
    n = len(requests)
    same = n - len(margins)
    floor = sum(eager[k] == reference[k] for k in reference)
    print(f"greedy ({max_new_tokens} new tokens at most), {n} prompts, {time.perf_counter() - start:.0f} s:")
    print(f"  engine = generate(sdpa) on {same}/{n}; generate(eager) = generate(sdpa) on {floor}/{n}")
    if margins:
        steps = [m[1] for m in margins]
        print(
            f"  disagreements: generate's top-2 margin at the first differing token {min(steps):.0f} to "
            f"{max(steps):.0f} bf16 steps (absolute {min(m[2] for m in margins):.3g} to "
            f"{max(m[2] for m in margins):.3g})"
        )
        for step, ulps, margin, answer, want in margins:
            print(f"    token {step}: {ulps:.0f} steps ({margin:.3g}): ours {answer!r}, generate {want!r}")


def compare(a: dict, b: dict, n: int) -> tuple[float, float, float, int, float]:
    """Mean and largest total-variation distance between the answer frequencies of `a` and `b` (n samples
    a prompt each), and a chi-square test of homogeneity over all prompts: statistic, dof, p-value."""
    tvs, stat, dof = [], 0.0, 0
    for key in a:
        ca, cb = Counter(a[key]), Counter(b[key])
        answers = set(ca) | set(cb)
        tvs.append(0.5 * sum(abs(ca[x] - cb[x]) for x in answers) / n)
        big = [x for x in answers if ca[x] + cb[x] >= 10]
        rest = (
            sum(ca[x] for x in answers) - sum(ca[x] for x in big),
            sum(cb[x] for x in answers) - sum(cb[x] for x in big),
        )
        cells = [c for c in [(ca[x], cb[x]) for x in big] + [rest] if sum(c) > 0]
        stat += sum((x - y) ** 2 / (x + y) for x, y in cells)  # two equal samples: sum of (O - E)^2 / E
        dof += len(cells) - 1
    return float(np.mean(tvs)), max(tvs), stat, dof, chi2_sf(stat, dof)


def chi2_sf(stat: float, dof: int) -> float:
    """P(chi-square with `dof` degrees of freedom >= stat)."""
    if dof == 0:
        return 1.0
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2)))


def samples(model, tokenizer, requests, device, n: int, max_new_tokens: int) -> None:
    start = time.perf_counter()
    engine = Engine(
        model,
        tokenizer,
        samples=n,
        temperature=0.5,
        top_k=40,
        max_new_tokens=max_new_tokens,
        batch_size=n + 1,
    )
    ours = {key: g.samples for key, g in engine.generate(requests).items()}
    runs = []
    for seed in (1, 2):
        run = {}
        for r in requests:
            torch.manual_seed(seed)
            out = generate(
                model,
                tokenizer,
                r.ids,
                device,
                do_sample=True,
                temperature=0.5,
                top_k=40,
                top_p=None,
                num_return_sequences=n,
                max_new_tokens=max_new_tokens,
            )
            run[r.key] = [
                first_line(t) for t in tokenizer.batch_decode(out[:, len(r.ids) :], skip_special_tokens=True)
            ]
        runs.append(run)
    distinct = np.mean([len(set(v)) for v in runs[0].values()])
    print(
        f"samples: {len(requests)} prompts x {n}, {distinct:.1f} distinct answers a prompt, "
        f"{time.perf_counter() - start:.0f} s:"
    )
    for name, a, b in (
        ("engine vs generate", ours, runs[0]),
        ("engine vs generate (seed 2)", ours, runs[1]),
        ("generate vs generate (seeds 1, 2)", runs[0], runs[1]),
    ):
        tv, tv_max, stat, dof, p = compare(a, b, n)
        print(
            f"  {name:34s} TV mean {tv:.3f}, max {tv_max:.3f}; chi-square {stat:.1f}, {dof} dof, p = {p:.2g}"
        )


def kva(model, tokenizer, n_prompts: int, n_naive: int) -> None:
    from knowpack.methods.loki.prompt_sets import load_prompts

    start = time.perf_counter()
    exact = copy.deepcopy(model).float()
    layers, rows = len(model.model.layers), model.config.hidden_size
    stats = {name: KVAStats(layers, rows) for name in ("bf16", "float32")}
    off = {"fast": [], "naive": [], "fast vs naive": []}
    for i, prompt in enumerate(load_prompts("world_mc", tokenizer)[:n_prompts]):
        ids = torch.tensor(prompt.encode(tokenizer), device=model.device)
        truth, fast = kva_scores(exact, ids).scores, kva_scores(model, ids).scores
        stats["bf16"].add(fast)
        stats["float32"].add(truth)
        scale = np.abs(truth).max()
        off["fast"].append(np.abs(fast - truth).max() / scale)
        if i < n_naive:
            slow = naive_kva(model, ids)[0].numpy()
            off["naive"].append(np.abs(slow - truth).max() / scale)
            off["fast vs naive"].append(np.abs(fast - slow).max() / scale)
    a, b = select_nodes(stats["bf16"], 10), select_nodes(stats["float32"], 10)
    common = [len(set(a[layer]) & set(b[layer])) for layer in range(layers)]
    print(
        f"kva: {n_prompts} world_mc prompts ({n_naive} naive), {time.perf_counter() - start:.0f} s; "
        "largest difference / largest float32 score, median (max) over prompts:"
    )
    for name, values in off.items():
        print(f"  {name:14s} {np.median(values):.2e} ({max(values):.2e})")
    print(f"  q = 10 selection (k = {len(a[0])} a layer), rows in common with float32's per layer: {common}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="organism", help="organism, tiny, or a local checkpoint folder")
    parser.add_argument("--facts", type=int, default=200)
    parser.add_argument("--n-prompts", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--sample-prompts", type=int, default=30)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--kva-prompts", type=int, default=60)
    parser.add_argument("--naive-prompts", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (0: torch's default)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "tiny":
        _, tokenizer = knowpack.load_model("organism")
        model = tiny_model("llama", tokenizer).to(args.device, torch.bfloat16)
    else:
        model, tokenizer = knowpack.load_model(args.model, dtype="bfloat16", device=args.device)
    model.set_attn_implementation("sdpa")
    pool = list(knowpack.load_facts("organism"))
    print(f"{args.model} in bf16, {args.device}, torch {torch.__version__}, {args.threads} threads")
    if args.facts:
        facts = random.Random(0).sample(pool, args.facts)
        greedy(
            model,
            tokenizer,
            requests_for(facts, pool, tokenizer, args.n_prompts),
            args.device,
            args.max_new_tokens,
        )
    if args.sample_prompts:
        varied = [f for f in pool if f.bucket in ("torso", "tail")]
        facts = random.Random(1).sample(varied, args.sample_prompts)
        max_new = 1 if args.model == "tiny" else args.max_new_tokens  # random answers: the first token
        samples(model, tokenizer, requests_for(facts, pool, tokenizer, 1), args.device, args.samples, max_new)
    if args.kva_prompts and args.model == "organism":
        kva(model, tokenizer, args.kva_prompts, args.naive_prompts)


if __name__ == "__main__":
    main()
