"""What a run is: the Config dataclass (every knob, with its meaning), named presets, the command line,
the checks of a config against itself and the task space, the device, and the held-out problems.

Every value a user can get wrong is checked here and reported as one line (UserError, exit code 2);
runs.py holds what a run leaves on disk.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import math
import os
import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass, fields

import torch

import tasks
from tokenizer import Tokenizer


@dataclass
class Config:
    # --- run
    stage: str = "all"            # sft | rl | all (sft into OUT/sft, then rl into OUT/<algo>)
    out_dir: str = "out/run"      # run directory (for --stage all: the parent of sft/ and <algo>/)
    seed: int = 0                 # seeds data, init and sampling
    device: str = "auto"          # auto | cpu | cuda (auto: cuda if available; bf16 autocast on a card with bf16)
    threads: int = 0              # torch CPU threads (0: torch's default)
    resume: bool = False          # continue the run in out_dir from its ckpt.pt (--stage all: OUT/sft, then OUT/<algo>)
    halt_at: int = 0              # stop each stage after this step, with a checkpoint (to try a resume); 0: off
    # --- data
    families: str = ",".join(tasks.FAMILIES)  # comma-separated task families
    levels: str = "1,2,3"         # comma-separated difficulty levels
    data_jsonl: str = ""          # {"problem","answer"[,"solution"]} lines; train-split ones join SFT and RL
    data_mix: float = 0.5         # share of each SFT batch and RL step from --data_jsonl, rounded up (1: only it)
    n_val: int = 150              # generated validation problems (also with --data_jsonl) for evaluation during training
    n_test: int = 150             # test problems (evaluate.py's default; never seen in training)
    bpe_merges: int = 256         # at most this many BPE merges from the task corpus (fewer where no pair repeats)
    # --- model
    n_layer: int = 4              # transformer blocks
    n_head: int = 4               # attention heads
    n_embd: int = 128             # residual width (a multiple of 2 * n_head)
    block_size: int = 256         # longest sequence: prompt + max_new_tokens, and one position spare
    arch: str = "ours"            # ours (GELU MLP, RMSNorm without gains) | llama (SwiGLU, RMSNorm gains; exportable)
    init_hf: str = ""             # a local Hugging Face Llama/Qwen2 directory SFT starts from (replaces the model flags)
    # --- SFT
    sft_steps: int = 1000         # SFT optimizer steps
    sft_batch_size: int = 32      # problems (worked solutions) per SFT step
    sft_micro_batch: int = 8      # rows per forward: the batch is sorted by length and split (less padding, same gradient)
    micro_tokens: int = 0         # padded tokens per forward/backward, SFT and RL, besides the row caps (0: no cap)
    sft_pack: bool = False        # SFT: pack rows into rows of block_size tokens, each kept to itself (no padding)
    sft_graphs: bool = False      # SFT on CUDA: replay each step (forward, backward, clipping, AdamW) from a CUDA graph (needs --sft_pack)
    compile: str = "auto"         # torch.compile of the training forward: auto (CUDA: on) | on (per block) | model (one graph) | off (nor the CUDA decode step)
    sft_lr: float = 2e-3          # SFT peak learning rate (AdamW)
    sft_warmup: int = 50          # linear warm-up steps, then cosine decay to sft_lr * min_lr_frac
    min_lr_frac: float = 0.1      # the cosine decays towards this fraction of the peak learning rate (SFT and RL)
    weight_decay: float = 0.0     # AdamW weight decay on the weight matrices except the input embedding, SFT and RL
    # --- RL (shared by grpo and laser)
    algo: str = "laser"           # grpo | laser
    init: str = ""                # SFT run directory RL starts from (--stage rl)
    rl_steps: int = 100           # RL steps (one rollout batch and one update each)
    prompts_per_step: int = 16    # problems per RL step
    group_size: int = 8           # K rollouts per problem
    max_new_tokens: int = 128     # response length limit; a response without EOS by then is truncated
    temperature: float = 1.0      # RL sampling temperature (r_s is read from untempered logits)
    top_k: int = 0                # 0: off
    top_p: float = 1.0            # 1.0: off
    rl_lr: float = 1e-4           # RL peak learning rate (AdamW)
    rl_warmup: int = 5            # RL linear warm-up steps, then cosine decay
    ppo_epochs: int = 1           # optimizer passes over each rollout batch (1: ratio 1 up to rounding)
    micro_batch: int = 64         # rows per forward/backward (gradient is the same for any value)
    verify_workers: int = 0       # processes that verify each step's rollouts (0: this process)
    clip_low: float = 0.2         # PPO ratio clip: 1 - clip_low
    clip_high: float = 0.28       # and 1 + clip_high (asymmetric, as DAPO)
    loss_agg: str = "token_mean"  # token_mean | seq_mean
    adv_mode: str = "grpo"        # grpo (z-score) | drgrpo (mean-only)
    kl_coef: float = 0.0          # KL(pi || pi_ref) coefficient; 0 skips the reference model
    kl_estimator: str = "k3"      # k1 | k2 | k3 (loss.kl_penalty)
    grad_clip: float = 1.0        # max gradient norm (0: no clipping)
    max_skipped: int = 5          # stop when this many consecutive steps had a non-finite loss or gradient
    #                               (SFT on CUDA: noticed when the steps are read back, at the next log
    #                               line, evaluation, checkpoint or 100th step)
    # --- LaSeR (docs/laser.md §2-5)
    beta_v: float = 0.1           # r_s = beta_v * (log p(z_c) - c_ref)
    alpha: float = 0.1            # weight of the self-rewarding MSE
    sr_weighting: str = "batch"   # MSE class weights over the step's batch (eq. 6) | group: within each problem (study)
    tau: float = 0.1              # weight of the self-reward advantage
    std_threshold: float = 0.1    # T: integrate only groups whose std(clip(r_s,0,1)) > T
    reasoning_warmup: int = 0     # RL steps of plain GRPO before the MSE starts
    self_reward_warmup: int = 20  # further steps before advantage integration starts
    c_ref: float = float("nan")   # NaN: measure on the reference policy (never copy one)
    calib_prompts: int = 64       # problems x samples used to measure c_ref
    calib_samples: int = 4        # samples per calibration problem
    # --- logging / evaluation / checkpoints
    log_every: int = 10           # SFT: steps per progress line, or one a minute if sooner (RL prints every step)
    eval_every: int = 200         # SFT steps between validation evaluations (0: only at the end)
    rl_eval_every: int = 25       # RL steps between validation evaluations (0: only at the end)
    ckpt_every: int = 100         # steps between checkpoints (always at the end)
    n_log_samples: int = 2        # decoded rollouts per RL step written to samples.jsonl
    eval_batch: int = 64          # prompts per sampling call in validation and c_ref calibration
    #                               (the random draws follow the calls: another value draws other samples)


PRESETS: dict[str, dict] = {
    # seconds: used by tests and CI
    "test": dict(n_layer=1, n_head=2, n_embd=32, block_size=192, bpe_merges=64, n_val=10, n_test=10,
                 sft_steps=30, sft_batch_size=8, sft_warmup=1, log_every=10, eval_every=0, rl_eval_every=0,
                 rl_steps=2, prompts_per_step=2, group_size=4, max_new_tokens=48, micro_batch=4,
                 rl_warmup=1, ckpt_every=1, calib_prompts=4, calib_samples=4, self_reward_warmup=1,
                 eval_batch=16, compile="off"),  # compiling would take longer than the run
    # a 2-core CPU: the whole pipeline (SFT, GRPO and LaSeR runs, evaluation) in about half an hour
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=256, levels="1,2", sft_steps=2400,
                 sft_batch_size=32, sft_lr=3e-3, sft_warmup=50, eval_every=800, log_every=50, ckpt_every=200,
                 rl_steps=200, prompts_per_step=16, group_size=16, max_new_tokens=128, rl_lr=2e-4,
                 reasoning_warmup=0, self_reward_warmup=60, rl_eval_every=50),
    # one GPU: ~20M parameters; whole batches per forward (a token cap for the longest), large sampling calls.
    # SFT 1,000 steps: after 6,000 (measured on an H100) the policy solved 98% of validation problems and
    # every RL group was all-correct, so GRPO had no signal and r_s no wrong answers to learn from.
    # SFT rows packed: a padded batch of 128 rows was half padding; packed, a step took 2.1x less time on CPU
    # (bench.py --only train; the tiny preset's length-sorted micro-batches of 8 rows gain nothing: 1.02x);
    # on an H100 packed and padded steps ran at the same real tokens/s (docs/gpu_history.md), and each step
    # replayed from CUDA graphs ran 2.4x the rate of one launched op by op (1.13M real tokens/s against 479k)
    "small": dict(n_layer=8, n_head=8, n_embd=448, block_size=320, bpe_merges=512, n_val=300, n_test=300,
                  sft_steps=1000, sft_batch_size=128, sft_micro_batch=128, sft_pack=True, sft_graphs=True,
                  sft_lr=1e-3, sft_warmup=200,
                  weight_decay=0.1, eval_every=500, rl_eval_every=50, log_every=50, ckpt_every=500, rl_steps=400,
                  prompts_per_step=64, group_size=8, max_new_tokens=192, rl_lr=2e-5, micro_batch=512,
                  micro_tokens=65536, eval_batch=512, reasoning_warmup=50,
                  self_reward_warmup=100, calib_prompts=256),
}


class ArgParser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2 (used by every script)."""

    def error(self, message):
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
    out = {}
    for line in inspect.getsource(Config).splitlines():
        line = line.strip()
        if ":" in line and "#" in line and not line.startswith("#"):
            out[line.split(":")[0].strip()] = line.split("#", 1)[1].strip()
    return out


