"""The shapes of a preset's packed SFT steps (--sft_pack) as a CUDA run builds them (lengths rounded up to
config.CUDA_LENGTH_MULTIPLE), with the packed rows made a multiple of 1, 4 and 8 (--sft_graphs makes them a
multiple of train.GRAPH_ROW_MULTIPLE: one CUDA graph per shape): how many shapes a run meets, and the share
of its token slots that hold real tokens. Host work only (tokenizer and batches), no model.

    python scripts/sft_shapes.py --config small --steps 300
"""
import collections
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import config  # noqa: E402
import train  # noqa: E402
from tokenizer import build_tokenizer  # noqa: E402


def main(argv=None) -> int:
    ap = config.ArgParser(prog="sft_shapes.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="small", choices=list(config.PRESETS), help="preset (default small)")
    ap.add_argument("--steps", type=int, default=300, help="SFT steps from the first (default 300)")
    args = ap.parse_args(argv)
    if args.steps < 1:
        ap.error(f"--steps must be >= 1, got {args.steps}")
    cfg = dataclasses.replace(config.Config(), **config.PRESETS[args.config])
    tok = build_tokenizer(config.corpus_for_tokenizer(cfg, []), cfg.bpe_merges)
    for multiple in (1, 4, 8):
        shapes, slots, real = collections.Counter(), 0, 0
        for step in range(args.steps):
            problems = config.train_problems(cfg, step, cfg.sft_batch_size, cfg.seed)
            batches, n_real = train.sft_step_batches(tok, problems, cfg.sft_micro_batch, cfg.micro_tokens,
                                                     config.CUDA_LENGTH_MULTIPLE, cfg.block_size, True, multiple)
            shapes.update(tuple(b[0].shape) for b in batches)
            slots += sum(b[0].numel() for b in batches)
            real += n_real
        listed = ", ".join(f"{r}x{t}: {n}" for (r, t), n in sorted(shapes.items()))
        print(f"rows a multiple of {multiple}: {len(shapes)} shapes ({listed}); real tokens {real / slots:.3f} "
              f"of the {slots:,} slots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
