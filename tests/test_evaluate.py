"""Tests for metrics.py and evaluate.py: every metric against a hand-computed value or a slow brute-force
reference, the voting conventions, the bootstrap, JSON sanitisation, the report writer and the --records CLI.

Run: python -m pytest tests/test_evaluate.py -q
"""

import itertools
import json
import math
import sys
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import evaluate as ev  # noqa: E402
import metrics as mt  # noqa: E402
from runs import to_jsonable  # noqa: E402

NAN = float("nan")


def num_equiv(a: str, b: str) -> bool:
    """Simple test equivalence: equal as exact fractions ("1/2" == "0.5"), else equal strings."""
    try:
        return Fraction(a) == Fraction(b)
    except (ValueError, ZeroDivisionError):
        return a == b


def S(answer, correct, r_s, mean_logp=-1.0, finished=True):
    return {"answer": answer, "correct": correct, "r_s": r_s, "mean_logp": mean_logp, "finished": finished}


def P(samples, family="add", greedy=False, gold="0"):
    return {"family": family, "level": 1, "gold": gold, "greedy": {"answer": gold, "correct": greedy},
            "samples": samples}


def toy_problems():
    """Three problems, N = 4; every metric below is worked out by hand in the tests."""
    a = P([S("2", True, 0.8, -0.5), S("3", False, 0.6, -0.1), S("3", False, 0.1, -0.2), S("2", True, 0.9, -1.0)],
          family="add", greedy=True, gold="2")
    b = P([S(None, False, NAN, -2.0, finished=False), S("1/2", True, 0.4, -0.3), S("7", False, 0.2, -0.3),
           S("0.5", True, 0.7, -0.9)], family="add", gold="1/2")
    c = P([S("4", False, 0.3, -0.4), S("4", False, 0.55, -0.4), S("6", True, 0.2, -0.1),
           S("4", False, 0.1, -0.2)],
          family="mul", gold="6")
    return [a, b, c]


def random_problems(n_prob=20, n=8, seed=0):
    rng = np.random.default_rng(seed)
    probs = []
    for p in range(n_prob):
        gold = int(rng.integers(0, 3))
        samples = []
        for _ in range(n):
            ans = int(rng.integers(0, 3))
            fin = bool(rng.random() > 0.1)
            ok = ans == gold
            r = float(np.clip(rng.normal(0.7 if ok else 0.3, 0.25), -0.2, 1.2)) if fin else NAN
            samples.append(S(str(ans) if fin else None, ok and fin, r, float(-rng.random()), fin))
        probs.append(P(samples, family=["add", "mul"][p % 2], greedy=bool(rng.random() > 0.5), gold=str(gold)))
    return probs


# ---------------------------------------------------------------------------------------------------
# pass@k, AUROC, ECE, self-verification


def test_pass_at_k_matches_subset_enumeration():
    for n in range(1, 8):
        for c in range(n + 1):
            labels = [1] * c + [0] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(labels, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert mt.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12), (n, c, k)
    assert mt.pass_at_k(16, 0, 4) == 0.0 and mt.pass_at_k(16, 16, 1) == 1.0
    with pytest.raises(ValueError):
        mt.pass_at_k(4, 5, 1)


def brute_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return NAN
    return sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg) / (len(pos) * len(neg))


def test_auroc_matches_pairwise_count_with_ties_and_weights():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(2, 15))
        s = rng.integers(0, 4, size=n).astype(float)  # many ties
        y = rng.random(n) > 0.5
        ref = brute_auroc(s, y)
        got = mt.auroc(s, y)
        assert (math.isnan(ref) and math.isnan(got)) or got == pytest.approx(ref)
        # integer weights == repeating samples
        w = rng.integers(0, 3, size=n)
        ref_w = brute_auroc(np.repeat(s, w), np.repeat(y, w))
        got_w = mt.auroc(s, y, w)
        assert (math.isnan(ref_w) and math.isnan(got_w)) or got_w == pytest.approx(ref_w)
    assert math.isnan(mt.auroc([0.1, 0.2], [True, True]))
    assert mt.auroc([0.9, 0.1], [True, False]) == 1.0 and mt.auroc([0.5, 0.5], [True, False]) == 0.5


