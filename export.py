"""Export a run to a Hugging Face model directory that transformers loads (LlamaForCausalLM, or
Qwen2ForCausalLM for a model with q/k/v biases) with the same logits.

    python export.py out/llama_run/laser out/llama_run/hf
    python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('out/llama_run/hf')"

Writes model.safetensors (float32), config.json, tokenizer.json and tokenizer_config.json, each atomically,
into a new or empty directory, or over an earlier export alone (another non-empty one only with --force;
never a training run's). Runs of our own small architecture (GELU MLP) have no transformers counterpart: train with
--arch llama, or start from --init_hf, to export.

Reading the self-reward there (docs/laser.md §1, §6): config.json's "laser" entry holds zc_id, c_ref and
beta_v. After a solution, feed the sequence up to and including its EOS token and take the logits at the
EOS position: r_s = beta_v * (log_softmax(logits)[zc_id] - c_ref); about 1 means "judged correct", about
0 "judged incorrect". The prompt format is in "laser"["prompt_template"] (after BOS where there is one).
"""
from __future__ import annotations

import argparse
import math
import sys

from config import ArgParser, UserError
from hf import check_export_dir, export
from runs import load_run


def main(argv=None) -> int:
    p = ArgParser(prog="export.py", description=__doc__.split("\n\n")[0],
                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("run_dir", help="a run directory (or its ckpt.pt) written by train.py")
    p.add_argument("out_dir", help="the Hugging Face model directory to write (new, empty, or holding only an "
                                   "earlier export; else --force)")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty OUT_DIR (a previous export, say), replacing the four files it "
                        "writes and leaving the others; a training run's directory (with a ckpt.pt) or one holding "
                        "other weight files is refused even so")
    args = p.parse_args(argv)
    try:
        check_export_dir(args.out_dir, args.force)  # before the run is read
        model, tok, ck = load_run(args.run_dir)
        c_ref = ck.get("c_ref")
        laser = {"zc_id": tok.zc_id, "c_ref": c_ref if c_ref is not None and math.isfinite(c_ref) else None,
                 "beta_v": ck.get("beta_v", ck["config"]["beta_v"]), "stage": ck["stage"], "step": ck["step"],
                 "prompt_template": tok.template, "bos_before_prompt": tok.prepend_bos,
                 "self_reward": "beta_v * (log_softmax(logits at the EOS position)[zc_id] - c_ref)"}
        kind = export(model, tok, args.out_dir, laser, args.force)
    except UserError as e:
        print(f"export.py: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}: {kind}, {model.num_params() / 1e6:.2f}M parameters, vocab {tok.vocab_size}; "
          f"z_c id {tok.zc_id}, c_ref {laser['c_ref']}, beta_v {laser['beta_v']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