CHOICES = {"stage": ("sft", "rl", "all"), "algo": ("grpo", "laser"), "device": ("auto", "cpu", "cuda"),
           "loss_agg": ("token_mean", "seq_mean"), "adv_mode": ("grpo", "drgrpo"),
           "kl_estimator": ("k1", "k2", "k3"), "arch": ("ours", "llama"),
           "sr_weighting": ("batch", "group"), "compile": ("auto", "on", "model", "off")}


def _defaults(f) -> str:
    """A field's default as --help shows it: Config's, then each preset's own value where it sets one."""
    own = [f"{name} {preset[f.name]}" for name, preset in PRESETS.items() if f.name in preset]
    return f"{f.default}" + (f"; {', '.join(own)}" if own else "")


def build_parser(description: str = "") -> argparse.ArgumentParser:
    p = ArgParser(prog="train.py", description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                  allow_abbrev=False,
                  epilog="Presets: " + ", ".join(PRESETS) + ". Every field of Config can be set, e.g. --rl_lr 3e-5. [Defaults] "
                         "are Config's, then the value each preset sets instead (--config tiny unless given).")
    p.add_argument("--config", default="tiny", choices=list(PRESETS), help="named preset (default tiny)")
    helps = _field_comments()
    for f in fields(Config):
        kind = {bool: _parse_bool, int: int, float: float, str: str}[type(f.default)]
        flag = dict(nargs="?", const=True) if kind is _parse_bool else {}  # `--resume` == `--resume true`
        p.add_argument(f"--{f.name}", type=kind, default=argparse.SUPPRESS, choices=CHOICES.get(f.name),
                       metavar=type(f.default).__name__.upper(), help=f"{helps.get(f.name, '')} [{_defaults(f)}]",
                       **flag)
    return p


