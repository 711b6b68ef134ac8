"""Pretrained Llama-family checkpoints in and out: a Hugging Face model directory a user has on disk
(config.json, *.safetensors, tokenizer.json) becomes our GPT and our tiktoken tokenizer, and a run
becomes such a directory again (export.py). Nothing is downloaded, and transformers is not needed.

  * Weights: safetensors files are read and written here (an 8-byte header length, a JSON header, raw
    little-endian tensors), one file or a sharded set with its index. Llama and Qwen2 names map onto
    model.py's: q/k/v projections are concatenated into `qkv`, gate/up into `fc`.
  * Tokenizer: a byte-level BPE tokenizer.json (Llama 3, Qwen2, GPT-2 style) becomes tiktoken ranks:
    each vocabulary string is turned back into its bytes through the GPT-2 byte-to-character table and
    keeps its id as its rank, so merges apply in the same order. Added tokens become special tokens,
    which our `encode` never produces from text. SentencePiece-style tokenizers (byte fallback) are
    refused with a message.
  * z_c (docs/laser.md §1) must be a token no text can produce: an id the embedding has but the
    tokenizer never uses (vocabularies padded to a round size), else a reserved special token, else a
    new row appended to the embedding and the head (initialized to the mean row).
  * Base models get a plain prompt template: "Problem: ...\\nSolution:\\n" after BOS where the tokenizer
    adds one.
"""
from __future__ import annotations

import json
import os
import struct

import torch

from config import UserError, check_dir_path, first_line
from model import GPT, GPTConfig
from runs import atomic_write, make_run_dir, write_json, write_text
from tokenizer import Tokenizer

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}
BASE_TEMPLATE = "Problem: {problem}\nSolution:\n"
# the GPT-2 pre-tokenizer pattern (ByteLevel with use_regex=true)
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


# ---------------------------------------------------------------------------- safetensors

def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    """The tensors of one safetensors file, read one at a time (no second copy of the whole file)."""
    out = {}
    try:
        f = open(path, "rb")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        try:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:  # a corrupt length: read no further (it may be beyond any memory)
                raise ValueError(f"header length {n} but the file has {size} bytes")
            header = json.loads(f.read(n))
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (struct.error, ValueError) as e:  # JSON and UTF-8 errors are ValueErrors
            raise UserError(f"{path}: not a safetensors file ({e})") from None
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = DTYPES.get(info["dtype"])
                if dtype is None:
                    raise UserError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
                a, b = (int(x) for x in info["data_offsets"])
                shape = [int(x) for x in info["shape"]]
            except (KeyError, TypeError, ValueError) as e:
                raise UserError(f"{path}: tensor {name} has a malformed header entry ({type(e).__name__}: {e})") from None
            if not 0 <= a <= b or 8 + n + b > size:
                raise UserError(f"{path}: tensor {name} lies beyond the end of the file ({size} bytes): "
                                f"the file is truncated or corrupt")
            f.seek(8 + n + a)
            buf = bytearray(f.read(b - a))
            try:
                t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
                out[name] = t.reshape(shape)
            except (RuntimeError, ValueError) as e:
                raise UserError(f"{path}: tensor {name}'s {b - a} bytes are not a {info['dtype']} tensor of "
                                f"shape {shape} ({first_line(e, 120)})") from None
    return out


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    names = {v: k for k, v in DTYPES.items()}
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(blob)) + blob)
            for raw in chunks:
                f.write(raw)

    atomic_write(path, write)


def read_weights(hf_dir: str) -> dict[str, torch.Tensor]:
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise UserError(f"{index}: no weight_map of tensor names to files")
        files = sorted(set(weight_map.values()))
    else:
        files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
    if not files:
        raise UserError(f"{hf_dir}: no *.safetensors weights (pytorch_model.bin is not read: convert it first)")
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(hf_dir, name)))
    return weights


# ---------------------------------------------------------------------------- architecture and weights

REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


