"""Train a small GPT on synthetic math: SFT warm start, then RL with GRPO or LaSeR.

    python train.py --config tiny                          # SFT, then LaSeR RL (out/tiny/sft, out/tiny/laser)
    python train.py --config tiny --stage sft              # SFT only, into --out_dir
    python train.py --config tiny --stage rl --algo grpo --init out/tiny/sft --out_dir out/tiny/grpo
    python train.py --stage rl --resume --out_dir out/tiny/grpo   # continue a run (its saved config)
    python train.py --help                                 # every knob, with its meaning

Stages
  sft  next-token loss on generated worked solutions (loss on solution tokens and EOS only; padding
       masked by position). Periodic accuracy on the validation split, sampled at temperature 1.
       (The test split is used only by evaluate.py.)
  rl   from an SFT checkpoint: measure c_ref on the starting (reference) policy (LASER.md section 5),
       then per step: sample K rollouts per problem with the KV-cache sampler (which also reads
       log p(z_c) at each EOS), score them with verify.py, compute group advantages, and update.
       --algo grpo: PPO-clipped GRPO. --algo laser: GRPO + alpha * class-reweighted MSE between
       r_s = beta_v (log p(z_c) - c_ref) and the verifier reward, then self-reward advantage
       integration (LASER.md sections 2-4), on the warm-up schedule of section 4.

Deliberate simplifications: no KL term by default (coefficient 0, as in the paper; no reference
forward pass then), no entropy bonus, no value model. With one update per rollout batch (ppo_epochs=1,
the paper's setting) the PPO ratio is exactly 1 up to float error and the clip never fires; set
ppo_epochs > 1 to make the clip real.

Every run directory holds config.json, tokenizer.json, ckpt.pt (weights, optimizer, step = data
cursor, RNG states, config, c_ref and beta_v), metrics.jsonl (one object per step) and, for RL,
samples.jsonl. Problems and sampling seeds are pure functions of (seed, step), so a run resumed with
--resume is bit-identical on CPU to one that was never interrupted.

Bad input (a flag out of its range, an unreadable checkpoint, tokenizer, config or data file) and a
run that has diverged (--max_skipped non-finite steps in a row) end in one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

import tasks
from evaluate import atomic_write, self_verification_metrics, to_jsonable, write_text
from loss import (aggregate_loss, group_advantages, integrate_advantages, kl_penalty, laser_mse_loss, ppo_clip_loss,
                  self_reward_score)
from model import GPT, GPTConfig
from rollout import Rollouts, sample, score_rollouts
from tokenizer import Tokenizer, build_tokenizer, load_tokenizer


# ============================================================================ configuration

@dataclass
class Config:
    # --- run
    stage: str = "all"            # sft | rl | all (sft into OUT/sft, then rl into OUT/<algo>)
    out_dir: str = "out/run"      # run directory (for --stage all: the parent of sft/ and <algo>/)
    seed: int = 0                 # seeds data, init and sampling
    device: str = "auto"          # auto | cpu | cuda (auto: cuda if available; bf16 autocast on cuda)
    threads: int = 0              # torch CPU threads (0: torch's default)
    resume: bool = False          # continue the run in out_dir from its ckpt.pt
    halt_at: int = 0              # stop (with a checkpoint) after this step, as if interrupted; 0: off
    # --- data
    families: str = ",".join(tasks.FAMILIES)  # comma-separated task families
    levels: str = "1,2,3"         # comma-separated difficulty levels
    data_jsonl: str = ""          # optional outside training data ({"problem","answer"[,"solution"]})
    n_val: int = 150              # validation problems for the evaluation during training (and tuning)
    n_test: int = 150             # test problems (evaluate.py's default; never seen in training)
    bpe_merges: int = 256         # BPE merges learned from the task corpus
    # --- model
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 256
    # --- SFT
    sft_steps: int = 1000
    sft_batch_size: int = 32
    sft_micro_batch: int = 8      # rows per forward: the batch is sorted by length and split (less padding, same gradient)
    sft_lr: float = 2e-3
    sft_warmup: int = 50          # linear warm-up steps, then cosine decay to sft_lr * min_lr_frac
    min_lr_frac: float = 0.1
    weight_decay: float = 0.0
    # --- RL (shared by grpo and laser)
    algo: str = "laser"           # grpo | laser
    init: str = ""                # SFT run directory RL starts from (--stage rl)
    rl_steps: int = 100
    prompts_per_step: int = 16    # problems per RL step
    group_size: int = 8           # K rollouts per problem
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_k: int = 0                # 0: off
    top_p: float = 1.0            # 1.0: off
    rl_lr: float = 1e-4
    rl_warmup: int = 5
    ppo_epochs: int = 1           # optimizer passes over each rollout batch (1: ratio == 1)
    micro_batch: int = 64         # rows per forward/backward (gradient is the same for any value)
    clip_low: float = 0.2
    clip_high: float = 0.28
    loss_agg: str = "token_mean"  # token_mean | seq_mean
    adv_mode: str = "grpo"        # grpo (z-score) | drgrpo (mean-only)
    kl_coef: float = 0.0          # KL(pi || pi_ref) coefficient; 0 skips the reference model
    kl_estimator: str = "k3"      # k1 | k3
    grad_clip: float = 1.0        # max gradient norm (0: no clipping)
    max_skipped: int = 5          # stop when this many consecutive steps had a non-finite loss or gradient
    # --- LaSeR (LASER.md sections 2-5)
    beta_v: float = 0.1           # r_s = beta_v * (log p(z_c) - c_ref)
    alpha: float = 0.1            # weight of the self-rewarding MSE
    tau: float = 0.1              # weight of the self-reward advantage
    std_threshold: float = 0.1    # T: integrate only groups whose std(clip(r_s,0,1)) > T
    reasoning_warmup: int = 0     # RL steps of plain GRPO before the MSE starts
    self_reward_warmup: int = 20  # further steps before advantage integration starts
    c_ref: float = float("nan")   # NaN: measure on the reference policy (never copy one)
    calib_prompts: int = 64       # problems x samples used to measure c_ref
    calib_samples: int = 4
    # --- logging / evaluation / checkpoints
    log_every: int = 10           # SFT: steps per progress line (RL prints every step)
    eval_every: int = 200         # SFT steps between validation evaluations (0: only at the end)
    rl_eval_every: int = 25       # RL steps between validation evaluations (0: only at the end)
    ckpt_every: int = 100         # steps between checkpoints (always at the end)
    n_log_samples: int = 2        # decoded rollouts per RL step written to samples.jsonl
    eval_batch: int = 64          # prompts per sampling batch in evaluation


PRESETS: dict[str, dict] = {
    # seconds: used by tests and CI
    "test": dict(n_layer=1, n_head=2, n_embd=32, block_size=192, bpe_merges=64, n_val=10, n_test=10,
                 sft_steps=30, sft_batch_size=8, sft_warmup=1, log_every=10, eval_every=0, rl_eval_every=0,
                 rl_steps=2, prompts_per_step=2, group_size=4, max_new_tokens=48, micro_batch=4,
                 rl_warmup=1, ckpt_every=1, calib_prompts=4, calib_samples=4, self_reward_warmup=1,
                 eval_batch=16),
    # a 2-core CPU: the whole pipeline (SFT, GRPO and LaSeR runs, evaluation) in about half an hour
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, levels="1,2", sft_steps=2400,
                 sft_batch_size=32, sft_lr=3e-3, sft_warmup=50, eval_every=800, log_every=50, ckpt_every=200,
                 rl_steps=200, prompts_per_step=16, group_size=16, max_new_tokens=128, rl_lr=2e-4,
                 reasoning_warmup=0, self_reward_warmup=60, rl_eval_every=50),
    # one GPU: ~20M parameters
    "small": dict(n_layer=8, n_head=8, n_embd=448, block_size=320, bpe_merges=512, n_val=300, n_test=300,
                  sft_steps=6000, sft_batch_size=128, sft_lr=1e-3, sft_warmup=200, weight_decay=0.1,
                  eval_every=1000, rl_eval_every=50, log_every=50, ckpt_every=500, rl_steps=400, prompts_per_step=64,
                  group_size=8, max_new_tokens=192, rl_lr=2e-5, micro_batch=128,
                  reasoning_warmup=50, self_reward_warmup=100, calib_prompts=256),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, non-zero exit
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def _parse_bool(s: str) -> bool:
    if s.lower() in ("1", "true", "yes", "on"):
        return True
    if s.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {s!r}")


def _field_comments() -> dict[str, str]:
    """The one-line comment beside each Config field, reused as its --help text."""
    import inspect
    out = {}
    for line in inspect.getsource(Config).splitlines():
        line = line.strip()
        if ":" in line and "#" in line and not line.startswith("#"):
            out[line.split(":")[0].strip()] = line.split("#", 1)[1].strip()
    return out


CHOICES = {"stage": ("sft", "rl", "all"), "algo": ("grpo", "laser"), "device": ("auto", "cpu", "cuda"),
           "loss_agg": ("token_mean", "seq_mean"), "adv_mode": ("grpo", "drgrpo"),
           "kl_estimator": ("k1", "k3")}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="Presets: " + ", ".join(PRESETS) + ". Every field of Config can be set, e.g. --rl_lr 3e-5.")
    p.add_argument("--config", default="tiny", choices=list(PRESETS), help="named preset (default tiny)")
    helps = _field_comments()
    for f in fields(Config):
        kind = {bool: _parse_bool, int: int, float: float, str: str}[type(f.default)]
        flag = dict(nargs="?", const=True) if kind is _parse_bool else {}  # `--resume` == `--resume true`
        p.add_argument(f"--{f.name}", type=kind, default=argparse.SUPPRESS, choices=CHOICES.get(f.name),
                       metavar=type(f.default).__name__.upper(), help=f"{helps.get(f.name, '')} [{f.default}]",
                       **flag)
    return p


def resolve_config(argv=None) -> tuple[Config, dict]:
    """Preset, then explicit CLI overrides. Returns the config and the overrides that were given."""
    args = vars(build_parser().parse_args(argv))
    preset = args.pop("config")
    cfg = dataclasses.replace(Config(), **PRESETS[preset])
    cfg = dataclasses.replace(cfg, **args)
    check_config(cfg)
    return cfg, args


class UserError(Exception):
    """Bad input (a flag, a file) or a run that cannot go on: reported as one line, exit code 2."""


_finite = math.isfinite
# Every numeric field and its allowed range, checked in one place: (fields, test, what it must be).
RANGES = [
    (("sft_steps", "rl_steps", "sft_batch_size", "sft_micro_batch", "prompts_per_step", "group_size",
      "max_new_tokens", "micro_batch", "ppo_epochs", "n_layer", "n_head", "n_embd", "block_size", "n_val",
      "n_test", "calib_prompts", "calib_samples", "log_every", "ckpt_every", "eval_batch", "max_skipped"),
     lambda v: v >= 1, ">= 1"),
    (("threads", "halt_at", "bpe_merges", "sft_warmup", "rl_warmup", "eval_every", "rl_eval_every",
      "n_log_samples", "top_k", "reasoning_warmup", "self_reward_warmup"), lambda v: v >= 0, ">= 0"),
    (("sft_lr", "rl_lr", "temperature", "beta_v"), lambda v: _finite(v) and v > 0, "finite and > 0"),
    (("weight_decay", "kl_coef", "alpha", "std_threshold", "clip_high"),
     lambda v: _finite(v) and v >= 0, "finite and >= 0"),
    (("grad_clip",), lambda v: _finite(v) and v >= 0, "finite and >= 0 (0: no clipping)"),
    (("min_lr_frac", "tau"), lambda v: 0 <= v <= 1, "in [0, 1]"),
    (("clip_low",), lambda v: 0 <= v < 1, "in [0, 1)"),
    (("top_p",), lambda v: 0 < v <= 1, "in (0, 1] (1: off)"),
    (("c_ref",), lambda v: not math.isinf(v), "finite (or nan: measure it)"),
]


def check_config(cfg: Config) -> None:
    """Every field against its allowed range and the others; raises UserError naming the flag."""
    for names, ok, what in RANGES:
        for name in names:
            if not ok(getattr(cfg, name)):
                raise UserError(f"--{name} must be {what}, got {getattr(cfg, name)}")
    if cfg.n_embd % (2 * cfg.n_head):
        raise UserError(f"--n_embd {cfg.n_embd} must be a multiple of 2 * n_head = {2 * cfg.n_head}")
    unknown = set(cfg.families.split(",")) - set(tasks.FAMILIES)
    if unknown:
        raise UserError(f"unknown families {sorted(unknown)}; choose from {','.join(tasks.FAMILIES)}")
    try:
        lv = [int(x) for x in cfg.levels.split(",")]
    except ValueError:
        raise UserError(f"--levels must be comma-separated integers, got {cfg.levels!r}") from None
    if set(lv) - set(tasks.LEVELS):
        raise UserError(f"--levels must be within {tasks.LEVELS}, got {cfg.levels!r}")
    if cfg.max_new_tokens + PROMPT_ROOM > cfg.block_size:
        raise UserError(f"--block_size {cfg.block_size} leaves no room for a prompt before --max_new_tokens "
                        f"{cfg.max_new_tokens}: it must be at least max_new_tokens + {PROMPT_ROOM}")
    if cfg.stage == "rl" and not cfg.init and not cfg.resume:
        raise UserError("--stage rl needs --init SFT_RUN_DIR (or --resume)")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise UserError(f"--out_dir {cfg.out_dir} is a file, not a directory")
    if cfg.data_jsonl and not os.path.isfile(cfg.data_jsonl):
        raise UserError(f"--data_jsonl {cfg.data_jsonl}: no such file")
    fam, lv = families_levels(cfg)
    for flag, split, n in (("n_val", "validation", cfg.n_val), ("n_test", "test", cfg.n_test)):
        try:
            tasks.make_split(split, n, 0, fam, lv)
        except ValueError as e:
            raise UserError(f"--{flag} {n}: {e}") from None


PROMPT_ROOM = 16  # tokens block_size must leave for a prompt besides max_new_tokens (checked exactly later)


def check_lengths(cfg: Config, tok: Tokenizer, block_size: int) -> None:
    """Every prompt + max_new_tokens + 1 (the z_c readout) and every SFT row of the run's problems
    (validation, test and a training sample) must fit the model's block_size."""
    fam, lv = families_levels(cfg)
    problems = heldout_problems(cfg) + heldout_problems(cfg, "test") + tasks.train_batch(0, 256, cfg.seed, fam, lv)
    prompt = max(len(tok.encode_prompt(p.problem)) for p in problems)
    row = max(sft_row_length(tok, p) for p in problems)
    if prompt + cfg.max_new_tokens + 1 > block_size or row > block_size:
        raise UserError(f"the model's block_size {block_size} is too small: the longest prompt has {prompt} "
                        f"tokens (+ --max_new_tokens {cfg.max_new_tokens} + 1) and the longest SFT row {row}")