def resolve_config(argv=None, description: str = "", parser=None) -> tuple[Config, dict]:
    """Preset, then explicit CLI overrides. Returns the checked config and the overrides given. `parser`:
    build_parser()'s, its errors handled otherwise (study.py's grid entries)."""
    args = vars((parser or build_parser(description)).parse_args(argv))
    cfg = dataclasses.replace(Config(), **PRESETS[args.pop("config")])
    cfg = dataclasses.replace(cfg, **args)
    check_config(cfg)
    return cfg, args


class UserError(Exception):
    """Bad input (a flag, a file) or a run that cannot go on: reported as one line, exit code 2."""


def first_line(e: BaseException, width: int = 160) -> str:
    """An exception's message in one line for a notice or an error: its first line, cut at `width`
    characters, or the exception's type where it has no message (a bare `RuntimeError()` has no first line,
    and indexing one raised IndexError inside the handler meant to report it)."""
    lines = str(e).strip().splitlines()
    return lines[0][:width] if lines else type(e).__name__


def out_of_memory(e: BaseException, smaller: str) -> str:
    """The one line for a CUDA out-of-memory error: what torch says of the card's memory (its first three
    sentences: the request, the card's total and free memory), then `smaller`, the settings that lower it."""
    said = ". ".join((str(e).strip().splitlines() or ["CUDA out of memory"])[0].split(". ")[:3]).rstrip(".")
    return f"{said}; {smaller}"


