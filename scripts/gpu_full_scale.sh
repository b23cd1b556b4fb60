#!/usr/bin/env bash
# Full-scale runs of the embedded model on one GPU, in one call (the lent H100 gives a session 15 minutes).
#
#   bash scripts/gpu_full_scale.sh WORK_DIR [PACK.tgz]   # DEADLINE=500 (seconds) by default
#   SMOKE=1 DEADLINE=1200 bash scripts/gpu_full_scale.sh /tmp/smoke   # tiny sizes, to test the script on a CPU
#
# 1. benchmarks, alone on the machine: the SafeEdit harness (batched across records vs one record at a time)
#    and DINM's fast path vs the full forward at layers 8/15/22/28;
# 2. in parallel, each in its own process:
#    A1/A2  LLM2LLM on GSM8K, 1 % seeds (74), up to 5 rounds, the 1,000 test problems of the offline data (the hub has 1,319), 10 epochs (not the reference's 3: a 135M student);
#           A1 one teacher reply per wrong seed (+ zero-shot), A2 three;
#    B1/B2  safeedit-eval vanilla and DINM on the 7 official sample records (256 new tokens) and on the
#           30 built test records (128 new tokens), KQA/Csum on 1,000/200 items after the first 3 edits
#           (each DINM record is logged as it finishes, so a stopped run keeps what it did);
#    C1/C2  a DINM sweep of edit strength (lr) and KL weight on the first 20 built **validation** records (tuned on validation, reported on test).
# At DEADLINE every job still running is stopped (LLM2LLM and the sweep keep what they finished: both
# resume), and WORK_DIR/results and WORK_DIR/logs are packed into PACK (default WORK_DIR/gpu_results.tgz).
# The model is loaded in float32 (HELPERS_DTYPE) so the numbers compare with the CPU runs.
set -u
OUT=${1:?usage: gpu_full_scale.sh WORK_DIR [PACK.tgz]}
PACK=${2:-$OUT/gpu_results.tgz}
DEADLINE=${DEADLINE:-500}
SMOKE=${SMOKE:-0}
R="$OUT/results"
L="$OUT/logs"
mkdir -p "$R" "$L"
START=$(date +%s)
export HELPERS_DTYPE=${HELPERS_DTYPE:-float32} PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
stamp() { echo "[$(( $(date +%s) - START ))s] $*"; }

if [ "$SMOKE" = 1 ]; then  # sizes that run in minutes on a 2-core CPU
  SEEDS=6; ITER=2; TEST="--test-size 8"; EPOCHS=1; EVB=16; NEWTOK="--max-new-tokens 24"
  SAMPLE_TOK=16; BUILT_TOK=16; BUILT_LIMIT="--limit 3"; SAMPLE_LIMIT="--limit 2"; GEN_LIMIT="kqa=8,csum=2"
  GEN_INST=1; SWEEP_TOK=8; SWEEP_LIMIT=2; BENCH_RECORDS=2; BENCH_LAYERS=15; BENCH_TOK=8
else
  SEEDS=74; ITER=5; TEST=""; EPOCHS=10; EVB=512; NEWTOK=""
  SAMPLE_TOK=256; BUILT_TOK=128; BUILT_LIMIT=""; SAMPLE_LIMIT=""; GEN_LIMIT="kqa=1000,csum=200"
  GEN_INST=3; SWEEP_TOK=64; SWEEP_LIMIT=20; BENCH_RECORDS=7; BENCH_LAYERS=8,15,22,28; BENCH_TOK=32
fi

stamp "setup"
{ nvidia-smi -L 2>/dev/null; $PY -m helpers info; } > "$L/info.txt" 2>&1
$PY -m helpers prepare-model > "$L/prepare.txt" 2>&1 || { stamp "prepare-model failed"; tail -20 "$L/prepare.txt"; }
stamp "model ready"

