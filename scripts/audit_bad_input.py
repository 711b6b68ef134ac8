"""Run the bad-input table of tests/test_bad_input.py as subprocesses against a checkout and classify each
case: one-line error with a non-zero exit, traceback, or exit 0 (accepted). Issue 13's before/after counts:

    git worktree add /tmp/old 819cee2 && python scripts/audit_bad_input.py /tmp/old   # before
    python scripts/audit_bad_input.py .                                                # now
"""
import argparse, json, os, subprocess, sys, tempfile
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("repo", metavar="REPO_DIR", help="a checkout of this repository (a worktree of an old commit, or .)")
repo = ap.parse_args().repo
if not os.path.isdir(repo): ap.error(f"{repo} is not a directory")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tests")); sys.path.insert(0, HERE)
import test_bad_input as t
work = tempfile.mkdtemp()
sft = os.path.join(work, "sft")
subprocess.run([sys.executable, "train.py", "--config", "test", "--stage", "sft", "--out_dir", sft], cwd=repo,
               capture_output=True, check=True)
# the same bad files as the test fixture
class F:  # minimal tmp_path_factory
    def mktemp(self, name):
        p = os.path.join(work, name); os.makedirs(p, exist_ok=True)
        import pathlib; return pathlib.Path(p)
d = t.files.__wrapped__(F(), sft)
cases = [("train", ["--config", "test", "--stage", "sft", "--out_dir", os.path.join(work, "r%d" % i)] + flags, frag)
         for i, (flags, frag) in enumerate(t.FLAG_CASES)]
cases += [("train", ["--config", "test"] + a.format(d=d, sft=sft).split(), frag) for a, frag in t.FILE_CASES]
cases += [("evaluate", a.format(d=d, sft=sft).split() + ["--out", os.path.join(work, "ev")], frag)
          for a, frag in t.EVAL_CASES]
counts = {"one-line error": 0, "traceback": 0, "accepted (exit 0)": 0, "other non-zero": 0}
rows = []
for prog, argv, frag in cases:
    r = subprocess.run([sys.executable, prog + ".py"] + argv, cwd=repo, capture_output=True, text=True, timeout=600)
    err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    if r.returncode == 0:
        kind = "accepted (exit 0)"
    elif "Traceback" in r.stderr:
        kind = "traceback"
    elif len(err) == 1 and "error" in err[0]:
        kind = "one-line error"
    else:
        kind = "other non-zero"
    counts[kind] += 1
    rows.append((kind, prog, " ".join(argv).replace(work, "W")[:110], (err[-1] if err else "")[:100]))
for row in rows:
    print(" | ".join(row))
print(json.dumps(counts), "of", len(cases))
