"""A tiktoken tokenizer built here, from our own merge ranks (no downloads).

tiktoken normally downloads its encodings; this module instead learns byte-level BPE merges from the
task corpus and hands the ranks to `tiktoken.Encoding`, which then does the fast encoding/decoding.

Design:
  * Byte-level base: ranks 0..255 are the 256 single bytes, so any text round-trips.
  * Every digit is its own token: the pre-tokenizer splits each digit into a piece of its own, and BPE
    never merges across pieces. Numbers are therefore read and written one digit at a time, which is
    what column arithmetic wants.
  * LaTeX commands (`\\frac`, `\\boxed`) form their own pieces so that they can become single tokens.
  * Merges are learned greedily (most frequent adjacent pair), ties broken by the pair's bytes, so the
    same corpus always gives the same tokenizer.
  * Four special tokens after the merges: <|bos|>, <|eos|>, <|pad|> and the self-reward token z_c
    (<|zc|>, docs/laser.md §1). `encode` treats text that spells a special token as ordinary text, so
    no model output or user text can ever produce z_c (or EOS) through the tokenizer.

The tokenizer is saved as `tokenizer.json` in every run directory and reloaded from there.
"""
from __future__ import annotations

import base64
import json
import unicodedata
from collections import Counter

import regex  # a dependency of tiktoken; supports \p{..} classes
import tiktoken

