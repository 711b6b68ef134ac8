"""Metrics of sampled solutions (docs/laser.md §6): pure numpy, no torch, no file I/O.

A run's records, one per problem, every problem with the same number N of samples at temperature 1:

    {"family": str, "level": int, "gold": str, "problem": str,
     "greedy": {"answer": str | None, "correct": bool},
     "samples": [{"answer": str | None,   # verify.extract_answer of the sample, None if none
                  "correct": bool,        # verifier reward == 1
                  "r_s": float,           # beta_v * (log p(z_c) - c_ref); NaN for truncated samples
                  "mean_logp": float,     # mean token log-prob of the response (self-certainty)
                  "finished": bool}, ...]}

`compute_metrics` gives accuracy (avg@N, truncated samples included, and greedy), unbiased pass@k,
self-verification of the r_s > 0.5 classifier, votes and best-of selection at k = 1, 2, 4, ... N, bootstrap
CIs over problems and a per-family breakdown; `paired_differences` and `aggregate_seeds` compare runs and
seeds. Each function's docstring states its conventions. A metric with an empty denominator is NaN
(a float here; JSON conversion is the caller's). `correct` is taken as given, never re-verified; answers
are compared only to group them, with verify.is_equivalent unless `equiv` is passed.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

Equiv = Callable[[str, str], bool]

SV_THRESHOLD = 0.5  # docs/laser.md §6: predict "correct" when r_s > 0.5
ECE_BINS = 10  # equal-width bins over [0, 1]
CI_LEVEL = 0.95  # percentile bootstrap interval
# name in the results dict -> label in tables; vote/selection metrics, in table order
CURVES = {"maj_at_k": "maj", "weighted_at_k": "weighted", "best_of_k": "best-of (r_s)",
          "self_certainty_at_k": "self-certainty", "best_of_k_certainty": "best-of (certainty)", "pass_at_k": "pass"}
SV_KEYS = ("tpr", "tnr", "f1", "precision", "recall", "pr_f1", "auroc", "ece")
CI_METRICS = ["accuracy_avg", "accuracy_greedy", "sv_f1", "sv_auroc", "maj_at_n", "weighted_at_n", "best_of_n"]
FAMILY_METRICS = ["accuracy_avg", "accuracy_greedy", "sv_f1", "sv_auroc", "maj_at_n", "weighted_at_n"]
HEADLINE = ["accuracy_avg", "accuracy_greedy", "maj_at_n", "weighted_at_n", "best_of_n", "sv_tpr", "sv_tnr",
            "sv_f1", "sv_auroc", "sv_auroc_within", "sv_ece", "self_certainty_at_n", "pass_at_n"]  # over seeds


# ----------------------------------------------------------------------- pass@k, self-verification

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k), in the stable
    product form C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i) (Chen et al. 2021)."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def auroc(scores, labels, weights=None) -> float:
    """Mann-Whitney AUROC: P(score of a positive > score of a negative), ties count 1/2; optional
    weights >= 0 are sample multiplicities. NaN when a class is empty. O(n log n)."""
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
    acc_b = np.bincount(bins, weights=w * y, minlength=n_bins)
    conf_b = np.bincount(bins, weights=w * p, minlength=n_bins)
    # sum_b (n_b / n) * |acc_b / n_b - conf_b / n_b| with n_b the bin's weight = sum_b |acc_b - conf_b| / n
    return float(np.sum(np.abs(acc_b - conf_b)) / total)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den > 0 else float("nan")


def self_verification_metrics(r_s, correct, finished, weights=None) -> dict:
    """The r_s > 0.5 classifier on finished samples with a finite r_s (optional weights: multiplicities).

    Keys: tpr, tnr, f1 (harmonic mean of TPR and TNR: the paper's F1; NaN if either is, 0 if both are 0),
    precision, recall (= tpr), pr_f1 (2TP / (2TP + FP + FN)), auroc, ece (of clip(r_s, 0, 1)), n,
    n_correct, n_incorrect."""
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
    return {"tpr": tpr, "tnr": tnr, "f1": f1, "precision": _ratio(tp, tp + fp), "recall": tpr,
            "pr_f1": _ratio(2 * tp, 2 * tp + fp + fn), "auroc": auroc(r, y, w),
            "ece": expected_calibration_error(np.clip(r, 0.0, 1.0), y, w), "n": float(w.sum()),
            "n_correct": float(np.sum(w * y)), "n_incorrect": float(np.sum(w * ~y))}


# --------------------------------------------------------------------- grouping, voting, selection

def group_answers(
    answers: Sequence[str | None], weights: Sequence[float], equiv: Equiv, cache: dict | None = None
) -> list[tuple[str, float, list[int]]]:
    """[(representative, total_weight, member_indices)] in order of first member. Each non-None answer
    joins the first group whose representative (first member's answer) is equivalent, else opens one.
    Identical strings match without calling `equiv`; its results are memoised in `cache` (one per problem)."""
    cache = {} if cache is None else cache
    groups: list[tuple[str, float, list[int]]] = []
    for i, a in enumerate(answers):
        if a is None:
            continue
        for g, (rep, total, members) in enumerate(groups):
            if rep != a and (rep, a) not in cache:
                cache[(rep, a)] = bool(equiv(rep, a))
            if rep == a or cache[(rep, a)]:
                groups[g] = (rep, total + float(weights[i]), members + [i])
                break
        else:
            groups.append((a, float(weights[i]), [i]))
    return groups


def vote_weights(r_s, finished) -> np.ndarray:
    """Eq. 15's vote weights, docs/laser.md §6: clip(r_s, 0, 1) for a finished response, NaN read as 0; 0 for a
    truncated one (no EOS, so no r_s)."""
    rs = np.asarray(r_s, dtype=np.float64)
    return np.where(np.asarray(finished, dtype=bool), np.clip(np.nan_to_num(rs, nan=0.0), 0.0, 1.0), 0.0)


def _nonnegative(weights: Sequence[float]) -> np.ndarray:
    """A vote's weights as vote() and SubsetVotes read them: NaN and negative weights count 0."""
    w = np.asarray(weights, dtype=np.float64)
    return np.where(np.isnan(w), 0.0, np.maximum(w, 0.0))


def vote(answers: Sequence[str | None], weights: Sequence[float], correct: Sequence[bool], equiv: Equiv,
         cache: dict | None = None) -> float:
    """Weighted vote over equivalence groups: 1.0 if the heaviest group is correct, 0.0 if not, and where
    groups tie for the most weight, the share of them that are correct (the expected result of a random
    tie-break; a tie broken by sample order would add noise to every vote@k). Weights: NaN -> 0, clipped
    at 0. A group is correct as its heaviest member is (ties: the earliest). No answer -> 0.0; answers
    whose weights are all 0 -> plain majority. The definition, one vote at a time: the curves run
    SubsetVotes, its vectorised form over many subsets, which the tests hold to this on every subset."""
    w = _nonnegative(weights)
    answered = [i for i, a in enumerate(answers) if a is not None]
    if not answered:
        return 0.0
    if sum(w[i] for i in answered) <= 0:
        w = np.ones_like(w)
    groups = group_answers(answers, w, equiv, cache)
    top = max(g[1] for g in groups)
    winners = [max(members, key=lambda i: (w[i], -i)) for _, total, members in groups if total == top]
    return float(np.mean([bool(correct[i]) for i in winners]))


def best_of(scores: Sequence[float], correct: Sequence[bool]) -> bool:
    """Pick the sample with the highest score (NaN = -inf, ties -> first); True iff it is correct. The
    definition; the curves run subset_best_of, held to it by the tests."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)
    return bool(correct[int(np.argmax(s))])  # argmax returns the first maximum


def ks_for(n: int) -> list[int]:
    """1, 2, 4, ... <= n, plus n itself when it is not a power of two."""
    ks = [1 << j for j in range(n.bit_length()) if (1 << j) <= n]
    return ks if ks[-1] == n else ks + [n]


MAX_SUBSETS = 20_000  # k-subsets a vote or best-of curve averages over at one k (all of them up to this many)


def k_subsets(n: int, k: int, cap: int = MAX_SUBSETS, seed: int = 0) -> np.ndarray:
    """(S, k) sample indices, each row ascending: every k-subset of the n samples when there are at most
    `cap` of them (N = 16: all, 12,870 at k = 8), else `cap` drawn uniformly at random (a fixed seed, so
    the same rows every time)."""
    if math.comb(n, k) <= cap:
        return np.array(list(itertools.combinations(range(n), k)), dtype=np.int64).reshape(-1, k)
    rng = np.random.default_rng(seed)
    return np.sort(np.argsort(rng.random((cap, n)), axis=1)[:, :k], axis=1)


def answer_labels(answers: Sequence[str | None], equiv: Equiv, cache: dict | None = None) -> np.ndarray:
    """Each answer's equivalence group (group_answers over all of them, 0, 1, ... in order of first
    member); -1 for no answer."""
    labels = np.full(len(answers), -1, dtype=np.int64)
    for g, (_, _, members) in enumerate(group_answers(answers, np.ones(len(answers)), equiv, cache)):
        labels[members] = g
    return labels


class SubsetVotes:
    """vote() over each row of `subsets` at once, with the answers' groups given as `labels` (answer_labels:
    groups made over all the samples, which is a subset's own grouping when equivalence is transitive).
    Made once per problem and k; called with each weighting: (S,) floats, 1 or 0, or a tie's share of
    right groups."""

    def __init__(self, labels: np.ndarray, correct: Sequence[bool], subsets: np.ndarray):
        self.labels, self.correct, self.n_rows = labels, [bool(c) for c in correct], len(subsets)
        self.n_groups = max(int(labels.max()) + 1 if len(labels) else 0, 1)
        self.member = np.zeros((self.n_rows, len(labels)), dtype=bool)
        self.member[np.arange(self.n_rows)[:, None], subsets] = True
        self.member &= (labels >= 0)[None, :]  # the answered samples of each subset
        self.rows, self.cols = np.nonzero(self.member)  # row by row, each in sample order (as vote() sums)
        self.slot = self.rows * self.n_groups + labels[self.cols]
        size = self.n_rows * self.n_groups
        self.present = np.bincount(self.slot, minlength=size).reshape(self.n_rows, self.n_groups) > 0
        self.right_in_order = self._right_by(range(len(labels)))  # (ties, and the unweighted fallback)

    def _right_by(self, order) -> np.ndarray:  # (S, G): is each group's first member in `order` correct (-1: none)
        right = np.full((self.n_rows, self.n_groups), -1, dtype=np.int64)
        for i in order:
            g = self.labels[i]
            if g >= 0:
                right[self.member[:, i] & (right[:, g] < 0), g] = self.correct[i]
        return right

    def __call__(self, weights: Sequence[float]) -> np.ndarray:
        w = _nonnegative(weights)
        size = self.n_rows * self.n_groups
        unweighted = np.bincount(self.rows, weights=w[self.cols], minlength=self.n_rows) <= 0  # plain majority
        wt = np.where(unweighted[self.rows], 1.0, w[self.cols])
        total = np.bincount(self.slot, weights=wt, minlength=size).reshape(self.n_rows, self.n_groups)
        top = np.where(self.present, total, -np.inf).max(1)
        winners = self.present & (total == top[:, None])
        # a group is right as its heaviest member in the subset is (ties: the earliest)
        order = np.lexsort((np.arange(len(w)), -w))
        if (order == np.arange(len(w))).all():  # (equal weights: the sample order)
            right = self.right_in_order
        else:
            right = np.where(unweighted[:, None], self.right_in_order, self._right_by(order))
        share = (winners & (right == 1)).sum(1) / np.maximum(winners.sum(1), 1)
        return np.where(self.member.any(1), share, 0.0)


def subset_best_of(scores: Sequence[float], correct: Sequence[bool], subsets: np.ndarray) -> np.ndarray:
    """best_of() over each row of `subsets` at once: (S,) bools."""
    s = np.asarray(scores, dtype=np.float64)
    s = np.where(np.isnan(s), -np.inf, s)[subsets]
    pick = subsets[np.arange(len(subsets)), np.argmax(s, axis=1)]  # argmax: the first maximum
    return np.asarray(correct, dtype=bool)[pick]


# --------------------------------------------------------- records -> per-problem table -> metrics

def validate_records(problems: list) -> int:
    """Check the record format (module docstring); return N, the number of samples per problem."""
    if not isinstance(problems, list) or not problems:
        raise ValueError("records must be a non-empty list of problem records")
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
        if len(rec["samples"]) != len(problems[0]["samples"]):
            raise ValueError(f"problem record {p} has {len(rec['samples'])} samples but record 0 has "
                             f"{len(problems[0]['samples'])}: every problem must have the same number of samples")
    return len(problems[0]["samples"])


def as_float(x) -> float:
    """A score read from JSON: null -> NaN."""
    return float("nan") if x is None else float(x)


def _problem_table(problems: list, equiv: Equiv | None) -> dict:
    """Per-problem values of every metric, plus the pooled sample arrays for self-verification.

    Votes: maj (weight 1), weighted (clip(r_s, 0, 1); truncated samples and NaN weigh 0), self-certainty
    (exp(mean_logp)); best-of by r_s and by mean_logp. At k < N each is averaged over the k-subsets of the
    N samples (k_subsets: all of them, or MAX_SUBSETS drawn at random where there are more)."""
    n = validate_records(problems)
    if equiv is None:
        from verify import is_equivalent as equiv  # imported here: the tests pass their own `equiv`
    ks = ks_for(n)
    subsets = {k: k_subsets(n, k) for k in ks}
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
        rs = np.array([as_float(s["r_s"]) for s in smp])
        # a truncated sample is no solution: best-of by certainty never picks it (NaN), as best-of by r_s
        # (whose r_s it lacks) does not; a repetition loop cut at the limit often has the highest mean log-prob
        mlp = np.where(fin, [as_float(s["mean_logp"]) for s in smp], np.nan)
        w_rs = vote_weights(rs, fin)
        with np.errstate(over="ignore"):
            w_cert = np.exp(mlp)  # NaN stays NaN and is treated as weight 0 by vote()
        labels = answer_labels(ans, equiv)
        votes = {"maj_at_k": np.ones(n), "weighted_at_k": w_rs, "self_certainty_at_k": w_cert}
        picks = {"best_of_k": rs, "best_of_k_certainty": mlp}
        acc_avg[p] = np.mean(cor)
        ok = np.array(fin) & np.isfinite(rs)
        auroc_within[p] = auroc(rs[ok], np.array(cor)[ok])  # NaN unless both classes occur
        greedy[p] = float(bool(rec["greedy"]["correct"]))
        for j, k in enumerate(ks):
            voter = SubsetVotes(labels, cor, subsets[k])
            for name, w in votes.items():
                curves[name][p, j] = float(np.mean(voter(w)))
            for name, score in picks.items():
                curves[name][p, j] = float(np.mean(subset_best_of(score, cor, subsets[k])))
            curves["pass_at_k"][p, j] = pass_at_k(n, sum(cor), k)
        r_s.append(rs)
        correct.append(cor)
        finished.append(fin)
        prob_idx.append(np.full(n, p))
    return {"n": n, "ks": ks, "family": [str(rec["family"]) for rec in problems], "acc_avg": acc_avg,
            "auroc_within": auroc_within, "greedy": greedy, "curves": curves, "r_s": np.concatenate(r_s),
            "correct": np.concatenate(correct).astype(bool), "finished": np.concatenate(finished).astype(bool),
            "prob_idx": np.concatenate(prob_idx)}


def _aggregate(table: dict, w: np.ndarray) -> dict:
    """Metrics of the problem set in which problem p appears w[p] times (w: (P,) multiplicities)."""
    total = w.sum()
    sv = self_verification_metrics(table["r_s"], table["correct"], table["finished"], w[table["prob_idx"]])
    out = {"accuracy_avg": float(w @ table["acc_avg"] / total), "accuracy_greedy": float(w @ table["greedy"] / total),
           **{f"sv_{key}": sv[key] for key in SV_KEYS}}
    # The pooled sv_auroc also rewards a score that only knows which problems are hard; voting and
    # best-of-k need the ranking within a problem: the AUROC averaged over problems with both classes.
    aw = table["auroc_within"]
    has = np.isfinite(aw) & (w > 0)
    out["sv_auroc_within"] = float(w[has] @ aw[has] / w[has].sum()) if has.any() else math.nan
    for name, values in table["curves"].items():
        out[name] = {str(k): float(w @ values[:, j] / total) for j, k in enumerate(table["ks"])}
    n = str(table["n"])
    out.update(maj_at_n=out["maj_at_k"][n], weighted_at_n=out["weighted_at_k"][n], best_of_n=out["best_of_k"][n])
    return out


def _bootstrap_ci(pairs: list[tuple[dict | None, dict]], n_boot: int, seed: int,
                  shared: bool = True) -> dict[str, list[float]]:
    """Percentile CIs of CI_METRICS over n_boot resamples of the problems (with replacement). `pairs`:
    (table A or None, table B), one per seed: the statistic is B's metric, or B's minus A's (paired: one
    resample applied to both), averaged over the pairs. `shared`: the pairs hold the same problems, and
    one resample of them serves every pair; else each pair draws its own. Resamples where a metric is NaN
    are ignored; no resamples -> [NaN, NaN]."""
    rng = np.random.default_rng(seed)
    draws = {name: np.full(n_boot, np.nan) for name in CI_METRICS}
    for b in range(n_boot):
        stats = {name: 0.0 for name in CI_METRICS}
        for i, (ta, tb) in enumerate(pairs):
            if i == 0 or not shared:
                n = len(tb["acc_avg"])
                mult = np.bincount(rng.integers(0, n, size=n), minlength=n).astype(np.float64)
            rb, ra = _aggregate(tb, mult), None if ta is None else _aggregate(ta, mult)
            for name in CI_METRICS:
                stats[name] += (rb[name] if ra is None else rb[name] - ra[name]) / len(pairs)
        for name in CI_METRICS:
            draws[name][b] = stats[name]
    quantiles = (50 * (1 - CI_LEVEL), 50 * (1 + CI_LEVEL))
    ci = {}
    for name, v in draws.items():
        v = v[np.isfinite(v)]
        ci[name] = [float(np.percentile(v, q)) for q in quantiles] if len(v) else [math.nan, math.nan]
    return ci


def compute_metrics(problems: list, n_boot: int = 1000, seed: int = 0, equiv: Equiv | None = None) -> dict:
    """All metrics of one run's records.

    Keys: accuracy_avg, accuracy_greedy, sv_{SV_KEYS}, sv_auroc_within; the CURVES as {str(k): value} and
    maj_at_n, weighted_at_n, best_of_n; n_problems, n_samples (N), n_samples_total, n_truncated, n_sv,
    n_sv_correct; ks; ci {CI_METRICS name: [lo, hi]} (n_boot resamples, seed); bootstrap; per_family."""
    table = _problem_table(problems, equiv)
    n_prob = len(problems)
    out = _aggregate(table, np.ones(n_prob))
    finished = table["finished"]
    scored = finished & np.isfinite(table["r_s"])
    out.update(n_problems=n_prob, n_samples=table["n"], n_samples_total=int(len(finished)),
               n_truncated=int(np.sum(~finished)), n_sv=int(np.sum(scored)),  # n_sv: the self-verification set
               n_sv_correct=int(np.sum(scored & table["correct"])), ks=table["ks"])
    out["ci"] = _bootstrap_ci([(None, table)], n_boot, seed)
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "level": CI_LEVEL}
    fam = np.array(table["family"])
    out["per_family"] = {}
    for f in sorted(set(table["family"])):
        res = _aggregate(table, (fam == f).astype(np.float64))
        out["per_family"][f] = {m: res[m] for m in FAMILY_METRICS} | {"n_problems": int(np.sum(fam == f))}
    return out


# ------------------------------------------------------------------------ comparing runs and seeds

def same_problems(problems_a: list, problems_b: list) -> bool:
    """Whether two runs' records are of the same problems in the same order (by text, else by gold)."""
    ident = lambda rec: rec["problem"] if "problem" in rec else (rec.get("gold"), rec.get("family"))
    return len(problems_a) == len(problems_b) and all(ident(a) == ident(b) for a, b in zip(problems_a, problems_b))