# ============================================================================ plumbing

def get_device(cfg: Config) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available")
    return torch.device(cfg.device)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; plain float32 on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if torch.device(device).type == "cuda" else nullcontext()


def atomic_save(obj, path: str) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))  # a crash never leaves a half-written checkpoint


def write_json(obj, path: str) -> None:
    write_text(path, json.dumps(obj, indent=2))


def read_json(path: str, what: str) -> dict:
    """A JSON object from `path`, or UserError('path: what is wrong')."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{path}: no {what} here") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable {what} ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object as {what}, got {type(obj).__name__}")
    return obj


class MetricsLog:
    """Appends one JSON object per line. On resume, lines past the checkpoint's step are dropped so
    the log matches the weights."""

    def __init__(self, path: str, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and os.path.exists(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [ln for ln in f if ln.strip()]
            keep = []
            for i, ln in enumerate(lines):
                try:
                    rec = json.loads(ln)
                except json.JSONDecodeError:
                    if i == len(lines) - 1:  # a write cut short by a crash: drop it
                        print(f"note: {path}: dropped a torn last line (a write cut short)")
                        continue
                    raise UserError(f"{path}:{i + 1}: not a JSON line; fix or delete the log") from None
                if rec.get("step", 0) <= resume_step:
                    keep.append(json.dumps(rec) + "\n")
            write_text(path, "".join(keep))
        elif resume_step is None and os.path.exists(path):
            os.remove(path)

    def write(self, obj: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(to_jsonable(obj)) + "\n")  # NaN -> null


def lr_at(step: int, total: int, peak: float, warmup: int, min_frac: float) -> float:
    """Linear warm-up, then cosine decay to peak * min_frac."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def step_generator(stage: str, seed: int, step: int, device) -> torch.Generator:
    """The sampling generator of one step: a pure function of (stage, seed, step), from a hash so that
    every step, seed and stage draws its own stream. torch's CPU generator (mt19937) keeps only the
    low 32 bits of a seed, CUDA's Philox 64: the hash is folded to what the device's generator keeps."""
    h = int.from_bytes(hashlib.sha256(f"{stage}/{seed}/{step}".encode()).digest()[:8], "little")
    g = torch.Generator(device=device)
    g.manual_seed(h % 2 ** 32 if torch.device(device).type == "cpu" else h % 2 ** 63)
    return g


