"""Bad input ends in one line on stderr and a non-zero exit (2, like argparse); valid input runs.

Each case is a (command line, expected fragment of the message) row: flags out of range, unreadable
checkpoints, tokenizers, configs and data files, for train.py and evaluate.py. They run in-process
with the test preset, most in well under a second."""
import functools
import json
import multiprocessing
import os
import signal
import shutil

import pytest
import torch

import config
import evaluate
import runs
import tasks
import train

T = ["--config", "test"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, sft_dir):
    """Bad files of every kind, and run directories holding them."""
    d = tmp_path_factory.mktemp("bad")
    good = [json.dumps({"problem": "Compute 1 + 2.", "answer": 3})]
    data = {"empty.jsonl": "", "blank.jsonl": "\n  \n\n", "malformed.jsonl": good[0] + "\n{oops\n",
            "missing.jsonl": '{"problem": "p"}\n', "wrongtype.jsonl": '{"problem": "p", "answer": [1]}\n',
            "array.jsonl": "[1, 2]\n", "badlevel.jsonl": '{"problem": "p", "answer": 1, "level": "x"}\n'}
    long = "A long story about a gardener who counts the flowers in the garden every morning. " * 20
    for split in ("train", "test"):  # one problem of each split, both too long for the test preset's model
        answer = next(x for x in range(1000) if tasks.split_of(tasks.canonical_key(long, str(x))) == split)
        data["toolong.jsonl"] = data.get("toolong.jsonl", "") + json.dumps({"problem": long, "answer": answer}) + "\n"
    for name, text in data.items():
        (d / name).write_text(text)
    (d / "binary.jsonl").write_bytes(bytes(range(256)) * 4)
    (d / "adir.jsonl").mkdir()
    (d / "afile").write_text("x")
    ck = open(os.path.join(sft_dir, "ckpt.pt"), "rb").read()
    for name, payload in {"corrupt": os.urandom(4096), "truncated": ck[: len(ck) // 2], "empty": b""}.items():
        run = d / name
        shutil.copytree(sft_dir, run)
        (run / "ckpt.pt").write_bytes(payload)
    foreign = d / "foreign"
    shutil.copytree(sft_dir, foreign)
    torch.save({"state_dict": {}}, foreign / "ckpt.pt")
    for name, tok in {"notok": None, "badtok": "{not json", "wrongtok": '{"merges": 5}'}.items():
        run = d / name
        shutil.copytree(sft_dir, run)
        if tok is None:
            os.remove(run / "tokenizer.json")
        else:
            (run / "tokenizer.json").write_text(tok)
    for name, cfg in {"nocfg": None, "badcfg": "{torn", "typecfg": '{"sft_steps": "many"}',
                      "listcfg": "[1]"}.items():
        run = d / name
        shutil.copytree(sft_dir, run)
        if cfg is None:
            os.remove(run / "config.json")
        else:
            (run / "config.json").write_text(cfg)
    return d


FLAG_CASES = [  # (extra flags, fragment)
    (["--grad_clip", "-1"], "--grad_clip must be finite and >= 0"),
    (["--n_test", "0"], "--n_test must be >= 1"),
    (["--n_val", "0"], "--n_val must be >= 1"),
    (["--bpe_merges", "-1"], "--bpe_merges must be >= 0"),
    (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
    (["--top_p", "0"], "--top_p must be in (0, 1]"),
    (["--top_k", "-1"], "--top_k must be >= 0"),
    (["--block_size", "8"], "--block_size 8 leaves no room"),
    (["--max_new_tokens", "100000"], "leaves no room for a prompt"),
    (["--sft_micro_batch", "0"], "--sft_micro_batch must be >= 1"),
    (["--eval_batch", "0"], "--eval_batch must be >= 1"),
    (["--ckpt_every", "0"], "--ckpt_every must be >= 1"),
    (["--log_every", "0"], "--log_every must be >= 1"),
    (["--sft_lr", "nan"], "--sft_lr must be finite and > 0"),
    (["--sft_lr", "inf"], "--sft_lr must be finite and > 0"),
    (["--rl_lr", "-1"], "--rl_lr must be finite and > 0"),
    (["--temperature", "0"], "--temperature must be finite and > 0"),
    (["--min_lr_frac", "2"], "--min_lr_frac must be in [0, 1]"),
    (["--data_mix", "1.5"], "--data_mix must be in [0, 1]"),
    (["--data_mix", "nan"], "--data_mix must be in [0, 1]"),
    (["--n_test", "100000"], "--n_test 100000"),
    (["--levels", "1,x"], "--levels must be comma-separated integers"),
    (["--families", "calculus"], "unknown families"),
    (["--stage", "rl"], "--stage rl needs --init"),
    (["--rl_lr", "fast"], "invalid float value"),
    (["--no_such_key", "1"], "unrecognized arguments"),
]


def _train_fails(capsys, argv, fragment):
    with pytest.raises(SystemExit) as e:
        train.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, (argv, err)
    assert len(err) == 1 and "error" in err[0] and fragment in err[0], (argv, err)


@pytest.mark.parametrize("flags,fragment", FLAG_CASES)
def test_bad_flags(flags, fragment, capsys, tmp_path):
    _train_fails(capsys, T + ["--stage", "sft", "--out_dir", str(tmp_path / "r")] + flags, fragment)


FILE_CASES = [  # (argv with {d} for the bad-files dir and {sft} for a good run, fragment)
    ("--stage sft --out_dir {d}/afile", "is a file, not a directory"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/nope.jsonl", "no such file"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/adir.jsonl", "no such file"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/empty.jsonl", "no problems in the file"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/blank.jsonl", "no problems in the file"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/malformed.jsonl", "malformed.jsonl:2: invalid JSON"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/missing.jsonl", "missing.jsonl:1: missing required key 'answer'"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/wrongtype.jsonl", "wrongtype.jsonl:1: 'answer' must be"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/array.jsonl", "array.jsonl:1: expected a JSON object"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/badlevel.jsonl", "badlevel.jsonl:1: 'level' must be"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/binary.jsonl", "binary.jsonl:3: not UTF-8 text"),
    ("--stage sft --out_dir {d}/r --data_jsonl {d}/toolong.jsonl", "none of the 1 problems kept fits SFT"),
    ("--stage rl --init {sft} --out_dir {d}/r --data_jsonl {d}/toolong.jsonl", "none of the 1 problems kept fits RL"),
    ("--stage sft --resume --out_dir {d}/corrupt", "corrupt/ckpt.pt: not a readable checkpoint"),
    ("--stage sft --resume --out_dir {d}/truncated", "truncated/ckpt.pt: not a readable checkpoint"),
    ("--stage sft --resume --out_dir {d}/empty", "empty/ckpt.pt: not a readable checkpoint"),
    ("--stage sft --resume --out_dir {d}/foreign", "not a checkpoint of this project (missing model"),
    ("--stage rl --resume --out_dir {d}/corrupt", "corrupt/ckpt.pt: not a readable checkpoint"),
    ("--stage rl --resume --out_dir {sft}", "holds a sft checkpoint, not rl"),
    ("--stage rl --init {sft} --out_dir {sft}/", "is the --init run: RL writes a run directory of its own"),
    ("--stage rl --init {sft} --out_dir {d}/r --n_layer 3", "--n_layer 3: RL trains the model of --init"),
    ("--stage sft --resume --out_dir {sft} --bpe_merges 9", "--bpe_merges 9: a resumed run keeps its setting"),
    ("--stage rl --init {d}/truncated --out_dir {d}/r", "truncated/ckpt.pt: not a readable checkpoint"),
    ("--stage rl --init {d}/foreign --out_dir {d}/r", "not a checkpoint of this project"),
    ("--stage rl --init {d}/afile --out_dir {d}/r", "afile: not a readable checkpoint"),
    ("--stage rl --init {d}/nowhere --out_dir {d}/r", "nowhere: no checkpoint here"),
    ("--stage rl --init {d}/notok --out_dir {d}/r", "notok/tokenizer.json: no tokenizer here"),
    ("--stage rl --init {d}/badtok --out_dir {d}/r", "badtok/tokenizer.json: unreadable tokenizer"),
    ("--stage rl --init {d}/wrongtok --out_dir {d}/r", "wrongtok/tokenizer.json: unreadable tokenizer"),
    ("--stage sft --resume --out_dir {d}/nocfg", "nocfg/config.json: no run config here"),
    ("--resume --out_dir {d}/nothing", "--resume: no run to resume in "),  # (was: "nothing/sft/config.json: no
    ("--stage sft --resume --out_dir {d}/nothing", "--resume: no run to resume in "),  # run config here")
    ("--stage sft --resume --out_dir {d}/badcfg", "badcfg/config.json: unreadable run config"),
    ("--stage sft --resume --out_dir {d}/typecfg", "typecfg/config.json: sft_steps should be int"),
    ("--stage sft --resume --out_dir {d}/listcfg", "expected a JSON object as run config"),
]


@pytest.mark.parametrize("argv,fragment", FILE_CASES)
def test_bad_files(argv, fragment, files, sft_dir, capsys):
    _train_fails(capsys, T + argv.format(d=files, sft=sft_dir).split(), fragment)


EVAL_CASES = [  # (argv, fragment)
    ("{sft} --n_problems 0", "--n_problems must be >= 1"),
    ("{sft} --batch_size 0", "--batch_size must be >= 1"),
    ("{sft} --max_new_tokens -5", "--max_new_tokens must be >= 1"),
    ("{sft} --n_samples 0", "--n_samples must be >= 1"),
    ("{sft} --max_new_tokens 100000", "exceeds block_size"),
    ("{d}/corrupt", "corrupt/ckpt.pt: not a readable checkpoint"),
    ("{d}/truncated", "not a readable checkpoint"),
    ("{d}/empty", "not a readable checkpoint"),
    ("{d}/foreign", "not a checkpoint of this project"),
    ("{d}/notok", "no tokenizer here"),
    ("{d}/nowhere", "run directory not found"),
    ("--records {d}/malformed.jsonl", "cannot read records"),
    ("{sft} --data_jsonl {d}/malformed.jsonl", "malformed.jsonl:2: invalid JSON"),
    ("{sft} --data_jsonl {d}/nope.jsonl", "nope.jsonl: cannot read"),
    ("{sft} --data_jsonl {d}/toolong.jsonl", "none of the 1 problems kept fits evaluation"),
    ("{sft} --data_jsonl {d}/toolong.jsonl --split validation", "no problem's key falls in the validation split"),
    ("{sft} --data_jsonl {d}/missing.jsonl --split validation", "missing.jsonl:1: missing required key 'answer'"),
    ("--records {d}/malformed.jsonl --data_jsonl {d}/toolong.jsonl", "--data_jsonl applies to RUN_DIRs"),
]


@pytest.mark.parametrize("argv,fragment", EVAL_CASES)
def test_evaluate_bad_input(argv, fragment, files, sft_dir, capsys):
    code = evaluate.main(argv.format(d=files, sft=sft_dir).split() + ["--out", str(files / "ev")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and fragment in err[0], (argv, err)


def test_torn_last_metrics_line_is_dropped_on_resume(tmp_path, capsys):
    run = str(tmp_path / "r")
    train.main(T + ["--stage", "sft", "--out_dir", run, "--halt_at", "10"])
    log = os.path.join(run, "metrics.jsonl")
    with open(log, "a") as f:
        f.write('{"step": 11, "lo')  # a crash in the middle of a write
    train.main(T + ["--stage", "sft", "--out_dir", run, "--resume"])
    assert "dropped a torn last line" in capsys.readouterr().out
    steps = [json.loads(ln)["step"] for ln in open(log)]
    assert steps == list(range(1, 31))


@pytest.mark.parametrize("fused,ckpt_every", [(False, 1), (True, 1), (False, 10), (True, 10)])
def test_sft_skips_non_finite_steps_and_stops_on_a_run_of_them(tmp_path, monkeypatch, capsys, fused, ckpt_every):
    """fused: AdamW as on CUDA, where the skip is the optimizer's (found_inf) and the steps are read back only
    at log lines (every 10 steps here) and checkpoints: the stop then comes at the next read-back, naming the
    same step, with every record before it written."""
    if fused:
        monkeypatch.setattr(train, "make_optimizer", functools.partial(runs.make_optimizer, fused=True))
    real = train.sft_backward
    calls = {"n": 0}

    def flaky(model, batches, device, forward=None, nan_at=(4,)):
        calls["n"] += 1
        loss = real(model, batches, device, forward)
        if calls["n"] in nan_at or calls["n"] >= 20:
            for p in model.parameters():
                p.grad = torch.full_like(p, float("nan"))
            return torch.full_like(loss, float("nan"))  # on the device, as sft_backward's
        return loss

    monkeypatch.setattr(train, "sft_backward", flaky)
    run = str(tmp_path / "r")
    _train_fails(capsys, T + ["--stage", "sft", "--out_dir", run, "--ckpt_every", str(ckpt_every),
                              "--max_skipped", "4"], "SFT stopped at step 23: 4 steps in a row")
    ck = runs.load_checkpoint(run)
    assert ck["step"] == (22 if ckpt_every == 1 else 20)  # the last checkpoint is from before the stop
    assert ck["skipped_steps"] >= 1 and all(torch.isfinite(v).all() for v in ck["model"].values())
    recs = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == list(range(1, 23))  # every step before the stop, in order
    assert recs[3]["skipped_steps"] == 1 and recs[4]["skipped_steps"] == 1  # step 4 skipped, step 5 not
    assert all(r["loss"] is None for r in recs[19:]) and recs[18]["loss"] > 0  # NaN is logged as null


@pytest.mark.parametrize("fused,process,signals", [(False, False, 1), (True, False, 1), (True, True, 1),
                                                    (False, False, 2), (True, True, 2)])
def test_sft_stopped_by_sigterm(tmp_path, monkeypatch, capsys, fused, process, signals):
    """`timeout` or a scheduler ends a run with SIGTERM (Ctrl-C is SIGINT, handled alike). The first signal lets
    the step finish, then the run saves a checkpoint, says how to resume, and exits 143; a second one stops at
    once, and then too every finished step reaches metrics.jsonl (with fused AdamW, CUDA's, the steps since the
    last log line, every 10 here, are still on the device). process: the batches built in a worker process,
    as on CUDA; `timeout` signals it too (its process group), and it must outlive the signal."""
    monkeypatch.setattr(train, "make_optimizer", functools.partial(runs.make_optimizer, fused=fused))
    monkeypatch.setattr(train, "prefetch", lambda make, items, **_: runs.prefetch(make, items, process=process))
    real, calls = train.sft_backward, []

    def signalled_at_15(model, batches, device, forward=None):
        calls.append(1)
        if len(calls) == 15:
            workers = multiprocessing.active_children()
            assert len(workers) == (1 if process else 0)
            for w in workers:
                os.kill(w.pid, signal.SIGTERM)
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGTERM)
        return real(model, batches, device, forward)

    monkeypatch.setattr(train, "sft_backward", signalled_at_15)
    previous = signal.signal(signal.SIGTERM, runs.stop_gracefully)  # as `python train.py` installs it
    run = str(tmp_path / "r")
    try:
        with pytest.raises(SystemExit) as e:
            train.main(T + ["--stage", "sft", "--out_dir", run, "--ckpt_every", "100"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        runs.stop_requested(clear=True)  # (a stop cut short leaves its request behind)
    assert e.value.code == 128 + signal.SIGTERM
    recs = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    printed = capsys.readouterr()
    assert "SIGTERM: stopping after the step in progress" in printed.err
    if signals == 2:  # the 15th step was cut short by the second signal; no checkpoint was due
        assert "train.py: terminated" in printed.err
        assert [r["step"] for r in recs] == list(range(1, 15)) and all(r["loss"] > 0 for r in recs)
        assert not os.path.exists(os.path.join(run, "ckpt.pt"))
        return
    assert [r["step"] for r in recs] == list(range(1, 16)) and all(r["loss"] > 0 for r in recs)
    assert runs.load_checkpoint(run)["step"] == 15
    assert (f"SFT stopped after step 15 (SIGTERM), its checkpoint saved; python train.py --stage sft --out_dir "
            f"{run} --resume continues the run") in printed.out
    train.main(["--stage", "sft", "--out_dir", run, "--resume"])
    recs = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["step"] for r in recs] == list(range(1, 31)) and runs.load_checkpoint(run)["step"] == 30


def test_a_signal_in_sfts_last_step_stops_the_main_command_before_rl(tmp_path, monkeypatch, capsys):
    """SFT completes (its last step was under way), then --stage all stops instead of starting RL, and the
    resume line is the main command's."""
    real, calls = train.sft_backward, []

    def signalled_at_30(model, batches, device, forward=None):
        calls.append(1)
        if len(calls) == 30:  # the test preset's last SFT step
            os.kill(os.getpid(), signal.SIGTERM)
        return real(model, batches, device, forward)

    monkeypatch.setattr(train, "sft_backward", signalled_at_30)
    previous = signal.signal(signal.SIGTERM, runs.stop_gracefully)
    out = str(tmp_path / "run")
    try:
        with pytest.raises(SystemExit) as e:
            train.main(T + ["--out_dir", out])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert e.value.code == 128 + signal.SIGTERM and runs.stop_requested() == 0
    assert runs.load_checkpoint(os.path.join(out, "sft"))["step"] == 30 and not os.path.exists(os.path.join(out, "laser"))
    assert f"SFT stopped after step 30 (SIGTERM), its checkpoint saved; python train.py --out_dir {out} --resume" \
        in capsys.readouterr().out


def _ctrl_c(argv, at: str) -> tuple[int, str, str]:
    """`python train.py ARGV`, and Ctrl-C (SIGINT) once it prints a line starting with `at`, as a user does
    it: (exit code, stdout after that line, stderr)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.Popen([sys.executable, "train.py", *T, *argv], cwd=root, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if line.startswith(at):
                p.send_signal(signal.SIGINT)
                break
        out, err = p.communicate(timeout=60)
    finally:
        p.kill()
    return p.returncode, out, err


def test_ctrl_c_stops_train_py_with_a_checkpoint_it_resumes_from(tmp_path):
    """Ctrl-C: exit 130 after the step in progress, a checkpoint at the last step logged (the old handler left
    a traceback and no checkpoint, 342 steps lost), and a line with the command that resumes. Before the
    first step there is nothing to save: it stops at once, in one line."""
    run = str(tmp_path / "r")
    rc, out, err = _ctrl_c(["--stage", "sft", "--out_dir", run, "--sft_steps", "100000", "--ckpt_every", "100000",
                            "--log_every", "1"], at="sft     3/")
    assert rc == 130, err
    step = runs.load_checkpoint(run)["step"]
    recs = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl"))]
    assert step >= 3 and [r["step"] for r in recs] == list(range(1, step + 1))
    assert "SIGINT: stopping after the step in progress" in err and "Traceback" not in err
    assert f"SFT stopped after step {step} (SIGINT)" in out and f"--out_dir {run} --resume continues the run" in out
    rc, out, err = _ctrl_c(["--stage", "sft", "--out_dir", str(tmp_path / "r2")], at="config: ")
    assert rc == 130 and err.strip() == "train.py: interrupted", err
    assert not os.path.exists(tmp_path / "r2" / "ckpt.pt")


def test_rl_stops_on_a_run_of_skipped_steps(sft_dir, tmp_path, monkeypatch, capsys):
    """(Before: --rl_lr 1e6 wrecked the weights at step 1, steps 2-8 were skipped, and the run exited 0.)"""
    real = train.rl_update

    def diverged_after_two(*args, **kw):
        st = real(*args, **kw)
        st["skipped"] = int(calls.append(1) or len(calls) > 2)
        return st

    calls = []
    monkeypatch.setattr(train, "rl_update", diverged_after_two)
    run = str(tmp_path / "r")
    _train_fails(capsys, T + ["--stage", "rl", "--init", sft_dir, "--out_dir", run, "--rl_steps", "12",
                              "--max_skipped", "3", "--c_ref", "-20"], "RL stopped at step 5: 3 steps in a row")
    assert runs.load_checkpoint(run)["step"] == 4  # test preset: a checkpoint every step; 5 was not saved


def test_skip_guard_counts_a_run_across_a_resume():
    guard = runs.SkipGuard(3)
    guard.update(1, 3, "RL")
    guard.update(1, 4, "RL")
    resumed = runs.SkipGuard(3, guard.state())  # as if checkpointed at step 4 and resumed
    with pytest.raises(config.UserError, match="RL stopped at step 5: 3 steps in a row"):
        resumed.update(1, 5, "RL")
    guard.update(0, 5, "RL")
    assert guard.state() == {"skipped_steps": 2, "skipped_in_a_row": 0}