# Pieces: contractions, letter runs (with one leading space), single digits, LaTeX commands,
# whitespace, punctuation runs. A digit is always a piece on its own.
PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+|\p{N}| ?\\[a-zA-Z]+|\s+(?!\S)|\s+| ?[^\s\p{L}\p{N}\\]+|\\"""
)
BOS, EOS, PAD, ZC = "<|bos|>", "<|eos|>", "<|pad|>", "<|zc|>"
SPECIALS = (BOS, EOS, PAD, ZC)


class Tokenizer:
    """Thin wrapper over a `tiktoken.Encoding` that knows our special-token ids.

    `Tokenizer(merges)` is ours (ranks 0..255 are the bytes, then the merges, then SPECIALS);
    `Tokenizer.from_ranks(...)` holds a pretrained model's byte-level BPE (hf.py builds it), with its
    own special tokens, prompt template and ids that are never sampled."""

    def __init__(self, merges: list[bytes], pat_str: str = PAT_STR):
        ranks = {bytes([i]): i for i in range(256)}
        for m in merges:
            if m in ranks:
                raise ValueError(f"duplicate merge {m!r} in tokenizer ranks")
            ranks[m] = len(ranks)
        self.merges = list(merges)
        n = len(ranks)
        specials = {s: n + i for i, s in enumerate(SPECIALS)}
        self._setup(ranks, pat_str, specials, f"laser_bpe_{len(merges)}", n + len(SPECIALS))
        self.bos_id, self.eos_id, self.pad_id, self.zc_id = (specials[s] for s in SPECIALS)
        self.template, self.normalize_nfc, self.never_sampled, self.source = "{problem}\n", False, (), None

    def _setup(self, ranks: dict[bytes, int], pat_str: str, specials: dict[str, int], name: str, vocab_size: int):
        self.ranks, self.pat_str, self.specials, self.vocab_size = ranks, pat_str, specials, vocab_size
        dense = len(ranks) + len(specials) == vocab_size
        self.enc = tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=specials,
                                     explicit_n_vocab=vocab_size if dense else None)

    @classmethod
    def from_ranks(cls, ranks: dict[bytes, int], pat_str: str, specials: dict[str, int], *, bos_id: int | None,
                   eos_id: int, pad_id: int, zc_id: int, vocab_size: int, template: str,
                   normalize_nfc: bool = False, never_sampled=(), source: str | None = None) -> "Tokenizer":
        """A pretrained tokenizer: ids are ranks (so merges apply in the model's order); bos_id None
        means no BOS before a prompt; `never_sampled` adds ids the sampler must never choose."""
        tok = cls.__new__(cls)
        tok.merges = None
        tok._setup(ranks, pat_str, specials, "pretrained", vocab_size)
        tok.bos_id, tok.eos_id, tok.pad_id, tok.zc_id = bos_id, eos_id, pad_id, zc_id
        tok.template, tok.normalize_nfc = template, normalize_nfc
        tok.never_sampled, tok.source = tuple(never_sampled), source
        return tok

    @property
    def prepend_bos(self) -> bool:
        return self.bos_id is not None

    def encode(self, text: str) -> list[int]:
        """Ordinary text -> ids. Special-token spellings in `text` are encoded as plain bytes."""
        if self.normalize_nfc:
            text = unicodedata.normalize("NFC", text)
        return self.enc.encode(text, allowed_special=set(), disallowed_special=())

    def decode(self, ids) -> str:
        return self.enc.decode([int(i) for i in ids])

    def encode_prompt(self, problem: str) -> list[int]:
        """The model's input for a problem: BOS (where the tokenizer has one), the problem in the prompt
        template (ours: the problem and a newline). The solution follows."""
        return [self.bos_id] * self.prepend_bos + self.encode(self.template.format(problem=problem))

    def to_json(self) -> str:
        """The tokenizer as the JSON text `load_tokenizer` reads (runs write it atomically)."""
        if self.merges is not None:
            return json.dumps({"pat_str": self.pat_str, "specials": list(SPECIALS),
                               "merges": [base64.b64encode(m).decode("ascii") for m in self.merges]})
        return json.dumps({"kind": "pretrained", "pat_str": self.pat_str, "specials": self.specials,
                           "ranks": [[base64.b64encode(b).decode("ascii"), i] for b, i in self.ranks.items()],
                           "bos_id": self.bos_id, "eos_id": self.eos_id, "pad_id": self.pad_id,
                           "zc_id": self.zc_id, "vocab_size": self.vocab_size, "template": self.template,
                           "normalize_nfc": self.normalize_nfc, "never_sampled": list(self.never_sampled),
                           "source": self.source})

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(self.to_json())


def load_tokenizer(path: str) -> Tokenizer:
    with open(path) as f:
        data = json.load(f)
    if data.get("kind") == "pretrained":
        return Tokenizer.from_ranks({base64.b64decode(b): i for b, i in data["ranks"]}, data["pat_str"],
                                    data["specials"], bos_id=data["bos_id"], eos_id=data["eos_id"],
                                    pad_id=data["pad_id"], zc_id=data["zc_id"], vocab_size=data["vocab_size"],
                                    template=data["template"], normalize_nfc=data["normalize_nfc"],
                                    never_sampled=data["never_sampled"], source=data.get("source"))
    if tuple(data.get("specials", ())) != SPECIALS:
        raise ValueError(f"{path}: special tokens {data.get('specials')} differ from {SPECIALS}")
    return Tokenizer([base64.b64decode(m) for m in data["merges"]], data["pat_str"])


def train_bpe(texts: list[str], n_merges: int, pat_str: str = PAT_STR) -> list[bytes]:
    """Learn `n_merges` byte-level BPE merges from `texts`, deterministically.

    Each text is split into pieces with `pat_str`; pieces are counted, and the most frequent adjacent
    pair of tokens (weighted by piece counts) is merged, ties broken by the smaller (left, right) bytes.
    Stops early when no pair occurs twice.
    """
    pat = regex.compile(pat_str)
    pieces = Counter(p.encode("utf-8") for t in texts for p in pat.findall(t))
    words = {tuple(bytes([b]) for b in w): c for w, c in pieces.items()}
    merges: list[bytes] = []
    seen = {bytes([i]) for i in range(256)}
    while len(merges) < n_merges:
        pairs: Counter = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        # candidates in deterministic order: highest count first, then smallest bytes
        best = None
        for pair, c in pairs.items():
            if c < 2 or pair[0] + pair[1] in seen:
                continue
            if best is None or (-c, pair) < (-best[1], best[0]):
                best = (pair, c)
        if best is None:
            break
        (a, b), _ = best
        merged = a + b
        merges.append(merged)
        seen.add(merged)
        new_words = {}
        for w, c in words.items():
            if len(w) < 2:
                new_words[w] = new_words.get(w, 0) + c
                continue
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            t = tuple(out)
            new_words[t] = new_words.get(t, 0) + c
        words = new_words
    return merges


def build_tokenizer(texts: list[str], n_merges: int = 256) -> Tokenizer:
    """Learn merges from `texts` and build the tiktoken-backed tokenizer."""
    return Tokenizer(train_bpe(texts, n_merges))