def test_ece_hand_computed():
    # bin 9: confs 1.0, 1.0 with acc 1/2 -> 2/4 * 0.5; bin 0: confs .05, .05 with acc 0 -> 2/4 * .05
    assert mt.expected_calibration_error([1.0, 1.0, 0.05, 0.05], [1, 0, 0, 0]) == pytest.approx(0.275)
    assert mt.expected_calibration_error([0.0, 1.0], [0, 1]) == 0.0


def test_self_verification_hand_computed():
    r = [0.9, 0.7, 0.3, 0.6, 0.2, NAN, 0.95]
    y = [True, True, True, False, False, False, True]
    fin = [True, True, True, True, True, False, False]  # last two truncated: excluded
    m = mt.self_verification_metrics(r, y, fin)
    # TP=2 FN=1 (0.3) FP=1 (0.6) TN=1
    assert m["tpr"] == pytest.approx(2 / 3) and m["tnr"] == pytest.approx(1 / 2)
    assert m["f1"] == pytest.approx(4 / 7)  # harmonic mean of 2/3 and 1/2
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["pr_f1"] == pytest.approx(2 / 3)  # 2TP / (2TP + FP + FN) = 4/6
    assert m["auroc"] == pytest.approx(5 / 6)
    assert m["ece"] == pytest.approx((0.1 + 0.3 + 0.7 + 0.6 + 0.2) / 5)
    assert m["n"] == 5
    at_threshold = mt.self_verification_metrics([0.5, 0.5], [True, False], [True, True])  # "correct": r_s > 0.5 (§6)
    assert at_threshold["tpr"] == 0.0 and at_threshold["tnr"] == 1.0
    only_correct = mt.self_verification_metrics([0.9, 0.2], [True, True], [True, True])
    assert all(math.isnan(only_correct[key]) for key in ("tnr", "f1", "auroc"))


# ---------------------------------------------------------------------------------------------------
# grouping, voting, selection


def test_group_answers_merges_equivalent_and_caches():
    calls = []

    def counting(a, b):
        calls.append((a, b))
        return num_equiv(a, b)

    answers = ["1/2", "0.5", None, "2", "1/2", "4/2"]
    cache = {}
    groups = mt.group_answers(answers, [1, 2, 5, 1, 1, 1], counting, cache)
    assert groups == [("1/2", 4.0, [0, 1, 4]), ("2", 2.0, [3, 5])]  # None (weight 5) never counted
    assert len(calls) == 4  # (1/2,0.5) (1/2,2) (1/2,4/2) (2,4/2); identical strings need no call
    mt.group_answers(answers, [1] * 6, counting, cache)
    assert len(calls) == 4  # everything came from the cache


def test_weights_change_the_winner():
    ans, cor, r_s = ["3", "3", "3", "5"], [False, False, False, True], [0.1, 0.2, 0.1, 0.9]
    assert mt.vote(ans, [1, 1, 1, 1], cor, num_equiv) == 0.0  # majority: "3"
    assert mt.vote(ans, r_s, cor, num_equiv) == 1.0  # weighted 0.4 vs 0.9: "5"


def test_vote_conventions():
    assert mt.vote(["a", "b"], [1, 1], [False, True], num_equiv) == 0.5  # a tie: the share of tied groups right
    assert mt.vote(["b", "a", "a", "b"], [1, 1, 1, 1], [True, False, False, True], num_equiv) == 0.5
    assert mt.vote(["b", "a", "c", "a", "b"], [1] * 5, [True, False, False, False, True], num_equiv) == 0.5
    assert mt.vote(["a", "b", "c"], [1, 1, 1], [False, True, False], num_equiv) == pytest.approx(1 / 3)
    assert mt.vote(["a", "b", "b"], [1, 1, 1], [False, True, True], num_equiv) == 1.0  # no tie
    assert mt.vote([None, None], [1, 1], [False, False], num_equiv) == 0.0  # no answer: fails
    assert mt.vote(["3", "3", "5"], [0, 0, 0], [True, True, False], num_equiv) == 1.0  # fallback majority
    assert mt.vote(["5", None], [0, 1], [True, False], num_equiv) == 1.0  # None's weight is ignored
    assert mt.vote(["5", "7"], [NAN, 0.1], [False, True], num_equiv) == 1.0  # NaN weight = 0
    # an (inconsistent) group: correctness from the heaviest member
    assert mt.vote(["1/2", "0.5"], [0.2, 0.8], [False, True], num_equiv) == 1.0
    assert mt.vote(["1/2", "0.5"], [0.8, 0.2], [False, True], num_equiv) == 0.0


