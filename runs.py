"""What a run leaves on disk, and reading it back: atomic writes, config.json, metrics.jsonl, checkpoints
(weights, optimizer, step = data cursor, RNG states, config, and LaSeR's c_ref and beta_v), and a run
directory loaded as (model, tokenizer, checkpoint) or resumed with its optimizer; the model and optimizer
a fresh run starts from, its training forward (compiled on CUDA) and a host-side prefetcher; and, under
torchrun, the process group.

Every write goes to a temporary file that is fsync'd and renamed into place, so a crash leaves the old
file or the new one, never half of one; under torchrun only rank 0 writes. Unreadable files end in one
line (config.UserError).
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import random
import signal
import sys
import tempfile
import traceback
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, fields
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist

from config import Config, UserError, first_line, get_device, run_dir_of
from model import GPT, GPTConfig, swiglu_hidden
from tokenizer import Tokenizer, load_tokenizer


def to_jsonable(obj):
    """Recursively convert to plain JSON types: NaN/inf -> None, numpy scalars/arrays -> Python."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call write(tmp_path) on a temp file in the target directory, fsync it, then os.replace it into
    place: a crash leaves the old file or the new one, never half of one. Used for every file we write;
    a no-op on every process but rank 0."""
    if rank() != 0:
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=suffix, dir=directory)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the permissions of an ordinary new file, not mkstemp's 0600
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the rename makes it visible
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # and so is the rename
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> None:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str, obj) -> None:
    """obj as JSON, NaN and inf as null (strict JSON), atomically."""
    write_text(path, json.dumps(to_jsonable(obj), indent=1, allow_nan=False) + "\n")


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
        if rank() != 0:
            return
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
        if rank() != 0:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(to_jsonable(obj)) + "\n")  # NaN -> null


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
        reason = first_line(e, 120)
        raise UserError(f"{path}: not a readable checkpoint ({reason})") from None
    missing = [k for k in CKPT_KEYS if not isinstance(ck, dict) or k not in ck]
    if missing:
        raise UserError(f"{path}: not a checkpoint of this project (missing {', '.join(missing)})")
    return ck


def tokenizer_digest(tok: Tokenizer) -> str:
    """A fingerprint of the tokenizer, saved in each checkpoint: another run's tokenizer.json with the same
    vocabulary size would load without an error and map every id to the wrong text."""
    return hashlib.sha256(tok.to_json().encode("utf-8")).hexdigest()


def data_digest(problems, solutions: bool = True) -> str:
    """A fingerprint of the outside problems a stage trains on (text, answer and, where the stage reads
    them, solutions; in order), saved in each checkpoint: a resumed run must draw from the same problems
    to continue the same run."""
    rows = [[p.problem, p.answer] + ([p.solution] if solutions else []) for p in problems]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()


def check_same_data(ck: dict, problems, path: str, solutions: bool = True) -> None:
    """--resume: refuse outside problems other than those the run trained on until now (a checkpoint
    from before this check has no digest and passes)."""
    if ck.get("data_sha256") not in (None, data_digest(problems, solutions)):
        raise UserError(f"--data_jsonl {path}: not the problems this run was trained on until now (the file, or "
                        f"how it is read, changed): --resume would go on with other data; restore the file, or "
                        f"start afresh")


def load_run(run_dir: str, device="cpu") -> tuple[GPT, Tokenizer, dict]:
    """Model (eval mode), tokenizer and checkpoint dict of a run directory: used by RL and evaluate.py."""
    ck = load_checkpoint(run_dir)
    tok_path = os.path.join(run_dir_of(run_dir), "tokenizer.json")
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
                        f"({first_line(e)})") from None
    if model.cfg.vocab_size != tok.vocab_size:
        raise UserError(f"{run_dir}: checkpoint vocab {model.cfg.vocab_size} != tokenizer vocab {tok.vocab_size}")
    if ck.get("tokenizer_sha256") not in (None, tokenizer_digest(tok)):  # (older checkpoints have none)
        raise UserError(f"{tok_path}: not the tokenizer this checkpoint was trained with (another run's?)")
    return model.to(device).eval(), tok, ck


def new_model(cfg: Config, tok: Tokenizer, device) -> GPT:
    """A fresh model of cfg's size: our architecture, or (--arch llama) the Llama layer (SwiGLU with a
    hidden width of about 8/3 n_embd, so about the same parameters; RMSNorm gains), which export.py hands
    to transformers."""
    torch.manual_seed(cfg.seed)
    llama = dict(mlp="swiglu", mlp_hidden=swiglu_hidden(cfg.n_embd), norm_weight=True) if cfg.arch == "llama" else {}
    mc = GPTConfig(vocab_size=tok.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                   n_head=cfg.n_head, n_embd=cfg.n_embd, **llama)
    return GPT(mc).to(device)


def make_optimizer(model: GPT, lr: float, weight_decay: float, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW; weight decay on the matrices except the embedding. Fused (one kernel for every parameter) on
    CUDA (fused=None); on CPU torch's default implementation, whose numbers the CPU results were made with."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "wte" not in n)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    fused = model.lm_head.weight.is_cuda if fused is None else fused
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if fused else {}))


class _CompiledForward:
    """model's training forward through torch.compile: each transformer block compiled, or with `whole`
    the model as one graph. The blocks share their code and shapes, so they share one compiled graph
    (torch >= 2.5 inlines modules: no recompile per block), and a cold compile took 60% of the whole
    model's time on CPU (bench.py's train.compile_s.*). The whole model fuses across blocks.
    The first call also compiles the backward (a gradient taken aside, so nothing accumulates): if either
    fails, e.g. where no compiler toolchain is installed, training goes on eagerly with a one-line notice.
    Later errors (a recompile for a new shape, out of memory) surface as they are. `mode`: torch.compile's
    (e.g. "reduce-overhead": CUDA graphs)."""

    def __init__(self, model: GPT, mode: str | None = None, whole: bool = False):
        self.model, self.checked = model, False
        if whole:
            self.compiled = torch.compile(model, mode=mode)
        else:  # new modules around the blocks: the sampler's calls of model.blocks stay eager
            blocks = [torch.compile(b, mode=mode) for b in model.blocks]
            self.compiled = lambda idx, **kw: model(idx, blocks=blocks, **kw)

    def __call__(self, idx: torch.Tensor, **kw) -> torch.Tensor:  # kw: GPT.forward's (segments)
        if self.compiled is None:
            return self.model(idx, **kw)
        if not self.checked:
            self.checked = True
            try:
                params = [p for p in self.model.parameters() if p.requires_grad]
                torch.autograd.grad(self.compiled(idx, **kw).float().mean(), params, allow_unused=True)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as e:  # noqa: BLE001 (any compiler failure; eager gives the same numbers)
                print(f"note: torch.compile failed ({type(e).__name__}: {first_line(e)}); "
                      f"training runs eagerly", file=sys.stderr)
                self.compiled = None
                return self.model(idx, **kw)
        return self.compiled(idx, **kw)


def training_forward(model: GPT, mode: str):
    """The forward SFT and the RL update call (full sequences, no cache): with `mode` "on" (or "auto" on
    CUDA) its blocks compiled, with "model" the whole model (see _CompiledForward); the model itself
    otherwise. Shapes vary with each micro-batch's longest row; torch.compile marks a dimension dynamic
    after its first change, so it compiles twice per run, not once per shape (on an H100 the whole
    model's two compiles took 50 s of the small preset's SFT; `dynamic=True` from the start was slower
    still: no first step within 50 s)."""
    if mode == "model":
        return _CompiledForward(model, whole=True)
    if mode == "on" or mode == "auto" and model.lm_head.weight.is_cuda:
        return _CompiledForward(model)
    return model


def prefetch(make: Callable, items, ahead: int = 2, process: bool = False, workers: int = 1):
    """make(item) for each item, in order, each computed up to `ahead` items early: host work (tokenizing
    and padding the next SFT batches) off the training step's critical path. `make` must be a pure
    function of its item, so the results are those of a plain loop. By default in a thread; with
    `process`, in `workers` forked worker processes (each item in one of them, at least two items ahead per
    worker), whose Python does not hold the GIL the training step's kernel launches need (on an H100 the
    thread cost a step-bound loop 37%: bench.py's gpu.sft_prefetch_thread_ratio). `make` reaches the
    workers by the fork, not by pickling, so a closure will do; it must not touch CUDA there, and its
    results come back pickled (tensors in shared memory)."""
    if process:
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_worker_init,
                                   initargs=(make, os.getpid()))
        call = functools.partial(pool.submit, _worker_call)
        ahead = max(ahead, 2 * workers)
    else:
        pool = ThreadPoolExecutor(1)
        call = functools.partial(pool.submit, make)
    try:
        items = iter(items)
        queue = deque(call(item) for item in itertools.islice(items, ahead))
        while queue:
            result = queue.popleft().result()
            for item in itertools.islice(items, 1):
                queue.append(call(item))
            yield result
    finally:  # also when the loop stops early: what is still queued is dropped
        pool.shutdown(wait=True, cancel_futures=True)


def batch_workers() -> int:
    """Worker processes that build a CUDA training process's SFT batches (prefetch): one per 4 of the cores
    this node's training processes share, at most 4. On an H100 the small preset's SFT step replayed from
    CUDA graphs took 7.8 ms in the benchmark (1.13M real tokens/s), yet a training run of graphed steps of
    twice its problems, its batches built by one worker, ran at 0.57M-0.90M between its log lines
    (results/small/h100_5a74bdc); with this rule (4 workers on that machine's 16 cores) the preset's own
    loop ran at the step's rate, 1.126M (results/small/h100_6f2a32a)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(4, cores // (4 * int(os.environ.get("LOCAL_WORLD_SIZE", "1")))))


_worker_make: Callable | None = None  # prefetch's `make` in its worker process


def _worker_init(make: Callable, parent: int) -> None:
    global _worker_make
    _worker_make = make
    torch.set_num_threads(1)  # host work for one batch; the training process keeps the cores
    helper_process_init(parent)


def helper_process_init(parent: int) -> None:
    """The start of a training process's helper (the prefetch worker, the verifier processes). Ctrl-C and
    `timeout` reach the whole process group: the training process handles them (it finishes its step, for
    which it may need the helper, and saves a checkpoint) and ends its helpers, which ignore them; if the
    training process is killed outright (SIGKILL, out of memory), the helper goes too."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (AttributeError, OSError):  # not Linux: a helper left behind still ends when its queue is closed
        pass
    if os.getppid() != parent:  # the training process was killed before the prctl
        os._exit(0)


def _worker_call(item):
    return _worker_make(item)


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


def clip_and_step(model, opt, grad_clip: float, losses) -> tuple[float, int]:
    """Clip the gradient norm (0: no clipping) and step, unless a loss or the norm is non-finite: then the
    step is skipped and the weights stay finite. Returns (grad norm, 1 if skipped else 0)."""
    gnorm, skipped = clip_and_step_deferred(model, opt, grad_clip, losses)
    return float(gnorm), int(skipped)


def skips_on_device(opt) -> bool:
    """Whether `opt` (fused AdamW, on CUDA) decides on the device to skip a non-finite step, so that no step
    needs to read anything back (clip_and_step_deferred)."""
    return all(g.get("fused") for g in opt.param_groups)


def clip_and_step_deferred(model, opt, grad_clip: float, losses) -> tuple[torch.Tensor, torch.Tensor]:
    """clip_and_step with (grad norm, skipped) as 0-dim tensors, to be read later. With a fused optimizer
    (CUDA) nothing waits for the device: the optimizer skips a non-finite step itself, through the found_inf
    input torch's GradScaler uses (its step count is left as it was too), so the host can queue the next
    step's kernels while this one runs. Other optimizers decide on the host."""
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    losses = [torch.as_tensor(v, dtype=torch.float64, device=gnorm.device) for v in losses]
    skipped = (~torch.isfinite(torch.stack([gnorm.double(), *losses])).all()).float()  # 1.0: skip this step
    if skips_on_device(opt):
        opt.found_inf = skipped
        try:
            opt.step()
        finally:
            del opt.found_inf  # a later plain step must not see it
    elif skipped:
        opt.zero_grad(set_to_none=True)
    else:
        opt.step()
    return gnorm, skipped


def checkpoint(path, model, opt, step, cfg, tok: Tokenizer, extra: dict) -> None:
    """Weights, optimizer, step (= data cursor), RNG states, configs, the tokenizer's digest and `extra`;
    fsync'd, then renamed into place. Non-finite weights are never written over a good checkpoint."""
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UserError(f"the weights are not finite after step {step}: not overwriting {path}; "
                        f"lower the learning rate")
    ck = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "data_cursor": step,
          "rng": rng_state(), "config": asdict(cfg), "model_config": asdict(model.cfg), "world_size": world_size(),
          "tokenizer_sha256": tokenizer_digest(tok), **extra}
    atomic_write(path, lambda tmp: torch.save(ck, tmp))


