"""The figures of the torchrun path, on CPU (gloo):

    python scripts/ddp_check.py [--steps 10]

1. the largest |gradient difference| between two processes and one process on the same union batch (RL
   loss with LaSeR's MSE, and SFT), with tests/test_ddp.py's batch;
2. the wall time of the test preset's RL stage (--steps steps of 8 problems x 4 samples) with one process
   and with two (torchrun), each including process start-up, and their ratio.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]
os.chdir(ROOT)

import torch  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

import tasks  # noqa: E402
from test_ddp import _batch, _gradients, _worker  # noqa: E402


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="RL steps of the timed runs (default 10)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        sft = os.path.join(d, "sft")
        subprocess.run([sys.executable, "train.py", "--config", "test", "--stage", "sft", "--out_dir", sft],
                       check=True, capture_output=True)
        mp.spawn(_worker, args=(2, os.path.join(d, "init"), sft, os.path.join(d, "g.pt")), nprocs=2)
        two = torch.load(os.path.join(d, "g.pt"))
        one = _gradients(*_batch(sft), tasks.train_batch(0, 6, 0))
        for key in ("rl", "sft"):
            diff = (two[key] - one[key]).abs().max().item()
            print(f"{key} gradient: max |2 processes - 1 process| = {diff:.3e} (max |gradient| "
                  f"{one[key].abs().max().item():.3e})")
        rl = ["train.py", "--config", "test", "--stage", "rl", "--init", sft, "--rl_steps", str(args.steps),
              "--prompts_per_step", "8", "--ckpt_every", str(args.steps)]
        t1 = timed([sys.executable, *rl, "--out_dir", os.path.join(d, "one")])
        t2 = timed([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *rl,
                    "--out_dir", os.path.join(d, "two")])
        print(f"test preset, {args.steps} RL steps x 8 problems x 4 samples, {os.cpu_count()} CPUs: "
              f"1 process {t1:.1f} s, 2 processes {t2:.1f} s, ratio (1 / 2) {t1 / t2:.2f}")


if __name__ == "__main__":
    main()