def sampling_kwargs(cfg: Config) -> dict:
    """The RL sampling distribution (temperature, top-k, top-p), shared by RL and c_ref calibration."""
    return dict(temperature=cfg.temperature, top_k=cfg.top_k or None, top_p=cfg.top_p if cfg.top_p < 1 else None)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (model init draws from torch's; numpy's and Python's are seeded so that the
    states saved in a checkpoint are reproducible). Sampling uses its own per-step generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def fmt_time(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def families_levels(cfg: Config):
    return tuple(cfg.families.split(",")), tuple(int(x) for x in cfg.levels.split(","))


CKPT_KEYS = ("model", "optimizer", "step", "config", "model_config", "stage")


def load_checkpoint(run_dir: str, map_location="cpu") -> dict:
    """The checkpoint dict of a run directory (or a ckpt.pt path), or UserError('path: what is wrong').
    Checkpoints are pickles: load only your own (torch.load runs code from a crafted file)."""
    path = os.path.join(run_dir, "ckpt.pt") if os.path.isdir(run_dir) else run_dir
    if not os.path.isfile(path):
        raise UserError(f"{path}: no checkpoint here")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated, empty, corrupt or foreign files fail in many ways
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: not a readable checkpoint ({reason})") from None
    missing = [k for k in CKPT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise UserError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    return ck


def load_run(run_dir: str, device="cpu") -> tuple[GPT, Tokenizer, dict]:
    """Model (eval mode), tokenizer and checkpoint dict of a run directory: used by RL and evaluate.py."""
    ck = load_checkpoint(run_dir)
    tok_path = os.path.join(run_dir if os.path.isdir(run_dir) else os.path.dirname(run_dir), "tokenizer.json")
    try:
        tok = load_tokenizer(tok_path)
    except FileNotFoundError:
        raise UserError(f"{tok_path}: no tokenizer here") from None
    except (OSError, ValueError, KeyError, TypeError) as e:  # JSON errors are ValueErrors
        raise UserError(f"{tok_path}: unreadable tokenizer ({type(e).__name__}: {e})") from None
    try:
        model = GPT(GPTConfig(**ck["model_config"]))
        model.load_state_dict(ck["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise UserError(f"{run_dir}: checkpoint weights do not fit its model config "
                        f"({str(e).splitlines()[0][:160]})") from None
    if model.cfg.vocab_size != tok.vocab_size:
        raise UserError(f"{run_dir}: checkpoint vocab {model.cfg.vocab_size} != tokenizer vocab {tok.vocab_size}")
    return model.to(device).eval(), tok, ck


# ============================================================================ evaluation during training

@torch.no_grad()
def heldout_eval(model, tok, problems, cfg: Config, device, c_ref=None, beta_v=None) -> dict:
    """One sample per validation problem at temperature 1 (fixed generator): accuracy overall and per
    family, and, when c_ref is known, self-verification of r_s on those samples."""
    from verify import reward

    model.eval()
    g = step_generator("eval", cfg.seed, 0, device)
    correct, finished, logp_zc = [], [], []
    for i in range(0, len(problems), cfg.eval_batch):
        chunk = problems[i:i + cfg.eval_batch]
        with autocast(device):
            ro = sample(model, [tok.encode_prompt(p.problem) for p in chunk], 1, cfg.max_new_tokens,
                        temperature=1.0, generator=g, tokenizer=tok)
        correct += [reward(t, p.answer) == 1.0 for t, p in zip(ro.texts, chunk)]
        finished += ro.finished.tolist()
        logp_zc += ro.logp_zc.tolist()
    out = {"eval_acc": float(np.mean(correct)), "eval_truncated": 1 - float(np.mean(finished))}
    for fam in sorted({p.family for p in problems}):
        sel = [c for c, p in zip(correct, problems) if p.family == fam]
        out[f"eval_acc_{fam}"] = float(np.mean(sel))
    if c_ref is not None and math.isfinite(c_ref):
        r_s = beta_v * (np.array(logp_zc) - c_ref)
        sv = self_verification_metrics(r_s, correct, finished)
        out.update({f"eval_sv_{k}": sv[k] for k in ("tpr", "tnr", "f1", "auroc")})
    return out


def heldout_problems(cfg: Config, split: str = "validation", n: int | None = None) -> list[tasks.Problem]:
    """Validation (training-time evaluation, tuning) or test (evaluate.py) problems. Drawn with split
    seed 0 whatever the training seed, so that runs of different seeds are compared on one set."""
    fam, lv = families_levels(cfg)
    return tasks.make_split(split, n or (cfg.n_val if split == "validation" else cfg.n_test), 0, fam, lv)


# ============================================================================ SFT

def sft_batch(tok: Tokenizer, problems, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded [BOS, problem, \\n, solution, EOS] rows. Returns inputs (B, L-1), targets (B, L-1) and
    the loss mask (B, L-1): True where the target is a solution token or the EOS (by position)."""
    rows, starts = [], []
    for p in problems:
        prompt = tok.encode_prompt(p.problem)
        rows.append(prompt + tok.encode(p.solution) + [tok.eos_id])
        starts.append(len(prompt))
    L = max(map(len, rows))
    seq = torch.full((len(rows), L), tok.pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        seq[i, :len(r)] = torch.tensor(r)
    pos = torch.arange(1, L)[None, :]  # position of each target
    lens = torch.tensor([len(r) for r in rows])[:, None]
    mask = (pos >= torch.tensor(starts)[:, None]) & (pos < lens)  # (B, L-1)
    return seq[:, :-1].to(device), seq[:, 1:].to(device), mask.to(device)


def sft_loss_backward(model, tok: Tokenizer, problems, micro_batch: int, device) -> tuple[float, int]:
    """Accumulate the gradient of the token-mean SFT loss over `problems`; returns (loss, real tokens).

    The problems are sorted by length and cut into micro-batches, each padded only to its own
    longest row: about half the compute of one padded batch is padding otherwise. Every micro-batch
    is normalised by the whole batch's count of trained tokens, so the gradient equals the one of the
    single padded batch."""
    lengths = [len(tok.encode_prompt(p.problem)) + len(tok.encode(p.solution)) for p in problems]
    order = sorted(range(len(problems)), key=lambda i: lengths[i])
    chunks = [[problems[i] for i in order[s:s + micro_batch]] for s in range(0, len(order), micro_batch)]
    batches = [sft_batch(tok, c, device) for c in chunks]
    n_target = sum(int(m.sum()) for _, _, m in batches)
    total = 0.0
    for x, y, mask in batches:
        with autocast(device):
            logits = model(x)  # (b, L-1, V)
        per_tok = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")
        loss = (per_tok * mask).sum() / max(1, n_target)
        loss.backward()
        total += loss.item()
    return total, sum(lengths)  # real input tokens: each row minus its last token


def corpus_for_tokenizer(cfg: Config, extra_data: list[tasks.Problem] = ()) -> list[str]:
    """Generated training problems (and the outside ones) the BPE merges are learned from."""
    fam, lv = families_levels(cfg)
    probs = [p for s in range(40) for p in tasks.train_batch(s, 64, f"bpe-{cfg.seed}", fam, lv)]
    return [p.problem + "\n" + p.solution for p in probs + list(extra_data)]


def sft_row_length(tok: Tokenizer, p: tasks.Problem) -> int:
    """Tokens of one SFT row: [BOS, problem, newline, solution, EOS]."""
    return len(tok.encode_prompt(p.problem)) + len(tok.encode(p.solution or "")) + 1


def outside_train_data(cfg: Config) -> list[tasks.Problem]:
    """The --data_jsonl problems whose canonical key is in the train split (the others would be twins
    of validation or test problems); a problem without a solution is trained on its boxed answer."""
    try:
        loaded = tasks.load_jsonl(cfg.data_jsonl)
    except ValueError as e:
        raise UserError(str(e)) from None
    loaded = [p if p.solution else dataclasses.replace(p, solution=f"\\boxed{{{p.answer}}}") for p in loaded]
    kept, dropped = tasks.keep_split(loaded, "train")
    print(f"--data_jsonl {cfg.data_jsonl}: {len(kept)} problems for training, {dropped} dropped "
          f"(their keys belong to the validation or test split)")
    return kept


def new_model(cfg: Config, tok: Tokenizer, device) -> GPT:
    torch.manual_seed(cfg.seed)
    mc = GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                   n_head=cfg.n_head, n_embd=cfg.n_embd)
    return GPT(mc).to(device)


def make_optimizer(model: GPT, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def checkpoint(path, model, opt, step, cfg, extra: dict) -> None:
    """Weights, optimizer, step (= data cursor), RNG states, configs and `extra`; fsync'd, then renamed
    into place. Non-finite weights are never written over a good checkpoint."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UserError(f"the weights are not finite after step {step}: not overwriting {path}; "
                        f"lower the learning rate")
    atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "data_cursor": step, "rng": rng_state(), "config": asdict(cfg),
                 "model_config": asdict(model.cfg), **extra}, path)


def run_sft(cfg: Config) -> str:
    device = get_device(cfg)
    make_run_dir(cfg.out_dir)
    ck_path = os.path.join(cfg.out_dir, "ckpt.pt")
    fam, lv = families_levels(cfg)
    extra_data = outside_train_data(cfg) if cfg.data_jsonl else []
    if cfg.resume:
        model, tok, ck = load_run(cfg.out_dir, device)
        if ck["stage"] != "sft":
            raise UserError(f"{cfg.out_dir} holds a {ck['stage']} checkpoint, not sft")
        model.train()
        opt = make_optimizer(model, cfg.sft_lr, cfg.weight_decay)
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        start, guard = ck["step"], SkipGuard(cfg.max_skipped, ck)
        log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), resume_step=start)
        print(f"resumed SFT at step {start}")
    else:
        seed_everything(cfg.seed)
        tok = build_tokenizer(corpus_for_tokenizer(cfg, extra_data), cfg.bpe_merges)
        write_text(os.path.join(cfg.out_dir, "tokenizer.json"), tok.to_json())
        model = new_model(cfg, tok, device)
        opt = make_optimizer(model, cfg.sft_lr, cfg.weight_decay)
        start, guard = 0, SkipGuard(cfg.max_skipped)
        log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"))
    write_json(asdict(cfg), os.path.join(cfg.out_dir, "config.json"))
    val = heldout_problems(cfg)
    check_lengths(cfg, tok, model.cfg.block_size)
    if extra_data:
        fits = [p for p in extra_data if sft_row_length(tok, p) <= model.cfg.block_size]
        if len(fits) < len(extra_data):
            print(f"--data_jsonl: skipped {len(extra_data) - len(fits)} problems longer than the model's "
                  f"block_size {model.cfg.block_size}")
        if not fits:
            raise UserError(f"--data_jsonl {cfg.data_jsonl}: no problem fits the model's block_size "
                            f"{model.cfg.block_size}")
        extra_data = fits
    print(f"SFT: {model.num_params() / 1e6:.2f}M parameters, vocab {tok.vocab_size}, device {device}, "
          f"{cfg.sft_steps} steps x {cfg.sft_batch_size} problems")
    t0, tokens_seen, last = time.time(), 0, time.time()
    for step in range(start, cfg.sft_steps):
        model.train()
        probs = tasks.train_batch(step, cfg.sft_batch_size, cfg.seed, fam, lv)
        if extra_data:  # mix outside data in, deterministically by step
            r = random.Random(f"jsonl-{cfg.seed}-{step}")
            probs = probs[: len(probs) // 2] + [r.choice(extra_data) for _ in range(len(probs) - len(probs) // 2)]
        lr = lr_at(step, cfg.sft_steps, cfg.sft_lr, cfg.sft_warmup, cfg.min_lr_frac)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss, n_real = sft_loss_backward(model, tok, probs, cfg.sft_micro_batch, device)
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf))
        skipped = not (math.isfinite(loss) and math.isfinite(gnorm))
        if skipped:
            opt.zero_grad(set_to_none=True)  # a non-finite loss skips the step; weights stay as they were
        else:
            opt.step()
        tokens_seen += n_real
        done = step + 1
        guard.update(skipped, done, "SFT")
        rec = {"step": done, "loss": loss, "lr": lr, "grad_norm": gnorm, "skipped_steps": guard.total}
        if cfg.eval_every and done % cfg.eval_every == 0 or done == cfg.sft_steps:
            rec.update(heldout_eval(model, tok, val, cfg, device))
        if done % cfg.log_every == 0 or "eval_acc" in rec or done == cfg.sft_steps:
            el = time.time() - t0
            rec["tokens_per_s"] = tokens_seen / max(1e-9, time.time() - last)
            tokens_seen, last = 0, time.time()
            eta = el / (done - start) * (cfg.sft_steps - done)
            msg = (f"sft {done:5d}/{cfg.sft_steps} loss {rec['loss']:.4f} lr {lr:.2e} "
                   f"tok/s {rec['tokens_per_s']:.0f} elapsed {fmt_time(el)} eta {fmt_time(eta)}")
            if "eval_acc" in rec:
                msg += f" | val acc {rec['eval_acc']:.3f} (" + " ".join(
                    f"{k[9:12]} {v:.2f}" for k, v in rec.items() if k.startswith("eval_acc_")) + ")"
            print(msg, flush=True)
        log.write(rec)
        if done % cfg.ckpt_every == 0 or done == cfg.sft_steps or done == cfg.halt_at:
            checkpoint(ck_path, model, opt, done, cfg, {"stage": "sft", **guard.state()})
        if done == cfg.halt_at:
            print(f"halted after step {done} (--halt_at)")
            break
    return cfg.out_dir