def paired_differences(problems_a: list, problems_b: list, n_boot: int = 1000, seed: int = 0,
                       equiv: Equiv | None = None) -> dict:
    """CI_METRICS of run B minus run A on the same problems: {name: {"diff", "ci"}}, paired bootstrap CI."""
    over = paired_over_seeds([problems_a], [problems_b], n_boot, seed, equiv)  # (one seed: no t-interval)
    return {name: {"diff": d["diff"], "ci": d["ci"]} for name, d in over.items()}


def paired_over_seeds(seeds_a: list[list], seeds_b: list[list], n_boot: int = 1000, seed: int = 0,
                      equiv: Equiv | None = None) -> dict:
    """CI_METRICS of run B minus run A over training seeds (seed s's two runs on the same problems):
    {name: {"diff", "ci", "t_ci"}}. diff: the mean over seeds of each seed's difference (every metric,
    self-verification included, is computed within a seed: the seeds' models have their own c_ref).
    ci: percentile bootstrap over problems, one resample of the problems applied to every seed's pair
    when the seeds share their problems (else one per seed): the uncertainty of having these problems.
    t_ci: the t-interval of the seeds' differences: the uncertainty of having these training seeds too,
    which the bootstrap leaves out (NaN for one seed)."""
    if len(seeds_a) != len(seeds_b) or not seeds_a:
        raise ValueError("paired_over_seeds needs the same number (>= 1) of seeds for both runs")
    for a, b in zip(seeds_a, seeds_b):
        if not same_problems(a, b):
            raise ValueError("paired differences need two runs evaluated on the same problems in the same order")
    tables = [(_problem_table(a, equiv), _problem_table(b, equiv)) for a, b in zip(seeds_a, seeds_b)]
    ones = lambda t: np.ones(len(t["acc_avg"]))
    diffs = {name: [_aggregate(tb, ones(tb))[name] - _aggregate(ta, ones(ta))[name] for ta, tb in tables]
             for name in CI_METRICS}
    shared = all(same_problems(seeds_a[0], a) for a in seeds_a[1:])
    ci = _bootstrap_ci(tables, n_boot, seed, shared)
    return {name: {"diff": float(np.mean(d)), "ci": ci[name], "t_ci": t_interval(d)} for name, d in diffs.items()}


