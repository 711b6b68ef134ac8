"""Value-level tests of the wiring around the sampler: evaluate.py's records, c_ref calibration and reuse,
and train.py's held-out self-verification. The sampler is replaced by a fake whose rows carry known texts,
finished flags and log p(z_c), so every expected number is derived here from what the fake returned.

Run: python -m pytest -q tests/test_wiring.py
"""

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import torch

import evaluate as ev
import rollout
import train
import verify
from config import PRESETS, Config, heldout_problems
from metrics import self_verification_metrics
from runs import checkpoint

NAN = float("nan")
CFG = dataclasses.replace(Config(), **PRESETS["test"])


def fake_sampler(spec, calls=None):
    """A stand-in for rollout.sample_chunks with its signature and chunking: yields (chunk, rollouts) per call
    of prompts_per_call prompts, row j * K + k of a call being sample k of its j-th prompt. spec(i, k, problem,
    sampling) -> (text, finished, logp_zc) for sample k of problem i (index in `problems`); a truncated row's
    logp_zc is NaN, as the real sampler's. Row g (over all calls) has length 1 + g % 8 and per-token log-prob
    -(g + 1) / 8. `calls` collects each call's arguments."""
    def sample_chunks(model, tok, problems, *, num_samples, max_new_tokens, prompts_per_call, generator,
                      progress="", **sampling):
        if calls is not None:
            calls.append(dict(num_samples=num_samples, max_new_tokens=max_new_tokens,
                              prompts_per_call=prompts_per_call, generator=generator, **sampling))
        for s in range(0, len(problems), prompts_per_call):
            chunk = problems[s:s + prompts_per_call]
            rows = [spec(s + j, k, p, sampling) for j, p in enumerate(chunk) for k in range(num_samples)]
            g = torch.arange(s * num_samples, s * num_samples + len(rows))
            finished = torch.tensor([f for _, f, _ in rows])
            logp_zc = torch.tensor([z if f else NAN for _, f, z in rows], dtype=torch.float32)
            lengths = 1 + g % 8
            logprobs = (-(g[:, None] + 1) / 8.0) * (torch.arange(8)[None, :] < lengths[:, None])
            yield chunk, SimpleNamespace(texts=[t for t, _, _ in rows], finished=finished, logp_zc=logp_zc,
                                         lengths=lengths, logprobs=logprobs.float())
    return sample_chunks


def boxed(answer) -> str:
    return f"so the answer is \\boxed{{{answer}}}"


def wrong_text(p, tag: int) -> str:
    """A finished-looking response with an answer unique to `tag` and wrong for p (checked)."""
    text = boxed(10007 * (tag + 3))
    assert verify.reward(text, p.answer) == 0.0
    return text


def failing_sampler(*a, **k):
    raise AssertionError("sampled, where the checkpoint's c_ref should have been reused")


# ---------------------------------------------------------------------------------------- evaluate.py