def test_vote_weights_are_r_s_clipped_to_0_1_and_0_for_a_cut_response():
    """Eq. 15's weight, shared by evaluate.py and sample.py: an r_s above 1 counts as 1 (a confident wrong
    answer must not outvote two right ones of r_s 0.9)."""
    w = mt.vote_weights([1.3, 0.4, -2.0, NAN, 0.9, -math.inf, math.inf], [True] * 4 + [False, True, True])
    assert w.tolist() == [1.0, 0.4, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert mt.vote(["7", "5", "5"], mt.vote_weights([1.9, 0.6, 0.6], [True] * 3), [False, True, True], num_equiv) == 1.0


def test_a_cut_off_response_has_no_answer_and_is_incorrect():
    """(Before: a response cut at the length limit after a right \\boxed{} counted as correct and voted.)"""
    text = "4 * 7 = 28\n\\boxed{28}\n28 - 10 = 1"  # the length limit struck after a complete box
    assert ev.verdict(text, "28", True) == {"answer": "28", "correct": True}
    assert ev.verdict(text, "28", False) == {"answer": None, "correct": False}
    assert mt.vote([None, "5", "5"], [1, 1, 1], [False, False, False], num_equiv) == 0.0  # it votes for nothing


def test_best_of_nan_and_ties():
    assert mt.best_of([NAN, 0.3, 0.7, 0.7], [True, False, True, False]) is True  # first of the tied 0.7
    assert mt.best_of([NAN, 0.3, 0.7, 0.7], [True, False, False, True]) is False
    assert mt.best_of([NAN, NAN], [True, False]) is True  # all NaN -> first


def test_ks_and_k_subsets():
    assert mt.ks_for(16) == [1, 2, 4, 8, 16] and mt.ks_for(1) == [1] and mt.ks_for(6) == [1, 2, 4, 6]
    assert mt.k_subsets(4, 2).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    assert mt.k_subsets(16, 8).shape == (12870, 8)  # N = 16: every subset at every k
    drawn = mt.k_subsets(40, 20, cap=3000)  # C(40, 20) is far more: a fixed random draw
    assert drawn.shape == (3000, 20) and np.array_equal(drawn, mt.k_subsets(40, 20, cap=3000))
    assert (np.diff(drawn, axis=1) > 0).all() and len({tuple(r) for r in drawn}) > 2990
    assert abs(np.bincount(drawn.ravel(), minlength=40) / 3000 - 0.5).max() < 0.05  # each sample in half


def test_subset_votes_and_best_of_are_vote_and_best_of_on_every_subset():
    """The vectorised votes and picks over many subsets at once against vote() and best_of() on each: NaN,
    negative, zero and infinite weights, no answers, ties, samples whose verdicts differ within a group."""
    rng = np.random.default_rng(0)
    for case in range(200):
        n = int(rng.integers(1, 8))
        ans = [None if rng.random() < 0.2 else str(int(rng.integers(0, 3))) for _ in range(n)]
        w = rng.choice([0.0, 0.25, 0.5, 1.0, NAN, -1.0, np.inf], size=n) if case % 3 else np.ones(n)
        cor = [bool(rng.random() < 0.5) for _ in range(n)]
        score = rng.choice([0.1, 0.5, 0.9, NAN], size=n)
        labels = mt.answer_labels(ans, num_equiv)
        for k in range(1, n + 1):
            sub = mt.k_subsets(n, k)
            pick = lambda xs, row: [xs[i] for i in row]
            want = [mt.vote(pick(ans, r), pick(w, r), pick(cor, r), num_equiv) for r in sub]
            assert mt.SubsetVotes(labels, cor, sub)(w).tolist() == want, (ans, w, cor, k)
            want = [mt.best_of(pick(score, r), pick(cor, r)) for r in sub]
            assert mt.subset_best_of(score, cor, sub).tolist() == want, (score, cor, k)
    assert mt.answer_labels(["1/2", None, "0.5", "7"], num_equiv).tolist() == [0, -1, 0, 1]


# ---------------------------------------------------------------------------------------------------
# compute_metrics on the hand-worked toy set


def test_best_of_certainty_never_picks_a_truncated_sample():
    """A repetition loop cut at the length limit has a high mean log-prob and no answer: best-of by certainty
    picked it (0 at k = N where 2 of 3 samples are right); it picks among the finished samples, as best-of by
    r_s does."""
    p = P([S("1", True, 0.5, -2.0), S(None, False, NAN, -0.01, finished=False), S("1", True, 0.4, -2.0)], gold="1")
    m = mt.compute_metrics([p], n_boot=0, equiv=num_equiv)
    assert m["best_of_k_certainty"]["3"] == 1.0 and m["best_of_k"]["3"] == 1.0
    assert m["best_of_k_certainty"]["1"] == pytest.approx(2 / 3)  # k = 1: the samples' own accuracy


def test_compute_metrics_hand_computed():
    m = mt.compute_metrics(toy_problems(), n_boot=0, equiv=num_equiv)
    third = 1 / 3
    assert m["n_problems"] == 3 and m["n_samples"] == 4 and m["n_truncated"] == 1 and m["n_sv"] == 11
    assert m["ks"] == [1, 2, 4]
    assert m["accuracy_avg"] == pytest.approx((0.5 + 0.5 + 0.25) / 3)
    assert m["accuracy_greedy"] == pytest.approx(third)
    # k = 1: every metric is the plain sample accuracy
    for curve in mt.CURVES:
        assert m[curve]["1"] == pytest.approx(m["accuracy_avg"]), curve
    # k = 2 (the 6 pairs of each problem's samples) and k = 4, worked out pair by pair
    expected = {
        # a tie between a right and a wrong group counts 1/2. k=2, pairs 01 02 03 12 13 23: A 1/2 1/2 1 0 1/2
        # 1/2; B 1 0 1 1/2 1 1/2 (no answer in sample 0; "1/2" = "0.5"); C 0 1/2 0 1/2 0 1/2.
        # k=4: A "2" x2 vs "3" x2: 1/2; B "1/2" = "0.5" x2 vs "7": 1; C "4" x3: 0
        "maj_at_k": {"2": (3 + 4 + 1.5) / 18, "4": 0.5},
        "weighted_at_k": {"2": (5 + 5 + 1) / 18, "4": 2 * third},  # A loses only 12, B only 02, C wins only 23
        "best_of_k": {"2": (5 + 5 + 1) / 18, "4": 2 * third},
        "self_certainty_at_k": {"2": (1 + 3.5 + 3) / 18, "4": third},  # B 12: exp(-0.3) each, a tie
        "best_of_k_certainty": {"2": (1 + 4 + 3) / 18, "4": 2 * third},
        "pass_at_k": {"2": (5 / 6 + 5 / 6 + 0.5) / 3, "4": 1.0},
    }
    for curve, values in expected.items():
        for k, v in values.items():
            assert m[curve][k] == pytest.approx(v), (curve, k)
    assert (m["maj_at_n"], m["weighted_at_n"], m["best_of_n"]) == pytest.approx((0.5, 2 * third, 2 * third))
    # self-verification over the 11 finished samples: TP=3 FN=2 FP=2 TN=4
    assert m["sv_tpr"] == pytest.approx(0.6) and m["sv_tnr"] == pytest.approx(2 / 3)
    assert m["sv_f1"] == pytest.approx(12 / 19)
    assert m["sv_precision"] == pytest.approx(0.6) and m["sv_pr_f1"] == pytest.approx(0.6)
    assert m["sv_auroc"] == pytest.approx(24.5 / 30)
    assert m["sv_ece"] == pytest.approx(3.45 / 11)
    fam = m["per_family"]
    assert set(fam) == {"add", "mul"} and fam["add"]["n_problems"] == 2
    assert fam["add"]["accuracy_avg"] == pytest.approx(0.5) and fam["add"]["maj_at_n"] == 0.75  # A 1/2, B 1
    assert fam["mul"]["weighted_at_n"] == 0.0 and fam["mul"]["sv_f1"] == 0.0  # TPR 0, TNR 2/3
    assert fam["mul"]["sv_auroc"] == pytest.approx(1 / 3)


def test_compute_metrics_reads_scores_outside_0_1_and_missing_ones_as_the_method_says():
    """r_s = beta_v (log p(z_c) - c_ref) is not bounded: eq. 15's vote weighs clip(r_s, 0, 1) and ECE bins it
    (1.0 in the last bin), while best-of-N takes the highest r_s as it is; a finished sample with no r_s
    (NaN) is outside the self-verification set and weighs 0; the within-problem AUROC averages over the
    problems that have both classes. Worked out by hand."""
    d = P([S("5", True, 1.0), S("5", True, 0.95), S("8", False, 3.0), S("8", False, -0.5)], gold="5")
    e = P([S("1", True, NAN), S("2", False, 0.3), S("1", True, 0.9), S(None, False, NAN, finished=False)],
          gold="1")
    f = P([S("3", True, 0.6) for _ in range(4)], gold="3")
    m = mt.compute_metrics([d, e, f], n_boot=0, equiv=num_equiv)
    assert (m["n_sv"], m["n_sv_correct"]) == (10, 7)  # e's first sample is finished but has no r_s
    # bins of clip(r_s, 0, 1): [0.9, 1] holds 1.0, 0.95, 3.0 -> 1, 0.9 (3 right, confidence 3.85); 0 holds
    # -0.5 -> 0 (wrong); 0.3 (wrong); 0.6 x 4 (right): (0.85 + 0 + 0.3 + 1.6) / 10
    assert m["sv_ece"] == pytest.approx(0.275)
    # d: "5" weighs 1.0 + 0.95 against "8"'s 1 + 0 (3.0 clipped, -0.5 clipped): right; e: "1" 0 + 0.9
    # against "2"'s 0.3; best-of-4 picks d's 3.0 (wrong), e's 0.9, one of f's
    assert m["weighted_at_n"] == pytest.approx(1.0) and m["best_of_n"] == pytest.approx(2 / 3)
    assert m["sv_auroc_within"] == pytest.approx((0.5 + 1.0) / 2)  # d 2 of 4 pairs, e 1 of 1; f has no wrong


def test_the_headline_at_n_metrics_are_their_curves_at_n():
    """maj_at_n, weighted_at_n and best_of_n (the tables' rows, their intervals and paired differences) are
    the vote by 1, by r_s and best-of by r_s at k = N, not another curve's end (on problems where every
    curve ends elsewhere)."""
    m = mt.compute_metrics(random_problems(20, 8, seed=2), n_boot=0, equiv=num_equiv)
    ends = {name: m[name]["8"] for name in mt.CURVES}
    assert len(set(ends.values())) == len(ends), ends  # (so that a mix-up shows)
    assert (m["maj_at_n"], m["weighted_at_n"], m["best_of_n"]) == (ends["maj_at_k"], ends["weighted_at_k"],
                                                                   ends["best_of_k"])


def test_problem_multiplicities_equal_duplicated_problems():
    """_aggregate with weights (the bootstrap's fast path) == metrics of the explicitly repeated list."""
    probs = random_problems(6, 4, seed=3)
    mult = np.array([0, 2, 1, 3, 0, 1], dtype=float)
    table = mt._problem_table(probs, num_equiv)
    fast = mt._aggregate(table, mult)
    repeated = [p for p, m in zip(probs, mult) for _ in range(int(m))]
    slow = mt.compute_metrics(repeated, n_boot=0, equiv=num_equiv)
    for key in ["accuracy_avg", "accuracy_greedy", "sv_tpr", "sv_tnr", "sv_f1", "sv_auroc", "sv_ece",
                "maj_at_n", "weighted_at_n", "best_of_n"]:
        assert fast[key] == pytest.approx(slow[key], nan_ok=True), key


def test_bootstrap_ci_contains_estimate_deterministic_and_matches_loop():
    probs = random_problems(20, 4, seed=1)
    m1 = mt.compute_metrics(probs, n_boot=200, seed=7, equiv=num_equiv)
    m2 = mt.compute_metrics(probs, n_boot=200, seed=7, equiv=num_equiv)
    m3 = mt.compute_metrics(probs, n_boot=200, seed=8, equiv=num_equiv)
    assert m1["ci"] == m2["ci"] and m1["ci"] != m3["ci"]
    assert set(m1["ci"]) == set(mt.CI_METRICS)
    for name, (lo, hi) in m1["ci"].items():
        assert lo <= m1[name] <= hi, name
    # slow twin for accuracy_avg: resample problems in a loop with the same generator
    rng = np.random.default_rng(7)
    per_problem = np.array([np.mean([s["correct"] for s in p["samples"]]) for p in probs])
    boots = [per_problem[rng.integers(0, 20, size=20)].mean() for _ in range(200)]
    assert m1["ci"]["accuracy_avg"] == pytest.approx(list(np.percentile(boots, [2.5, 97.5])))


def test_validate_records_errors():
    probs = toy_problems()
    probs[1]["samples"] = probs[1]["samples"][:3]
    with pytest.raises(ValueError, match="same number of samples"):
        mt.compute_metrics(probs, n_boot=0, equiv=num_equiv)
    with pytest.raises(ValueError, match="non-empty"):
        mt.compute_metrics([], n_boot=0, equiv=num_equiv)


# ---------------------------------------------------------------------------------------------------
# JSON, report, CLI


def test_to_jsonable_nan_and_numpy():
    obj = {"a": NAN, "b": [np.float64(1.5), np.int64(2), float("inf")], "c": np.bool_(True), 3: (np.nan,)}
    out = to_jsonable(obj)
    assert out == {"a": None, "b": [1.5, 2, None], "c": True, "3": [None]}
    json.dumps(out, allow_nan=False)  # strict JSON
    m = mt.compute_metrics(toy_problems(), n_boot=5, equiv=num_equiv)
    m["per_family"]["mul"]["sv_tpr_dummy"] = NAN
    text = json.dumps(to_jsonable(m), allow_nan=False)
    assert json.loads(text)["per_family"]["mul"]["sv_tpr_dummy"] is None


def hide_matplotlib(monkeypatch):
    for mod in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, mod, None)  # `import matplotlib` now raises ImportError


