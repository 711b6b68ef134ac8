"""Tests for loss.py: each vectorised function against a slow looped reference over plain Python
floats (or a hand-computed value), plus the numerical edge cases the trainer relies on.

Run: python -m pytest tests/test_loss.py -q
"""

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loss import (  # noqa: E402
    aggregate_loss,
    group_advantages,
    group_class_weights,
    integrate_advantages,
    kl_penalty,
    laser_mse_loss,
    masked_mean,
    ppo_clip_loss,
    self_reward_advantages,
    self_reward_score,
)

ATOL = 1e-6
NAN = float("nan")


def close(a, b, atol=ATOL):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    return torch.allclose(a, b, atol=atol, rtol=0.0)


# ----------------------------------------------------------------------------- slow references

def ref_mean_std(xs):
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))  # population std


def ref_group_advantages(rewards, k, mode, eps=1e-6):
    out, n_zero = [], 0
    for g in range(0, len(rewards), k):
        grp = rewards[g:g + k]
        m, s = ref_mean_std(grp)
        if max(grp) == min(grp):
            n_zero += 1
            out += [0.0] * k
        elif mode == "grpo":
            out += [(r - m) / (s + eps) for r in grp]
        else:
            out += [r - m for r in grp]
    return out, n_zero


def ref_ppo(logp_new, logp_old, adv, mask, lo, hi, agg):
    """Per-token loss by hand, then the aggregation by hand; also clip fraction."""
    per_seq_losses, tok_sum, tok_count, n_clip = [], 0.0, 0, 0
    for i in range(len(logp_new)):
        s, c = 0.0, 0
        for t in range(len(logp_new[i])):
            if not mask[i][t]:
                continue
            ratio = math.exp(logp_new[i][t] - logp_old[i][t])
            a = adv[i]
            unclipped = ratio * a
            clipped = min(max(ratio, 1 - lo), 1 + hi) * a
            if clipped < unclipped:
                n_clip += 1
            loss = -min(unclipped, clipped)
            s, c = s + loss, c + 1
        tok_sum, tok_count = tok_sum + s, tok_count + c
        per_seq_losses.append(s / max(c, 1))
    if agg == "token_mean":
        total = tok_sum / max(tok_count, 1)
    else:
        total = sum(per_seq_losses) / len(per_seq_losses)
    return total, n_clip / max(tok_count, 1)


def ref_laser(r_s, r_v, finished):
    """L_SR = 1/N sum_i w_i (r_s - r_v)^2 exactly as docs/laser.md §2 writes it, over finished rows."""
    nc = sum(1 for f, v in zip(finished, r_v) if f and v == 1)
    ni = sum(1 for f, v in zip(finished, r_v) if f and v == 0)
    n = nc + ni
    if n == 0:
        return 0.0
    total = 0.0
    for s, v, f in zip(r_s, r_v, finished):
        if not f:
            continue
        w = n / (2 * nc) if v == 1 else n / (2 * ni)
        total += w * (s - v) ** 2
    return total / n


def ref_self_reward_adv(r_s, finished, k, thr, eps=1e-6):
    s = [min(max(x, 0.0), 1.0) if f else 0.0 for x, f in zip(r_s, finished)]
    a, use = [], []
    for g in range(0, len(s), k):
        grp = s[g:g + k]
        m, sd = ref_mean_std(grp)
        if sd > thr:
            a += [(x - m) / (sd + eps) for x in grp]
            use += [True] * k
        else:
            a += [0.0] * k
            use += [False] * k
    return a, use


# ----------------------------------------------------------------------------- group_advantages

