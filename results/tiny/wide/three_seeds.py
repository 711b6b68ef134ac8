"""The wide model over three seeds: seeds 0 and 1 from summary.json / diagnostics.json (evaluate.py --aggregate and
study.py diagnose over their eval directories, whose checkpoints are gone), seed 2 from seed2/ (evaluate.py and study.py
diagnose). Mean ± sample std per column. Run from the repository root: python results/tiny/wide/three_seeds.py"""
import json, statistics as st
old = json.load(open("results/tiny/wide/summary.json"))["runs"]  # seeds 0 and 1 (evaluate.py --aggregate)
new = json.load(open("results/tiny/wide/seed2/eval.json"))       # seed 2 (evaluate.py)
dold = json.load(open("results/tiny/wide/diagnostics.json"))["per_seed"]
dnew = json.load(open("results/tiny/wide/seed2/diagnostics.json"))["per_seed"]
cols = ["accuracy_avg", "maj_at_n", "weighted_at_n", "best_of_n", "sv_f1", "sv_auroc", "sv_auroc_within"]
print("| wide 3.4M (3 seeds) | " + " | ".join(cols) + " | answer-frequency within AUROC | mean-log-prob within AUROC |")
for run in ("sft", "laser"):
    cells = []
    for k in cols:
        v = new[run][k]
        vals = old[run][k]["values"] + [v.get("16") if isinstance(v, dict) else v]
        cells.append(f"{st.mean(vals):.3f} ± {st.stdev(vals):.3f}")
    for k in ("freq", "logp"):
        vals = [d[run]["within_auroc"][k] for d in dold + dnew]
        cells.append(f"{st.mean(vals):.3f} ± {st.stdev(vals):.3f}")
    print(f"| {run} | " + " | ".join(cells) + " |")
