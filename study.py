"""The research study of the self-reward: a grid of RL configurations x seeds, and diagnostics.

    python study.py run --sft out/tiny/seed0/sft out/tiny/seed1/sft out/tiny/seed2/sft \
        --grid base "alpha05:alpha=0.5" --out out/study              # validation split (the default)
    python study.py run ... --grid alpha05:alpha=0.5 --split test       # once, for the chosen setting
    python study.py diagnose results/tiny/seed0 results/tiny/seed1 results/tiny/seed2 --out results/tiny

`run` trains one LaSeR RL run per grid entry and SFT checkpoint (the SFT run's seed; a run directory whose
checkpoint already reached --rl_steps is reused; one holding a run with other settings than its entry asks
for, the execution flags such as --device or --micro_batch aside, is refused, never reused or trained over:
delete it or use another --out), evaluates each on the split with evaluate.py (an
evaluation newer than the run's checkpoint is reused: it is seeded, so rerunning it gives the same), and writes
study_<split>.md/json: headline metrics as mean +- std over the seeds, and study_<split>.png (with
matplotlib). Tune on validation; evaluate the chosen setting on test once.

Reads evaluate.py's records.json in each directory (one directory per seed, the same runs in each) and,
where present, the runs' <run>_metrics.jsonl beside it (demo_tiny.sh copies them there). Per run:
- within-problem AUROC of four scores of a sample: r_s, the frequency of its answer among the problem's
  samples (what majority voting exploits), the policy's own mean token log-likelihood (self-certainty) and
  the response length (records written before lengths were recorded leave it blank);
  the AUROC is averaged over the problems whose finished samples hold both classes;
- rank correlations (Spearman) within a problem between r_s and answer frequency, the log-likelihood and
  the length: how much of r_s is "the answer the model gives most often" (or the shortest);
- best-of-N by r_s against a random sample (avg@N), per family and level, with the within-problem AUROC;
- failure cases of best-of-N: problems with a correct sample where r_s picked a wrong one;
- r_s over training: mean r_s of correct and incorrect rollouts and the batch AUROC, per 25-step window.
Writes diagnostics.json and diagnostics.md into --out (default: the first directory). It reads records
only: nothing is sampled or re-verified, and answers are grouped by verify.is_equivalent.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np

from config import PRESETS, ArgParser, Config, UserError, build_parser, check_dir_path, resolve_config, same_setting
from metrics import as_float, at_n, auroc, best_of, group_answers, validate_records
from runs import config_from, load_checkpoint, read_json, run_config, saved_config, write_json, write_text

HERE = os.path.dirname(os.path.abspath(__file__))  # train.py and evaluate.py sit beside this file

WINDOW = 25  # RL steps per window of the r_s-over-training table
PROBE_SEED = "probe"  # the probe's training problems: a stream of their own (tasks.train_batch)
N_FAILURES = 5  # failure cases shown per run


def spearman(x, y) -> float:
    """Rank correlation (average ranks for ties); NaN with fewer than 3 points or a constant input."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")

    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v))
        for value in np.unique(v):  # ties share their average rank
            r[v == value] = r[v == value].mean()
        return r

    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def problem_scores(rec: dict, equiv) -> dict:
    """The finished samples of one problem with a finite r_s: r_s, answer frequency (the share of the
    problem's answered samples in the sample's equivalence group; 0 without an answer), mean log-prob,
    response length, correctness and answer."""
    samples = rec["samples"]
    answers = [s["answer"] for s in samples]
    freq = np.zeros(len(samples))
    n_answered = sum(a is not None for a in answers)
    for _, _, members in group_answers(answers, [1.0] * len(answers), equiv):
        freq[members] = len(members) / n_answered
    keep = [i for i, s in enumerate(samples) if s["finished"] and math.isfinite(as_float(s["r_s"]))]
    return {"r_s": np.array([as_float(samples[i]["r_s"]) for i in keep]), "freq": freq[keep],
            "logp": np.array([as_float(samples[i]["mean_logp"]) for i in keep]),
            "length": np.array([as_float(samples[i].get("length")) for i in keep]),  # NaN in older records
            "correct": np.array([bool(samples[i]["correct"]) for i in keep]),
            "answers": [answers[i] for i in keep]}


