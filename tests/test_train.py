import contextlib
import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

import config
import loss
import rollout
import runs
import tasks
import train
import verify
from conftest import make_model
from model import GPT, GPTConfig
from rollout import sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_cli_help_and_one_line_errors(capsys):
    """As a command (a process: the exit code and stderr as a shell sees them), then --help and the other
    bad flags through the same main() in this process (a process each would cost the suite seconds of imports)."""
    with pytest.raises(SystemExit) as e:
        train.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: train.py") and "--rl_lr" in out and "--beta_v" in out
    r = run_cli("--no_such_key", "1", "--stage", "sft", "--out_dir", "/nonexistent/x")
    lines = [ln for ln in r.stderr.strip().splitlines() if ln]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("train.py: error: "), r.stderr
    for bad in (["--rl_lr", "fast"], ["--algo", "ppo"], ["--group_size", "0"], ["--config", "huge"]):
        with pytest.raises(SystemExit) as e:
            train.main([*bad, "--stage", "sft", "--out_dir", "/nonexistent/x"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("train.py: error: "), (bad, err)


def test_presets_and_overrides():
    cfg, given = config.resolve_config(["--config", "tiny", "--rl_lr", "3e-5", "--resume", "true"])
    assert cfg.rl_lr == 3e-5 and cfg.resume is True and cfg.n_embd == config.PRESETS["tiny"]["n_embd"]
    assert given == {"rl_lr": 3e-5, "resume": True}
    for k in ("k1", "k2", "k3"):  # every estimator loss.kl_penalty has
        assert config.resolve_config(["--kl_estimator", k])[0].kl_estimator == k
    # a bool flag alone means true, as in the module docstring's resume example
    cfg, given = config.resolve_config(["--stage", "rl", "--resume", "--out_dir", "x"])
    assert cfg.resume is True and given["out_dir"] == "x"


def test_split_sizes_are_checked_against_the_problem_space(capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "small", "--n_test", "500", "--stage", "sft", "--out_dir", "/nonexistent/x"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(lines) == 1 and "--n_test 500" in lines[0] and "polynomial level 1" in lines[0]


def test_sft_batch_masks_solution_and_eos_by_position(tok):
    probs = tasks.train_batch(0, 3, seed=0)
    x, y, mask = train.sft_batch(tok, probs, "cpu")
    for i, p in enumerate(probs):
        n_prompt = len(tok.encode_prompt(p.problem))
        sol = tok.encode(p.solution) + [tok.eos_id]
        assert y[i][mask[i]].tolist() == sol  # exactly the solution tokens and the EOS
        assert not mask[i, : n_prompt - 1].any()


def test_sft_micro_batches_give_the_full_batch_gradient(tok, model_factory):
    probs = tasks.train_batch(3, 7, seed=0)
    grads = []
    for mb in (7, 2):
        m = model_factory(seed=1, block_size=256)
        loss, n = train.sft_loss_backward(m, tok, probs, mb, "cpu")
        grads.append((loss, torch.cat([p.grad.flatten() for p in m.parameters()])))
    assert abs(grads[0][0] - grads[1][0]) < 1e-5
    torch.testing.assert_close(grads[0][1], grads[1][1], atol=1e-6, rtol=1e-4)


def test_one_sft_step_of_small_preset_model_on_cpu(tok):
    small = config.PRESETS["small"]
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=small["block_size"], n_layer=small["n_layer"],
                    n_head=small["n_head"], n_embd=small["n_embd"])
    torch.manual_seed(0)
    model = GPT(cfg)
    assert 10e6 <= model.num_params() <= 30e6
    opt = runs.make_optimizer(model, 1e-3, 0.1)
    x, y, mask = train.sft_batch(tok, tasks.train_batch(0, 2, seed=0), "cpu")
    before = model.lm_head.weight.detach().clone()
    logits = model(x)
    loss = (torch.nn.functional.cross_entropy(logits.transpose(1, 2), y, reduction="none") * mask).sum() / mask.sum()
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item()) and not torch.equal(before, model.lm_head.weight)


def _rollouts(tok, seed=4):
    m = make_model(tok, seed=seed, eos_offset=3.0)
    probs = tasks.make_split("test", 4, 0)
    ro = sample(m, [tok.encode_prompt(p.problem) for p in probs], 4, 20,
                generator=torch.Generator().manual_seed(1), tokenizer=tok)
    assert ro.finished.any() and (~ro.finished).any()
    r_v = torch.tensor([float(i % 3 == 0) for i in range(len(ro))]) * ro.finished  # (0 where cut off, as verified)
    return m, ro, r_v


def test_two_rl_steps_change_every_parameter(tok):
    m, ro, r_v = _rollouts(tok)
    cfg = dataclasses.replace(config.Config(), micro_batch=5, rl_lr=1e-2)
    adv, _ = loss.group_advantages(r_v, 4)
    opt = runs.make_optimizer(m, cfg.rl_lr, 0.0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    for _ in range(2):
        st = train.rl_update(m, opt, ro, adv, r_v, cfg, use_mse=True, c_ref=-5.0, tok=tok)
        assert st["loss_mse"] > 0 and st["grad_norm"] > 0
    unchanged = [n for n, p in m.named_parameters() if torch.equal(before[n], p)]
    assert not unchanged


@pytest.mark.parametrize("sr_weighting", ["batch", "group"])
def test_rl_update_gradient_independent_of_micro_batch(tok, sr_weighting):
    """Rows per micro-batch (16, 3) or a token budget (60 padded tokens: 1 to 3 rows each) give one gradient."""
    grads = []
    for mb, tokens in ((16, 0), (3, 0), (16, 60)):
        m, ro, r_v = _rollouts(tok)
        adv, _ = loss.group_advantages(r_v, 4)
        cfg = dataclasses.replace(config.Config(), micro_batch=mb, micro_tokens=tokens, grad_clip=1e9,
                                  sr_weighting=sr_weighting)
        opt = torch.optim.SGD(m.parameters(), lr=0.0)
        st = train.rl_update(m, opt, ro, adv, r_v, cfg, use_mse=True, c_ref=-5.0, tok=tok)
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
        assert st["loss_mse"] > 0
    for g in grads[1:]:
        torch.testing.assert_close(grads[0], g, atol=1e-6, rtol=1e-4)


def test_rl_backward_is_the_loss_of_docs_laser_eq_4_written_out(tok):
    """The step's loss assembled by hand from loss.py's pieces, on one batch: PPO over every response token
    (EOS included), plus kl_coef x the KL to the reference, plus alpha x the MSE of beta_v (log p(z_c) - c_ref)
    read by the trained forward (a gradient through the readout), with the class counts of the finished rows
    (docs/laser.md eqs. 4-6, §8). rl_backward, in micro-batches of 5 rows, gives its terms and gradient. Each
    setting away from its default, so that a dropped or doubled one shows; rewards 0 where truncated."""
    m, ro, r_v = _rollouts(tok)
    assert 0 < int(r_v.sum()) < int(ro.finished.sum())  # both classes among the finished rows
    adv, _ = loss.group_advantages(r_v, 4)
    ref = make_model(tok, seed=5, eos_offset=3.0)
    cfg = dataclasses.replace(config.Config(), micro_batch=5, alpha=0.5, beta_v=0.2, kl_coef=0.1, clip_low=0.1,
                              clip_high=0.15, kl_estimator="k2")
    c_ref = -6.0
    twin = make_model(tok, seed=4, eos_offset=3.0)
    twin.load_state_dict(m.state_dict())
    logp, logp_zc = rollout.score_rollouts(twin, ro, tok.zc_id, tok.pad_id)
    n_tok, N = int(ro.mask.sum()), len(ro)
    pg, _ = loss.ppo_clip_loss(logp, ro.logprobs, adv, ro.mask, clip_low=0.1, clip_high=0.15, agg=cfg.loss_agg,
                               num_tokens=n_tok, num_seqs=N)
    with torch.no_grad():
        logp_ref, _ = rollout.score_rollouts(ref, ro, tok.zc_id, tok.pad_id)
    kl = loss.aggregate_loss(loss.kl_penalty(logp, logp_ref, cfg.kl_estimator), ro.mask, cfg.loss_agg,
                             num_tokens=n_tok, num_seqs=N)
    n_c, n_i = int((ro.finished & (r_v > 0.5)).sum()), int((ro.finished & (r_v <= 0.5)).sum())
    mse, _ = loss.laser_mse_loss(loss.self_reward_score(logp_zc, c_ref, 0.2), r_v, ro.finished, n_correct=n_c,
                                 n_incorrect=n_i)
    (pg + 0.1 * kl + 0.5 * mse).backward()
    want = torch.cat([p.grad.flatten() for p in twin.parameters()])
    m.zero_grad(set_to_none=True)
    terms = train.rl_backward(m, ro, adv, r_v, cfg, use_mse=True, c_ref=c_ref, tok=tok, ref_model=ref)
    assert terms["pg"] == pytest.approx(float(pg.detach()), rel=1e-5, abs=1e-7)
    assert terms["kl"] == pytest.approx(float(kl.detach()), rel=1e-5) and float(kl.detach()) > 0
    assert terms["mse"] == pytest.approx(float(mse.detach()), rel=1e-5) and float(mse.detach()) > 0
    got = torch.cat([p.grad.flatten() for p in m.parameters()])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)
    m.zero_grad(set_to_none=True)  # and the MSE's part of it is not nothing (a readout without a gradient)
    train.rl_backward(m, ro, adv, r_v, cfg, use_mse=False, c_ref=c_ref, tok=tok, ref_model=ref)
    assert (torch.cat([p.grad.flatten() for p in m.parameters()]) - want).abs().max() > 1e-3 * want.abs().max()


def test_rl_step_feeds_the_update_its_schedule_rewards_and_advantages(tok, monkeypatch):
    """rl_step's wiring, the update stood in for (docs/laser.md §2-4): the MSE from step reasoning_warmup, the
    integration of r_s into the advantages from reasoning_warmup + self_reward_warmup (eqs. 9-11, with c_ref
    and beta_v), group-relative advantages of the verifier's rewards (eq. 7), 0 for a truncated response
    (§2), and the logged self-verification of the same r_s."""
    import metrics
    monkeypatch.setattr(verify, "reward_with_reason", _fake_reward)
    seen = []

    def update(model, opt, ro, adv, r_v, cfg, *, use_mse, c_ref, **_):
        seen.append(dict(ro=ro, adv=adv.clone(), r_v=r_v.clone(), use_mse=use_mse, c_ref=c_ref))
        return dict(loss_pg=0.0, loss_mse=0.0, kl=0.0, clip_frac=0.0, grad_norm=0.0, skipped=0)

    monkeypatch.setattr(train, "rl_update", update)
    m = make_model(tok, seed=4, eos_offset=2.0)
    cfg = dataclasses.replace(config.Config(), algo="laser", prompts_per_step=4, group_size=4, max_new_tokens=24,
                              reasoning_warmup=1, self_reward_warmup=1, beta_v=4.0, tau=0.3, std_threshold=0.05)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    train.rl_step(m, opt, tok, cfg, step=2, c_ref=0.0)  # (a first look at step 2's scores, to centre them)
    zc = seen.pop()["ro"].logp_zc
    c_ref = float(zc[zc.isfinite()].mean()) - 0.5 / cfg.beta_v  # r_s about 0.5, and spread over [0, 1]
    recs = [train.rl_step(m, opt, tok, cfg, step=s, c_ref=c_ref)[0] for s in range(3)]
    assert [x["use_mse"] for x in seen] == [False, True, True] and {x["c_ref"] for x in seen} == {c_ref}
    for s, (x, rec) in enumerate(zip(seen, recs)):
        ro, fin = x["ro"], x["ro"].finished
        want_rv = [_fake_reward(t, None, f)[0] for t, f in zip(ro.texts, fin.tolist())]
        assert x["r_v"].tolist() == want_rv
        adv_v, _ = loss.group_advantages(x["r_v"], 4)
        r_s = loss.self_reward_score(ro.logp_zc, c_ref, cfg.beta_v)
        want, n = (adv_v, 0) if s < 2 else loss.integrate_advantages(adv_v, r_s, fin, 4, tau=0.3,
                                                                       std_threshold=0.05)
        assert torch.equal(x["adv"], want) and rec["integrated_groups"] == n, s
        sv = metrics.self_verification_metrics(r_s.numpy(), (x["r_v"] > 0.5).numpy(), fin.numpy())
        assert rec["sv_tpr"] == sv["tpr"] and rec["sv_tnr"] == sv["tnr"], s
    ro, r_v = seen[2]["ro"], seen[2]["r_v"]
    assert recs[2]["integrated_groups"] > 0 and not torch.equal(seen[2]["adv"], loss.group_advantages(r_v, 4)[0])
    truncated_even = [i for i, f in enumerate(ro.finished.tolist()) if not f and len(ro.texts[i]) % 2 == 0]
    assert truncated_even and (r_v[truncated_even] == 0).all()  # (the stand-in pays those, were they finished)


def test_ppo_epochs_report_the_updates_made_and_skip_a_step_only_where_none_was(tok, monkeypatch):
    """--ppo_epochs 2: the logged statistics are the means over the epochs that updated the weights (a
    skipped epoch's non-finite norm left out), and a step counts as skipped (SkipGuard's unit) only where
    no epoch updated; the epochs' skips were summed, and the statistics were the last epoch's."""
    m, ro, r_v = _rollouts(tok)
    adv, _ = loss.group_advantages(r_v, 4)
    # (grad norm, skipped) of each epoch, in turn: one step with both made, one with the second skipped, one
    # with both skipped
    verdicts = iter([(4.0, 0), (2.0, 0), (5.0, 0), (float("nan"), 1), (float("inf"), 1), (7.0, 1)])
    monkeypatch.setattr(train, "clip_and_step", lambda *a: next(verdicts))
    cfg = dataclasses.replace(config.Config(), ppo_epochs=2)
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    terms = []
    for norm, skipped in ((3.0, 0), (5.0, 0), (float("inf"), 1)):
        st = train.rl_update(m, opt, ro, adv, r_v, cfg, use_mse=True, c_ref=-5.0, tok=tok)
        assert st["grad_norm"] == norm and st["skipped"] == skipped, st
        terms.append((st["loss_pg"], st["loss_mse"]))
    assert terms[0] == terms[1] == terms[2] and terms[0][1] > 0  # (lr 0: every epoch's terms alike)


def test_micro_batches_by_rows_and_padded_tokens():
    lengths = [5, 30, 7, 12, 30, 6, 100]
    assert train.micro_batches(lengths, 3) == [[0, 5, 2], [3, 1, 4], [6]]  # sorted by length (stable)
    cut = train.micro_batches(lengths, 10, 40)  # rows x longest row <= 40, a longer row alone
    assert cut == [[0, 5, 2], [3], [1], [4], [6]]
    assert sorted(i for c in cut for i in c) == list(range(len(lengths)))
    for c in cut:
        assert len(c) == 1 or len(c) * max(lengths[i] for i in c) <= 40


def test_sft_token_budget_and_rounded_lengths_give_the_full_batch_gradient(tok, model_factory):
    """Micro-batches cut by a token budget, and lengths padded up to a multiple of 16 (CUDA's shapes):
    the loss and gradient of the single padded batch."""
    probs = tasks.train_batch(3, 7, seed=0)
    rows = train.sft_rows(tok, probs)
    grads = []
    for mb, tokens, pad_to in ((7, 0, 1), (7, 90, 1), (7, 0, 16)):
        m = model_factory(seed=1, block_size=256)
        batches = [train._sft_tensors([rows[i] for i in c], tok.pad_id, pad_to=pad_to)
                   for c in train.micro_batches([len(r) - 1 for r, _ in rows], mb, tokens)]
        assert len(batches) == 1 if not tokens else len(batches) > 1
        assert all(x.shape[1] % pad_to == 0 for x, _, _ in batches)
        loss_value = train.sft_backward(m, batches, "cpu")
        grads.append((loss_value, torch.cat([p.grad.flatten() for p in m.parameters()])))
    assert batches[0][0].shape[1] > max(len(r) for r, _ in rows) - 1  # the rounding padded something
    for loss_value, grad in grads[1:]:
        assert abs(grads[0][0] - loss_value) < 1e-5
        torch.testing.assert_close(grads[0][1], grad, atol=1e-6, rtol=1e-4)
    assert train.sft_step_batches(tok, probs, 7, 0)[0][0][0].shape == batches[0][0].shape[:1] + (
        max(len(r) for r, _ in rows) - 1,)
    # never past the model's block size, which need not be a multiple of 16
    longest = max(len(r) for r, _ in rows) - 1
    for cap in range(longest, longest + 40):
        got = train._sft_tensors(rows, tok.pad_id, pad_to=16, cap=cap)[0].shape[1]
        assert longest <= got <= cap and (got % 16 == 0 or got == cap)
        assert got == min(-(-longest // 16) * 16, cap)


def test_prefetch_worker_ends_with_a_training_process_killed_outright(tmp_path):
    """SIGKILL or the out-of-memory killer give the training process no chance to shut its worker down;
    the worker must not live on (on CUDA it would hold the dead run's device files)."""
    script = tmp_path / "killed.py"
    script.write_text(f"import multiprocessing, os, signal, sys\nsys.path.insert(0, {os.path.dirname(runs.__file__)!r})\n"
                      "import runs\nit = runs.prefetch(abs, range(100), process=True)\nnext(it)\n"
                      "print(multiprocessing.active_children()[0].pid, flush=True)\n"
                      "os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    worker = int(r.stdout)

    def alive():
        try:
            with open(f"/proc/{worker}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
        except FileNotFoundError:
            return False
    for _ in range(50):
        if not alive():
            break
        time.sleep(0.1)
    assert not alive()


def test_pack_rows_fills_packs_first_fit_longest_first():
    lengths = [5, 9, 3, 7, 2, 10, 4]
    packs = train.pack_rows(lengths, 12)
    assert sorted(i for p in packs for i in p) == list(range(len(lengths)))  # every row once
    assert all(sum(lengths[i] for i in p) <= 12 for p in packs)
    assert packs == [[5, 4], [1, 2], [3, 0], [6]]  # 10+2, 9+3, 7+5, 4
    assert train.pack_rows([15, 3], 12) == [[0], [1]]  # too long for a pack: alone


def test_packed_sft_gives_the_padded_batchs_loss_and_gradient(tok, model_factory):
    """Packing (--sft_pack): rows one after another in rows of block_size tokens, each row at positions
    from 0 and attending only within itself, give each row the logits it has alone, so the loss and the
    gradient are those of the padded batch, and almost no token is padding."""
    probs = tasks.train_batch(5, 12, seed=0)
    rows = train.sft_rows(tok, probs)
    out = []
    for pack, pad_to in ((False, 1), (True, 1), (True, 16)):
        m = model_factory(seed=2, block_size=256)
        batches, n_real = train.sft_step_batches(tok, probs, 12, 0, pad_to, 256, pack)
        assert len(batches[0]) == (4 if pack else 3)
        loss_value = train.sft_backward(m, batches, "cpu")
        padded = sum(b[0].numel() for b in batches)
        out.append((float(loss_value), torch.cat([p.grad.flatten() for p in m.parameters()]), padded))
    assert n_real == sum(len(r) - 1 for r, _ in rows)
    assert out[1][2] < 0.7 * out[0][2] and out[1][2] < n_real + 256  # packed: at most a pack's room unfilled
    for loss_value, grad, _ in out[1:]:
        assert abs(out[0][0] - loss_value) < 1e-5
        torch.testing.assert_close(out[0][1], grad, atol=1e-6, rtol=1e-4)
    x, y, mask, seg = train.sft_step_batches(tok, probs, 100, 0, 16, 256, True)[0][0]
    assert x.shape[1] % 16 == 0 and x.shape[1] <= 256
    assert int(mask.sum()) == sum(len(r) - s for r, s in rows) and not mask[seg == 0].any()


def test_rows_of_padding_leave_the_packed_loss_and_gradient(tok, model_factory):
    """--sft_graphs makes a step's packed rows a multiple (train.GRAPH_ROW_MULTIPLE) with rows of padding:
    no loss on them. (A step of several micro-batches is left as it is.)"""
    probs = tasks.train_batch(6, 12, seed=0)
    out = []
    for multiple in (1, 8):
        m = model_factory(seed=2, block_size=256)
        batches, _ = train.sft_step_batches(tok, probs, 100, 0, 16, 256, True, multiple)
        x, y, mask, seg = batches[0]
        assert x.shape[0] % multiple == 0
        loss_value = float(train.sft_backward(m, batches, "cpu"))
        out.append((loss_value, torch.cat([p.grad.flatten() for p in m.parameters()])))
    assert x.shape[0] == 8 and (seg[4:] == 0).all() and not mask[4:].any()  # 4 packs here, 4 empty rows
    several = train.sft_step_batches(tok, probs, 2, 0, 16, 256, True, 8)[0]
    assert [b[0].shape[0] for b in several] == [2, 2]  # two micro-batches: no rows of padding
    assert abs(out[0][0] - out[1][0]) < 1e-6
    torch.testing.assert_close(out[0][1], out[1][1], atol=1e-7, rtol=1e-5)


def _steps_of_two_shapes(tok, pin=False):
    """Packed SFT steps of two shapes, made as --sft_graphs makes them: B A B A B B (B the commoner)."""
    by_shape = {}
    for s in range(60):
        batches = train.sft_step_batches(tok, tasks.train_batch(s, 6, seed=0), 100, 0, 16, 192, True,
                                         train.GRAPH_ROW_MULTIPLE)[0]
        by_shape.setdefault(tuple(batches[0][0].shape), []).append(train.pinned(batches) if pin else batches)
    a, b = sorted(by_shape.values(), key=len)[-2:]
    return [b[0], a[0], b[1], a[1], b[2], b[3]]


def test_sft_graphs_steps_are_the_plain_steps(tok, model_factory, capsys):
    """SFTGraphs off CUDA: the first step of a shape as sft_step, the later ones on its input buffers
    (what a graph replays on CUDA), normalised by the device-side token count: bit for bit the plain steps'
    losses, gradient norms and weights, over steps of two shapes and one of two micro-batches."""
    steps = _steps_of_two_shapes(tok)
    steps.insert(3, train.sft_step_batches(tok, tasks.train_batch(99, 12, seed=0), 100, 1000, 16, 192, True, 8)[0])
    assert len(steps[3]) > 1
    models = [model_factory(seed=5, block_size=192) for _ in range(2)]
    opts = [runs.make_optimizer(m, 3e-3, 0.1) for m in models]
    graphs = train.SFTGraphs(models[1], opts[1], "cpu", grad_clip=1.0)
    assert "no CUDA graphs here" in capsys.readouterr().err
    for i, batches in enumerate(steps):
        lr = 3e-3 * (i + 1) / len(steps)
        for o in opts:
            train.set_lr(o, lr)
        want = train.sft_step(models[0], opts[0], batches, "cpu", grad_clip=1.0)
        got = graphs(batches, lr)
        assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert len(graphs.graphs) == 2 and graphs.captured == []  # each shape: once plain, then on its buffers
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_sft_graphs_leave_torchrun_steps_plain(tok, model_factory, monkeypatch, capsys):
    """Under torchrun the loss is normalised by every process's tokens, which only the plain step counts.
    The note that nothing is captured is the first process's alone (each process said it)."""
    monkeypatch.setattr(train, "world_size", lambda: 2)
    batches = train.sft_step_batches(tok, tasks.train_batch(0, 6, seed=0), 100, 0, 16, 192, True, 4)[0]
    m = model_factory(seed=5, block_size=192)
    for r in (1, 0):
        monkeypatch.setattr(train, "rank", lambda: r)
        graphs = train.SFTGraphs(m, runs.make_optimizer(m, 1e-3, 0.0), "cpu")
        assert ("no CUDA graphs here" in capsys.readouterr().err) == (r == 0), r
    for _ in range(3):
        graphs(batches, 1e-3)
    assert graphs.graphs == {} and graphs.seen == set()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_sft_graphs_capture_on_cuda(tok, model_factory):
    """On a card: each shape captured as a graph (with the blocks compiled) and replayed, the optimizer's
    learning rate a float again after each capture, the numbers those of plain steps up to float32 rounding."""
    dev = torch.device("cuda")
    steps = _steps_of_two_shapes(tok, pin=True)
    models = [model_factory(seed=5, block_size=192).to(dev) for _ in range(2)]
    opts = [runs.make_optimizer(m, 3e-3, 0.1) for m in models]
    assert all(runs.skips_on_device(o) for o in opts)  # fused AdamW
    graphs = train.SFTGraphs(models[1], opts[1], dev, runs.training_forward(models[1], "on"), grad_clip=1.0)
    plain = runs.training_forward(models[0], "on")
    for i, batches in enumerate(steps):
        lr = 3e-3 * (i + 1) / len(steps)
        for o in opts:
            train.set_lr(o, lr)
        want = train.sft_step(models[0], opts[0], batches, dev, plain, 1.0, cache=False)
        got = graphs(batches, lr)
        for x, y in zip(want, got):
            torch.testing.assert_close(x.double(), y.double(), rtol=1e-4, atol=1e-6)
    assert len(graphs.captured) == 2 and graphs.replays == 4, graphs.summary()
    assert all(isinstance(g["lr"], float) and not g["capturable"] for g in opts[1].param_groups)
    for x, y in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_sft_graphs_run_trains_and_resumes(tmp_path, capsys):
    """A --sft_graphs run (uncaptured on CPU) stopped and resumed gives its uninterrupted twin's weights,
    and --sft_graphs without --sft_pack is refused in one line."""
    common = ["--config", "test", "--stage", "sft", "--sft_steps", "8", "--sft_pack", "--sft_graphs"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.main(common + ["--out_dir", full])
    err = capsys.readouterr().err  # on CPU said once, at the start (the count of graphs at the end would be 0)
    assert "note: --sft_graphs: no CUDA graphs here" in err and "CUDA graph(s) captured" not in err, err
    train.main(common + ["--out_dir", part, "--halt_at", "3"])
    train.main(common + ["--out_dir", part, "--resume"])
    a, b = runs.load_checkpoint(full)["model"], runs.load_checkpoint(part)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(os.path.join(full, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == list(range(1, 9))
    r = run_cli("--config", "test", "--sft_graphs")
    assert r.returncode == 2 and "--sft_graphs (the small preset's setting) needs --sft_pack" in r.stderr
    assert "with --sft_pack false add --sft_graphs false" in r.stderr


def test_segments_give_each_packed_row_its_own_logits(tok, model_factory):
    m = model_factory(seed=3, block_size=64).eval()
    a, b = [5, 9, 2, 7, 7, 3], [4, 4, 8]
    packed = torch.tensor([a + b + [0, 0]])
    seg = torch.tensor([[1] * len(a) + [2] * len(b) + [0, 0]])
    with torch.no_grad():
        got = m(packed, segments=seg)[0]
        torch.testing.assert_close(got[:len(a)], m(torch.tensor([a]))[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[len(a):len(a) + len(b)], m(torch.tensor([b]))[0], atol=1e-5, rtol=1e-5)
        assert torch.isfinite(got).all()  # the padding segment too
    with pytest.raises(ValueError, match="segments"):
        m(packed, valid=seg > 0, segments=seg)


def test_prefetch_yields_in_order_and_raises_where_a_plain_loop_would():
    assert list(runs.prefetch(lambda i: i * i, range(7))) == [i * i for i in range(7)]

    def make(i):
        if i == 3:
            raise ValueError("item 3")
        return i
    got = []
    with pytest.raises(ValueError, match="item 3"):
        for x in runs.prefetch(make, range(6)):
            got.append(x)
    assert got == [0, 1, 2]


@pytest.mark.parametrize("workers", [1, 3])
def test_prefetch_in_a_worker_process_gives_a_plain_loops_results(tok, workers):
    """The process way (the SFT loop's on CUDA): a closure reaches the workers by the fork; tensors come
    back equal and in order, however many workers build them; an error is raised where a plain loop would
    raise it; a loop that stops early does not hang."""
    probs = {s: tasks.train_batch(s, 5, seed=0) for s in range(6)}

    def make(s):  # a closure over local state, as run_sft's step_batches is
        time.sleep(0.2 if s == 1 else 0)  # (with several workers, item 2 is ready before item 1)
        if s == 4:
            raise ValueError("step 4")
        return train.sft_step_batches(tok, probs[s], 2, 0, 16)
    got = []
    with pytest.raises(ValueError, match="step 4"):
        for batches, n_real in runs.prefetch(make, range(6), process=True, workers=workers):
            got.append((batches, n_real))
    assert len(got) == 4
    for s, (batches, n_real) in enumerate(got):
        want, want_n = train.sft_step_batches(tok, probs[s], 2, 0, 16)
        assert n_real == want_n and len(batches) == len(want) == 3
        assert all(torch.equal(a, b) for mb, wmb in zip(batches, want) for a, b in zip(mb, wmb))
    it = runs.prefetch(make, range(3), process=True, workers=workers)
    assert next(it)[1] == got[0][1]
    it.close()  # the worker is shut down, its queued item dropped


def test_batch_workers_share_the_cores_among_a_nodes_processes(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    for cores, want in ((1, 1), (2, 1), (8, 2), (16, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert runs.batch_workers() == want
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two processes of torchrun on 16 cores: 2 workers each
    assert runs.batch_workers() == 2


@pytest.mark.parametrize("mode", ["on", "model"])  # the blocks compiled, or the whole model
def test_training_forward_compiles_and_falls_back_to_eager(tok, model_factory, monkeypatch, capsys, mode):
    m = model_factory(seed=1)
    assert runs.training_forward(m, "auto") is m and runs.training_forward(m, "off") is m  # CPU: eager
    x = torch.tensor([tok.encode_prompt(p.problem) for p in tasks.make_split("test", 1, 0)])

    def broken(module, **kw):
        def call(*a):
            raise RuntimeError("no compiler here\nsecond line")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    fwd = runs.training_forward(m, mode)
    torch.testing.assert_close(fwd(x), m(x))
    assert "torch.compile failed (RuntimeError: no compiler here); training runs eagerly" in capsys.readouterr().err
    torch.testing.assert_close(fwd(x), m(x))  # and stays eager, without a second notice
    assert capsys.readouterr().err == ""

    class FailsBackward(torch.autograd.Function):  # a compile that only fails when the backward is built
        @staticmethod
        def forward(ctx, y):
            return y.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("backward compile failed")
    monkeypatch.setattr(torch, "compile", lambda module, **kw: lambda *a: FailsBackward.apply(module(*a)))
    fwd = runs.training_forward(m, mode)
    out = fwd(x)
    assert "torch.compile failed (RuntimeError: backward compile failed)" in capsys.readouterr().err
    out.sum().backward()  # the eager output trains
    assert all(p.grad is not None for p in m.parameters())


def test_training_forward_traces_as_one_graph(tok, model_factory):
    """The training forward has no graph break (no host sync, no data-dependent Python): what
    torch.compile captures on CUDA is the whole model. Checked by Dynamo alone (fullgraph=True raises on
    any graph break whatever the backend; the eager backend compiles nothing: half the time of aot_eager)."""
    import torch._dynamo
    m = model_factory(seed=1)
    x = torch.tensor([tok.encode_prompt(tasks.make_split("test", 1, 0)[0].problem)] * 2)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), m(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled(x[:1, :-3]), m(x[:1, :-3]), atol=1e-5, rtol=0)  # dynamic shapes too
    seg = (torch.arange(x.shape[1]) >= 5).long()[None].repeat(2, 1) + 1  # packed rows (--sft_pack): two segments
    torch.testing.assert_close(compiled(x, segments=seg), m(x, segments=seg), atol=1e-5, rtol=0)
    torch._dynamo.reset()


def test_compiled_blocks_share_one_graph(tok, model_factory):
    """--compile on compiles each block, and the blocks share one compiled graph (one compile per shape
    regime, not one per block: what halves the compile time); the sampler's calls stay eager."""
    import torch._dynamo
    m = model_factory(seed=1)
    assert len(m.blocks) > 1
    x = torch.tensor([tok.encode_prompt(tasks.make_split("test", 1, 0)[0].problem)] * 2)
    graphs = []

    def backend(gm, example_inputs):  # counts what Dynamo hands to a compiler; runs the graph as traced
        graphs.append(gm)
        return gm.forward
    torch._dynamo.reset()
    blocks = [torch.compile(b, backend=backend, fullgraph=True) for b in m.blocks]
    torch.testing.assert_close(m(x, blocks=blocks), m(x), atol=1e-5, rtol=0)
    assert len(graphs) == 1
    torch.testing.assert_close(m(x[:1, :-3], blocks=blocks), m(x[:1, :-3]), atol=1e-5, rtol=0)
    assert len(graphs) == 2  # the second shape: one dynamic-shape compile for every block
    torch._dynamo.reset()


def test_verifier_processes_give_the_in_process_verdicts():
    texts = ["so \\boxed{3/4}", "\\boxed{0.75}", "no answer", "\\boxed{x^2-1}", "\\boxed{(x-1)(x+1)}", "\\boxed{7}"] * 3
    golds = ["3/4", "3/4", "1", "-1 + x^2", "x^2-1", "8"] * 3  # ((x-1)(x+1) is the question, not its answer)
    whole = train.verify_rollouts(texts, golds)
    assert [r for r, _ in whole[:6]] == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    with train.verifier_pool(0) as pool:
        assert pool is None
    cut = [i % 2 == 0 for i in range(len(texts))]  # cut off at the length limit: reward 0 whatever it boxed
    here = train.verify_rollouts(texts, golds, finished=[not c for c in cut])
    with train.verifier_pool(2) as pool:
        assert len(pool._processes) == 2  # all started up front, signals blocked (none reaches one mid-import)
        assert train.verify_rollouts(texts, golds, pool) == whole
        assert train.verify_rollouts(texts, golds, pool, [not c for c in cut]) == here
        # Ctrl-C reaches the whole process group: the workers ignore it (the training process finishes its step)
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGINT)
        time.sleep(0.5)
        assert train.verify_rollouts(texts, golds, pool, [not c for c in cut]) == here and not pool._broken
    assert here[:6] == [(0.0, "truncated"), (1.0, "right"), (0.0, "truncated"), (1.0, "right"),
                        (0.0, "truncated"), (0.0, "wrong")]


def test_kl_to_the_reference_is_finite_under_top_k(tok):
    """With top-k sampling the policy samples tokens outside the reference's own top-k; the reference is
    scored without the filter, so the KL term stays finite and the step is taken."""
    m = make_model(tok, seed=4, eos_offset=3.0)
    ref = make_model(tok, seed=5, eos_offset=3.0)
    ro = sample(m, [tok.encode_prompt(p.problem) for p in tasks.make_split("test", 4, 0)], 4, 20, top_k=3,
                generator=torch.Generator().manual_seed(1), tokenizer=tok)
    r_v = torch.tensor([float(i % 3 == 0) for i in range(len(ro))])
    adv, _ = loss.group_advantages(r_v, 4)
    cfg = dataclasses.replace(config.Config(), kl_coef=0.1, top_k=3)
    st = train.rl_update(m, runs.make_optimizer(m, 1e-3, 0.0), ro, adv, r_v, cfg, use_mse=True, c_ref=-5.0, tok=tok,
                         ref_model=ref)
    assert st["skipped"] == 0 and math.isfinite(st["kl"]) and st["kl"] > 0


def test_non_finite_loss_skips_the_step(tok):
    m, ro, r_v = _rollouts(tok)
    adv, _ = loss.group_advantages(r_v, 4)
    opt = runs.make_optimizer(m, 1e-2, 0.0)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    st = train.rl_update(m, opt, ro, adv, r_v, config.Config(), use_mse=True, c_ref=float("-inf"), tok=tok)
    assert st["skipped"] == 1
    for n, p in m.named_parameters():
        assert torch.equal(before[n], p) and torch.isfinite(p).all()


def test_c_ref_warning():
    assert loss.check_c_ref(-8.0, 0.1, 0.1) is not None  # c_ref + 1/beta_v = 2 > -2
    assert loss.check_c_ref(-20.0, 0.1, 0.1) is None
    # a wide spread of log pi_ref(z_c) is not a constant: the tiny run's std 3.26 gives beta_v * std 0.33
    warn = loss.check_c_ref(-14.79, 3.26, 0.1)
    assert warn is not None and "beta_v * std = 0.326" in warn and "c_ref + 1/beta_v = -4.79" in warn
    assert loss.check_c_ref(-14.79, 0.9, 0.1) is None
    # --c_ref given: the spread is unknown (NaN) and unchecked; the c_ref check still holds
    assert loss.check_c_ref(-20.0, float("nan"), 0.1) is None
    warn = loss.check_c_ref(-8.0, float("nan"), 0.1)
    assert warn is not None and "std nan" in warn and "exceeds" not in warn


def test_step_generators_differ_across_steps_seeds_and_stages():
    """Each RL step draws its own stream. (Before: torch's CPU generator kept only the low 32 bits of
    the seed, the bytes of "rl-0", so every step of a run sampled the same numbers.)"""
    first = lambda *a: tuple(torch.rand(3, generator=rollout.step_generator(*a, "cpu")).tolist())
    steps = {first("rl", 0, s) for s in range(1000)}
    assert len(steps) == 1000
    assert len({first("rl", seed, 5) for seed in range(50)}) == 50
    assert len({first(stage, 0, 0) for stage in ("rl", "calib", "eval")}) == 3
    assert first("rl", 3, 7) == first("rl", 3, 7)  # and a pure function of (stage, seed, step)


def test_rl_steps_sample_different_rollouts(sft_dir):
    model, tok, _ = runs.load_run(sft_dir)
    cfg = dataclasses.replace(config.Config(**config.PRESETS["test"]), prompts_per_step=1, group_size=4)
    one = train.rollout_step(model, tok, cfg, 1)[1]
    # the same problem at another step: force it by sampling step 2's stream on step 1's problems
    g2 = rollout.step_generator("rl", cfg.seed, 2, "cpu")
    two = sample(model, one.prompts, 4, cfg.max_new_tokens, generator=g2, tokenizer=tok)
    assert not torch.equal(one.response, two.response)


def _fake_reward(text, gold, finished=True):  # a reward with both outcomes even for an untrained model
    return (1.0, "right") if finished and len(text) % 2 == 0 else (0.0, "wrong")


def test_sft_run_writes_artifacts_and_resumes(sft_dir, tmp_path, monkeypatch):
    """Stopped and resumed, with its batches built in a worker process (as on CUDA) where sft_dir's were
    built in a thread: the same weights, bit for bit."""
    for f in ("ckpt.pt", "config.json", "tokenizer.json", "metrics.jsonl"):
        assert os.path.exists(os.path.join(sft_dir, f))
    ck = runs.load_checkpoint(sft_dir)
    assert ck["step"] == 30 and {"model", "optimizer", "rng", "config", "data_cursor"} <= set(ck)
    monkeypatch.setattr(train, "prefetch", lambda make, items, **_: runs.prefetch(make, items, process=True))
    half = str(tmp_path / "half")
    train.main(["--config", "test", "--stage", "sft", "--out_dir", half, "--halt_at", "13"])
    train.main(["--config", "test", "--stage", "sft", "--out_dir", half, "--resume", "true"])
    a, b = runs.load_checkpoint(sft_dir)["model"], runs.load_checkpoint(half)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_slow_sft_steps_print_progress_by_the_clock(tmp_path, monkeypatch, capsys):
    """A progress line every --log_every steps, and besides at least every config.PROGRESS_EVERY_S seconds: a
    GPU preset on a CPU (the small one's 50 steps there: a quarter of an hour) does not go silent."""
    args = ["--config", "test", "--stage", "sft", "--sft_steps", "4", "--log_every", "1000"]
    progress = lambda: [ln.split()[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("sft ")]
    train.main([*args, "--out_dir", str(tmp_path / "a")])
    assert progress() == ["1/4", "4/4"]  # the first step, and the last (its evaluation)
    monkeypatch.setattr(config, "PROGRESS_EVERY_S", 0)
    train.main([*args, "--out_dir", str(tmp_path / "b")])
    assert progress() == ["1/4", "2/4", "3/4", "4/4"]


def test_rl_resume_is_bit_identical(sft_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(verify, "reward_with_reason", _fake_reward)
    common = ["--config", "test", "--stage", "rl", "--init", sft_dir, "--rl_steps", "4", "--algo", "laser",
              "--reasoning_warmup", "1", "--self_reward_warmup", "1", "--max_new_tokens", "40"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.main(common + ["--out_dir", full])
    train.main(common + ["--out_dir", part, "--halt_at", "2"])
    assert runs.load_checkpoint(part)["step"] == 2
    train.main(["--stage", "rl", "--out_dir", part, "--resume", "true"])
    a, b = runs.load_checkpoint(full), runs.load_checkpoint(part)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["c_ref"] == b["c_ref"] and a["beta_v"] == b["beta_v"] and b["step"] == 4
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    drop = ("time_rollout", "time_verify", "time_update", "tokens_per_s")
    rows = []
    for d in (full, part):
        with open(os.path.join(d, "metrics.jsonl")) as f:
            rows.append([{k: v for k, v in json.loads(ln).items() if k not in drop} for ln in f])
    assert [r["step"] for r in rows[1]] == [0, 1, 2, 3, 4] and rows[0] == rows[1]
    assert {"sv_f1", "sv_auroc", "clip_frac", "loss_mse", "zero_var_groups", "c_ref"} <= set(rows[0][-1])
    assert [r["mse_on"] for r in rows[0][1:]] == [False, True, True, True]  # (--reasoning_warmup 1)


def test_the_main_command_halts_resumes_and_never_overwrites_a_run(tmp_path, capsys):
    """--stage all (the README's main command): --halt_at stops the command after SFT's step, not RL from a
    half-trained model; `--out_dir OUT --resume` continues SFT, then RL (afresh, as it never started, then
    from its checkpoint); a fresh start in OUT moves the runs there aside (before: it wiped them)."""
    out = str(tmp_path / "run")
    T = ["--config", "test", "--out_dir", out, "--c_ref", "-20"]
    train.main(T + ["--halt_at", "1"])
    assert "SFT halted after step 1 of 30: RL not started" in capsys.readouterr().out
    assert runs.load_checkpoint(os.path.join(out, "sft"))["step"] == 1 and not os.path.exists(os.path.join(out, "laser"))
    train.main(["--out_dir", out, "--resume"])  # SFT to 30; RL from it halts at step 1 (the run's --halt_at)
    assert runs.load_checkpoint(os.path.join(out, "sft"))["step"] == 30
    assert runs.load_checkpoint(os.path.join(out, "laser"))["step"] == 1
    train.main(["--out_dir", out, "--resume"])
    ck = runs.load_checkpoint(os.path.join(out, "laser"))
    assert ck["step"] == 2 and ck["init"] == os.path.join(out, "sft")
    logs = {d: open(os.path.join(out, d, "metrics.jsonl")).read() for d in ("sft", "laser")}
    capsys.readouterr()
    train.main(T + ["--halt_at", "2"])  # afresh: the runs there are moved aside first, not overwritten
    assert f"note: {out} held a run; it is kept as {out}.1" in capsys.readouterr().out
    assert logs == {d: open(os.path.join(out + ".1", d, "metrics.jsonl")).read() for d in ("sft", "laser")}
    assert runs.load_checkpoint(os.path.join(out, "sft"))["step"] == 2
    train.main(["--config", "test", "--stage", "sft", "--out_dir", os.path.join(out, "sft"), "--sft_steps", "1"])
    assert os.path.exists(os.path.join(out, "sft.1", "ckpt.pt")) and os.path.exists(os.path.join(out + ".1", "sft"))


def test_a_run_that_cannot_be_moved_aside_is_a_one_line_error(sft_dir, tmp_path, monkeypatch, capsys):
    import shutil
    run = str(tmp_path / "r")
    shutil.copytree(sft_dir, run)

    def refuse(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "rename", refuse)
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "test", "--stage", "sft", "--out_dir", run])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"cannot be moved aside to {run}.1 (Permission denied)" in err
    assert runs.load_checkpoint(run)["step"] == 30  # untouched


def test_a_fresh_start_never_moves_its_own_inputs_aside(sft_dir, tmp_path, monkeypatch, capsys):
    """A run directory that holds the command's --data_jsonl (or --init, --init_hf) or the working directory
    is not moved aside (the command would then miss its inputs); a log without a checkpoint is a run too."""
    import shutil
    run = tmp_path / "r"
    shutil.copytree(sft_dir, run)
    shutil.copy(os.path.join(ROOT, "tests", "data", "outside_sample.jsonl"), run / "d.jsonl")
    for argv, what in ((["--data_jsonl", str(run / "d.jsonl")], f"--data_jsonl {run}/d.jsonl"),
                       ([], "the working directory")):
        if not argv:
            monkeypatch.chdir(run)
        with pytest.raises(SystemExit) as e:
            train.main(["--config", "test", "--stage", "sft", "--out_dir", str(run), *argv])
        assert e.value.code == 2 and f"but {what} lies in it" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    os.remove(run / "ckpt.pt")  # the records of steps whose checkpoint never came (a second Ctrl-C, say)
    train.main(["--config", "test", "--stage", "sft", "--out_dir", str(run), "--sft_steps", "1"])
    assert f"kept as {run}.1" in capsys.readouterr().out and os.path.getsize(f"{run}.1/metrics.jsonl") > 0
    with pytest.raises(config.UserError, match="is the --init run"):  # --init named by its ckpt.pt
        config.check_config(dataclasses.replace(config.Config(**config.PRESETS["test"]), stage="rl",
                                                init=str(run / "ckpt.pt"), out_dir=str(run)))


def test_a_resumed_or_initialised_run_keeps_the_settings_that_make_it(sft_dir, tmp_path):
    """Flags that would make another model or another run are refused on --resume (before: taken into
    config.json while the model stayed as it was); RL from --init records the model fields of the run it
    starts from, not its own preset's."""
    resolve = lambda *argv: train.run_config_for(*config.resolve_config(list(argv)))
    with pytest.raises(config.UserError, match=r"--n_embd 64: a resumed run keeps its setting.*\(it has 32\)"):
        resolve("--stage", "sft", "--out_dir", sft_dir, "--resume", "--n_embd", "64")
    with pytest.raises(config.UserError, match=r"--seed 3: a resumed run keeps"):
        resolve("--out_dir", sft_dir, "--resume", "--seed", "3")  # (--stage not given: the run's own)
    for flag, value in (("--temperature", "0.5"), ("--top_p", "0.9"),
                        ("--top_k", "8")):  # the sampling distribution its c_ref was measured with
        with pytest.raises(config.UserError, match=rf"{flag} {value}: a resumed run keeps its setting"):
            resolve("--out_dir", sft_dir, "--resume", flag, value)
    cfg = resolve("--out_dir", sft_dir, "--resume", "--sft_steps", "60", "--n_embd", "32")  # the same: fine
    assert (cfg.stage, cfg.sft_steps, cfg.n_layer) == ("sft", 60, 1)
    for init in (sft_dir, os.path.join(sft_dir, "ckpt.pt")):  # a run, or its ckpt.pt
        with pytest.raises(config.UserError, match=r"--n_layer 8: RL trains the model of --init"):
            resolve("--stage", "rl", "--init", init, "--out_dir", str(tmp_path / "rl"), "--n_layer", "8")
    cfg = resolve("--config", "small", "--stage", "rl", "--init", sft_dir, "--out_dir", str(tmp_path / "rl"))
    assert (cfg.n_layer, cfg.n_embd, cfg.block_size, cfg.bpe_merges) == (1, 32, 192, 64)  # sft_dir's
    assert cfg.group_size == config.PRESETS["small"]["group_size"]  # RL's own settings are the preset's


def test_a_checkpoint_refuses_another_runs_tokenizer(sft_dir, tmp_path):
    """Another tokenizer with the same vocabulary size used to load without an error and decode every id
    to the wrong text; the checkpoint's digest of its tokenizer now tells them apart."""
    import shutil

    from tokenizer import build_tokenizer
    run = str(tmp_path / "r")
    shutil.copytree(sft_dir, run)
    mine = runs.load_run(run)[1]
    cfg = config.Config(**config.PRESETS["test"])
    other = build_tokenizer(config.corpus_for_tokenizer(dataclasses.replace(cfg, seed=1)), cfg.bpe_merges)  # seed 1's
    assert other.vocab_size == mine.vocab_size and other.to_json() != mine.to_json()
    with open(os.path.join(run, "tokenizer.json"), "w") as f:
        f.write(other.to_json())
    with pytest.raises(config.UserError, match="not the tokenizer this checkpoint was trained with"):
        runs.load_run(run)


def test_outside_data_with_nothing_in_the_train_split_is_refused(tmp_path):
    sample = os.path.join(ROOT, "tests", "data", "outside_sample.jsonl")
    rows, keys = open(sample).read().splitlines(), [p.key for p in tasks.load_jsonl(sample)]
    held_out = [r + "\n" for r, k in zip(rows, keys) if tasks.split_of(k) != "train"]
    assert len(held_out) == 4  # 3 test problems and 1 validation problem
    data = tmp_path / "held_out.jsonl"
    data.write_text("".join(held_out))
    cfg = dataclasses.replace(config.Config(**config.PRESETS["test"]), data_jsonl=str(data))
    with pytest.raises(config.UserError, match="none of its problems is in the train split"):
        config.outside_train_data(cfg)
    assert config.outside_train_data(dataclasses.replace(cfg, data_mix=0.0)) == []  # the tokenizer's only


def test_evaluate_end_to_end_on_a_run(sft_dir, tmp_path, monkeypatch):
    """evaluate.py samples a real run directory: records have the documented shape and the report
    has the keys the README table reads."""
    import evaluate

    monkeypatch.setattr(verify, "reward_with_reason", _fake_reward)
    rl = str(tmp_path / "rl")
    train.main(["--config", "test", "--stage", "rl", "--init", sft_dir, "--rl_steps", "1", "--out_dir", rl])
    out = str(tmp_path / "report")
    rows, real = [], rollout.sample  # rows of each sampling call, the SFT run's c_ref calibration's included
    monkeypatch.setattr(rollout, "sample", lambda m, prompts, k, *a, **kw: rows.append(len(prompts) * k) or
                        real(m, prompts, k, *a, **kw))
    assert evaluate.main([sft_dir, os.path.join(rl, "ckpt.pt"), "--names", "sft,laser", "--out", out, "--n_samples",
                          "2", "--n_problems", "4", "--n_boot", "10", "--batch_size", "8"]) == 0  # a run, or its ckpt.pt
    assert max(rows) == 8 and rows.count(8) >= 2 + 2  # --batch_size bounds every call (calibration's: 16 rows in 2)
    with open(os.path.join(out, "eval.json")) as f:
        res = json.load(f)
    assert set(res) == {"sft", "laser"}
    for m in res.values():
        assert {"accuracy_avg", "accuracy_greedy", "sv_tpr", "sv_tnr", "sv_f1", "sv_auroc", "maj_at_k",
                "weighted_at_k", "best_of_k", "pass_at_k"} <= set(m)
        assert set(m["maj_at_k"]) == {"1", "2"}
    with open(os.path.join(out, "records.json")) as f:
        rec = json.load(f)["laser"]
    assert len(rec) == 4 and all(len(p["samples"]) == 2 for p in rec)
    # each sample's response length (tokens, EOS included), within the run's max_new_tokens
    assert all(1 <= s["length"] <= 48 for p in rec for s in p["samples"])
    assert os.path.exists(os.path.join(out, "eval.md"))


@pytest.mark.parametrize("preset", list(config.PRESETS))
def test_every_preset_runs_one_sft_and_one_rl_step(preset, tmp_path):
    """The preset's tokenizer, splits, model and settings, on a shrunk batch and response length: SFT, then
    one LaSeR step. (c_ref is given: a model after one SFT step finishes no solution to calibrate on. An
    untrained model writes until max_new_tokens: the preset's own length, 192 tokens for small, would
    spend ~20 s of this test decoding; whether it fits the block is checked below, as the run checks it.)"""
    shrink = ["--sft_steps", "1", "--sft_batch_size", "2", "--sft_micro_batch", "2", "--rl_steps", "1",
              "--prompts_per_step", "1", "--group_size", "2", "--micro_batch", "2", "--calib_prompts", "1",
              "--calib_samples", "2", "--n_val", "2", "--eval_every", "0", "--rl_eval_every", "0",
              "--reasoning_warmup", "0", "--device", "cpu", "--c_ref", "-20", "--max_new_tokens", "8"]
    out = str(tmp_path / preset)
    train.main(["--config", preset, "--stage", "all", "--out_dir", out] + shrink)
    sft, rl = runs.load_checkpoint(os.path.join(out, "sft")), runs.load_checkpoint(os.path.join(out, "laser"))
    assert sft["step"] == 1 and rl["step"] == 1 and rl["c_ref"] == -20
    cfg = config.PRESETS[preset]
    assert sft["model_config"]["n_embd"] == cfg["n_embd"] and rl["config"]["block_size"] == cfg["block_size"]
    assert rl["config"]["max_new_tokens"] == 8  # the preset's own response length fits the block:
    preset_cfg = config.resolve_config(["--config", preset])[0]
    tok = runs.load_run(os.path.join(out, "laser"))[1]
    config.check_lengths(preset_cfg, tok, cfg["block_size"])
    with pytest.raises(config.UserError, match="block_size .* is too small"):  # (a check that can fail)
        config.check_lengths(dataclasses.replace(preset_cfg, max_new_tokens=cfg["block_size"]), tok, cfg["block_size"])
    import rollout
    assert rollout.COMPILE_DECODE == (cfg.get("compile", "auto") != "off")  # --compile off: CUDA decoding too


def test_resume_uses_this_devices_adamw_kernel(sft_dir, tmp_path):
    """A checkpoint saved on CUDA records fused AdamW; resumed on CPU it must step with CPU's default
    kernel (torch would otherwise run its fused kernel on CPU, with other numbers than a CPU run's)."""
    import shutil
    run = str(tmp_path / "run")
    shutil.copytree(sft_dir, run)
    path = os.path.join(run, "ckpt.pt")
    ck = torch.load(path, weights_only=False)
    for g in ck["optimizer"]["param_groups"]:
        g["fused"], g["foreach"] = True, None  # as written by make_optimizer on CUDA
    torch.save(ck, path)
    cfg = dataclasses.replace(runs.saved_config(run), out_dir=run, resume=True)
    _, _, opt, _ = runs.resume_run(cfg, "sft", cfg.sft_lr, "cpu")
    assert all(not g["fused"] for g in opt.param_groups)
    assert opt.state_dict()["state"].keys() == ck["optimizer"]["state"].keys()  # the moments came back


@pytest.mark.parametrize("fused", [False, True])
def test_deferred_step_skips_a_non_finite_gradient_without_reading_it(model_factory, fused):
    """clip_and_step_deferred: a finite step matches clip_and_step's; a non-finite gradient leaves the weights,
    the moments and the step count as they were, and comes back as skipped = 1, a tensor (read when logged).
    With fused AdamW (CUDA's) the optimizer itself skips, through found_inf, which must not outlive the step."""
    m, ref = model_factory(seed=3), model_factory(seed=3)
    opt, opt_ref = runs.make_optimizer(m, 1e-2, 0.1, fused=fused), runs.make_optimizer(ref, 1e-2, 0.1)
    x = torch.randint(0, m.cfg.vocab_size, (2, 9))
    for model, o in ((m, opt), (ref, opt_ref)):
        model(x).float().pow(2).mean().backward()
    gnorm, skipped = runs.clip_and_step_deferred(m, opt, 0.5, [torch.tensor(1.5)])
    assert isinstance(gnorm, torch.Tensor) and skipped.item() == 0
    assert gnorm.item() == pytest.approx(runs.clip_and_step(ref, opt_ref, 0.5, [1.5])[0])
    for p, q in zip(m.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)  # fused and plain AdamW agree up to rounding
    before = [p.detach().clone() for p in m.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in m.parameters()]
    for p in m.parameters():
        p.grad = torch.full_like(p, float("nan"))
    gnorm, skipped = runs.clip_and_step_deferred(m, opt, 0.5, [torch.tensor(1.5)])
    assert skipped.item() == 1 and not torch.isfinite(gnorm)
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))
    assert all(torch.equal(opt.state[p]["exp_avg"], e) for p, e in zip(m.parameters(), moments))
    assert all(float(opt.state[p]["step"]) == 1 for p in m.parameters())
    assert not hasattr(opt, "found_inf")
    # a finite gradient with a non-finite loss is skipped too
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    assert runs.clip_and_step_deferred(m, opt, 0.5, [torch.tensor(float("inf"))])[1].item() == 1
    assert all(torch.equal(p, b) for p, b in zip(m.parameters(), before))


OOM = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 14.74 GiB of which 1.21 GiB "
       "is free. Including non-PyTorch memory, this process has 13.52 GiB memory in use. Of the allocated memory ...")


def test_cuda_out_of_memory_ends_in_one_line_naming_the_settings_that_lower_it(monkeypatch, tmp_path, capsys):
    """An out-of-memory error inside the SFT loop (a card smaller than the preset's pieces) ends the command
    in one line: torch's request and the card's memory, then the settings that make the pieces smaller and
    how to go on from the checkpoint; exit code 2."""
    def step(*a, **k):
        raise torch.cuda.OutOfMemoryError(OOM)
    monkeypatch.setattr(train, "sft_step", step)
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "test", "--stage", "sft", "--out_dir", out, "--micro_tokens", "4096"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("train.py: error: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                          "capacity of 14.74 GiB of which 1.21 GiB is free; smaller pieces need less memory: "
                          "--micro_tokens (now 4096;"), err
    assert "Including" not in err and f"python train.py --stage sft --out_dir {out} --resume" in err
    assert "samples --prompts_per_step x --group_size rows at once (2 x 4: fewer makes another run)" in err
    # (an out-of-memory error without torch's message: the one line all the same)
    assert config.out_of_memory(torch.cuda.OutOfMemoryError(), "x") == "CUDA out of memory; x"
    # under torchrun every process that runs out says so, naming itself, and the launch that goes on
    monkeypatch.setattr(train, "world_size", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(SystemExit):
        train.main(["--config", "test", "--stage", "sft", "--out_dir", str(tmp_path / "two")])
    err = capsys.readouterr().err
    assert err.startswith("train.py: error (process 0 of 2): CUDA out of memory.") and err.count("\n") == 1, err
    assert "torchrun --nproc_per_node 2 train.py --stage sft" in err


def test_the_resume_command_is_launched_as_the_run_was(monkeypatch):
    """A run's data shards fix its number of processes: under torchrun the line that says how to go on names
    torchrun and the processes a node (python train.py with one process is refused on such a run)."""
    cfg = dataclasses.replace(config.Config(), stage="rl", out_dir="o")
    assert train.resume_command(cfg) == "python train.py --stage rl --out_dir o --resume"
    monkeypatch.setattr(train, "world_size", lambda: 4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert train.resume_command(cfg) == "torchrun --nproc_per_node 4 train.py --stage rl --out_dir o --resume"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # (two nodes, or more, of unknown sizes)
    assert train.resume_command(dataclasses.replace(cfg, stage="all")) == (
        "torchrun with 4 processes in all, as launched (nodes, processes a node, rendezvous), train.py --out_dir o "
        "--resume")


def test_a_card_without_bf16_computes_in_float32_with_one_notice(monkeypatch, capsys):
    """config.amp_dtype: bf16 autocast on a CUDA card with native bf16; float32 without autocast on CPU
    (CUDA not asked) and on an older card (a T4: eager kernels emulate bf16, torch.compile's refuse it),
    which a notice says once a process."""
    def card(bf16):
        config._cuda_bf16.cache_clear()
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    try:
        card(None)  # (not a bool: asked, it would fail the test)
        assert config.amp_dtype("cpu") is None and config.amp_dtype(torch.device("cpu")) is None
        card(False)
        assert config.amp_dtype("cuda") is None and config.amp_dtype(torch.device("cuda", 0)) is None
        assert type(config.autocast("cuda")) is type(config.autocast("cpu")) is contextlib.nullcontext
        err = capsys.readouterr().err
        assert err == ("note: Tesla T4 (compute capability 7.5) has no native bf16, which needs 8.0: the run "
                       "computes in float32 on it, without autocast\n")
        card(False)
        monkeypatch.setenv("RANK", "1")  # under torchrun the first process says it, for every process
        assert config.amp_dtype("cuda") is None and capsys.readouterr().err == ""
        monkeypatch.delenv("RANK")
        card(True)
        assert config.amp_dtype("cuda") is torch.bfloat16
        with warnings.catch_warnings():  # (torch warns that a CPU build has no CUDA autocast to enable)
            warnings.simplefilter("ignore")
            ctx = config.autocast("cuda", cache=False)
        assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16 and not ctx._cache_enabled
        assert capsys.readouterr().err == ""
    finally:
        config._cuda_bf16.cache_clear()  # (the real card's answer, the next time it is asked)
