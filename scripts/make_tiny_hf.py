"""Write a tiny random Llama or Qwen2 model directory (config.json, model.safetensors, tokenizer.json)
with transformers and tokenizers, to try --init_hf, export.py and sample.py where no real checkpoint is
at hand (nothing is downloaded: the byte-level BPE tokenizer is trained here on generated problems).

    python scripts/make_tiny_hf.py out/tiny_qwen2 --kind qwen2
    python train.py --config test --init_hf out/tiny_qwen2 --out_dir out/from_hf

Needs the test requirements (pip install -r requirements-dev.txt). tests/test_hf.py builds its models
with this script's `save_tiny`.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tasks  # noqa: E402
from config import ArgParser, UserError, check_dir_path  # noqa: E402

# Llama 3's pre-tokenizer regex
PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
       r"|\s+(?!\S)|\s+")


def corpus(n_batches: int = 10) -> list[str]:
    return [p.problem + "\n" + (p.solution or "") for s in range(n_batches) for p in tasks.train_batch(s, 50, "hf")]


def train_tokenizer(kind: str, vocab_size: int = 400):
    """A byte-level BPE tokenizer in the style of Llama 3 (BOS added, a reserved special token) or Qwen2
    (NFC, no BOS)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PAT), "isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    if kind == "qwen2":
        tk.normalizer = normalizers.NFC()
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>"]
    tk.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                         show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if kind == "llama":  # Llama 3 puts <|begin_of_text|> before every text
        tk.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", special_tokens=[
            ("<|begin_of_text|>", tk.token_to_id("<|begin_of_text|>"))])
    return tk


def save_tiny(path: str, kind: str = "llama", pad_vocab: int = 0, tie: bool = False, seed: int = 0) -> str:
    """Llama: 2 layers, 4 heads, 2 key/value heads, RoPE theta 50000. Qwen2: 1 key/value head, q/k/v
    biases. `pad_vocab` extra embedding rows the tokenizer never uses (as real vocabularies have).
    Norm gains and biases are random (not 1 and 0), so that a loader that drops one shows it."""
    import transformers

    tk = train_tokenizer(kind)
    torch.manual_seed(seed)
    common = dict(vocab_size=tk.get_vocab_size() + pad_vocab, hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, tie_word_embeddings=tie)
    if kind == "llama":
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(
            num_key_value_heads=2, rope_theta=50000.0, bos_token_id=tk.token_to_id("<|begin_of_text|>"),
            eos_token_id=tk.token_to_id("<|end_of_text|>"), **common))
    else:
        m = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
            num_key_value_heads=1, eos_token_id=tk.token_to_id("<|endoftext|>"), **common))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name or "bias" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if "norm" in name else 0.0))
    m.save_pretrained(path)
    tk.save(os.path.join(path, "tokenizer.json"))
    return path


def check_out_dir(out_dir: str) -> None:
    """The directory to write: a new one or a directory (not a file, nor a training run's directory)."""
    check_dir_path(out_dir, "OUT_DIR")
    if os.path.exists(os.path.join(out_dir, "ckpt.pt")):
        raise UserError(f"{out_dir} is a training run's directory (it holds ckpt.pt): write the model elsewhere")


def main(argv=None) -> int:
    p = ArgParser(prog="make_tiny_hf.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", help="the model directory to write (its config.json, model.safetensors and "
                                   "tokenizer.json are replaced)")
    p.add_argument("--kind", choices=("llama", "qwen2"), default="qwen2")
    p.add_argument("--pad_vocab", type=int, default=8, help="unused embedding rows (default 8)")
    p.add_argument("--tie", action="store_true", help="tie the output head to the input embedding")
    args = p.parse_args(argv)
    try:
        check_out_dir(args.out_dir)
    except UserError as e:
        print(f"make_tiny_hf.py: error: {e}", file=sys.stderr)
        return 2
    if args.pad_vocab < 0:
        print(f"make_tiny_hf.py: error: --pad_vocab must be >= 0, got {args.pad_vocab}", file=sys.stderr)
        return 2
    if not all(importlib.util.find_spec(m) for m in ("tokenizers", "transformers")):
        print("make_tiny_hf.py: error: needs transformers and tokenizers (pip install -r requirements-dev.txt)",
              file=sys.stderr)
        return 2
    save_tiny(args.out_dir, args.kind, args.pad_vocab, args.tie)
    print(f"wrote {args.out_dir}: a random {args.kind} model ({', '.join(sorted(os.listdir(args.out_dir)))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
