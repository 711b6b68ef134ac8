#!/usr/bin/env bash
# The GPU check: one command, for one CUDA card, meant to fit in 9 minutes on one H100, that writes a
# summary a maintainer can paste (OUT/summary.md):
#   1. python bench.py --device cuda --quick          (the small preset's shapes: MFU, decode, RL step, ...)
#   2. python train.py --config small --stage sft      (the mission's command, stage by stage, each timed)
#   3. python train.py --config small --stage rl       (c_ref calibration, then LaSeR RL)
#   4. python evaluate.py on the LaSeR run            (test split, 16 samples per problem)
#   5. if 150 s are left: python -m pytest -v -k on_cuda   (the tests written for a card, named *_on_cuda:
#      --sft_graphs's capture, the decode loop's graphs of compiled blocks and its lagged check; 90 s at least,
#      and it may leave stages 6 to 8, measured on a card before, no time)
#   6. if 205 s are left: python bench.py --only gpu_attention --quick   (a 512-row decode step's attention,
#      each way there is: the kernels against one another and against one read of the keys and values)
#   7. if 150 s are left: python train.py --config small --stage sft $SFT_ALT_FLAGS   (the SFT stage again
#      with other settings, by default its steps launched op by op instead of replayed from CUDA graphs: the
#      same run up to rounding, its speed and accuracy beside the first's; stopped with 100 s left)
#   8. if 80 s are left: python bench.py --only gpu_sft --quick   (SFT packed or padded, compiled, graphed)
#   9. if 60 s are left: python -m pytest -v   (the test suite on the card, for the time left; TESTS=0: not run)
#
#   bash scripts/gpu_check.sh [OUT]   # default OUT: out/gpu_check; runs (~240 MB checkpoints) in RUNS=OUT/small
#   TRAIN_FLAGS="--sft_steps 500 --rl_steps 100" bash scripts/gpu_check.sh     # a shorter run
#   BUDGET=540 ...       # seconds for the whole check (default 540): each stage stops in time for the next
#   STAGE_LIMIT=300 ...  # and no stage runs longer than this (default 600)
#   BENCH=0 ...          # leave out the bench stage
#   SFT_ALT_FLAGS=...    # stage 7's flags (default: --sft_graphs false; SFT_ALT_FLAGS= : the preset again)
#   COMPARE=1 ...        # also GRPO from the same SFT checkpoint (the two RL stages share the time left), and
#                        # evaluate SFT, GRPO and LaSeR together (paired comparisons): the study on the small
#                        # preset; no bench stage unless BENCH=1 (the two would not fit in one budget)
#   COMPARE=1 bash scripts/gpu_check.sh out/gpu_study   # ~9 min: SFT, LaSeR and GRPO, evaluation
#   REUSE=1 ...          # after a check in the same OUT: only GRPO from its SFT checkpoint, stopped at the step of
#                        # its LaSeR checkpoint (same schedule), then SFT, GRPO and LaSeR evaluated together; the
#                        # summary keeps the first check's stages. Both in one GPU session of 15 minutes:
#                        #   bash scripts/gpu_check.sh out/gpu_check && REUSE=1 BUDGET=300 bash scripts/gpu_check.sh out/gpu_check
# A stage that fails or runs out of time is marked in the summary. A stage cut short (timeout's SIGTERM)
# finishes its step and saves a checkpoint there, and the next stage starts from it, marked "partial";
# a stage with no checkpoint to start from is skipped. The summary is written whatever happened.
set -uo pipefail
case ${1:-} in  # --help: the comment above; the one argument is the output directory
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  -*) echo "gpu_check.sh: unknown option $1: its one argument is OUT, its settings environment variables (see --help)" >&2
      exit 2 ;;
