"""Check that two runs of demo_tiny.sh produced the same numbers (a refactor must not change any):

    python scripts/same_numbers.py RESULTS_A/seed0 RESULTS_B/seed0

Compares eval.json, paired.json and records.json exactly, and every value of every line of
{sft,grpo,laser}_metrics.jsonl except wall-clock timings. Prints one line per file: "identical", or what
differs (how many values, the largest numeric difference and where, the first difference, fields that only
one side has, e.g. one a later version of the code writes); exits 1 on any difference.
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
        found = Differences()
        found.walk(load(pa), load(pb), "")
        bad += not found.none()
        print(f"{name}: {found}")
    return 1 if bad else 0


class Differences:
    """Where two loaded JSON values differ: the values (path, a, b) and, by name, the fields one side lacks.
    A path reads like `laser[3]/samples[0]/answer` (a metrics file's lines are its list)."""

    def __init__(self):
        self.values, self.only = [], {"A": {}, "B": {}}

    def walk(self, a, b, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for side, here, there in (("A", a, b), ("B", b, a)):
                for k in here.keys() - there.keys():
                    self.only[side][k] = self.only[side].get(k, 0) + 1
            for k in (k for k in a if k in b):  # (in A's order: "the first" is the first in A's file)
                self.walk(a[k], b[k], f"{path}/{k}" if path else str(k))
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b):  # (then the items both have, compared in order)
                self.values.append((f"{path or 'the whole'} (its length)", len(a), len(b)))
            for i, (x, y) in enumerate(zip(a, b)):
                self.walk(x, y, f"{path}[{i}]")
        elif a != b and not (a != a and b != b):  # (NaN equals NaN here: json writes both as NaN)
            self.values.append((path, a, b))

    def none(self) -> bool:
        return not self.values and not self.only["A"] and not self.only["B"]

    def __str__(self) -> str:
        if self.none():
            return "identical"
        parts = []
        if self.values:
            path, a, b = self.values[0]
            n = len(self.values)
            said = f"{n} value{'s differ' if n > 1 else ' differs'} (the first: {path or 'the whole'}, " \
                   f"{_short(a)} vs {_short(b)}"
            numeric = [(abs(x - y), p) for p, x, y in self.values if _number(x) and _number(y) and x - y == x - y]
            if numeric:
                gap, where = max(numeric)
                said += f"; the largest numeric difference {gap:.3g}, at {where}"
            parts.append(said + ")")
        else:
            parts.append("every value both have is the same")
        for side in "AB":
            if self.only[side]:
                fields = ", ".join(f"'{k}' ({n})" for k, n in sorted(self.only[side].items()))
                parts.append(f"only in {side}: {fields}")
        return "DIFFERENT: " + "; ".join(parts)


def _number(x) -> bool:  # (a NaN on one side has no numeric difference: __str__ leaves it out of the largest)
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _short(x) -> str:
    text = json.dumps(x)
    return text if len(text) <= 40 else text[:37] + "..."


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