@pytest.mark.parametrize("mode", ["grpo", "drgrpo"])
def test_group_advantages_matches_loop(mode):
    g = torch.Generator().manual_seed(0)
    k = 4
    rewards = torch.randint(0, 2, (24,), generator=g).float()
    rewards[:4] = 1.0  # all-correct group
    rewards[4:8] = 0.0  # all-wrong group
    rewards[8:12] = torch.rand(4, generator=g)  # non-binary rewards
    adv, n_zero = group_advantages(rewards, k, mode=mode)
    ref, ref_zero = ref_group_advantages(rewards.tolist(), k, mode)
    assert close(adv, ref)
    assert n_zero == ref_zero >= 2


def test_group_advantages_hand_value():
    adv, n_zero = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, eps=0.0)
    std = math.sqrt(0.25 * 0.75)  # population std of [1, 0, 0, 0]
    assert close(adv, [0.75 / std, -0.25 / std, -0.25 / std, -0.25 / std])
    assert n_zero == 0
    adv, _ = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4, mode="drgrpo")
    assert close(adv, [0.75, -0.25, -0.25, -0.25])


def test_group_advantages_zero_variance_exact_zero():
    # 0.3 repeated: the float mean may be off by an ulp; advantages must still be exactly 0.
    rewards = torch.tensor([0.3] * 8 + [0.7] * 8 + [1.0, 0.0] * 4)
    for mode in ("grpo", "drgrpo"):
        adv, n_zero = group_advantages(rewards, 8, mode=mode)
        assert n_zero == 2
        assert torch.equal(adv[:16], torch.zeros(16))
        assert adv[16:].abs().min() > 0.4


def test_group_advantages_bad_batch():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.zeros(10), 4)
    with pytest.raises(ValueError, match="mode"):
        group_advantages(torch.zeros(8), 4, mode="bogus")


# ----------------------------------------------------------------------------- aggregate_loss

def random_batch(seed, b=6, t=5):
    g = torch.Generator().manual_seed(seed)
    per_token = torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.4
    mask[2] = False  # one row with no trained token
    return per_token, mask


def test_aggregate_hand_values():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    assert close(aggregate_loss(per_token, mask, "token_mean"), (1 + 2 + 4) / 3)
    assert close(aggregate_loss(per_token, mask, "seq_mean"), (1.5 + 4.0) / 2)
    assert close(aggregate_loss(per_token, mask.float(), "token_mean", num_tokens=7), 1.0)
    assert close(aggregate_loss(per_token, mask, "seq_mean", num_seqs=5), 5.5 / 5)
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_loss(per_token, mask, "sum")


def test_aggregate_all_masked_and_nan_in_masked_positions():
    per_token = torch.tensor([[NAN, 1.0], [2.0, float("inf")]], requires_grad=True)
    mask = torch.zeros(2, 2, dtype=torch.bool)
    for agg in ("token_mean", "seq_mean"):
        loss = aggregate_loss(per_token, mask, agg)
        loss.backward()
        assert loss.item() == 0.0
        assert torch.isfinite(per_token.grad).all()
        per_token.grad = None
    mask = torch.tensor([[False, True], [True, False]])
    assert close(aggregate_loss(per_token, mask, "token_mean"), 1.5)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean"])
def test_aggregate_micro_batches_sum_to_full_gradient(agg):
    per_token, mask = random_batch(1)
    x_full = per_token.clone().requires_grad_(True)
    full = aggregate_loss(x_full ** 2, mask, agg)
    full.backward()

    x_mb = per_token.clone().requires_grad_(True)
    n_tok, n_seq, total = mask.sum(), mask.shape[0], 0.0
    for sl in (slice(0, 2), slice(2, 3), slice(3, 6)):  # slice(2, 3) is the all-masked row
        part = aggregate_loss(x_mb[sl] ** 2, mask[sl], agg, num_tokens=n_tok, num_seqs=n_seq)
        part.backward()
        total += part.item()
    assert close(total, full.item())
    assert close(x_mb.grad, x_full.grad)


