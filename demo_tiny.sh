#!/usr/bin/env bash
# The tiny demo on a CPU: SFT once; GRPO and LaSeR from that same SFT checkpoint (same seed, same
# budget); evaluate all three. Run outputs go to $OUT (default out/tiny); the report, the plots and
# each run's metrics.jsonl go to $RESULTS (default results/tiny). Stage wall-clock times are printed
# and saved in $RESULTS/timing.json.
set -euo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-out/tiny}
RESULTS=${RESULTS:-results/tiny}
SEED=${SEED:-0}
N_SAMPLES=${N_SAMPLES:-16}
N_PROBLEMS=${N_PROBLEMS:-150}
mkdir -p "$RESULTS"
declare -A took
run() {  # run NAME CMD...: time one stage
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name: $*"
  "$@"
  took[$name]=$(( $(date +%s) - t0 ))
}
t_start=$(date +%s)
run sft   python train.py --config tiny --stage sft --seed "$SEED" --out_dir "$OUT/sft"
run grpo  python train.py --config tiny --stage rl --algo grpo  --seed "$SEED" --init "$OUT/sft" --out_dir "$OUT/grpo"
run laser python train.py --config tiny --stage rl --algo laser --seed "$SEED" --init "$OUT/sft" --out_dir "$OUT/laser"
run eval  python evaluate.py "$OUT/sft" "$OUT/grpo" "$OUT/laser" --out "$RESULTS" \
              --n-samples "$N_SAMPLES" --n-problems "$N_PROBLEMS" --seed "$SEED"
for r in sft grpo laser; do cp "$OUT/$r/metrics.jsonl" "$RESULTS/${r}_metrics.jsonl"; done
total=$(( $(date +%s) - t_start ))
printf '{"seed": %s, "sft_s": %s, "grpo_s": %s, "laser_s": %s, "eval_s": %s, "total_s": %s, "nproc": %s}\n' \
  "$SEED" "${took[sft]}" "${took[grpo]}" "${took[laser]}" "${took[eval]}" "$total" "$(nproc)" > "$RESULTS/timing.json"
echo "=== done in ${total}s: $(cat "$RESULTS/timing.json")"