PATH_FIELDS = ("init", "init_hf", "data_jsonl")  # Config fields that name a file or directory


def same_setting(name: str, a, b) -> bool:
    """Whether two values of Config field `name` are the same setting: NaN equals NaN (c_ref: measure it),
    and a path equals itself however it is spelled."""
    if a == b or isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return name in PATH_FIELDS and bool(a and b) and os.path.realpath(a) == os.path.realpath(b)


def run_dir_of(path: str) -> str:
    """The run directory a path names: the path, or the directory of a run's ckpt.pt."""
    return os.path.dirname(path) or "." if os.path.isfile(path) else path


def check_dir_path(path: str, what: str) -> None:
    """`path` is a directory or can be made one (nothing above it is a file): checked before any work, so
    that the outputs are not lost at the end. A UserError naming `what` (a flag, say) otherwise."""
    here = os.path.abspath(path)
    while not os.path.exists(here):
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        raise UserError(f"{what} {path}: {here} is a file, not a directory")


_finite = math.isfinite
# Every numeric field and its allowed range, checked in one place: (fields, test, what it must be).
RANGES = [
    (("sft_steps", "rl_steps", "sft_batch_size", "sft_micro_batch", "prompts_per_step",
      "max_new_tokens", "micro_batch", "ppo_epochs", "n_layer", "n_head", "n_embd", "block_size", "n_val",
      "n_test", "calib_prompts", "calib_samples", "log_every", "ckpt_every", "eval_batch", "max_skipped"),
     lambda v: v >= 1, ">= 1"),
    (("group_size",), lambda v: v >= 2, ">= 2 (one rollout per problem has no group to compare with: no advantage)"),
    (("threads", "halt_at", "bpe_merges", "micro_tokens", "verify_workers", "sft_warmup", "rl_warmup",
      "eval_every", "rl_eval_every",
      "n_log_samples", "top_k", "reasoning_warmup", "self_reward_warmup"), lambda v: v >= 0, ">= 0"),
    (("sft_lr", "rl_lr", "temperature", "beta_v"), lambda v: _finite(v) and v > 0, "finite and > 0"),
    (("weight_decay", "kl_coef", "alpha", "std_threshold", "clip_high"),
     lambda v: _finite(v) and v >= 0, "finite and >= 0"),
    (("grad_clip",), lambda v: _finite(v) and v >= 0, "finite and >= 0 (0: no clipping)"),
    (("min_lr_frac", "tau", "data_mix"), lambda v: 0 <= v <= 1, "in [0, 1]"),
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
    if cfg.n_embd % (2 * cfg.n_head) and not cfg.init_hf:  # (--init_hf: the pretrained model's own shape)
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
    if cfg.sft_graphs and not cfg.sft_pack:
        raise UserError("--sft_graphs (the small preset's setting) needs --sft_pack: packed rows give the steps the "
                        "few shapes a graph is recorded for; with --sft_pack false add --sft_graphs false")
    if cfg.stage == "rl" and not cfg.init and not cfg.resume:
        raise UserError("--stage rl needs --init SFT_RUN_DIR (or --resume)")
    if cfg.stage == "rl" and not cfg.resume and same_setting("init", run_dir_of(cfg.init), cfg.out_dir):
        raise UserError(f"--out_dir {cfg.out_dir} is the --init run: RL writes a run directory of its own")
    if os.path.exists(cfg.out_dir) and not os.path.isdir(cfg.out_dir):
        raise UserError(f"--out_dir {cfg.out_dir} is a file, not a directory")
    if cfg.init_hf and not os.path.isfile(os.path.join(cfg.init_hf, "config.json")):
        raise UserError(f"--init_hf {cfg.init_hf}: no config.json there (expected a Hugging Face model directory)")
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
    """Every prompt + max_new_tokens + 1 (a spare position, kept by every length check: z_c's readout, at
    the EOS position's logits, needs none of its own) and every SFT row of the run's problems
    (validation, test and a training sample) must fit the model's block_size."""
    fam, lv = families_levels(cfg)
    problems = heldout_problems(cfg) + heldout_problems(cfg, "test") + tasks.train_batch(0, 256, cfg.seed, fam, lv)
    prompt = max(len(tok.encode_prompt(p.problem)) for p in problems)
    row = max(sft_row_length(tok, p) for p in problems)
    if prompt + cfg.max_new_tokens + 1 > block_size or row > block_size:
        raise UserError(f"the model's block_size {block_size} is too small: the longest prompt has {prompt} "
                        f"tokens (+ --max_new_tokens {cfg.max_new_tokens} + 1) and the longest SFT row {row}")


def get_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available")
    return torch.device(name)


# a long loop says where it is at least this often (seconds): SFT besides its --log_every lines, and a sampling
# call given a progress label (an RL step's rollouts, c_ref calibration, validation, evaluation)
PROGRESS_EVERY_S = 60

# sequence lengths on CUDA (SFT batches, the RL update's scoring) are rounded up to a multiple of this: a run
# then meets a dozen shapes, not a hundred (each new one costs a compile and attention kernel plans)
CUDA_LENGTH_MULTIPLE = 16


def round_up(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n."""
    return -(-n // multiple) * multiple


def autocast(device: torch.device, cache: bool = True):
    """bf16 autocast on a CUDA card that has bf16 (amp_dtype); plain float32 on CPU and on older cards.
    `cache`: autocast's cache of the weights' bf16 casts within the context (off inside a CUDA graph capture)."""
    dtype = amp_dtype(device)
    return nullcontext() if dtype is None else torch.autocast("cuda", dtype=dtype, cache_enabled=cache)


def amp_dtype(device: torch.device | str) -> torch.dtype | None:
    """The dtype autocast computes in on `device`: bf16 on a CUDA card with native bf16 (compute
    capability 8.0 on: A100, H100, RTX 30 series on); None, float32 without autocast, on CPU and on older
    cards (V100, T4, RTX 20 series), where eager kernels emulate bf16 (slower than float32) and
    torch.compile's kernels refuse it."""
    return torch.bfloat16 if torch.device(device).type == "cuda" and _cuda_bf16() else None


@functools.cache
def _cuda_bf16() -> bool:
    """Whether this process's CUDA card computes bf16 natively; if not, a notice, once a process."""
    if torch.cuda.is_bf16_supported(including_emulation=False):
        return True
    major, minor = torch.cuda.get_device_capability()
    if os.environ.get("RANK", "0") == "0":  # (under torchrun: said by the first process)
        print(f"note: {torch.cuda.get_device_name()} (compute capability {major}.{minor}) has no native bf16, "
              f"which needs 8.0: the run computes in float32 on it, without autocast", file=sys.stderr)
    return False


def families_levels(cfg: Config):
    return tuple(cfg.families.split(",")), tuple(int(x) for x in cfg.levels.split(","))


def heldout_problems(cfg: Config, split: str = "validation", n: int | None = None) -> list[tasks.Problem]:
    """Validation (training-time evaluation, tuning) or test (evaluate.py) problems. Drawn with split
    seed 0 whatever the training seed, so that runs of different seeds are compared on one set."""
    fam, lv = families_levels(cfg)
    return tasks.make_split(split, n or (cfg.n_val if split == "validation" else cfg.n_test), 0, fam, lv)


def sft_row_length(tok: Tokenizer, p: tasks.Problem) -> int:
    """Tokens of one SFT row: [BOS, problem, newline, solution, EOS]."""
    return len(tok.encode_prompt(p.problem)) + len(tok.encode(p.solution or "")) + 1


def corpus_for_tokenizer(cfg: Config, extra_data: list[tasks.Problem] = ()) -> list[str]:
    """Generated training problems (and the outside ones) the BPE merges are learned from."""
    fam, lv = families_levels(cfg)
    probs = [p for s in range(40) for p in tasks.train_batch(s, 64, f"bpe-{cfg.seed}", fam, lv)]
    return [p.problem + "\n" + p.solution for p in probs + list(extra_data)]


def train_problems(cfg: Config, step: int, n: int, stream, outside: list[tasks.Problem] = ()) -> list[tasks.Problem]:
    """The `n` training problems of one step of a stream (SFT: the seed; RL: "rl-SEED"; c_ref calibration):
    ceil(n * data_mix) drawn from the outside problems, the rest generated (generated first). A pure
    function of (stream, step) and the outside list, so a resumed run sees exactly the same problems."""
    fam, lv = families_levels(cfg)
    n_out = min(n, math.ceil(round(n * cfg.data_mix, 9))) if outside else 0
    generated = tasks.train_batch(step, n - n_out, stream, fam, lv) if n > n_out else []
    r = random.Random(f"jsonl-{stream}-{step}")
    return generated + [r.choice(outside) for _ in range(n_out)]


def load_outside(path: str, split: str = "train") -> list[tasks.Problem]:
    """The --data_jsonl problems whose canonical key is in `split` (the others would be twins of another
    split's problems), with the counts printed. A bad file is a UserError naming the file and line."""
    try:
        loaded = tasks.load_jsonl(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    kept, dropped = tasks.keep_split(loaded, split)
    print(f"--data_jsonl {path}: {len(loaded)} problems loaded, {len(kept)} kept for "
          f"{'training' if split == 'train' else split}, {dropped} dropped (their keys belong to another split)")
    return kept


def outside_train_data(cfg: Config) -> list[tasks.Problem]:
    """The --data_jsonl problems whose canonical key is in the train split; a problem without a solution
    is trained on its boxed answer."""
    kept = load_outside(cfg.data_jsonl, "train")
    if not kept and cfg.data_mix > 0:
        raise UserError(f"--data_jsonl {cfg.data_jsonl}: none of its problems is in the train split (each is held "
                        f"out by its key), so --data_mix {cfg.data_mix} has nothing to draw from")
    return [p if p.solution else dataclasses.replace(p, solution=f"\\boxed{{{p.answer}}}") for p in kept]


def _that_fit(problems, lengths, block_size: int, what: str, why: str, path: str, hint: str) -> list[tasks.Problem]:
    """The problems whose length fits block_size; prints the count skipped; a UserError when none does."""
    fits = [p for p, n in zip(problems, lengths) if n <= block_size]
    print(f"--data_jsonl: {len(fits)} of {len(problems)} problems used for {what}, {len(problems) - len(fits)} "
          f"skipped ({why} > the model's block_size {block_size})")
    if not fits:
        raise UserError(f"--data_jsonl {path}: none of the {len(problems)} problems kept fits {what}: {why} > the "
                        f"model's block_size {block_size} for every one ({hint})")
    return fits


def outside_data_that_fits(cfg: Config, problems: list[tasks.Problem], tok: Tokenizer,
                           block_size: int) -> list[tasks.Problem]:
    """The outside problems whose SFT row fits the model (the others are skipped, with a count)."""
    return _that_fit(problems, [sft_row_length(tok, p) for p in problems], block_size, "SFT",
                     "[BOS, problem, newline, solution, EOS]", cfg.data_jsonl, "raise --block_size, or --data_mix 0")


RL_FIT_HINT = "raise a new model's --block_size, lower --max_new_tokens, or --data_mix 0"


def prompts_that_fit(problems: list[tasks.Problem], tok: Tokenizer, block_size: int, max_new_tokens: int,
                     what: str, path: str, hint: str = RL_FIT_HINT) -> list[tasks.Problem]:
    """The problems whose prompt + max_new_tokens + 1 (check_lengths) fits the model, so that sampling
    them never runs past block_size (the others are skipped, with a count): RL prompts, evaluation."""
    return _that_fit(problems, [len(tok.encode_prompt(p.problem)) + max_new_tokens + 1 for p in problems],
                     block_size, what, f"prompt + --max_new_tokens {max_new_tokens} + 1", path, hint)


def rl_outside_data(cfg: Config, tok, block_size: int, kept=None) -> list[tasks.Problem]:
    """The --data_jsonl problems RL draws prompts from: the train split's (`kept`, if already loaded),
    those whose prompt + max_new_tokens + 1 fits the model (counts printed). Empty without the flag or
    with --data_mix 0."""
    if not cfg.data_jsonl or cfg.data_mix == 0:
        return []
    return prompts_that_fit(load_outside(cfg.data_jsonl) if kept is None else kept, tok, block_size,
                            cfg.max_new_tokens, "RL", cfg.data_jsonl)
