#!/usr/bin/env bash
# Every verb on a device, then the benchmarks at the Llama-3.1-8B shape: one line per step with its time and
# exit code. On a GPU machine (one H200: estimated at about 8 minutes before the compiled probe and the prefill
# benchmark were added, which add a few; not yet run there):
#
#     bash scripts/gpu_check.sh                         # --device cuda, bf16, results in $OUT or out/gpu_check
#     bash scripts/gpu_check.sh --device cpu --quick    # the same steps, small, on a CPU (CI runs this)
#     bash scripts/gpu_check.sh --part verbs; bash scripts/gpu_check.sh --part bench   # in two calls
#     bash scripts/gpu_check.sh --only bench-probe,bench-graphs                       # named steps only
#
# `--part verbs` runs the verbs' steps only, `--part bench` the benchmarks only (default: all), e.g. where one
# command may run at most 10 minutes (give each call its own --out or $OUT: a run clears its folder's lines);
# `--only` the steps named (comma-separated). Issue 16's numbers first, where GPU time is short:
#     --only bench-graphs,bench-graphs-organism,bench-kva-many   then   --only bench-probe,bench-compiled
#
# Steps, on the bundled organism: probe, attribute, select, train LoRA / LoKI / full (bf16 weights and bf16
# mixed precision on a GPU), eval with the world benchmarks, a sweep of 2 cells, capacity with max=4, the demo,
# export; then bench/kva.py (one prompt a pass, then prompts batched from free memory), bench/loki_layer.py and
# bench/probe.py (llama-chat: greedy and SliCK with 16 samples; the torch engine eager, with its decode steps
# replayed as CUDA graphs (and the organism so, its answers against eager ones), then compiled), the
# prefill cut by length (bench/prefill.py), then bench/probe.py with vLLM where it imports
# at the llama3-8b shape on a GPU (tiny shapes with --quick). Every verb runs under KNOWPACK_DEVICE_GUARD=1
# (knowpack.devices) unless --no-guard. The steps' lines go to stdout and to DIR/steps.tsv; each step's output
# to DIR/logs/STEP.log; the benchmarks' JSON lines to DIR/bench.jsonl. Exit code: the number of failed steps
# (0: all passed).
set -u

device=cuda
quick=0
guard=1
part=all
only=""
out="${OUT:-out/gpu_check}"
python="${PYTHON:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --no-guard) guard=0; shift ;;
    --part) part="$2"; shift 2 ;;
    --only) only=",$2,"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$part" in all|verbs|bench) ;; *) echo "error: --part must be all, verbs or bench (got $part)" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
[ -n "$python" ] || { [ -x .venv/bin/python ] && python=.venv/bin/python || python=python3; }
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
work="$out/work"
rm -rf "$work" "$out/steps.tsv" "$out/bench.jsonl"
mkdir -p "$work"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
[ "$guard" = 1 ] && export KNOWPACK_DEVICE_GUARD=1

if [ "$device" = cpu ]; then dtype=float32; precision=fp32; else dtype=bfloat16; precision=bf16; fi
if [ "$quick" = 1 ]; then
  limit=12; sample_size=40; n=4; epochs=2; bench_shape=tiny; bench_facts=4; kva_prompts=2; eval_limit=20
else
  limit=60; sample_size=200; n=20; epochs=10; bench_shape=llama3-8b; bench_facts=40; kva_prompts=10; eval_limit=100
fi
kp=("$python" -m knowpack --threads 1)
failed=0
started=$(date +%s)
printf 'gpu_check: device %s, dtype %s, quick %s, guard %s, part %s, %s\n' "$device" "$dtype" "$quick" "$guard" \
  "$part" "$(date -u +%FT%TZ)"
"$python" - <<'EOF' 2>/dev/null | sed 's/^/  /'
import platform, torch, transformers, peft
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"{platform.node()}: torch {torch.__version__}, transformers {transformers.__version__}, "
      f"peft {peft.__version__}, {gpu}")
EOF

step() {  # step NAME COMMAND...: run it, log its output, print "NAME  exit CODE  SECONDS s"
  local name="$1"; shift
  case "$name" in bench-*) [ "$part" = verbs ] && return ;; *) [ "$part" = bench ] && return ;; esac
  [ -n "$only" ] && [ "${only#*,"$name",}" = "$only" ] && return
  local t0 t1 code
  t0=$(date +%s.%N)
  "$@" >"$out/logs/$name.log" 2>&1
  code=$?
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '%-14s exit %-3s %8s s\n' "$name" "$code" "$secs" | tee -a "$out/steps.tsv"
  if [ "$code" != 0 ]; then
    failed=$((failed + 1))
    tail -n 5 "$out/logs/$name.log" | sed 's/^/    | /'
  fi
}

common=(probe.sample_size="$sample_size" probe.samples=0 "mix.n_unknown=$n" "train.epochs=$epochs"
        "model.device=$device" "model.dtype=$dtype" "train.precision=$precision" train.target_reliability=null
        "eval.limit=$eval_limit")

step probe "${kp[@]}" probe --model organism --facts organism --sample-size "$limit" --samples 2 \
  --device "$device" --dtype "$dtype" --out "$work/probe"
step attribute "${kp[@]}" attribute --model organism --prompts world_mc --limit "$limit" \
  --device "$device" --dtype "$dtype" --out "$work/kva"