def model_config(hf: dict, block_size: int, where: str = "config.json") -> GPTConfig:
    """Our GPTConfig for a Hugging Face config.json (model_type llama or qwen2); `where` names it in errors."""
    kind = hf.get("model_type")
    if kind not in ("llama", "qwen2"):
        raise UserError(f"model_type {kind!r} is not supported (llama and qwen2 are)")
    if hf.get("hidden_act", "silu") != "silu" or hf.get("mlp_bias") or hf.get("attention_bias") and kind == "llama":
        raise UserError("only the standard Llama layer is supported (SiLU MLP, no MLP or attention biases)")
    rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UserError(f"RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not supported (only plain RoPE)")
    if kind == "qwen2" and hf.get("use_sliding_window"):
        raise UserError("Qwen2 sliding-window attention is not supported")
    for key in REQUIRED + ("num_key_value_heads", "head_dim"):
        v = hf.get(key)
        if key in REQUIRED and v is None:
            raise UserError(f"{where}: no {key!r} (a {kind} config needs {', '.join(REQUIRED)})")
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise UserError(f"{where}: {key} should be a positive integer, got {v!r}")
    n_head = hf["num_attention_heads"]
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=block_size,
                     n_layer=hf["num_hidden_layers"], n_head=n_head, n_embd=hf["hidden_size"],
                     rope_base=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
                     norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                     n_kv_head=hf.get("num_key_value_heads") or n_head,
                     head_dim=hf.get("head_dim") or hf["hidden_size"] // n_head,
                     mlp="swiglu", mlp_hidden=hf["intermediate_size"], norm_weight=True,
                     qkv_bias=kind == "qwen2", tie_embeddings=bool(hf.get("tie_word_embeddings", False)))


def ours_from_hf(w: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Hugging Face Llama/Qwen2 tensor names -> model.py's state dict."""
    def take(name):
        if name not in w:
            raise UserError(f"the checkpoint has no tensor {name}")
        return w[name].float()

    sd = {"wte.weight": take("model.embed_tokens.weight"), "norm_f.weight": take("model.norm.weight")}
    sd["lm_head.weight"] = sd["wte.weight"] if cfg.tie_embeddings else take("lm_head.weight")
    for i in range(cfg.n_layer):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        a = p + "self_attn."
        sd[q + "norm1.weight"] = take(p + "input_layernorm.weight")
        sd[q + "norm2.weight"] = take(p + "post_attention_layernorm.weight")
        sd[q + "attn.qkv.weight"] = torch.cat([take(a + f"{x}_proj.weight") for x in "qkv"])
        if cfg.qkv_bias:
            sd[q + "attn.qkv.bias"] = torch.cat([take(a + f"{x}_proj.bias") for x in "qkv"])
        sd[q + "attn.proj.weight"] = take(a + "o_proj.weight")
        sd[q + "fc.weight"] = torch.cat([take(p + "mlp.gate_proj.weight"), take(p + "mlp.up_proj.weight")])
        sd[q + "fc_out.weight"] = take(p + "mlp.down_proj.weight")
    return sd


def hf_from_ours(model: GPT) -> dict[str, torch.Tensor]:
    """model.py's weights under Hugging Face Llama/Qwen2 names (the inverse of ours_from_hf)."""
    cfg, sd = model.cfg, {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    if not (cfg.mlp == "swiglu" and cfg.norm_weight):
        raise UserError("only a Llama-family model can be exported (this run uses our own small architecture: "
                        "train it with --arch llama, or start from --init_hf)")
    w = {"model.embed_tokens.weight": sd["wte.weight"], "model.norm.weight": sd["norm_f.weight"]}
    if not cfg.tie_embeddings:
        w["lm_head.weight"] = sd["lm_head.weight"]
    sizes = [cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim]
    for i in range(cfg.n_layer):
        p, q = f"model.layers.{i}.", f"blocks.{i}."
        a = p + "self_attn."
        w[p + "input_layernorm.weight"] = sd[q + "norm1.weight"]
        w[p + "post_attention_layernorm.weight"] = sd[q + "norm2.weight"]
        for x, t in zip("qkv", sd[q + "attn.qkv.weight"].split(sizes)):
            w[a + f"{x}_proj.weight"] = t.clone()
        if cfg.qkv_bias:
            for x, t in zip("qkv", sd[q + "attn.qkv.bias"].split(sizes)):
                w[a + f"{x}_proj.bias"] = t.clone()
        w[a + "o_proj.weight"] = sd[q + "attn.proj.weight"]
        gate, up = sd[q + "fc.weight"].chunk(2)
        w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"] = gate.clone(), up.clone()
        w[p + "mlp.down_proj.weight"] = sd[q + "fc_out.weight"]
    return w


def hf_config(model: GPT, tok: Tokenizer, extra: dict) -> dict:
    """config.json for transformers (LlamaForCausalLM, or Qwen2ForCausalLM where q/k/v have biases)."""
    c = model.cfg
    kind = "qwen2" if c.qkv_bias else "llama"
    out = {"architectures": ["Qwen2ForCausalLM" if c.qkv_bias else "LlamaForCausalLM"], "model_type": kind,
           "vocab_size": c.vocab_size, "hidden_size": c.n_embd, "intermediate_size": c.mlp_hidden,
           "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.n_kv_head,
           "head_dim": c.head_dim, "hidden_act": "silu", "max_position_embeddings": c.block_size,
           "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_base,
           "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_base},
           "tie_word_embeddings": c.tie_embeddings, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
           "pad_token_id": tok.pad_id, "torch_dtype": "float32"}
    if kind == "llama":
        out.update(attention_bias=False, mlp_bias=False)
    return {**out, **extra}


# ---------------------------------------------------------------------------- tokenizer

def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


def _pattern(pre: dict | None) -> str:
    """The pre-tokenizer regex of a byte-level BPE tokenizer.json."""
    if pre is None:
        raise UserError("tokenizer.json has no pre-tokenizer: only byte-level BPE tokenizers are supported")
    if pre["type"] == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise UserError("ByteLevel add_prefix_space=true is not supported")
        return GPT2_PAT
    if pre["type"] == "Sequence":
        parts = pre["pretokenizers"]
        splits = [p for p in parts if p["type"] == "Split"]
        if len(splits) == 1 and [p["type"] for p in parts] in (["Split", "ByteLevel"],) \
                and splits[0].get("behavior") == "Isolated" and not parts[1].get("use_regex", True):
            return splits[0]["pattern"]["Regex"]
    raise UserError(f"pre-tokenizer {json.dumps(pre)[:120]} is not supported (ByteLevel, or Split + ByteLevel)")


def _byte_level_bpe(spec: dict, path: str) -> tuple[dict[bytes, int], str, dict[str, int], bool]:
    """A byte-level BPE tokenizer.json's parts as tiktoken takes them: (ranks, pre-tokenizer regex, special
    tokens, NFC normalizer or none). A file of another kind is refused in one line; a field missing or of
    another type raises as Python does (load_hf_tokenizer words it)."""
    m = spec.get("model") or {}
    if m.get("type") != "BPE" or m.get("byte_fallback"):
        raise UserError(f"{path}: only byte-level BPE tokenizers are supported (Llama 3, Qwen2, GPT-2 style)")
    norm = spec.get("normalizer")
    if norm is not None and norm.get("type") != "NFC":
        raise UserError(f"{path}: normalizer {norm.get('type')} is not supported (none or NFC)")
    pat = _pattern(spec.get("pre_tokenizer"))
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    vocab = m["vocab"].items()
    try:
        ranks = {bytes(to_byte[ch] for ch in s): i for s, i in vocab}
    except KeyError as e:
        raise UserError(f"{path}: a vocabulary entry has the character {e} outside the byte-level alphabet") from None
    # tiktoken merges the pair whose result has the lowest rank: the ids must follow the merge order
    try:
        merged = [ranks[bytes(to_byte[ch] for ch in (mg.replace(" ", "", 1) if isinstance(mg, str) else "".join(mg)))]
                  for mg in m.get("merges", [])]
    except KeyError as e:
        raise UserError(f"{path}: a merge gives {str(e)[:60]}, not a byte-level token of the vocabulary") from None
    if any(b < a for a, b in zip(merged, merged[1:])):
        raise UserError(f"{path}: the vocabulary ids do not follow the merge order; tiktoken cannot reproduce it")
    # added tokens: special ones (and any the vocabulary does not hold as plain text) are special tokens
    specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])
                if t.get("special") or ranks.get(t["content"].encode()) != t["id"]}
    ranks = {b: i for b, i in ranks.items() if i not in specials.values()}
    return ranks, pat, specials, norm is not None