def config_from(saved: dict, where: str) -> Config:
    """A Config from a saved dict (config.json, or a checkpoint's), its types checked (the caller checks
    the values); null is NaN, and fields this version does not know are ignored."""
    types = {f.name: type(f.default) for f in fields(Config)}
    for k, v in saved.items():
        want = types.get(k)
        if want is not None and not (isinstance(v, want) or want is float and isinstance(v, int)
                                     or want is float and v is None):
            raise UserError(f"{where}: {k} should be {want.__name__}, got {v!r}")
    return Config(**{k: (float("nan") if v is None else v) for k, v in saved.items() if k in types})


def saved_config(out_dir: str) -> Config:
    """The config.json of a run directory."""
    path = os.path.join(out_dir, "config.json")
    return config_from(read_json(path, "run config"), path)


def make_run_dir(path: str) -> None:
    """Create the directory `path` (a run's, or a report's) if it is not there; a UserError if it cannot be."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create directory {path}: {e.strerror}") from None


def run_config(ck: dict) -> Config:
    """The training Config saved in a checkpoint."""
    return config_from(ck["config"], "checkpoint config")


def resume_run(cfg: Config, stage: str, lr: float, device) -> tuple[GPT, Tokenizer, torch.optim.Optimizer, dict]:
    """Model, tokenizer, optimizer and checkpoint of the run in cfg.out_dir, restored to where it stopped
    (weights, optimizer state, RNG states)."""
    model, tok, ck = load_run(cfg.out_dir, device)
    if ck["stage"] != stage:
        raise UserError(f"{cfg.out_dir} holds a {ck['stage']} checkpoint, not {stage}")
    if ck.get("world_size", 1) != world_size():
        raise UserError(f"{cfg.out_dir} was trained by {ck.get('world_size', 1)} processes and this run has "
                        f"{world_size()}: resume with the same --nproc_per_node (the data shards depend on it)")
    opt = make_optimizer(model, lr, cfg.weight_decay)
    # this device's AdamW kernel, not the saving one's, and this run's --weight_decay (the saved groups would
    # bring back the old one, while config.json recorded the new)
    kernels = [{k: g.get(k) for k in ("fused", "foreach", "weight_decay")} for g in opt.param_groups]
    opt.load_state_dict(ck["optimizer"])
    for g, kernel in zip(opt.param_groups, kernels):
        g.update(kernel)
        if kernel.get("fused"):  # the fused kernel wants its step counts on the parameters' device (a CPU
            for p in g["params"]:  # checkpoint's were loaded onto the CPU)
                if "step" in opt.state.get(p, {}):
                    opt.state[p]["step"] = opt.state[p]["step"].to(p.device, torch.float32)
    set_rng_state(ck["rng"])
    return model, tok, opt, ck


# ---------------------------------------------------------------------------- processes (torchrun)

def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several (its WORLD_SIZE)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: str = "auto") -> None:
    """Join the process group when started by torchrun: NCCL with one CUDA device per process when the run's
    `device` (--device) is CUDA, gloo on CPU; nothing otherwise. A process whose local rank has no CUDA
    device is refused in one line (exit code 2; torchrun then stops the others, which wait for it)."""
    if launched_by_torchrun() and not dist.is_initialized():
        cuda = get_device(device).type == "cuda"
        if cuda:
            local, n = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local >= n:
                raise UserError(f"torchrun started process {local} of this node, which has {n} CUDA "
                                f"device{'s' * (n != 1)} (as CUDA_VISIBLE_DEVICES shows them): one process per "
                                f"device (--nproc_per_node {n}), or --device cpu")
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if cuda else "gloo")


def close_distributed(wait: bool = True) -> None:
    """Leave the process group; with `wait`, only once every process got here. A gloo process that tears the
    group down while another is still busy (rank 0 writing the last checkpoint) can die in C++ with SIGABRT."""
    if dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def run_then_exit(main: Callable) -> None:
    """main() in a process that torchrun started, then os._exit with its exit code. This skips the
    interpreter's own teardown, in which gloo's threads could abort a run that had finished
    ("terminate called without an active exception", SIGABRT with no Python frame: 2 of 100 two-process
    CPU runs). By then every file a run writes is closed (each write opens and closes its file), so
    only stdout and stderr need a flush (C's stdio too, for a library's output). Exit codes as Python's
    own exit gives them (an int modulo 256, None 0, another object printed and 1), an unhandled
    exception's traceback and 1, Ctrl-C's 130; a flush that fails, 120."""
    try:
        main()
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 (reported as Python reports it)
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # (a closed pipe or stream)
            code = code or 120
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    os._exit(code & 0xFF)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


# signum: the signal that asked the training loop to stop (0: none); armed: whether a signal may (stop_gracefully)
_STOP = {"signum": 0, "armed": False}


def stop_gracefully(signum, frame) -> None:
    """train.py's handler of Ctrl-C (SIGINT) and SIGTERM (`timeout`, a job scheduler): once a training loop
    has finished a step (`arm_stop`), the first one lets the step in progress finish, then the loop saves a
    checkpoint and exits with 128 + the signal (`stop_requested`). Otherwise it stops at once: before the
    first step (nothing to save), at a second signal, and under torchrun (its processes would not agree on
    which step to stop after)."""
    if _STOP["signum"] or not _STOP["armed"] or launched_by_torchrun():
        raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)
    _STOP["signum"] = signum
    print(f"\n{signal.Signals(signum).name}: stopping after the step in progress, with a checkpoint; send it "
          f"again to stop at once", file=sys.stderr, flush=True)


def arm_stop(on: bool) -> None:
    """Whether a signal now asks the training loop to stop after its step (on: it has finished one since it
    started) or stops at once (stop_gracefully)."""
    _STOP["armed"] = on


def stop_requested(clear: bool = False) -> int:
    """The signal that asked for a stop (see stop_gracefully), or 0; `clear`: forget it (a new command)."""
    signum = _STOP["signum"]
    if clear:
        _STOP["signum"] = 0
    return signum


class Stopped(SystemExit):
    """The training loop stopped on a signal after step `done`, its checkpoint written (train.main says how
    to resume); exit code 128 + the signal."""

    def __init__(self, done: int, stage: str):
        signum, _STOP["signum"] = _STOP["signum"], 0
        super().__init__(128 + signum)
        self.done, self.stage, self.signal = done, stage, signal.Signals(signum).name


def shard(items: list) -> list:
    """This process's contiguous share of `items` (all of them in a single process)."""
    r, w = rank(), world_size()
    return items[r * len(items) // w:(r + 1) * len(items) // w]


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_sum(x):
    """x summed over the processes (in float64, so counts stay exact); x itself in a single process.
    A tensor comes back as a tensor, with no host sync."""
    if world_size() == 1:
        return x
    if isinstance(x, torch.Tensor):
        t = x.detach().to(torch.float64, copy=True)
        dist.all_reduce(t)
        return t
    t = torch.tensor(float(x), dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return t.item()


def gather(obj) -> list:
    """Every process's obj, in rank order ([obj] in a single process)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's obj, on every process."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_grads(model) -> None:
    """Sum the gradients over the processes, in one flat all-reduce. Each process's loss is normalised by
    the whole step's counts, so the sum is the gradient of the union batch (not an average)."""
    if world_size() == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    for g, new in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(new.view_as(g))
