"""Check that two runs of demo_tiny.sh produced the same numbers (a refactor must not change any):

    python scripts/same_numbers.py RESULTS_A/seed0 RESULTS_B/seed0

Compares eval.json, paired.json and records.json exactly, and every value of every line of
{sft,grpo,laser}_metrics.jsonl except wall-clock timings. Prints one line per file; exits 1 on any
difference.
"""
import argparse
import json
import os
import sys

TIMING = {"time_rollout", "time_verify", "time_update", "tokens_per_s"}


def load(path: str):
    with open(path, encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            return [{k: v for k, v in json.loads(ln).items() if k not in TIMING} for ln in f if ln.strip()]
        return json.load(f)


def main(a: str, b: str) -> int:
    names = ["eval.json", "paired.json", "records.json"] + [f"{r}_metrics.jsonl" for r in ("sft", "grpo", "laser")]
    bad = 0
    for name in names:
        pa, pb = os.path.join(a, name), os.path.join(b, name)
        if not (os.path.exists(pa) and os.path.exists(pb)):
            print(f"{name}: missing in {a if not os.path.exists(pa) else b}")
            bad += 1
            continue
        same = load(pa) == load(pb)
        bad += not same
        print(f"{name}: {'identical' if same else 'DIFFERENT'}")
    return 1 if bad else 0


class ArgParser(argparse.ArgumentParser):
    """One line on stderr and exit code 2 for a bad command line (config.ArgParser's rule, without importing
    torch for a JSON comparison)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


if __name__ == "__main__":
    ap = ArgParser(prog="same_numbers.py", description=__doc__.split("\n\n")[0],
                   epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", metavar="RESULTS_A/seedS", help="one run's results directory")
    ap.add_argument("b", metavar="RESULTS_B/seedS", help="the other's")
    args = ap.parse_args()
    sys.exit(main(args.a, args.b))