def test_write_report_without_matplotlib(tmp_path, monkeypatch, capsys):
    hide_matplotlib(monkeypatch)
    probs = toy_problems()
    results = {"grpo": mt.compute_metrics(probs, n_boot=10, equiv=num_equiv),
               "laser": mt.compute_metrics(probs[:2], n_boot=10, equiv=num_equiv)}
    ev.write_report(results, str(tmp_path), problems_by_run={"grpo": probs, "laser": probs[:2]})
    assert "matplotlib not installed: skipping plots" in capsys.readouterr().out
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["eval.json", "eval.md", "records.json"]  # no plots, no temp files left behind
    data = json.loads((tmp_path / "eval.json").read_text())
    assert set(data) == {"grpo", "laser"} and data["grpo"]["accuracy_avg"] == pytest.approx(1.25 / 3)
    assert data["laser"]["per_family"]["add"]["n_problems"] == 2
    md = (tmp_path / "eval.md").read_text()
    assert "| metric | grpo | laser |" in md and "## Scaling with k" in md and "## Per family" in md
    assert "harmonic mean" in md
    records = ev.load_records(str(tmp_path / "records.json"))
    assert math.isnan(records["grpo"][1]["samples"][0]["r_s"])  # null -> NaN on load
    table = ev.format_table(results)
    assert "grpo" in table.splitlines()[0] and "laser" in table.splitlines()[0]


