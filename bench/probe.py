"""Probe throughput: knowpack's engine against the way the paper's code generates, same facts, same machine.

    .venv/bin/python bench/probe.py                          # both settings, ~8 min on 2 CPU cores
    .venv/bin/python bench/probe.py --setting organism --facts 28 --slick-facts 0   # quick CPU check, ~30 s
    .venv/bin/python bench/probe.py --setting llama-chat --max-new-tokens 8      # answers that end early
    .venv/bin/python bench/probe.py --device cuda --threads 0 --facts 1400 --slick-facts 140   # on a GPU
    python bench/probe.py --setting llama-chat --shape llama3-8b --dtype bfloat16 --device cuda --threads 0
    .venv/bin/python bench/probe.py --setting organism --dtype bfloat16 --facts 28 --slick-facts 0   # bf16
    python bench/probe.py --setting llama-chat --shape llama3-8b --dtype bfloat16 --device cuda --threads 0 \
        --facts 40 --slick-facts 10 --backend vllm       # the same rows with vLLM for ours (where installed)
    .venv/bin/python bench/probe.py --setting organism --facts 28 --slick-facts 7 --compile   # torch.compile
    python bench/probe.py --setting llama-chat --shape llama3-8b --dtype bfloat16 --device cuda --threads 0 \
        --facts 40 --slick-facts 10 --cuda-graphs        # each decode step replayed as a CUDA graph

The standard GPU rows (scripts/gpu_check.sh records them): `--setting llama-chat --shape llama3-8b --dtype
bfloat16 --device cuda --threads 0 --facts 40 --slick-facts 10`, greedy (400 prompts) and SliCK (100 prompts
x 17 generations), once with each backend (one --setting a process with vLLM: it keeps its memory).

Two settings:
- `organism`: the bundled organism with its plain 4-shot prompts ("Question: ...\\nAnswer: ..." blocks).
- `llama-chat`: a random Llama (4 layers, hidden 256, GQA) with the organism's tokenizer plus a Llama 3.1
  style chat template (header tokens, the date lines in the system turn): 4-shot `chat` prompts whose
  shared few-shot prefix is ~210 tokens. Random weights rarely write a line break or an end of turn, so
  answers run to the 32-token limit on both sides: every prompt costs 32 decode steps that no prefix reuse
  saves, which bounds the ratio. `--max-new-tokens 8` on both sides shows answers that end early, as a
  trained chat model's do (answer + end of turn), on the same long prompts.

For each, on the same facts (a seeded sample of the organism's facts, equal per relation and bucket) and the
same prompts (exemplars from all 15,400 facts):
- greedy: 10 prompts x 1 greedy answer per fact. Ours: `knowpack.probe(..., samples=0)`, timed end to end
  (prompts, tokenizing, generating, scoring). Reference: the paper's way, a transformers
  `pipeline("text-generation")` on the full prompt texts, batch_size 128, greedy, max_new_tokens 32, no prefix
  reuse; timed around the pipeline call only. The ratio of facts/second is the number the probe issue asks
  to be >= 5.
- slick: 10 prompts x (1 greedy + 16 samples, temperature 0.5, top-k 40). Ours: `knowpack.probe(...)`;
  reference: the greedy pass above plus a sampling pass (do_sample, num_return_sequences 16, same batch).

`--compile`: ours decodes through `torch.compile` (Engine(compile=True)); the warm-up on 2 facts compiles
(`ours_warmup_s`), and recompilations that the timed run's other shapes need are timed with it.
`--cuda-graphs`: ours replays each decode step as a CUDA graph (Engine(cuda_graphs=True), captured anew for
each batch and after rows leave it, inside the timed run); on a CPU the same steps run eagerly. After the
timed run, ours runs once more without graphs (untimed), and `same_as_eager` counts the facts whose greedy
answers and samples are the same text both ways.

`--backend vllm`: ours is `knowpack.probe(..., backend="vllm")` on a `vllm.LLM` of the same model (the
organism's folder; for llama-chat its config and tokenizer with vLLM's random "dummy" weights, other random
weights than the reference's, so greedy answers are not compared). Where vLLM does not import, it says so
and measures nothing (exit 0). `--batch-size` (torch only) defaults to the engine's: from free memory on a
GPU, 256 rows on a CPU.

`--count-syncs` (on a GPU, torch backend): after the timed runs, ours once more on a tenth of the facts in
torch's sync debug mode, counting the host's waits for the GPU and the Python lines that cause them
(`syncs`, `syncs_per_prompt`, `sync_sites`); on a CPU it does nothing.

Times are wall clock and this process's CPU time (with --threads 1 the CPU time is what the work cost even
where other processes share the cores, as on a busy development machine). It also counts how many greedy
answers are the same text on both sides (the reference pads batches on the left, which may flip a near-tie).
One JSON line per measurement goes to --json if given.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
import random
import time
from functools import partial
from pathlib import Path

import torch
import transformers

import knowpack
from knowpack.errors import KnowpackError
from knowpack.facts.normalize import extract_answer
from knowpack.probe.engine import check_speed
from knowpack.probe.prompts import build_prompts, encode

SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
LLAMA3_TEMPLATE = (  # the shape of Llama 3.1's template: header tokens, the date lines in the system turn
    "<|begin_of_text|>{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{% if m['role'] == 'system' %}"
    "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{% endif %}"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
PAPER = dict(batch_size=128)  # and max_new_tokens 32, --max-new-tokens
SLICK = dict(temperature=0.5, top_k=40, samples=16)


SHAPES = {  # the llama-chat setting's model: a small one for CPUs, Llama-3.1-8B's shape for GPUs
    "tiny": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8),
}  # fmt: skip


def organism(args):
    model, tokenizer = knowpack.load_model("organism", device=args.device, dtype=args.dtype)
    return model, tokenizer, "plain"


def llama_chat(args):
    """A random Llama-3-shaped model (seeded, `--shape`) and the organism's tokenizer with a Llama-3.1-style
    template."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(knowpack.organism_dir())
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL})
    tokenizer.chat_template = LLAMA3_TEMPLATE
    tokenizer.padding_side = "left"
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        **SHAPES[args.shape],
        max_position_embeddings=1024,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|begin_of_text|>"),
        eos_token_id=eot,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    with torch.device(args.device):  # built on the device: an 8B model never passes through CPU memory
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    model.generation_config.eos_token_id = eot
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, "chat"