_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)  # Student's t, 0.975, df 1-10


def t_interval(values: Sequence[float]) -> list[float]:
    """The 95% t-interval of the mean of `values` (mean +- t(0.975, n - 1) * std / sqrt(n), std with ddof
    1); [NaN, NaN] for fewer than two values or a NaN among them. Beyond df 10, t from its expansion
    around the normal quantile to third order (error below 2e-4)."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n < 2 or not np.all(np.isfinite(v)):
        return [math.nan, math.nan]
    df, z = n - 1, 1.959964
    if df <= len(_T975):
        t = _T975[df - 1]
    else:
        t = (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
             + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))
    half = t * v.std(ddof=1) / math.sqrt(n)
    return [float(v.mean() - half), float(v.mean() + half)]


def _pairs(names: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]


def all_paired_differences(records: dict[str, list], n_boot: int, seed: int, equiv: Equiv | None = None) -> dict:
    """{"B - A": paired_differences(A, B)} for every pair of runs (A before B in the given order)."""
    return {f"{b} - {a}": paired_differences(records[a], records[b], n_boot, seed, equiv)
            for a, b in _pairs(list(records))}


def at_n(m: dict, key: str):
    """Metric `key` of a compute_metrics result, where "<curve>_at_n" also reads any curve at k = N."""
    if key not in m and key.endswith("_at_n"):
        return m.get(key[:-1] + "k", {}).get(str(m.get("n_samples")))
    return m.get(key)


def _stats(values: list[float]) -> dict:
    """{"values", "mean", "std"} of per-seed values; std with ddof 1 (NaN for one seed)."""
    v = np.asarray(values, dtype=np.float64)
    return {"values": [float(x) for x in v], "mean": float(v.mean()),
            "std": float(v.std(ddof=1)) if len(v) > 1 else math.nan}


def aggregate_seeds(per_seed: list[dict[str, list]], n_boot: int = 1000, seed: int = 0,
                    equiv: Equiv | None = None) -> dict:
    """Several seeds' records ({run: problems}, the same runs in each): per run and headline metric the
    per-seed values, mean and std; per pair of runs, the paired differences over seeds
    (`paired_over_seeds`) and each seed's own (mean and std)."""
    runs = list(per_seed[0])
    if any(list(r) != runs for r in per_seed):
        raise ValueError(f"every seed must hold the same runs {runs}")
    metrics = [{name: compute_metrics(rec[name], n_boot=0, equiv=equiv) for name in runs} for rec in per_seed]
    out: dict = {"n_seeds": len(per_seed), "runs": {
        name: {key: _stats([at_n(m[name], key) for m in metrics]) for key in HEADLINE} for name in runs}}
    out["paired_over_seeds"] = {f"{b} - {a}": paired_over_seeds([r[a] for r in per_seed], [r[b] for r in per_seed],
                                                                n_boot, seed, equiv) for a, b in _pairs(runs)}
    out["paired_per_seed"] = {f"{b} - {a}": {k: _stats([m[b][k] - m[a][k] for m in metrics]) for k in CI_METRICS}
                              for a, b in _pairs(runs)}
    return out