# ============================================================================ RL

@torch.no_grad()
def calibrate_c_ref(model, tok, cfg: Config, device) -> tuple[float, float, int]:
    """LASER.md section 5: log pi_ref(z_c | x, y) at the EOS of the reference policy's own solutions.
    Returns (mean, std, number of finished samples)."""
    model.eval()
    fam, lv = families_levels(cfg)
    probs = tasks.train_batch(0, cfg.calib_prompts, f"calib-{cfg.seed}", fam, lv)
    g = step_generator("calib", cfg.seed, 0, device)
    vals = []
    for i in range(0, len(probs), cfg.eval_batch):
        with autocast(device):
            ro = sample(model, [tok.encode_prompt(p.problem) for p in probs[i:i + cfg.eval_batch]],
                        cfg.calib_samples, cfg.max_new_tokens, generator=g, tokenizer=tok, **sampling_kwargs(cfg))
        vals += ro.logp_zc[ro.finished].tolist()
    if not vals:
        raise UserError("no calibration sample finished; raise --max_new_tokens")
    return float(np.mean(vals)), float(np.std(vals)), len(vals)


def check_c_ref(c_ref: float, c_std: float, beta_v: float, margin: float = 2.0,
                max_spread: float = 0.1) -> str | None:
    """LASER.md section 5: the log Z ~ 0 approximation needs c_ref + 1/beta_v well below 0, and the
    constant c_ref stands in for log pi_ref(z_c | x, y) only if beta_v * std is small against the 0..1
    reward scale. Returns a warning naming both figures, or None."""
    problems = []
    if c_ref + 1.0 / beta_v > -margin:
        problems.append(f"c_ref + 1/beta_v = {c_ref + 1 / beta_v:.2f} is not below -{margin}: the target "
                        f"log p(z_c) of correct solutions is near or above 0 and log Z ~ 0 fails (raise beta_v)")
    if c_std * beta_v > max_spread:
        problems.append(f"beta_v * std = {beta_v * c_std:.3f} exceeds {max_spread}: log pi_ref(z_c | x, y) "
                        f"varies across solutions by more than a constant c_ref can absorb, so r_s carries "
                        f"the reference model's own spread (lower beta_v, or read r_s as noisier)")
    if not problems:
        return None
    return (f"WARNING: c_ref = {c_ref:.2f} (std {c_std:.2f}), beta_v = {beta_v}, c_ref + 1/beta_v = "
            f"{c_ref + 1 / beta_v:.2f}, beta_v * std = {beta_v * c_std:.3f}: " + "; ".join(problems) + ".")


