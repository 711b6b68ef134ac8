"""Try a trained model: sample solutions to a problem, each with its self-reward r_s, and the
r_s-weighted vote over their answers (docs/laser.md §1, §6).

    python sample.py out/run/laser --prompt "Compute 17 + 25." -n 8
    python sample.py out/run/laser --prompt "Solve for x: 3*x + 4 = 19" -n 16 --gold 5

r_s = beta_v * (log p(z_c | solution, EOS) - c_ref) with the run's beta_v and c_ref (an SFT run, which
has no c_ref, is its own reference policy: c_ref is measured on it first). About 1 means the model judges
its solution correct, about 0 incorrect. The vote sums clip(r_s, 0, 1) per answer (eq. 15: equivalent
answers count as one); majority voting is shown beside it.
"""
from __future__ import annotations

import argparse
import math
import sys

import torch

import verify
from config import ArgParser, UserError, autocast, get_device
from loss import self_reward_score
from metrics import group_answers, vote_weights
from rollout import run_c_ref, sample
from runs import load_run, run_config


def main(argv=None) -> int:
    p = ArgParser(prog="sample.py", description=__doc__.split("\n\n")[0],
                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", help="a run directory written by train.py")
    p.add_argument("--prompt", required=True, help="the problem text")
    p.add_argument("-n", type=int, default=8, help="samples (default 8)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (0: greedy; default 1)")
    p.add_argument("--max_new_tokens", type=int, default=0, help="response length limit (0: the run's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--gold", default=None, help="the right answer, if known: marks each sample right or wrong")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = p.parse_args(argv)
    try:
        if args.n < 1 or not (math.isfinite(args.temperature) and args.temperature >= 0) or args.max_new_tokens < 0:
            raise UserError("-n must be >= 1, --temperature finite and >= 0, --max_new_tokens >= 0")
        if not args.prompt.strip():
            raise UserError("--prompt is empty")
        device = get_device(args.device)
        model, tok, ck = load_run(args.run_dir, device)
        cfg = run_config(ck)
        c_ref, beta_v = run_c_ref(model, tok, cfg, ck, args.run_dir)
        prompt = tok.encode_prompt(args.prompt)
        max_new = min(args.max_new_tokens or cfg.max_new_tokens, model.cfg.block_size - len(prompt) - 1)
        if max_new < 1:
            raise UserError(f"the prompt has {len(prompt)} tokens: no room left in block_size {model.cfg.block_size}")
        g = torch.Generator(device=device).manual_seed(args.seed)
        with torch.no_grad(), autocast(device):
            ro = sample(model, [prompt], args.n, max_new, temperature=args.temperature, generator=g, tokenizer=tok)
    except UserError as e:
        print(f"sample.py: error: {e}", file=sys.stderr)
        return 2
    r_s = self_reward_score(ro.logp_zc, c_ref, beta_v).tolist()
    finished = ro.finished.tolist()
    answers = [verify.response_answer(t, f) for t, f in zip(ro.texts, finished)]  # cut off: no answer
    for i, text in enumerate(ro.texts):
        mark = "" if args.gold is None else ("  right" if verify.reward(text, args.gold, finished[i]) else "  wrong")
        end = "" if finished[i] else "  (no EOS: cut at the length limit, so no answer and r_s not read)"
        print(f"--- sample {i + 1}: r_s {r_s[i]:+.3f}  answer {answers[i]!r}{mark}{end}\n{text.strip()}")
    weights = vote_weights(r_s, finished).tolist()
    if not any(w > 0 for a, w in zip(answers, weights) if a is not None):  # as metrics.vote does
        print("(no answered sample has r_s > 0: the weighted vote falls back to the majority)")
        weights = [1.0] * len(answers)
    for name, w in (("r_s-weighted vote", weights), ("majority vote", [1.0] * len(answers))):
        groups = sorted(group_answers(answers, w, verify.is_equivalent), key=lambda g: -g[1])
        if groups:
            table = ", ".join(f"{rep!r}: {total:.2f}" for rep, total, _ in groups[:5])
            print(f"{name}: {groups[0][0]!r}   ({table})")
        else:
            print(f"{name}: no sample gave an answer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