# 1. Benchmarks, nothing else running.
$PY benchmarks/bench_harness.py --records $BENCH_RECORDS --max-new-tokens $BENCH_TOK --batch-size 64 \
  > "$R/bench_harness_gpu.txt" 2>&1
stamp "harness benchmark done"
DEVICE=$($PY -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
$PY benchmarks/bench_dinm.py --device $DEVICE --layers $BENCH_LAYERS --repeats 3 --no-memory \
  --out "$R/bench_dinm_gpu.json" > "$R/bench_dinm_gpu.txt" 2>&1
stamp "DINM benchmark done"

# 2. The long jobs, in parallel.
pids=()
run() {  # run NAME COMMAND...: in the background, output to logs/NAME.txt
  local name=$1; shift
  ( "$@" > "$L/$name.txt" 2>&1; echo "exit $?" >> "$L/$name.txt" ) &
  pids+=($!)
}
LL="$PY -m helpers llm2llm --dataset gsm8k --seed-size $SEEDS --iterations $ITER $TEST --epochs $EPOCHS --lr 5e-5
    --batch-size 8 --eval-batch-size $EVB $NEWTOK --no-progress"
run A1 $LL --zero-shot --out "$R/llm2llm_gsm8k_gpu_pw1"
run A2 $LL --per-wrong 3 --out "$R/llm2llm_gsm8k_gpu_pw3"
EV="$PY -m helpers safeedit-eval --general kqa,csum --general-limit $GEN_LIMIT"
run B1 bash -c "$EV --data sample $SAMPLE_LIMIT --method vanilla --max-new-tokens $SAMPLE_TOK --out $R/safeedit_sample7_vanilla_gpu.json &&
  $EV --data sample $SAMPLE_LIMIT --method dinm --max-new-tokens $SAMPLE_TOK --general-instances $GEN_INST --out $R/safeedit_sample7_dinm_gpu.json"
run B2 bash -c "$EV --data built --split test $BUILT_LIMIT --method vanilla --max-new-tokens $BUILT_TOK --out $R/safeedit_built_test_vanilla_gpu.json &&
  $EV --data built --split test $BUILT_LIMIT --method dinm --max-new-tokens $BUILT_TOK --general-instances $GEN_INST --out $R/safeedit_built_test_dinm_gpu.json"
SW="$PY -m helpers dinm-sweep --data built --split validation --limit $SWEEP_LIMIT --max-new-tokens $SWEEP_TOK --grid none
    --general kqa,csum --general-limit $GEN_LIMIT"
run C1 $SW --config '{"lr": 0.001, "kl_weight": 10}' --config '{"lr": 0.005, "kl_weight": 10}' \
  --log "$R/dinm_sweep_gpu_a.jsonl" --out "$R/dinm_sweep_gpu_a.json"
run C2 $SW --no-vanilla --config '{"lr": 0.002, "kl_weight": 10}' --config '{"lr": 0.005, "kl_weight": 30}' \
  --config '{"lr": 0.01, "kl_weight": 10}' --log "$R/dinm_sweep_gpu_b.jsonl" --out "$R/dinm_sweep_gpu_b.json"
stamp "started ${#pids[@]} jobs"

while :; do
  running=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && running=$((running + 1)); done
  [ "$running" = 0 ] && { stamp "all jobs finished"; break; }
  if [ $(( $(date +%s) - START )) -ge "$DEADLINE" ]; then
    stamp "deadline: stopping $running jobs"
    pkill -TERM -f "helpers( llm2llm| safeedit-eval|\.dinm)" 2>/dev/null
    sleep 3
    pkill -KILL -f "helpers( llm2llm| safeedit-eval|\.dinm)" 2>/dev/null
    break
  fi
  sleep 5
done
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > "$L/gpu_end.txt" 2>&1
for f in "$L"/*.txt; do echo "== $f"; tail -4 "$f"; done
tar -czf "$PACK" -C "$OUT" results logs
stamp "packed $(du -h "$PACK" | cut -f1)"
