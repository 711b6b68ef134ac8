#!/usr/bin/env bash
# Repeat three torchrun commands like those of tests/test_ddp.py (a full 3-step RL run, a run halted after step
# 1, its resume; test preset, 2 processes, gloo) N times and count the failed runs. This is how the exit race fixed in
# runs.close_distributed was measured (4 of 36 runs died with SIGABRT before the barrier, 0 of 45 after).
#     bash scripts/ddp_exit_loop.sh 15
set -u
[[ ${1:-} != -h && ${1:-} != --help ]] || { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0; }  # --help: the comment above
[[ ${1:-15} =~ ^[1-9][0-9]*$ && $# -le 1 ]] || { echo "ddp_exit_loop.sh: one argument, N >= 1 (see --help)" >&2; exit 2; }
cd "$(dirname "$0")/.."
N=${1:-15}
W=$(mktemp -d)
python train.py --config test --stage sft --out_dir "$W/sft" > /dev/null
fail=0
for i in $(seq 1 "$N"); do
  rm -rf "$W/full" "$W/part"
  for args in "--out_dir $W/full" "--out_dir $W/part --halt_at 1"; do
    python -m torch.distributed.run --standalone --nproc_per_node 2 train.py --config test --stage rl --init "$W/sft" \
      --rl_steps 3 --prompts_per_step 4 $args > /dev/null 2> "$W/err" || { fail=$((fail + 1)); tail -3 "$W/err"; }
  done
  python -m torch.distributed.run --standalone --nproc_per_node 2 train.py --stage rl --resume --out_dir "$W/part" \
    > /dev/null 2> "$W/err" || { fail=$((fail + 1)); tail -3 "$W/err"; }
done
echo "$fail of $((3 * N)) torchrun runs failed"
rm -rf "$W"