def load_hf_tokenizer(hf_dir: str, model_vocab: int) -> tuple[Tokenizer, int]:
    """Our tokenizer for a Hugging Face tokenizer.json; returns it and the model's vocabulary size (one
    more than `model_vocab` where z_c needed a new row)."""
    path = os.path.join(hf_dir, "tokenizer.json")
    spec = _read_json(path)
    try:
        ranks, pat, specials, nfc = _byte_level_bpe(spec, path)
        bos = _bos_added(spec.get("post_processor"), specials)
    except (KeyError, TypeError, AttributeError, IndexError) as e:  # a field missing or of another type
        raise UserError(f"{path}: not a tokenizer.json as the tokenizers library writes it "
                        f"({type(e).__name__}: {str(e)[:80]})") from None
    used = set(ranks.values()) | set(specials.values())
    cfg = _read_json(os.path.join(hf_dir, "config.json"))
    tcfg = _read_json(os.path.join(hf_dir, "tokenizer_config.json"), missing_ok=True)

    def token_id(key):
        v = cfg.get(f"{key}_token_id")
        if isinstance(v, list):
            v = v[0] if v else None
        name = tcfg.get(f"{key}_token")
        if v is None and isinstance(name, dict):
            name = name.get("content")
        return v if v is not None else specials.get(name) if isinstance(name, str) else None

    eos = token_id("eos")
    if eos is None:
        raise UserError(f"{hf_dir}: no eos_token_id in config.json (nor eos_token in tokenizer_config.json)")
    pad = token_id("pad")
    free = [i for i in range(model_vocab) if i not in used]
    reserved = sorted(i for s, i in specials.items() if "reserved" in s and i not in (bos, eos, pad))
    if free:
        zc, vocab = free[0], model_vocab
    elif reserved:
        zc, vocab = reserved[0], model_vocab
    else:
        zc, vocab = model_vocab, model_vocab + 1
    name = f"<|zc:{zc}|>"
    if zc not in specials.values():
        specials[name] = zc
    never = sorted(set(range(vocab)) - set(ranks.values()) - {eos})  # specials and unused rows: never sampled
    tok = Tokenizer.from_ranks(ranks, pat, specials, bos_id=bos, eos_id=eos, pad_id=eos if pad is None else pad,
                               zc_id=zc, vocab_size=vocab, template=BASE_TEMPLATE, normalize_nfc=nfc,
                               never_sampled=never, source=os.path.abspath(hf_dir))
    return tok, vocab


