"""Rerun an RL stage with two verifiers judging every sample: the current one (whose rewards train, as in
any run) and the one of an older commit; print each sample on which their rewards differ. How the
disagreements of this rerun's seed 2 were found (README.md here; for LaSeR's, --algo laser --halt_at 43):

    git show 74a6a7b:verify.py > /tmp/v/verify_old.py
    python results/tiny/rerun_5912fe1/two_verifiers.py /tmp/v OUT_DIR --config tiny --stage rl --algo grpo \
        --seed 2 --init out/tiny/seed2/sft --halt_at 84

The older verify.py's reward(completion, gold) takes no `finished` (a cut-off response earns 0 either way).
Run from the repository root.
"""
import os
import sys

sys.path[:0] = [os.getcwd(), sys.argv[1]]
import train  # noqa: E402
import verify  # noqa: E402
import verify_old  # noqa: E402

current = verify.reward_with_reason
calls = 0


def both(text: str, gold: str, finished: bool = True):
    global calls
    calls += 1
    now = current(text, gold, finished)
    then = verify_old.reward(text, gold) if finished else 0.0
    if then != now[0]:
        print(f"DIFFERENT at call {calls}: then {then}, now {now}, gold {gold!r}\n---\n{text}\n---", flush=True)
    return now


verify.reward_with_reason = both
train.main(["--out_dir", sys.argv[2], *sys.argv[3:]])
