"""The summary of a GPU check, as scripts/gpu_check.sh writes it at its end (OUT/summary.md):

    python scripts/gpu_summary.py OUT [RUNS] [SFT_ALT_FLAGS]     # RUNS: default OUT/small

It reads what the check left: OUT/times.tsv (each stage's seconds, exit code and limit), bench.json (or the
metrics bench.log printed before the bench was cut short), gpu_sft.json, attention.json, the stages' logs,
eval/eval.json, and RUNS/{sft,sft_alt,laser,grpo}/{metrics.jsonl,config.json}. In order: the targets of
issue 11 (set on one H100), each with what this check measured, and the decode at 512 rows against every
other decode timed beside it in the same process; the stages and their times; every metric; the training
loops' speeds; the tests' verdicts; the logs' notices; the profiles; the evaluation.
"""
import json
import os
import re
import statistics
import sys

DECODE = "gpu.decode_tokens_per_s.512"


def read(path: str) -> str:
    return open(path, encoding="utf-8").read() if os.path.exists(path) else ""


def streamed(log: str):
    """The metrics a bench cut short had printed (a line cut in the middle is left out)."""
    for ln in log.splitlines():
        try:
            yield from json.loads(ln[9:]).items() if ln.startswith("[metric] ") else ()
        except ValueError:
            pass


def median(rs, k) -> float:
    return statistics.median(r[k] for r in rs) if rs else float("nan")


def sft_speed(recs) -> float:
    """Real tokens/s of an SFT run: the median of its logged intervals after the first (which compiles),
    those with a validation left out."""
    return median([r for r in recs if "tokens_per_s" in r and "eval_acc" not in r][1:], "tokens_per_s")


def rl_step(recs) -> tuple[float, list]:
    """The median RL step (rollout + verify + update) from the third step on (every step if fewer), and
    those steps."""
    steady = recs[2:] or recs
    return statistics.median(r["time_rollout"] + r["time_verify"] + r["time_update"] for r in steady), steady


def whole_run_s(times: dict) -> float | None:
    """Seconds of the small run, SFT + c_ref + RL + evaluation (times.tsv's stages), if all three finished."""
    if all(times.get(n, (0, "1"))[1] == "0" for n in ("sft", "rl", "evaluate")):
        return sum(float(times[n][0]) for n in ("sft", "rl", "evaluate"))
    return None


def targets(metrics: dict, times: dict, sft: list, rl: list, preset: dict, device: str = "") -> list[str]:
    """Issue 11's targets, each with what was measured and whether it holds ("not measured" where the check
    has no figure for it), then the decodes at 512 rows, fastest first, against the default's tokens/s. A
    `device` named and not an H100 (the pool that lends this project cards lends H200s) is said under the
    heading: a verdict there is that card's, not the targets' own."""
    value = lambda k: metrics[k]["median"] if k in metrics and metrics[k]["median"] == metrics[k]["median"] else None
    verdict = lambda ok: "not measured" if ok is None else "met" if ok else "missed"
    rows = []
    total = whole_run_s(times)
    if total is not None:
        ran = f"SFT {len(sft)} of the preset's {preset['sft_steps']} steps, RL {len(rl)} of {preset['rl_steps']}" + (
            "; GRPO not counted, the evaluation of three runs counted" if "grpo" in times else "")
        whole = len(sft) == preset["sft_steps"] and len(rl) == preset["rl_steps"]
        rows.append(("whole small run <= 360 s", f"{total:.1f} s ({ran})",
                     verdict(total <= 360) + ("" if whole else ", for a shortened run")))
    else:
        rows.append(("whole small run <= 360 s", "SFT, RL and the evaluation did not all finish", "not measured"))
    loop, bench_sft, mfu = sft_speed(sft), value("gpu.sft_real_tokens_per_s"), value("gpu.sft_mfu")
    loop = loop if loop == loop else None  # (NaN: no steady interval logged)
    said = [f"the training loop {loop / 1e6:.3f}M" if loop is not None else "",
            f"the benchmark {bench_sft / 1e6:.3f}M" if bench_sft is not None else ""]
    figures = [x for x in (loop, bench_sft) if x is not None]
    rows.append(("SFT >= 1M real tokens/s", ", ".join(s for s in said if s) or "-",
                 verdict(min(figures) >= 1e6 if figures else None)))
    rows.append(("SFT MFU >= 15%", "-" if mfu is None else f"{mfu:.1%} (the benchmark)",
                 verdict(None if mfu is None else mfu >= 0.15)))
    decode = value(DECODE)
    rows.append(("decode >= 500k tokens/s at 512 rows", "-" if decode is None else f"{decode / 1e3:.1f}k",
                 verdict(None if decode is None else decode >= 5e5)))
    step, worst = rl_step(rl)[0] if rl else None, value("gpu.rl_step_s")
    said = [f"the run's median {step:.3f} s" if step is not None else "",
            f"the benchmark's (every row all its tokens) {worst:.3f} s" if worst is not None else ""]
    rows.append(("steady RL step <= 0.5 s", ", ".join(s for s in said if s) or "-",
                 verdict(None if step is None and worst is None else (step if step is not None else worst) <= 0.5)
                 + (" in the run" if step is not None and worst is not None and worst > 0.5 >= step else "")))
    readout = value("gpu.self_reward_overhead")
    rows.append(("in-pass z_c readout <= 1.02x", "-" if readout is None else f"{readout:.3f}x",
                 verdict(None if readout is None else readout <= 1.02)))
    other_card = [f"Measured on {device}, not an H100: each verdict below is this card's; report its figures as "
                  "this card's, not as the targets met or missed.", ""] if device and "H100" not in device else []
    lines = ["", "## Targets (issue 11, set on one H100)", "", *other_card, "| target | measured | status |",
             "|---|---|---|", *(f"| {t} | {m} | {s} |" for t, m, s in rows)]
    others = {k[len(DECODE):]: v["median"] for k, v in metrics.items() if k.startswith(DECODE + ".")}
    if decode is not None and others:
        # against the default timed again beside the other decodes, where it was (.default_again), else its figure
        against = ".default_again" if ".default_again" in others else "(default)"
        ref = others.get(against, decode)
        share = lambda tail: metrics.get(f"gpu.decode_cudnn_attention_share.512{tail}", {}).get("median")
        lines += ["", "Decodes at 512 rows, each timed in the same process (tokens/s; cuDNN's share of the "
                      "attention's device time where profiled):", "", f"| decode | tokens/s | against {against} "
                      "| cuDNN share |", "|---|---|---|---|"]
        for tail, v in sorted({"(default)": decode, **others}.items(), key=lambda kv: -kv[1]):
            s = share("" if tail == "(default)" else tail)
            lines.append(f"| {tail} | {v / 1e3:.1f}k | {v / ref:.3f}x | {'-' if s is None else f'{s:.2f}'} |")
    return lines