def test_collect_records_rows_scores_verdicts_and_greedy_are_each_problems_own(tok, model_factory, tmp_path,
                                                                               monkeypatch):
    """evaluate.collect_records on an RL checkpoint that stores c_ref = -8.5 and beta_v = 0.25 (not the config's
    0.1), 5 problems, K = 4, two prompts a call (so chunk-local row indices matter): each record must hold its
    own problem's K rows j*K .. j*K+K-1 (the fake's answers are unique per row), r_s = beta_v * (logp_zc - c_ref)
    with the checkpoint's values (eq. 3; §8 item 8; NaN for a truncated row), a truncated row must have answer
    None and correct False even when it boxed the gold (§2's convention, evaluate.verdict), and the greedy
    verdict must come from the temperature-0 call, whose verdicts are built opposite to sample 0's. Exact
    binary fractions make the float32 arithmetic exact. Mutations caught: r_s without c_ref, rows = range(j,
    j + n_samples), greedy from sample 0, verdict(..., finished=True)."""
    K, n, c_ref, beta_v = 4, 5, -8.5, 0.25
    model = model_factory()
    tok.save(str(tmp_path / "tokenizer.json"))
    checkpoint(str(tmp_path / "ckpt.pt"), model, torch.optim.AdamW(model.parameters()), 2, CFG, tok,
               {"stage": "rl", "c_ref": c_ref, "beta_v": beta_v})
    problems = heldout_problems(CFG, "test", n)

    right = lambda i, k: (i + k) % 2 == 0           # sample 0 right for even i, wrong for odd i
    fin = lambda i, k: (i + k) % 3 != 2              # (0, 2): truncated although it boxed the gold
    logp = lambda i, k: -20.0 + 0.25 * (i * K + k)
    g_right, g_fin = (lambda i: i % 2 == 1), (lambda i: i != 3)  # greedy opposite to sample 0; i = 3 cut off
    text = lambda i, k, p: boxed(p.answer) if right(i, k) else wrong_text(p, i * K + k)
    g_text = lambda i, p: boxed(p.answer) if g_right(i) else wrong_text(p, 1000 + i)

    def spec(i, k, p, sampling):
        if sampling["temperature"] == 0:
            return g_text(i, p), g_fin(i), 0.0
        return text(i, k, p), fin(i, k), logp(i, k)

    monkeypatch.setattr(ev, "sample_chunks", fake_sampler(spec))
    monkeypatch.setattr(rollout, "sample_chunks", failing_sampler)
    records = ev.collect_records(str(tmp_path), n_samples=K, n_problems=n, batch_size=2 * K, device="cpu")

    ans = lambda t, f: verify.response_answer(t, True) if f else None  # a cut-off row: no answer
    assert [r["problem"] for r in records] == [p.problem for p in problems]
    for i, (rec, p) in enumerate(zip(records, problems)):
        assert rec["gold"] == p.answer
        assert rec["greedy"] == {"answer": ans(g_text(i, p), g_fin(i)), "correct": g_right(i) and g_fin(i)}
        for k, s in enumerate(rec["samples"]):
            g = i * K + k
            assert s["answer"] == ans(text(i, k, p), fin(i, k)) and s["correct"] == (right(i, k) and fin(i, k))
            assert s["finished"] == fin(i, k) and s["length"] == 1 + g % 8 and s["mean_logp"] == -(g + 1) / 8
            if fin(i, k):
                assert s["r_s"] == beta_v * (logp(i, k) - c_ref)
            else:
                assert s["answer"] is None and s["correct"] is False and math.isnan(s["r_s"])
    assert records[0]["samples"][2]["correct"] is False  # boxed the gold, but cut off


# ---------------------------------------------------------------------------------------- c_ref


def calib_spec(i, k, p=None, sampling=None):
    """Calibration row g = i * calib_samples + k: log p(z_c) = -30 + 0.75 g, truncated where g % 3 == 1."""
    g = i * CFG.calib_samples + k
    return "", g % 3 != 1, -30.0 + 0.75 * g


def finished_calib_values(cfg) -> list[float]:
    rows = [calib_spec(i, k) for i in range(cfg.calib_prompts) for k in range(cfg.calib_samples)]
    assert 0 < sum(f for _, f, _ in rows) < len(rows)
    return [z for _, f, z in rows if f]


def test_calibrate_c_ref_is_mean_std_count_over_finished_samples_of_rl_sampling(model_factory, tok, monkeypatch):
    """rollout.calibrate_c_ref (docs/laser.md §5, eq. 12) must return (mean, population std, count) of
    log pi_ref(z_c) over the FINISHED calibration samples only (§8 item 4: a truncated one has no score),
    pooled over every sampling call (eval_batch 2 makes two), drawn with RL's sampling settings (temperature,
    top-k, top-p: §5) and calib_samples per prompt from one generator, the "calib" step generator. The expected
    triple is computed here from the fake's values. Mutations caught: np.max for the mean, truncated rows
    counted, one call's values only."""
    cfg = dataclasses.replace(CFG, eval_batch=2, temperature=0.7, top_k=5, top_p=0.9, seed=3)
    calls = []
    monkeypatch.setattr(rollout, "sample_chunks", fake_sampler(calib_spec, calls))
    got = rollout.calibrate_c_ref(model_factory(), tok, cfg)

    vals = finished_calib_values(cfg)
    assert got == (float(np.mean(vals)), float(np.std(vals)), len(vals))
    (call,) = calls  # one sample_chunks call, split by it into cfg.calib_prompts / eval_batch sampling calls
    assert call["num_samples"] == cfg.calib_samples and call["max_new_tokens"] == cfg.max_new_tokens
    assert (call["temperature"], call["top_k"], call["top_p"]) == (0.7, 5, 0.9)
    assert call["generator"].initial_seed() == rollout.step_generator("calib", 3, 0, "cpu").initial_seed()


