"""Evaluate trained runs: accuracy, pass@k, self-verification and voting curves, side by side.

    python evaluate.py out/grpo                          # report written into out/grpo/
    python evaluate.py out/grpo out/laser --out out/cmp  # several runs: --out is required
    python evaluate.py --records out/cmp/records.json    # recompute metrics from saved samples
    python evaluate.py --aggregate res/seed0 res/seed1 res/seed2 --out res   # mean +- std over seeds

For every run this file (1) samples, per test problem (the test split, which training never sees;
`--split validation` for tuning), one greedy solution and N solutions at
temperature 1 together with their last-token self-reward scores r_s (`collect_records`, written by the
rollout owner), (2) turns those records into metrics (`compute_metrics`, pure numpy), and (3) writes
`eval.json`, `eval.md`, `records.json` and, when matplotlib is installed, `scaling.png` and
`rs_hist.png` (`write_report`). It does not train, does not re-verify answers (the `correct` flags come
from verify.py at sampling time) and never needs matplotlib.

Record format (one per problem), produced by `collect_records`:

    {"family": str, "level": int, "gold": str, "problem": str,
     "greedy": {"answer": str | None, "correct": bool},
     "samples": [{"answer": str | None,   # verify.extract_answer of the sample, None if none
                  "correct": bool,        # verifier reward == 1
                  "r_s": float,           # beta_v * (log p(z_c) - c_ref); NaN for truncated samples
                  "mean_logp": float,     # mean token log-prob of the response (self-certainty)
                  "finished": bool}, ...]}   # N samples per problem, the same N for every problem

Metric definitions (LASER.md section 6) and the conventions chosen here:

- accuracy_avg: mean over problems of the fraction of correct samples (avg@N), truncated samples
  included (they are simply incorrect unless the verifier said otherwise). accuracy_greedy: fraction
  of problems whose greedy solution is correct.
- pass_at_k: the unbiased estimator 1 - C(N-c, k) / C(N, k) from all N samples of a problem (c of them
  correct), computed in the stable product form, averaged over problems.
- Self-verification is evaluated on FINISHED samples with a finite r_s only (truncated samples have no
  score; they are counted in n_truncated). The prediction is "correct" iff r_s > 0.5.
    sv_tpr = accuracy on correct solutions, sv_tnr = accuracy on incorrect ones,
    sv_f1  = harmonic mean of TPR and TNR: the paper's "F1" (NOT the precision/recall F1),
    sv_precision = TP / (TP + FP), sv_recall = TPR,
    sv_pr_f1 = ordinary precision/recall F1 = 2TP / (2TP + FP + FN),
    sv_auroc = P(r_s of a correct > r_s of an incorrect), Mann-Whitney, ties count 1/2,
    sv_ece = expected calibration error of clip(r_s, 0, 1) read as P(correct): 10 equal-width bins
             [0, .1), [.1, .2), ..., [.9, 1.0]; ECE = sum_b (n_b / n) * |acc_b - mean_conf_b|.
  A rate whose denominator is empty is NaN (e.g. TNR when every solution is correct); sv_f1 is NaN
  when TPR or TNR is, and 0 when both are 0.
- Answer grouping (`group_answers`): samples are scanned in order; each answer joins the first
  existing group whose representative (its first member's answer) is equivalent, else starts a new
  group. None answers are never grouped nor voted. Identical strings are equivalent without calling
  `equiv` (equivalence is assumed reflexive); other `equiv` results are cached per problem.
- Voting at k (`vote`): the group with the largest total weight wins; a tie in total weight goes to the
  group whose first member comes earliest. The vote is correct iff the winning group's member with the
  largest weight (ties: earliest) has correct=True; members of one group share correctness when the
  verifier is consistent. No answer in the chunk -> the vote fails (counts as incorrect). If answers
  exist but all their weights are 0, the vote falls back to plain majority (all weights 1), so a chunk
  of unscored samples behaves like maj@k instead of failing.
    maj_at_k: weight 1 per sample.
    weighted_at_k: weight clip(r_s, 0, 1); truncated samples (and NaN scores) weigh 0.
    self_certainty_at_k: weight exp(mean_logp) (the self-certainty baseline; truncated samples keep it).
- sv_auroc_within: the AUROC of r_s among one problem's own finished samples, averaged over the
  problems that have both correct and incorrect ones. The pooled sv_auroc also rewards a score that
  only knows which problems are hard; voting and best-of-k need the within-problem ranking.
- Selection at k: best_of_k picks the sample with the highest r_s (NaN counts as -inf; ties -> the
  first); best_of_k_certainty picks the highest mean_logp likewise. Correct iff the picked sample is.
- k runs over 1, 2, 4, ... up to N (N itself is appended when it is not a power of two). For the vote
  and selection metrics at k < N, the N samples are cut into floor(N/k) disjoint consecutive chunks of
  k and the result is averaged over chunks (then over problems); leftover samples are not used.
- Bootstrap CIs (`ci`): problems are resampled with replacement (n_boot resamples, numpy Generator with
  a fixed seed) and every headline metric is recomputed on the resample; the interval is the 2.5 and
  97.5 percentiles, ignoring resamples where the metric is undefined (NaN). Names in `ci`:
  accuracy_avg, accuracy_greedy, sv_f1, sv_auroc, maj_at_n, weighted_at_n, best_of_n (n = n_samples).
- Paired differences (`paired_differences`): with several runs evaluated on the same problems, every
  CI metric of run B minus run A, with a paired bootstrap CI (one resample of problems applied to both
  runs, so the problem-to-problem variance that both share cancels).
- Several seeds (`--aggregate DIR ...`, each DIR holding a records.json of the same runs): every
  headline metric as mean +- std over seeds (std with ddof 1), and the paired differences pooled over
  all (seed, problem) pairs, with the same paired bootstrap.
- NaN is written as null in JSON (`to_jsonable`); `load_records` turns null scores back into NaN.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from typing import Callable, Sequence

import numpy as np

Equiv = Callable[[str, str], bool]

SV_THRESHOLD = 0.5  # LASER.md section 6: predict "correct" when r_s > 0.5
ECE_BINS = 10  # equal-width bins over [0, 1]
CI_LEVEL = 0.95  # percentile bootstrap interval
# name in the results dict -> label in tables; vote/selection metrics, in table order
CURVES = {
    "maj_at_k": "maj",
    "weighted_at_k": "weighted",
    "best_of_k": "best-of (r_s)",
    "self_certainty_at_k": "self-certainty",
    "best_of_k_certainty": "best-of (certainty)",
    "pass_at_k": "pass",
}


# ----------------------------------------------------------------------------------------------------
# pass@k


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Stable product form (Chen et al. 2021): C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i).
    """
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