def diagnose(problems: list, equiv=None) -> dict:
    """Diagnostics of one run's records (see the module docstring)."""
    if equiv is None:
        from verify import is_equivalent as equiv
    within = {"r_s": [], "freq": [], "logp": [], "length": []}
    rho = {"freq": [], "logp": [], "length": []}
    groups, failures = {}, []
    for rec in problems:
        sc = problem_scores(rec, equiv)
        mixed = sc["correct"].any() and not sc["correct"].all()  # both classes among the finished samples
        if mixed:
            for key in within:
                if np.isfinite(sc[key]).all():
                    within[key].append(auroc(sc[key], sc["correct"]))
        for key in rho:
            if np.isfinite(sc[key]).all():
                rho[key].append(spearman(sc["r_s"], sc[key]))
        all_rs = [as_float(s["r_s"]) for s in rec["samples"]]
        all_correct = [bool(s["correct"]) for s in rec["samples"]]
        picked_right = best_of(all_rs, all_correct)
        g = groups.setdefault(f"{rec['family']} L{rec['level']}", {"best": [], "avg": [], "within": []})
        g["best"].append(float(picked_right))
        g["avg"].append(float(np.mean(all_correct)))
        if mixed:
            g["within"].append(within["r_s"][-1])
        if not picked_right and any(all_correct) and len(sc["r_s"]):
            i = int(np.argmax(sc["r_s"]))
            j = int(np.argmax(np.where(sc["correct"], sc["r_s"], -np.inf))) if sc["correct"].any() else None
            failures.append({"problem": rec.get("problem", ""), "gold": rec["gold"], "picked": sc["answers"][i],
                             "picked_r_s": float(sc["r_s"][i]), "picked_freq": float(sc["freq"][i]),
                             "best_correct_r_s": None if j is None else float(sc["r_s"][j]),
                             "correct_freq": None if j is None else float(sc["freq"][j]),
                             "gap": float(sc["r_s"][i] - (sc["r_s"][j] if j is not None else np.nan))})
    failures.sort(key=lambda f: -f["gap"] if math.isfinite(f["gap"]) else 0.0)
    both = [f for f in failures if f["correct_freq"] is not None]  # failures with a scored correct sample
    median = lambda key: float(np.median([f[key] for f in both])) if both else float("nan")  # noqa: E731
    return {"within_auroc": {k: _mean(v) for k, v in within.items()}, "n_mixed_problems": len(within["r_s"]),
            **{f"spearman_rs_{k}": _mean(v) for k, v in rho.items()},
            "by_group": {k: {"best_of_n": _mean(v["best"]), "avg_at_n": _mean(v["avg"]),
                             "within_auroc": _mean(v["within"]), "problems": len(v["best"])}
                         for k, v in sorted(groups.items())},
            "failures": failures[:N_FAILURES], "n_failures": len(failures),
            "failures_picked_rarer": sum(f["picked_freq"] < f["correct_freq"] for f in both),
            "median_freq_picked": median("picked_freq"), "median_freq_correct": median("correct_freq")}


def rs_over_training(log_path: str) -> list[dict]:
    """Per WINDOW-step window of an RL metrics.jsonl: mean r_s of correct and incorrect rollouts, AUROC."""
    try:
        with open(log_path, encoding="utf-8") as f:
            recs = [json.loads(ln) for ln in f if ln.strip()]
    except (OSError, ValueError) as e:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{log_path}: unreadable metrics log ({e})") from None
    recs = [r for r in recs if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] > 0
            and "rs_correct" in r]
    out = []
    for start in range(0, len(recs), WINDOW):
        w = recs[start:start + WINDOW]
        out.append({"steps": f"{w[0]['step']}-{w[-1]['step']}",
                    **{k: _mean([as_float(r.get(k)) for r in w]) for k in ("rs_correct", "rs_incorrect", "sv_auroc")}})
    return out


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _mean_std(values: list[float]) -> str:
    """Mean ± std over seeds; where some seeds have no value (NaN), over the others, saying how many."""
    have = [v for v in values if not math.isnan(v)]
    if not have:
        return "-"
    digits = 1 if all(float(v).is_integer() for v in have) else 3  # counts
    text = f"{np.mean(have):.{digits}f}" + (f" ± {np.std(have, ddof=1):.{digits}f}" if len(have) > 1 else "")
    return text + (f" ({len(have)} of {len(values)} seeds)" if len(have) < len(values) else "")