def _bos_added(post: dict | None, specials: dict[str, int]) -> int | None:
    """The special token the tokenizer's post-processor puts before every text (Llama 3's
    <|begin_of_text|>), or None (Qwen2 adds none)."""
    if not post:
        return None
    if post["type"] == "Sequence":
        return next((b for p in post["processors"] if (b := _bos_added(p, specials)) is not None), None)
    if post["type"] == "TemplateProcessing" and post.get("single"):
        first = post["single"][0]
        if "SpecialToken" in first:
            name = first["SpecialToken"]["id"]
            ids = post.get("special_tokens", {}).get(name, {}).get("ids") or [specials.get(name)]
            return ids[0]
    return None


def _read_json(path: str, missing_ok: bool = False) -> dict:
    if missing_ok and not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


# ---------------------------------------------------------------------------- loading

def load_pretrained(hf_dir: str, block_size: int, device) -> tuple[GPT, Tokenizer]:
    """Our GPT (float32) and tokenizer for a local Hugging Face Llama/Qwen2 directory."""
    if not os.path.isfile(os.path.join(hf_dir, "config.json")):
        raise UserError(f"--init_hf {hf_dir}: no config.json there (expected a Hugging Face model directory)")
    hf = _read_json(os.path.join(hf_dir, "config.json"))
    # an architecture we cannot hold is refused before anything else
    cfg = model_config(hf, block_size, os.path.join(hf_dir, "config.json"))
    tok, vocab = load_hf_tokenizer(hf_dir, hf["vocab_size"])
    cfg.vocab_size = vocab
    weights = read_weights(hf_dir)
    try:
        sd = ours_from_hf(weights, cfg)
    except RuntimeError as e:  # q/k/v or gate/up projections of shapes that do not concatenate
        raise UserError(f"{hf_dir}: the weights do not fit config.json ({first_line(e, 200)})") from None
    if vocab > hf["vocab_size"]:  # z_c got a new row: the mean of the others (a typical, untrained token)
        for key in ("wte.weight", "lm_head.weight"):
            sd[key] = torch.cat([sd[key], sd[key].mean(0, keepdim=True)])
        if cfg.tie_embeddings:
            sd["lm_head.weight"] = sd["wte.weight"]
    with torch.device("meta"):
        model = GPT(cfg)
    try:
        model.load_state_dict(sd, assign=True)
    except RuntimeError as e:
        raise UserError(f"{hf_dir}: the weights do not fit config.json ({first_line(e, 200)})") from None
    if cfg.tie_embeddings:
        model.lm_head.weight = model.wte.weight
    model.inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim))
    print(f"--init_hf {hf_dir}: {hf['model_type']} with {model.num_params() / 1e6:.2f}M parameters, "
          f"{cfg.n_layer} layers, {cfg.n_head} heads ({cfg.n_kv_head} key/value), vocab {vocab}; "
          f"z_c = id {tok.zc_id}, BOS {tok.bos_id}, EOS {tok.eos_id}")
    return model.to(device), tok


EXPORT_FILES = ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json")


def _our_export(out_dir: str, names: list[str]) -> bool:
    """Whether `out_dir` (listing `names`) holds an earlier export() and nothing else: its config.json has
    the "laser" entry no other model's has."""
    try:
        return set(names) <= set(EXPORT_FILES) and "laser" in _read_json(os.path.join(out_dir, "config.json"))
    except UserError:
        return False