def test_write_report_plots_when_matplotlib_present(tmp_path):
    pytest.importorskip("matplotlib")
    probs = toy_problems()
    ev.write_report({"run": mt.compute_metrics(probs, n_boot=0, equiv=num_equiv)}, str(tmp_path), {"run": probs})
    assert (tmp_path / "scaling.png").stat().st_size > 0 and (tmp_path / "rs_hist.png").stat().st_size > 0


def test_cli_records_end_to_end(tmp_path, monkeypatch, capsys):
    hide_matplotlib(monkeypatch)
    fake_verify = types.ModuleType("verify")
    fake_verify.is_equivalent = num_equiv  # production path imports verify.is_equivalent lazily
    monkeypatch.setitem(sys.modules, "verify", fake_verify)
    rec_path = tmp_path / "in" / "records.json"
    rec_path.parent.mkdir()
    rec_path.write_text(json.dumps(to_jsonable({"a": toy_problems(), "b": random_problems(4, 4)})))
    out = tmp_path / "out"
    assert ev.main(["--records", str(rec_path), "--n_boot", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy avg@N" in printed
    data = json.loads((out / "eval.json").read_text())
    assert data["a"]["maj_at_k"]["2"] == pytest.approx(8.5 / 18) and data["a"]["bootstrap"]["n_boot"] == 20
    assert (out / "records.json").exists() and (out / "eval.md").exists()
    # recomputing from the written records gives the same metrics (the old flag spelling still works)
    assert ev.main(["--records", str(out / "records.json"), "--n-boot", "20"]) == 0
    assert json.loads((out / "eval.json").read_text()) == data


def test_cli_bad_input(tmp_path, capsys):
    assert ev.main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run directory not found" in err
    assert ev.main([str(tmp_path), str(tmp_path)]) == 2  # duplicate names
    assert ev.main([]) == 2
    assert ev.main(["--records", str(tmp_path / "missing.json")]) == 2
    capsys.readouterr()
    assert ev.main(["--records", str(tmp_path / "missing.json"), "--n-samples", "0"]) == 2
    assert "--n_samples must be >= 1" in capsys.readouterr().err  # errors name the underscore flags
    with pytest.raises(SystemExit) as exc:
        ev.main(["--help"])
    assert exc.value.code == 0 and "--records" in capsys.readouterr().out
    afile = tmp_path / "f"
    afile.write_text("")
    for argv in ([str(tmp_path), "--out", str(afile)], [str(tmp_path), "--out", str(afile / "sub")],
                 ["--aggregate", str(tmp_path), "--out", str(afile)]):  # refused before any sampling
        assert ev.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot create directory {afile}" in err, argv


def test_cuda_out_of_memory_while_sampling_is_one_line_naming_batch_size(tmp_path, monkeypatch, capsys):
    import torch

    def collect(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.50 GiB. GPU 0 has a total "
                                          "capacity of 23.5 GiB of which 2.0 GiB is free. Of the allocated ...")
    monkeypatch.setattr(ev, "collect_records", collect)
    assert ev.main([str(tmp_path), "--batch_size", "2048"]) == 2
    err = capsys.readouterr().err
    assert err == ("evaluate.py: error: CUDA out of memory. Tried to allocate 3.50 GiB. GPU 0 has a total capacity "
                   "of 23.5 GiB of which 2.0 GiB is free; a smaller --batch_size (now 2048 sequences a sampling "
                   "call, or one prompt's --n_samples 16 if more) needs less memory\n")


def test_auroc_within_problem_separates_difficulty_from_verification():
    """A score that is high on the easy problem and low on the hard one ranks well when samples are
    pooled, but knows nothing within a problem; the within-problem AUROC says so."""
    def prob(rs, cor):
        return {"family": "f", "level": 1, "gold": "1", "greedy": {"answer": "1", "correct": True},
                "samples": [{"answer": str(i), "correct": c, "r_s": r, "mean_logp": -1.0, "finished": True}
                            for i, (r, c) in enumerate(zip(rs, cor))]}
    easy = prob([0.9, 0.8, 0.95, 0.85], [True, True, True, False])  # the wrong one is not the lowest
    hard = prob([0.1, 0.2, 0.15, 0.05], [False, True, False, False])
    m = mt.compute_metrics([easy, hard], n_boot=0, equiv=lambda a, b: a == b)
    assert m["sv_auroc"] > 0.75
    # easy: positives 0.9, 0.8, 0.95 vs negative 0.85 -> 2/3; hard: positive 0.2 vs 0.1, 0.15, 0.05 -> 1
    assert abs(m["sv_auroc_within"] - (2 / 3 + 1) / 2) < 1e-12


def test_paired_differences():
    a, b = random_problems(30, 8, seed=1), random_problems(30, 8, seed=2)
    for pa, pb in zip(a, b):  # the same problems: pair them by text
        pa["problem"] = pb["problem"] = pa["gold"] + str(id(pa))
    same = mt.paired_differences(a, a, n_boot=50, equiv=num_equiv)
    assert all(d["diff"] == 0 and d["ci"] == [0, 0] for d in same.values())
    d = mt.paired_differences(a, b, n_boot=200, equiv=num_equiv)
    ma, mb = mt.compute_metrics(a, n_boot=0, equiv=num_equiv), mt.compute_metrics(b, n_boot=0, equiv=num_equiv)
    for name in mt.CI_METRICS:
        assert d[name]["diff"] == pytest.approx(mb[name] - ma[name])
        assert d[name]["ci"][0] <= d[name]["diff"] <= d[name]["ci"][1]
    # pairing removes the variance both runs share: a run against itself plus one flipped sample
    c = json.loads(json.dumps(to_jsonable(a)))
    for p in c:
        for s in p["samples"]:
            s["r_s"] = mt.as_float(s["r_s"])
    c[0]["samples"][0]["correct"] = not c[0]["samples"][0]["correct"]
    lo, hi = mt.paired_differences(a, c, n_boot=200, equiv=num_equiv)["accuracy_avg"]["ci"]
    un_lo, un_hi = mt.compute_metrics(a, n_boot=200, equiv=num_equiv)["ci"]["accuracy_avg"]
    assert hi - lo <= 0.2 * (un_hi - un_lo)  # far narrower than one run's own (unpaired) interval
    with pytest.raises(ValueError, match="same problems"):
        mt.paired_differences(a, b[:-1], equiv=num_equiv)


def test_aggregate_seeds_mean_std_and_pooled_pairs():
    seeds = []
    for s in range(3):
        g, l = random_problems(10, 4, seed=10 + s), random_problems(10, 4, seed=20 + s)
        for pg, pl in zip(g, l):
            pg["problem"] = pl["problem"] = f"{s}-{pg['gold']}-{id(pg)}"
        seeds.append({"grpo": g, "laser": l})
    out = mt.aggregate_seeds(seeds, n_boot=20, equiv=num_equiv)
    vals = [mt.compute_metrics(r["laser"], n_boot=0, equiv=num_equiv)["accuracy_avg"] for r in seeds]
    acc = out["runs"]["laser"]["accuracy_avg"]
    assert acc["values"] == pytest.approx(vals) and acc["mean"] == pytest.approx(np.mean(vals))
    assert acc["std"] == pytest.approx(np.std(vals, ddof=1))
    over = out["paired_over_seeds"]["laser - grpo"]
    per_seed = out["paired_per_seed"]["laser - grpo"]
    for name in mt.CI_METRICS:  # every metric's difference computed within a seed, then averaged
        assert over[name]["diff"] == pytest.approx(per_seed[name]["mean"]), name
        assert over[name]["t_ci"] == pytest.approx(mt.t_interval(per_seed[name]["values"])), name
    assert over["accuracy_avg"]["diff"] == pytest.approx(np.mean(vals) - np.mean(out["runs"]["grpo"]["accuracy_avg"]["values"]))
    md = ev.summary_markdown(to_jsonable(out))
    assert "laser - grpo" in md and "t-interval over the seeds" in md


def test_t_interval_by_hand():
    lo, hi = mt.t_interval([0.1, 0.2, 0.3])  # mean 0.2, std 0.1, t(0.975, df 2) = 4.303
    assert lo == pytest.approx(0.2 - 4.303 * 0.1 / np.sqrt(3)) and hi == pytest.approx(0.2 + 4.303 * 0.1 / np.sqrt(3))
    assert all(np.isnan(mt.t_interval([0.5]))) and all(np.isnan(mt.t_interval([0.1, np.nan])))
    for df, t in ((11, 2.201), (20, 2.086), (30, 2.042)):  # beyond the table: the expansion (tabled t values)
        v = np.arange(df + 1) / df
        lo, hi = mt.t_interval(v)
        assert (hi - lo) / 2 == pytest.approx(t * np.std(v, ddof=1) / np.sqrt(df + 1), rel=2e-4), df


def test_paired_over_seeds_shares_one_problem_resample_across_seeds():
    """Seeds holding the same problems get one resample of them per bootstrap draw: three identical seeds
    give exactly one seed's paired interval (and a zero-width t-interval); seeds on other problems draw
    their own."""
    a, b = random_problems(12, 4, seed=1), random_problems(12, 4, seed=2)
    for pa, pb in zip(a, b):
        pa["problem"] = pb["problem"] = f"q-{id(pa)}"
    one = mt.paired_differences(a, b, n_boot=50, seed=3, equiv=num_equiv)
    three = mt.paired_over_seeds([a] * 3, [b] * 3, n_boot=50, seed=3, equiv=num_equiv)
    for name in mt.CI_METRICS:
        assert three[name]["diff"] == pytest.approx(one[name]["diff"])
        assert three[name]["ci"] == pytest.approx(one[name]["ci"], nan_ok=True), name
        assert three[name]["t_ci"] == pytest.approx([one[name]["diff"]] * 2, nan_ok=True)
    c, d = random_problems(12, 4, seed=4), random_problems(12, 4, seed=5)
    for pc, pd_ in zip(c, d):
        pc["problem"] = pd_["problem"] = f"r-{id(pc)}"
    mixed = mt.paired_over_seeds([a, c], [b, d], n_boot=50, seed=3, equiv=num_equiv)
    assert np.all(np.isfinite(mixed["accuracy_avg"]["ci"]))
    with pytest.raises(ValueError, match="same problems"):
        mt.paired_over_seeds([a], [d], equiv=num_equiv)
