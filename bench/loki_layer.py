"""Training step of the LoKI layer vs plain LoRA (PEFT) vs the paper's split-and-gather layer (time, memory).

    .venv/bin/python bench/loki_layer.py                          # CPU: random Llama, 8 layers, hidden 512
    .venv/bin/python bench/loki_layer.py --layers 2 --steps 2     # a quick CPU check
    .venv/bin/python bench/loki_layer.py --forwards --steps 15    # how the layer's forward was chosen
    python bench/loki_layer.py --device cuda --dtype bfloat16 --shape llama3-8b --batch 4 --seq 512

One random model of the chosen shape (seeded), one batch of random tokens, the same AdamW (lr 1e-4, weight
decay 0.01) for every variant; a step is forward + backward + optimizer step + zero_grad. Variants:
- `loki`: `knowpack.methods.loki.layer.apply_loki`, q% of the rows of every down_proj (random rows: the
  cost does not depend on which), at each quota of `--quotas` (default 10 and 30);
- `split`: the layer of the paper's code, written plainly below: each down_proj split into a trainable Linear
  of the chosen rows and a frozen Linear of the others, outputs concatenated, then gathered back into order;
- `lora`: PEFT LoRA, rank `--lora-rank` (16) on the MLP projections (`--lora-targets all-linear`: the paper's
  LoRA baseline, 42M parameters on Llama-3.1-8B at r = 16).
Trainable parameters are float32 in all three (PEFT's default for adapters; the split layer's rows are cast to
float32 for parity, where the paper's code keeps them in the model's dtype); with `--dtype bfloat16` the
frozen weights are bf16 and every step runs under autocast.

Memory: each variant alone in a fresh subprocess; on GPU the peak `torch.cuda.max_memory_allocated` during
its steps minus what was allocated before the first, on CPU the peak RSS during the steps minus the RSS
before the first (after `malloc_trim`): activations, gradients, optimizer state and transients.
Time: median (and fastest) of `--steps` timed steps after `--warmup`. On CPU (`--interleave auto`) the times
come from one more subprocess that builds every variant and takes their steps in turn, so that other work
sharing the cores slows all of them alike; on GPU from the subprocess of each variant. One run.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
from torch import nn

SHAPES = {
    # name: (layers, hidden, intermediate, heads, kv_heads, vocab)
    "tiny": (8, 512, 1376, 8, 4, 4096),
    "llama3-8b": (32, 4096, 14336, 32, 8, 128256),
}


class SplitGatherLinear(nn.Module):
    """The paper's layer: the chosen rows as a trainable Linear, the others as a frozen Linear; both outputs
    concatenated, then gathered back into the original order through an index."""

    def __init__(self, base: nn.Linear, rows: list[int], trainable_dtype: torch.dtype):
        super().__init__()
        chosen = set(rows)
        rest = [i for i in range(base.out_features) if i not in chosen]
        weight = base.weight.detach()
        self.active = nn.Linear(base.in_features, len(rows), bias=False, device=weight.device)
        self.active.weight = nn.Parameter(weight[rows].to(trainable_dtype))
        self.frozen = nn.Linear(base.in_features, len(rest), bias=False, device=weight.device)
        self.frozen.weight = nn.Parameter(weight[rest].clone(), requires_grad=False)
        order = torch.empty(base.out_features, dtype=torch.long)
        order[rows] = torch.arange(len(rows))
        order[rest] = torch.arange(len(rest)) + len(rows)
        self.register_buffer("order", order.to(weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([self.active(x), self.frozen(x)], dim=-1)
        return out.gather(-1, self.order.expand(*out.shape[:-1], -1))


def build_model(args) -> nn.Module:
    import transformers

    layers, hidden, inter, heads, kv_heads, vocab = SHAPES[args.shape]
    if args.layers:
        layers = args.layers
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max(2048, args.seq),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, args.dtype))  # build in the target dtype: no fp32 copy of an 8B
    try:
        with torch.device(args.device):
            model = transformers.AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def selection(model: nn.Module, quota: float) -> dict[int, list[int]]:
    rows, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    k = int(quota * rows // 100)
    gen = torch.Generator().manual_seed(1)
    return {layer: sorted(torch.randperm(rows, generator=gen)[:k].tolist()) for layer in range(n_layers)}


def prepare(model: nn.Module, variant: str, quota: float, args) -> nn.Module:
    if variant == "loki":
        from knowpack.methods.loki.layer import apply_loki

        return apply_loki(model, selection(model, quota))
    if variant == "split":
        for p in model.parameters():
            p.requires_grad_(False)
        for layer, rows in selection(model, quota).items():
            mlp = model.model.layers[layer].mlp
            mlp.down_proj = SplitGatherLinear(mlp.down_proj, rows, torch.float32)
        return model
    if variant == "lora":
        from peft import LoraConfig, get_peft_model

        targets = "all-linear" if args.lora_targets == "all-linear" else ["gate_proj", "up_proj", "down_proj"]
        config = LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank, target_modules=targets)
        return get_peft_model(model, config)  # adapters in float32 (PEFT's autocast_adapter_dtype)
    raise ValueError(variant)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def trainer(args, variant: str, quota: float):
    """Build and prepare one variant; returns (number of trainable parameters, a function running one timed
    training step)."""
    cuda = args.device.startswith("cuda")
    model = prepare(build_model(args), variant, quota, args)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen).to(args.device)
    device_type = args.device.split(":")[0]
    autocast_dtype = getattr(torch, args.dtype)

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device_type, dtype=autocast_dtype, enabled=args.dtype != "float32"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return sum(p.numel() for p in params), step


def measure(args) -> dict:
    """One variant alone in this process: peak memory of its training steps, and their times."""
    cuda = args.device.startswith("cuda")
    trainable, step = trainer(args, args.variant, args.quota)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back, so RSS counts live memory
        before = rss_bytes()
        high_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(args.warmup):
        step()
    times = [step() for _ in range(args.steps)]
    if cuda:
        peak = torch.cuda.max_memory_allocated() - before
    else:
        high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if high <= high_before:  # the steps never passed an earlier high-water mark: no peak to read
            raise SystemExit(f"{args.variant}: RSS peak not reached during the steps; raise --batch or --seq")
        peak = high - before
    return {"trainable": trainable, "peak_bytes": peak, "model_bytes": before, **_times(times)}


def interleaved(args, runs: list[tuple[str, float]]) -> list[dict]:
    """Every variant built in this one process, then their steps taken in turn (variant 1, 2, ..., 1, 2, ...),
    so that whatever else loads the machine slows them alike."""
    steps = [trainer(args, variant, quota)[1] for variant, quota in runs]
    for step in steps:
        for _ in range(args.warmup):
            step()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(args.steps):
        for i, step in enumerate(steps):
            times[i].append(step())
    return [_times(t) for t in times]


def _outputs_copied(x, weight, rows, index):
    """Full matmul, then the chosen outputs overwritten with x rows^T."""
    return torch.nn.functional.linear(x, weight).index_copy(-1, index, torch.nn.functional.linear(x, rows))


def _weight_copied(x, weight, rows, index):
    """Autograd through the weight with the rows substituted (it forms a full weight gradient)."""
    return torch.nn.functional.linear(x, weight.index_copy(0, index, rows))


def forwards(args) -> None:
    """`--forwards`: one down_proj-shaped layer (the shape's hidden x intermediate, batch x seq tokens);
    forward + backward of four ways to train its chosen rows, taken in turn; median and fastest per quota."""
    from functools import partial

    from knowpack.methods.loki.layer import LokiLinear

    _, rows, cols, *_ = SHAPES[args.shape]
    dtype, cuda = getattr(torch, args.dtype), args.device.startswith("cuda")
    torch.manual_seed(0)
    base = nn.Linear(cols, rows, bias=False, device=args.device, dtype=dtype).requires_grad_(False)
    x0 = torch.randn(args.batch * args.seq, cols, device=args.device, dtype=dtype)
    for quota in map(float, args.quotas.split(",")):
        chosen = sorted(torch.randperm(rows)[: int(quota * rows // 100)].tolist())
        ours = LokiLinear(base, chosen)
        same = {"weight": base.weight, "rows": ours.rows, "index": ours.index}  # rows: float32 like ours
        ways = {
            "ours": ours,
            "split": SplitGatherLinear(base, chosen, torch.float32),
            "outputs_copied": partial(_outputs_copied, **same),
            "weight_copied": partial(_weight_copied, **same),
        }
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.warmup + args.steps):
            for name, way in ways.items():
                x = x0.clone().requires_grad_()
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                with torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=args.dtype != "float32"):
                    y = way(x)
                y.float().square().mean().backward()
                if cuda:
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        for name, t in times.items():
            t = [s * 1e3 for s in t[args.warmup :]]
            print(f"q={quota:g} {name:<15} median {statistics.median(t):8.2f} ms, fastest {min(t):8.2f} ms")


def _times(times: list[float]) -> dict:
    return {"step_s": statistics.median(times), "step_min_s": min(times)}


def child(args) -> Any:
    """Run this script again in a subprocess for one variant (or, with `variant == "interleaved"`, all)."""
    common = [  # a flag (store_true) is passed bare when set and left out when not
        f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')}={v}"
        for k, v in vars(args).items()
        if k not in ("out", "variant", "quota") and v is not False and v is not None
    ]
    cmd = [sys.executable, __file__, *common, f"--variant={args.variant}", f"--quota={args.quota}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{args.variant} q={args.quota:g} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=SHAPES, default="tiny")
    parser.add_argument("--layers", type=int, default=0, help="override the shape's number of layers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--quotas", default="10,30", help="LoKI / split quotas q (%% of rows per layer)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-targets", choices=["mlp", "all-linear"], default="mlp")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--interleave",
        choices=["auto", "yes", "no"],
        default="auto",
        help="time all variants in one process, their steps in turn (auto: on CPU, where other work shares "
        "the cores; a GPU of our own needs no such care, and five 8B models would not fit)",
    )
    parser.add_argument("--forwards", action="store_true", help="time four forwards of one layer instead")
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # set in the subprocesses
    parser.add_argument("--quota", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.forwards:
        forwards(args)
        return
    runs = [("lora", 0.0)] + [(v, float(q)) for q in args.quotas.split(",") for v in ("loki", "split")]
    if args.variant == "interleaved":
        print(json.dumps(interleaved(args, runs)))
        return
    if args.variant:
        print(json.dumps(measure(args)))
        return

    load_before = os.getloadavg()[0]
    results = []
    for variant, quota in runs:  # memory (and times) of each variant alone in a fresh process
        args.variant, args.quota = variant, quota
        results.append({"variant": variant, "quota": quota if variant != "lora" else None, **child(args)})
    interleave = args.interleave == "yes" or (args.interleave == "auto" and args.device == "cpu")
    if interleave:
        args.variant = "interleaved"
        for result, times in zip(results, child(args), strict=True):
            result["alone"] = {k: result[k] for k in ("step_s", "step_min_s")}
            result.update(times)
    args.variant, args.quota = None, 0.0
    load = (load_before, os.getloadavg()[0])
    report(results, args, interleave)
    print(f"load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after, on {os.cpu_count()} cores")
    if args.out:
        meta = {"args": vars(args), "torch": torch.__version__, "load_average": load, "cpus": os.cpu_count()}
        with open(args.out, "w") as f:
            json.dump({**meta, "results": results}, f, indent=2)


def report(results: list[dict], args, interleaved: bool) -> None:
    lora = next(r for r in results if r["variant"] == "lora")
    split = {r["quota"]: r for r in results if r["variant"] == "split"}
    layers = args.layers or SHAPES[args.shape][0]
    print(
        f"shape {args.shape} ({layers} layers), {args.device} {args.dtype}, batch {args.batch} x {args.seq}, "
        f"median of {args.steps} steps after {args.warmup}"
        + (", variants interleaved" if interleaved else "")
    )
    header = f"{'variant':<14}{'trainable':>12}{'step ms':>10}{'min ms':>9}{'peak MiB':>10}"
    print(header + "   ratios (median time, memory)")
    for r in results:
        name = r["variant"] + ("" if r["quota"] is None else f" q={r['quota']:g}")
        line = f"{name:<14}{r['trainable']:>12,}{r['step_s'] * 1e3:>10.1f}{r['step_min_s'] * 1e3:>9.1f}"
        line += f"{r['peak_bytes'] / 2**20:>10.1f}"
        ratios = []
        if r["variant"] != "lora":
            ratios.append(f"vs lora {r['step_s'] / lora['step_s']:.2f}x, {_ratio(r, lora)}")
        if r["variant"] == "loki":
            other = split[r["quota"]]
            ratios.append(f"vs split {r['step_s'] / other['step_s']:.2f}x, {_ratio(r, other)}")
        print(line + "   " + "; ".join(ratios))


def _ratio(a: dict, b: dict) -> str:
    return f"{a['peak_bytes'] / b['peak_bytes']:.2f}x"


if __name__ == "__main__":
    main()
