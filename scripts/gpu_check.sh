#!/usr/bin/env bash
# The GPU check: one command, for one CUDA card, meant to fit in 9 minutes on one H100, that writes a
# summary a maintainer can paste (OUT/summary.md):
#   1. python bench.py --device cuda --quick          (the small preset's shapes: MFU, decode, RL step, ...)
#   2. python train.py --config small --stage sft      (the mission's command, stage by stage, each timed)
#   3. python train.py --config small --stage rl       (c_ref calibration, then LaSeR RL)
#   4. python evaluate.py on the LaSeR run            (test split, 16 samples per problem)
#
#   bash scripts/gpu_check.sh [OUT]   # default OUT: out/gpu_check; runs (~240 MB checkpoints) in RUNS=OUT/small
#   TRAIN_FLAGS="--sft_steps 500 --rl_steps 100" bash scripts/gpu_check.sh     # a shorter run
#   BUDGET=540 ...       # seconds for the whole check (default 540): each stage stops in time for the next
#   STAGE_LIMIT=300 ...  # and no stage runs longer than this (default 600)
# A stage that fails or runs out of time is marked in the summary. A stage cut short leaves its last
# checkpoint (RL here saves one every 100 steps), and the next stage starts from it, marked "partial";
# a stage with no checkpoint to start from is skipped. The summary is written whatever happened.
set -uo pipefail
[[ -n ${EPOCHSECONDS:-} ]] || { echo "gpu_check.sh: needs bash >= 5 (EPOCHSECONDS)" >&2; exit 2; }
cd "$(dirname "$0")/.."
OUT=${1:-out/gpu_check}
RUNS=${RUNS:-$OUT/small}
LIMIT=${STAGE_LIMIT:-600}
END=$(( EPOCHSECONDS + ${BUDGET:-540} ))
mkdir -p "$OUT"
rm -rf "$RUNS/sft" "$RUNS/laser" "$OUT/eval" "$OUT/bench.json" "$OUT"/*.log  # nothing of an earlier check
: > "$OUT/times.tsv"
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
stage bench 400 python bench.py --device cuda --quick --out "$OUT/bench.json"
stage sft 220 python train.py --config small --stage sft --out_dir "$RUNS/sft" ${TRAIN_FLAGS:-}
[[ -f $RUNS/sft/ckpt.pt ]] &&
  stage rl 50 python train.py --config small --stage rl --init "$RUNS/sft" --out_dir "$RUNS/laser" \
    --ckpt_every 100 ${TRAIN_FLAGS:-}
[[ -f $RUNS/laser/ckpt.pt ]] &&
  stage evaluate 3 python evaluate.py "$RUNS/laser" --n_samples 16 --out "$OUT/eval"

python - "$OUT" "$RUNS" <<'PY'
import json, os, re, statistics, sys
out, runs = sys.argv[1:]
read = lambda p: open(p).read() if os.path.exists(p) else ""
times = {r[0]: r[1:] for r in (ln.split("\t") for ln in read(f"{out}/times.tsv").splitlines() if ln)}
bench = json.loads(read(f"{out}/bench.json") or "{}")
def streamed(log):  # the metrics a bench cut short had printed (a line cut in the middle is left out)
    for ln in log.splitlines():
        try:
            yield from json.loads(ln[9:]).items() if ln.startswith("[metric] ") else ()
        except ValueError:
            pass
metrics = bench.get("metrics") or dict(streamed(read(f"{out}/bench.log")))
m = bench.get("machine", {})
records = lambda run: [json.loads(x) for x in read(f"{runs}/{run}/metrics.jsonl").splitlines() if x.strip()]
sft, rl = records("sft"), [r for r in records("laser") if r.get("step")]  # step 0: c_ref, eval
planned = lambda run, key: json.loads(read(f"{runs}/{run}/config.json") or "{}").get(key)
calib = re.search(r"c_ref calibrated .*\(([\d.]+)s\)", read(f"{out}/rl.log"))
lines = [f"# GPU check: {m.get('device') or read(f'{out}/gpu.txt').strip() or '?'}, torch {m.get('torch_build', '?')}, "
         f"CUDA {m.get('cuda', '?')}", "", "| stage | wall-clock (s) | status |", "|---|---|---|"]
for name, done, total in (("bench", None, None), ("sft", len(sft), planned("sft", "sft_steps")),
                          ("rl", len(rl), planned("laser", "rl_steps")), ("evaluate", None, None)):
    t, rc, limit = times.get(name, (None, None, None))
    status = ("not run" if rc is None else "skipped (no time left)" if rc == "skipped" else "ok" if rc == "0"
              else f"timed out at {limit} s" if rc == "124" else f"failed (exit {rc})")
    if done is not None and rc is not None:
        status += f", {done}/{total} steps"
    if name == "rl" and rc is not None and times.get("sft", (0, "0"))[1] != "0":
        status += ", partial: from the last checkpoint of an SFT cut short"
    note = f" (c_ref calibration {calib.group(1)} s of it)" if name == "rl" and calib else ""
    lines.append(f"| {name}{note} | {'-' if t is None else t} | {status} |")
if all(times.get(n, (0, "1"))[1] == "0" for n in ("sft", "rl", "evaluate")):
    total = sum(float(times[n][0]) for n in ("sft", "rl", "evaluate"))
    lines.append(f"| **small run: SFT + c_ref + RL + evaluation** | **{total:.1f}** (target <= 360) | |")
lines += ["", "| metric | median | [min, max] | unit | target |", "|---|---|---|---|---|"]
for k, v in metrics.items():
    lines.append(f"| {k} | {v['median']:.4g} | [{v['spread'][0]:.4g}, {v['spread'][1]:.4g}] | {v['unit']} | "
                 f"{v.get('target') or ''} |")
med = lambda rs, k: statistics.median(r[k] for r in rs) if rs else float("nan")
last = lambda rs, k: next((r[k] for r in reversed(rs) if k in r), None)
if sft:
    steady = [r for r in sft if "tokens_per_s" in r and "eval_acc" not in r][1:]  # not the compiling first step
    lines += ["", f"SFT: {len(sft)} steps, real tokens/s {med(steady, 'tokens_per_s'):.4g} (median of the logged "
                  f"intervals after the first), last validation accuracy {last(sft, 'eval_acc')}"]
if rl:
    steady = rl[2:] or rl
    step = statistics.median(r["time_rollout"] + r["time_verify"] + r["time_update"] for r in steady)
    lines += [f"LaSeR RL: {len(rl)} steps, median step {step:.3f} s (rollout {med(steady, 'time_rollout'):.3f}, "
              f"verify {med(steady, 'time_verify'):.3f}, update {med(steady, 'time_update'):.3f}; "
              f"{'steps 3 on' if len(rl) > 2 else 'every step'}), "
              f"c_ref {last(rl, 'c_ref')}, last validation accuracy {last(rl, 'eval_acc')}"]
ev = json.loads(read(f"{out}/eval/eval.json") or "{}")
if ev:
    ev = ev[next(iter(ev))]
    lines += ["", "| test split (evaluate.py, 16 samples) | value |", "|---|---|"]
    for k in ("accuracy_avg", "accuracy_greedy", "maj_at_k", "weighted_at_k", "best_of_k", "sv_f1", "sv_auroc",
              "sv_auroc_within"):
        v = ev.get(k)
        v = v.get("16", v) if isinstance(v, dict) else v  # the @k curves at k = 16
        lines.append(f"| {k}{'@16' if k.endswith('_k') else ''} | {round(v, 4) if isinstance(v, float) else v} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $OUT/summary.md"