def test_masked_mean():
    x = torch.tensor([[1.0, NAN], [3.0, 5.0]])
    m = torch.tensor([[True, False], [True, True]])
    assert close(masked_mean(x, m), 3.0)
    assert close(masked_mean(x, m, dim=1), [1.0, 4.0])
    assert masked_mean(x, torch.zeros_like(m)).item() == 0.0


# ----------------------------------------------------------------------------- ppo_clip_loss

@pytest.mark.parametrize("agg", ["token_mean", "seq_mean"])
def test_ppo_matches_loop(agg):
    g = torch.Generator().manual_seed(2)
    b, t = 6, 7
    logp_old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    logp_new = logp_old + 0.4 * torch.randn(b, t, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    mask = torch.rand(b, t, generator=g) > 0.3
    loss, stats = ppo_clip_loss(logp_new, logp_old, adv, mask, clip_low=0.2, clip_high=0.28, agg=agg)
    ref_loss, ref_frac = ref_ppo(logp_new.tolist(), logp_old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28, agg)
    assert close(loss, ref_loss)
    assert close(stats["clip_frac"], ref_frac)
    assert 0.0 < stats["clip_frac"] < 1.0  # the example does exercise the clip
    assert stats["num_tokens"] == int(mask.sum())


def test_ppo_clip_frac_hand_example():
    # Five one-token sequences (advantages are per sequence), clip range [0.8, 1.2]:
    #   ratio 1.5, A=+1 -> clipped at 1.2          ratio 0.5, A=-1 -> clipped at 0.8
    #   ratio 1.5, A=-1 -> NOT clipped (min keeps the more pessimistic unclipped term)
    #   ratio 1.1, A=+1 -> inside the range        ratio 3.0 -> masked out, ignored
    ratios = torch.tensor([1.5, 0.5, 1.5, 1.1, 3.0]).unsqueeze(1)  # (5, 1)
    logp_old = torch.full((5, 1), -1.0)
    logp_new = (logp_old + ratios.log()).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0, 1.0])
    mask = torch.tensor([True, True, True, True, False]).unsqueeze(1)
    loss, stats = ppo_clip_loss(logp_new, logp_old, adv, mask, clip_low=0.2, clip_high=0.2)
    assert close(stats["clip_frac"], 2 / 4)
    assert close(stats["clip_frac_high"], 1 / 4) and close(stats["clip_frac_low"], 1 / 4)
    assert close(stats["ratio_max"], 1.5, atol=1e-5) and close(stats["ratio_min"], 0.5, atol=1e-5)
    per_token = [-1.2 * 1.0, -0.8 * -1.0, -1.5 * -1.0, -1.1 * 1.0]
    assert close(loss, sum(per_token) / 4, atol=1e-5)
    loss.backward()
    # clipped tokens get no gradient; unclipped ones get -A * ratio / num_tokens; masked gets none
    assert close(logp_new.grad.squeeze(1), [0.0, 0.0, 1.5 / 4, -1.1 / 4, 0.0], atol=1e-5)


def test_ppo_ratio_one_is_plain_policy_gradient():
    g = torch.Generator().manual_seed(3)
    logp = -torch.rand(4, 3, generator=g)
    logp_new = logp.clone().requires_grad_(True)
    adv = torch.tensor([1.0, -2.0, 0.5, 0.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.bool)
    loss, stats = ppo_clip_loss(logp_new, logp, adv, mask)
    loss.backward()
    assert stats["clip_frac"] == 0.0 and close(stats["ratio_mean"], 1.0)
    expected = -(adv[:, None] * mask) / mask.sum()
    assert close(logp_new.grad, expected)
    assert close(loss, (-(adv[:, None] * mask)).sum() / mask.sum())


# ----------------------------------------------------------------------------- kl_penalty

def small_categoricals():
    p = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.1, 0.4, 0.3, 0.2], dtype=torch.float64)
    return p, q, float((p * (p / q).log()).sum())


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_exact_expectation(estimator):
    p, q, kl = small_categoricals()
    est = kl_penalty(p.log(), q.log(), estimator)  # one value per outcome x
    assert close((p * est).sum(), kl, atol=1e-12)  # E_{x~p}[estimate] summed exactly