SETTINGS = {"organism": organism, "llama-chat": llama_chat}


def sample_facts(facts, n: int, seed: int = 0):
    """n facts, spread evenly over (relation, bucket) cells, seeded."""
    cells: dict[tuple, list] = {}
    for f in facts:
        cells.setdefault((f.relation, f.bucket), []).append(f)
    rng = random.Random(seed)
    for cell in cells.values():
        rng.shuffle(cell)
    keys, chosen = sorted(cells), []
    for i in range(n):
        chosen.append(cells[keys[i % len(keys)]][i // len(keys)])
    return chosen


def reference(pipe, texts: list[str], fmt: str, max_new_tokens: int, *, sample: bool) -> list[list[str]]:
    """The paper's way: the pipeline on the full texts; answers cut as the probe's records cut them."""
    kwargs = dict(PAPER, max_new_tokens=max_new_tokens, return_full_text=False)
    kwargs.update(add_special_tokens=(fmt == "plain"))  # the same token ids as ours (a chat text has its BOS)
    if sample:
        kwargs.update(
            do_sample=True,
            temperature=SLICK["temperature"],
            top_k=SLICK["top_k"],
            num_return_sequences=SLICK["samples"],
        )
    else:
        kwargs.update(do_sample=False)
    outputs = pipe(texts, **kwargs)
    return [[extract_answer(o["generated_text"]) for o in out] for out in outputs]


def ours(model, tokenizer, facts, pool, fmt: str, samples: int, args, **engine):
    """knowpack's probe; `model` a transformers model, or a `vllm.LLM` with --backend vllm; `engine`
    overrides the torch engine's settings from `args`."""
    settings = dict(SLICK, samples=samples, max_new_tokens=args.max_new_tokens, backend=args.backend)
    if args.backend == "torch":
        settings.update(batch_size=args.batch_size, compile=args.compile, cuda_graphs=args.cuda_graphs)
        settings.update(engine)
    return knowpack.probe(model, tokenizer, facts, exemplars=pool, fmt=fmt, **settings)


def vllm_model(name: str, model, tokenizer, args):
    """A `vllm.LLM` of the setting's model: the organism's folder, or for llama-chat its config and
    tokenizer with vLLM's dummy (random) weights, so that an 8B model is never written to disk."""
    import tempfile

    import vllm

    if name == "organism":
        source, load_format = str(knowpack.organism_dir()), "safetensors"
    else:
        source, load_format = tempfile.mkdtemp(prefix="bench-probe-"), "dummy"
        model.config.save_pretrained(source)
        model.generation_config.save_pretrained(source)
        tokenizer.save_pretrained(source)
    return vllm.LLM(
        model=source, tokenizer=source, dtype=args.dtype, seed=0, enable_prefix_caching=True,
        load_format=load_format, gpu_memory_utilization=args.vllm_memory,
    )  # fmt: skip


def count_syncs(run) -> tuple[int, collections.Counter]:
    """How often `run()` makes the host wait for the GPU (torch's sync debug mode, "warn"), and where: the
    Python file and line of each (torch warns from the calling line). Slows the run: not timed."""
    import warnings

    sites: collections.Counter = collections.Counter()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            sites[f"{Path(w.filename).name}:{w.lineno}"] += 1
    return sum(sites.values()), sites


def measure(name: str, args, pool, emit) -> None:
    model, tokenizer, fmt = SETTINGS[name](args)
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer, device=model.device)
    engine = vllm_model(name, model, tokenizer, args) if args.backend == "vllm" else model
    compared = args.backend == "torch" or name == "organism"  # the same weights on both sides
    for mode, n in (("greedy", args.facts), ("slick", args.slick_facts)):
        if n == 0:
            continue
        facts = sample_facts(pool, n)
        prompts = build_prompts(facts, tokenizer, n_prompts=10, shots=4, fmt=fmt, exemplars=pool)
        texts = [p.text for row in prompts for p in row]
        prefix = [len(encode(tokenizer, p.prefix, fmt)) for row in prompts for p in row]
        full = [len(encode(tokenizer, t, fmt)) for t in texts]
        samples = SLICK["samples"] if mode == "slick" else 0
        start = time.perf_counter()
        ours(engine, tokenizer, facts[:2], pool, fmt, samples, args)  # warm-up (and compilation), both sides
        warmup_s = time.perf_counter() - start
        reference(pipe, texts[:2], fmt, args.max_new_tokens, sample=False)

        start, cpu = time.perf_counter(), time.process_time()
        records = ours(engine, tokenizer, facts, pool, fmt, samples, args)
        ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        ref_greedy = reference(pipe, texts, fmt, args.max_new_tokens, sample=False)
        if mode == "slick":
            reference(pipe, texts, fmt, args.max_new_tokens, sample=True)
        ref_s, ref_cpu = time.perf_counter() - start, time.process_time() - cpu

        ours_greedy = [g for r in records for g in r["greedy"]]
        if args.cuda_graphs:
            eager = ours(engine, tokenizer, facts, pool, fmt, samples, args, cuda_graphs=False)
            same_as_eager = sum(
                (a["greedy"], a.get("samples")) == (b["greedy"], b.get("samples"))
                for a, b in zip(records, eager, strict=True)
            )
        same = sum(a == b[0] for a, b in zip(ours_greedy, ref_greedy, strict=True))
        emit(
            setting=name,
            backend=args.backend,
            compile=args.compile,
            cuda_graphs=args.cuda_graphs,
            dtype=args.dtype,
            mode=mode,
            max_new_tokens=args.max_new_tokens,
            facts=n,
            prompts=len(texts),
            generations=len(texts) * (1 + samples),
            prefix_tokens=round(sum(prefix) / len(prefix), 1),
            prompt_tokens=round(sum(full) / len(full), 1),
            ours_warmup_s=round(warmup_s, 2),
            ours_s=round(ours_s, 2),
            reference_s=round(ref_s, 2),
            ours_facts_per_s=round(n / ours_s, 2),
            reference_facts_per_s=round(n / ref_s, 2),
            speedup=round(ref_s / ours_s, 2),
            ours_cpu_s=round(ours_cpu, 2),
            reference_cpu_s=round(ref_cpu, 2),
            speedup_cpu=round(ref_cpu / ours_cpu, 2),
            greedy_same=f"{same}/{len(texts)}" if compared else "n/a (other weights)",
            **({"same_as_eager": f"{same_as_eager}/{len(records)} facts"} if args.cuda_graphs else {}),
        )
        if args.count_syncs and model.device.type == "cuda" and args.backend == "torch":
            few = facts[: max(1, n // 10)]
            total, where = count_syncs(partial(ours, engine, tokenizer, few, pool, fmt, samples, args))
            emit(
                setting=name,
                mode=mode,
                sync_facts=len(few),
                syncs=total,
                syncs_per_prompt=round(total / len(few) / 10, 1),
                sync_sites="; ".join(f"{site} x{k}" for site, k in where.most_common(6)),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=[*SETTINGS, "all"], default="all")
    parser.add_argument("--facts", type=int, default=140, help="facts for greedy-only (0: skip)")
    parser.add_argument("--slick-facts", type=int, default=7, help="facts for the SliCK setting (0: skip)")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="our engine's rows at once (default: the engine's)"
    )
    parser.add_argument("--backend", choices=["torch", "vllm"], default="torch", help="our probe's backend")
    parser.add_argument(
        "--compile", action="store_true", help="our decode step through torch.compile (torch backend)"
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="our decode steps replayed as CUDA graphs (torch backend)"
    )
    parser.add_argument(
        "--vllm-memory", type=float, default=0.5, help="vLLM's gpu_memory_utilization (the reference's model "
        "shares the GPU)",
    )  # fmt: skip
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=32,
        help="longest answer, both sides (32: the paper's; a smaller cap mimics answers that end early)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="llama-chat's model shape")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on CPU (0: torch's default); 1 is steadiest where other work shares the cores",
    )
    parser.add_argument("--json", help="append one JSON line per measurement to this file")
    parser.add_argument(
        "--count-syncs",
        action="store_true",
        help="on a GPU, count ours' host-device waits and where they are (untimed, a tenth of the facts)",
    )
    args = parser.parse_args()
    try:
        check_speed(args.backend, compile=args.compile, cuda_graphs=args.cuda_graphs)
    except KnowpackError as error:
        parser.error(str(error))
    if args.backend == "vllm" and not _vllm_imports():
        print(
            "vLLM is not installed here: no --backend vllm rows (pip install 'knowpack[vllm]' where a GPU is)"
        )
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, {args.device}"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {machine}")
    pool = knowpack.load_facts("organism")

    def emit(**row):
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({**row, "machine": machine}) + "\n")

    for name in SETTINGS if args.setting == "all" else [args.setting]:
        measure(name, args, pool, emit)


def _vllm_imports() -> bool:
    try:
        import vllm  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