# ----------------------------------------------------------------------------------------------------
# self-verification


def auroc(scores, labels, weights=None) -> float:
    """Mann-Whitney AUROC: P(score of a positive > score of a negative), ties count 1/2.

    `weights` (optional, >= 0) give each sample a multiplicity (used by the bootstrap). NaN when
    either class is empty (or has zero total weight). O(n log n): sort, then for every positive count
    the negative weight strictly below its score plus half the negative weight at its score.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    w = np.ones_like(s) if weights is None else np.asarray(weights, dtype=np.float64)
    w_pos, w_neg = w * y, w * ~y
    if w_pos.sum() <= 0 or w_neg.sum() <= 0:
        return float("nan")
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    cum_neg = np.concatenate([[0.0], np.cumsum(w_neg[order])])  # (n+1,) negative weight below index
    lo = np.searchsorted(s_sorted, s, side="left")  # first index with score == s
    hi = np.searchsorted(s_sorted, s, side="right")  # one past the last index with score == s
    below = cum_neg[lo]
    tied = cum_neg[hi] - cum_neg[lo]
    return float(np.sum(w_pos * (below + 0.5 * tied)) / (w_pos.sum() * w_neg.sum()))


def expected_calibration_error(probs, labels, weights=None, n_bins: int = ECE_BINS) -> float:
    """ECE of `probs` (in [0, 1]) as P(label): bins [0, 1/B), ..., [(B-1)/B, 1], weighted |acc - conf|."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    w = np.ones_like(p) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if total <= 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # p == 1.0 goes to the last bin
    n_b = np.bincount(bins, weights=w, minlength=n_bins)
    acc_b = np.bincount(bins, weights=w * y, minlength=n_bins)
    conf_b = np.bincount(bins, weights=w * p, minlength=n_bins)
    # sum_b (n_b / n) * |acc_b / n_b - conf_b / n_b| = sum_b |acc_sum_b - conf_sum_b| / n
    return float(np.sum(np.abs(acc_b - conf_b)) / total)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def self_verification_metrics(r_s, correct, finished, weights=None) -> dict:
    """Self-verification of the r_s > 0.5 classifier over finished samples with a finite score.

    Returns tpr, tnr, f1 (harmonic mean of TPR and TNR, the paper's "F1"), precision, recall,
    pr_f1 (precision/recall F1), auroc, ece, n (number of scored samples), n_correct, n_incorrect.
    `weights`: optional per-sample multiplicities (bootstrap).
    """
    r = np.asarray(r_s, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    keep = np.asarray(finished, dtype=bool) & np.isfinite(r)
    w = np.ones_like(r) if weights is None else np.asarray(weights, dtype=np.float64)
    r, y, w = r[keep], y[keep], w[keep]
    pred = r > SV_THRESHOLD
    tp, fn = np.sum(w * (y & pred)), np.sum(w * (y & ~pred))
    tn, fp = np.sum(w * (~y & ~pred)), np.sum(w * (~y & pred))
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    if math.isnan(tpr) or math.isnan(tnr):
        f1 = float("nan")
    else:
        f1 = 2 * tpr * tnr / (tpr + tnr) if tpr + tnr > 0 else 0.0
    return {
        "tpr": tpr,
        "tnr": tnr,
        "f1": f1,
        "precision": _ratio(tp, tp + fp),
        "recall": tpr,
        "pr_f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "auroc": auroc(r, y, w),
        "ece": expected_calibration_error(np.clip(r, 0.0, 1.0), y, w),
        "n": float(w.sum()),
        "n_correct": float(np.sum(w * y)),
        "n_incorrect": float(np.sum(w * ~y)),
    }


# ----------------------------------------------------------------------------------------------------
# grouping, voting, selection


def group_answers(
    answers: Sequence[str | None], weights: Sequence[float], equiv: Equiv, cache: dict | None = None
) -> list[tuple[str, float, list[int]]]:
    """Group answers by equivalence: [(representative, total_weight, member_indices)], by first index.

    Each non-None answer joins the first group whose representative (first member's answer) is
    equivalent, else opens a new group. Identical strings match without calling `equiv`; `equiv`
    results are memoised in `cache` (pass one dict per problem to share it across calls).
    """
    cache = {} if cache is None else cache
    groups: list[tuple[str, float, list[int]]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g, (rep, total, members) in enumerate(groups):
            if rep == a:
                same = True
            else:
                key = (rep, a)
                if key not in cache:
                    cache[key] = bool(equiv(rep, a))
                same = cache[key]
            if same:
                groups[g] = (rep, total + float(weights[i]), members + [i])
                break
        else:
            groups.append((a, float(weights[i]), [i]))
    return groups


def _clean_weights(weights) -> np.ndarray:
    """Weights as float64 >= 0 with NaN -> 0."""
    w = np.asarray(weights, dtype=np.float64)
    return np.where(np.isnan(w), 0.0, np.maximum(w, 0.0))


def vote(
    answers: Sequence[str | None],
    weights: Sequence[float],
    correct: Sequence[bool],
    equiv: Equiv,
    cache: dict | None = None,
) -> bool:
    """Weighted vote over equivalence groups; True iff the winning answer is correct.

    Conventions (see the module docstring): ties in total weight -> earliest group; correctness from
    the winning group's heaviest member (ties: earliest); no answers -> False; answers whose weights
    are all 0 -> plain majority (all weights 1).
    """
    w = _clean_weights(weights)
    answered = [i for i, a in enumerate(answers) if a is not None]
    if not answered:
        return False
    if sum(w[i] for i in answered) <= 0:
        w = np.ones_like(w)
    groups = group_answers(answers, w, equiv, cache)
    best = groups[0]
    for g in groups[1:]:
        if g[1] > best[1]:  # strict: a tie keeps the earlier group
            best = g
    member = max(best[2], key=lambda i: (w[i], -i))
    return bool(correct[member])


def best_of(scores: Sequence[float], correct: Sequence[bool]) -> bool:
    """Pick the sample with the highest score (NaN = -inf, ties -> first); True iff it is correct."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    return bool(correct[int(np.argmax(s))])  # argmax returns the first maximum


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... <= n, plus n itself when it is not a power of two."""
    ks = [1 << j for j in range(n.bit_length()) if (1 << j) <= n]
    return ks if ks[-1] == n else ks + [n]


def chunk_average(fn: Callable[[slice], bool], n: int, k: int) -> float:
    """Mean of fn over the floor(n/k) disjoint consecutive chunks [0:k], [k:2k], ... of n samples."""
    return float(np.mean([fn(slice(j * k, (j + 1) * k)) for j in range(n // k)]))


# ----------------------------------------------------------------------------------------------------
# records -> per-problem table -> metrics


def _default_equiv() -> Equiv:
    try:
        from verify import is_equivalent
    except ImportError as e:
        raise ImportError(
            f"evaluate.py groups answers with verify.is_equivalent, which could not be imported ({e}); "
            "run from the repository root or pass equiv= explicitly"
        ) from e
    return is_equivalent


def validate_records(problems: list) -> int:
    """Check the record format (module docstring); return N, the number of samples per problem."""
    if not isinstance(problems, list) or not problems:
        raise ValueError("records must be a non-empty list of problem records")
    n = None
    for p, rec in enumerate(problems):
        for key in ("family", "greedy", "samples"):
            if key not in rec:
                raise ValueError(f"problem record {p} has no '{key}' field")
        if not rec["samples"]:
            raise ValueError(f"problem record {p} has no samples")
        for j, smp in enumerate(rec["samples"]):
            for key in ("answer", "correct", "r_s", "mean_logp", "finished"):
                if key not in smp:
                    raise ValueError(f"problem record {p}, sample {j} has no '{key}' field")
        if n is None:
            n = len(rec["samples"])
        elif len(rec["samples"]) != n:
            raise ValueError(
                f"problem record {p} has {len(rec['samples'])} samples but record 0 has {n}: "
                "every problem must have the same number of samples"
            )
    return n


def _as_float(x) -> float:
    return float("nan") if x is None else float(x)


def _problem_table(problems: list, equiv: Equiv) -> dict:
    """Per-problem 0/1-or-fraction values for every metric, plus the pooled sample arrays for SV."""
    n = validate_records(problems)
    ks = ks_for(n)
    curves = {name: np.zeros((len(problems), len(ks))) for name in CURVES}  # (P, len(ks))
    acc_avg = np.zeros(len(problems))
    auroc_within = np.full(len(problems), np.nan)  # ranking of one problem's own solutions
    greedy = np.zeros(len(problems))
    r_s, correct, finished, prob_idx = [], [], [], []
    for p, rec in enumerate(problems):
        smp = rec["samples"]
        ans = [s["answer"] for s in smp]
        cor = [bool(s["correct"]) for s in smp]
        fin = [bool(s["finished"]) for s in smp]
        rs = np.array([_as_float(s["r_s"]) for s in smp])
        mlp = np.array([_as_float(s["mean_logp"]) for s in smp])
        w_one = np.ones(n)
        w_rs = np.where(fin, np.clip(np.nan_to_num(rs, nan=0.0), 0.0, 1.0), 0.0)  # LASER.md 6
        with np.errstate(over="ignore"):
            w_cert = np.exp(mlp)  # NaN stays NaN and is treated as weight 0 by vote()
        cache: dict = {}  # equivalence results shared by every vote of this problem

        def voted(w):  # chunk slice -> is the w-weighted vote over that chunk correct?
            return lambda sl: vote(ans[sl], w[sl], cor[sl], equiv, cache)

        def picked(score):  # chunk slice -> is the highest-scoring sample of that chunk correct?
            return lambda sl: best_of(score[sl], cor[sl])

        selectors = {
            "maj_at_k": voted(w_one),
            "weighted_at_k": voted(w_rs),
            "best_of_k": picked(rs),
            "self_certainty_at_k": voted(w_cert),
            "best_of_k_certainty": picked(mlp),
        }
        acc_avg[p] = np.mean(cor)
        ok = np.array(fin) & np.isfinite(rs)
        auroc_within[p] = auroc(rs[ok], np.array(cor)[ok])  # NaN unless both classes occur
        greedy[p] = float(bool(rec["greedy"]["correct"]))
        for j, k in enumerate(ks):
            for name, fn in selectors.items():
                curves[name][p, j] = chunk_average(fn, n, k)
            curves["pass_at_k"][p, j] = pass_at_k(n, sum(cor), k)
        r_s.append(rs)
        correct.append(cor)
        finished.append(fin)
        prob_idx.append(np.full(n, p))
    return {
        "n": n,
        "ks": ks,
        "family": [str(rec["family"]) for rec in problems],
        "acc_avg": acc_avg,
        "auroc_within": auroc_within,
        "greedy": greedy,
        "curves": curves,
        "r_s": np.concatenate(r_s),
        "correct": np.concatenate(correct).astype(bool),
        "finished": np.concatenate(finished).astype(bool),
        "prob_idx": np.concatenate(prob_idx),
    }


SV_KEYS = ("tpr", "tnr", "f1", "precision", "recall", "pr_f1", "auroc", "ece")
CI_METRICS = ["accuracy_avg", "accuracy_greedy", "sv_f1", "sv_auroc", "maj_at_n", "weighted_at_n",
              "best_of_n"]
FAMILY_METRICS = ["accuracy_avg", "accuracy_greedy", "sv_f1", "sv_auroc", "maj_at_n", "weighted_at_n"]


def _aggregate(table: dict, w: np.ndarray) -> dict:
    """Metrics of the problem set in which problem p appears w[p] times (w: (P,) multiplicities)."""
    total = w.sum()
    sv = self_verification_metrics(table["r_s"], table["correct"], table["finished"], w[table["prob_idx"]])
    out = {
        "accuracy_avg": float(w @ table["acc_avg"] / total),
        "accuracy_greedy": float(w @ table["greedy"] / total),
        **{f"sv_{key}": sv[key] for key in SV_KEYS},
    }
    # sv_auroc pools samples of all problems, so a score that only knows which problems are hard
    # already ranks well; sv_auroc_within averages the AUROC over problems with both correct and
    # incorrect samples: it measures telling one problem's good solutions from its bad ones, which
    # is what weighted voting and best-of-k need.
    aw = table["auroc_within"]
    has = np.isfinite(aw) & (w > 0)
    out["sv_auroc_within"] = float(w[has] @ aw[has] / w[has].sum()) if has.any() else math.nan
    for name, values in table["curves"].items():
        out[name] = {str(k): float(w @ values[:, j] / total) for j, k in enumerate(table["ks"])}
    n = str(table["n"])
    out["maj_at_n"] = out["maj_at_k"][n]
    out["weighted_at_n"] = out["weighted_at_k"][n]
    out["best_of_n"] = out["best_of_k"][n]
    return out


def bootstrap_ci(table: dict, n_boot: int, seed: int) -> dict[str, list[float]]:
    """95% percentile intervals of CI_METRICS over n_boot resamples of the problems (with replacement)."""
    n_prob = len(table["acc_avg"])
    rng = np.random.default_rng(seed)
    values = {name: np.full(n_boot, np.nan) for name in CI_METRICS}
    for b in range(n_boot):
        mult = np.bincount(rng.integers(0, n_prob, size=n_prob), minlength=n_prob).astype(np.float64)
        res = _aggregate(table, mult)
        for name in CI_METRICS:
            values[name][b] = res[name]
    lo_q, hi_q = 50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL)
    ci = {}
    for name, v in values.items():
        v = v[np.isfinite(v)]
        ci[name] = [float(np.percentile(v, q)) for q in (lo_q, hi_q)] if len(v) else [math.nan, math.nan]
    return ci


def compute_metrics(problems: list, n_boot: int = 1000, seed: int = 0, equiv: Equiv | None = None) -> dict:
    """All metrics of one run's records (format and definitions: module docstring).

    Keys: accuracy_avg, accuracy_greedy, sv_{tpr,tnr,f1,precision,recall,pr_f1,auroc,ece}; the curves
    maj_at_k, weighted_at_k, best_of_k, self_certainty_at_k, best_of_k_certainty, pass_at_k (each
    {str(k): value}) and their @N shortcuts maj_at_n, weighted_at_n, best_of_n; counts n_problems,
    n_samples (per problem), n_samples_total, n_truncated, n_sv, n_sv_correct; ks; ci {name: [lo, hi]};
    bootstrap settings; per_family {family: {...}}. NaN stays a float here: `to_jsonable` before JSON.
    `equiv` defaults to verify.is_equivalent (imported lazily).
    """
    equiv = _default_equiv() if equiv is None else equiv
    table = _problem_table(problems, equiv)
    n_prob = len(problems)
    out = _aggregate(table, np.ones(n_prob))
    finished = table["finished"]
    scored = finished & np.isfinite(table["r_s"])
    out.update(
        n_problems=n_prob,
        n_samples=table["n"],  # per problem
        n_samples_total=int(len(finished)),
        n_truncated=int(np.sum(~finished)),
        n_sv=int(np.sum(scored)),  # finished samples with a score: the self-verification set
        n_sv_correct=int(np.sum(scored & table["correct"])),
        ks=table["ks"],
    )
    out["ci"] = bootstrap_ci(table, n_boot, seed) if n_boot > 0 else {m: [math.nan] * 2 for m in CI_METRICS}
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": CI_LEVEL}
    fam = np.array(table["family"])
    out["per_family"] = {}
    for f in sorted(set(table["family"])):
        res = _aggregate(table, (fam == f).astype(np.float64))
        out["per_family"][f] = {m: res[m] for m in FAMILY_METRICS} | {"n_problems": int(np.sum(fam == f))}
    return out


def paired_differences(problems_a: list, problems_b: list, n_boot: int = 1000, seed: int = 0,
                       equiv: Equiv | None = None) -> dict:
    """CI_METRICS of run B minus run A on the same problems (same order): {name: {"diff", "ci"}}.
    The bootstrap resamples problems once per draw and applies the draw to both runs."""
    if not same_problems(problems_a, problems_b):
        raise ValueError("paired differences need two runs evaluated on the same problems in the same order")
    equiv = _default_equiv() if equiv is None else equiv
    ta, tb = _problem_table(problems_a, equiv), _problem_table(problems_b, equiv)
    n_prob = len(problems_a)
    ones = np.ones(n_prob)
    full_a, full_b = _aggregate(ta, ones), _aggregate(tb, ones)
    rng = np.random.default_rng(seed)
    boot = {name: np.full(n_boot, np.nan) for name in CI_METRICS}
    for i in range(n_boot):
        mult = np.bincount(rng.integers(0, n_prob, size=n_prob), minlength=n_prob).astype(np.float64)
        ra, rb = _aggregate(ta, mult), _aggregate(tb, mult)
        for name in CI_METRICS:
            boot[name][i] = rb[name] - ra[name]
    lo_q, hi_q = 50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL)
    out = {}
    for name in CI_METRICS:
        v = boot[name][np.isfinite(boot[name])]
        ci = [float(np.percentile(v, q)) for q in (lo_q, hi_q)] if len(v) else [math.nan, math.nan]
        out[name] = {"diff": full_b[name] - full_a[name], "ci": ci}
    return out


def same_problems(problems_a: list, problems_b: list) -> bool:
    """Whether two runs' records are of the same problems in the same order (by text, else by gold)."""
    ident = lambda rec: rec["problem"] if "problem" in rec else (rec.get("gold"), rec.get("family"))
    return len(problems_a) == len(problems_b) and all(ident(a) == ident(b) for a, b in zip(problems_a, problems_b))


def all_paired_differences(records: dict[str, list], n_boot: int, seed: int, equiv: Equiv | None = None) -> dict:
    """{"B - A": paired_differences(A, B)} for every pair of runs (A before B in the given order)."""
    return {f"{b} - {a}": paired_differences(records[a], records[b], n_boot, seed, equiv)
            for a, b in _pairs(list(records))}


HEADLINE = ["accuracy_avg", "accuracy_greedy", "maj_at_n", "weighted_at_n", "best_of_n", "sv_tpr", "sv_tnr",
            "sv_f1", "sv_auroc", "sv_auroc_within", "sv_ece"]


def aggregate_seeds(per_seed: list[dict[str, list]], n_boot: int = 1000, seed: int = 0,
                    equiv: Equiv | None = None) -> dict:
    """Several seeds' records ({run: problems}, the same runs in each): per run and headline metric the
    per-seed values, their mean and std; paired differences per seed and pooled over (seed, problem)."""
    runs = list(per_seed[0])
    if any(list(r) != runs for r in per_seed):
        raise ValueError(f"every seed must hold the same runs {runs}")
    metrics = [{name: compute_metrics(rec[name], n_boot=0, equiv=equiv) for name in runs} for rec in per_seed]
    out: dict = {"n_seeds": len(per_seed), "runs": {}}
    for name in runs:
        out["runs"][name] = {}
        for key in HEADLINE + ["self_certainty_at_n", "pass_at_n"]:
            out["runs"][name][key] = _stats([_metric(m[name], key) for m in metrics])
    pooled = {name: [p for rec in per_seed for p in rec[name]] for name in runs}
    out["paired_pooled"] = all_paired_differences(pooled, n_boot, seed, equiv)
    out["paired_per_seed"] = {f"{b} - {a}": {k: _stats([m[b][k] - m[a][k] for m in metrics]) for k in CI_METRICS}
                              for a, b in _pairs(runs)}
    return out


def _stats(values: list[float]) -> dict:
    """{"values", "mean", "std"} of per-seed values; std with ddof 1 (NaN for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    return {"values": [float(x) for x in v], "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan}


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def _metric(m: dict, key: str) -> float:
    if key in ("self_certainty_at_n", "pass_at_n"):
        return m[key.replace("_n", "_k")][str(m["n_samples"])]
    return m[key]


# ----------------------------------------------------------------------------------------------------
# JSON, records files


def to_jsonable(obj):
    """Recursively convert to plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temp file in the target directory, fsync it, then os.replace it into
    place: a crash leaves the old file or the new one, never half of one. Used for every file we write."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the permissions of an ordinary new file, not mkstemp's 0600
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # and so is the rename
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def _write_json(path: str, obj) -> None:
    write_text(path, json.dumps(to_jsonable(obj), indent=1, allow_nan=False) + "\n")


def load_records(path: str) -> dict[str, list]:
    """Load a records.json ({run name: [problem records]}); null r_s / mean_logp become NaN."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping run names to lists of problem records")
    for problems in data.values():
        for rec in problems:
            for smp in rec.get("samples", []):
                for key in ("r_s", "mean_logp"):
                    if key in smp:
                        smp[key] = _as_float(smp[key])
    return data


# ----------------------------------------------------------------------------------------------------
# report


def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def _headline_rows(results: dict[str, dict], with_ci: bool = True) -> list[tuple[str, list[str]]]:
    """(label, one cell per run) for the headline table."""
    spec = [  # (label, key in the metrics dict)
        ("accuracy avg@N", "accuracy_avg"),
        ("accuracy greedy", "accuracy_greedy"),
        ("maj@N", "maj_at_n"),
        ("weighted@N (r_s)", "weighted_at_n"),
        ("best-of-N (r_s)", "best_of_n"),
        ("self-certainty@N", None),
        ("pass@N", None),
        ("SV TPR (correct judged correct)", "sv_tpr"),
        ("SV TNR (incorrect judged incorrect)", "sv_tnr"),
        ("SV F1 = hmean(TPR, TNR) [paper]", "sv_f1"),
        ("SV precision", "sv_precision"),
        ("SV precision/recall F1", "sv_pr_f1"),
        ("SV AUROC", "sv_auroc"),
        ("SV AUROC within a problem", "sv_auroc_within"),
        ("SV ECE (10 bins)", "sv_ece"),
        ("problems", "n_problems"),
        ("samples per problem N", "n_samples"),
        ("truncated samples", "n_truncated"),
    ]
    rows = []
    for label, key in spec:
        cells = []
        for m in results.values():
            if key is None:  # @N entry of a curve
                curve = "self_certainty_at_k" if label.startswith("self") else "pass_at_k"
                value = m.get(curve, {}).get(str(m.get("n_samples")))
                cells.append(_fmt(value))
                continue
            cell = _fmt(m.get(key))
            ci = m.get("ci", {}).get(key)
            if with_ci and ci is not None and cell != "-":
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
    names = list(results)
    parts = [
        "# Evaluation",
        "",
        "Headline numbers with 95% bootstrap CIs over problems. N = samples per problem at temperature 1. "
        "SV = self-verification with r_s > 0.5 on finished samples; the paper's F1 is the harmonic mean "
        "of TPR and TNR. Definitions: docstring of evaluate.py.",
        "",
        _md_table(["metric"] + names, [[label] + cells for label, cells in _headline_rows(results)]),
        "",
        "## Scaling with k",
        "",
        "Vote/selection metrics at k < N are averaged over the floor(N/k) disjoint chunks of k samples; "
        "pass@k is the unbiased estimator from all N samples.",
    ]
    for name, m in results.items():
        ks = m.get("ks") or sorted((int(k) for k in m.get("maj_at_k", {})))
        rows = [[str(k)] + [_fmt(m.get(c, {}).get(str(k))) for c in CURVES] for k in ks]
        parts += ["", f"### {name}", "", _md_table(["k"] + list(CURVES.values()), rows)]
    parts += ["", "## Per family", ""]
    for name, m in results.items():
        fams = m.get("per_family", {})
        header = ["family", "problems", "avg@N", "greedy", "SV F1 (hmean TPR,TNR)", "SV AUROC", "maj@N",
                  "weighted@N"]
        rows = [[f, _fmt(d.get("n_problems"))] + [_fmt(d.get(k)) for k in FAMILY_METRICS]
                for f, d in fams.items()]
        parts += [f"### {name}", "", _md_table(header, rows), ""]
    return "\n".join(parts)


def _paired_markdown(paired: dict[str, dict], title: str) -> str:
    """Rows: CI metrics; columns: "B - A" pairs, each cell diff [95% paired CI]."""
    pairs = list(paired)
    rows = [[name] + [f"{_fmt(paired[p][name]['diff'], 3)} [{_fmt(paired[p][name]['ci'][0])}, "
                      f"{_fmt(paired[p][name]['ci'][1])}]" for p in pairs] for name in CI_METRICS]
    return "\n".join([f"## {title}", "", "Run B minus run A on the same problems, with 95% paired bootstrap "
                      "CIs (one resample of problems applied to both runs).", "",
                      _md_table(["metric"] + pairs, rows), ""])


def summary_markdown(summary: dict) -> str:
    """The multi-seed summary (`aggregate_seeds`) as markdown."""
    runs = list(summary["runs"])
    pm = lambda d: f"{_fmt(d['mean'])} ± {_fmt(d['std'])}"
    rows = [[key] + [pm(summary["runs"][r][key]) for r in runs] for key in summary["runs"][runs[0]]]
    per_seed = summary["paired_per_seed"]
    seed_rows = [[name] + [pm(per_seed[p][name]) for p in per_seed] for name in CI_METRICS]
    return "\n".join([
        f"# Evaluation over {summary['n_seeds']} seeds", "",
        "Mean ± std (ddof 1) over training seeds of each run's metric on the same test problems.", "",
        _md_table(["metric"] + runs, rows), "",
        _paired_markdown(summary["paired_pooled"], "Paired differences, pooled over (seed, problem)"),
        "## Paired differences per seed", "", "Mean ± std over seeds of each seed's difference.", "",
        _md_table(["metric"] + list(per_seed), seed_rows), ""])


def _import_pyplot():
    """matplotlib.pyplot with the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _plot_scaling(plt, results: dict[str, dict], path: str) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False, sharey=True)
    for ax, (name, m) in zip(axes[0], results.items()):
        ks = m.get("ks") or sorted(int(k) for k in m.get("maj_at_k", {}))
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
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def _plot_rs_hist(plt, problems_by_run: dict[str, list], path: str) -> None:
    n_runs = len(problems_by_run)
    fig, axes = plt.subplots(1, n_runs, figsize=(4.5 * n_runs, 3.4), squeeze=False)
    for ax, (name, problems) in zip(axes[0], problems_by_run.items()):
        smp = [s for rec in problems for s in rec["samples"]]
        r = np.array([_as_float(s["r_s"]) for s in smp])
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
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120))
    plt.close(fig)


def write_report(
    results: dict[str, dict], out_dir: str, problems_by_run: dict[str, list] | None = None,
    paired: dict[str, dict] | None = None,
) -> None:
    """Write eval.json ({run: metrics}), eval.md, records.json (when problems_by_run is given),
    paired.json (when `paired` differences are given) and, with matplotlib, scaling.png and
    rs_hist.png (the histogram needs problems_by_run). Atomic writes."""
    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "eval.json"), results)
    md = _markdown(to_jsonable(results)) + "\n"
    if paired:
        _write_json(os.path.join(out_dir, "paired.json"), paired)
        md += "\n" + _paired_markdown(to_jsonable(paired), "Paired differences between runs")
    write_text(os.path.join(out_dir, "eval.md"), md)
    if problems_by_run is not None:
        _write_json(os.path.join(out_dir, "records.json"), problems_by_run)
    plt = _import_pyplot()
    if plt is None:
        print("matplotlib not installed: skipping plots (pip install matplotlib)")
        return
    _plot_scaling(plt, to_jsonable(results), os.path.join(out_dir, "scaling.png"))
    if problems_by_run:
        _plot_rs_hist(plt, problems_by_run, os.path.join(out_dir, "rs_hist.png"))


