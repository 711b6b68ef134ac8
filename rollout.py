"""Batched KV-cache sampling that reads LaSeR's last-token self-reward in the same pass.

`sample(model, prompts, num_samples, ...)` draws `num_samples` responses for each prompt:

  1. prefill: the prompts, left-padded to one length, go through the model once (RoPE positions start
     at each row's first real token, padding is masked out of attention);
  2. the cache of each prompt is copied to its `num_samples` rows (`KVCache.select`), and every row
     samples its own first token from the prompt's last logits (no shared first token);
  3. decode: one token per row per step, from an explicit `torch.Generator`; a row stops at its first
     EOS. Two loops: on CPU finished rows are dropped from the batch once they make up half of it
     (compute is per row; dropping rows changes which random numbers a row draws); on CUDA the batch
     keeps its shape and the step is a fixed-shape `model.decode_step` replayed from a CUDA graph
     (`_FixedDecoder`); the host asks "all finished?" every few steps and reads each answer at the next
     check, when the device still has the steps since queued (it never runs dry waiting for the host);
  4. self-reward (docs/laser.md §1, §6): the step after a row samples EOS feeds that EOS back in,
     and the logits at that EOS position give log p(z_c | x, y, EOS), read from the untempered logits
     with a float32 log-softmax. Rows finishing at different steps are scored in the decode step that
     the other rows need anyway; only rows that finish on the last step, or the last rows of the batch
     to finish, cost one extra decode step, and the whole batch needs at most one such step.

Everything a later stage needs travels in `Rollouts`: response tokens, a response mask built from
positions (up to and including the first EOS; never by comparing ids with a pad id), the log-prob of
each sampled token under the exact distribution it was drawn from, finished/truncated flags, decoded
texts and the self-reward log-prob (NaN for truncated rows).

`sample_naive` recomputes the full forward every step: slow, obviously correct, used by the tests and
by bench.py. `score_rollouts` re-reads token log-probs and log p(z_c) with a separate full forward pass:
it is the trainer's differentiable forward, and the reference the in-pass readout is tested against.

For training and evaluation: `step_generator` (each step's own sampling stream, a pure function of
stage, seed and step), `sample_chunks` (the one loop that samples a list of problems in calls of a
given size) and `calibrate_c_ref` (docs/laser.md §5, on the reference policy's own samples).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import sys
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

import config
import model as model_lib
from config import CUDA_LENGTH_MULTIPLE, UserError, autocast, rl_outside_data, round_up, train_problems


@dataclass
class Rollouts:
    prompts: list[list[int]]      # the P prompts' token ids
    group_size: int               # K samples per prompt; row r belongs to prompt r // K
    response: torch.Tensor        # (N, T) long sampled tokens; pad_id after a row's end
    mask: torch.Tensor            # (N, T) bool: True up to and including the first EOS
    logprobs: torch.Tensor        # (N, T) float32 log-prob of each sampled token when it was sampled; 0 off-mask
    finished: torch.Tensor        # (N,) bool: sampled EOS within max_new_tokens
    logp_zc: torch.Tensor         # (N,) float32 log p(z_c | x, y, EOS); NaN for truncated rows
    texts: list[str]              # decoded responses (EOS not included)
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    suppressed: tuple[int, ...] = ()  # token ids the sampler may never emit (see `suppressed_ids`)

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)  # (N,) response tokens including EOS

    def __len__(self) -> int:
        return len(self.response)


def suppressed_ids(tokenizer) -> tuple[int, ...]:
    """The special tokens that may never appear in a response: every special token except EOS (and, for
    a pretrained tokenizer, its other special tokens and unused embedding rows).
    z_c in particular is only ever read (at the EOS position), never written: a head that raises its
    logit everywhere must not leak it into solutions."""
    ids = {tokenizer.bos_id, tokenizer.pad_id, tokenizer.zc_id, *getattr(tokenizer, "never_sampled", ())}
    return tuple(sorted(ids - {tokenizer.eos_id, None}))


@functools.lru_cache(maxsize=16)
def _index(ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The ids as an index tensor on `device`, made once (not one host-to-device copy per decode step)."""
    return torch.tensor(ids, dtype=torch.long, device=device)


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                  suppressed: tuple[int, ...] = (), keep: torch.Tensor | None = None) -> torch.Tensor:
    """The logits of the distribution we sample from: suppressed tokens removed, tempered, then top-k,
    then top-p (nucleus); temperature 0 (greedy) stops after the suppression. logits (..., V) float32.
    Filtered-out entries become -inf. Shared by the sampler and the scorer, so training log-probs use
    exactly the sampling distribution. `keep` (...,) token ids that top-k and top-p never drop: the
    scorer's sampled tokens, since its logits differ from the sampler's by rounding (bf16 on a GPU), which
    can move a drawn token just outside its own top-k or top-p set (a log-prob of -inf: a ratio of 0, no
    gradient, and k3's KL NaN)."""
    if suppressed:
        logits = logits.index_fill(-1, _index(suppressed, logits.device), float("-inf"))
    if temperature == 0:  # greedy: the argmax of what remains (top-k/top-p cannot change an argmax)
        return logits
    if temperature != 1.0:  # (dividing by 1 changes no number: one kernel fewer per decode step)
        logits = logits / temperature
    kept = (lambda drop: drop) if keep is None else (lambda drop: drop.scatter(-1, keep[..., None], False))
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(kept(logits < kth), float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, -1)
        # drop a token when the tokens before it already reach top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(kept(drop), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, temperature: float, top_k, top_p, generator,
                suppressed: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row and its log-prob under the distribution it was drawn from. logits (B, V).
    temperature 0 is greedy (argmax) and the log-prob of a point mass is 0."""
    logits = logits.float()
    if temperature == 0:
        return (filter_logits(logits, 0, None, None, suppressed).argmax(-1),
                torch.zeros(logits.shape[0], device=logits.device))
    logp = torch.log_softmax(filter_logits(logits, temperature, top_k, top_p, suppressed), -1)  # (B, V)
    # torch.multinomial's own one-sample draw (argmax of p / E with E ~ Exp(1): the same tokens from the
    # same generator), without its validity checks, which read two values back to the host every call
    race = torch.empty_like(logp).exponential_(1, generator=generator)
    tok = (logp.exp() / race).argmax(-1)  # (B,)
    return tok, logp.gather(1, tok[:, None]).squeeze(1)


def zc_logprob(logits: torch.Tensor, zc: int) -> torch.Tensor:
    """log p(zc) under the raw (untempered, unfiltered) logits (..., V), in float32: the self-reward's
    readout (docs/laser.md §1). (log_softmax is one fused kernel on CUDA; logsumexp would be several.)"""
    return torch.log_softmax(logits.float(), -1)[..., zc]


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in prompts)
    idx = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    valid = torch.zeros(len(prompts), T, dtype=torch.bool)
    for i, p in enumerate(prompts):
        idx[i, T - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, T - len(p):] = True
    return idx.to(device), valid.to(device)


def _check(model, prompts, num_samples, max_new_tokens):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty token lists")
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples and max_new_tokens must be >= 1 (got {num_samples}, {max_new_tokens})")
    longest = max(len(p) for p in prompts) + max_new_tokens + 1
    if longest > model.cfg.block_size:
        raise ValueError(f"longest prompt + max_new_tokens + 1 = {longest} exceeds block_size "
                         f"{model.cfg.block_size}")


def _finish(tokenizer, prompts, K, tokens, lengths, logprobs, finished, logp_zc, temperature, top_k, top_p,
            suppressed):
    T = tokens.shape[1]
    mask = torch.arange(T, device=tokens.device)[None, :] < lengths[:, None]  # (N, T) by position
    tokens = tokens.masked_fill(~mask, tokenizer.pad_id)
    logprobs = logprobs.masked_fill(~mask, 0.0)
    texts = []
    for row, n, fin in zip(tokens.tolist(), lengths.tolist(), finished.tolist()):
        texts.append(tokenizer.decode(row[: n - 1] if fin else row[:n]))
    return Rollouts([list(p) for p in prompts], K, tokens, mask, logprobs, finished, logp_zc, texts,
                    temperature, top_k, top_p, suppressed)


@torch.no_grad()
def sample(model, prompts: list[list[int]], num_samples: int, max_new_tokens: int, temperature: float = 1.0,
           top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
           *, tokenizer, score: bool = True, compact: bool = True, fixed: bool | None = None,
           check_every: int | None = None, progress: str = "") -> Rollouts:
    """Sample `num_samples` responses per prompt with a KV cache; see the module docstring.

    Rows are ordered prompt-major: row p * num_samples + k is sample k of prompt p.
    `fixed` picks the decode loop: the fixed-shape one (default on CUDA; `check_every` steps between its
    host checks for "every row finished", CHECK_EVERY unless given) or the compacting one (default
    elsewhere); the fixed loop draws the same tokens as the compacting one with `compact=False`.
    `score=False` skips the self-reward readout (only for measuring its cost); `compact=False` keeps
    finished rows in the compacting loop's batch (tests and benchmarks). `progress`: a label for the line a
    long call prints about where it is, at most once every config.PROGRESS_EVERY_S seconds (a large call on
    a slow device); none without one.
    """
    _check(model, prompts, num_samples, max_new_tokens)
    dev = model.lm_head.weight.device
    eos, zc, K = tokenizer.eos_id, tokenizer.zc_id, num_samples
    suppressed = suppressed_ids(tokenizer)
    idx, valid = _left_pad(prompts, tokenizer.pad_id, dev)
    P, Tp = idx.shape
    N = P * K
    fixed = fixed if fixed is not None else dev.type == "cuda"
    check_every = CHECK_EVERY if check_every is None else check_every
    if check_every < 1:
        raise ValueError(f"check_every must be at least 1, got {check_every}")
    need = Tp + max_new_tokens + 1
    cache = model.new_cache(P, fixed_cache_len(need) if fixed else need)
    logits = model(idx, cache=cache, valid=valid, last_only=True)[:, -1]  # (P, V)
    rows = torch.arange(P, device=dev).repeat_interleave(K)  # (N,) prompt of each row
    logits = logits[rows]  # every row samples its own first token from its prompt's last logits
    out = dict(tokens=torch.full((N, max_new_tokens), tokenizer.pad_id, dtype=torch.long, device=dev),
               logprobs=torch.zeros(N, max_new_tokens, device=dev),
               lengths=torch.zeros(N, dtype=torch.long, device=dev),
               finished=torch.zeros(N, dtype=torch.bool, device=dev),
               logp_zc=torch.full((N,), float("nan"), device=dev))
    step = functools.partial(sample_next, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
                             suppressed=suppressed)
    clock = _progress_line(progress, max_new_tokens)
    if fixed:
        _decode_fixed(model, cache, rows, logits, out, step, eos=eos, zc=zc, score=score, check_every=check_every,
                      clock=clock)
    else:
        _decode_compact(model, cache.select(rows), logits, out, step, eos=eos, zc=zc, score=score, compact=compact,
                        clock=clock)
    return _finish(tokenizer, prompts, K, out["tokens"], out["lengths"], out["logprobs"], out["finished"],
                   out["logp_zc"], temperature, top_k, top_p, suppressed)


def _progress_line(label: str, total: int):
    """A function of (step t, `alive`: a bool tensor, True for the rows still sampling, rows in all) that
    prints "label: token t+1/total, k of N rows still sampling" when config.PROGRESS_EVERY_S seconds have passed
    since the call began or its last line; a no-op without a label. It counts `alive` (a kernel and a host
    sync on a GPU) only when it prints."""
    if not label:
        return lambda t, alive, n: None
    last = [time.monotonic()]

    def tick(t: int, alive: torch.Tensor, n: int) -> None:
        if time.monotonic() - last[0] >= config.PROGRESS_EVERY_S:
            print(f"{label}: token {t + 1}/{total}, {int(alive.sum())} of {n} rows still sampling", flush=True)
            last[0] = time.monotonic()
    return tick


def _decode_compact(model, cache, logits, out, step, *, eos, zc, score, compact, clock):
    """The CPU decode loop: the batch shrinks as rows finish (compute is per row). Fills `out` in place."""
    tokens, logprobs, lengths, finished, logp_zc = (out[k] for k in ("tokens", "logprobs", "lengths", "finished",
                                                                    "logp_zc"))
    N, max_new_tokens = tokens.shape
    active = torch.arange(N, device=tokens.device)  # global row of each cache row
    alive = torch.ones(N, dtype=torch.bool, device=tokens.device)  # cache rows still generating
    for t in range(max_new_tokens):
        tok, lp = step(logits)  # (A,), (A,)
        rows_alive = active[alive]
        tokens[rows_alive, t] = tok[alive]
        logprobs[rows_alive, t] = lp[alive]
        lengths[rows_alive] += 1
        just_done = alive & (tok == eos)  # (A,)
        finished[active[just_done]] = True
        alive = alive & ~just_done
        last_step = t == max_new_tokens - 1
        need_score = score and bool(just_done.any())
        if (last_step or not alive.any()) and not need_score:
            break
        # feed the sampled tokens back in; for rows that just sampled EOS this is the EOS position,
        # whose next-token distribution holds the self-reward (docs/laser.md §1)
        logits = model(tok[:, None], cache=cache)[:, -1]  # (A, V)
        if need_score:
            logp_zc[active[just_done]] = zc_logprob(logits[just_done], zc)
        if last_step or not alive.any():
            break
        clock(t, alive, N)
        if compact and (~alive).sum() * 2 >= len(alive):
            keep = alive.nonzero().squeeze(1)
            cache, logits, active = cache.select(keep), logits[keep], active[keep]
            alive = alive[keep]


def _decode_fixed(model, prefill, rows, logits, out, step, *, eos, zc, score, check_every, clock):
    """The GPU decode loop: every row stays in the batch (a finished row's outputs are ignored), each
    step is `model.decode_step` at a slot held on the device, and the host only asks "is every row
    finished?" every `check_every` steps, reading each answer at the next check (LAGGED_CHECK). The sampled
    tokens equal `_decode_compact`'s without compaction. Fills `out`."""
    tokens, logprobs, lengths, finished, logp_zc = (out[k] for k in ("tokens", "logprobs", "lengths", "finished",
                                                                    "logp_zc"))
    N, max_new_tokens = tokens.shape
    dec = _decoder(model, N, prefill, zc if score else None)
    dec.cache.load(prefill, rows)  # the prompts' cache, copied to their K rows each
    slots = torch.arange(prefill.length, prefill.length + max_new_tokens, device=tokens.device)
    alive = torch.ones(N, dtype=torch.bool, device=tokens.device)  # ~finished (kept so, one kernel fewer a step)
    any_alive = _HostFlag(tokens.device)
    for t in range(max_new_tokens):
        tok, lp = step(logits)  # (N,), (N,)
        tokens[:, t], logprobs[:, t] = tok, lp  # kept only up to each row's length (_finish)
        lengths += alive
        just_done = (tok == eos) & alive
        alive ^= just_done
        # rows that just sampled EOS: the logits at its position, and (score) their log p(z_c), docs/laser.md §1
        logits, zc_now = dec.step(model, tok, slots[t:t + 1], prefill.length + t + 1)
        if score:  # kept for the rows that just finished (one kernel: the readout itself ran in the step)
            torch.where(just_done, zc_now, logp_zc, out=logp_zc)
        if (t + 1) % check_every == 0:
            if LAGGED_CHECK:  # the last check's answer (the device still has the steps since queued)
                if not any_alive.read():
                    break
                any_alive.post(alive.any())
            elif not bool(alive.any()):  # (waits for the device to finish every step queued)
                break
        clock(t, alive, N)
    torch.logical_not(alive, out=finished)


class _HostFlag:
    """A bool tensor's value brought to the host without waiting for the device: `post` queues its copy into
    pinned memory, `read` returns the value last posted (True before any), waiting only for that copy. On
    CPU the copy is made at once."""

    def __init__(self, device: torch.device):
        cuda = device.type == "cuda"
        self.device = device
        self.value = torch.ones((), dtype=torch.bool, pin_memory=cuda)
        self.copied = torch.cuda.Event() if cuda else None

    def post(self, x: torch.Tensor) -> None:
        self.value.copy_(x, non_blocking=True)
        if self.copied is not None:  # (on x's device's stream, whichever device is current)
            self.copied.record(torch.cuda.current_stream(self.device))

    def read(self) -> bool:
        if self.copied is not None:
            self.copied.synchronize()  # (waits, if at all, with the steps queued since the copy still to run)
        return bool(self.value)


# the fixed loop's check "is any row still sampling?" is answered one check late (`_HostFlag`): a check that
# waits for its answer (False) lets the device run dry every check_every steps while the host queues the
# next step's sampler before its graph (what that costs, an estimate: docs/gpu.md, "Three changes since";
# bench.py's .sync_check decode beside it). The price: a call whose rows all finish runs up to one check
# more: with checks every 4 steps, up to 7 steps past the end, as the checks every 8 steps that waited ran
LAGGED_CHECK = True
CHECK_EVERY = 4  # the fixed loop's steps between two checks (sample's check_every, unless given)
CUDA_GRAPHS = True  # replay the fixed-shape decode step from a CUDA graph on CUDA (False: run it eagerly)
COMPILE_DECODE = True  # on CUDA, the fixed-shape decode step's blocks compiled by inductor (False: eager kernels)
_DECODERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # model -> its _FixedDecoders, newest last


def _decoder(model, N: int, prefill, zc: int | None = None) -> "_FixedDecoder":
    """The model's decoder for N rows on caches shaped like `prefill` (reading log p(zc) at each step
    unless zc is None), its weights brought up to date. The three last used are kept (an RL run samples
    one shape every step, and validates on another); the key holds the weights' addresses, which a graph
    reads in place, and the attention's kernels, cache layout and windows (model.DECODE_ATTENTION, a cache's
    key_bias, WINDOW and SPARE_SLOTS)."""
    cuda = model.lm_head.weight.device.type == "cuda"
    shape = (N, prefill.max_len, prefill.k[0].dtype, prefill.key_bias,
             torch.is_autocast_enabled(prefill.valid.device.type), tuple(p.data_ptr() for p in model.parameters()),
             zc, tuple(model_lib.DECODE_ATTENTION), WINDOW, SPARE_SLOTS)
    key = lambda: (CUDA_GRAPHS and cuda, COMPILE_DECODE and cuda) + shape  # the flags as they stand now
    pool = _DECODERS.setdefault(model, OrderedDict())
    if key() not in pool:
        while len(pool) >= 3:  # the oldest goes first: its cache is freed before the new one is made
            pool.popitem(last=False)
        graph, compiled = key()[:2]
        dec = _FixedDecoder(model, N, prefill.max_len, graph, compiled, zc)
        pool[key()] = dec  # (after a fallback, under the flags it turned off: what the decoder does)
    k = key()
    pool.move_to_end(k)
    pool[k].refresh(model)
    return pool[k]


def autocast_copy(model, dtype: torch.dtype):
    """A copy of `model` for decoding under autocast to `dtype`, with its Linear layers' weights already
    in `dtype` (the float32 output head excepted), and the (copy, model) parameter pairs that `refresh`
    copies. Same logits as the model under autocast: the same casts, made once instead of every step."""
    net = copy.deepcopy(model).requires_grad_(False)
    for p in net.parameters():
        p.grad = None  # (deepcopy copies a gradient the model holds)
    for m in net.modules():
        if isinstance(m, torch.nn.Linear) and m is not net.lm_head:
            m.to(dtype)
    return net, list(zip(net.parameters(), model.parameters()))


def _block_step(block, x, cos, sin, layer, kv, mask, slot):
    """One block of `decode_step`: the function the decoder compiles. A code object of its own (the
    training forward compiles Block.forward, and the two would share torch.compile's limit on
    recompiles), taking the block as an argument: one compiled graph serves every block of every
    decoder's weight copy (`compiled_blocks`)."""
    return block(x, cos, sin, layer, kv, mask, slot)


def compiled_blocks(net) -> list:
    """net's blocks as `decode_step` calls them, through `_block_step` compiled by inductor: every size
    symbolic from the start (dynamic=True), so that one graph serves every batch and window (no window
    spans a whole cache: SPARE_SLOTS), two more a single row, and a few more any size that happens to
    equal another when first traced (torch compiles such shapes apart: on small on CUDA with windows of 64,
    the first window and the head dimension, 56 + 1 padded to 64; on tiny, a first window of 32 slots and
    its head dimension of 32). Letting torch.compile mark sizes dynamic as they change instead took 8 graphs,
    its default limit, for four batch and cache shapes on CPU. Every compile happens in
    `_FixedDecoder._compile`, never during a step."""
    step = torch.compile(_block_step, dynamic=True, fullgraph=True)
    return [functools.partial(step, block) for block in net.blocks]


# the fixed loop's attention reads the cache's first slots in multiples of this, one graph each: a step reads
# the slots written so far rounded up to a window, so a smaller window reads fewer unwritten slots and
# captures more graphs. The 512-row decode of results/small/h100_5aacde5 (192 new tokens after a prompt of
# 37, by its profile's kernel counts) read 165 slots a step on average with windows of 64; windows of 32
# read 149. Its cuDNN attention took 50 µs a layer over 109 slots on average and 72 µs at 192: about 0.26
# µs a slot, so about 34 µs less of a 1.1 ms step (8 layers), 3%. Windows of 32 since 023616b, with 8 graphs
# a decoder where there were 4; not yet run on a card (bench.py's .window64 and .window16 decodes beside it)
WINDOW = 32
# slots the fixed loop's caches hold past their last window, never read: compiled blocks compile a graph of
# their own for a window that spans a whole cache, and on an H100 that graph called the memory-efficient
# attention kernel for the 37 of a 192-token decode's steps whose window was the whole cache, where the one
# graph of the other windows called cuDNN's (results/small/h100_5aacde5). With these slots the last window
# is one more window of that graph (on CPU at small's shape: one graph for 8 rows, the size of n_head, and one
# for 512; without the spare slots, two more); not yet run on a card (bench.py's .no_spare_slots decode
# beside it)
SPARE_SLOTS = 8


def fixed_cache_len(need: int) -> int:
    """The fixed loop's cache length for `need` slots: a multiple of WINDOW (calls whose longest prompts
    differ share one decoder and its graphs), and SPARE_SLOTS past it."""
    return round_up(need, WINDOW) + SPARE_SLOTS


class _FixedDecoder:
    """`model.decode_step` on a KV cache of its own, of one shape, attending over the cache's first WINDOW,
    2 WINDOW, ... slots (a step reads only the slots written so far, rounded up to a window), up to max_len -
    SPARE_SLOTS. On CUDA:
      * the step's blocks are compiled by inductor (`COMPILE_DECODE`): the norms, RoPE, cache writes,
        casts and residual adds fuse into a few kernels between the matrix products, about half of the
        eager step's kernels; if compiling fails, the blocks run eagerly from then on (a notice);
      * the step is captured as CUDA graphs (`CUDA_GRAPHS`), one per window, and replayed: one launch
        per token instead of one per kernel. If capture fails, it is tried once more with eager blocks
        (where they were compiled), and after that this and every later step run without graphs (a
        notice each);
      * with graphs under autocast the step runs a copy of the model whose Linear weights are already in the
        autocast dtype, refreshed from the model before every rollout (`refresh`): the casts autocast
        would make at every step are made once, and the graphs see every optimizer step."""

    def __init__(self, model, N: int, max_len: int, graph: bool, compiled: bool = False, zc: int | None = None):
        global CUDA_GRAPHS, COMPILE_DECODE
        dev = model.lm_head.weight.device
        self.zc = zc  # each step also reads log p(zc) from its logits (in the graph, where there is one)
        self.cache = model.new_cache(N, max_len)  # in the autocast dtype, as the prefill's
        self.tok = torch.zeros(N, dtype=torch.long, device=dev)
        self.slot = torch.zeros(1, dtype=torch.long, device=dev)
        top = max_len - SPARE_SLOTS  # the slots steps may use
        if top < 1:
            raise ValueError(f"a decoder's cache of {max_len} slots holds no slot past its {SPARE_SLOTS} spare ones")
        self.window = WINDOW  # (as it was when this decoder was made)
        self.windows = [min(w, top) for w in range(WINDOW, top + WINDOW, WINDOW)]
        # the bf16 copy, if any (never the model itself: the pool holding this decoder is keyed weakly by it)
        self.graphs, self.net, self.pairs, self.blocks = {}, None, [], None
        on = graph and torch.is_autocast_enabled("cuda")
        if on and torch.get_autocast_dtype("cuda") != torch.float32:
            self.net, self.pairs = autocast_copy(model, torch.get_autocast_dtype("cuda"))
        ctx = (lambda: torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)) if on \
            else contextlib.nullcontext
        if compiled:
            self._compile(self.net or model, ctx)
        while graph:
            try:
                self._capture(self.net or model, ctx)
                break
            except torch.cuda.OutOfMemoryError:
                self.graphs = {}
                raise
            except RuntimeError as e:
                self.graphs, why = {}, config.first_line(e)
                torch.cuda.synchronize()
                if self.blocks is not None:  # compiled code that a graph cannot hold: once more with eager blocks
                    COMPILE_DECODE, self.blocks = False, None
                    print(f"note: CUDA graph capture of the compiled decode step failed ({why}); its blocks run "
                          f"eagerly from now on (rollout.COMPILE_DECODE = False)", file=sys.stderr)
                    continue
                CUDA_GRAPHS = False  # a second failure: no more attempts (a failed capture can spoil the stream)
                print(f"note: CUDA graph capture of the decode step failed ({why}); "
                      f"decoding without graphs from now on (rollout.CUDA_GRAPHS = False)", file=sys.stderr)
                break

    def _run(self, net, window: int):
        return self._read(net.decode_step(self.tok, self.cache, self.slot, window, self.blocks))

    def _read(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return logits, None if self.zc is None else zc_logprob(logits, self.zc)

    @torch.no_grad()  # (as every step runs: grad mode is one of the compiled code's guards)
    def _compile(self, net, ctx):
        """The blocks compiled, and compiled for every window's shape now (a compile, and the first launch
        that tunes a kernel, cannot happen inside a graph capture); eager blocks if that fails."""
        global COMPILE_DECODE
        self.blocks = compiled_blocks(net)
        try:
            # room for the versions a process collects (compiled_blocks), above torch's default of 8 (the
            # setting's name before torch 2.7: cache_size_limit)
            limit = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
            with ctx(), torch._dynamo.config.patch(**{limit: 64}):
                for window in self.windows:
                    self._run(net, window)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 (any compiler failure; eager blocks: the same numbers up to rounding)
            COMPILE_DECODE, self.blocks = False, None
            print(f"note: torch.compile of the decode step failed ({type(e).__name__}: "
                  f"{config.first_line(e)}); its blocks run eagerly from now on "
                  f"(rollout.COMPILE_DECODE = False)", file=sys.stderr)

    @torch.no_grad()
    def _capture(self, net, ctx):
        # autocast's cache of cast weights off (ctx): a cached copy would be stale after the next update
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), ctx():
            for window in self.windows[:1] + self.windows:  # warm-up outside the graph (workspaces, kernel choice)
                self._run(net, window)
        torch.cuda.current_stream().wait_stream(side)
        # a compile cannot run inside a capture: a guard that fails now is an error (and eager blocks next)
        with torch.compiler.set_stance("fail_on_recompile"):
            for window in self.windows:
                graph = torch.cuda.CUDAGraph()
                # thread_local: another thread (a prefetch thread) may pin host memory meanwhile, not part of the graph
                with torch.cuda.graph(graph, capture_error_mode="thread_local"), ctx():
                    self.graphs[window] = graph, self._run(net, window)

    @torch.no_grad()
    def refresh(self, model):
        """The copy's weights from the model's (their current values, cast)."""
        for mine, theirs in self.pairs:
            mine.copy_(theirs)

    @torch.no_grad()
    def step(self, model, tok: torch.Tensor, slot: torch.Tensor, used: int
             ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (N, V) after feeding `tok` at cache slot `slot`, with `used` slots written including it,
        and log p(zc) (N,) from them (None if the decoder has no zc). With graphs these are a graph's
        output buffers, overwritten by its next replay: use them before calling again."""
        if used > self.windows[-1]:
            raise ValueError(f"{used} slots written, more than this decoder's {self.windows[-1]}")
        window = min(round_up(used, self.window), self.windows[-1])
        if not self.graphs:
            return self._read((self.net or model).decode_step(tok, self.cache, slot, window, self.blocks))
        graph, out = self.graphs[window]
        self.tok.copy_(tok)
        self.slot.copy_(slot)
        graph.replay()
        return out


@torch.no_grad()
def sample_naive(model, prompts: list[list[int]], num_samples: int, max_new_tokens: int,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, *, tokenizer) -> Rollouts:
    """Reference sampler: no cache, the whole (left-padded) sequence is recomputed at every step.
    Same outputs as `sample` for greedy decoding; kept for tests and the benchmark."""
    _check(model, prompts, num_samples, max_new_tokens)
    dev = model.lm_head.weight.device
    eos, zc, K = tokenizer.eos_id, tokenizer.zc_id, num_samples
    suppressed = suppressed_ids(tokenizer)
    idx, valid = _left_pad(prompts, tokenizer.pad_id, dev)
    idx, valid = idx.repeat_interleave(K, 0), valid.repeat_interleave(K, 0)
    N = idx.shape[0]
    tokens = torch.full((N, max_new_tokens), tokenizer.pad_id, dtype=torch.long, device=dev)
    logprobs = torch.zeros(N, max_new_tokens, device=dev)
    lengths = torch.zeros(N, dtype=torch.long, device=dev)
    finished = torch.zeros(N, dtype=torch.bool, device=dev)
    logp_zc = torch.full((N,), float("nan"), device=dev)
    for t in range(max_new_tokens + 1):
        logits = model(idx, valid=valid)[:, -1].float()  # (N, V) full recompute
        just = finished & torch.isnan(logp_zc)  # rows whose EOS is the last input: score them
        logp_zc[just] = zc_logprob(logits[just], zc)
        if t == max_new_tokens or bool(finished.all()):
            break
        tok, lp = sample_next(logits, temperature, top_k, top_p, generator, suppressed)
        run = ~finished
        tokens[run, t], logprobs[run, t] = tok[run], lp[run]
        lengths[run] += 1
        finished = finished | (run & (tok == eos))
        idx = torch.cat([idx, torch.where(run, tok, tokenizer.pad_id)[:, None]], 1)
        valid = torch.cat([valid, torch.ones(N, 1, dtype=torch.bool, device=dev)], 1)
    return _finish(tokenizer, prompts, K, tokens, lengths, logprobs, finished, logp_zc,
                   temperature, top_k, top_p, suppressed)


def score_rollouts(model, ro: Rollouts, zc_id: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable re-scoring with one full forward pass over right-padded [prompt, response].

    Returns (logp (N, T): log-prob of each response token under the sampler's temperature/top-k/top-p,
    0 off-mask; logp_zc (N,): log p(z_c) at the EOS position from untempered float32 logits, NaN for
    truncated rows). The z_c readout is a separate output and never enters the token log-probs.
    """
    dev = ro.response.device
    N, T = ro.response.shape
    prompts = [ro.prompts[i // ro.group_size] for i in range(N)]
    L = max(len(p) + n for p, n in zip(prompts, ro.lengths.tolist()))
    if dev.type == "cuda":  # (config.CUDA_LENGTH_MULTIPLE) within what the sampler allowed
        L = min(round_up(L, CUDA_LENGTH_MULTIPLE), max(map(len, prompts)) + T + 1)
    # right-padded rows: prompt, then response (with its EOS); the prompts are laid out on the host and
    # copied to the device at once
    seq = torch.tensor([p + [pad_id] * (L - len(p)) for p in prompts], dtype=torch.long).to(dev, non_blocking=True)
    plens = torch.tensor([len(p) for p in prompts]).to(dev, non_blocking=True)  # (N,)
    t_idx = torch.arange(T, device=dev)
    pos = plens[:, None] + t_idx[None, :]  # (N, T) position of response token t
    put = ro.mask
    seq[torch.arange(N, device=dev)[:, None].expand(N, T)[put], pos[put]] = ro.response[put]
    logits = model(seq)  # (N, L, V)
    # token t of the response is predicted by the logits one position earlier
    pred = logits.gather(1, (pos - 1).clamp(max=L - 1)[:, :, None].expand(N, T, logits.shape[-1]))  # (N, T, V)
    logp_all = torch.log_softmax(filter_logits(pred.float(), ro.temperature, ro.top_k, ro.top_p, ro.suppressed,
                                               keep=ro.response),
                                 -1)  # (N, T, V); temperature 0 (greedy rows): the untempered distribution
    logp = logp_all.gather(-1, ro.response[:, :, None]).squeeze(-1).masked_fill(~ro.mask, 0.0)  # (N, T)
    eos_pos = (plens + ro.lengths - 1).clamp(max=L - 1)  # (N,) the EOS position of finished rows
    logp_zc = zc_logprob(logits[torch.arange(N, device=dev), eos_pos], zc_id)  # (N,)
    logp_zc = torch.where(ro.finished, logp_zc, torch.full_like(logp_zc, float("nan")))
    return logp, logp_zc


# ----------------------------------------------------------------------------- sampling for training and evaluation

def step_generator(stage: str, seed: int, step: int, device) -> torch.Generator:
    """The sampling generator of one step: a pure function of (stage, seed, step), from a hash so that
    every step, seed and stage draws its own stream. torch's CPU generator (mt19937) keeps only the
    low 32 bits of a seed, CUDA's Philox 64: the hash is folded to what the device's generator keeps."""
    h = int.from_bytes(hashlib.sha256(f"{stage}/{seed}/{step}".encode()).digest()[:8], "little")
    g = torch.Generator(device=device)
    g.manual_seed(h % 2 ** 32 if torch.device(device).type == "cpu" else h % 2 ** 63)
    return g


def sampling_kwargs(cfg) -> dict:
    """The RL sampling distribution (temperature, top-k, top-p), shared by RL and c_ref calibration."""
    return dict(temperature=cfg.temperature, top_k=cfg.top_k or None, top_p=cfg.top_p if cfg.top_p < 1 else None)


def sample_chunks(model, tok, problems, *, num_samples: int, max_new_tokens: int, prompts_per_call: int,
                  generator, progress: str = "", **sampling):
    """Sample `problems` in calls of `prompts_per_call` prompts, in eval mode (config.autocast: bf16 on CUDA);
    yields (the call's problems, their Rollouts). The one sampling loop of RL, c_ref calibration and
    evaluation. `progress`: the label of a long call's progress lines (`sample`), with the call's number."""
    model.eval()
    device = model.lm_head.weight.device
    calls = -(-len(problems) // prompts_per_call)
    for i in range(0, len(problems), prompts_per_call):
        chunk = problems[i:i + prompts_per_call]
        label = progress and (f"{progress}, call {i // prompts_per_call + 1} of {calls}" if calls > 1 else progress)
        with autocast(device):
            ro = sample(model, [tok.encode_prompt(p.problem) for p in chunk], num_samples, max_new_tokens,
                        generator=generator, tokenizer=tok, progress=label, **sampling)
        yield chunk, ro


def calibrate_c_ref(model, tok, cfg, outside=()) -> tuple[float, float, int]:
    """docs/laser.md §5: log pi_ref(z_c | x, y) at the EOS of the reference policy's own solutions,
    sampled as RL samples, on RL's problem mix (generated, and a --data_mix share of the `outside`
    problems RL draws from). Returns (mean, std, number of finished samples)."""
    probs = train_problems(cfg, 0, cfg.calib_prompts, f"calib-{cfg.seed}", outside)
    g = step_generator("calib", cfg.seed, 0, model.lm_head.weight.device)
    vals = []
    for _, ro in sample_chunks(model, tok, probs, num_samples=cfg.calib_samples, max_new_tokens=cfg.max_new_tokens,
                               prompts_per_call=cfg.eval_batch, generator=g, progress="c_ref calibration",
                               **sampling_kwargs(cfg)):
        vals += ro.logp_zc[ro.finished].tolist()
    if not vals:
        raise UserError("no calibration sample finished; raise --max_new_tokens")
    return float(np.mean(vals)), float(np.std(vals)), len(vals)


def run_c_ref(model, tok, cfg, ck: dict, where: str) -> tuple[float, float]:
    """c_ref and beta_v to read r_s with from a run's checkpoint: an RL run's saved ones; an SFT run has
    none and is its own reference policy, so c_ref is measured on it (docs/laser.md §5), with a note."""
    beta_v, c_ref = ck.get("beta_v", cfg.beta_v), ck.get("c_ref")
    if c_ref is None:
        try:  # on the problem mix an RL run from this checkpoint calibrates on, its --data_jsonl share included
            outside = rl_outside_data(cfg, tok, model.cfg.block_size)
        except UserError as e:  # the run's file is gone, or changed
            outside = []
            print(f"{where}: note: c_ref is measured on generated problems only ({e})")
        c_ref, c_std, _ = calibrate_c_ref(model, tok, cfg, outside)
        print(f"{where}: no c_ref in this {ck['stage']} checkpoint; measured on this model: {c_ref:.3f} (std {c_std:.3f})")
    return c_ref, beta_v