def markdown(per_seed: list[dict], training: dict, first: str = "the first directory") -> str:
    """The diagnostics table (mean ± std over seeds); per-group tables and failures from `first` alone."""
    runs = list(per_seed[0])
    lines = [f"# Self-reward diagnostics ({len(per_seed)} seed(s); mean ± std over seeds)", "",
             "| | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    rows = [("within-problem AUROC of r_s", lambda d: d["within_auroc"]["r_s"]),
            ("within-problem AUROC of answer frequency", lambda d: d["within_auroc"]["freq"]),
            ("within-problem AUROC of mean log-prob", lambda d: d["within_auroc"]["logp"]),
            ("Spearman(r_s, answer frequency) within a problem", lambda d: d["spearman_rs_freq"]),
            ("Spearman(r_s, mean log-prob) within a problem", lambda d: d["spearman_rs_logp"]),
            ("within-problem AUROC of response length (tokens)", lambda d: d["within_auroc"]["length"]),
            ("Spearman(r_s, response length) within a problem", lambda d: d["spearman_rs_length"]),
            ("problems with both classes among finished samples", lambda d: float(d["n_mixed_problems"])),
            ("best-of-N by r_s missed a correct sample (problems)", lambda d: float(d["n_failures"])),
            ("... of which the pick was rarer than the best-scored correct answer",
             lambda d: float(d["failures_picked_rarer"])),
            ("... median answer frequency of the pick", lambda d: d["median_freq_picked"]),
            ("... median answer frequency of the best-scored correct answer", lambda d: d["median_freq_correct"])]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_mean_std([get(s[r]) for s in per_seed]) for r in runs) + " |")
    for run in runs:
        lines += ["", f"## {run}: best-of-N by r_s against a random sample, per family and level ({first})", "",
                  "| group | problems | avg@N | best-of-N (r_s) | within-problem AUROC |", "|---|---|---|---|---|"]
        for g, v in per_seed[0][run]["by_group"].items():
            lines.append(f"| {g} | {v['problems']} | {_fmt(v['avg_at_n'])} | {_fmt(v['best_of_n'])} | "
                         f"{_fmt(v['within_auroc'])} |")
        lines += ["", f"Failures of best-of-N ({first}; the largest r_s margins of a wrong pick over the best correct "
                      "sample):", ""]
        for f in per_seed[0][run]["failures"]:
            lines.append(f"- `{f['problem']}` gold `{f['gold']}`: picked `{f['picked']}` (r_s {_fmt(f['picked_r_s'])}, "
                         f"frequency {_fmt(f['picked_freq'])}); best correct r_s {_fmt(f['best_correct_r_s'])} "
                         f"(frequency {_fmt(f['correct_freq'])})")
        if run in training:
            lines += ["", f"r_s over training ({run}, {first}):", "",
                      "| steps | mean r_s correct | mean r_s incorrect | batch AUROC |", "|---|---|---|---|"]
            lines += [f"| {w['steps']} | {_fmt(w['rs_correct'])} | {_fmt(w['rs_incorrect'])} | {_fmt(w['sv_auroc'])} |"
                      for w in training[run]]
    return "\n".join(lines) + "\n"


STUDY_METRICS = ["accuracy_avg", "maj_at_n", "weighted_at_n", "best_of_n", "sv_f1", "sv_auroc", "sv_auroc_within"]


def parse_grid(entries: list[str]) -> dict[str, list[str]]:
    """"name:key=value,key=value" (or "name" alone: the preset as it is) -> {name: train.py flags}. A value
    may hold commas, as --levels and --families take them: a piece without "=" goes on the value before it
    ("lv:levels=1,2,rl_steps=50" sets levels 1,2)."""
    grid = {}
    for entry in entries:
        name, _, spec = entry.partition(":")
        flags = []
        for item in filter(None, spec.split(",")):
            key, eq, value = item.partition("=")
            if not eq and not flags:
                raise ValueError(f"grid entry {entry!r}: expected key=value, got {item!r}")
            if not eq:  # the next comma-separated part of the value before
                flags[-1] += "," + item.strip()
                continue
            flags += [f"--{key.strip()}", value.strip()]
        if name in grid:
            raise ValueError(f"grid entry {entry!r}: the name {name!r} is given twice")
        grid[name] = flags
    return grid