def check_export_dir(out_dir: str, force: bool = False) -> None:
    """Where export() may write: a new or empty directory, or one holding an earlier export of ours and
    nothing else; another non-empty one only with `force` (the EXPORT_FILES there are replaced, nothing
    else is touched); never a training run's directory (it holds a ckpt.pt, and its config.json and
    tokenizer.json are the run's), nor one holding other weight files, which transformers or --init_hf
    would read beside or instead of the exported ones. (Temporary files an interrupted export left
    behind, .tmp_*, do not count.)"""
    check_dir_path(out_dir, "OUT_DIR")
    if not os.path.isdir(out_dir):
        return
    names = sorted(n for n in os.listdir(out_dir) if not n.startswith(".tmp_"))
    if "ckpt.pt" in names:
        raise UserError(f"{out_dir} is a training run's directory (it holds ckpt.pt): export into another "
                        f"directory, such as {os.path.join(out_dir, 'hf')}")
    if names and not force and not _our_export(out_dir, names):
        raise UserError(f"{out_dir} is not empty ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}): "
                        f"choose a new directory, or pass --force to replace the files export writes there")
    stale = [n for n in names if n not in EXPORT_FILES and (n.endswith((".safetensors", ".index.json"))
                                                           or n.startswith("pytorch_model") and n.endswith(".bin"))]
    if stale:
        raise UserError(f"{out_dir} holds other weights ({', '.join(stale[:3])}) that would be read beside or "
                        f"instead of the exported model.safetensors: export into another directory")


def export(model: GPT, tok: Tokenizer, out_dir: str, laser: dict, force: bool = False) -> str:
    """Write `out_dir` for transformers: model.safetensors, config.json (with the LaSeR readout:
    z_c id, c_ref, beta_v), tokenizer.json and tokenizer_config.json, each atomically; where
    check_export_dir allows (a non-empty directory only with `force`). Returns the transformers class."""
    check_export_dir(out_dir, force)
    weights = hf_from_ours(model)  # refuses our own architecture before anything is written
    make_run_dir(out_dir)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), weights, {"format": "pt"})
    config = hf_config(model, tok, {"laser": laser})
    write_json(os.path.join(out_dir, "config.json"), config)
    write_text(os.path.join(out_dir, "tokenizer.json"), json.dumps(hf_tokenizer_json(tok), ensure_ascii=False))
    names = {i: s for s, i in tok.specials.items()}
    write_json(os.path.join(out_dir, "tokenizer_config.json"),
               {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.cfg.block_size,
                "bos_token": names.get(tok.bos_id), "eos_token": names[tok.eos_id], "pad_token": names.get(tok.pad_id)})
    return config["architectures"][0]


def hf_tokenizer_json(tok: Tokenizer) -> dict:
    """A `tokenizers` tokenizer.json equal to our tokenizer: byte-level BPE with our ranks as ids (the
    merges listed in rank order), our pre-tokenizer regex, the special tokens as added tokens."""
    to_char = bytes_to_unicode()
    text = {i: "".join(to_char[b] for b in bs) for bs, i in tok.ranks.items()}
    merges = [pair for bs, _ in sorted(tok.ranks.items(), key=lambda kv: kv[1]) for pair in _splits(bs, tok.ranks, to_char)]
    bos = [{"SpecialToken": {"id": next(s for s, i in tok.specials.items() if i == tok.bos_id), "type_id": 0}}] \
        if tok.bos_id is not None and tok.prepend_bos else []
    post = {"type": "TemplateProcessing", "single": bos + [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": bos + [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {s["SpecialToken"]["id"]: {"id": s["SpecialToken"]["id"], "ids": [tok.bos_id],
                                                         "tokens": [s["SpecialToken"]["id"]]} for s in bos}}
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for s, i in sorted(tok.specials.items(), key=lambda kv: kv[1])],
            "normalizer": {"type": "NFC"} if tok.normalize_nfc else None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": tok.pat_str}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {text[i]: i for i in sorted(text)}, "merges": merges}}


def _splits(bs: bytes, ranks: dict[bytes, int], to_char: dict[int, str]) -> list[list[str]]:
    """Every way token `bs` is two tokens. tiktoken merges any adjacent pair whose concatenation is a
    token, the lowest-ranked result first; listing all of a token's splits at its rank makes the BPE of
    `tokenizers` (which merges listed pairs, earliest first) do the same."""
    return [["".join(to_char[x] for x in bs[:k]), "".join(to_char[x] for x in bs[k:])]
            for k in range(1, len(bs)) if bs[:k] in ranks and bs[k:] in ranks]