def test_run_c_ref_reuses_a_checkpoints_c_ref_and_measures_only_without_one(model_factory, tok, monkeypatch):
    """rollout.run_c_ref: a checkpoint that stores c_ref and beta_v (an RL run's) must give exactly those, with
    no sampling at all: measuring again on the trained policy would read r_s with another c_ref than training
    used (docs/laser.md §8 item 8). A checkpoint without c_ref (an SFT run, its own reference policy) is
    measured (§5): the result is then calibrate_c_ref's mean over the finished samples, with the config's
    beta_v. Mutations caught: always measuring, never measuring, the config's beta_v over the checkpoint's."""
    model = model_factory()
    monkeypatch.setattr(rollout, "sample_chunks", failing_sampler)
    ck = {"stage": "rl", "c_ref": -17.25, "beta_v": 0.25}
    assert rollout.run_c_ref(model, tok, CFG, ck, "run") == (-17.25, 0.25)

    monkeypatch.setattr(rollout, "sample_chunks", fake_sampler(calib_spec))
    vals = finished_calib_values(CFG)
    assert rollout.run_c_ref(model, tok, CFG, {"stage": "sft"}, "run") == (float(np.mean(vals)), CFG.beta_v)


# ---------------------------------------------------------------------------------------- train.py


def test_heldout_eval_self_verification_reads_r_s_with_c_ref(model_factory, tok, monkeypatch):
    """train.heldout_eval logs eval_sv_{tpr,tnr,f1,auroc}: metrics.self_verification_metrics of
    r_s = beta_v * (logp_zc - c_ref) (eq. 3, §6) of the validation samples, with their verdicts and finished
    flags. The fake's r_s targets put correct and incorrect samples on both sides of 0.5, one sample is cut off
    after boxing the gold (incorrect, no score: §2), and without c_ref every r_s would be below 0 (TPR 0), so the
    expected numbers, computed here from the fake's values, pin the c_ref. Also pins eval_acc and
    eval_truncated. Mutation caught: r_s without c_ref."""
    cfg = dataclasses.replace(CFG, beta_v=0.25)
    c_ref = -24.0
    plan = [(True, True, 0.75), (False, True, 0.25), (True, True, 0.25), (False, True, 0.75),
            (True, True, 1.0), (False, True, 0.0), (True, False, NAN), (False, True, 0.25)]  # right, finished, r_s
    problems = heldout_problems(cfg, "validation", len(plan))

    def spec(i, k, p, sampling):
        right, fin, r_s = plan[i]
        return (boxed(p.answer) if right else wrong_text(p, i)), fin, c_ref + r_s / cfg.beta_v

    monkeypatch.setattr(train, "sample_chunks", fake_sampler(spec))
    out = train.heldout_eval(model_factory(), tok, problems, cfg, c_ref)

    correct = [r and f for r, f, _ in plan]
    finished = [f for _, f, _ in plan]
    logp = np.array([c_ref + r / cfg.beta_v if f else NAN for _, f, r in plan])
    expected = self_verification_metrics(cfg.beta_v * (logp - c_ref), correct, finished)
    without = self_verification_metrics(cfg.beta_v * logp, correct, finished)
    assert expected["tpr"] != without["tpr"] and expected["f1"] != without["f1"]
    assert {k: out[f"eval_sv_{k}"] for k in ("tpr", "tnr", "f1", "auroc")} == \
        {k: expected[k] for k in ("tpr", "tnr", "f1", "auroc")}
    assert (out["eval_acc"], out["eval_truncated"]) == (np.mean(correct), 1 - np.mean(finished))