def test_kl_monte_carlo_and_signs():
    p, q, kl = small_categoricals()
    g = torch.Generator().manual_seed(4)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    for est in ("k1", "k3"):
        mc = kl_penalty(p.log()[x], q.log()[x], est).mean().item()
        assert abs(mc - kl) < 0.01, (est, mc, kl)
    k3 = kl_penalty(p.log()[x], q.log()[x], "k3")
    assert (k3 >= 0).all()
    assert (kl_penalty(p.log(), q.log(), "k1") < 0).any()  # k1 can be negative per sample
    assert (kl_penalty(p.log(), q.log(), "k2") >= 0).all()
    # k2 is biased but agrees with the KL to second order for nearby distributions
    q_near = p * torch.tensor([1.02, 0.97, 1.01, 1.0], dtype=torch.float64)
    q_near = q_near / q_near.sum()
    kl_near = float((p * (p / q_near).log()).sum())
    assert abs(float((p * kl_penalty(p.log(), q_near.log(), "k2")).sum()) - kl_near) < 0.05 * kl_near
    with pytest.raises(ValueError, match="estimator"):
        kl_penalty(p.log(), q.log(), "k4")


def test_kl_zero_when_equal():
    lp = torch.log(torch.tensor([0.3, 0.7]))
    for est in ("k1", "k2", "k3"):
        assert torch.equal(kl_penalty(lp, lp, est), torch.zeros(2))


# ----------------------------------------------------------------------------- self_reward_score

def test_self_reward_score():
    logp = torch.tensor([-23.0, -13.0, NAN, -18.0])
    r_s = self_reward_score(logp, c_ref=-23.0, beta_v=0.1)
    assert close(r_s[[0, 1, 3]], [0.0, 1.0, 0.5])
    assert torch.isnan(r_s[2])


# ----------------------------------------------------------------------------- laser_mse_loss

def test_laser_matches_loop_and_hand_value():
    r_s = torch.tensor([0.9, 0.2, 0.4, -0.1, 1.3, 0.7])
    r_v = torch.tensor([1, 0, 1, 0, 0, 1])
    fin = torch.tensor([True, True, True, True, True, False])
    loss, stats = laser_mse_loss(r_s, r_v, fin)
    assert close(loss, ref_laser(r_s.tolist(), r_v.tolist(), fin.tolist()))
    # by hand: half the mean sq. error of each class
    mse_c = (0.1**2 + 0.6**2) / 2
    mse_i = (0.2**2 + 0.1**2 + 1.3**2) / 3
    assert close(loss, 0.5 * mse_c + 0.5 * mse_i)
    assert stats["n_correct"] == 2 and stats["n_incorrect"] == 3
    assert close(stats["mse_correct"], mse_c) and close(stats["mse_incorrect"], mse_i)


def test_laser_random_matches_loop():
    g = torch.Generator().manual_seed(5)
    r_s = torch.randn(32, generator=g, dtype=torch.float64)
    r_v = torch.randint(0, 2, (32,), generator=g)
    fin = torch.rand(32, generator=g) > 0.2
    loss, _ = laser_mse_loss(r_s, r_v, fin)
    assert close(loss, ref_laser(r_s.tolist(), r_v.tolist(), fin.tolist()))


def test_laser_single_class_no_nan():
    r_s = torch.tensor([0.5, 0.9, 0.1], requires_grad=True)
    r_v = torch.tensor([1.0, 1.0, 1.0])
    loss, stats = laser_mse_loss(r_s, r_v, torch.ones(3, dtype=torch.bool))
    loss.backward()
    # N = N_c = 3, so w = 3 / (2 * 3) = 1/2 on every row: half the MSE; the empty class weighs 0
    assert close(loss, 0.5 * (0.25 + 0.01 + 0.81) / 3)
    assert close(loss, ref_laser(r_s.tolist(), r_v.tolist(), [True] * 3))
    assert torch.isfinite(r_s.grad).all()
    assert stats["n_incorrect"] == 0 and stats["mse_incorrect"] == 0.0


