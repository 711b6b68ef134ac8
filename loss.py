"""Loss terms for GRPO + LaSeR, as small pure functions over tensors.

Contract
--------
Every function here takes tensors and returns tensors (plus, for the loss terms, a dict of plain
Python numbers for logging). None of them touches a model, an optimiser or a global RNG, and none
loops over rows or groups in Python: the slow, obviously-correct looped versions live in
tests/test_loss.py, and the tests check that the two agree.

Batch layout: rows are ordered group-major. With K = group_size rollouts per prompt, rows
[g*K : (g+1)*K] are the K samples of prompt g. B must be a multiple of K; otherwise a ValueError is
raised (we never silently drop rows).

Equations are cited against the method note that ships with the code, docs/laser.md (§N). Each
function's docstring says which approximation or convention it carries.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# A group counts as "zero variance" when max - min of its values is at most this. We compare the
# spread rather than the computed std, because the float mean of identical values can be off by an
# ulp and give a tiny nonzero std.
ZERO_SPREAD_TOL = 1e-6


# ----------------------------------------------------------------------------- helpers

def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of x over positions where mask is nonzero. The denominator is clamped to >= 1, so an
    all-masked input gives 0, not NaN. Masked-out values never enter the result (torch.where, so
    even NaN there is harmless)."""
    m = mask.bool()
    total = torch.where(m, x, torch.zeros_like(x))
    count = m.to(x.dtype)
    if dim is None:
        return total.sum() / count.sum().clamp_min(1.0)
    return total.sum(dim) / count.sum(dim).clamp_min(1.0)


def _num_groups(batch_size: int, group_size: int) -> int:
    """Number of groups; raise if the batch does not split evenly into groups of group_size."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if batch_size % group_size != 0:
        raise ValueError(
            f"batch size {batch_size} is not a multiple of group_size {group_size}: rows must be "
            f"ordered group-major with exactly group_size rollouts per prompt"
        )
    return batch_size // group_size


def _as_float(x: Tensor) -> Tensor:
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _group_stats(values: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group mean, population std and spread (max - min) of a (B,) tensor, each (G,)."""
    g = values.view(_num_groups(values.shape[0], group_size), group_size)  # (G, K)
    mean = g.mean(dim=1)  # (G,)
    std = g.std(dim=1, unbiased=False)  # (G,) population std: divides by K, not K - 1
    spread = g.amax(dim=1) - g.amin(dim=1)  # (G,)
    return mean, std, spread


def _per_row(group_values: Tensor, group_size: int) -> Tensor:
    """(G,) -> (B,): repeat each group's value for its group_size rows."""
    return group_values.repeat_interleave(group_size)


# ----------------------------------------------------------------------------- GRPO

def group_advantages(
    rewards: Tensor, group_size: int, mode: str = "grpo", eps: float = 1e-6
) -> tuple[Tensor, int]:
    """Group-relative advantages for the verifier reward (docs/laser.md §2, GRPO).

    rewards: (B,) float, group-major. Returns (advantages (B,), number of zero-variance groups).

    mode="grpo":   A_i = (r_i - mean_g(r)) / (std_g(r) + eps)   with the population std (divide by K).
    mode="drgrpo": A_i = r_i - mean_g(r)                          (Dr. GRPO: no std division, which
                   removes GRPO's bias towards groups with small reward spread).

    A group whose rewards are all equal (spread <= ZERO_SPREAD_TOL) carries no learning signal; its
    advantages are set to exactly 0 and it is counted, so the trainer can log how many groups were
    wasted.
    """
    if mode not in ("grpo", "drgrpo"):
        raise ValueError(f"unknown advantage mode {mode!r}; expected 'grpo' or 'drgrpo'")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (B,), got shape {tuple(rewards.shape)}")
    rewards = _as_float(rewards)
    mean, std, spread = _group_stats(rewards, group_size)  # (G,) each
    centred = rewards - _per_row(mean, group_size)  # (B,)
    if mode == "grpo":
        adv = centred / (_per_row(std, group_size) + eps)  # docs/laser.md §2: (r - mean) / (std + eps)
    else:
        adv = centred  # Dr. GRPO: r - mean
    zero_var = spread <= ZERO_SPREAD_TOL  # (G,)
    adv = torch.where(_per_row(zero_var, group_size), torch.zeros_like(adv), adv)  # exact zeros
    return adv, int(zero_var.sum().item())


