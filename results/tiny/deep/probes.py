"""The deep model's EOS-state probes over three seeds: mean ± sample std of each column of probe_seed{0,1,2}/probe.json
(python study.py probe out/deep/seedS/sft out/deep/seedS/laser --n_fit 1000 --out results/tiny/deep/probe_seedS).
Run from the repository root: python results/tiny/deep/probes.py > results/tiny/deep/probes.md"""
import json
import statistics as st

rows = [r for s in range(3) for r in json.load(open(f"results/tiny/deep/probe_seed{s}/probe.json"))]
cols = ["within_auroc.r_s", "within_auroc.probe", "within_auroc.probe_within", "auroc.r_s", "auroc.probe",
        "fit_within_auroc.probe_within"] + [f"within_auroc.probe_within.block{b}" for b in range(1, 9)]
print("| EOS state of (3 seeds) | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for run in ("sft", "laser"):
    vals = [[r[c] for r in rows if r["run"].endswith("/" + run)] for c in cols]
    print(f"| {run} | " + " | ".join(f"{st.mean(v):.3f} ± {st.stdev(v):.3f}" for v in vals) + " |")