# ----------------------------------------------------------------------------------------------------
# sampling (rollout owner) and CLI


def collect_records(
    run_dir: str,
    n_samples: int = 16,
    n_problems: int | None = None,
    seed: int = 0,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    device=None,
    split: str = "test",
) -> list[dict]:
    """Load the run's final checkpoint and sample the held-out problems; return one record per problem.

    run_dir: a training run directory (config, tokenizer, checkpoint). n_samples: N samples per problem
    at temperature 1 (plus one greedy solution). n_problems: how many held-out problems (None: all).
    seed: sampling seed. max_new_tokens: generation limit (None: the run's training setting).
    batch_size: sequences per forward pass. device: torch device (None: CPU). split: "test" (the
    default: problems no training or tuning has seen) or "validation" (for tuning and studies).

    Each record (see the module docstring):
        {"family": str, "level": int, "gold": str, "problem": str,
         "greedy": {"answer": str | None, "correct": bool},
         "samples": [{"answer": str | None, "correct": bool, "r_s": float (NaN if truncated),
                      "mean_logp": float, "finished": bool}, ...]}      # exactly n_samples entries
    r_s = beta_v * (log p(z_c | x, y) - c_ref) with the beta_v and c_ref saved in the checkpoint.
    """
    import torch

    import train
    from rollout import sample
    from verify import extract_answer, reward

    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tok, ck = train.load_run(run_dir, device)
    cfg = train.Config(**{k: v for k, v in ck["config"].items() if k in train.Config.__dataclass_fields__})
    max_new = max_new_tokens or cfg.max_new_tokens
    beta_v, c_ref = ck.get("beta_v", cfg.beta_v), ck.get("c_ref")
    if c_ref is None:  # an SFT run is its own reference policy: measure c_ref on it (LASER.md section 5)
        c_ref, c_std, _ = train.calibrate_c_ref(model, tok, cfg, device)
        print(f"{run_dir}: no c_ref in checkpoint; measured on this model: {c_ref:.3f} (std {c_std:.3f})")
    problems = train.heldout_problems(cfg, split, n_problems)
    gen = torch.Generator(device=device).manual_seed(seed)
    per_batch = max(1, batch_size // n_samples)  # prompts per sampling call
    records = []
    for i in range(0, len(problems), per_batch):
        chunk = problems[i:i + per_batch]
        prompts = [tok.encode_prompt(p.problem) for p in chunk]
        with train.autocast(device):
            ro = sample(model, prompts, n_samples, max_new, temperature=1.0, generator=gen, tokenizer=tok)
            greedy = sample(model, prompts, 1, max_new, temperature=0, tokenizer=tok)
        r_s = (beta_v * (ro.logp_zc - c_ref)).tolist()
        mean_logp = (ro.logprobs.sum(1) / ro.lengths.clamp(min=1)).tolist()
        for j, p in enumerate(chunk):
            rows = range(j * n_samples, (j + 1) * n_samples)
            records.append({
                "family": p.family, "level": p.level, "gold": p.answer, "problem": p.problem,
                "greedy": {"answer": extract_answer(greedy.texts[j]),
                           "correct": reward(greedy.texts[j], p.answer) == 1.0},
                "samples": [{"answer": extract_answer(ro.texts[r]), "correct": reward(ro.texts[r], p.answer) == 1.0,
                             "r_s": r_s[r], "mean_logp": mean_logp[r], "finished": bool(ro.finished[r])}
                            for r in rows]})
        print(f"  {run_dir}: sampled {min(i + per_batch, len(problems))}/{len(problems)} problems", flush=True)
    return records


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description=(
            "Evaluate one or more training runs on held-out problems: accuracy (greedy and avg@N), "
            "pass@k, self-verification of the last-token self-reward r_s (TPR, TNR, their harmonic mean "
            "= the paper's F1, AUROC, ECE), and maj@k / r_s-weighted voting / best-of-k / self-certainty "
            "curves, with bootstrap 95% CIs and a per-family breakdown. Writes eval.json, eval.md, "
            "records.json and (with matplotlib) scaling.png and rs_hist.png."
        ),
        epilog=(
            "Output directory: with one RUN_DIR the report goes into that run directory; with several "
            "RUN_DIRs --out is required; with --records it defaults to the records file's directory. "
            "records.json holds the sampled records so metrics can be recomputed with --records."
        ),
    )
    parser.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="training run directories to evaluate")
    parser.add_argument("--records", metavar="FILE.json", help="skip sampling: load saved records "
                        "({run name: [problem records]}, e.g. a previous records.json) instead of RUN_DIRs")
    parser.add_argument("--n-samples", type=int, default=16,
                        help="samples per problem at temperature 1, N (default 16)")
    parser.add_argument("--n-problems", type=int, default=None, help="held-out problems to use (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed for sampling and the bootstrap (default 0)")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples for CIs, 0 to skip (default 1000)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (see below)")
    parser.add_argument("--names", default=None, help="comma-separated run names, one per RUN_DIR "
                        "(default: each RUN_DIR's base name)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation length limit (default: the run's training setting)")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="sequences per forward pass when sampling (default 256)")
    parser.add_argument("--split", choices=("test", "validation"), default="test",
                        help="problems to evaluate on: test (default; never seen in training or tuning) or "
                             "validation (for tuning and studies)")
    parser.add_argument("--aggregate", nargs="+", metavar="DIR", default=None,
                        help="summarise several seeds: each DIR holds a records.json of the same runs; writes "
                             "summary.json and summary.md (mean ± std, pooled paired differences) into --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"evaluate.py: error: {msg}", file=sys.stderr)
        return 2

    for flag, value, low in (("--n-samples", args.n_samples, 1), ("--n-boot", args.n_boot, 0),
                             ("--n-problems", args.n_problems, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--batch-size", args.batch_size, 1)):
        if value is not None and value < low:
            return fail(f"{flag} must be >= {low}, got {value}")
    if sum(map(bool, (args.records, args.run_dirs, args.aggregate))) > 1:
        return fail("give one of RUN_DIRs, --records or --aggregate")
    if args.aggregate:
        if not args.out:
            return fail("--aggregate needs --out DIR")
        try:
            per_seed = [load_records(os.path.join(d, "records.json")) for d in args.aggregate]
            summary = aggregate_seeds(per_seed, n_boot=args.n_boot, seed=args.seed)
        except (OSError, ValueError, KeyError) as e:
            return fail(f"cannot aggregate {args.aggregate}: {e}")
        _write_json(os.path.join(args.out, "summary.json"), summary)
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
    else:
        if not args.run_dirs:
            return fail("give at least one RUN_DIR (or --records FILE.json); see --help")
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
              f"batch_size={args.batch_size} n_boot={args.n_boot} out={out_dir}")
        records = {}
        import train  # noqa: E402 (only sampling needs torch and the trainer)
        for name, run_dir in zip(names, args.run_dirs):
            try:
                records[name] = collect_records(
                    run_dir, n_samples=args.n_samples, n_problems=args.n_problems, seed=args.seed,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, device=None, split=args.split,
                )
            except (train.UserError, ValueError) as e:  # unreadable runs, sizes that do not fit the model
                return fail(str(e))
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