esac
(( $# <= 1 )) || { echo "gpu_check.sh: one argument at most, OUT (see --help)" >&2; exit 2; }
[[ -n ${EPOCHSECONDS:-} ]] || { echo "gpu_check.sh: needs bash >= 5 (EPOCHSECONDS)" >&2; exit 2; }
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
RUNS=${RUNS:-$OUT/small}
LIMIT=${STAGE_LIMIT:-600}
COMPARE=${COMPARE:-0} REUSE=${REUSE:-0}
ALT_FLAGS=${SFT_ALT_FLAGS---sft_graphs false}  # (set and empty: the preset again)
[[ $COMPARE == [01] && $REUSE == [01] ]] || { echo "gpu_check.sh: COMPARE and REUSE must be 0 or 1" >&2; exit 2; }
END=$(( EPOCHSECONDS + ${BUDGET:-540} ))
for run in sft laser; do
  (( REUSE == 0 )) || [[ -f $RUNS/$run/ckpt.pt ]] ||
    { echo "gpu_check.sh: REUSE=1 needs $RUNS/$run/ckpt.pt from an earlier check" >&2; exit 2; }
done
mkdir -p "$OUT"
if (( REUSE )); then  # keep the earlier check's SFT and LaSeR runs, logs and times; redo GRPO and the evaluation
  COMPARE=1
  rm -rf "$RUNS/grpo" "$OUT/eval"
  sed -i '/^grpo\t\|^evaluate\t/d' "$OUT/times.tsv"
else
  # nothing of an earlier check
  rm -rf "$RUNS/sft" "$RUNS/sft_alt" "$RUNS/laser" "$RUNS/grpo" "$OUT/eval" "$OUT"/*.json "$OUT"/*.log
  : > "$OUT/times.tsv"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>/dev/null

stage() {  # stage NAME RESERVE COMMAND...: run for at most min(LIMIT, time left - RESERVE) seconds, log to
  local name=$1 reserve=$2; shift 2  # OUT/NAME.log, append "NAME<TAB>seconds<TAB>rc<TAB>limit" to times.tsv
  local t0=$EPOCHREALTIME rc limit=$(( END - EPOCHSECONDS - reserve ))
  if (( limit < 10 )); then printf '%s\t0\tskipped\t%s\n' "$name" "$limit" >> "$OUT/times.tsv"; return 1; fi
  (( limit > LIMIT )) && limit=$LIMIT
  echo "== $name (at most ${limit}s): $*"
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$(python -c "print(round($EPOCHREALTIME - $t0, 1))")" "$rc" "$limit" \
    >> "$OUT/times.tsv"
  tail -3 "$OUT/$name.log"
}

# shellcheck disable=SC2086
halt=()
if (( REUSE )); then  # GRPO stops where the LaSeR run's checkpoint is, on the same learning-rate schedule
  halt=(--halt_at "$(python -c 'import runs, sys; print(runs.load_checkpoint(sys.argv[1])["step"])' "$RUNS/laser")")
else
  # the bench gets BUDGET - 350 s (190 s at the default): its GPU section took 116.5 s at 5aacde5 with three
  # decode candidates, and has six since (the default again among them); they run last, so a bench cut short
  # loses only them, not the targets' figures before them (the decode's, SFT's, the readout's, the RL step's).
  # 350 s still leave SFT, RL and the evaluation about 130 s more than the whole preset took (6f2a32a: SFT 43 s;
  # 100 RL steps 68 s, 0.28 s a step; evaluation 30 s)
  [[ ${BENCH:-$(( 1 - COMPARE ))} == 0 ]] || stage bench 350 python bench.py --device cuda --quick --out "$OUT/bench.json"
  stage sft $(( COMPARE == 1 ? 400 : 220 )) python train.py --config small --stage sft --out_dir "$RUNS/sft" ${TRAIN_FLAGS:-}
fi
eval_runs=("$RUNS/laser") names=laser
if [[ -f $RUNS/sft/ckpt.pt ]]; then
  # with COMPARE=1 LaSeR gets half of what is left after the evaluation's reserve, GRPO the rest
  (( REUSE )) || stage rl $(( COMPARE == 1 ? (END - EPOCHSECONDS + 80) / 2 : 50 )) python train.py --config small \
    --stage rl --init "$RUNS/sft" --out_dir "$RUNS/laser" --ckpt_every 100 ${TRAIN_FLAGS:-}
  if (( COMPARE == 1 )); then
    stage grpo 80 python train.py --config small --stage rl --algo grpo --init "$RUNS/sft" --out_dir "$RUNS/grpo" \
      --ckpt_every 100 ${TRAIN_FLAGS:-} "${halt[@]}"
    eval_runs=("$RUNS/sft" "$RUNS/grpo" "$RUNS/laser") names=sft,grpo,laser
  fi
fi
[[ -f $RUNS/laser/ckpt.pt && ( $COMPARE == 0 || -f $RUNS/grpo/ckpt.pt ) ]] &&
  stage evaluate 3 python evaluate.py "${eval_runs[@]}" --names "$names" --n_samples 16 --out "$OUT/eval"
# the time left, if it is enough: the tests written for a card, the decode attention's ways, the SFT stage
# again with other settings (SFT_ALT_FLAGS), the SFT step's variants (launched op by op; rows padded; the
# whole model compiled), then the test suite on the card, for what is left (each test's verdict is logged
# as it comes)
# (each threshold leaves the stage about what it took: the card's tests an estimate of 90 s (one took 43 s at
# 6f2a32a; the decode loop's, since, compiles and captures its own decoders), the attention 50 s (46 s), the
# SFT stage again 50 s (51 s, and a stage cut short saves its step). The card's tests come first: they check
# code that has not yet run on a card, where the three stages after them measure again what 6f2a32a measured,
# so they reserve only the test suite's threshold and may leave those no time. Among those three each reserve
# leaves the next one's threshold, so that a stage run to its limit does not skip the next; gpu_sft takes all
# that is left, and the test suite runs only if it ends early)
(( COMPARE || ${TESTS:-1} == 0 || END - EPOCHSECONDS < 150 )) ||
  stage cuda_tests 60 python -m pytest -v -p no:cacheprovider -k on_cuda
(( COMPARE || END - EPOCHSECONDS < 205 )) ||
  stage attention 155 python bench.py --only gpu_attention --quick --out "$OUT/attention.json"
# shellcheck disable=SC2086
(( COMPARE || END - EPOCHSECONDS < 150 )) ||
  stage sft_alt 100 python train.py --config small --stage sft $ALT_FLAGS \
    --out_dir "$RUNS/sft_alt" ${TRAIN_FLAGS:-}
(( COMPARE || END - EPOCHSECONDS < 80 )) ||
  stage gpu_sft 0 python bench.py --only gpu_sft --quick --out "$OUT/gpu_sft.json"
(( COMPARE || ${TESTS:-1} == 0 || END - EPOCHSECONDS < 60 )) ||
  stage tests 0 python -m pytest -v -p no:cacheprovider

# the summary: the stages, the targets, every metric, the tests, the notices, the profiles, the evaluation
python scripts/gpu_summary.py "$OUT" "$RUNS" "$ALT_FLAGS"
echo "wrote $OUT/summary.md"