def rollout_step(model, tok, cfg: Config, step: int, device):
    fam, lv = families_levels(cfg)
    probs = tasks.train_batch(step, cfg.prompts_per_step, f"rl-{cfg.seed}", fam, lv)
    prompts = [tok.encode_prompt(p.problem) for p in probs]
    model.eval()
    with autocast(device):
        ro = sample(model, prompts, cfg.group_size, cfg.max_new_tokens, tokenizer=tok,
                    generator=step_generator("rl", cfg.seed, step, device), **sampling_kwargs(cfg))
    return probs, ro


def subset(ro: Rollouts, rows: torch.Tensor) -> Rollouts:
    """Rows of a rollout batch as a Rollouts of groups of one (for micro-batching)."""
    r = rows.tolist()
    return Rollouts([ro.prompts[i // ro.group_size] for i in r], 1, ro.response[rows], ro.mask[rows],
                    ro.logprobs[rows], ro.finished[rows], ro.logp_zc[rows], [ro.texts[i] for i in r],
                    ro.temperature, ro.top_k, ro.top_p, ro.suppressed)


def rl_update(model, ref_model, opt, ro: Rollouts, adv, r_v, cfg: Config, use_mse: bool, c_ref, device,
              tok) -> dict:
    """ppo_epochs passes over the batch in micro-batches; one optimizer step per pass. The loss of
    each micro-batch is normalised by the whole batch's token (or sequence) count and class counts,
    so the gradient does not depend on micro_batch. Returns loss/grad statistics."""
    N = len(ro)
    n_tok, n_seq = int(ro.mask.sum()), N
    fin = ro.finished
    n_c = int((fin & (r_v > 0.5)).sum())
    n_i = int((fin & (r_v <= 0.5)).sum())
    stats = {"loss_pg": 0.0, "loss_mse": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0, "skipped": 0}
    # micro-batches of rows of similar length (prompt + response): less padding, same gradient
    total_len = torch.tensor([len(ro.prompts[i // ro.group_size]) for i in range(N)]) + ro.lengths.cpu()
    order = torch.argsort(total_len, stable=True).to(ro.response.device)
    by_length = [order[s:s + cfg.micro_batch] for s in range(0, N, cfg.micro_batch)]
    model.train()
    for _ in range(cfg.ppo_epochs):
        opt.zero_grad(set_to_none=True)
        tot = {"pg": 0.0, "mse": 0.0, "kl": 0.0, "clip": 0.0}
        for rows in by_length:
            mb = subset(ro, rows)
            with autocast(device):
                logp, logp_zc = score_rollouts(model, mb, tok.zc_id, tok.pad_id)  # (n, T), (n,)
            pg, st = ppo_clip_loss(logp, mb.logprobs, adv[rows], mb.mask, cfg.clip_low, cfg.clip_high,
                                   cfg.loss_agg, num_tokens=n_tok, num_seqs=n_seq)
            loss = pg
            tot["pg"] += pg.item()
            tot["clip"] += st["clip_frac"] * int(mb.mask.sum()) / max(1, n_tok)
            if cfg.kl_coef > 0:  # LASER.md section 7: 0 by default, then no reference forward
                with torch.no_grad(), autocast(device):
                    logp_ref, _ = score_rollouts(ref_model, mb, tok.zc_id, tok.pad_id)
                kl = aggregate_loss(kl_penalty(logp, logp_ref, cfg.kl_estimator), mb.mask, cfg.loss_agg,
                                    num_tokens=n_tok, num_seqs=n_seq)
                loss = loss + cfg.kl_coef * kl
                tot["kl"] += kl.item()
            if use_mse:  # LASER.md section 2: L = L_RLVR + alpha * L_SR
                r_s = self_reward_score(logp_zc, c_ref, cfg.beta_v)
                mse, _ = laser_mse_loss(r_s, r_v[rows], mb.finished, n_correct=n_c, n_incorrect=n_i)
                loss = loss + cfg.alpha * mse
                tot["mse"] += mse.item()
            loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
        if not all(math.isfinite(v) for v in tot.values()) or not torch.isfinite(gnorm):
            opt.zero_grad(set_to_none=True)  # a non-finite loss skips the step; weights stay finite
            stats["skipped"] += 1
        else:
            opt.step()
        stats.update(loss_pg=tot["pg"], loss_mse=tot["mse"], kl=tot["kl"], clip_frac=tot["clip"],
                     grad_norm=float(gnorm))
    return stats


class SkipGuard:
    """Counts steps skipped for a non-finite loss or gradient (the weights are left as they were) and
    stops the run when `limit` come in a row: training that has diverged should not exit 0."""

    def __init__(self, limit: int, ck: dict | None = None):
        self.limit = limit
        self.total, self.in_a_row = (ck.get("skipped_steps", 0), ck.get("skipped_in_a_row", 0)) if ck else (0, 0)

    def state(self) -> dict:
        return {"skipped_steps": self.total, "skipped_in_a_row": self.in_a_row}

    def update(self, skipped: int, step: int, stage: str) -> None:
        self.total += skipped
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        if self.in_a_row >= self.limit:
            raise UserError(f"{stage} stopped at step {step}: {self.in_a_row} steps in a row had a non-finite "
                            f"loss or gradient and were skipped (the last checkpoint is kept); lower the "
                            f"learning rate or check the data")


def _mean_or_nan(x: torch.Tensor) -> float:
    return float(x.mean()) if x.numel() else float("nan")


def run_rl(cfg: Config) -> str:
    from verify import reward_with_reason

    device = get_device(cfg)
    make_run_dir(cfg.out_dir)
    ck_path = os.path.join(cfg.out_dir, "ckpt.pt")
    if cfg.resume:
        model, tok, ck = load_run(cfg.out_dir, device)
        check_lengths(cfg, tok, model.cfg.block_size)
        missing = [k for k in ("c_ref", "c_ref_std", "beta_v", "skipped_steps", "init") if k not in ck]
        if ck["stage"] != "rl" or missing:
            raise UserError(f"{cfg.out_dir} holds a {ck['stage']} checkpoint, not an rl one"
                            + (f" (missing {', '.join(missing)})" if missing else ""))
        start, c_ref, c_std = ck["step"], ck["c_ref"], ck["c_ref_std"]
        guard = SkipGuard(cfg.max_skipped, ck)
        if ck["beta_v"] != cfg.beta_v:
            raise UserError(f"checkpoint was trained with beta_v={ck['beta_v']}, "
                             f"config says {cfg.beta_v}")
        init_dir = ck["init"]
        opt = make_optimizer(model, cfg.rl_lr, cfg.weight_decay)
        opt.load_state_dict(ck["optimizer"])
        set_rng_state(ck["rng"])
        log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), resume_step=start)
        samples_log = MetricsLog(os.path.join(cfg.out_dir, "samples.jsonl"), resume_step=start)
        print(f"resumed RL at step {start} (c_ref {c_ref:.3f})")
    else:
        seed_everything(cfg.seed)
        model, tok, ck = load_run(cfg.init, device)
        check_lengths(cfg, tok, model.cfg.block_size)
        if ck["stage"] != "sft":
            print(f"note: starting RL from a {ck['stage']} checkpoint in {cfg.init}")
        init_dir, start, guard = cfg.init, 0, SkipGuard(cfg.max_skipped)
        write_text(os.path.join(cfg.out_dir, "tokenizer.json"), tok.to_json())
        opt = make_optimizer(model, cfg.rl_lr, cfg.weight_decay)
        if math.isfinite(cfg.c_ref):
            c_ref, c_std = cfg.c_ref, float("nan")
            print(f"c_ref = {c_ref:.3f} given by --c_ref (LASER.md section 5 recommends measuring it)")
        else:
            t = time.time()
            c_ref, c_std, n = calibrate_c_ref(model, tok, cfg, device)
            print(f"c_ref calibrated on the reference policy: mean {c_ref:.3f}, std {c_std:.3f} over {n} "
                  f"finished samples ({time.time() - t:.1f}s); beta_v * std = {cfg.beta_v * c_std:.3f}")
        log = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"))
        samples_log = MetricsLog(os.path.join(cfg.out_dir, "samples.jsonl"))
    warn = check_c_ref(c_ref, c_std if math.isfinite(c_std) else 0.0, cfg.beta_v)
    if warn:
        print("!" * 100 + "\n" + warn + "\n" + "!" * 100, file=sys.stderr)
    write_json(asdict(cfg), os.path.join(cfg.out_dir, "config.json"))
    ref_model = None
    if cfg.kl_coef > 0:
        ref_model, _, _ = load_run(init_dir, device)
    val = heldout_problems(cfg)
    K = cfg.group_size
    mse_from = cfg.reasoning_warmup
    integrate_from = cfg.reasoning_warmup + cfg.self_reward_warmup
    print(f"RL ({cfg.algo}): {model.num_params() / 1e6:.2f}M parameters, {cfg.rl_steps} steps x "
          f"{cfg.prompts_per_step} problems x {K} samples, device {device}"
          + (f"; MSE from step {mse_from}, advantage integration from step {integrate_from}"
             if cfg.algo == "laser" else ""))
    extra = lambda: {"stage": "rl", "c_ref": c_ref, "c_ref_std": c_std, "beta_v": cfg.beta_v,
                     **guard.state(), "init": init_dir, "algo": cfg.algo}
    t_start = time.time()
    if start == 0:
        rec = {"step": 0, "c_ref": c_ref, "c_ref_std": c_std, "c_ref_beta_std": cfg.beta_v * c_std}
        rec.update(heldout_eval(model, tok, val, cfg, device, c_ref, cfg.beta_v))
        log.write(rec)
        print(f"rl     0 val acc {rec['eval_acc']:.3f}", flush=True)
    for step in range(start, cfg.rl_steps):
        t0 = time.time()
        probs, ro = rollout_step(model, tok, cfg, step, device)
        t1 = time.time()
        golds = [p.answer for p in probs for _ in range(K)]
        rr = [reward_with_reason(text, gold) for text, gold in zip(ro.texts, golds)]
        r_v = torch.tensor([r for r, _ in rr], dtype=torch.float32, device=ro.response.device)  # (N,)
        reasons = [why for _, why in rr]
        t2 = time.time()
        # advantages (LASER.md section 2), then self-reward integration (section 3)
        adv, n_zero = group_advantages(r_v, K, cfg.adv_mode)
        r_s_sampler = self_reward_score(ro.logp_zc, c_ref, cfg.beta_v)  # (N,) NaN for truncated
        n_integrated = 0
        laser = cfg.algo == "laser"
        if laser and step >= integrate_from:
            adv, n_integrated = integrate_advantages(adv, r_s_sampler, ro.finished, K, cfg.tau, cfg.std_threshold)
        for gparam in opt.param_groups:
            gparam["lr"] = lr_at(step, cfg.rl_steps, cfg.rl_lr, cfg.rl_warmup, cfg.min_lr_frac)
        st = rl_update(model, ref_model, opt, ro, adv, r_v, cfg, laser and step >= mse_from, c_ref, device, tok)
        guard.update(st.pop("skipped"), step + 1, "RL")
        t3 = time.time()
        done = step + 1
        sv = self_verification_metrics(r_s_sampler.cpu().numpy(), (r_v > 0.5).cpu().numpy(),
                                       ro.finished.cpu().numpy())
        n_tok = int(ro.mask.sum())
        lens = ro.lengths.float()
        rec = {"step": done, "reward": float(r_v.mean()), "accuracy": float(r_v.mean()),
               "no_answer": reasons.count("no_answer") / len(rr), "unparsable": reasons.count("unparsable") / len(rr),
               "sv_tpr": sv["tpr"], "sv_tnr": sv["tnr"], "sv_f1": sv["f1"], "sv_auroc": sv["auroc"],
               "rs_correct": _mean_or_nan(r_s_sampler[ro.finished & (r_v > 0.5)]),
               "rs_incorrect": _mean_or_nan(r_s_sampler[ro.finished & (r_v <= 0.5)]),
               **st, "resp_len_mean": float(lens.mean()), "resp_len_max": int(lens.max()),
               "truncated": float((~ro.finished).float().mean()), "zero_var_groups": n_zero,
               "integrated_groups": n_integrated, "mse_on": bool(laser and step >= mse_from),
               "c_ref": c_ref, "lr": opt.param_groups[0]["lr"], "skipped_steps": guard.total,
               "time_rollout": t1 - t0, "time_verify": t2 - t1, "time_update": t3 - t2,
               "tokens_per_s": n_tok / max(1e-9, t1 - t0)}
        if cfg.rl_eval_every and done % cfg.rl_eval_every == 0 or done == cfg.rl_steps:
            rec.update(heldout_eval(model, tok, val, cfg, device, c_ref, cfg.beta_v))
        log.write(rec)
        for i in range(min(cfg.n_log_samples, len(probs))):
            row = i * K  # first sample of the first problems
            samples_log.write({"step": done, "problem": probs[row // K].problem, "gold": probs[row // K].answer,
                               "response": ro.texts[row], "reward": float(r_v[row]),
                               "reason": reasons[row], "r_s": float(r_s_sampler[row])})
        el = time.time() - t_start
        eta = el / (done - start) * (cfg.rl_steps - done)
        msg = (f"rl {done:5d}/{cfg.rl_steps} acc {rec['accuracy']:.3f} sv_f1 {rec['sv_f1']:.3f} "
               f"auroc {rec['sv_auroc']:.3f} pg {rec['loss_pg']:+.4f} mse {rec['loss_mse']:.4f} "
               f"gn {rec['grad_norm']:.2f} len {rec['resp_len_mean']:.0f} trunc {rec['truncated']:.2f} "
               f"zvar {n_zero} t {t1 - t0:.1f}/{t2 - t1:.1f}/{t3 - t2:.1f}s eta {fmt_time(eta)}")
        if "eval_acc" in rec:
            msg += f" | val acc {rec['eval_acc']:.3f}"
        print(msg, flush=True)
        if done % cfg.ckpt_every == 0 or done == cfg.rl_steps or done == cfg.halt_at:
            checkpoint(ck_path, model, opt, done, cfg, extra())
        if done == cfg.halt_at:
            print(f"halted after step {done} (--halt_at)")
            break
    return cfg.out_dir


# ============================================================================ main

def main(argv=None) -> str:
    """Run the stages the config asks for. Bad input ends in one line on stderr and exit code 2."""
    try:
        return _main(argv)
    except UserError as e:
        sys.stderr.write(f"train.py: error: {e}\n")
        raise SystemExit(2) from None


def saved_config(out_dir: str) -> Config:
    """The config.json of a run directory, its types checked (the caller checks the values)."""
    path = os.path.join(out_dir, "config.json")
    saved = read_json(path, "run config")
    types = {f.name: type(f.default) for f in fields(Config)}
    for k, v in saved.items():
        want = types.get(k)
        if want is not None and not (isinstance(v, want) or want is float and isinstance(v, int)
                                     or want is float and v is None):
            raise UserError(f"{path}: {k} should be {want.__name__}, got {v!r}")
    return Config(**{k: (float("nan") if v is None else v) for k, v in saved.items() if k in types})


def make_run_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {path}: {e.strerror}") from None


def _main(argv=None) -> str:
    cfg, given = resolve_config(argv)
    if cfg.resume:  # a resumed run keeps its saved config; explicit flags still apply
        cfg = dataclasses.replace(saved_config(cfg.out_dir), **given)
        check_config(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    print("config: " + json.dumps(asdict(cfg)))
    if cfg.stage == "sft":
        return run_sft(cfg)
    if cfg.stage == "rl":
        return run_rl(cfg)
    root = cfg.out_dir
    sft_dir = run_sft(dataclasses.replace(cfg, stage="sft", out_dir=os.path.join(root, "sft")))
    return run_rl(dataclasses.replace(cfg, stage="rl", init=sft_dir, out_dir=os.path.join(root, cfg.algo)))


if __name__ == "__main__":
    main()
