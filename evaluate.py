"""Evaluate trained runs on held-out problems: sample them, compute metrics.py's metrics, write reports.

    python evaluate.py out/grpo                          # report written into out/grpo/
    python evaluate.py out/grpo out/laser --out out/cmp  # several runs: --out is required
    python evaluate.py --records out/cmp/records.json    # recompute metrics from saved samples
    python evaluate.py out/grpo --data_jsonl mine.jsonl  # on the test-split problems of an outside file
    python evaluate.py --aggregate res/seed0 res/seed1 res/seed2 --out res   # mean ± std over seeds

`collect_records` samples a run's final checkpoint: per test problem (`--split validation` for tuning)
one greedy solution and N at temperature 1 with their last-token self-reward r_s (record format and
metric definitions: metrics.py). `write_report` writes eval.json ({run: metrics}), eval.md, records.json,
paired.json (runs on the same problems) and, with matplotlib, scaling.png and rs_hist.png; --aggregate
writes summary.json and summary.md. JSON holds NaN as null; `load_records` reads null scores as NaN.
It does not train, does not re-verify saved records and never needs matplotlib.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import numpy as np
import torch

from config import ArgParser, UserError, get_device, heldout_problems, load_outside, out_of_memory, prompts_that_fit
from runs import (atomic_write, launched_by_torchrun, load_run, make_run_dir,
                  run_config, to_jsonable, write_json, write_text)
from loss import self_reward_score
from metrics import (CI_METRICS, CURVES, FAMILY_METRICS, MAX_SUBSETS, SV_THRESHOLD, aggregate_seeds,
                     all_paired_differences, as_float, at_n, compute_metrics, same_problems)
from rollout import run_c_ref, sample_chunks
from verify import response_answer, reward


# ----------------------------------------------------------------------------------------- records

def verdict(text: str, gold: str, finished: bool) -> dict:
    """A response's answer and whether it is right. One cut off at the length limit is not a solution: no
    answer (so it votes for nothing) and incorrect, whatever it boxed before the cut (as in RL's reward)."""
    return {"answer": response_answer(text, finished), "correct": reward(text, gold, finished) == 1.0}


def collect_records(run_dir: str, n_samples: int = 16, n_problems: int | None = None, seed: int = 0,
                    max_new_tokens: int | None = None, batch_size: int = 64, device=None,
                    split: str = "test", outside: list | None = None, data_jsonl: str = "") -> list[dict]:
    """One record per held-out problem (`split`: "test", or "validation" for tuning; n_problems None: all)
    from the run's final checkpoint: n_samples draws at temperature 1 from one generator seeded with
    `seed`, then the greedy solution, per chunk of batch_size // n_samples prompts. max_new_tokens None:
    the run's setting; device None: auto. r_s uses the beta_v and c_ref saved in the checkpoint.
    `outside`: evaluate these problems (data_jsonl's, already of `split`) instead of generated ones; those
    whose prompt + max_new_tokens + 1 does not fit the model are skipped, with a count."""
    device = get_device("auto") if device is None else device
    model, tok, ck = load_run(run_dir, device)
    cfg = run_config(ck)
    max_new = max_new_tokens or cfg.max_new_tokens
    # an SFT run's c_ref is measured first, in sampling calls of at most batch_size rows too (where the run's
    # own eval_batch x calib_samples is more: a smaller --batch_size must also shrink these)
    cfg = dataclasses.replace(cfg, eval_batch=min(cfg.eval_batch, max(1, batch_size // cfg.calib_samples)))
    c_ref, beta_v = run_c_ref(model, tok, cfg, ck, run_dir)
    if outside is None:
        problems = heldout_problems(cfg, split, n_problems)
    else:
        problems = prompts_that_fit(outside, tok, model.cfg.block_size, max_new, "evaluation", data_jsonl,
                                    "lower --max_new_tokens")[:n_problems]
    gen = torch.Generator(device=device).manual_seed(seed)
    per_call = max(1, batch_size // n_samples)
    # zip draws a chunk's samples, then its greedy solutions (which use no generator), chunk by chunk
    calls = dict(max_new_tokens=max_new, prompts_per_call=per_call)
    sampled = sample_chunks(model, tok, problems, num_samples=n_samples, generator=gen, temperature=1.0,
                            progress=f"  {run_dir}: sampling", **calls)
    greedy_chunks = sample_chunks(model, tok, problems, num_samples=1, generator=None, temperature=0, **calls)
    records = []
    for (chunk, ro), (_, greedy) in zip(sampled, greedy_chunks):
        r_s = self_reward_score(ro.logp_zc, c_ref, beta_v).tolist()
        mean_logp = (ro.logprobs.sum(1) / ro.lengths.clamp(min=1)).tolist()
        lengths = ro.lengths.tolist()  # response tokens, EOS included
        finished, greedy_finished = ro.finished.tolist(), greedy.finished.tolist()
        for j, p in enumerate(chunk):
            rows = range(j * n_samples, (j + 1) * n_samples)
            records.append({
                "family": p.family, "level": p.level, "gold": p.answer, "problem": p.problem,
                "greedy": verdict(greedy.texts[j], p.answer, greedy_finished[j]),
                "samples": [{**verdict(ro.texts[r], p.answer, finished[r]),
                             "r_s": r_s[r], "mean_logp": mean_logp[r], "length": lengths[r], "finished": finished[r]}
                            for r in rows]})
        print(f"  {run_dir}: sampled {len(records)}/{len(problems)} problems", flush=True)
    return records


def load_records(path: str) -> dict[str, list]:
    """Load a records.json ({run name: [problem records]}); null r_s / mean_logp become NaN."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping run names to lists of problem records")
    for smp in (s for problems in data.values() for rec in problems for s in rec.get("samples", [])):
        for key in ("r_s", "mean_logp"):
            if key in smp:
                smp[key] = as_float(smp[key])
    return data


# ----------------------------------------------------------------------------------------- reports

def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.{digits}f}"


HEADLINE_ROWS = [  # (label, metric key; *_at_n of a curve reads it at k = N)
    ("accuracy avg@N", "accuracy_avg"), ("accuracy greedy", "accuracy_greedy"), ("maj@N", "maj_at_n"),
    ("weighted@N (r_s)", "weighted_at_n"), ("best-of-N (r_s)", "best_of_n"),
    ("self-certainty@N", "self_certainty_at_n"), ("pass@N", "pass_at_n"),
    ("SV TPR (correct judged correct)", "sv_tpr"), ("SV TNR (incorrect judged incorrect)", "sv_tnr"),
    ("SV F1 = hmean(TPR, TNR) [paper]", "sv_f1"), ("SV precision", "sv_precision"),
    ("SV precision/recall F1", "sv_pr_f1"), ("SV AUROC", "sv_auroc"),
    ("SV AUROC within a problem", "sv_auroc_within"), ("SV ECE (10 bins)", "sv_ece"),
    ("problems", "n_problems"), ("samples per problem N", "n_samples"), ("truncated samples", "n_truncated")]


def _headline_rows(results: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """(label, one cell per run: the value [95% CI when there is one])."""
    rows = []
    for label, key in HEADLINE_ROWS:
        cells = []
        for m in results.values():
            cell = _fmt(at_n(m, key))
            ci = m.get("ci", {}).get(key)
            if ci is not None and cell != "-":
                cell += f" [{_fmt(ci[0])}, {_fmt(ci[1])}]"
            cells.append(cell)
        rows.append((label, cells))
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def format_table(results: dict[str, dict]) -> str:
    """Compact side-by-side plain-text comparison of the headline numbers (with 95% CIs)."""
    names = list(results)
    rows = _headline_rows(results)
    width0 = max(len(label) for label, _ in rows)
    widths = [max(len(n), *(len(cells[i]) for _, cells in rows)) for i, n in enumerate(names)]
    out = ["  ".join([" " * width0] + [n.rjust(w) for n, w in zip(names, widths)])]
    for label, cells in rows:
        out.append("  ".join([label.ljust(width0)] + [c.rjust(w) for c, w in zip(cells, widths)]))
    return "\n".join(out)


def _markdown(results: dict[str, dict]) -> str:
    parts = [
        "# Evaluation", "",
        "Headline numbers with 95% bootstrap CIs over problems. N = samples per problem at temperature 1. "
        "SV = self-verification with r_s > 0.5 on finished samples; the paper's F1 is the harmonic mean "
        "of TPR and TNR. Definitions: metrics.py.", "",
        _md_table(["metric"] + list(results), [[label] + cells for label, cells in _headline_rows(results)]), "",
        "## Scaling with k", "",
        "Vote/selection metrics at k < N are averaged over every k-subset of the N samples (over "
        f"{MAX_SUBSETS:,} drawn at random where there are more); pass@k is the unbiased estimator from all N "
        "samples."]
    for name, m in results.items():
        rows = [[str(k)] + [_fmt(m.get(c, {}).get(str(k))) for c in CURVES] for k in m["ks"]]
        parts += ["", f"### {name}", "", _md_table(["k"] + list(CURVES.values()), rows)]
    parts += ["", "## Per family", ""]
    header = ["family", "problems", "avg@N", "greedy", "SV F1 (hmean TPR,TNR)", "SV AUROC", "maj@N", "weighted@N"]
    for name, m in results.items():
        rows = [[f, _fmt(d.get("n_problems"))] + [_fmt(d.get(k)) for k in FAMILY_METRICS]
                for f, d in m.get("per_family", {}).items()]
        parts += [f"### {name}", "", _md_table(header, rows), ""]
    return "\n".join(parts)


def _paired_markdown(paired: dict[str, dict], title: str, intro: str = "Run B minus run A on the same problems, "
                     "with 95% paired bootstrap CIs (one resample of problems applied to both runs).") -> str:
    """Rows: CI metrics; columns: "B - A" pairs, each cell diff [95% paired CI], followed by "; [t-interval]"
    where the differences are over seeds."""
    pairs = list(paired)
    span = lambda ci: f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"
    rows = [[name] + [f"{_fmt(paired[p][name]['diff'])} {span(paired[p][name]['ci'])}"
                      + (f"; {span(paired[p][name]['t_ci'])}" if "t_ci" in paired[p][name] else "")
                      for p in pairs] for name in CI_METRICS]
    return "\n".join([f"## {title}", "", intro, "", _md_table(["metric"] + pairs, rows), ""])


def summary_markdown(summary: dict) -> str:
    """The multi-seed summary (`metrics.aggregate_seeds`) as markdown."""
    runs = list(summary["runs"])
    pm = lambda d: f"{_fmt(d['mean'])} ± {_fmt(d['std'])}"
    rows = [[key] + [pm(summary["runs"][r][key]) for r in runs] for key in summary["runs"][runs[0]]]
    per_seed = summary["paired_per_seed"]
    seed_rows = [[name] + [pm(per_seed[p][name]) for p in per_seed] for name in CI_METRICS]
    return "\n".join([
        f"# Evaluation over {summary['n_seeds']} seeds", "",
        "Mean ± std (ddof 1) over training seeds of each run's metric on the same held-out problems.", "",
        _md_table(["metric"] + runs, rows), "",
        _paired_markdown(summary["paired_over_seeds"], "Paired differences over seeds",
                         "Run B minus run A: the mean over seeds of each seed's difference on the same problems "
                         "(every metric computed within a seed), then two 95% intervals: a paired bootstrap over "
                         "problems (one resample of the problems for every seed's runs), which leaves out how much "
                         "another training seed would move the result; and after the semicolon the t-interval "
                         "over the seeds' differences, which includes it (with few seeds, a wide one)."),
        "## Paired differences per seed", "", "Mean ± std over seeds of each seed's difference.", "",
        _md_table(["metric"] + list(per_seed), seed_rows), ""])


def _save(plt, fig, path: str) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def _plot_scaling(plt, results: dict[str, dict], path: str) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False, sharey=True)
    for ax, (name, m) in zip(axes[0], results.items()):
        ks = m["ks"]
        for curve, label in CURVES.items():
            ys = [np.nan if (v := m.get(curve, {}).get(str(k))) is None else v for k in ks]
            style = {"linestyle": "--", "color": "gray"} if curve == "pass_at_k" else {"marker": "o"}
            ax.plot(ks, ys, label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("k (samples)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][-1].legend(fontsize=8)
    _save(plt, fig, path)


def _plot_rs_hist(plt, problems_by_run: dict[str, list], path: str) -> None:
    fig, axes = plt.subplots(1, len(problems_by_run), figsize=(4.5 * len(problems_by_run), 3.4), squeeze=False)
    for ax, (name, problems) in zip(axes[0], problems_by_run.items()):
        smp = [s for rec in problems for s in rec["samples"]]
        r = np.array([as_float(s["r_s"]) for s in smp])
        ok = np.array([bool(s["finished"]) for s in smp], dtype=bool) & np.isfinite(r)
        y = np.array([bool(s["correct"]) for s in smp], dtype=bool)
        r_ok = r[ok]
        bins = np.linspace(min(0.0, r_ok.min()), max(1.0, r_ok.max()), 31) if len(r_ok) else 30
        ax.hist(r[ok & y], bins=bins, alpha=0.6, label=f"correct ({int(np.sum(ok & y))})")
        ax.hist(r[ok & ~y], bins=bins, alpha=0.6, label=f"incorrect ({int(np.sum(ok & ~y))})")
        ax.axvline(SV_THRESHOLD, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel("r_s (finished samples)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("count")
    _save(plt, fig, path)


def write_report(results: dict[str, dict], out_dir: str, problems_by_run: dict[str, list] | None = None,
                 paired: dict[str, dict] | None = None) -> None:
    """Atomically write eval.json, eval.md, records.json (given problems_by_run), paired.json (given
    `paired`) and, with matplotlib, scaling.png and rs_hist.png (the histogram needs problems_by_run)."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "eval.json"), results)
    md = _markdown(to_jsonable(results)) + "\n"
    if paired:
        write_json(os.path.join(out_dir, "paired.json"), paired)
        md += "\n" + _paired_markdown(to_jsonable(paired), "Paired differences between runs")
    write_text(os.path.join(out_dir, "eval.md"), md)
    if problems_by_run is not None:
        write_json(os.path.join(out_dir, "records.json"), problems_by_run)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping plots (pip install matplotlib)")
        return
    _plot_scaling(plt, to_jsonable(results), os.path.join(out_dir, "scaling.png"))
    if problems_by_run:
        _plot_rs_hist(plt, problems_by_run, os.path.join(out_dir, "rs_hist.png"))


# --------------------------------------------------------------------------------------------- CLI

def build_parser() -> ArgParser:
    p = ArgParser(
        prog="evaluate.py",
        description="Evaluate training runs on held-out problems: accuracy, pass@k, self-verification of r_s "
        "(TPR, TNR, their harmonic mean = the paper's F1, AUROC, ECE), voting and best-of-k curves, bootstrap "
        "95% CIs, per family. Writes eval.json, eval.md, records.json (and with matplotlib two plots).",
        epilog="Output directory: with one RUN_DIR that run directory; with several RUN_DIRs --out is required; "
        "with --records the records file's directory (a records.json lets --records recompute the metrics).")
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="training run directories to evaluate (or their ckpt.pt)")
    p.add_argument("--records", metavar="FILE.json", help="skip sampling: load saved records "
                   "({run name: [problem records]}, e.g. a previous records.json) instead of RUN_DIRs")
    p.add_argument("--n_samples", "--n-samples", type=int, default=16,
                   help="samples per problem at temperature 1, N (default 16)")
    p.add_argument("--n_problems", "--n-problems", type=int, default=None,
                   help="held-out problems to use (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling and the bootstrap (default 0)")
    p.add_argument("--n_boot", "--n-boot", type=int, default=1000,
                   help="bootstrap resamples for CIs, 0 to skip (default 1000)")
    p.add_argument("--out", default=None, metavar="DIR", help="output directory (see below)")
    p.add_argument("--names", default=None, help="comma-separated run names, one per RUN_DIR "
                   "(default: each RUN_DIR's base name)")
    p.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=None,
                   help="generation length limit (default: the run's training setting)")
    p.add_argument("--batch_size", "--batch-size", type=int, default=None,
                   help="sequences per forward pass when sampling (default 256 on CPU, 4096 on CUDA). The "
                        "samples depend on it and on the device as on --seed (one generator runs through the "
                        "chunks): give the same value to reproduce a report's records; runs compared in one "
                        "call share it")
    p.add_argument("--split", choices=("test", "validation"), default="test",
                   help="problems to evaluate on: test (default; never seen in training or tuning) or "
                        "validation (for tuning and studies)")
    p.add_argument("--data_jsonl", "--data-jsonl", default=None, metavar="FILE",
                   help="evaluate on outside problems instead of generated ones: the {\"problem\", \"answer\"} "
                        "lines of FILE whose canonical key falls in --split (as train.py's --data_jsonl keeps the "
                        "train split's); problems whose prompt + max_new_tokens + 1 exceeds the run's block_size "
                        "are skipped, with a count; --n_problems takes the first N")
    p.add_argument("--aggregate", nargs="+", metavar="DIR", default=None,
                   help="summarise several seeds: each DIR holds a records.json of the same runs; writes "
                        "summary.json and summary.md (mean ± std, paired differences over seeds) into --out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def fail(msg: str) -> int:
        print(f"evaluate.py: error: {msg}", file=sys.stderr)
        return 2

    if launched_by_torchrun():
        return fail("evaluate.py runs in a single process (one device); start it with python, not torchrun")
    for flag, value, low in (("--n_samples", args.n_samples, 1), ("--n_boot", args.n_boot, 0),
                             ("--n_problems", args.n_problems, 1), ("--max_new_tokens", args.max_new_tokens, 1),
                             ("--batch_size", args.batch_size, 1)):
        if value is not None and value < low:
            return fail(f"{flag} must be >= {low}, got {value}")
    args.batch_size = args.batch_size or (4096 if torch.cuda.is_available() else 256)
    if sum(map(bool, (args.records, args.run_dirs, args.aggregate))) > 1:
        return fail("give one of RUN_DIRs, --records or --aggregate")
    if args.data_jsonl is not None and not args.run_dirs:
        return fail("--data_jsonl applies to RUN_DIRs (it chooses the problems they are sampled on)")
    if args.aggregate:
        if not args.out:
            return fail("--aggregate needs --out DIR")
        try:
            make_run_dir(args.out)
            per_seed = [load_records(os.path.join(d, "records.json")) for d in args.aggregate]
            summary = aggregate_seeds(per_seed, n_boot=args.n_boot, seed=args.seed)
        except UserError as e:
            return fail(str(e))
        except (OSError, ValueError, KeyError) as e:
            return fail(f"cannot aggregate {args.aggregate}: {e}")
        write_json(os.path.join(args.out, "summary.json"), summary)
        md = summary_markdown(to_jsonable(summary))
        write_text(os.path.join(args.out, "summary.md"), md)
        print(md)
        return 0
    if args.records:
        if args.names:
            return fail("--names applies to RUN_DIRs; with --records the names come from the file")
        try:
            records = load_records(args.records)
        except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            return fail(f"cannot read records from {args.records}: {e}")
        out_dir = args.out or os.path.dirname(os.path.abspath(args.records))
        try:
            make_run_dir(out_dir)
        except UserError as e:
            return fail(str(e))
    else:
        if not args.run_dirs:
            return fail("give at least one RUN_DIR (or --records FILE.json); see --help")
        args.run_dirs = [os.path.dirname(os.path.abspath(d)) if os.path.basename(d) == "ckpt.pt" and os.path.isfile(d)
                         else d for d in args.run_dirs]  # a run's ckpt.pt names its run, as for export.py
        missing = [d for d in args.run_dirs if not os.path.isdir(d)]
        if missing:
            return fail(f"run directory not found: {missing[0]}")
        if args.names:
            names = [n.strip() for n in args.names.split(",")]
            if len(names) != len(args.run_dirs):
                return fail(f"--names has {len(names)} names for {len(args.run_dirs)} RUN_DIRs")
        else:
            names = [os.path.basename(os.path.normpath(d)) for d in args.run_dirs]
        if len(set(names)) != len(names):
            return fail(f"duplicate run names {names}: pass --names")
        if len(args.run_dirs) > 1 and not args.out:
            return fail("several RUN_DIRs: pass --out DIR for the comparison report")
        out_dir = args.out or args.run_dirs[0]
        print(f"evaluate: runs={dict(zip(names, args.run_dirs))} split={args.split} n_samples={args.n_samples} "
              f"n_problems={args.n_problems} seed={args.seed} max_new_tokens={args.max_new_tokens} "
              f"batch_size={args.batch_size} n_boot={args.n_boot} out={out_dir}"
              + (f" data_jsonl={args.data_jsonl}" if args.data_jsonl is not None else ""))
        try:
            make_run_dir(out_dir)  # (a bad --out found now, not after the sampling)
            outside = None if args.data_jsonl is None else load_outside(args.data_jsonl, args.split)
        except UserError as e:
            return fail(str(e))
        if outside == []:
            return fail(f"--data_jsonl {args.data_jsonl}: no problem's key falls in the {args.split} split")
        records = {}
        for name, run_dir in zip(names, args.run_dirs):
            try:
                records[name] = collect_records(
                    run_dir, n_samples=args.n_samples, n_problems=args.n_problems, seed=args.seed,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, split=args.split,
                    outside=outside, data_jsonl=args.data_jsonl or "")
            except (UserError, ValueError) as e:  # unreadable runs, sizes that do not fit the model
                return fail(str(e))
            except torch.cuda.OutOfMemoryError as e:
                return fail(out_of_memory(e, f"a smaller --batch_size (now {args.batch_size} sequences a sampling "
                                             f"call, or one prompt's --n_samples {args.n_samples} if more) needs "
                                             f"less memory"))
    try:
        results = {name: compute_metrics(problems, n_boot=args.n_boot, seed=args.seed)
                   for name, problems in records.items()}
        runs = list(records.values())
        aligned = len(runs) > 1 and all(same_problems(runs[0], r) for r in runs[1:])
        paired = all_paired_differences(records, args.n_boot, args.seed) if aligned and args.n_boot else None
        if len(runs) > 1 and not aligned:
            print("note: the runs were evaluated on different problems: no paired differences")
    except ValueError as e:
        return fail(f"malformed records: {e}")
    write_report(results, out_dir, problems_by_run=records, paired=paired)
    print(format_table(results))
    print(f"wrote {os.path.join(out_dir, 'eval.md')} and eval.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
