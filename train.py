"""Train a small GPT on synthetic math: SFT warm start, then RL with GRPO or LaSeR (docs/laser.md).

    python train.py --config tiny                          # SFT, then LaSeR RL (out/run/sft, out/run/laser)
    python train.py --resume                               # continue it (its saved config), after Ctrl-C, say
    python train.py --config tiny --stage sft --out_dir out/tiny/sft   # SFT only
    python train.py --config tiny --stage rl --algo grpo --init out/tiny/sft --out_dir out/tiny/grpo
    python train.py --stage rl --resume --out_dir out/tiny/grpo   # continue one stage's run
    python train.py --config tiny --data_jsonl mine.jsonl --data_mix 0.5   # outside problems (README): their
        # train-split share of every SFT batch and RL step; validation during training stays on generated ones
    python train.py --help                                 # every knob, with its meaning

sft  next-token loss on generated worked solutions (solution tokens and EOS only); validation accuracy
     every --eval_every steps (the test split is only for evaluate.py).
rl   from an SFT checkpoint: measure c_ref on it (§5, on the step's problem mix); per step sample K rollouts per problem (the sampler
     reads log p(z_c) at each EOS), reward them with verify.py and update with PPO-clipped GRPO, plus for
     --algo laser the MSE of r_s against the reward (§2) and advantage integration (§3), scheduled (§4).

Simplifications: no KL term by default (as in the paper; no reference model then), no entropy bonus, no
value model; with one update per batch (ppo_epochs=1) the PPO ratio is 1 up to the rounding differences
between sampler and trainer (ppo_epochs > 1 makes the clip real). A run directory holds config.json,
tokenizer.json, ckpt.pt, metrics.jsonl and, for RL, samples.jsonl (runs.py). Under torchrun each process
takes a share of every step (README). Problems and sampling seeds are pure functions of (seed, step):
--resume is bit-identical on CPU to an uninterrupted run. Bad input and a diverged run (--max_skipped bad
steps in a row) end in one line on stderr, exit code 2. Ctrl-C or SIGTERM: the step in progress finishes,
a checkpoint is saved, and a line says how to resume (a second signal stops at once). A run is never
overwritten: a fresh start where one is moves it aside first (OUT.1, ...), with a notice.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from dataclasses import asdict

import numpy as np
import torch

import config
import rollout
import tasks
import verify
from config import (CUDA_LENGTH_MULTIPLE, PATH_FIELDS, Config, UserError, autocast, check_config, check_lengths,
                    corpus_for_tokenizer, get_device, heldout_problems, load_outside, out_of_memory,
                    outside_data_that_fits, outside_train_data, resolve_config, rl_outside_data, round_up, run_dir_of,
                    same_setting, train_problems)
from hf import load_pretrained
from loss import (aggregate_loss, check_c_ref, group_advantages, group_class_weights, integrate_advantages, kl_penalty,
                  laser_mse_loss, ppo_clip_loss, self_reward_score)
from metrics import self_verification_metrics
from rollout import Rollouts, calibrate_c_ref, sample_chunks, sampling_kwargs, score_rollouts, step_generator
from runs import (MetricsLog, SkipGuard, Stopped, all_sum, arm_stop, batch_workers, broadcast, check_same_data,
                  checkpoint, clip_and_step, clip_and_step_deferred, close_distributed, data_digest, gather,
                  helper_process_init, init_distributed, launched_by_torchrun, load_run, make_optimizer,
                  make_run_dir, new_model, prefetch, rank, resume_run, run_then_exit, saved_config, seed_everything,
                  shard, skips_on_device, stop_gracefully, stop_requested, sync_grads, training_forward, world_size,
                  write_json, write_text)
from tokenizer import Tokenizer, build_tokenizer


# ============================================================================ shared by both stages

def lr_at(step: int, total: int, peak: float, warmup: int, min_frac: float) -> float:
    """Linear warm-up, then cosine decay towards peak * min_frac, steps counted from 0: steps warmup - 1
    and warmup run at the peak, and the cosine would reach the floor at step `total`, one past the last
    (the last of small's 1,000 SFT steps runs 3.5e-6 of the peak above it; the last of 30, 2.6e-3). Kept so:
    moving it by a step would change every committed run's numbers in their last digits."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> float:
    for group in opt.param_groups:
        group["lr"] = lr
    return lr


def fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


@torch.no_grad()
def heldout_eval(model, tok, problems, cfg: Config, c_ref: float | None = None) -> dict:
    """One sample per validation problem at temperature 1 (fixed generator): accuracy overall and per
    family, and, when c_ref is known, self-verification of r_s on those samples. Rank 0 only ({} elsewhere)."""
    if rank() != 0:
        return {}
    g = step_generator("eval", cfg.seed, 0, model.lm_head.weight.device)
    correct, finished, logp_zc = [], [], []
    for chunk, ro in sample_chunks(model, tok, problems, num_samples=1, max_new_tokens=cfg.max_new_tokens,
                                   prompts_per_call=cfg.eval_batch, generator=g, temperature=1.0,
                                   progress="validation"):
        fin = ro.finished.tolist()
        correct += [verify.reward(t, p.answer, f) == 1.0 for t, p, f in zip(ro.texts, chunk, fin)]
        finished += fin
        logp_zc += ro.logp_zc.tolist()
    out = {"eval_acc": float(np.mean(correct)), "eval_truncated": 1 - float(np.mean(finished))}
    for fam in sorted({p.family for p in problems}):
        out[f"eval_acc_{fam}"] = float(np.mean([c for c, p in zip(correct, problems) if p.family == fam]))
    if c_ref is not None and math.isfinite(c_ref):
        r_s = self_reward_score(torch.tensor(logp_zc, dtype=torch.float64), c_ref, cfg.beta_v).numpy()
        sv = self_verification_metrics(r_s, correct, finished)
        out.update({f"eval_sv_{k}": sv[k] for k in ("tpr", "tnr", "f1", "auroc")})
    return out


# ============================================================================ SFT

def sft_rows(tok: Tokenizer, problems) -> list[tuple[list[int], int]]:
    """Each problem's row [BOS, problem, \\n, solution, EOS] and the length of its prompt part (encoded once)."""
    out = []
    for p in problems:
        prompt = tok.encode_prompt(p.problem)
        out.append((prompt + tok.encode(p.solution) + [tok.eos_id], len(prompt)))
    return out


def _padded_length(longest: int, pad_to: int, cap: int) -> int:
    """`longest` rounded up to a multiple of `pad_to`, but not past `cap` (the model's block size) when given."""
    return max(longest, min(round_up(longest, pad_to), cap or longest + pad_to))


def _sft_tensors(rows, pad_id: int, pad_to: int = 1, cap: int = 0) -> tuple[torch.Tensor, ...]:
    """Right-padded rows as inputs (B, L-1), targets (B, L-1) and the loss mask (B, L-1): True where the
    target is a solution token or the EOS (by position), L-1 rounded up to a multiple of `pad_to` but not
    past `cap` (the model's block size) when given. On the host."""
    longest = max(len(r) for r, _ in rows) - 1
    L = _padded_length(longest, pad_to, cap) + 1
    seq = torch.tensor([r + [pad_id] * (L - len(r)) for r, _ in rows], dtype=torch.long)
    pos = torch.arange(1, L)[None, :]  # position of each target
    lens = torch.tensor([len(r) for r, _ in rows])[:, None]
    mask = (pos >= torch.tensor([s for _, s in rows])[:, None]) & (pos < lens)  # (B, L-1)
    return seq[:, :-1], seq[:, 1:], mask


def _packed_tensors(packs, pad_id: int, pad_to: int = 1, cap: int = 0) -> tuple[torch.Tensor, ...]:
    """Packed rows, each a list of (row, prompt length): per packed row its rows' inputs one after another,
    their targets and loss mask (each row's as in _sft_tensors) and segment ids (1, 2, ... per row; 0 on the
    padding at the end), right-padded to a common length as _sft_tensors pads. (B, L-1) each."""
    cols = []
    for pack in packs:
        x, y, m, seg = [], [], [], []
        for k, (r, s) in enumerate(pack, 1):
            x += r[:-1]
            y += r[1:]
            m += [j >= s for j in range(1, len(r))]
            seg += [k] * (len(r) - 1)
        cols.append((x, y, m, seg))
    longest = max(len(c[0]) for c in cols)
    n = _padded_length(longest, pad_to, cap)

    def padded(i: int, fill, dtype) -> torch.Tensor:  # column i of every packed row, filled up to n
        return torch.tensor([c[i] + [fill] * (n - len(c[i])) for c in cols], dtype=dtype)
    return (padded(0, pad_id, torch.long), padded(1, pad_id, torch.long), padded(2, False, torch.bool),
            padded(3, 0, torch.long))


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Row indices grouped into packs of at most `capacity` tokens in all (first fit, longest first; a row
    longer than `capacity` goes alone)."""
    packs, room = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fit = next((b for b, r in enumerate(room) if lengths[i] <= r), None)
        if fit is None:
            packs.append([i])
            room.append(capacity - lengths[i])
        else:
            packs[fit].append(i)
            room[fit] -= lengths[i]
    return packs


def pinned(batches: list[tuple[torch.Tensor, ...]]) -> list[tuple[torch.Tensor, ...]]:
    """The micro-batches in pinned host memory, from which a non-blocking copy to CUDA does not wait for
    the device (from pageable memory it would)."""
    return [tuple(t.contiguous().pin_memory() for t in b) for b in batches]  # (a pinned view copies unpinned)


def sft_batch(tok: Tokenizer, problems, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One right-padded batch of `problems` on `device` (see _sft_tensors)."""
    return tuple(t.to(device) for t in _sft_tensors(sft_rows(tok, problems), tok.pad_id))


def micro_batches(lengths: list[int], max_rows: int, max_tokens: int = 0) -> list[list[int]]:
    """Row indices sorted by length, cut into micro-batches of at most `max_rows` rows and, with
    `max_tokens`, at most that many padded tokens (rows x its longest row; a longer row goes alone).
    Each micro-batch is padded only to its own longest row."""
    out, cur = [], []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if cur and (len(cur) == max_rows or max_tokens and (len(cur) + 1) * lengths[i] > max_tokens):
            out.append(cur)
            cur = []
        cur.append(i)
    return out + [cur] if cur else out


def sft_step_batches(tok: Tokenizer, problems, micro_batch: int, micro_tokens: int = 0, pad_to: int = 1,
                     block_size: int = 0, pack: bool = False, row_multiple: int = 1):
    """The micro-batches of one SFT step, built on the host (see micro_batches); returns (batches, real
    input tokens: each row minus its last token). Lengths rounded up to a multiple of `pad_to` (for
    CUDA, config.CUDA_LENGTH_MULTIPLE), within `block_size`. Batches are (inputs, targets, loss mask), or
    with `pack` (inputs, targets, loss mask, segments): the rows packed into rows of at most `block_size`
    tokens (pack_rows), so that a batch is nearly all real tokens, not half padding (model.GPT.forward's
    `segments` keeps each row to itself); the micro-batch caps then count packed rows, and with
    `row_multiple`, where the step is one micro-batch, its packed rows are made a multiple of it by rows of
    padding, which carry no loss and may take it up to row_multiple - 1 rows past the caps (--sft_graphs,
    whose graphs are recorded per shape, for steps of one micro-batch: sft_row_multiple)."""
    rows = sft_rows(tok, problems)
    lengths = [len(r) - 1 for r, _ in rows]
    if not pack:
        return [_sft_tensors([rows[i] for i in c], tok.pad_id, pad_to, block_size)
                for c in micro_batches(lengths, micro_batch, micro_tokens)], sum(lengths)
    if block_size < 1:
        raise ValueError("packing SFT rows needs the model's block_size")
    packs = [[rows[i] for i in p] for p in pack_rows(lengths, block_size)]
    packed = [sum(len(r) - 1 for r, _ in p) for p in packs]
    micro = micro_batches(packed, micro_batch, micro_tokens)
    empty = [[]] * (-len(micro[0]) % row_multiple) if len(micro) == 1 else []  # rows of padding, no loss
    return [_packed_tensors([packs[i] for i in c] + empty, tok.pad_id, pad_to, block_size) for c in micro], sum(lengths)


def sft_loss_backward(model, tok: Tokenizer, problems, micro_batch: int, device, micro_tokens: int = 0,
                      forward=None) -> tuple[float, int]:
    """Accumulate the gradient of the token-mean SFT loss over `problems`; returns (loss, real tokens
    over every process). Micro-batches as in sft_step_batches; the gradient is the one of the single
    padded batch of every process's problems (see sft_backward)."""
    batches, n_real = sft_step_batches(tok, problems, micro_batch, micro_tokens)
    return float(sft_backward(model, batches, device, forward)), all_sum(n_real)


def sft_backward(model, batches, device, forward=None, n_target=None, cache: bool = True) -> torch.Tensor:
    """The backward pass of one SFT step on ready (inputs, targets, mask) micro-batches. Every micro-batch
    is normalised by the whole batch's count of trained tokens (over all processes under torchrun, whose
    gradients are then summed), or by `n_target` (a 0-dim tensor on the device) when given. `forward`: the
    training forward (runs.training_forward; default the model); `cache`: autocast's (config.autocast).
    Returns the loss (summed over processes) as a 0-dim float64 tensor on the device: no host sync."""
    if n_target is None:
        n_target = sum(int(b[2].sum()) for b in batches)  # the loss masks, counted on the host
        if world_size() > 1:  # summed over processes on the device (no host sync)
            n_target = all_sum(torch.tensor(float(n_target), dtype=torch.float64, device=device)).clamp(min=1).float()
        else:
            n_target = max(1, n_target)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for x, y, mask, *seg in batches:  # seg: the segments of packed rows
        x, y, mask, *seg = (t.to(device, non_blocking=True) for t in (x, y, mask, *seg))
        with autocast(device, cache):
            logits = (forward or model)(x, **({"segments": seg[0]} if seg else {}))  # (b, L-1, V)
        per_tok = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")
        loss = (per_tok * mask).sum() / n_target
        loss.backward()
        total += loss.detach()
    sync_grads(model)
    return all_sum(total)


def sft_step(model, opt, batches, device, forward=None, grad_clip: float = 0.0, **kw
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One SFT optimizer step on ready micro-batches: (loss, grad norm, skipped) as 0-dim tensors on the
    device (runs.clip_and_step_deferred: with fused AdamW nothing waits for the device). `kw`: sft_backward's."""
    opt.zero_grad(set_to_none=True)
    loss = sft_backward(model, batches, device, forward, **kw)
    return (loss, *clip_and_step_deferred(model, opt, grad_clip, [loss]))


GRAPH_ROW_MULTIPLE = 4  # --sft_graphs: each step's packed rows made a multiple of this (a few shapes, a graph each)


def sft_row_multiple(cfg: Config, cuda: bool) -> int:
    """The multiple a step's packed rows are made (sft_step_batches): GRAPH_ROW_MULTIPLE where SFTGraphs
    can record the steps (--sft_graphs, one process on a CUDA device), 1 where no step is recorded."""
    return GRAPH_ROW_MULTIPLE if cfg.sft_graphs and cuda and world_size() == 1 else 1


class SFTGraphs:
    """SFT steps replayed from CUDA graphs (--sft_graphs): the whole step (forward, backward, gradient
    clipping, fused AdamW) recorded once per batch shape and replayed by one launch, so that a small model's
    step does not wait for the host to launch its kernels one by one (on an H100 the small preset's step
    took about 20 ms whatever its tokens: docs/gpu_history.md). Packed rows (--sft_pack) made a multiple of
    GRAPH_ROW_MULTIPLE rows (sft_step_batches) give a step one of a few shapes. The first step of a shape
    runs as without graphs (it compiles, makes the optimizer's state and the kernels' plans), the second
    records the graph into fixed input buffers, and that step and every later one of its shape replay it
    after copying their batch in; the learning rate and the count of trained tokens are device tensors the
    graph reads, set before each replay. Every step here runs with autocast's weight cache off, the
    graphs' setting (a compiled forward is guarded on it: a change would recompile, which a capture cannot).
    The graph replays the step's own kernels: its numbers are the plain step's on the same rows, up to the
    learning rate read in float32 and the division by the token count on the device. Steps of several
    micro-batches, or of a shape past `max_graphs` (each graph keeps its own memory), run as plain steps;
    so does every step under torchrun (its loss is normalised over the processes). Where nothing can be
    captured (not CUDA, a non-fused optimizer) or a capture failed (a one-line notice), the steps run on
    the buffers uncaptured: on CPU bit for bit the plain steps, which is what the tests check."""

    max_graphs = 8

    def __init__(self, model, opt, device, forward=None, grad_clip: float = 0.0):
        self.model, self.opt, self.forward, self.grad_clip = model, opt, forward, grad_clip
        self.device = torch.device(device)
        self.single = world_size() == 1
        self.capture = self.device.type == "cuda" and skips_on_device(opt) and self.single
        if not self.capture and rank() == 0:  # (the same in every process: said once)
            print("note: --sft_graphs: no CUDA graphs here (they need one CUDA device, one process and fused "
                  "AdamW); the steps run uncaptured", file=sys.stderr)
        self.lr = torch.zeros((), dtype=torch.float32, device=self.device)  # read by the graphs' AdamW
        self.n_target = torch.ones((), dtype=torch.float32, device=self.device)  # the loss's normaliser
        self.graphs, self.seen = {}, set()  # shape -> (input buffers, run); shapes stepped once
        self.captured, self.replays = [], 0  # shapes recorded as CUDA graphs; steps replayed from them
        # warm-ups and captures on one side stream (cuBLAS keeps its handles and workspaces per stream)
        self.stream = torch.cuda.Stream(self.device) if self.capture else None

    def __call__(self, batches, lr: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step on `batches` at learning rate `lr` (the one set_lr gave the optimizer): as sft_step."""
        shape = tuple(batches[0][0].shape) if len(batches) == 1 and len(batches[0]) == 4 else None
        if shape is None or not self.single or shape not in self.graphs and len(self.graphs) >= self.max_graphs:
            return self._step(batches)
        if shape not in self.graphs:
            if shape not in self.seen:
                self.seen.add(shape)
                return self._warm_up(batches)
            self.graphs[shape] = self._record(batches[0], shape)
        bufs, run = self.graphs[shape]
        for buf, t in zip(bufs, batches[0]):
            buf.copy_(t, non_blocking=True)
        self.n_target.fill_(max(1, int(batches[0][2].sum())))  # (the mask is on the host)
        self.lr.fill_(lr)
        self.replays += shape in self.captured
        return tuple(t.clone() for t in run())  # (a graph's outputs are overwritten by its next replay)

    def _step(self, batches, **kw):
        return sft_step(self.model, self.opt, batches, self.device, self.forward, self.grad_clip, cache=False, **kw)

    def _warm_up(self, batches):
        """The first step of a shape, without a graph; on CUDA on the side stream the graphs are captured on."""
        if not self.capture:
            return self._step(batches)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            out = self._step(batches)
        torch.cuda.current_stream().wait_stream(self.stream)
        return out

    def _record(self, batch, shape):
        """Input buffers for `batch`'s shape and the step on them (captured as a graph where it can be)."""
        bufs = tuple(torch.empty_like(t, device=self.device).copy_(t, non_blocking=True) for t in batch)
        step = functools.partial(self._step, [bufs], n_target=self.n_target)
        if not self.capture:
            return bufs, step
        groups = self.opt.param_groups
        kept = [(g["lr"], g["capturable"]) for g in groups]
        try:  # the graph's AdamW reads its learning rate from self.lr (a float would be fixed in the graph)
            for g in groups:
                g["lr"], g["capturable"] = self.lr, True
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            # a compile cannot run inside a capture (the first step of the shape compiled it); thread_local:
            # only this thread's calls are checked (another may pin host memory meanwhile, outside the graph)
            with torch.compiler.set_stance("fail_on_recompile"), \
                    torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                out = step()
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as e:
            torch.cuda.synchronize()
            self.capture = False
            print(f"note: --sft_graphs: the capture of a step of shape {shape} failed "
                  f"({config.first_line(e)}); steps of new shapes run uncaptured from now on",
                  file=sys.stderr)
            return bufs, step
        finally:
            for g, (lr_g, capturable) in zip(groups, kept):
                g["lr"], g["capturable"] = lr_g, capturable  # (checkpoints keep the floats)
        self.captured.append(shape)
        return bufs, lambda: (graph.replay(), out)[1]

    def summary(self) -> str:
        return (f"--sft_graphs: {len(self.captured)} CUDA graph(s) captured "
                f"({', '.join('x'.join(map(str, s)) for s in self.captured) or 'none'}), {self.replays} steps "
                f"replayed from them")


def run_sft(cfg: Config, then_rl: bool = False) -> int:
    """SFT in cfg.out_dir (afresh, or --resume); returns the step it stopped after (sft_steps, or --halt_at)."""
    device = get_device(cfg.device)
    make_run_dir(cfg.out_dir)
    extra_data = outside_train_data(cfg) if cfg.data_jsonl else []
    data_sha = data_digest(extra_data)  # (before the length and --data_mix cuts, which a resume may change)
    if cfg.resume:
        model, tok, opt, ck = resume_run(cfg, "sft", cfg.sft_lr, device)
        check_same_data(ck, extra_data, cfg.data_jsonl)  # (before config.json is written: a refusal leaves it)
        start, guard = ck["step"], SkipGuard(cfg.max_skipped, ck)
        print(f"resumed SFT at step {start}")
    else:
        seed_everything(cfg.seed)
        if cfg.init_hf:  # a pretrained Llama/Qwen2 checkpoint and its tokenizer (hf.py)
            model, tok = load_pretrained(cfg.init_hf, cfg.block_size, device)
            cfg = pretrained_fields(cfg, model)
        else:
            tok = build_tokenizer(corpus_for_tokenizer(cfg, extra_data), cfg.bpe_merges)
            model = new_model(cfg, tok, device)
        write_text(os.path.join(cfg.out_dir, "tokenizer.json"), tok.to_json())
        opt = make_optimizer(model, cfg.sft_lr, cfg.weight_decay)
        start, guard = 0, SkipGuard(cfg.max_skipped)
    log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), resume_step=start if cfg.resume else None)
    write_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    val = heldout_problems(cfg)
    check_lengths(cfg, tok, model.cfg.block_size)
    if then_rl:  # --stage all: RL's check of the outside prompts comes before SFT's hours, not after them
        rl_outside_data(cfg, tok, model.cfg.block_size, extra_data)
    if extra_data and cfg.data_mix > 0:
        extra_data = outside_data_that_fits(cfg, extra_data, tok, model.cfg.block_size)
    else:  # --data_mix 0: the outside problems only shaped the tokenizer
        extra_data = []
    print(f"SFT: {model.num_params() / 1e6:.2f}M parameters, vocab {tok.vocab_size}, device {device}, "
          f"{cfg.sft_steps} steps x {cfg.sft_batch_size} problems")
    forward = training_forward(model, cfg.compile)

    cuda, block_size = device.type == "cuda", model.cfg.block_size

    def step_batches(step):  # a pure function of the step, built ahead (runs.prefetch): on CUDA in a process
        # generated problems and, with --data_jsonl, a --data_mix share of outside ones, by (seed, step)
        probs = shard(train_problems(cfg, step, cfg.sft_batch_size, cfg.seed, extra_data))  # this process's share
        return sft_step_batches(tok, probs, cfg.sft_micro_batch, cfg.micro_tokens, CUDA_LENGTH_MULTIPLE if cuda else 1,
                                block_size, cfg.sft_pack, sft_row_multiple(cfg, cuda))

    graphs = SFTGraphs(model, opt, device, forward, cfg.grad_clip) if cfg.sft_graphs else None

    t0, tokens_seen, last = time.time(), 0, time.time()
    # With fused AdamW (CUDA) no step waits for the device: the optimizer skips a non-finite step itself, and
    # each step's loss, grad norm and skip flag stay on the device until a log line, an evaluation, a
    # checkpoint or the 100th pending step reads them all at once. Elsewhere every step is read at once.
    defer = skips_on_device(opt)
    pending = []  # (step, lr, loss, grad norm, skipped) of steps not yet read back

    def read_back() -> dict:  # one host sync for every pending step; writes their records but the last's
        values = torch.stack([torch.stack([v.double() for v in p[2:]]) for p in pending]).tolist()
        steps = pending[:]
        pending.clear()
        for i, ((d, lr_d, *_), (loss_d, gnorm_d, skipped_d)) in enumerate(zip(steps, values)):
            guard.update(int(skipped_d), d, "SFT")  # raises after max_skipped skipped steps in a row
            r = {"step": d, "loss": loss_d, "lr": lr_d, "grad_norm": gnorm_d, "skipped_steps": guard.total}
            if i == len(steps) - 1:
                return r
            log.write(r)

    def keep_pending():  # the run is ending early (an error, Ctrl-C, SIGTERM): write the steps it has done
        if pending:
            try:
                log.write(read_back())
            except Exception as e:  # e.g. the device itself failed, or the skip guard stops here
                print(f"note: {len(pending)} SFT steps before the stop were not written to metrics.jsonl: {e}")

    steps, done = range(start, cfg.sft_steps), start
    try:
        # (the batches' generator is not named: it must close, ending its workers, when the loop is left)
        for step, (batches, n_real) in zip(steps, prefetch(step_batches, steps, process=cuda, workers=batch_workers())):
            batches = pinned(batches) if cuda else batches
            model.train()
            lr = set_lr(opt, lr_at(step, cfg.sft_steps, cfg.sft_lr, cfg.sft_warmup, cfg.min_lr_frac))
            done = step + 1
            pending.append((done, lr, *(graphs(batches, lr) if graphs else
                                        sft_step(model, opt, batches, device, forward, cfg.grad_clip))))
            tokens_seen += n_real  # this process's; summed over processes at the log line
            do_eval = cfg.eval_every and done % cfg.eval_every == 0 or done == cfg.sft_steps
            stop = stop_requested()  # Ctrl-C or SIGTERM during the step: stop after it, with a checkpoint
            save = done % cfg.ckpt_every == 0 or done == cfg.sft_steps or done == cfg.halt_at or stop
            show = (done % cfg.log_every == 0 or done == start + 1 or do_eval
                    or time.time() - last >= config.PROGRESS_EVERY_S)  # (slow steps: a preset for a GPU on a CPU)
            if defer and not (do_eval or save or show or len(pending) >= 100):
                continue
            rec = read_back()
            if do_eval:
                rec.update(heldout_eval(model, tok, val, cfg))
            if show:
                el = time.time() - t0
                rec["tokens_per_s"] = all_sum(tokens_seen) / max(1e-9, time.time() - last)
                tokens_seen, last = 0, time.time()
                eta = el / (done - start) * (cfg.sft_steps - done)
                msg = (f"sft {done:5d}/{cfg.sft_steps} loss {rec['loss']:.4f} lr {lr:.2e} "
                       f"tok/s {rec['tokens_per_s']:.0f} elapsed {fmt_time(el)} eta {fmt_time(eta)}")
                if "eval_acc" in rec:
                    msg += f" | val acc {rec['eval_acc']:.3f} (" + " ".join(
                        f"{k[9:12]} {v:.2f}" for k, v in rec.items() if k.startswith("eval_acc_")) + ")"
                print(msg, flush=True)
            log.write(rec)
            if save:
                checkpoint(os.path.join(cfg.out_dir, "ckpt.pt"), model, opt, done, cfg, tok,
                           extra={"stage": "sft", "data_sha256": data_sha, **guard.state()})
            if stop and done < cfg.sft_steps:  # (after the last step the run is done; --stage all stops before RL)
                raise Stopped(done, "SFT")
            arm_stop(True)  # a step is done that a checkpoint would keep: a signal now stops after the next
            if done == cfg.halt_at:
                print(f"halted after step {done} (--halt_at)")
                break
    finally:
        arm_stop(False)
        keep_pending()
        if graphs and graphs.stream is not None and rank() == 0:  # (where none could be captured, said at the start)
            print(f"note: {graphs.summary()}", file=sys.stderr)
    return done


# ============================================================================ RL

def rollout_step(model, tok, cfg: Config, step: int, outside=()) -> tuple[list[tasks.Problem], Rollouts]:
    """The step's problems (generated and a --data_mix share of the `outside` ones: a pure function of
    seed and step; under torchrun this process's share, whole groups) and their K rollouts each."""
    probs = shard(train_problems(cfg, step, cfg.prompts_per_step, f"rl-{cfg.seed}", outside))
    g = step_generator("rl" if rank() == 0 else f"rl-rank{rank()}", cfg.seed, step, model.lm_head.weight.device)
    _, ro = next(sample_chunks(model, tok, probs, num_samples=cfg.group_size, max_new_tokens=cfg.max_new_tokens,
                               prompts_per_call=len(probs), generator=g,
                               progress=f"RL step {step + 1} sampling" if rank() == 0 else "",
                               **sampling_kwargs(cfg)))
    return probs, ro


def subset(ro: Rollouts, rows: torch.Tensor) -> Rollouts:
    """Rows of a rollout batch as a Rollouts of groups of one (for micro-batching)."""
    r = rows.tolist()
    return dataclasses.replace(ro, prompts=[ro.prompts[i // ro.group_size] for i in r], group_size=1,
                               response=ro.response[rows], mask=ro.mask[rows], logprobs=ro.logprobs[rows],
                               finished=ro.finished[rows], logp_zc=ro.logp_zc[rows], texts=[ro.texts[i] for i in r])


def rl_backward(model, ro: Rollouts, adv, r_v, cfg: Config, *, use_mse: bool, c_ref: float, tok,
                ref_model=None, forward=None) -> dict[str, float]:
    """Accumulate the gradient of the step's loss over `ro` in micro-batches of rows of similar length
    (micro_batches: at most cfg.micro_batch rows and cfg.micro_tokens padded tokens each; `forward`: the
    training forward, runs.training_forward).
    Every micro-batch is normalised by the whole step's token (or sequence) count and class counts N_c,
    N_i: over every process under torchrun, whose gradients are then summed (docs/laser.md §2: the class
    reweighting is over the step's batch, not per process). So the gradient depends neither on
    micro_batch nor on the number of processes. Returns the loss terms, summed over processes."""
    N, device = all_sum(len(ro)), ro.response.device
    n_tok = all_sum(int(ro.mask.sum()))
    n_c = all_sum(int((ro.finished & (r_v > 0.5)).sum()))
    n_i = all_sum(int((ro.finished & (r_v <= 0.5)).sum()))
    w_rows = group_class_weights(r_v, ro.finished, ro.group_size) if cfg.sr_weighting == "group" else None
    total_len = [len(ro.prompts[i // ro.group_size]) + n for i, n in enumerate(ro.lengths.tolist())]
    tot = {k: torch.zeros((), dtype=torch.float64, device=device) for k in ("pg", "mse", "kl", "clip")}
    for rows in micro_batches(total_len, cfg.micro_batch, cfg.micro_tokens):
        rows = torch.tensor(rows, device=device)
        mb = subset(ro, rows)
        with autocast(device):
            logp, logp_zc = score_rollouts(forward or model, mb, tok.zc_id, tok.pad_id)  # (n, T), (n,)
        loss, st = ppo_clip_loss(logp, mb.logprobs, adv[rows], mb.mask, clip_low=cfg.clip_low,
                                 clip_high=cfg.clip_high, agg=cfg.loss_agg, num_tokens=n_tok, num_seqs=N)
        tot["pg"] += loss.detach()
        tot["clip"] += st["clip_frac"] * st["num_tokens"] / max(1, n_tok)
        if cfg.kl_coef > 0:  # docs/laser.md §7: 0 by default, and then no reference forward
            with torch.no_grad(), autocast(device):  # the reference unfiltered: its support holds every sampled token
                ref_mb = dataclasses.replace(mb, top_k=None, top_p=None)
                logp_ref, _ = score_rollouts(ref_model, ref_mb, tok.zc_id, tok.pad_id)
            kl = aggregate_loss(kl_penalty(logp, logp_ref, cfg.kl_estimator), mb.mask, cfg.loss_agg,
                                num_tokens=n_tok, num_seqs=N)
            loss = loss + cfg.kl_coef * kl
            tot["kl"] += kl.detach()
        if use_mse:  # docs/laser.md eq. 4: L = L_RLVR + alpha * L_SR
            r_s = self_reward_score(logp_zc, c_ref, cfg.beta_v)
            mse, _ = laser_mse_loss(r_s, r_v[rows], mb.finished, n_correct=n_c, n_incorrect=n_i,
                                    weights=None if w_rows is None else w_rows[rows])
            loss = loss + cfg.alpha * mse
            tot["mse"] += mse.detach()
        loss.backward()
    sync_grads(model)
    return {k: all_sum(v) for k, v in zip(tot, torch.stack(list(tot.values())).tolist())}  # one host sync


def rl_update(model, opt, ro: Rollouts, adv, r_v, cfg: Config, *, use_mse: bool, c_ref: float, tok,
              ref_model=None, forward=None) -> dict:
    """ppo_epochs passes over the batch (rl_backward), one optimizer step each. Returns loss/grad statistics,
    each the mean over the epochs whose update was made (all of them where none was), and skipped: 1 where
    no epoch updated the weights (SkipGuard stops a run after max_skipped such steps in a row)."""
    model.train()
    epochs = []
    for _ in range(cfg.ppo_epochs):
        opt.zero_grad(set_to_none=True)
        tot = rl_backward(model, ro, adv, r_v, cfg, use_mse=use_mse, c_ref=c_ref, tok=tok, ref_model=ref_model,
                          forward=forward)
        gnorm, skipped = clip_and_step(model, opt, cfg.grad_clip, tot.values())
        epochs.append(dict(loss_pg=tot["pg"], loss_mse=tot["mse"], kl=tot["kl"], clip_frac=tot["clip"],
                           grad_norm=gnorm, skipped=skipped))
    made = [e for e in epochs if not e["skipped"]] or epochs
    stats = {k: sum(e[k] for e in made) / len(made) for k in epochs[0]}
    stats["skipped"] = min(e["skipped"] for e in epochs)
    return stats


def _mean_or_nan(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else float("nan")


def verifier_pool(workers: int):
    """A context holding worker processes for verify_rollouts (None for 0: verify in this process),
    started by spawn (safe beside CUDA and threads), deaf to Ctrl-C and SIGTERM (the training process
    finishes its step, verification included, before it stops: runs.helper_process_init), and shut down
    on leaving it."""
    if not workers:
        return nullcontext()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=helper_process_init, initargs=(os.getpid(),))
    # every worker started now, with the signals blocked (a mask survives the spawn): a signal while a worker
    # imports this module, before helper_process_init, would end it with a traceback
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        list(pool.map(abs, range(workers)))  # (one task each: a task finds no idle worker, so each starts one)
    except BrokenProcessPool:
        pass  # (verify_rollouts says so, and verifies in this process)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return pool


def verify_rollouts(texts: list[str], answers: list[str], pool=None, finished=None) -> list[tuple[float, str]]:
    """verify.reward_with_reason of each (response, gold answer, finished?), in order: in this process, or
    spread over `pool`'s processes (the same results; the verifier is pure and has its own time budget per
    answer). `finished` (default: all): a response cut off at the length limit gets reward 0.
    A pool whose worker died is given up for this process, with a notice."""
    finished = [True] * len(texts) if finished is None else [bool(f) for f in finished]
    if pool is not None and not getattr(pool, "_broken", False):
        try:
            chunk = max(1, len(texts) // (4 * pool._max_workers))
            return list(pool.map(verify.reward_with_reason, texts, answers, finished, chunksize=chunk))
        except BrokenProcessPool as e:
            print(f"note: a verifier process died ({e}); verifying in the training process", file=sys.stderr)
    return [verify.reward_with_reason(t, a, f) for t, a, f in zip(texts, answers, finished)]


def rl_step(model, opt, tok, cfg: Config, *, step: int, c_ref: float, ref_model=None, outside=(), forward=None,
            pool=None) -> tuple[dict, list[dict]]:
    """One RL step: sample, verify, advantages (§2), self-reward integration (§3), update, metrics.
    `outside`: the --data_jsonl problems the step's prompts may be drawn from (rl_outside_data); `forward`:
    the training forward (runs.training_forward); `pool`: verifier processes (verifier_pool).
    Returns the step's metrics record and its first decoded samples (for samples.jsonl)."""
    K, laser = cfg.group_size, cfg.algo == "laser"
    mse_on = laser and step >= cfg.reasoning_warmup  # docs/laser.md §4: the schedule
    integrate = laser and step >= cfg.reasoning_warmup + cfg.self_reward_warmup
    t0 = time.time()
    probs, ro = rollout_step(model, tok, cfg, step, outside)
    t1 = time.time()
    rr = verify_rollouts(ro.texts, [p.answer for p in probs for _ in range(K)], pool, ro.finished.tolist())
    r_v = torch.tensor([r for r, _ in rr], dtype=torch.float32, device=ro.response.device)  # (N,)
    reasons = [why for _, why in rr]
    t2 = time.time()
    adv, n_zero = group_advantages(r_v, K, cfg.adv_mode)  # docs/laser.md eq. 7
    r_s = self_reward_score(ro.logp_zc, c_ref, cfg.beta_v)  # (N,) of the sampling policy; NaN if truncated
    n_integrated = 0
    if integrate:  # docs/laser.md eqs. 9-11
        adv, n_integrated = integrate_advantages(adv, r_s, ro.finished, K, tau=cfg.tau,
                                                   std_threshold=cfg.std_threshold)
    lr = set_lr(opt, lr_at(step, cfg.rl_steps, cfg.rl_lr, cfg.rl_warmup, cfg.min_lr_frac))
    st = rl_update(model, opt, ro, adv, r_v, cfg, use_mse=mse_on, c_ref=c_ref, tok=tok, ref_model=ref_model,
                   forward=forward)
    t3 = time.time()
    # metrics of the whole step: every process's rows under torchrun
    parts = gather({"r_v": r_v.cpu(), "r_s": r_s.cpu(), "fin": ro.finished.cpu(), "len": ro.lengths.cpu(),
                    "reasons": reasons})
    r_v, r_s, fin, lens = (torch.cat([p[k] for p in parts]) for k in ("r_v", "r_s", "fin", "len"))
    reasons = [why for p in parts for why in p["reasons"]]
    right, lens = r_v > 0.5, lens.float()
    sv = self_verification_metrics(r_s.numpy(), right.numpy(), fin.numpy())
    rec = {"step": step + 1, "reward": float(r_v.mean()), "accuracy": float(r_v.mean()),
           "no_answer": reasons.count("no_answer") / len(reasons),
           "unparsable": reasons.count("unparsable") / len(reasons),
           "sv_tpr": sv["tpr"], "sv_tnr": sv["tnr"], "sv_f1": sv["f1"], "sv_auroc": sv["auroc"],
           "rs_correct": _mean_or_nan(r_s[fin & right]), "rs_incorrect": _mean_or_nan(r_s[fin & ~right]),
           **st, "resp_len_mean": float(lens.mean()), "resp_len_max": int(lens.max()),
           "truncated": float((~fin).float().mean()), "zero_var_groups": int(all_sum(n_zero)),
           "integrated_groups": int(all_sum(n_integrated)), "mse_on": bool(mse_on), "c_ref": c_ref, "lr": lr,
           "skipped_steps": None, "time_rollout": t1 - t0, "time_verify": t2 - t1, "time_update": t3 - t2,
           "tokens_per_s": all_sum(int(ro.mask.sum())) / max(1e-9, t1 - t0)}
    samples = [{"step": step + 1, "problem": probs[i].problem, "gold": probs[i].answer, "response": ro.texts[i * K],
                "reward": float(r_v[i * K]), "reason": reasons[i * K], "r_s": float(r_s[i * K])}
               for i in range(min(cfg.n_log_samples, len(probs)))]
    return rec, samples


def start_rl(cfg: Config, device):
    """Model, tokenizer, optimizer, c_ref, the outside problems (rl_outside_data), the resume state of an
    RL run and the digest of its --data_jsonl problems: a fresh start from the SFT run cfg.init (c_ref
    measured on it, §5, on the RL prompt mix) or the run in cfg.out_dir continued."""
    kept = load_outside(cfg.data_jsonl) if cfg.data_jsonl else []  # the train split's, before the length cut
    data_sha = data_digest(kept, solutions=False)  # (RL reads no solution)
    if cfg.resume:
        model, tok, opt, ck = resume_run(cfg, "rl", cfg.rl_lr, device)
        missing = [k for k in ("c_ref", "c_ref_std", "beta_v", "skipped_steps", "init") if k not in ck]
        if missing:
            raise UserError(f"{cfg.out_dir}: not a complete rl checkpoint (missing {', '.join(missing)})")
        if ck["beta_v"] != cfg.beta_v:
            raise UserError(f"checkpoint was trained with beta_v={ck['beta_v']}, config says {cfg.beta_v}")
        check_same_data(ck, kept, cfg.data_jsonl, solutions=False)
        print(f"resumed RL at step {ck['step']} (c_ref {ck['c_ref']:.3f})")
        check_lengths(cfg, tok, model.cfg.block_size)
        outside = rl_outside_data(cfg, tok, model.cfg.block_size, kept)
        # the SFT run as it is named now (--stage all's OUT/sft, after OUT was moved aside, say), else as saved
        return (model, tok, opt, ck["c_ref"], ck["c_ref_std"], cfg.init or ck["init"], ck["step"],
                SkipGuard(cfg.max_skipped, ck), outside, data_sha)
    seed_everything(cfg.seed)
    model, tok, ck = load_run(cfg.init, device)
    check_lengths(cfg, tok, model.cfg.block_size)
    outside = rl_outside_data(cfg, tok, model.cfg.block_size, kept)
    if ck["stage"] != "sft":
        print(f"note: starting RL from a {ck['stage']} checkpoint in {cfg.init}")
    write_text(os.path.join(cfg.out_dir, "tokenizer.json"), tok.to_json())
    opt = make_optimizer(model, cfg.rl_lr, cfg.weight_decay)
    if math.isfinite(cfg.c_ref):
        c_ref, c_std = cfg.c_ref, float("nan")
        print(f"c_ref = {c_ref:.3f} given by --c_ref (docs/laser.md §5 recommends measuring it; its spread over "
              f"solutions is then unknown, and beta_v * std goes unchecked)")
    else:
        t = time.time()
        c_ref, c_std, n = broadcast(calibrate_c_ref(model, tok, cfg, outside) if rank() == 0 else None)
        print(f"c_ref calibrated on the reference policy: mean {c_ref:.3f}, std {c_std:.3f} over {n} "
              f"finished samples ({time.time() - t:.1f}s); beta_v * std = {cfg.beta_v * c_std:.3f}")
    return model, tok, opt, c_ref, c_std, cfg.init, 0, SkipGuard(cfg.max_skipped), outside, data_sha


def run_rl(cfg: Config) -> str:
    device = get_device(cfg.device)
    make_run_dir(cfg.out_dir)
    model, tok, opt, c_ref, c_std, init_dir, start, guard, outside, data_sha = start_rl(cfg, device)
    warn = check_c_ref(c_ref, c_std, cfg.beta_v)  # docs/laser.md §5 (a NaN std, --c_ref's, goes unchecked)
    if warn and rank() == 0:
        print("!" * 100 + "\n" + warn + "\n" + "!" * 100, file=sys.stderr)
    write_json(os.path.join(cfg.out_dir, "config.json"), asdict(cfg))
    log, samples_log = (MetricsLog(os.path.join(cfg.out_dir, name), start if cfg.resume else None)
                        for name in ("metrics.jsonl", "samples.jsonl"))
    with torch.random.fork_rng(devices=[]):  # building the reference GPT draws from the global RNG
        ref_model = load_run(init_dir, device)[0] if cfg.kl_coef > 0 else None
    val = heldout_problems(cfg)
    print(f"RL ({cfg.algo}): {model.num_params() / 1e6:.2f}M parameters, {cfg.rl_steps} steps x "
          f"{cfg.prompts_per_step} problems x {cfg.group_size} samples, device {device}"
          + (f"; MSE from step {cfg.reasoning_warmup}, advantage integration from step "
             f"{cfg.reasoning_warmup + cfg.self_reward_warmup}" if cfg.algo == "laser" else ""))
    if start == 0 and rank() == 0:  # the starting policy on the validation split
        rec = {"step": 0, "c_ref": c_ref, "c_ref_std": c_std, "c_ref_beta_std": cfg.beta_v * c_std,
               **heldout_eval(model, tok, val, cfg, c_ref)}
        log.write(rec)
        print(f"rl     0 val acc {rec['eval_acc']:.3f}", flush=True)
    forward, t_start = training_forward(model, cfg.compile), time.time()
    with verifier_pool(cfg.verify_workers) as pool:  # shut down however the loop ends
        for step in range(start, cfg.rl_steps):
            # sample, verify, advantages, integration, update (docs/laser.md §2-4)
            rec, samples = rl_step(model, opt, tok, cfg, step=step, c_ref=c_ref, ref_model=ref_model, outside=outside,
                                   forward=forward, pool=pool)
            done = step + 1
            guard.update(rec.pop("skipped"), done, "RL")
            rec["skipped_steps"] = guard.total
            # validation accuracy and self-verification every rl_eval_every steps and at the end
            if cfg.rl_eval_every and done % cfg.rl_eval_every == 0 or done == cfg.rl_steps:
                rec.update(heldout_eval(model, tok, val, cfg, c_ref))
            log.write(rec)
            for s in samples:
                samples_log.write(s)
            eta = (time.time() - t_start) / (done - start) * (cfg.rl_steps - done)
            print(f"rl {done:5d}/{cfg.rl_steps} acc {rec['accuracy']:.3f} sv_f1 {rec['sv_f1']:.3f} "
                  f"auroc {rec['sv_auroc']:.3f} pg {rec['loss_pg']:+.4f} mse {rec['loss_mse']:.4f} "
                  f"gn {rec['grad_norm']:.2f} len {rec['resp_len_mean']:.0f} trunc {rec['truncated']:.2f} "
                  f"zvar {rec['zero_var_groups']} t {rec['time_rollout']:.1f}/{rec['time_verify']:.1f}/"
                  f"{rec['time_update']:.1f}s eta {fmt_time(eta)}"
                  + (f" | val acc {rec['eval_acc']:.3f}" if "eval_acc" in rec else ""), flush=True)
            # checkpoint: weights, optimizer, RNG, c_ref and beta_v (docs/laser.md §8)
            stop = stop_requested()  # Ctrl-C or SIGTERM during the step: stop after it, with a checkpoint
            if done % cfg.ckpt_every == 0 or done == cfg.rl_steps or done == cfg.halt_at or stop:
                checkpoint(os.path.join(cfg.out_dir, "ckpt.pt"), model, opt, done, cfg, tok,
                           extra={"stage": "rl", "c_ref": c_ref, "c_ref_std": c_std, "beta_v": cfg.beta_v,
                                  "data_sha256": data_sha, **guard.state(), "init": init_dir,
                                  "algo": cfg.algo})
            if stop and done < cfg.rl_steps:
                raise Stopped(done, "RL")
            arm_stop(True)  # a step is done that a checkpoint would keep: a signal now stops after the next
            if done == cfg.halt_at:
                print(f"halted after step {done} (--halt_at)")
                break
    arm_stop(False)
    return cfg.out_dir


# ============================================================================ main

# fields that make the model and its tokenizer: a run resumed, or RL from --init, has them already
MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "arch", "bpe_merges", "init_hf")
# and what else a resumed run cannot change without becoming another run: its data, and the RL sampling
# distribution its c_ref was measured under (docs/laser.md §5). The schedule may change as a learning rate may:
# --data_mix (the share of outside problems), --max_new_tokens (a length budget).
RUN_FIELDS = MODEL_FIELDS + ("seed", "algo", "init", "c_ref", "beta_v", "families", "levels", "data_jsonl",
                             "temperature", "top_k", "top_p")


def pretrained_fields(cfg: Config, model) -> Config:
    """cfg with the model fields of the --init_hf model it trains, not the preset's, so that config.json
    describes the model: its layers, heads and width, the Llama family (`arch` llama: SwiGLU, RMSNorm gains;
    Qwen2's q/k/v biases are in the checkpoint's model_config) and no BPE merges (the tokenizer is its own)."""
    m = model.cfg
    return dataclasses.replace(cfg, n_layer=m.n_layer, n_head=m.n_head, n_embd=m.n_embd, block_size=m.block_size,
                               arch="llama", bpe_merges=0)


def _kept(given: dict, saved: Config, names, why: str) -> None:
    """A UserError for the first flag in `given` that differs from `saved`'s value of it."""
    for k in names:
        if k in given and not same_setting(k, given[k], getattr(saved, k)):
            raise UserError(f"--{k} {given[k]}: {why} (it has {getattr(saved, k)})")


def run_config_for(cfg: Config, given: dict) -> Config:
    """The config the command runs with. --resume: the run's saved config (for --stage all, that of OUT/sft),
    with the flags given applied, except those that would make it another run (RUN_FIELDS). RL from --init:
    the model fields of the run it starts from, not the preset's, so that config.json describes the model."""
    if cfg.resume:  # --stage all's parent directory, or (--stage not given) any run directory
        whole = given.get("stage") == "all" or "stage" not in given and not os.path.exists(
            os.path.join(cfg.out_dir, "config.json"))
        where = os.path.join(cfg.out_dir, "sft") if whole else cfg.out_dir
        if not any(os.path.exists(os.path.join(where, f)) for f in ("config.json", "ckpt.pt")):
            raise UserError(f"--resume: no run to resume in {cfg.out_dir} (a run directory holds config.json and "
                            f"ckpt.pt; the main command's run, {os.path.join(cfg.out_dir, 'sft')} and "
                            f"{os.path.join(cfg.out_dir, cfg.algo)})")
        saved = saved_config(where)
        _kept(given, saved, RUN_FIELDS, f"a resumed run keeps its setting; {where} was run with another")
        cfg = dataclasses.replace(saved, **{**given, **({"stage": "all", "out_dir": cfg.out_dir} if whole else {})})
        check_config(cfg)
    elif cfg.stage == "rl" and os.path.exists(os.path.join(run_dir_of(cfg.init), "config.json")):
        source = saved_config(run_dir_of(cfg.init))
        _kept(given, source, MODEL_FIELDS, f"RL trains the model of --init {cfg.init}, made with another")
        cfg = with_model_of(cfg, source)
    return cfg


def with_model_of(cfg: Config, source: Config) -> Config:
    """cfg with the model fields (MODEL_FIELDS) of `source`, the config of the run RL starts from."""
    return dataclasses.replace(cfg, **{k: getattr(source, k) for k in MODEL_FIELDS})


def keep_previous_run(cfg: Config) -> None:
    """A fresh start where a run is (a checkpoint or a log in out_dir, or for --stage all in OUT/sft or
    OUT/<algo>) moves that directory aside to the first free OUT.1, OUT.2, ... with a notice, so that the
    command starts and nothing is lost; refused when the command's own inputs (--init, --init_hf,
    --data_jsonl) or the working directory lie in it. (Rank 0 moves it; the others wait.)"""
    def holds_run(d):  # a checkpoint, or a log with records in it
        log = os.path.join(d, "metrics.jsonl")
        return os.path.exists(os.path.join(d, "ckpt.pt")) or os.path.exists(log) and os.path.getsize(log) > 0

    def inside(path):
        return bool(path) and os.path.commonpath([os.path.realpath(path), os.path.realpath(out)]) == os.path.realpath(out)

    out, problem = os.path.normpath(cfg.out_dir), None
    runs_there = [os.path.join(out, d) for d in ("sft", cfg.algo)] if cfg.stage == "all" else [out]
    if rank() == 0 and any(holds_run(d) for d in runs_there):
        kept = next(f"{out}.{i}" for i in itertools.count(1) if not os.path.exists(f"{out}.{i}"))
        needed = [f"--{k} {getattr(cfg, k)}" for k in PATH_FIELDS if inside(getattr(cfg, k))]
        needed += ["the working directory"] if inside(os.getcwd()) else []
        if needed:
            problem = (f"{out} holds a run, which a fresh start would move aside, but {needed[0]} lies in it: "
                       f"--resume continues the run, or choose another --out_dir")
        else:
            try:
                os.rename(out, kept)
                print(f"note: {out} held a run; it is kept as {kept}, and this one starts afresh (--resume "
                      f"continues a run instead)")
            except OSError as e:
                problem = (f"{out} holds a run, and it cannot be moved aside to {kept} ({e.strerror}): --resume "
                           f"continues it, or choose another --out_dir")
    problem = broadcast(problem)  # (under torchrun: the others wait for the move, and stop with rank 0)
    if problem:
        raise UserError(problem)


def run_all(cfg: Config) -> str:
    """--stage all: SFT into OUT/sft, then RL from it into OUT/<algo>; with --resume, each from where it
    stopped (RL afresh if it never saved a checkpoint). SFT halted early (--halt_at) stops the command."""
    sft_dir, rl_dir = os.path.join(cfg.out_dir, "sft"), os.path.join(cfg.out_dir, cfg.algo)
    done = run_sft(dataclasses.replace(cfg, stage="sft", out_dir=sft_dir), then_rl=True)
    if done < cfg.sft_steps:
        print(f"SFT halted after step {done} of {cfg.sft_steps}: RL not started ({resume_command(cfg)} --halt_at 0 "
              f"continues the run; without --halt_at 0, RL halts at step {done} too)")
        return sft_dir
    if stop_requested():  # a signal during SFT's last step, which saved the checkpoint anyway
        raise Stopped(done, "SFT")
    resume = cfg.resume and os.path.exists(os.path.join(rl_dir, "ckpt.pt"))
    rl = dataclasses.replace(cfg, stage="rl", init=sft_dir, out_dir=rl_dir, resume=resume)
    return run_rl(with_model_of(rl, saved_config(sft_dir)))  # (as RL from --init: --init_hf's model, say)


def resume_command(cfg: Config) -> str:
    """The command that continues the run the config describes (the main command's needs no --stage), with
    the launch it was started with: a run's data shards fix its number of processes (runs.resume_run)."""
    stage = "" if cfg.stage == "all" else f" --stage {cfg.stage}"
    launch = "python"
    if world_size() > 1:  # (torchrun sets LOCAL_WORLD_SIZE: this node's processes)
        one_node = os.environ.get("LOCAL_WORLD_SIZE") in (None, str(world_size()))
        launch = (f"torchrun --nproc_per_node {world_size()}" if one_node else
                  f"torchrun with {world_size()} processes in all, as launched (nodes, processes a node, rendezvous),")
    return f"{launch} train.py{stage} --out_dir {cfg.out_dir} --resume"


def main(argv=None) -> str:
    """Run the stages the config asks for. Bad input ends in one line on stderr and exit code 2; a run
    stopped by a signal (`stop_gracefully`) ends with a checkpoint, a line that says how to resume it, and
    exit code 128 + the signal. Returns the run directory."""
    stop_requested(clear=True)  # (a request that came after a previous command's last step)
    arm_stop(False)
    try:
        cfg, given = resolve_config(argv, __doc__.split("\n\n")[0])
        cfg = run_config_for(cfg, given)
        init_distributed(cfg.device)  # under torchrun: one process per device, rank 0 writes and prints
        if rank() != 0:
            sys.stdout = open(os.devnull, "w")
        if min(cfg.prompts_per_step, cfg.sft_batch_size) < world_size():
            raise UserError(f"{world_size()} processes need --prompts_per_step and --sft_batch_size >= "
                            f"{world_size()} (each process takes a share of the step's problems)")
        if not cfg.resume:
            keep_previous_run(cfg)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        rollout.COMPILE_DECODE = cfg.compile != "off"  # the sampler's decode step on CUDA (rollout.py)
        print("config: " + json.dumps(asdict(cfg)))
        {"sft": run_sft, "rl": run_rl, "all": run_all}[cfg.stage](cfg)
        close_distributed()  # every process waits for the others, then leaves
        return cfg.out_dir
    except UserError as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        raise SystemExit(2) from None
    except Stopped as e:
        print(f"{e.stage} stopped after step {e.done} ({e.signal}), its checkpoint saved; "
              f"{resume_command(cfg)} continues the run", flush=True)
        raise
    except torch.cuda.OutOfMemoryError as e:  # a card too small for the run's pieces: the settings that shrink them
        who = f" (process {rank()} of {world_size()})" if world_size() > 1 else ""  # (the process that ran out)
        sys.stderr.write(f"train.py: error{who}: " + out_of_memory(e, (
            f"smaller pieces need less memory: --micro_tokens (now {cfg.micro_tokens or 'no cap'}; padded tokens a "
            f"forward, SFT and the RL update), --sft_micro_batch ({cfg.sft_micro_batch}, SFT rows), --micro_batch "
            f"({cfg.micro_batch}, RL update rows), --eval_batch ({cfg.eval_batch}, prompts a validation or c_ref "
            f"sampling call); the RL rollout samples --prompts_per_step x --group_size rows at once ("
            f"{cfg.prompts_per_step} x {cfg.group_size}: fewer makes another run); a run with a checkpoint goes on "
            f"from it: {resume_command(cfg)} with the smaller setting")) + "\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C before the first step, or a second one: at once (the last checkpoint stays)
        sys.stderr.write("train.py: interrupted\n")
        raise SystemExit(128 + signal.SIGINT) from None
    except SystemExit as e:  # (SIGTERM, likewise: stop_gracefully)
        if e.code == 128 + signal.SIGTERM:
            sys.stderr.write("train.py: terminated\n")
        raise
    finally:
        close_distributed(wait=False)  # on an error: leave at once (a no-op after the line above)


if __name__ == "__main__":
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C; `timeout`, a job scheduler, torchrun stopping a worker
        signal.signal(sig, stop_gracefully)
    if launched_by_torchrun():
        run_then_exit(main)  # under torchrun: without the interpreter's teardown (see runs.run_then_exit)
    else:
        main()