def test_laser_nan_in_truncated_rows_does_not_leak():
    r_s = torch.tensor([0.8, NAN, 0.3, float("inf")], requires_grad=True)
    r_v = torch.tensor([1.0, 1.0, 0.0, 0.0])
    fin = torch.tensor([True, False, True, False])
    loss, stats = laser_mse_loss(r_s, r_v, fin)
    loss.backward()
    assert torch.isfinite(loss)
    assert close(loss, 0.5 * 0.2**2 + 0.5 * 0.3**2)
    assert torch.isfinite(r_s.grad).all()
    # gradient flows only to finished rows: dL/dr_s = w_i * 2 (r_s - r_v) / N with w = N/(2 N_class)
    assert close(r_s.grad, [2 * (0.8 - 1.0) / 2, 0.0, 2 * 0.3 / 2, 0.0])
    assert stats["n_correct"] == 1 and stats["n_incorrect"] == 1


def test_laser_no_finished_rows():
    r_s = torch.tensor([NAN, 0.5], requires_grad=True)
    loss, stats = laser_mse_loss(r_s, torch.tensor([1.0, 0.0]), torch.zeros(2, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert torch.equal(r_s.grad, torch.zeros(2))
    assert stats["n_correct"] == 0 and stats["n_incorrect"] == 0


def test_laser_micro_batches_sum_to_full_gradient():
    g = torch.Generator().manual_seed(6)
    r_s0 = torch.randn(12, generator=g, dtype=torch.float64)
    r_v = torch.randint(0, 2, (12,), generator=g)
    fin = torch.rand(12, generator=g) > 0.25
    r_s0[~fin] = NAN

    full_in = r_s0.clone().requires_grad_(True)
    full, _ = laser_mse_loss(full_in, r_v, fin)
    full.backward()

    mb_in = r_s0.clone().requires_grad_(True)
    n_c = int((fin & (r_v == 1)).sum())
    n_i = int((fin & (r_v == 0)).sum())
    total = 0.0
    for sl in (slice(0, 5), slice(5, 7), slice(7, 12)):
        part, _ = laser_mse_loss(mb_in[sl], r_v[sl], fin[sl], n_correct=n_c, n_incorrect=n_i)
        part.backward()
        total += part.item()
    assert close(total, full.item())
    assert close(mb_in.grad, full_in.grad)
    with pytest.raises(ValueError, match="whole step"):
        laser_mse_loss(r_s0, r_v, fin, n_correct=0, n_incorrect=n_i)


# ----------------------------------------------------------------------------- advantage integration

def test_self_reward_advantages_matches_loop():
    k = 4
    r_s = torch.tensor([
        0.9, 0.1, 1.4, -0.3,      # spread out (with clipping) -> used
        0.50, 0.52, 0.51, 0.49,   # std < 0.1 -> not used
        0.9, NAN, 0.8, 0.7,       # truncated NaN row counts as s = 0 -> used
        NAN, NAN, NAN, NAN,       # all truncated -> s = 0 everywhere -> not used
    ])
    fin = ~torch.isnan(r_s)
    a_s, use = self_reward_advantages(r_s, fin, k, std_threshold=0.1)
    ref_a, ref_use = ref_self_reward_adv(r_s.tolist(), fin.tolist(), k, 0.1)
    assert close(a_s, ref_a)
    assert use.tolist() == ref_use == [True] * 4 + [False] * 4 + [True] * 4 + [False] * 4
    assert torch.isfinite(a_s).all()
    with pytest.raises(ValueError, match="multiple of group_size"):
        self_reward_advantages(r_s[:6], fin[:6], k)


def test_a_threshold_of_zero_still_leaves_out_groups_of_equal_scores():
    """--std_threshold 0: a group whose scores are all equal gives no self-reward advantage (its float std
    can be ~3e-8: 0.3 and 0.7 repeated gave |A_s| of 0.03 and 0.06 before the spread check); others are used."""
    for v in (0.3, 0.7):  # (one group: torch's std of it is 3e-8 and 6e-8, not 0)
        a_s, use = self_reward_advantages(torch.full((8,), v), torch.ones(8, dtype=torch.bool), 8, std_threshold=0.0)
        assert not use.any() and (a_s == 0).all()
    a_s, use = self_reward_advantages(torch.tensor([0.3] * 7 + [0.31]), torch.ones(8, dtype=torch.bool), 8,
                                      std_threshold=0.0)
    assert use.all() and a_s.abs().max() > 1


def test_integrate_advantages():
    k = 4
    g = torch.Generator().manual_seed(7)
    # groups 2-4 with mixed rewards, so that leaving a group out (its A_v kept whole) shows
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0] + [1.0, 0.0, 0.0, 1.0] * 2)
    adv_v, _ = group_advantages(rewards, k)
    r_s = torch.rand(20, generator=g) * 1.4 - 0.2
    r_s[8:12] = torch.tensor([0.3, 0.31, 0.29, 0.3])  # tiny spread -> not integrated
    r_s[12:16] = torch.tensor([0.42, 0.58, 0.42, 0.58])  # std 0.08, below the threshold of 0.1
    r_s[16:20] = torch.tensor([0.38, 0.62, 0.38, 0.62])  # std 0.12, above it
    r_s[1] = NAN
    fin = ~torch.isnan(r_s)
    r_s = r_s.requires_grad_(True)  # the function must not build a graph from it
    adv, n_groups = integrate_advantages(adv_v, r_s, fin, k, tau=0.1, std_threshold=0.1)
    ref_a, ref_use = ref_self_reward_adv(r_s.tolist(), fin.tolist(), k, 0.1)
    assert ref_use[::k] == [True, True, False, False, True]
    ref = [0.9 * v + 0.1 * a if u else v for v, a, u in zip(adv_v.tolist(), ref_a, ref_use)]
    assert close(adv, ref)
    assert n_groups == sum(ref_use[::k]) == 3
    assert not adv.requires_grad
    # all-correct group 0 got a nonzero signal only through the self-reward term
    assert adv[:4].abs().sum() > 0
    # tau = 0 leaves the verifier advantages untouched
    adv0, _ = integrate_advantages(adv_v, r_s, fin, k, tau=0.0)
    assert torch.equal(adv0, adv_v)


def test_group_class_weights_by_hand_and_in_the_loss():
    # group 0: 2 correct, 2 incorrect; group 1: 3 correct, 1 incorrect; group 2: all incorrect, one truncated
    r_v = torch.tensor([1.0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
    fin = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1]).bool()
    w = group_class_weights(r_v, fin, 4)
    assert close(w, torch.tensor([1, 1, 1, 1, 4 / 6, 4 / 6, 4 / 6, 2, 0.5, 0.5, 0, 0.5]))
    r_s = torch.linspace(-0.5, 1.5, 12, dtype=torch.float64)
    r_s[10] = NAN  # a truncated row never reaches the loss
    loss, _ = laser_mse_loss(r_s, r_v, fin, weights=w)
    fin_rows = [i for i in range(12) if fin[i]]
    hand = sum(float(w[i]) * (float(r_s[i]) - float(r_v[i])) ** 2 for i in fin_rows) / len(fin_rows)
    assert close(loss.item(), hand)
    # the batch weighting (eq. 6) is a different loss on the same rows
    assert not close(laser_mse_loss(r_s, r_v, fin)[0].item(), hand)