# Config fields that say how a run was executed, not what it learns: runs that differ only in these are
# the same setting (a run linked in from elsewhere, as the README's base runs, keeps its own out_dir). Some
# change a run's numbers as another seed would, not its setting: the device and compiling round differently,
# and eval_batch splits the sampling calls of the c_ref measurement and validation into other random draws.
HOW_FIELDS = ("out_dir", "resume", "halt_at", "device", "threads", "compile", "verify_workers", "micro_batch",
              "micro_tokens", "sft_micro_batch", "eval_batch", "log_every", "ckpt_every", "n_log_samples",
              "max_skipped")


def train_config(train_args: list[str], name: str) -> Config:
    """The Config train.py runs with from `train_args` (config.resolve_config: the preset, then the flags,
    checked; then train.run_config_for: the model fields of --init's run); a bad flag is a UserError naming
    the grid entry."""
    from train import run_config_for

    def error(message):
        raise UserError(message)

    p = build_parser()
    p.error = error
    try:
        return run_config_for(*resolve_config(train_args, parser=p))
    except UserError as e:
        raise UserError(f"grid entry {name!r}: {e}") from None


def config_differences(saved: Config, wanted: Config) -> dict[str, tuple]:
    """{field: (saved value, wanted value)} of the fields that differ (config.same_setting), except HOW_FIELDS."""
    return {f.name: (getattr(saved, f.name), getattr(wanted, f.name)) for f in dataclasses.fields(Config)
            if f.name not in HOW_FIELDS and not same_setting(f.name, getattr(saved, f.name), getattr(wanted, f.name))}


def existing_run(run: str, wanted: Config, name: str) -> int | None:
    """The step of the checkpoint in `run` (None: nothing trained there yet). A run trained (or started)
    with other settings than `wanted` is a UserError: it is neither reused nor trained over."""
    ck_path, cfg_path = os.path.join(run, "ckpt.pt"), os.path.join(run, "config.json")
    if os.path.exists(run) and not os.path.isdir(run):
        raise UserError(f"{run}: exists and is not a run directory")
    step, saved = None, None
    if os.path.exists(ck_path):
        ck = load_checkpoint(run)
        step, saved = ck["step"], run_config(ck)
    elif os.path.exists(cfg_path):
        saved = config_from(read_json(cfg_path, "run config"), cfg_path)
    if saved is not None:
        diff = config_differences(saved, wanted)
        if diff:
            what = "; ".join(f"{k} {a!r} there, {b!r} asked" for k, (a, b) in diff.items())
            raise UserError(f"{run} holds a run with other settings than grid entry {name!r} asks for ({what}): "
                            f"delete that run directory or use another --out")
    return step


def plan_grid(sft_dirs: list[str], grid: dict[str, list[str]], out: str, preset: str) -> list[tuple]:
    """(name, seed, run directory, train.py flags, Config, checkpoint step or None) of every (grid entry,
    SFT checkpoint), all checked before anything is trained: the SFT runs, the flags, the runs already there."""
    seeds = {}
    for sft in sft_dirs:
        seed = saved_config(sft).seed
        if seed in seeds.values():
            other = next(d for d, s in seeds.items() if s == seed)
            raise UserError(f"--sft {other} and {sft} are both seed {seed}: their runs would share one directory")
        seeds[sft] = seed
    plan = []
    for name, flags in grid.items():
        if not name or name in (".", "..") or os.sep in name:
            raise UserError(f"grid entry {name!r}: a name must be a plain directory name")
        for sft, seed in seeds.items():
            run = os.path.join(out, name, f"seed{seed}")
            train_args = ["--config", preset, "--stage", "rl", "--algo", "laser", "--seed", str(seed),
                          "--init", sft, "--out_dir", run, *flags]
            wanted = train_config(train_args, name)
            plan.append((name, seed, run, train_args, wanted, existing_run(run, wanted, name)))
    return plan


