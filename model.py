"""A decoder-only GPT with a KV cache for batched decoding of left-padded prompts.

One class holds two families of architecture, chosen by `GPTConfig`:
  * ours, the presets' default (a small model trained from scratch): RMSNorm without gains before
    attention and MLP and at the end, no biases, a GELU MLP with 4x expansion, untied input embedding
    and output head (the head row of the self-reward token z_c then moves without dragging an input
    embedding along; z_c is never an input);
  * the Llama family (Llama, Qwen2), exactly, for pretrained checkpoints (hf.py loads and exports them):
    RMSNorm with weights, SwiGLU MLP, grouped-query attention (n_kv_head < n_head), any RoPE theta,
    tied or untied embeddings, optional q/k/v biases (Qwen2).
Both use RoPE with the half-split rotation (no learned position table; a row's positions start at 0 at
its first real token, so a left-padded prompt sees exactly the positions it would see alone).

What this file deliberately does not do: dropout (RL and short SFT runs do not need it), mixed
precision (the caller wraps calls in `torch.autocast` on CUDA, config.autocast; the KV cache is then kept in bf16),
sampling policy (see rollout.py).

Attention has four cases, spelled out in `CausalSelfAttention.forward`:
  1. training / scoring: no cache, no padding -> plain causal attention;
  2. prefill of left-padded prompts into an empty cache -> causal + key-padding mask;
  3. decoding one (or a few) new tokens after a cached prefix -> attend to every valid cached slot;
  4. `decode_step`: one token per row at a slot given as a device tensor, attending over the first
     `window` slots of the fixed-size cache through its valid-slot mask: fixed shapes and no host sync,
     so that a CUDA graph can capture it (rollout.py). Same arithmetic as case 3 up to the length of
     the softmax's sum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# decode_step's attention kernels, in this order of preference: one query against the cache. On an H100
# (the small preset, 512 rows, bf16; results/small/h100_6f2a32a) at a window of 192 slots, cuDNN's kernel
# took 90 us a layer where the memory-efficient one took 143 with the mask, and 72 us on keys that hold the
# mask (KEY_BIAS); in the whole decode the two together ran 467k tokens/s against the memory-efficient
# kernel's 308k with the mask (results/small/h100_5aacde5). Math is the fallback, and CPU's choice
DECODE_ATTENTION = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
# the device types whose caches hold the decode's mask folded into the keys (KVCache's key_bias): a column
# of 0 (a written, real token) or HIDDEN after each key's head dimension, which a query column of 1 adds to
# its score, so that decode_step's attention needs no mask. Not on CPU: its loop (the compacting one)
# attends through forward's mask, where the wider keys would only cost memory
KEY_BIAS = {"cuda"}
HIDDEN = -3e4  # a hidden key's bias: times the scale (1/sqrt(56) on small) about -4,000, exp of which is 0


def key_bias_width(head_dim: int) -> int:
    """The width of keys and values that hold the mask: the head dimension and its bias column, padded to a
    multiple of 8 for the attention kernels (56 + 1 -> 64)."""
    return 8 * math.ceil((head_dim + 1) / 8)


@dataclass
class GPTConfig:
    vocab_size: int = 512    # tokenizer.vocab_size (including the special tokens)
    block_size: int = 256    # longest sequence (prompt + response) the model is used on
    n_layer: int = 4         # transformer blocks
    n_head: int = 4          # attention heads (n_embd must divide evenly)
    n_embd: int = 128        # residual width
    mlp_ratio: int = 4       # hidden width of the MLP = mlp_ratio * n_embd (unless mlp_hidden is set)
    rope_base: float = 10000.0
    norm_eps: float = 1e-6
    # the Llama family (hf.py); the defaults are our own architecture
    n_kv_head: int = 0       # key/value heads (grouped-query attention); 0: n_head
    head_dim: int = 0        # 0: n_embd // n_head
    mlp: str = "gelu"        # gelu (fc -> GELU -> fc_out) | swiglu (fc = [gate; up] -> silu(gate) * up -> fc_out)
    mlp_hidden: int = 0      # 0: mlp_ratio * n_embd
    norm_weight: bool = False  # RMSNorm with a learned gain per channel
    qkv_bias: bool = False   # biases on q, k and v (Qwen2)
    tie_embeddings: bool = False  # the output head shares the input embedding's weights

    def __post_init__(self):
        if not self.head_dim and self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        self.n_kv_head = self.n_kv_head or self.n_head
        self.head_dim = self.head_dim or self.n_embd // self.n_head
        self.mlp_hidden = self.mlp_hidden or self.mlp_ratio * self.n_embd
        if self.head_dim % 2:
            raise ValueError(f"head dimension {self.head_dim} must be even (RoPE rotates pairs)")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if self.mlp not in ("gelu", "swiglu"):
            raise ValueError(f"mlp={self.mlp!r}: expected gelu or swiglu")


def swiglu_hidden(n_embd: int) -> int:
    """The SwiGLU hidden width with about the parameters of a 4x GELU MLP: 8/3 n_embd, rounded up to 16."""
    return 16 * math.ceil(8 * n_embd / 3 / 16)


class RMSNorm(nn.Module):
    """x / rms(x), times a learned gain per channel when `weight` (the Llama family); in float32."""

    def __init__(self, dim: int, eps: float, weight: bool):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if weight else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(mean(x^2) + eps): one fused kernel on CUDA (torch's own), the same arithmetic elsewhere
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return y if self.weight is None else self.weight * y


def rope_tables(pos: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation at positions pos (B, T), laid out for `apply_rope`: cos = (cos, cos) and
    sin = (-sin, sin) over the head dimension, each (B, T, 1, D), made once per forward for every layer."""
    ang = pos[:, :, None].float() * inv_freq  # (B, T, D/2)
    cos, sin = ang.cos(), ang.sin()
    return torch.cat([cos, cos], -1)[:, :, None], torch.cat([-sin, sin], -1)[:, :, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half x1, second half x2) of the head dimension: (x1 cos - x2 sin, x2 cos + x1 sin),
    written as x * cos + (x2, x1) * sin with `rope_tables`' layout, the same numbers in four kernels.
    x (B, T, heads, D)."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