def aggregate_loss(
    per_token: Tensor,
    mask: Tensor,
    agg: str = "token_mean",
    num_tokens: int | float | Tensor | None = None,
    num_seqs: int | float | Tensor | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar over the masked (trained) tokens.

    agg="token_mean": sum_{i,t} loss[i,t] * mask[i,t] / num_tokens.
        num_tokens defaults to mask.sum() of *this* batch. When a step's batch is split into
        micro-batches, pass the token count of the WHOLE step's batch: then the micro-batch losses
        sum to the full-batch loss (and their gradients to its gradient). A per-micro-batch mean
        would not.
    agg="seq_mean": sum_i ( token-mean of loss within sequence i ) / num_seqs.
        num_seqs defaults to B (rows with no trained token count, contributing 0); pass the whole
        step's row count when micro-batching. num_tokens is ignored in this mode.

    All denominators are clamped to >= 1, so an all-masked micro-batch gives 0, not NaN. Masked
    positions are removed with torch.where, so NaN/inf there cannot reach the result. Dr. GRPO's constant
    (maximum-length) normaliser is not implemented.
    """
    if per_token.shape != mask.shape:
        raise ValueError(
            f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must have the same shape"
        )
    m = mask.to(per_token.dtype)  # (B, T) 1 = trained token
    weighted = torch.where(m != 0, per_token * m, torch.zeros_like(per_token))  # (B, T)
    if agg == "token_mean":
        denom = m.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=per_token.dtype)
        return weighted.sum() / denom.clamp_min(1.0)
    if agg == "seq_mean":
        per_seq = weighted.sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B,)
        n = per_token.shape[0] if num_seqs is None else num_seqs
        denom = torch.as_tensor(n, dtype=per_token.dtype)
        return per_seq.sum() / denom.clamp_min(1.0)
    raise ValueError(f"unknown aggregation {agg!r}; expected 'token_mean' or 'seq_mean'")


def ppo_clip_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    agg: str = "token_mean",
    num_tokens: int | float | Tensor | None = None,
    num_seqs: int | float | Tensor | None = None,
) -> tuple[Tensor, dict]:
    """PPO clipped surrogate, the policy-gradient part of GRPO (docs/laser.md §2, L_RLVR).

    logp_new: (B, T) log pi_theta(y_t | ...) of the sampled tokens, with grad.
    logp_old: (B, T) the same under the sampling policy (treated as a constant; detached here).
    advantages: (B,) one advantage per sequence, broadcast over its tokens.
    mask: (B, T) bool/0-1, 1 = response token that is trained. The z_c readout is NOT a token here.

        ratio = exp(logp_new - logp_old)
        loss_t = -min(ratio * A, clamp(ratio, 1 - clip_low, 1 + clip_high) * A)

    then reduced by aggregate_loss(agg, num_tokens, num_seqs) (see there for micro-batching).

    With one optimiser update per rollout batch (the paper's setting) logp_new equals logp_old up to the
    rounding differences between the sampler's forward and the trainer's (about 1e-5 in float32 on CPU;
    bf16 rounding on a GPU), so the ratio is 1 to that precision, the clip does not fire and the gradient
    is the plain policy gradient -A * grad log pi. The clip only matters with several updates per batch.

    Returns (loss, stats) with stats of this batch's masked tokens:
      clip_frac       fraction of tokens where the clipped branch is the active one (zero gradient)
      clip_frac_low   ... of those, ratio < 1 - clip_low (only possible with A < 0)
      clip_frac_high  ... of those, ratio > 1 + clip_high (only possible with A > 0)
      ratio_mean, ratio_min, ratio_max
      num_tokens      number of masked tokens in this batch (to weight stats across micro-batches)
    """
    if logp_new.shape != logp_old.shape or logp_new.shape != mask.shape:
        raise ValueError(
            f"logp_new {tuple(logp_new.shape)}, logp_old {tuple(logp_old.shape)} and mask "
            f"{tuple(mask.shape)} must all be (B, T)"
        )
    if advantages.shape != logp_new.shape[:1]:
        raise ValueError(f"advantages must be (B,) = {tuple(logp_new.shape[:1])}, got {tuple(advantages.shape)}")
    adv = advantages.detach().to(logp_new.dtype).unsqueeze(1)  # (B, 1)
    ratio = torch.exp(logp_new - logp_old.detach())  # (B, T)
    unclipped = ratio * adv  # (B, T)
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv  # (B, T)
    # min(unclipped, clipped); the clipped branch is "active" exactly when it is strictly smaller.
    clip_active = clipped < unclipped  # (B, T)
    per_token = -torch.where(clip_active, clipped, unclipped)  # (B, T)
    loss = aggregate_loss(per_token, mask, agg=agg, num_tokens=num_tokens, num_seqs=num_seqs)

    with torch.no_grad():  # read back to the host at once (one sync)
        m = mask.bool()
        r = ratio.detach()
        inf = torch.full_like(r, math.inf)
        n, frac, low, high, mean, lo, hi = torch.stack([
            m.sum().to(r.dtype), masked_mean(clip_active.to(r.dtype), m),
            masked_mean((clip_active & (r < 1.0 - clip_low)).to(r.dtype), m),
            masked_mean((clip_active & (r > 1.0 + clip_high)).to(r.dtype), m), masked_mean(r, m),
            torch.where(m, r, inf).min(), torch.where(m, r, -inf).max()]).tolist()
        stats = {"clip_frac": frac, "clip_frac_low": low, "clip_frac_high": high,
                 "ratio_mean": mean if n > 0 else 1.0, "ratio_min": lo if n > 0 else 1.0,
                 "ratio_max": hi if n > 0 else 1.0, "num_tokens": int(n)}
    return loss, stats


def kl_penalty(logp: Tensor, logp_ref: Tensor, estimator: str = "k3") -> Tensor:
    """Per-token sample estimate of KL(pi || pi_ref), for tokens sampled from pi. Same shape as input.

    With log_ratio = logp_ref - logp (= log pi_ref(x)/pi(x)):
      "k1": -log_ratio = logp - logp_ref.        Unbiased, but can be negative per token.
      "k2": 0.5 * log_ratio ** 2.                 Nonnegative, biased (exact only to 2nd order).
      "k3": exp(log_ratio) - log_ratio - 1.       Unbiased and nonnegative.
    "Unbiased" means E_{x~pi}[estimate(x)] == KL(pi || pi_ref) exactly; tests check this by an exact
    sum over a small categorical. Used as a penalty term in the loss, the gradient of these
    estimates is not in general an unbiased gradient of the KL; we accept that, as GRPO does.

    The KL coefficient is 0 by default, as in the paper (docs/laser.md §7); the trainer then skips the
    reference forward pass entirely and never calls this.
    """
    log_ratio = logp_ref - logp  # log pi_ref / pi
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(log_ratio) - log_ratio - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1', 'k2' or 'k3'")


# ----------------------------------------------------------------------------- LaSeR

def self_reward_score(logp_zc: Tensor, c_ref: float, beta_v: float) -> Tensor:
    """Last-token self-rewarding score (docs/laser.md §1):  r_s = beta_v * (log pi_theta(z_c | x, y) - c_ref).

    logp_zc: (B,) log-softmax (float32, untempered) of the logits at the EOS position, at z_c.
    Carries the paper's two approximations: log Z(x, y) ~ 0 and log pi_ref(z_c | x, y) ~ c_ref.
    NaN in (e.g. for truncated rows with no EOS) stays NaN out; callers mask those rows.
    """
    return beta_v * (logp_zc - c_ref)  # docs/laser.md §1


def laser_mse_loss(
    r_s: Tensor,
    r_v: Tensor,
    finished: Tensor,
    n_correct: int | Tensor | None = None,
    n_incorrect: int | Tensor | None = None,
    weights: Tensor | None = None,
) -> tuple[Tensor, dict]:
    """Class-reweighted MSE between the self-reward score and the verifier reward (docs/laser.md §2):

        L_SR = 1/N * sum_i w_i * (r_s,i - r_v,i)^2      over finished rows i
        w_i  = N / (2 N_c) if r_v,i = 1,   N / (2 N_i) if r_v,i = 0,   N = N_c + N_i

    so each class carries half the total weight. A class with no members gets weight 0 (division
    guarded); taken literally, the formula then gives the other class weight 1/2, i.e. the loss is
    half that class's MSE. We keep that literal reading (no renormalisation).

    r_s: (B,) score with grad. Rows that are not finished (truncated, no EOS) may hold NaN or
         garbage: they are removed with torch.where *before* any arithmetic, so neither the loss
         nor the gradient sees them, and their gradient is exactly 0.
    r_v: (B,) verifier reward in {0, 1} (finished-but-unparsable answers are 0 and included).
    finished: (B,) bool, True = the response ended with EOS.
    n_correct, n_incorrect: N_c and N_i. Default: counts among finished rows of this batch. When
         micro-batching, pass the WHOLE step's counts: then micro-batch losses sum to the full loss.
    weights: (B,) per-row w_i replacing the batch-level ones (a study variant: `group_class_weights`);
         the loss is still divided by N.

    With no finished rows the loss is a zero that is still connected to r_s (backward works).
    Returns (loss, stats) with this batch's n_correct, n_incorrect, mse_correct, mse_incorrect
    (0.0 for an empty class; check the count), rs_mean_correct, rs_mean_incorrect.
    """
    if not (r_s.shape == r_v.shape == finished.shape) or r_s.dim() != 1:
        raise ValueError(
            f"r_s {tuple(r_s.shape)}, r_v {tuple(r_v.shape)}, finished {tuple(finished.shape)} must all be (B,)"
        )
    fin = finished.bool()  # (B,)
    target = r_v.to(r_s.dtype)  # (B,)
    is_correct = target > 0.5  # (B,)
    correct = fin & is_correct  # (B,)
    incorrect = fin & ~is_correct  # (B,)
    local_c, local_i = (int(v) for v in torch.stack([correct.sum(), incorrect.sum()]).tolist())
    n_c = torch.as_tensor(local_c if n_correct is None else n_correct, dtype=r_s.dtype)
    n_i = torch.as_tensor(local_i if n_incorrect is None else n_incorrect, dtype=r_s.dtype)
    if n_c.item() < local_c or n_i.item() < local_i:
        raise ValueError(
            f"n_correct={n_c.item():g}, n_incorrect={n_i.item():g} are smaller than this batch's own "
            f"counts ({local_c}, {local_i}); pass the whole step's counts of finished rows"
        )

    safe_rs = torch.where(fin, r_s, torch.zeros_like(r_s))  # (B,) truncated rows -> 0, grad 0
    sq_err = (safe_rs - target) ** 2  # (B,)
    n_all = n_c + n_i  # N
    w_c = torch.where(n_c > 0, n_all / (2.0 * n_c.clamp_min(1.0)), torch.zeros_like(n_c))  # N / (2 N_c)
    w_i = torch.where(n_i > 0, n_all / (2.0 * n_i.clamp_min(1.0)), torch.zeros_like(n_i))  # N / (2 N_i)
    w = torch.where(correct, w_c, torch.where(incorrect, w_i, torch.zeros_like(w_i)))  # (B,) 0 if truncated
    if weights is not None:
        w = torch.where(fin, weights.to(r_s.dtype), torch.zeros_like(w))
    loss = (w * sq_err).sum() / n_all.clamp_min(1.0)  # docs/laser.md §2: L_SR = 1/N sum_i w_i (r_s - r_v)^2

    with torch.no_grad():  # read back to the host at once (one sync)
        e, s = sq_err.detach(), safe_rs.detach()
        values = torch.stack([masked_mean(e, correct), masked_mean(e, incorrect), masked_mean(s, correct),
                              masked_mean(s, incorrect)]).tolist()
        stats = {"n_correct": local_c, "n_incorrect": local_i,
                 **dict(zip(("mse_correct", "mse_incorrect", "rs_mean_correct", "rs_mean_incorrect"), values))}
    return loss, stats


def group_class_weights(r_v: Tensor, finished: Tensor, group_size: int) -> Tensor:
    """Class reweighting within each problem's group instead of over the batch (a study variant,
    `--sr_weighting group`; not the paper's eq. 6): a group with n finished rows, n_c correct and n_i
    incorrect gives its correct rows n / (2 n_c) and its incorrect ones n / (2 n_i), so that both classes
    of every problem carry equal weight and easy or hard problems cannot be fit by their difficulty alone;
    truncated rows get 0. A group holding both classes has weights summing to its finished count; a group of
    one class gives each row 1/2, as eq. 6 does when a class is empty."""
    G = _num_groups(r_v.shape[0], group_size)
    fin = finished.bool().view(G, group_size)
    cor = fin & (r_v.view(G, group_size) > 0.5)
    inc = fin & ~(r_v.view(G, group_size) > 0.5)
    n, n_c, n_i = (m.sum(1, keepdim=True).to(torch.float32) for m in (fin, cor, inc))
    w = torch.where(cor, n / (2 * n_c.clamp_min(1)), torch.where(inc, n / (2 * n_i.clamp_min(1)), torch.zeros_like(n)))
    return w.reshape(-1)


def self_reward_advantages(
    r_s: Tensor, finished: Tensor, group_size: int, std_threshold: float = 0.1, eps: float = 1e-6
) -> tuple[Tensor, Tensor]:
    """Self-rewarding advantages (docs/laser.md §3), from detached scores of the sampling policy.

        s_i   = clip(r_s,i, 0, 1), and 0 for truncated rows (whose r_s may be NaN)
        A_s,i = (s_i - mean_g(s)) / (std_g(s) + eps)      only where std_g(s) > std_threshold

    std is the population std (divide by K), as in group_advantages. Because std > threshold in
    every used group, eps only guards the degenerate std_threshold=0 case, where a group of equal
    scores (spread <= ZERO_SPREAD_TOL) is still left out: the float std of equal values can be about
    3e-8, which over std + eps made advantages of a few hundredths from nothing.
    Returns (A_s (B,), use (B,) bool): use is True on rows of groups with std_g(s) > threshold and a
    spread above ZERO_SPREAD_TOL; A_s is exactly 0 on all other rows.
    """
    r_s = r_s.detach()
    fin = finished.bool()
    s = torch.where(fin, r_s.clamp(0.0, 1.0), torch.zeros_like(r_s))  # (B,) docs/laser.md §3
    mean, std, spread = _group_stats(s, group_size)  # (G,) each
    use = _per_row((std > std_threshold) & (spread > ZERO_SPREAD_TOL), group_size)  # (B,)
    a_s = (s - _per_row(mean, group_size)) / (_per_row(std, group_size) + eps)  # docs/laser.md §3
    a_s = torch.where(use, a_s, torch.zeros_like(a_s))  # (B,)
    return a_s, use


def integrate_advantages(
    adv_v: Tensor,
    r_s: Tensor,
    finished: Tensor,
    group_size: int,
    tau: float = 0.1,
    std_threshold: float = 0.1,
) -> tuple[Tensor, int]:
    """Mix the verifier advantage with the self-rewarding advantage (docs/laser.md §3):

        A_i = (1 - tau) * A_v,i + tau * A_s,i    in groups with std_g(s) > std_threshold
        A_i = A_v,i                               elsewhere

    adv_v: (B,) verifier advantages (e.g. from group_advantages). r_s, finished: (B,) detached
    scores of the sampling policy and the EOS flags. Returns (A (B,) detached, number of groups
    that were integrated).
    """
    if adv_v.shape != r_s.shape:
        raise ValueError(f"adv_v {tuple(adv_v.shape)} and r_s {tuple(r_s.shape)} must both be (B,)")
    adv_v = adv_v.detach()
    a_s, use = self_reward_advantages(r_s, finished, group_size, std_threshold=std_threshold)
    mixed = (1.0 - tau) * adv_v + tau * a_s.to(adv_v.dtype)  # docs/laser.md §3
    adv = torch.where(use, mixed, adv_v)  # (B,)
    n_groups = int(use.view(-1, group_size)[:, 0].sum().item()) if use.numel() else 0
    return adv, n_groups


def check_c_ref(c_ref: float, c_std: float, beta_v: float, margin: float = 2.0,
                max_spread: float = 0.1) -> str | None:
    """docs/laser.md §5: the log Z ~ 0 approximation needs c_ref + 1/beta_v well below 0, and the
    constant c_ref stands in for log pi_ref(z_c | x, y) only if beta_v * std is small against the 0..1
    reward scale. Returns a warning naming both figures, or None. A NaN std (unknown) passes the second check."""
    problems = []
    if c_ref + 1.0 / beta_v > -margin:
        problems.append(f"c_ref + 1/beta_v = {c_ref + 1 / beta_v:.2f} is not below -{margin}: the target "
                        f"log p(z_c) of correct solutions is near or above 0 and log Z ~ 0 fails (raise beta_v)")
    if c_std * beta_v > max_spread:
        problems.append(f"beta_v * std = {beta_v * c_std:.3f} exceeds {max_spread}: log pi_ref(z_c | x, y) "
                        f"varies across solutions by more than a constant c_ref can absorb, so r_s carries "
                        f"the reference model's own spread (lower beta_v, or read r_s as noisier)")
    if not problems:
        return None
    return (f"WARNING: c_ref = {c_ref:.2f} (std {c_std:.2f}), beta_v = {beta_v}, c_ref + 1/beta_v = "
            f"{c_ref + 1 / beta_v:.2f}, beta_v * std = {beta_v * c_std:.3f}: " + "; ".join(problems) + ".")
