"""Print the parity figures of hf.py and export.py against transformers and tokenizers (what
tests/test_hf.py asserts, as numbers): tiny random Llama and Qwen2 models (scripts/make_tiny_hf.py) loaded
with --init_hf; runs of the test preset (--arch llama, and --init_hf Qwen2) exported and loaded back.

    python scripts/hf_parity.py        # needs the test requirements (pip install -r requirements-dev.txt)
"""
import argparse
import contextlib
import io
import os
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "scripts")]
import hf  # noqa: E402
import make_tiny_hf  # noqa: E402
import runs  # noqa: E402
import tasks  # noqa: E402
import train  # noqa: E402
from config import ArgParser  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402


def logits(model_dir, ids):
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return ref(ids).logits


def main(argv=None):
    ArgParser(prog="hf_parity.py", description=__doc__.split("\n\n")[0],
              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]).parse_args(argv)
    d = tempfile.mkdtemp()
    texts = [p.problem + "\n" + (p.solution or "") for s in range(40) for p in tasks.train_batch(s, 50, "hf")]
    for kind, pad, tie in (("llama", 0, False), ("qwen2", 8, True)):
        path = make_tiny_hf.save_tiny(os.path.join(d, kind), kind, pad, tie)
        with contextlib.redirect_stdout(io.StringIO()):
            model, tok = hf.load_pretrained(path, 256, "cpu")
        ht = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        wrong = sum(tok.encode(t) != ht.encode(t, add_special_tokens=False).ids for t in texts)
        ids = torch.tensor([tok.encode_prompt(p.problem) for p in tasks.train_batch(3, 1, 0)])
        with torch.no_grad():
            ours = model(ids)
        theirs = logits(path, ids)
        print(f"--init_hf {kind}: max |logit difference| {(ours[..., :theirs.shape[-1]] - theirs).abs().max():.3g} "
              f"(logits up to {theirs.abs().max():.3g}); token ids differing from tokenizers on {wrong} of {len(texts)} strings")
    for name, flags in (("--arch llama", ["--arch", "llama"]), ("--init_hf qwen2", ["--init_hf", os.path.join(d, "qwen2")])):
        run = os.path.join(d, name.strip("-").replace(" ", "_"))
        with contextlib.redirect_stdout(io.StringIO()):
            train.main(["--config", "test", "--out_dir", run, "--sft_steps", "8", *flags])
            model, tok, _ = runs.load_run(os.path.join(run, "laser"))
            hf.export(model, tok, run + "_hf", {})
        p = tasks.train_batch(5, 1, 0)[0]
        ids = torch.tensor([tok.encode_prompt(p.problem) + tok.encode(p.solution) + [tok.eos_id]])
        with torch.no_grad():
            ours = model(ids)
        theirs = logits(run + "_hf", ids)
        zc = (torch.log_softmax(ours[0, -1], -1) - torch.log_softmax(theirs[0, -1], -1))[tok.zc_id].abs()
        print(f"export of a {name} run: max |logit difference| {(ours - theirs).abs().max():.3g}, "
              f"|log p(z_c) at EOS difference| {zc:.3g}")


if __name__ == "__main__":
    main()