step select "${kp[@]}" select "$work/kva" --quota 10 --out "$work/selection.json"
step train-lora "${kp[@]}" train configs/organism/lora.yaml "${common[@]}" "probe.out=$work/train-probe" \
  "out=$work/lora"
step train-loki "${kp[@]}" train configs/organism/loki.yaml "${common[@]}" "probe.run=$work/train-probe" \
  "method.positions=$work/selection.json" "out=$work/loki"
step train-full "${kp[@]}" train configs/organism/full.yaml "${common[@]}" "probe.run=$work/train-probe" \
  "out=$work/full"
step eval "${kp[@]}" eval "$work/lora" --device "$device" --limit "$eval_limit"
cat >"$work/sweep.yaml" <<EOF
base: $PWD/configs/organism/lora.yaml
set:
  probe.run: $work/train-probe
  probe.sample_size: $sample_size
  probe.samples: 0
  mix.n_unknown: $n
  train.epochs: $epochs
  model.device: $device
  model.dtype: $dtype
  train.precision: $precision
  train.target_reliability: null
grid:
  mix.seed: [0, 1]
out: $work/sweep
EOF
step sweep "${kp[@]}" sweep "$work/sweep.yaml"
step capacity "${kp[@]}" capacity configs/capacity/organism-lora.yaml max=4 "seeds=[0]" "out=$work/capacity" \
  "probe.sample_size=$sample_size" "model.device=$device" "model.dtype=$dtype" "train.precision=$precision" \
  "train.epochs=$epochs" "limit=$eval_limit"
if [ "$quick" = 1 ]; then
  step demo "${kp[@]}" demo --quick --device "$device" --out "$work/demo"
else
  step demo "${kp[@]}" demo --device "$device" --out "$work/demo"
fi
step export "${kp[@]}" export "$work/lora" --out "$work/export"

unset KNOWPACK_DEVICE_GUARD  # the benchmarks time the real thing
threads=0; together=0; [ "$device" = cpu ] && threads=1 && together=2  # 0: prompts a pass from free memory
step bench-kva "$python" bench/kva.py --shape "$bench_shape" --device "$device" --dtype "$dtype" \
  --prompts "$kva_prompts" --naive-prompts 1 --threads "$threads" --json "$out/bench.jsonl"
step bench-kva-many "$python" bench/kva.py --shape "$bench_shape" --device "$device" --dtype "$dtype" \
  --prompts "$((kva_prompts * 16 / 10))" --naive-prompts 1 --prompts-per-pass "$together" --threads "$threads" \
  --json "$out/bench.jsonl"
step bench-loki "$python" bench/loki_layer.py --shape "$bench_shape" --device "$device" --dtype "$dtype" \
  --steps 3 --warmup 1 --quotas 10 --threads "$threads" --out "$out/bench-loki.json"
step bench-probe "$python" bench/probe.py --setting llama-chat --shape "$bench_shape" --device "$device" \
  --dtype "$dtype" --facts "$bench_facts" --slick-facts "$((bench_facts / 4 > 0 ? bench_facts / 4 : 1))" \
  --threads "$threads" --count-syncs --json "$out/bench.jsonl"
# The same rows with each decode step replayed as a CUDA graph (captured per batch, inside the timed run), then
# the organism so in float32: real weights, whose answers (same_as_eager) must be the eager engine's.
step bench-graphs "$python" bench/probe.py --setting llama-chat --shape "$bench_shape" --device "$device" \
  --dtype "$dtype" --facts "$bench_facts" --slick-facts "$((bench_facts / 4 > 0 ? bench_facts / 4 : 1))" \
  --threads "$threads" --cuda-graphs --count-syncs --json "$out/bench.jsonl"
step bench-graphs-organism "$python" bench/probe.py --setting organism --device "$device" --dtype float32 \
  --facts "$bench_facts" --slick-facts "$((bench_facts / 4 > 0 ? bench_facts / 4 : 1))" --threads "$threads" \
  --cuda-graphs --json "$out/bench.jsonl"
# The same rows with our decode step through torch.compile (the warm-up compiles; the timed run is steady).
step bench-compiled "$python" bench/probe.py --setting llama-chat --shape "$bench_shape" --device "$device" \
  --dtype "$dtype" --facts "$bench_facts" --slick-facts "$((bench_facts / 4 > 0 ? bench_facts / 4 : 1))" \
  --threads "$threads" --compile --json "$out/bench.jsonl"
# The probe's suffix prefill cut by length against one call per batch (greedy; both sides in turn).
step bench-prefill "$python" bench/prefill.py --shape "$bench_shape" --device "$device" --dtype "$dtype" \
  --n "$bench_facts" --rounds 2 --threads "$threads" --json "$out/bench.jsonl"
# vLLM for ours where it imports (else the step says so and passes); the same facts, its own process.
step bench-vllm "$python" bench/probe.py --setting llama-chat --shape "$bench_shape" --device "$device" \
  --dtype "$dtype" --facts "$bench_facts" --slick-facts "$((bench_facts / 4 > 0 ? bench_facts / 4 : 1))" \
  --threads "$threads" --backend vllm --json "$out/bench.jsonl"

printf 'gpu_check: %s failed, %s s in all\n' "$failed" "$(($(date +%s) - started))" | tee -a "$out/steps.tsv"
exit "$failed"
