#!/usr/bin/env bash
# The GPU check: one command, for one CUDA card, meant to fit in 9 minutes on one H100, that writes a
# summary a maintainer can paste (OUT/summary.md):
#   1. python bench.py --device cuda --quick          (the small preset's shapes: MFU, decode, RL step, ...)
#   2. python train.py --config small --stage sft      (the mission's command, stage by stage, each timed)
#   3. python train.py --config small --stage rl       (c_ref calibration, then LaSeR RL)
#   4. python evaluate.py on the LaSeR run            (test split, 16 samples per problem)
#
#   bash scripts/gpu_check.sh [OUT]   # default OUT: out/gpu_check; runs (with ~240 MB checkpoints) in OUT/small
#   TRAIN_FLAGS="--sft_steps 2000 --rl_steps 100" bash scripts/gpu_check.sh    # a shorter run
#   STAGE_LIMIT=300 ...                                # seconds each stage may take (default 600)
# A stage that fails or runs out of time is marked in the summary and the later stages that need it are
# skipped; the summary is written whatever happened.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
LIMIT=${STAGE_LIMIT:-600}
mkdir -p "$OUT"
: > "$OUT/times.tsv"

stage() {  # stage NAME COMMAND...: run under the time limit, log to OUT/NAME.log, "NAME<TAB>seconds<TAB>rc"
  local name=$1; shift
  local t0=$EPOCHREALTIME rc
  echo "== $name: $*"
  timeout "$LIMIT" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$(python -c "print(round($EPOCHREALTIME - $t0, 1))")" "$rc" >> "$OUT/times.tsv"
  tail -3 "$OUT/$name.log"
  return $rc
}

stage bench python bench.py --device cuda --quick --out "$OUT/bench.json"
# shellcheck disable=SC2086
stage sft python train.py --config small --stage sft --out_dir "$OUT/small/sft" ${TRAIN_FLAGS:-} &&
  stage rl python train.py --config small --stage rl --init "$OUT/small/sft" --out_dir "$OUT/small/laser" \
    ${TRAIN_FLAGS:-} &&
  stage evaluate python evaluate.py "$OUT/small/laser" --n_samples 16 --out "$OUT/eval"

python - "$OUT" <<'PY'
import json, os, re, sys
out = sys.argv[1]
read = lambda p: open(os.path.join(out, p)).read() if os.path.exists(os.path.join(out, p)) else ""
times = {n: (float(t), int(rc)) for n, t, rc in (ln.split("\t") for ln in read("times.tsv").splitlines() if ln)}
bench = json.loads(read("bench.json") or "{}")
m = bench.get("machine", {})
calib = re.search(r"c_ref calibrated .*\(([\d.]+)s\)", read("rl.log"))
lines = [f"# GPU check: {m.get('device', '?')}, torch {m.get('torch_build', '?')}, CUDA {m.get('cuda', '?')}", "",
         "| stage | wall-clock (s) | status |", "|---|---|---|"]
for name in ("bench", "sft", "rl", "evaluate"):
    t, rc = times.get(name, (None, None))
    status = "not run" if rc is None else "ok" if rc == 0 else "timed out" if rc == 124 else f"failed (exit {rc})"
    note = f" (c_ref calibration {calib.group(1)} s of it)" if name == "rl" and calib else ""
    lines.append(f"| {name}{note} | {'-' if t is None else t} | {status} |")
if all(times.get(n, (0, 1))[1] == 0 for n in ("sft", "rl", "evaluate")):
    total = sum(times[n][0] for n in ("sft", "rl", "evaluate"))
    lines.append(f"| **small run: SFT + c_ref + RL + evaluation** | **{total:.1f}** (target <= 360) | |")
lines += ["", "| metric | median | [min, max] | unit | target |", "|---|---|---|---|---|"]
for k, v in bench.get("metrics", {}).items():
    lines.append(f"| {k} | {v['median']:.4g} | [{v['spread'][0]:.4g}, {v['spread'][1]:.4g}] | {v['unit']} | "
                 f"{v.get('target') or ''} |")
last_val = lambda text: next((json.loads(x)["eval_acc"] for x in reversed(text.splitlines())
                              if x.strip() and "eval_acc" in json.loads(x)), None)
sft, rl = read("small/sft/metrics.jsonl"), read("small/laser/metrics.jsonl")
if sft:
    lines += ["", f"SFT: {len(sft.splitlines())} steps logged, last validation accuracy {last_val(sft)}"]
if rl:
    lines += [f"LaSeR RL: {len(rl.splitlines()) - 1} steps logged, last validation accuracy {last_val(rl)}"]
ev = json.loads(read("eval/eval.json") or "{}")
if ev:
    ev = ev[next(iter(ev))]
    lines += ["", "| test split (evaluate.py, 16 samples) | value |", "|---|---|"]
    for k in ("accuracy_avg", "accuracy_greedy", "maj_at_k", "weighted_at_k", "best_of_k", "sv_f1", "sv_auroc",
              "sv_auroc_within"):
        v = ev.get(k)
        v = v.get("16", v) if isinstance(v, dict) else v  # the @k curves at k = 16
        lines.append(f"| {k}{'@16' if k.endswith('_k') else ''} | {round(v, 4) if isinstance(v, float) else v} |")
open(os.path.join(out, "summary.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $OUT/summary.md"
