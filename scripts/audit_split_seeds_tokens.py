"""Measure issue 10's four defects on a checkout: python scripts/audit_split_seeds_tokens.py REPO_DIR (a worktree of 819cee2 to see them, . to see them fixed)."""
import argparse, random, re, sys, os
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("repo", metavar="REPO_DIR", help="a checkout of this repository (a worktree of an old commit, or .)")
repo = ap.parse_args().repo
if not os.path.isdir(repo): ap.error(f"{repo} is not a directory")
sys.path.insert(0, repo); os.chdir(repo)
import torch, tasks, train, rollout
from rollout import sample
new = hasattr(tasks, "canonical_key")
step_generator = getattr(rollout, "step_generator", None) or train.step_generator  # moved to rollout.py
# 1. step seeds
if new:
    draws = [tuple(torch.rand(3, generator=step_generator("rl", 0, s, "cpu")).tolist()) for s in range(400)]
else:
    draws = [tuple(torch.rand(3, generator=step_generator("rl-0", s, "cpu")).tolist()) for s in range(400)]
print("1. distinct first draws over 400 RL steps of seed 0:", len(set(draws)))
# 2. z_c sampled when the head raises it
from tokenizer import build_tokenizer
from model import GPT, GPTConfig
tok = build_tokenizer([p.problem + "\n" + p.solution for s in range(4) for p in tasks.train_batch(s, 50, seed=0)], 64)
torch.manual_seed(0)
m = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=160, n_layer=2, n_head=2, n_embd=32)).eval()
boost = torch.zeros(tok.vocab_size); boost[tok.zc_id] = 6.0
m.lm_head.register_forward_hook(lambda _m, _i, out: out + boost)
prompts = [tok.encode_prompt(p.problem) for p in tasks.train_batch(0, 16, seed=0)]
ro = sample(m, prompts, 8, 32, temperature=1.0, generator=torch.Generator().manual_seed(0), tokenizer=tok)
print("2. rollouts (of 128) containing z_c when its logit is raised by 6:", int((ro.response == tok.zc_id).any(1).sum()))
# 3. twins in the tiny test set
sig = lambda p: (tuple(sorted(int(n) for n in re.findall(r"[0-9]+", p.problem))), p.answer.replace(" ", ""))
test = tasks.make_split("test", 150, 0, tasks.FAMILIES, (1, 2))
train_sigs = set()
for fam in tasks.FAMILIES:
    rng = random.Random(fam)
    train_sigs |= {sig(tasks.sample_problem(rng, "train", [fam], (1, 2))) for _ in range(10_000)}
twins = {}
for p in test:
    twins.setdefault(p.family, [0, 0]); twins[p.family][1] += 1
    twins[p.family][0] += sig(p) in train_sigs
print("3. tiny test problems with a training twin (same numbers and answer), per family:", twins,
      "total", sum(a for a, _ in twins.values()))
# 4. validation split
print("4. validation split exists:", "validation" in getattr(tasks, "SPLITS", ()))
