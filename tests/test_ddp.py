"""Data parallelism on CPU (gloo, two processes): the gradient equals the single-process gradient of the
union batch, for the RL loss (with LaSeR's class reweighting over the whole step) and for SFT; a
two-process run and its resumed twin end bit-identical; a resume with another world size is refused."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import config
import loss
import runs
import tasks
import train
from rollout import sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 4  # samples per problem


def _batch(sft_dir):
    """The same model and RL batch (4 problems x K samples) in every process; made-up rewards with both
    classes among the finished rows, so that the class counts N_c, N_i matter."""
    model, tok, _ = runs.load_run(sft_dir)
    probs = tasks.train_batch(0, 4, "ddp-test")
    ro = sample(model, [tok.encode_prompt(p.problem) for p in probs], K, 40,
                generator=torch.Generator().manual_seed(0), tokenizer=tok)
    r_v = (torch.arange(len(ro)) % 3 == 0).float()
    adv, _ = loss.group_advantages(r_v, K)
    return model, tok, ro, r_v, adv


def _grads(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _gradients(model, tok, ro, r_v, adv, sft_problems) -> dict:
    """RL and SFT gradients of this process's share of the batch (all of it in a single process)."""
    cfg = dataclasses.replace(config.Config(), micro_batch=3)
    groups = runs.shard(list(range(len(ro) // K)))  # whole groups per process, as rollout_step takes them
    rows = torch.tensor([g * K + k for g in groups for k in range(K)])

    def rl_gradient(c: config.Config):  # (gradient, loss terms) of the RL update with the settings c
        model.zero_grad(set_to_none=True)
        terms = train.rl_backward(model, train.subset(ro, rows), adv[rows], r_v[rows], c, use_mse=True,
                                  c_ref=-8.0, tok=tok)
        return _grads(model), terms
    rl, terms = rl_gradient(cfg)
    rl_seq, _ = rl_gradient(dataclasses.replace(cfg, loss_agg="seq_mean"))
    model.zero_grad(set_to_none=True)
    sft_loss, n_tokens = train.sft_loss_backward(model, tok, runs.shard(sft_problems), 2, "cpu")
    return {"rl": rl, "rl_seq": rl_seq, "sft": _grads(model), "terms": terms, "sft_loss": sft_loss,
            "n_tokens": n_tokens}


def _worker(rank, world, init_file, sft_dir, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        got = _gradients(*_batch(sft_dir), tasks.train_batch(0, 6, 0))
        x = torch.tensor(float(rank + 1), dtype=torch.float64)  # (the sum's own dtype: all_sum must still not overwrite it)
        got["comm"] = (runs.gather(rank), runs.broadcast(rank), float(runs.all_sum(x)), float(x),
                       runs.all_sum(rank + 1))
        if rank == 0:
            torch.save(got, out)
        dist.barrier()  # leave together (see runs.close_distributed)
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_gradient_of_the_union_batch(sft_dir, tmp_path):
    out = str(tmp_path / "grads.pt")
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), sft_dir, out), nprocs=2)
    ddp = torch.load(out)
    assert ddp["comm"] == ([0, 1], 0, 3.0, 1.0, 3.0)  # rank order, rank 0's object, sums that leave their input
    model, tok, ro, r_v, adv = _batch(sft_dir)
    assert ro.finished[r_v > 0.5].any() and ro.finished[r_v < 0.5].any()  # both LaSeR classes present
    one = _gradients(model, tok, ro, r_v, adv, tasks.train_batch(0, 6, 0))
    for key in ("rl", "rl_seq", "sft"):
        assert one[key].abs().max() > 0
        assert (ddp[key] - one[key]).abs().max() <= 1e-6 * one[key].abs().max(), key
    assert ddp["n_tokens"] == one["n_tokens"]
    assert abs(ddp["sft_loss"] - one["sft_loss"]) <= 1e-6 * abs(one["sft_loss"])
    for term, value in one["terms"].items():  # logged loss terms are the union batch's
        assert abs(ddp["terms"][term] - value) <= 1e-6 * max(1.0, abs(value)), term
    assert one["terms"]["mse"] > 0


def _torchrun(*args):  # on CPU (gloo) even where there is a CUDA device
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "train.py", *args, "--device", "cpu"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def _as_torchrun_would(tmp_path, *args):
    """train.py's two processes, started with the environment torchrun gives its workers (ranks, world size,
    the rendezvous address, one CPU thread unless OMP_NUM_THREADS says otherwise: numbers round as under
    torchrun) but without the launcher, whose own imports cost a launch seconds. Rank 0's stdout, both
    stderrs, and the first non-zero exit code (the other process is stopped, as torchrun would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    procs, files = [], []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        out, err = (open(tmp_path / f"rank{rank}.{name}", "w+") for name in ("out", "err"))
        files.append((out, err))
        procs.append(subprocess.Popen([sys.executable, "train.py", *args, "--device", "cpu"], cwd=ROOT, env=env,
                                      stdout=out, stderr=err))
    deadline = time.monotonic() + 600
    try:
        while any(p.poll() is None for p in procs) and not any(p.poll() for p in procs):
            assert time.monotonic() < deadline, "a two-process run took more than 600 s"
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = []  # rank 0's stdout and stderr, then rank 1's
    for f in (f for pair in files for f in pair):
        f.seek(0)
        text.append(f.read())
        f.close()
    code = next((p.returncode for p in procs if p.returncode), 0)
    return subprocess.CompletedProcess(args, code, text[0], text[1] + text[3])


def test_a_two_process_run_and_its_resumed_twin_are_bit_identical(sft_dir, tmp_path, capsys):
    """Two of the three runs start their processes as torchrun would (_as_torchrun_would), the last under
    torchrun itself, the launcher the README gives."""
    common = ["--config", "test", "--stage", "rl", "--init", sft_dir, "--rl_steps", "3", "--prompts_per_step", "4"]
    run = str(tmp_path / "run")
    for args in ([*common, "--out_dir", run, "--halt_at", "1"], ["--stage", "rl", "--resume", "--out_dir", run]):
        r = _as_torchrun_would(tmp_path, *args)
        assert r.returncode == 0, r.stderr[-2000:]
    # a fresh start where a run is: rank 0 moves it aside (to run.1) while the others wait, then all train
    r = _torchrun(*common, "--out_dir", run)
    assert r.returncode == 0 and f"kept as {run}.1" in r.stdout, r.stderr[-2000:]
    full, part = run, run + ".1"  # the run trained in one go, and the one halted after step 1 and resumed
    a, b = runs.load_checkpoint(full), runs.load_checkpoint(part)
    assert a["step"] == b["step"] == 3 and a["world_size"] == b["world_size"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    drop = ("time_rollout", "time_verify", "time_update", "tokens_per_s")
    logs = [[{k: v for k, v in json.loads(ln).items() if k not in drop} for ln in open(os.path.join(d, "metrics.jsonl"))]
            for d in (full, part)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [0, 1, 2, 3]
    # the data shards depend on the number of processes: a resume with another one is refused in one line
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(["--stage", "rl", "--resume", "--out_dir", part, "--rl_steps", "4", "--device", "cpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "trained by 2 processes and this run has 1" in err and err.count("\n") == 1, err


def test_more_processes_than_cuda_devices_are_refused_in_one_line(monkeypatch):
    """torchrun's second process on a one-card node: a clear error, not a failure inside NCCL."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: pytest.fail("set_device on a device that is not there"))
    with pytest.raises(config.UserError, match=r"process 1 of this node, which has 1 CUDA device \(as "
                                               r"CUDA_VISIBLE_DEVICES shows them\): one process per device "
                                               r"\(--nproc_per_node 1\), or --device cpu"):
        runs.init_distributed("auto")
    assert not dist.is_initialized()


def test_torchrun_takes_its_local_cuda_device_and_nccl_or_gloo_on_cpu(monkeypatch):
    """The process group torchrun's processes join (NCCL is not run here): on CUDA the local rank's device,
    then NCCL; with --device cpu gloo and no CUDA device touched."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    calls = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("device", d)))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: calls.append(("group", backend)))
    runs.init_distributed("auto")
    assert calls == [("device", 1), ("group", "nccl")]
    calls.clear()
    runs.init_distributed("cpu")
    assert calls == [("group", "gloo")]


# one process imports runs (and torch) once, then forks a child per case: stdout and stderr of the child go to
# files of their own, and it ends as a torchrun worker ends (a process each would import torch seven times)
_EXIT_DRIVER = """
import json, os, sys, tempfile, runs
results = {}
for body in json.loads(sys.argv[1]):
    files = [tempfile.TemporaryFile() for _ in range(2)]
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for fd, f in zip((1, 2), files):
            os.dup2(f.fileno(), fd)
        exec("def main():\\n    " + body)
        runs.run_then_exit(main)
        print("not reached", flush=True)
        os._exit(99)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    for f in files:
        f.seek(0)
    results[body] = [code] + [f.read().decode() for f in files]
print(json.dumps(results))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the cases run in forked children (POSIX)")
def test_run_then_exit_keeps_exit_codes_output_and_tracebacks():
    """Under torchrun train.py leaves by os._exit (runs.run_then_exit): what it printed still arrives, and
    the exit code is the one Python's own exit would give."""
    cases = {"print('done', end='')": (0, "done", ""), "sys.exit(3)": (3, "", ""), "sys.exit(None)": (0, "", ""),
             "sys.exit(257)": (1, "", ""), "sys.exit('a message')": (1, "", "a message\n"),
             "raise ValueError('boom')": (1, "", "ValueError: boom"),
             "raise KeyboardInterrupt": (130, "", "KeyboardInterrupt")}
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # (else no flush is needed)
    r = subprocess.run([sys.executable, "-c", _EXIT_DRIVER, json.dumps(list(cases))], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=buffered)
    assert r.returncode == 0, r.stderr
    for body, (code, out, err) in cases.items():
        got_code, got_out, got_err = json.loads(r.stdout)[body]
        assert (got_code, got_out) == (code, out) and (err in got_err if err else got_err == ""), (body, got_err)


def test_a_resume_with_more_processes_is_refused_too(sft_dir, monkeypatch):
    """The shards depend on the number of processes both ways: a one-process run resumed by two is refused."""
    monkeypatch.setattr(runs, "world_size", lambda: 2)
    cfg = dataclasses.replace(config.Config(**config.PRESETS["test"]), out_dir=sft_dir)
    with pytest.raises(config.UserError, match="trained by 1 processes and this run has 2"):
        runs.resume_run(cfg, "sft", 1e-3, "cpu")


def test_each_process_samples_its_rl_rows_with_its_own_stream(sft_dir, monkeypatch):
    """Under torchrun the processes sample different prompts with different random streams (the same stream
    on every process would correlate their samples)."""
    model, tok, _ = runs.load_run(sft_dir)
    cfg = config.Config(**config.PRESETS["test"])
    seeds = []

    def fake(m, t, probs, generator=None, **kw):
        seeds.append(generator.initial_seed())
        yield None, None
    monkeypatch.setattr(train, "sample_chunks", fake)
    monkeypatch.setattr(train, "world_size", lambda: 2)
    for r in (0, 1):
        monkeypatch.setattr(train, "rank", lambda r=r: r)
        train.rollout_step(model, tok, cfg, 0)
    assert len(seeds) == 2 and seeds[0] != seeds[1]


def test_torchrun_with_fewer_sft_problems_than_processes_is_refused(tmp_path, monkeypatch, capsys):
    """Each process takes a share of the step's SFT problems too: --sft_batch_size below the number of
    processes (one would get none) is refused in one line, like --prompts_per_step."""
    monkeypatch.setattr(train, "world_size", lambda: 2)
    with pytest.raises(SystemExit) as e:
        train.main(["--config", "test", "--stage", "sft", "--sft_batch_size", "1", "--prompts_per_step", "4",
                    "--out_dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--sft_batch_size >= 2" in err and err.count("\n") == 1, err
