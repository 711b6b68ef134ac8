#!/usr/bin/env bash
# The GPU check: one command, for one CUDA card, that fits in 9 minutes on one H100 and writes a summary a
# maintainer can paste (OUT/summary.md):
#   1. python bench.py --device cuda --quick          (the small preset's shapes: MFU, decode, RL step, ...)
#   2. python train.py --config small --stage sft      (the mission's command, stage by stage, each timed)
#   3. python train.py --config small --stage rl       (c_ref calibration, then LaSeR RL)
#   4. python evaluate.py on the LaSeR run            (test split, 16 samples per problem)
#
#   bash scripts/gpu_check.sh [OUT]      # default OUT: out/gpu_check; extra train.py flags in $TRAIN_FLAGS
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
mkdir -p "$OUT"
: > "$OUT/times.tsv"

timed() {  # timed NAME COMMAND...: run, log to OUT/NAME.log, append "NAME<TAB>seconds" to OUT/times.tsv
  local name=$1; shift
  local t0=$EPOCHREALTIME
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1 || { echo "$name failed; the end of $OUT/$name.log:"; tail -20 "$OUT/$name.log"; exit 1; }
  printf '%s\t%s\n' "$name" "$(python -c "print(round($EPOCHREALTIME - $t0, 1))")" >> "$OUT/times.tsv"
  tail -3 "$OUT/$name.log"
}

timed bench python bench.py --device cuda --quick --out "$OUT/bench.json"
# shellcheck disable=SC2086
timed sft python train.py --config small --stage sft --out_dir "$OUT/small/sft" ${TRAIN_FLAGS:-}
# shellcheck disable=SC2086
timed rl python train.py --config small --stage rl --init "$OUT/small/sft" --out_dir "$OUT/small/laser" ${TRAIN_FLAGS:-}
timed evaluate python evaluate.py "$OUT/small/laser" --n_samples 16 --out "$OUT/eval"

python - "$OUT" <<'PY'
import json, re, sys
out = sys.argv[1]
bench = json.load(open(f"{out}/bench.json"))
times = dict(line.split("\t") for line in open(f"{out}/times.tsv").read().split("\n") if line)
calib = re.search(r"c_ref calibrated .*\(([\d.]+)s\)", open(f"{out}/rl.log").read())
m = bench["machine"]
lines = [f"# GPU check: {m.get('device')}, torch {m.get('torch_build')}, CUDA {m.get('cuda')}", "",
         "| stage | wall-clock (s) |", "|---|---|"]
run = 0.0
for name in ("sft", "rl", "evaluate"):
    run += float(times[name])
    note = f" (c_ref calibration {calib.group(1)} s of it)" if name == "rl" and calib else ""
    lines.append(f"| {name}{note} | {times[name]} |")
lines += [f"| **small run, SFT + c_ref + RL + evaluation** | **{run:.1f}** (target <= 360) |",
          f"| bench.py --device cuda --quick | {times['bench']} |", "",
          "| metric | median | [min, max] | unit | target |", "|---|---|---|---|---|"]
for k, v in bench["metrics"].items():
    lines.append(f"| {k} | {v['median']:.4g} | [{v['spread'][0]:.4g}, {v['spread'][1]:.4g}] | {v['unit']} | {v.get('target') or ''} |")
sft = [json.loads(x) for x in open(f"{out}/small/sft/metrics.jsonl")]
rl = [json.loads(x) for x in open(f"{out}/small/laser/metrics.jsonl")]
ev = json.load(open(f"{out}/eval/eval.json"))
ev = ev[next(iter(ev))]
last_val = lambda rows: next((r["eval_acc"] for r in reversed(rows) if "eval_acc" in r), float("nan"))
lines += ["", f"SFT: {len(sft)} steps, validation accuracy {last_val(sft):.3f}; "
          f"LaSeR RL: {len(rl) - 1} steps, validation accuracy {last_val(rl):.3f}", "",
          "| test split (evaluate.py) | value |", "|---|---|"]
for k in ("accuracy_avg", "accuracy_greedy", "maj_at_k", "weighted_at_k", "best_of_k", "sv_f1", "sv_auroc",
          "sv_auroc_within"):
    v = ev.get(k)
    v = v.get("16", v) if isinstance(v, dict) else v  # the @k metrics at k = 16
    lines.append(f"| {k}{'@16' if k.endswith('_k') else ''} | {round(v, 4) if isinstance(v, float) else v} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $OUT/summary.md"
