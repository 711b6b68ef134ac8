#!/usr/bin/env bash
# The tiny demo on a CPU, for each seed in $SEEDS: SFT once; GRPO and LaSeR from that same SFT
# checkpoint (same seed, same budget); evaluate all three on the test split with paired differences.
# With several seeds, a summary over seeds (mean ± std, paired differences over seeds) follows.
#
#   bash demo_tiny.sh                                   # seed 0, everything under out/tiny
#   SEEDS="0 1 2" bash demo_tiny.sh                     # three seeds and their summary
#   SEEDS="0 1 2" RESULTS=results/tiny bash demo_tiny.sh   # how the README's results were made (rewrites them)
#   TRAIN_FLAGS="--sft_steps 100 --rl_steps 10" N_PROBLEMS=20 bash demo_tiny.sh   # a try: ~5 min
#
# TRAIN_FLAGS: flags added to each train.py command (its three runs); N_SAMPLES, N_PROBLEMS: evaluate.py's
# --n_samples (16) and --n_problems (150).
# Runs go to $OUT/seed<S>/{sft,grpo,laser} (default out/tiny); reports, plots, each run's
# metrics.jsonl and timing.json to $RESULTS/seed<S> (default $OUT/results), the summary to $RESULTS.
# Run again, a seed's earlier runs are kept (train.py moves them aside: sft.1, grpo.1, laser.1).
set -euo pipefail
[[ ${1:-} != -h && ${1:-} != --help ]] || { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }  # --help: the comment above
(( $# == 0 )) || { echo "demo_tiny.sh: no arguments: its settings are environment variables (see --help)" >&2; exit 2; }
cd "$(dirname "$0")"
OUT=${OUT:-out/tiny}
RESULTS=${RESULTS:-$OUT/results}
SEEDS=${SEEDS:-${SEED:-0}}
N_SAMPLES=${N_SAMPLES:-16}
N_PROBLEMS=${N_PROBLEMS:-150}
read -ra flags <<< "${TRAIN_FLAGS:-}"
declare -A took
run() {  # run NAME CMD...: time one stage
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name: $*"
  "$@"
  took[$name]=$(( $(date +%s) - t0 ))
}
t_all=$(date +%s)
dirs=()
for seed in $SEEDS; do
  out="$OUT/seed$seed"; res="$RESULTS/seed$seed"
  mkdir -p "$res"
  t_start=$(date +%s)
  run sft   python train.py --config tiny --stage sft --seed "$seed" --out_dir "$out/sft" "${flags[@]}"
  run grpo  python train.py --config tiny --stage rl --algo grpo  --seed "$seed" --init "$out/sft" --out_dir "$out/grpo" "${flags[@]}"
  run laser python train.py --config tiny --stage rl --algo laser --seed "$seed" --init "$out/sft" --out_dir "$out/laser" "${flags[@]}"
  run eval  python evaluate.py "$out/sft" "$out/grpo" "$out/laser" --out "$res" \
                --n_samples "$N_SAMPLES" --n_problems "$N_PROBLEMS" --seed 0
  for r in sft grpo laser; do cp "$out/$r/metrics.jsonl" "$res/${r}_metrics.jsonl"; done
  total=$(( $(date +%s) - t_start ))
  printf '{"seed": %s, "sft_s": %s, "grpo_s": %s, "laser_s": %s, "eval_s": %s, "total_s": %s, "nproc": %s}\n' \
    "$seed" "${took[sft]}" "${took[grpo]}" "${took[laser]}" "${took[eval]}" "$total" "$(nproc)" > "$res/timing.json"
  echo "=== seed $seed done in ${total}s: $(cat "$res/timing.json")"
  dirs+=("$res")
done
if [ "${#dirs[@]}" -gt 1 ]; then
  python evaluate.py --aggregate "${dirs[@]}" --out "$RESULTS"
fi
echo "=== all seeds ($SEEDS) done in $(( $(date +%s) - t_all ))s"
