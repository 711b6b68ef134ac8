"""An SFT run's schedule by hand (warm-up, cosine to min_lr_frac), and what a run feeds its steps: the seed's data, the
clip, checkpoints at --ckpt_every and --halt_at, validation on the validation split; settings a resume keeps."""
import json
import math
import os

import pytest

import runs
import tasks
import train


def test_lr_schedule_by_hand():
    """Linear warm-up (steps 0..warmup-1 at peak/warmup .. peak), then a cosine from the peak at step
    warmup down to peak * min_frac at step `total` (one past the last step)."""
    lr = lambda s: train.lr_at(s, 20, 2.0, 4, 0.1)  # noqa: E731
    assert [lr(s) for s in range(4)] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lr(4) == pytest.approx(2.0)  # the cosine starts at the peak
    assert lr(12) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # half way in time: half way to the floor
    assert lr(20) == pytest.approx(0.2)  # the floor, one past the last step
    assert all(lr(s) > lr(s + 1) > 0.2 for s in range(4, 19))
    assert train.lr_at(0, 10, 1.0, 0, 0.0) == 1.0 and train.lr_at(10, 10, 1.0, 0, 0.0) == pytest.approx(0.0)


def test_an_sft_run_follows_its_schedule_data_stream_clip_checkpoints_and_validation(tmp_path, monkeypatch):
    """What an SFT run feeds its steps, from the flags: the learning rate of each step (--sft_warmup,
    --min_lr_frac: lr_at's schedule by hand), the problems of (--seed, step), --grad_clip, checkpoints every
    --ckpt_every steps and at --halt_at, and validation on validation problems."""
    saved, evaluated, seen, clips = [], [], [], []
    real_ck, real_batches, real_clip = train.checkpoint, train.sft_step_batches, train.clip_and_step_deferred
    monkeypatch.setattr(train, "checkpoint", lambda path, model, opt, step, *a, **k: (
        saved.append(step), real_ck(path, model, opt, step, *a, **k)))
    monkeypatch.setattr(train, "heldout_eval", lambda model, tok, problems, cfg, c_ref=None: evaluated.append(problems) or {})
    monkeypatch.setattr(train, "sft_step_batches", lambda tok, probs, *a, **k: (
        seen.append(list(probs)), real_batches(tok, probs, *a, **k))[1])
    monkeypatch.setattr(train, "clip_and_step_deferred", lambda model, opt, clip, losses: (
        clips.append(clip), real_clip(model, opt, clip, losses))[1])
    out = str(tmp_path / "r")
    train.main(["--config", "test", "--stage", "sft", "--out_dir", out, "--sft_steps", "10", "--sft_warmup", "2",
                "--min_lr_frac", "0.2", "--sft_lr", "1e-3", "--ckpt_every", "4", "--halt_at", "9", "--eval_every", "5",
                "--seed", "3", "--grad_clip", "0.5"])
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lr = {r["step"]: r["lr"] for r in map(json.loads, f) if "lr" in r}
    assert sorted(lr) == list(range(1, 10))
    cosine = lambda t: 1e-3 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * t)))  # noqa: E731
    want = [0.5e-3, 1e-3] + [cosine((s - 2) / 8) for s in range(2, 9)]  # steps 0..8, reported as 1..9
    assert [lr[d] for d in range(1, 10)] == pytest.approx(want)
    assert lr[7] == pytest.approx(0.6e-3)
    assert seen[:9] == [tasks.train_batch(s, 8, 3) for s in range(9)]  # the seed's stream, step by step
    assert clips == [0.5] * 9
    assert saved == [4, 8, 9] and runs.load_checkpoint(out)["step"] == 9
    assert len(evaluated) == 1 and {tasks.split_of(p.key) for p in evaluated[0]} == {"validation"}


@pytest.mark.parametrize("flag,value", [("--families", "word"), ("--levels", "1"), ("--algo", "grpo"),
                                        ("--beta_v", "0.5"), ("--c_ref", "-3.0")])
def test_a_resume_refuses_every_setting_that_makes_another_run(sft_dir, flag, value):
    """Another problem mix, algorithm or reward scale would make the resumed run another run than its
    checkpoint's (the model flags and --seed are checked by the existing test)."""
    import config
    with pytest.raises(config.UserError, match=rf"{flag} {value}: a resumed run keeps its setting"):
        train.run_config_for(*config.resolve_config(["--config", "test", "--out_dir", sft_dir, "--resume", flag, value]))
