"""runs.py's state: weight decay's groups (and a resume's --weight_decay), --grad_clip 0, DDP shards, the global RNGs
a resume restores, metrics logs, and the checks a checkpoint passes on its way in and out."""
import copy
import dataclasses
import random
import shutil

import numpy as np
import pytest
import torch

import config
import runs
import train
from config import UserError
from tokenizer import Tokenizer


def test_weight_decay_is_on_the_weight_matrices_but_the_embedding(model_factory):
    m = model_factory()
    opt = runs.make_optimizer(m, 1e-3, 0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0.1 for p in g["params"]}
    names = {n for n, p in m.named_parameters() if id(p) in decayed}
    assert names == {n for n, p in m.named_parameters() if p.dim() >= 2 and n != "wte.weight"}
    assert "lm_head.weight" in names and "wte.weight" not in names
    assert all(g["weight_decay"] in (0.0, 0.1) for g in opt.param_groups)
    assert sorted(id(p) for g in opt.param_groups for p in g["params"]) == sorted(id(p) for p in m.parameters())


def test_grad_clip_zero_is_no_clipping():
    """--grad_clip 0 means no clipping (config: '0: no clipping'); a positive value caps the step's norm."""
    torch.manual_seed(0)
    base, x = torch.nn.Linear(3, 2), torch.randn(5, 3)
    for clip in (0.0, 1e-3):
        m = copy.deepcopy(base)
        opt = torch.optim.SGD(m.parameters(), lr=1.0)
        loss = (m(x) ** 2).sum() * 100
        loss.backward()
        grad = torch.cat([p.grad.flatten() for p in m.parameters()])
        before = torch.cat([p.detach().flatten() for p in m.parameters()])
        gnorm, skipped = runs.clip_and_step(m, opt, clip, [loss.item()])
        step = before - torch.cat([p.detach().flatten() for p in m.parameters()])
        assert skipped == 0 and gnorm == pytest.approx(float(grad.norm()), rel=1e-5) and gnorm > 1
        if clip == 0:
            torch.testing.assert_close(step, grad)  # the whole gradient, unclipped
        else:
            assert float(step.norm()) == pytest.approx(clip, rel=1e-4)


@pytest.mark.parametrize("n,w", [(7, 2), (7, 3), (2, 2), (10, 4)])
def test_shards_split_every_item_once_in_order_and_evenly(monkeypatch, n, w):
    items, shares = list(range(n)), []
    monkeypatch.setattr(runs, "world_size", lambda: w)
    for r in range(w):
        monkeypatch.setattr(runs, "rank", lambda r=r: r)
        shares.append(runs.shard(items))
    assert sum(shares, []) == items and max(map(len, shares)) - min(map(len, shares)) <= 1


def test_resume_restores_the_global_rngs(sft_dir):
    ck = runs.load_checkpoint(sft_dir)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    runs.resume_run(dataclasses.replace(runs.run_config(ck), out_dir=sft_dir), "sft", 1e-3, "cpu")
    got = torch.rand(3), random.random(), np.random.rand()
    torch.set_rng_state(ck["rng"]["torch"]), random.setstate(ck["rng"]["python"]), np.random.set_state(ck["rng"]["numpy"])
    assert torch.equal(got[0], torch.rand(3)) and got[1] == random.random() and got[2] == np.random.rand()


def test_a_fresh_metrics_log_starts_empty(tmp_path):
    """A fresh run's log never keeps an earlier attempt's records (reachable: `--stage all --resume` where RL
    wrote records, then died before its first checkpoint, restarts RL afresh in the same directory)."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "eval_acc": 0.5}\n{"step": 1, "loss": 1.0}\n')
    log = runs.MetricsLog(str(path))
    log.write({"step": 0, "eval_acc": 0.25})
    assert path.read_text() == '{"step": 0, "eval_acc": 0.25}\n'


def test_a_checkpoint_without_a_digest_still_refuses_a_tokenizer_of_another_vocabulary(sft_dir, tmp_path):
    run = tmp_path / "old"
    shutil.copytree(sft_dir, run)
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    del ck["tokenizer_sha256"]  # (as checkpoints from before the digest)
    torch.save(ck, run / "ckpt.pt")
    (run / "tokenizer.json").write_text(Tokenizer([]).to_json())
    with pytest.raises(UserError, match="checkpoint vocab .* != tokenizer vocab 260"):
        runs.load_run(str(run))


def test_a_checkpoint_is_never_written_from_non_finite_weights(model_factory, tok, tmp_path):
    m = model_factory()
    opt = runs.make_optimizer(m, 1e-3, 0.0)
    path = tmp_path / "ckpt.pt"
    runs.checkpoint(str(path), m, opt, 1, config.Config(), tok, {"stage": "sft"})
    good = path.read_bytes()
    with torch.no_grad():
        m.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="not finite after step 2"):
        runs.checkpoint(str(path), m, opt, 2, config.Config(), tok, {"stage": "sft"})
    assert path.read_bytes() == good  # the last good checkpoint is kept


def test_a_saved_config_with_fields_this_version_does_not_know_still_loads():
    cfg = runs.config_from({"sft_steps": 5, "c_ref": None, "a_field_from_another_version": 1}, "config.json")
    assert cfg.sft_steps == 5 and cfg.c_ref != cfg.c_ref  # (null: NaN)


def test_a_malformed_line_inside_the_metrics_log_is_an_error_on_resume(tmp_path):
    """Only a torn last line (a write cut short) is dropped; a malformed line before it is reported, not lost."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, oops\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl:2: not a JSON line"):
        runs.MetricsLog(str(path), resume_step=3)


def test_a_resume_trains_with_the_weight_decay_it_was_given(tmp_path):
    """--resume --weight_decay X: the optimizer's saved groups used to bring back the old value while
    config.json and the checkpoint's config recorded X."""
    out = str(tmp_path / "r")
    train.main(["--config", "test", "--stage", "sft", "--out_dir", out, "--sft_steps", "2", "--halt_at", "1"])
    assert [g["weight_decay"] for g in runs.load_checkpoint(out)["optimizer"]["param_groups"]] == [0.0, 0.0]
    train.main(["--config", "test", "--stage", "sft", "--out_dir", out, "--resume", "--weight_decay", "0.1"])
    ck = runs.load_checkpoint(out)
    assert ck["config"]["weight_decay"] == 0.1
    assert [g["weight_decay"] for g in ck["optimizer"]["param_groups"]] == [0.1, 0.0]