def run_grid(sft_dirs: list[str], grid: dict[str, list[str]], out: str, preset: str, split: str) -> dict:
    """Train (or reuse) and evaluate every (grid entry, SFT checkpoint); returns {name: {metric: stats}}."""
    per_name = {name: [] for name in grid}
    for name, seed, run, train_args, wanted, step in plan_grid(sft_dirs, grid, out, preset):
        if step is None or step < wanted.rl_steps:  # not trained yet, or unfinished (then resumed)
            train_args += [] if step is None else ["--resume"]
            print(f"=== {name} seed {seed}: python train.py {' '.join(train_args)}", flush=True)
            subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *train_args], check=True)
        report = os.path.join(run, f"eval_{split}")
        done = os.path.join(report, "eval.json")
        if not (os.path.exists(done) and os.path.getmtime(done) >= os.path.getmtime(os.path.join(run, "ckpt.pt"))):
            subprocess.run([sys.executable, os.path.join(HERE, "evaluate.py"), run, "--split", split, "--out", report],
                           check=True)
        with open(done, encoding="utf-8") as f:
            per_name[name].append(next(iter(json.load(f).values())))
    return {name: {k: [as_float(at_n(m, k)) for m in per_seed] for k in STUDY_METRICS}
            for name, per_seed in per_name.items()}


def grid_markdown(table: dict, split: str) -> str:
    lines = [f"# Study on the {split} split (mean ± std over seeds)", "",
             "| setting | " + " | ".join(STUDY_METRICS) + " |", "|---|" + "---|" * len(STUDY_METRICS)]
    lines += [f"| {name} | " + " | ".join(_mean_std(v[k]) for k in STUDY_METRICS) + " |" for name, v in table.items()]
    return "\n".join(lines) + "\n"