def summary(out: str, runs: str, alt_flags: str) -> list[str]:
    times = {r[0]: r[1:] for r in (ln.split("\t") for ln in read(f"{out}/times.tsv").splitlines() if ln)}
    bench = json.loads(read(f"{out}/bench.json") or "{}")
    metrics = bench.get("metrics") or dict(streamed(read(f"{out}/bench.log")))
    variants = (json.loads(read(f"{out}/gpu_sft.json") or "{}").get("metrics")
                or dict(streamed(read(f"{out}/gpu_sft.log"))))
    metrics.update({f"{k} (gpu_sft)": v for k, v in variants.items()})
    attention = json.loads(read(f"{out}/attention.json") or "{}").get("metrics")
    metrics.update(attention or dict(streamed(read(f"{out}/attention.log"))))
    m = bench.get("machine", {})
    records = lambda run: [json.loads(x) for x in read(f"{runs}/{run}/metrics.jsonl").splitlines() if x.strip()]
    sft, sft_alt = records("sft"), records("sft_alt")
    rl, grpo = ([r for r in records(run) if r.get("step")] for run in ("laser", "grpo"))  # step 0: c_ref, eval
    planned = lambda run, key: json.loads(read(f"{runs}/{run}/config.json") or "{}").get(key)
    calib = re.search(r"c_ref calibrated .*\(([\d.]+)s\)", read(f"{out}/rl.log"))
    try:  # the preset's own step counts (a check may have run fewer)
        from config import PRESETS
        preset = PRESETS["small"]
    except Exception as e:  # noqa: BLE001 (the summary is written whatever happened)
        print(f"note: the small preset's step counts are unknown here ({type(e).__name__}: {e})", file=sys.stderr)
        preset = {"sft_steps": "?", "rl_steps": "?"}
    device = m.get("device") or read(f"{out}/gpu.txt").strip()
    lines = [f"# GPU check: {device or '?'}, torch {m.get('torch_build', '?')}, CUDA {m.get('cuda', '?')}",
             *targets(metrics, times, sft, rl, preset, device), "", "| stage | wall-clock (s) | status |",
             "|---|---|---|"]
    for name, done, total in (("bench", None, None), ("sft", len(sft), planned("sft", "sft_steps")),
                              ("rl", len(rl), planned("laser", "rl_steps")),
                              ("grpo", len(grpo), planned("grpo", "rl_steps")), ("evaluate", None, None),
                              ("cuda_tests", None, None), ("attention", None, None),
                              ("sft_alt", len(sft_alt), planned("sft_alt", "sft_steps")), ("gpu_sft", None, None),
                              ("tests", None, None)):
        t, rc, limit = times.get(name, (None, None, None))
        status = ("not run" if rc is None else "skipped (no time left)" if rc == "skipped" else "ok" if rc == "0"
                  else f"timed out at {limit} s" if rc == "124" else f"failed (exit {rc})")
        if done is not None and rc is not None:
            status += f", {done}/{total} steps"
        if name in ("rl", "grpo") and rc is not None and times.get("sft", (0, "0"))[1] != "0":
            status += ", partial: from the last checkpoint of an SFT cut short"
        note = f" (c_ref calibration {calib.group(1)} s of it)" if name == "rl" and calib else ""
        lines.append(f"| {name}{note} | {'-' if t is None else t} | {status} |")
    total = whole_run_s(times)
    if total is not None:
        also = " (GRPO not counted; evaluation of three runs)" if "grpo" in times else ""
        lines.append(f"| **small run: SFT + c_ref + RL + evaluation**{also} | **{total:.1f}** (target <= 360) | |")
    lines += ["", "| metric | median | [min, max] | unit | target |", "|---|---|---|---|---|"]
    for k, v in metrics.items():
        lines.append(f"| {k} | {v['median']:.4g} | [{v['spread'][0]:.4g}, {v['spread'][1]:.4g}] | {v['unit']} | "
                     f"{v.get('target') or ''} |")
    last = lambda rs, k: next((r[k] for r in reversed(rs) if k in r), None)
    lines += [""] if sft or sft_alt else []
    for label, recs in ((f"SFT (batch {planned('sft', 'sft_batch_size')})", sft),
                        (f"SFT {alt_flags or '(the preset again)'} (batch {planned('sft_alt', 'sft_batch_size')})",
                         sft_alt)):
        lines += [f"{label}: {len(recs)} steps, real tokens/s {sft_speed(recs):.4g} (median of the logged "
                  f"intervals after the first), last validation accuracy {last(recs, 'eval_acc')}"] if recs else []
    for label, recs in (("LaSeR RL", rl), ("GRPO RL", grpo)):
        if not recs:
            continue
        step, steady = rl_step(recs)
        lines += [f"{label}: {len(recs)} steps, median step {step:.3f} s "
                  f"(rollout {median(steady, 'time_rollout'):.3f}, "
                  f"verify {median(steady, 'time_verify'):.3f}, update {median(steady, 'time_update'):.3f}; "
                  f"{'steps 3 on' if len(recs) > 2 else 'every step'}), "
                  f"c_ref {last(recs, 'c_ref')}, last validation accuracy {last(recs, 'eval_acc')}"]
    for log, label in (("cuda_tests", "Tests for a card (-k on_cuda)"), ("tests", "Tests on the card")):
        verdicts = re.findall(r"^(tests/.*?) (PASSED|FAILED|ERROR|SKIPPED)(?: \(.*\))? +\[ *\d+%\]$",  # (a reason)
                              read(f"{out}/{log}.log"), re.M)
        if verdicts:  # as far as the run got
            count = lambda v: sum(x == v for _, x in verdicts)
            bad = [name for name, v in verdicts if v in ("FAILED", "ERROR")]
            lines += ["", f"{label}: {count('PASSED')} passed, {len(bad)} failed or errors, {count('SKIPPED')} "
                          f"skipped" + "".join(f"\n- {name}" for name in bad)]
    notes = dict.fromkeys(ln for log in ("bench", "sft", "rl", "grpo", "evaluate", "gpu_sft", "sft_alt", "attention")
                          for ln in read(f"{out}/{log}.log").splitlines()  # fallbacks; ways a benchmark could not run
                          if ln.startswith("note: ") or ln.startswith("[bench] ") and " failed" in ln)
    lines += ["", "Notices in the logs:", *(f"- {n.removeprefix('note: ')}" for n in notes)] if notes else []
    profiles = [ln[10:] for log in ("bench", "gpu_sft") for ln in read(f"{out}/{log}.log").splitlines()
                if ln.startswith("[profile] ")]  # where the device's time goes (bench.py's _device_busy)
    lines += ["", "Profiles (torch.profiler, device time):", "```", *profiles, "```"] if profiles else []
    ev = json.loads(read(f"{out}/eval/eval.json") or "{}")
    if ev:  # one column per evaluated run
        lines += ["", f"| test split (evaluate.py, 16 samples) | {' | '.join(ev)} |", "|---" * (len(ev) + 1) + "|"]
        for k in ("accuracy_avg", "accuracy_greedy", "maj_at_k", "weighted_at_k", "best_of_k", "sv_f1", "sv_auroc",
                  "sv_auroc_within"):
            cells = []
            for run in ev.values():
                v = run.get(k)
                v = v.get("16", v) if isinstance(v, dict) else v  # the @k curves at k = 16
                cells.append(str(round(v, 4) if isinstance(v, float) else v))
            lines.append(f"| {k}{'@16' if k.endswith('_k') else ''} | {' | '.join(cells)} |")
        if os.path.exists(f"{out}/eval/paired.json"):
            lines += ["", f"Paired differences with bootstrap intervals: {out}/eval/eval.md"]
    return lines


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 3 or argv[0].startswith("-"):
        print(__doc__.strip(), file=sys.stderr if argv[:1] not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    out = argv[0]
    if not os.path.isdir(out):
        print(f"gpu_summary.py: {out} is not a directory (a GPU check's OUT)", file=sys.stderr)
        return 2
    runs = argv[1] if len(argv) > 1 else f"{out}/small"
    lines = summary(out, runs, argv[2] if len(argv) > 2 else "--sft_graphs false")
    with open(f"{out}/summary.md", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # (config, from anywhere)
    sys.exit(main(sys.argv[1:]))