class KVCache:
    """Keys and values of every layer for a batch of rows, plus which slots hold real tokens.

    Slots are shared by all rows (row b's token at slot s); left padding occupies the first slots of
    short prompts and is marked invalid in `valid`. `next_pos` is each row's RoPE position for its next
    token (its count of real tokens so far).

    `key_bias`: the mask folded into the keys for decode_step. Each key is followed by a bias column, 0
    for a real token and HIDDEN for padding and slots not yet written, and keys and values are padded
    with zeros to a multiple of 8 (the head dimension 56 + 1 becomes 64): keys and values are the first
    `head_dim` columns.
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, max_len: int, device, dtype=torch.float32,
                 key_bias: bool = False):
        self.head_dim = cfg.head_dim
        width = key_bias_width(cfg.head_dim) if key_bias else cfg.head_dim
        shape = (batch_size, cfg.n_kv_head, max_len, width)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        if key_bias:
            for k in self.k:
                k[..., cfg.head_dim] = HIDDEN
        self.valid = torch.zeros(batch_size, max_len, dtype=torch.bool, device=device)
        self.next_pos = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.length = 0  # slots in use
        self.max_len = max_len

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    @property
    def key_bias(self) -> bool:
        return self.k[0].shape[-1] != self.head_dim

    def mark(self, s0: int, valid: torch.Tensor) -> None:
        """Record which of the tokens written at slots s0.. (valid (B, T)) are real: in `valid`, and in the
        keys' bias column where the mask is folded into them."""
        self.valid[:, s0:s0 + valid.shape[1]] = valid
        if self.key_bias:
            bias = torch.where(valid, 0.0, HIDDEN).to(self.k[0].dtype)[:, None]  # (B, 1, T)
            for k in self.k:
                k[:, :, s0:s0 + valid.shape[1], self.head_dim] = bias

    def select(self, rows: torch.Tensor) -> "KVCache":
        """Keep (or repeat) rows, e.g. `repeat_interleave` a prompt's cache across its K samples, or
        drop finished rows (a copy of every slot)."""
        new = object.__new__(KVCache)
        new.k = [k.index_select(0, rows) for k in self.k]
        new.v = [v.index_select(0, rows) for v in self.v]
        new.valid = self.valid.index_select(0, rows)
        new.next_pos = self.next_pos.index_select(0, rows)
        new.length, new.max_len, new.head_dim = self.length, self.max_len, self.head_dim
        return new

    def load(self, src: "KVCache", rows: torch.Tensor) -> None:
        """Overwrite this cache in place with `src`'s rows (`src.select(rows)` without a new allocation:
        a CUDA graph captured on this cache's tensors keeps reading the same memory)."""
        for dst, s in zip(self.k + self.v + [self.valid, self.next_pos], src.k + src.v + [src.valid, src.next_pos]):
            torch.index_select(s, 0, rows, out=dst)
        self.length = src.length


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(cfg.n_head * cfg.head_dim, cfg.n_embd, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache | tuple | None, mask: torch.Tensor | None,
                slot: torch.Tensor | None = None):
        B, T, _ = x.shape
        H, G, hd = self.n_head, self.n_kv_head, self.hd
        qk, v = self.qkv(x).split([(H + G) * hd, G * hd], dim=-1)
        # q and k rotated together, then back in the projection's dtype (the one attention runs in)
        qk = apply_rope(qk.view(B, T, H + G, hd), cos, sin).to(v.dtype).transpose(1, 2)  # (B, H + G, T, hd)
        q, k = qk.split([H, G], dim=1)
        v = v.view(B, T, G, hd).transpose(1, 2)  # (B, G, T, hd)
        folded = False
        if slot is not None:  # case 4: `cache` is this layer's (keys, values): write at the slot, attend over
            ck, cv = cache  # the first mask.shape[-1] slots (no layer index: a compiled block serves every layer)
            extra = ck.shape[-1] - hd
            folded = extra > 0  # keys that hold the mask (KVCache's key_bias): no mask is given (mask: its width)
            if folded:  # this real token's bias column is 0, and a query column of 1 adds a key's to its score
                k, v = F.pad(k, (0, extra)), F.pad(v, (0, extra))
                q = F.pad(F.pad(q, (0, 1), value=1.0), (0, extra - 1))
            ck.index_copy_(2, slot, k.to(ck.dtype))
            cv.index_copy_(2, slot, v.to(cv.dtype))
            k, v = ck[:, :, :mask.shape[-1]], cv[:, :, :mask.shape[-1]]  # (B, G, W, hd or the padded width)
        elif cache is not None:
            s0 = cache.length
            cache.k[layer][:, :, s0:s0 + T, :hd] = k
            cache.v[layer][:, :, s0:s0 + T, :hd] = v
            k, v = cache.k[layer][:, :, :s0 + T, :hd], cache.v[layer][:, :, :s0 + T, :hd]  # (B, G, S, hd)
        if G != H:  # grouped-query attention: each key/value head serves H / G query heads
            k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
        if folded:  # case 4 on folded keys: no mask; the scale of the head dimension, not the padded one's
            y = F.scaled_dot_product_attention(q, k, v, scale=hd ** -0.5)[..., :hd]
        elif mask is None:  # case 1: full causal sequence, no padding
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # cases 2-4: an explicit (B, 1, T, S) additive mask (GPT._attn_bias)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(B, T, H * hd))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.swiglu = cfg.mlp == "swiglu"
        self.norm1 = RMSNorm(cfg.n_embd, cfg.norm_eps, cfg.norm_weight)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = RMSNorm(cfg.n_embd, cfg.norm_eps, cfg.norm_weight)
        self.fc = nn.Linear(cfg.n_embd, (2 if self.swiglu else 1) * cfg.mlp_hidden, bias=False)
        self.fc_out = nn.Linear(cfg.mlp_hidden, cfg.n_embd, bias=False)

    def mlp(self, x):
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.fc_out(F.silu(gate) * up)
        return self.fc_out(F.gelu(self.fc(x)))

    def forward(self, x, cos, sin, layer, cache, mask, slot=None):
        x = x + self.attn(self.norm1(x), cos, sin, layer, cache, mask, slot)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.n_embd, cfg.norm_eps, cfg.norm_weight)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        hd = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.apply(self._init)
        for b in self.blocks:  # residual projections scaled down with depth (GPT-2 style)
            for w in (b.attn.proj.weight, b.fc_out.weight):
                nn.init.normal_(w, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied head counts once

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        """An empty cache, in the autocast dtype when autocast is on (bf16 on CUDA: the keys and values are
        computed in it, and a float32 cache would be converted back at every step), else the weights'; the
        mask folded into its keys on the device types in KEY_BIAS."""
        p = self.lm_head.weight
        on = torch.is_autocast_enabled(p.device.type)
        return KVCache(self.cfg, batch_size, max_len, p.device,
                       torch.get_autocast_dtype(p.device.type) if on else p.dtype, p.device.type in KEY_BIAS)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None, valid: torch.Tensor | None = None,
                last_only: bool = False, blocks=None, segments: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for tokens idx (B, T); (B, 1, V) with `last_only`.

        valid (B, T) bool marks real tokens; False marks left padding. Padding is only meaningful when
        the whole prompt is given at once (no cache, or prefill into an empty cache). With a non-empty
        cache, the new tokens are appended to every row and all count as valid. segments (B, T) long, for
        packed rows (SFT, no cache, no `valid`): each run of equal ids is a sequence of its own, at
        positions from 0 and attending only within itself, so its logits are those it has alone.
        `blocks`: callables that stand in for self.blocks (the training forward's compiled blocks, runs.py).
        """
        B, T = idx.shape
        if T > self.cfg.block_size or (cache is not None and cache.length + T > cache.max_len):
            raise ValueError(f"sequence of {T} new tokens exceeds block_size/cache "
                             f"({self.cfg.block_size}, cache {None if cache is None else cache.max_len})")
        dev = idx.device
        given_valid = valid is not None
        if valid is None:
            valid = torch.ones(B, T, dtype=torch.bool, device=dev)
        elif cache is not None and cache.length > 0:
            raise ValueError("padding (valid=...) can only be given for a prefill into an empty cache")
        if segments is not None:  # packed rows: positions and causal attention within each segment
            if cache is not None or given_valid:
                raise ValueError("segments (packed rows) are for a full forward without a cache or padding")
            pos, mask = self._packed(segments)
        else:  # (B, T) RoPE positions: each row's count of real tokens before, after what the cache holds
            offset = cache.next_pos if cache is not None else torch.zeros(B, dtype=torch.long, device=dev)
            pos = offset[:, None] + (valid.long().cumsum(1) - 1).clamp(min=0)
            padded = given_valid and not bool(valid.all())  # (no host sync when no padding was given)
            mask = None if cache is None and not padded else self._padding_mask(valid, cache)  # case 1: None

        cos, sin = rope_tables(pos, self.inv_freq)
        x = self.wte(idx)  # (B, T, C)
        for i, block in enumerate(blocks or self.blocks):
            x = block(x, cos, sin, i, cache, mask)
        if cache is not None:
            cache.length += T
            cache.next_pos = cache.next_pos + valid.long().sum(1)
        return self._head(x[:, -1:] if last_only else x)

    def _padding_mask(self, valid: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Cases 2-3: the (B, 1, T, S) attention bias of T new tokens (valid (B, T): False on left padding)
        over what the cache holds and themselves, causal; records their validity in the cache."""
        T = valid.shape[1]
        s0 = 0 if cache is None else cache.length
        key_valid = valid if cache is None else torch.cat([cache.valid[:, :s0], valid], dim=1)  # (B, S)
        q_slot = torch.arange(s0, s0 + T, device=valid.device)
        k_slot = torch.arange(s0 + T, device=valid.device)
        causal = k_slot[None, :] <= q_slot[:, None]  # (T, S)
        mask = causal[None] & key_valid[:, None, :]  # (B, T, S)
        # a padding query would see no key at all (NaN softmax): let every slot see itself
        mask = mask | (k_slot[None, :] == q_slot[:, None])[None]
        if cache is not None:
            cache.mark(s0, valid)
        return self._attn_bias(mask[:, None])

    def _packed(self, segments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed rows (segments (B, T): equal ids for one sequence): each token's position within its
        segment, and the (B, 1, T, T) attention bias that is causal within each segment."""
        T = segments.shape[1]
        t = torch.arange(T, device=segments.device)
        starts = torch.ones_like(segments, dtype=torch.bool)
        starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
        pos = t - torch.where(starts, t, 0).cummax(1).values  # each token's distance from its segment's start
        mask = (t[None, :] <= t[:, None])[None] & (segments[:, :, None] == segments[:, None, :])  # (B, T, T)
        return pos, self._attn_bias(mask[:, None])

    def _attn_bias(self, mask: torch.Tensor) -> torch.Tensor:
        """A boolean attention mask as the additive bias attention turns it into (0 where a key is seen,
        -inf where not), in the dtype attention runs in: made once per forward, not once per layer."""
        dev = mask.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else self.lm_head.weight.dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        # the head in float32 even under bf16 autocast: every log-prob (sampling, PPO ratio, the z_c
        # readout) is taken from these logits, and bf16 rounding would bias r_s and the ratio
        with torch.autocast(x.device.type, enabled=False):
            return self.lm_head(self.norm_f(x.float()))  # (B, T, V) float32

    def decode_step(self, tok: torch.Tensor, cache: KVCache, slot: torch.Tensor,
                    window: int | None = None, blocks=None) -> torch.Tensor:
        """Attention case 4: one token per row, tok (B,), written at cache slot `slot` (a 1-element long
        tensor on the device) at each row's next position; returns the logits (B, V) in float32.
        Attention reads the cache's first `window` slots (default all; the slot must lie among them).
        Every shape is fixed by the cache and the window and nothing is read back to the host, so the
        call can be captured by a CUDA graph and replayed (the weights are read in place). The caller
        feeds slots in order after a prefill (`cache.length` is not advanced here). `blocks`: callables
        that stand in for self.blocks (the sampler's compiled blocks, rollout.py)."""
        cos, sin = rope_tables(cache.next_pos[:, None], self.inv_freq)
        cache.valid.index_fill_(1, slot, True)
        valid = cache.valid[:, None, None, :window or cache.max_len]  # (B, 1, 1, W): the written slots
        mask = valid if cache.key_bias else self._attn_bias(valid)  # (keys that hold the mask need only its width)
        x = self.wte(tok[:, None])  # (B, 1, C)
        with sdpa_kernel(DECODE_ATTENTION, set_priority=True):
            for i, block in enumerate(blocks or self.blocks):
                x = block(x, cos, sin, i, (cache.k[i], cache.v[i]), mask, slot)
        cache.next_pos.add_(1)
        return self._head(x)[:, 0]

    @torch.no_grad()
    def generate(self, idx: list[int], max_new_tokens: int, eos_id: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 suppressed: tuple[int, ...] = ()) -> list[int]:
        """Slow reference sampler for one sequence: recompute the full forward every step.
        Kept to test the KV-cache path and the batched sampler against. Returns the new tokens
        (including the EOS if one was sampled); `suppressed` token ids are never chosen."""
        dev = self.lm_head.weight.device
        seq, out = list(idx), []
        for _ in range(max_new_tokens):
            logits = self(torch.tensor([seq], device=dev))[0, -1].float()  # (V,)
            logits[list(suppressed)] = float("-inf")
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = int(torch.multinomial(F.softmax(logits, -1), 1, generator=generator))
            seq.append(nxt)
            out.append(nxt)
            if nxt == eos_id:
                break
        return out