def plot_grid(table: dict, split: str, path: str) -> bool:
    """study_<split>.png: each setting's accuracies at N (avg, majority, r_s-weighted, best-of-N by r_s)
    and its self-verification AUROCs (pooled, within a problem), mean with the seeds' std as error bars.
    Needs matplotlib; without it, a one-line notice and False."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: skipping the study plot (pip install matplotlib)")
        return False
    from evaluate import _save
    panels = [("accuracy at N samples", {"accuracy_avg": "avg", "maj_at_n": "majority", "weighted_at_n": "r_s-weighted",
                                         "best_of_n": "best-of-N (r_s)"}),
              ("self-verification AUROC", {"sv_auroc": "pooled", "sv_auroc_within": "within a problem"})]
    names = list(table)
    fig, axes = plt.subplots(1, 2, figsize=(5 + 1.2 * len(names), 3.8))
    for ax, (title, metrics) in zip(axes, panels):
        width = 0.8 / len(metrics)
        for j, (key, label) in enumerate(metrics.items()):
            vals = [[v for v in table[n][key] if not math.isnan(v)] for n in names]
            ax.bar(np.arange(len(names)) + (j - (len(metrics) - 1) / 2) * width,
                   [np.mean(v) if v else np.nan for v in vals], width,
                   yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals], capsize=2, label=label)
        if "AUROC" in title:
            ax.axhline(0.5, color="gray", linestyle="--", linewidth=1)  # chance
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(f"{title} ({split})")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    _save(plt, fig, path)
    return True


# ----------------------------------------------------------------------------- probe

def eos_features(model, tok, cfg, problems, n_samples: int, seed: int, batch_size: int = 256, label: str = "") -> dict:
    """Sample `n_samples` solutions per problem from a run's model (runs.load_run: on CPU; temperature 1,
    as evaluate.py; cfg: the run's config) and return, for each finished sample: its problem's index, whether it is correct,
    log p(z_c) at its EOS (r_s up to r_s's affine map), the final hidden state there (after the last
    norm: the vector the output head reads z_c from) and each block's output there ("blocks": (n, layers, C))."""
    import torch

    from rollout import sample_chunks, score_rollouts
    from verify import reward

    gen = torch.Generator().manual_seed(seed)
    out, seen = {"problem": [], "correct": [], "logp_zc": [], "h": [], "blocks": []}, {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, key=key: seen.__setitem__(key, o))
             for key, m in [("h", model.norm_f)] + [(i, b) for i, b in enumerate(model.blocks)]]
    try:
        first = 0
        for chunk, ro in sample_chunks(model, tok, problems, num_samples=n_samples, max_new_tokens=cfg.max_new_tokens,
                                       prompts_per_call=max(1, batch_size // n_samples), generator=gen, temperature=1.0):
            with torch.no_grad():
                score_rollouts(model, ro, tok.zc_id, tok.pad_id)  # its forward's last norm: seen["h"] (N, L, C)
            plens = torch.tensor([len(p) for p in ro.prompts]).repeat_interleave(n_samples)
            eos = plens + ro.lengths - 1  # the EOS position, as score_rollouts reads z_c there
            rows = torch.arange(len(eos))
            h = seen["h"][rows, eos]
            blocks = torch.stack([seen[i][rows, eos] for i in range(len(model.blocks))], 1)  # (N, layers, C)
            for r in ro.finished.nonzero().squeeze(1).tolist():
                p = chunk[r // n_samples]
                out["problem"].append(first + r // n_samples)
                out["correct"].append(reward(ro.texts[r], p.answer) == 1.0)
                out["logp_zc"].append(float(ro.logp_zc[r]))
                out["h"].append(h[r].float().numpy())
                out["blocks"].append(blocks[r].float().numpy())
            first += len(chunk)
            print(f"  {label}: sampled {first}/{len(problems)} problems", flush=True)
    finally:
        for hook in hooks:
            hook.remove()
    C, L = model.cfg.n_embd, len(model.blocks)
    return {"problem": np.array(out["problem"], dtype=int), "correct": np.array(out["correct"], dtype=bool),
            "logp_zc": np.array(out["logp_zc"]), "h": np.stack(out["h"]) if out["h"] else np.zeros((0, C)),
            "blocks": np.stack(out["blocks"]) if out["blocks"] else np.zeros((0, L, C))}


def _group_centred(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """x minus the mean of its group's rows (rows of a problem's samples)."""
    sums = np.zeros((groups.max() + 1, x.shape[1]))
    np.add.at(sums, groups, x)
    return x - (sums / np.maximum(np.bincount(groups), 1)[:, None])[groups]  # (ids with no row: unused)


def fit_probe(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None, l2: float = 1e-2):
    """A logistic-regression probe (L2 `l2`, on standardised features, by L-BFGS); with `groups`, fitted
    on features centred within each group, so that it can only learn what tells a problem's samples
    apart, not which problems go well. Returns score(x) -> (n,) logits. A linear score's ranking within
    a problem is the same on centred and raw features, so the score is applied to raw features."""
    import torch

    mu, sd = x.mean(0), x.std(0) + 1e-6
    centred = x - mu if groups is None else _group_centred(x, groups)
    z = torch.tensor(centred / sd, dtype=torch.float64)
    t = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, t) + l2 * (w ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    w_np, b_np = w.detach().numpy(), float(b.detach())
    return lambda xs: ((xs - mu) / sd) @ w_np + b_np


def within_auroc(scores: np.ndarray, correct: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """AUROC of `scores` among each problem's samples, averaged over the problems holding both classes
    (as `diagnose`); and how many problems that is."""
    values = [auroc(scores[groups == g], correct[groups == g]) for g in np.unique(groups)
              if 0 < correct[groups == g].sum() < (groups == g).sum()]
    return _mean(values), len(values)


def probe(run_dir: str, n_fit: int, split: str, n_samples: int = 16, seed: int = 0) -> dict:
    """Is "this solution is right" in the EOS hidden state at all? Linear probes fitted on the run's own
    samples of `n_fit` training problems, scored on `split`'s problems against log p(z_c) (r_s): a probe
    well above r_s within a problem means the information is there and LaSeR's readout did not learn
    it; a probe at chance means this model does not hold it where the readout looks."""
    from config import families_levels, heldout_problems
    from runs import load_run
    import tasks

    model, tok, ck = load_run(run_dir)
    cfg = run_config(ck)
    fam, lv = families_levels(cfg)
    fit = eos_features(model, tok, cfg, tasks.train_batch(0, n_fit, PROBE_SEED, fam, lv), n_samples, seed,
                       label=run_dir)
    ev = eos_features(model, tok, cfg, heldout_problems(cfg, split), n_samples, seed + 1, label=run_dir)
    for what, feats in (("fitting", fit), (split, ev)):
        if not len(feats["correct"]):
            raise UserError(f"{run_dir}: none of the {what} problems' samples finished within max_new_tokens "
                            f"{cfg.max_new_tokens}: no EOS state to probe")
    probes = {"probe": fit_probe(fit["h"], fit["correct"]), "probe_within": fit_probe(fit["h"], fit["correct"], fit["problem"])}
    scores = {"r_s": ev["logp_zc"], **{name: f(ev["h"]) for name, f in probes.items()}}
    out = {"run": run_dir, "split": split, "n_fit_samples": len(fit["correct"]), "fit_accuracy": float(fit["correct"].mean()),
           "n_samples": len(ev["correct"]), "accuracy": float(ev["correct"].mean()),
           **{f"fit_within_auroc.{name}": within_auroc(f(fit["h"]), fit["correct"], fit["problem"])[0]
              for name, f in probes.items()}}  # on the probes' own training samples: what a linear map can fit
    for name, sc in scores.items():
        out[f"within_auroc.{name}"], out["n_mixed_problems"] = within_auroc(sc, ev["correct"], ev["problem"])
        out[f"auroc.{name}"] = auroc(sc, ev["correct"])
    for i in range(fit["blocks"].shape[1]):  # the within-problem probe on each block's output (residual stream)
        f = fit_probe(fit["blocks"][:, i], fit["correct"], fit["problem"])
        out[f"within_auroc.probe_within.block{i + 1}"] = within_auroc(f(ev["blocks"][:, i]), ev["correct"], ev["problem"])[0]
    return out


def probe_markdown(rows: list[dict]) -> str:
    names = ("r_s", "probe", "probe_within")
    lines = ["| run | samples (accuracy) | " + " | ".join(f"within AUROC {n}" for n in names) + " | "
             + " | ".join(f"AUROC {n}" for n in names) + " | "
             + " | ".join(f"within AUROC {n}, fitting samples" for n in names[1:]) + " |",
             "|---|---|" + "---|" * (3 * len(names) - 1)]
    for r in rows:
        lines.append(f"| {r['run']} | {r['n_samples']} ({r['accuracy']:.3f}) | "
                     + " | ".join(_fmt(r[f"within_auroc.{n}"]) for n in names) + " | "
                     + " | ".join(_fmt(r[f"auroc.{n}"]) for n in names) + " | "
                     + " | ".join(_fmt(r.get(f"fit_within_auroc.{n}")) for n in names[1:]) + " |")
    blocks = sorted({k.rsplit(".", 1)[1] for r in rows for k in r if k.startswith("within_auroc.probe_within.block")},
                    key=lambda b: int(b[5:]))
    lines += ["", "Within-problem AUROC of the within-problem probe on each block's output at the EOS:", "",
              "| run | " + " | ".join(blocks) + " |", "|---|" + "---|" * len(blocks)]
    lines += [f"| {r['run']} | " + " | ".join(_fmt(r.get(f"within_auroc.probe_within.{b}")) for b in blocks) + " |"
              for r in rows]
    return "\n".join(lines) + "\n"


def load_diagnose_records(directory: str) -> dict[str, list]:
    """DIR/records.json as evaluate.py reads it (evaluate.load_records), every run's records checked
    (metrics.validate_records, and the fields diagnose reads); malformed or empty: a UserError."""
    from evaluate import load_records

    path = os.path.join(directory, "records.json")
    try:
        records = load_records(path)
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        raise UserError(f"{path}: {e}" if path not in str(e) else str(e)) from None
    except (AttributeError, TypeError):  # a problem record or sample that is not a JSON object
        raise UserError(f"{path}: expected problem records as JSON objects with a 'samples' list") from None
    if not records:
        raise UserError(f"{path}: no runs' records in it")
    for run, problems in records.items():
        try:
            if not all(isinstance(r, dict) and isinstance(r.get("samples"), list)
                       and all(isinstance(x, dict) for x in r["samples"]) for r in problems):
                raise ValueError("expected problem records as JSON objects with a 'samples' list")
            validate_records(problems)
            missing = next((k for r in problems for k in ("level", "gold") if k not in r), None)
            if missing:
                raise ValueError(f"a problem record has no '{missing}' field")
        except ValueError as e:
            raise UserError(f"{path}: run {run!r}: {e}") from None
    return records


def diagnose_dir(directory: str) -> dict:
    """{run: diagnose(its records)} of DIR/records.json."""
    out = {}
    for run, problems in load_diagnose_records(directory).items():
        try:
            out[run] = diagnose(problems)
        except (ValueError, TypeError) as e:  # a value of the wrong kind (a string where a score should be)
            raise UserError(f"{os.path.join(directory, 'records.json')}: run {run!r}: malformed records ({e})") from None
    return out


def main(argv=None) -> int:
    p = ArgParser(prog="study.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="diagnostics of evaluate.py records (one directory per seed)")
    d.add_argument("dirs", nargs="+", metavar="DIR", help="directories holding records.json")
    d.add_argument("--out", default=None, help="output directory (default: the first DIR)")
    r = sub.add_parser("run", help="train and evaluate a grid of LaSeR RL settings from shared SFT checkpoints")
    r.add_argument("--sft", nargs="+", required=True, metavar="DIR", help="SFT run directories, one per seed")
    r.add_argument("--grid", nargs="+", required=True, metavar="NAME[:k=v,...]",
                   help="settings (train.py flags without --; a value may hold commas: lv:levels=1,2,rl_steps=50)")
    r.add_argument("--out", required=True, help="directory for the runs and the study table")
    r.add_argument("--config", default="tiny", choices=list(PRESETS),
                   help="the train.py preset the settings change (default tiny)")
    r.add_argument("--split", choices=("validation", "test"), default="validation", help="evaluation split")
    q = sub.add_parser("probe", help="linear probes of correctness on the EOS hidden state, against r_s")
    q.add_argument("runs", nargs="+", metavar="RUN", help="run directories (an SFT and a LaSeR run, say)")
    q.add_argument("--n_fit", type=int, default=400, help="training problems the probes are fitted on (>= 1)")
    q.add_argument("--n_samples", type=int, default=16, help="samples per problem (>= 1)")
    q.add_argument("--split", choices=("validation", "test"), default="validation", help="problems scored")
    q.add_argument("--out", required=True, help="directory for probe.json and probe.md")
    args = p.parse_args(argv)
    try:
        if args.out is not None:
            check_dir_path(args.out, "--out")
        if args.command == "probe":
            for flag in ("n_fit", "n_samples"):
                if getattr(args, flag) < 1:
                    raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
            missing = [run for run in args.runs if not os.path.exists(run)]
            if missing:
                raise UserError(f"{missing[0]}: no such run directory")
            rows = [probe(run, args.n_fit, args.split, args.n_samples) for run in args.runs]
            write_json(os.path.join(args.out, "probe.json"), rows)
            md = probe_markdown(rows)
            write_text(os.path.join(args.out, "probe.md"), md)
        elif args.command == "run":
            try:
                grid = parse_grid(args.grid)
            except ValueError as e:
                raise UserError(str(e)) from None
            table = run_grid(args.sft, grid, args.out, args.config, args.split)
            write_json(os.path.join(args.out, f"study_{args.split}.json"), table)
            md = grid_markdown(table, args.split)
            write_text(os.path.join(args.out, f"study_{args.split}.md"), md)
            plot_grid(table, args.split, os.path.join(args.out, f"study_{args.split}.png"))
        else:
            per_seed = [diagnose_dir(directory) for directory in args.dirs]
            first = args.dirs[0]
            for directory, runs in zip(args.dirs, per_seed):
                if list(runs) != list(per_seed[0]):
                    raise UserError(f"{directory} holds the runs {list(runs)}, {first} {list(per_seed[0])}: "
                                    f"every DIR must hold the same runs")
            training = {run: rs_over_training(os.path.join(first, f"{run}_metrics.jsonl")) for run in per_seed[0]
                        if run != "sft" and os.path.exists(os.path.join(first, f"{run}_metrics.jsonl"))}
            out = args.out or first
            write_json(os.path.join(out, "diagnostics.json"), {"per_seed": per_seed, "rs_over_training": training})
            md = markdown(per_seed, training, first)
            write_text(os.path.join(out, "diagnostics.md"), md)
    except (UserError, subprocess.CalledProcessError) as e:
        print(f"study.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # writing the outputs
        print(f"study.py: error: {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
