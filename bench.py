"""Benchmark harness.

    python bench.py                 # every CPU section, full repeats
    python bench.py --quick         # every CPU section, few repeats (whole run well under a minute)
    python bench.py --only verify   # one section (repeatable: --only verify --only train)
    python bench.py --out path.json # default: bench.json in the current directory
    python bench.py --device cuda   # the gpu section: the small preset on one CUDA card (see its docstring)
    python bench.py --only gpu_sft  # (CUDA) the small preset's SFT step: packed or padded, compiled, graphed
    python bench.py --only gpu_attention  # (CUDA) a 512-row decode step's attention, each way there is

A section is a function `bench_<name>(quick: bool) -> dict[str, dict]` mapping metric keys
("<name>.<metric>"; gpu_sft writes the gpu section's gpu.sft_* keys, variants named by a suffix) to
`metric(samples, unit, target)` records:
    {"median": float, "spread": [min, max], "unit": str, "target": str | None, "n": int}
Register a section by appending it to SECTIONS at the bottom of this file. Sections import their
heavy dependencies (torch, the model, ...) lazily inside the function, so running one section never
requires another's dependencies. The run prints one aligned table and writes a JSON file with the
machine description and every metric.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import functools
import itertools
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from importlib import metadata


# ====================================================================================== helpers

def metric(samples, unit: str, target: str | None = None, note: str | None = None) -> dict:
    """Summarise repeated measurements: median with [min, max] spread; `note` says what was measured."""
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("metric() needs at least one sample")
    return {"median": statistics.median(xs), "spread": [min(xs), max(xs)], "unit": unit,
            "target": target, "n": len(xs), **({"note": note} if note else {})}


class _Printed(dict):
    """A dict of metrics that prints each one as it is set (one JSON line, "[metric] {...}"): a run that is
    cut short or fails half-way still shows what it measured (scripts/gpu_check.sh reads these lines)."""

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        print("[metric]", json.dumps({key: value}), flush=True)


def _why(e: BaseException, width: int = 200) -> str:
    """An exception in one line for a "failed" notice: its type and its message's first line (an exception
    with no message has no first line)."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:width] if lines else ''}"


def percentile(xs, q: float) -> float:
    """q in [0, 100]; nearest-rank on the sorted data (no interpolation)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info(device: str = "cpu") -> dict:
    cuda = {}
    if device == "cuda":
        import torch
        cuda = {"device": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "torch_build": torch.__version__}
    return {**cuda,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": _version("torch"),       # read from metadata: no torch import needed here
        "numpy": _version("numpy"),
        "sympy": _version("sympy"),
    }


# ====================================================================================== verify section

def _verify_workload(n_problems: int = 25, samples: int = 8, seed: int = 0):
    """Realistic model-like completions: worked steps ending in \\boxed{...}, for several answer
    families, right and wrong. Returns [(completion, gold, expected_right: bool | None)]."""
    rng = random.Random(seed)
    out = []

    def steps_text(nums):
        lines = ["Let's work through this step by step."]
        for _ in range(rng.randint(2, 6)):
            a, b = rng.choice(nums), rng.randint(2, 99)
            lines.append(f"We have ${a} + {b} = {a + b}$ and ${a} \\cdot {b} = {a * b}$, so we continue.")
        return "\n".join(lines)

    families = ["int", "frac", "poly", "tuple", "set", "sqrt", "linear", "decimal"]
    for p in range(n_problems):
        fam = families[p % len(families)]
        if fam == "int":
            n = rng.randint(-5000, 50000)
            gold = str(n)
            right = [str(n), f"{n:,}", f"x = {n}", f"{n}.0"]
            wrong = [str(n + 1), str(-n - 1), str(n * 10 + 1)]
        elif fam == "frac":
            a, b = rng.randint(1, 40), rng.randint(2, 40)
            while a % b == 0:
                a += 1
            from math import gcd
            g = gcd(a, b)
            a, b = a // g, b // g
            gold = f"\\frac{{{a}}}{{{b}}}"
            right = [f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\dfrac{{{2 * a}}}{{{2 * b}}}", f"\\frac{{{3 * a}}}{{{3 * b}}}"]
            wrong = [f"\\frac{{{b}}}{{{a}}}", f"\\frac{{{a + 1}}}{{{b}}}", f"{a}/{b + 1}"]
        elif fam == "poly":
            r1, r2 = rng.randint(-9, 9), rng.randint(-9, 9)
            c1, c0 = -(r1 + r2), r1 * r2
            gold = f"x^2 {'+' if c1 >= 0 else '-'} {abs(c1)}x {'+' if c0 >= 0 else '-'} {abs(c0)}"
            right = [gold, f"{c0} + {c1}x + x^2", f"x^{{2}}+{c1}*x+{c0}"]
            # (the product itself is the question, and the reward refuses it: verify._not_as_asked)
            factor = lambda r: f"(x {'-' if r >= 0 else '+'} {abs(r)})"
            wrong = [f"x^2 + {c1 + 1}x + {c0}", f"{factor(r1)}(x + {-r2 + 1})", f"x^2 + {c1}x + {c0 + 1}",
                     factor(r1) + factor(r2)]
        elif fam == "tuple":
            a, b = rng.randint(-9, 9), rng.randint(-9, 9)
            if a == b:
                b += 1
            gold = f"({a}, {b})"
            right = [f"({a},{b})", f"\\left( {a}, {b} \\right)", f"x = {a}, y = {b}"]
            wrong = [f"({b}, {a})", f"({a}, {b + 1})", f"{a}"]
        elif fam == "set":
            a, b = rng.sample(range(-12, 13), 2)
            gold = f"\\{{{a}, {b}\\}}"
            right = [f"x = {a}, x = {b}", f"{b}, {a}", f"\\{{{b},{a}\\}}", f"x = {b} \\text{{ or }} x = {a}"]
            wrong = [f"{a}", f"\\{{{a}, {b + 1}\\}}", f"({a}, {b}, 0)"]
        elif fam == "sqrt":
            k, m = rng.randint(2, 9), rng.choice([2, 3, 5, 6, 7])
            gold = f"{k}\\sqrt{{{m}}}"
            right = [f"\\sqrt{{{k * k * m}}}", f"{k} \\sqrt {m}", f"\\sqrt{{{m}}} \\cdot {k}"]
            wrong = [f"{k + 1}\\sqrt{{{m}}}", f"\\sqrt{{{k * m}}}", f"{k * m}"]
        elif fam == "linear":
            x = rng.randint(-12, 12)
            gold = str(x)
            right = [f"x = {x}", f"{x}", f"x={x}."]
            wrong = [f"x = {-x - 1}", f"{x + 2}", "x"]
        else:
            q = rng.randint(1, 999) / 8
            gold = repr(q)
            right = [repr(q), f"\\frac{{{int(q * 8)}}}{{8}}", f"{q}0"]
            wrong = [repr(q + 0.5), f"{q * 10}", f"-{q}"]
        for s in range(samples):
            is_right = s % 2 == 0
            ans = rng.choice(right if is_right else wrong)
            body = steps_text([rng.randint(1, 999) for _ in range(4)])
            if s == samples - 1 and p % 5 == 0:
                out.append((body + "\nSo the answer should be", gold, None))   # truncated: no answer
            else:
                ending = rng.choice(["Therefore the answer is $\\boxed{%s}$.", "\\[\\boxed{%s}\\]",
                                     "Final answer: $\\boxed{%s}$"])
                out.append((body + "\n" + ending % ans, gold, is_right))
    return out


def _hostile_workload():
    """Inputs built to exhaust a naive checker (huge powers, deep nesting, long strings, code)."""
    deep_paren = "(" * 10_000 + "1" + ")" * 10_000
    deep_frac = "\\frac{" * 2000 + "1" + "}{2}" * 2000
    pairs = [
        ("9^9^9^9", "1"), ("10^{10^{10}}", "10"), ("2^{2^{100}}", "2"), (deep_paren, "1"),
        (deep_frac, "1"), ("(" * 39 + "x" + ")" * 39, "x + 1"), ("x" * 1_000_000, "x"),
        ("1" * 1_000_000, "1"), ("(x+1)^{1000}", "x^{1000} + 1"), ("(x+y+z)^{50}", "(x+y+z)^{49}"),
        ("__import__('os').system('echo pwned')", "0"), ("().__class__.__bases__[0]", "0"),
        ("{0.__class__}", "0"), ("lambda: 1", "1"), ("e^{e^{e^{e^{e^{x}}}}}", "x"),
        ("\\sin(10^{5000})", "0"), ("500!", "1"), ("\\binom{10000}{5000}", "1"),
        ("x^{2000} - 1", "(x - 1)(x + 1)"), ("\\sqrt{" * 60 + "2" + "}" * 60, "2"),
        ("\\{" + ",".join(f"x^{{{i}}}" for i in range(32)) + "\\}", "\\{" + ",".join(f"x^{{{i + 1}}}" for i in range(32)) + "\\}"),
        ("\\begin{pmatrix}" + "\\\\".join(["&".join(["x^{9}"] * 20)] * 20) + "\\end{pmatrix}", "1"),
        ("1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31", "1"),
        ("x^{x^{x^{x}}}", "x^{x^{x}}"), ("10^{400} x^{50} + 10^{399}", "10^{400}x^{50}"),
        # values on which sympy's own numerics never return (found by fuzzing verify.py)
        ("\\sin(\\sin(a+(100!)(i+3)))", "y"), ("|\\sqrt{(\\pi)(\\sqrt{i}+2)}|", "\\ln(|x|-2)"),
        ("\\sqrt{\\log_{\\ln(3+\\sqrt{i})}(\\sqrt{i})}", "1"), ("\\sin(10^{300} x)", "\\cos(10^{300} x)"),
        ("(3^{9000}*5^{6000}+1)^{1/2}", "1"),  # a root of a long integer (sympy factors it: minutes)
        ("\\{" + ",".join(f"\\tan(\\arctan(x y + {k}))" for k in range(32)) + "\\}",
         "\\{" + ",".join(f"xy+{k}" for k in reversed(range(32))) + "\\}"),
    ]
    out = [(f"Step... \\boxed{{{p}}}", g) for p, g in pairs]
    out.append(("\\boxed{" * 200_000, "1"))                                    # unterminated boxes
    out.append(("\\boxed{1}" * 100_000, "1"))                                  # 900k chars of boxes
    out.append(("The answer is " * 50_000 + "5", "5"))
    return out


def bench_verify(quick: bool) -> dict[str, dict]:
    import verify

    work = _verify_workload()
    hostile = _hostile_workload()
    repeats = 3 if quick else 7
    rates, p50s, p99s, maxes, agree = [], [], [], [], []
    h_p99, h_max = [], []
    for _ in range(repeats):
        verify._parse_cached.cache_clear()
        lat = []
        ok = 0
        t_all = time.perf_counter()
        for completion, gold, expected in work:
            t0 = time.perf_counter()
            r, reason = verify.reward_with_reason(completion, gold)
            lat.append(time.perf_counter() - t0)
            ok += (reason == verify.NO_ANSWER) if expected is None else ((r == 1.0) == expected)
        rates.append(len(work) / (time.perf_counter() - t_all))
        p50s.append(percentile(lat, 50))
        p99s.append(percentile(lat, 99))
        maxes.append(max(lat))
        agree.append(ok / len(work))
        verify._parse_cached.cache_clear()
        hl = []
        for completion, gold in hostile:
            t0 = time.perf_counter()
            verify.reward_with_reason(completion, gold)
            hl.append(time.perf_counter() - t0)
        h_p99.append(percentile(hl, 99))
        h_max.append(max(hl))
    return {
        "verify.checks_per_s": metric(rates, "checks/s"),
        "verify.p50_latency_s": metric(p50s, "s"),
        "verify.p99_latency_s": metric(p99s, "s"),
        "verify.max_latency_s": metric(maxes, "s", "<= 1.0"),
        "verify.label_agreement": metric(agree, "fraction", "== 1.0"),
        "verify.hostile_p99_latency_s": metric(h_p99, "s", "<= 1.0"),
        "verify.hostile_max_latency_s": metric(h_max, "s", "<= 1.0"),
    }


# ====================================================================================== registry

# Sections run in this order. rollout, train and memory sections are added here by their
# modules' owners: define `bench_<name>(quick) -> dict[str, dict]` above and append it.
# ----------------------------------------------------------------------------------------------------
# rollout, train and memory sections


def _bench_model(shape: str, seed: int = 0):
    """A randomly initialised model of a preset's shape and a tokenizer for it. Random weights almost
    never sample EOS, so every row runs to max_new_tokens: the worst case for the sampler."""
    import torch

    import config
    import tasks
    from model import GPT, GPTConfig
    from tokenizer import build_tokenizer

    p = {**config.Config().__dict__, **config.PRESETS[shape]}
    tok = build_tokenizer([q.problem + "\n" + q.solution for s in range(10) for q in tasks.train_batch(s, 64, 0)],
                          p["bpe_merges"])
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=max(p["block_size"], 320), n_layer=p["n_layer"],
                    n_head=p["n_head"], n_embd=p["n_embd"])
    return GPT(cfg).eval(), tok


def _prompts(tok, n):
    import tasks

    return [tok.encode_prompt(q.problem) for q in tasks.make_split("test", n, 0)]


def _timed(fn, repeats: int, sync=lambda: None) -> list[float]:
    """Seconds per call of fn; `sync` (e.g. torch.cuda.synchronize) runs before and after each call, so
    that a device's time is measured and not only the launch's."""
    import time

    out = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return out


def _device_busy(fn, dev, label: str, top: int = 8, host_ops: bool | None = None,
                 kernels: dict | None = None) -> float:
    """Run fn() once under torch.profiler and return the share of its wall time in which the device ran
    a kernel (well below 1: the device waits for the host, whose launches set the pace); print the `top`
    kernels by device time (on CUDA memory copies and sets count as kernels). On CUDA only device
    activity is traced for this (tracing the host's ops would slow the host down and read as idle
    device; the tracer's own cost per launch still does a little: the wall time printed is the traced
    call's), then a second call traces the host's ops and prints the `top` by self time (`host_ops`:
    whether to, default on CUDA); on CPU (the rehearsal) the top-level CPU ops stand in for kernels.
    `kernels`: a dict to fill with each kernel's (op's) total device time in µs, by name.
    A diagnostic: if the profiler fails or traces no kernel, a one-line note and NaN."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = dev.type == "cuda"
    host_ops = cuda if host_ops is None else host_ops
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    try:
        sync()
        with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            fn()
            sync()
            wall_us = (time.perf_counter() - t) * 1e6
        spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                       if (e.device_type == DeviceType.CUDA if cuda else e.cpu_parent is None))
        if not spans:
            raise RuntimeError("no kernel traced (is another tool holding CUPTI?)")
        busy, end = 0.0, float("-inf")  # the union of the kernels' intervals
        for a, b, _ in spans:
            busy += max(0.0, b - max(a, end))
            end = max(end, b)
        per_name: dict[str, list[float]] = {}
        for a, b, name in spans:
            per_name.setdefault(name, []).append(b - a)
        total = sum(map(sum, per_name.values()))
        if kernels is not None:
            kernels.update({name: sum(ds) for name, ds in per_name.items()})
        print(f"[profile] {label}: wall {wall_us / 1e3:.1f} ms, device busy {busy / 1e3:.1f} ms "
              f"({busy / wall_us:.0%}), {len(spans)} kernels; top by device time:", flush=True)
        for name, ds in sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:top]:
            print(f"[profile]   {sum(ds) / total:6.1%} {sum(ds) / 1e3:8.2f} ms  x{len(ds):<6} {name[:100]}", flush=True)
        if host_ops:  # where the host's time goes: a second call, its ops traced
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
                sync()
            ops = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
            host = sum(e.self_cpu_time_total for e in ops) or 1.0
            print(f"[profile] {label}, traced on the host: {host / 1e3:.1f} ms of self time, summed over its "
                  f"threads; top ops:", flush=True)
            for e in ops[:top]:
                print(f"[profile]   {e.self_cpu_time_total / host:6.1%} {e.self_cpu_time_total / 1e3:8.2f} ms  "
                      f"x{e.count:<6} {e.key[:100]}", flush=True)
    except Exception as e:  # noqa: BLE001 (a diagnostic: say why it failed, keep the measurements)
        print(f"note: the profile of {label} failed: {_why(e, 160)}", flush=True)
        return float("nan")
    return busy / wall_us


def _run_dtype(dev):
    """The dtype bench measures a run's matrix products in on `dev`: bf16 (autocast's on a card that has it,
    and in the CPU rehearsal), float32 on a CUDA card without native bf16, as the run there (config.amp_dtype)."""
    import torch

    import config
    return torch.float32 if dev.type == "cuda" and config.amp_dtype(dev) is None else torch.bfloat16


def decode_step_ops(model, rows: int = 64) -> int:
    """The device operations (aten kernels, views and other metadata-only ops excepted) one eager
    `decode_step` of `model` runs, under bf16 autocast on the bf16 copy the sampler decodes with (float32 on a
    CUDA card without bf16, as the run there: _run_dtype): what a
    CUDA graph replays for every token when the blocks are not compiled (rollout.COMPILE_DECODE off),
    whose count sets a small model's decode time more than its FLOPs do. Counted by a dispatch mode, so
    on any device (on CPU, attention and RMSNorm are several ops each where CUDA has one fused kernel)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from rollout import autocast_copy

    free = {"view", "_unsafe_view", "t", "transpose", "slice", "expand", "split", "split_with_sizes", "unsqueeze",
            "select", "alias", "detach", "permute", "squeeze", "as_strided", "unbind", "_reshape_alias", "lift_fresh"}

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += func._schema.name.split("::")[1] not in free
            return func(*args, **(kwargs or {}))

    dev = model.lm_head.weight.device
    bf16 = _run_dtype(dev) == torch.bfloat16
    net = autocast_copy(model, torch.bfloat16)[0] if bf16 else model
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False, enabled=bf16):
        cache = net.new_cache(rows, 128)
        net(torch.ones(rows, 32, dtype=torch.long, device=dev), cache=cache)
        tok, slot = torch.ones(rows, dtype=torch.long, device=dev), torch.tensor([32], device=dev)
        with Count():
            net.decode_step(tok, cache, slot, 64)
    return Count.n


def _eos_offset(model, tok, offset: float = 2.0):
    """Make a random model end its responses like a trained one: +offset on the EOS logit gives
    p(EOS) ~ 1/64 per step at init (V ~ 480), so lengths are spread out as in real rollouts."""
    def hook(_m, _inp, out):
        out[..., tok.eos_id] += offset
        return out
    return model.lm_head.register_forward_hook(hook)


def bench_rollout(quick: bool) -> dict:
    """KV-cache sampler vs naive recompute, cost of the in-pass self-reward, scaling with rows/length."""
    import torch

    from rollout import sample, sample_naive, score_rollouts

    out = {}
    P, K, T = (8, 8, 32) if quick else (32, 8, 128)
    reps = 1 if quick else 3
    for shape in ("tiny",) if quick else ("tiny", "small"):  # --quick: the tiny shape only
        model, tok = _bench_model(shape)
        prompts = _prompts(tok, P)
        g = lambda: torch.Generator().manual_seed(0)
        kv = _timed(lambda: sample(model, prompts, K, T, generator=g(), tokenizer=tok), reps)
        # the naive sampler recomputes the whole sequence each step: one repeat, and on the small
        # shape a shorter generation (its cost grows with the square of the length)
        Tn = T if shape == "tiny" or quick else 32
        naive = _timed(lambda: sample_naive(model, prompts, K, Tn, generator=g(), tokenizer=tok), 1)
        kv_n = kv if Tn == T else _timed(lambda: sample(model, prompts, K, Tn, generator=g(), tokenizer=tok), reps)
        ratio = [naive[0] / t for t in kv_n]
        key = "rollout.kv_vs_naive_speedup" + ("" if shape == "tiny" else f".{shape}")
        out[key] = metric(ratio, "x", ">= 10", note=f"{shape} shape, {P}x{K} rows, {Tn} new tokens")
        out[f"rollout.{shape}.kv_tokens_per_s"] = metric([P * K * T / t for t in kv], "tok/s",
                                                         note=f"{P}x{K} rows x {T} tokens, random weights")
        hook = _eos_offset(model, tok)
        with_score, without, separate = [], [], []
        for i in range(reps + 2):  # interleaved so that machine noise hits all three alike, and in turns which
            took = {}  # of the two comes first (always scoring first, all 5 of a run's ratios came out below 1)
            for score in (True, False) if i % 2 == 0 else (False, True):
                took[score] = _timed(lambda: sample(model, prompts, K, T, generator=g(), tokenizer=tok,
                                                    score=score), 1)[0]
            t, u = took[True], took[False]
            ro = sample(model, prompts, K, T, generator=g(), tokenizer=tok, score=False)
            with torch.no_grad():
                s = _timed(lambda: score_rollouts(model, ro, tok.zc_id, tok.pad_id), 1)[0]
            with_score.append(t)
            without.append(u)
            separate.append((u + s) / t)
        hook.remove()
        key = "rollout.self_reward_overhead" + ("" if shape == "tiny" else f".{shape}")
        out[key] = metric([a / b for a, b in zip(with_score, without)], "x", "<= 1.02",
                         note=f"{shape}: in-pass scoring vs none")
        key = "rollout.separate_pass_ratio" + ("" if shape == "tiny" else f".{shape}")
        out[key] = metric(separate, "x", note=f"{shape}: sampling + separate scoring pass vs in-pass")
    model, _ = _bench_model("small")
    out["rollout.decode_step_ops.small"] = metric([decode_step_ops(model)], "ops",
                                                  note="one decode step's kernels, small shape, bf16 (CPU ops)")
    model, tok = _bench_model("tiny")
    rows_list = (1, 16, 64) if quick else (1, 4, 16, 64, 256)
    for rows in rows_list:
        prompts = _prompts(tok, max(1, rows // 8))
        k = rows // len(prompts)
        t = _timed(lambda: sample(model, prompts, k, 64 if quick else 128, generator=torch.Generator().manual_seed(0),
                                  tokenizer=tok), reps)
        out[f"rollout.time_vs_rows.{rows}"] = metric(t, "s", note=f"tiny, {64 if quick else 128} new tokens")
    for T in ((32, 64) if quick else (32, 64, 128, 256)):
        prompts = _prompts(tok, 8)
        t = _timed(lambda: sample(model, prompts, 8, T, generator=torch.Generator().manual_seed(0), tokenizer=tok), reps)
        out[f"rollout.time_vs_new_tokens.{T}"] = metric(t, "s", note="tiny, 64 rows")
    return out


def _rl_batch(shape: str, P: int, K: int, T: int):
    import torch

    from rollout import sample

    model, tok = _bench_model(shape)
    hook = _eos_offset(model, tok)
    ro = sample(model, _prompts(tok, P), K, T, generator=torch.Generator().manual_seed(0), tokenizer=tok)
    hook.remove()
    r_v = (torch.rand(len(ro), generator=torch.Generator().manual_seed(1)) < 0.4).float()
    return model, tok, ro, r_v


def _cold_compile_s(mode: str) -> float:
    """Seconds a fresh process spends on the small shape's first two training steps (forward and backward,
    at two sequence lengths: the first compile and the dynamic-shape one) with `--compile mode`
    (runs.training_forward), on an inductor cache of its own, empty: what a fresh machine pays."""
    import subprocess
    import tempfile

    code = ("import time, torch, bench, runs\n"
            "model, _ = bench._bench_model('small')\n"
            f"fwd = runs.training_forward(model.train(), {mode!r})\n"
            "t = time.perf_counter()\n"
            "for L in (64, 80):\n"
            "    fwd(torch.randint(0, 300, (4, L))).float().mean().backward()\n"
            "print(time.perf_counter() - t)\n")
    with tempfile.TemporaryDirectory() as cache:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.abspath(__file__)),
                           env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
    if r.returncode or "torch.compile failed" in r.stderr:  # (an eager step's time is no compile time)
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"[bench] compile of --compile {mode} failed: {last[:200]}", flush=True)
        return float("nan")
    return float(r.stdout.split()[-1])


def bench_train(quick: bool) -> dict:
    """LaSeR vs GRPO update cost, SFT throughput (rows padded or packed: the tiny preset, and in full mode
    the small one), achieved FLOP/s against a plain matmul, and (full mode) the compile time of the
    training forward per --compile mode."""
    import time

    import torch

    import config
    import tasks
    import train
    from config import Config
    from runs import make_optimizer
    from loss import group_advantages

    out = {}
    reps = 2 if quick else 5
    P, K, T = (4, 8, 64) if quick else (16, 8, 128)
    model, tok, ro, r_v = _rl_batch("tiny", P, K, T)
    cfg = Config()
    adv, _ = group_advantages(r_v, K)
    opt = make_optimizer(model, 1e-5, 0.0)
    update = lambda mse: train.rl_update(model, opt, ro, adv, r_v, cfg, use_mse=mse, c_ref=-15.0, tok=tok)
    grpo, laser = [], []
    for _ in range(reps + 1):  # interleaved; the first pair warms up
        grpo.append(_timed(lambda: update(False), 1)[0])
        laser.append(_timed(lambda: update(True), 1)[0])
    out["train.laser_vs_grpo_step"] = metric([a / b for a, b in zip(laser[1:], grpo[1:])], "x", "<= 1.03",
                                            note=f"tiny, one update on {P}x{K} identical rollouts")

    def sft_steps(shape, batch, steps):
        model, tok = _bench_model(shape)
        model.train()
        opt = make_optimizer(model, 1e-3, 0.0)
        rates, flops = [], []
        n = sum(p.numel() for n_, p in model.named_parameters() if "wte" not in n_)
        c = model.cfg
        for s in range(steps + 1):
            x, y, mask = train.sft_batch(tok, tasks.train_batch(s, batch, 0), "cpu")  # built before the clock
            t = time.perf_counter()
            opt.zero_grad()
            train.sft_backward(model, [(x, y, mask)], "cpu")  # the trainer's loss, on one padded batch
            opt.step()
            dt = time.perf_counter() - t
            if s == 0:
                continue  # warm-up step
            B, L = x.shape
            # 6 N per token for the weights, plus 6 * n_layer * L * n_embd per token for attention
            # scores and values (forward 2x, backward 4x; causal masking not discounted)
            per_tok = 6 * n + 6 * c.n_layer * L * c.n_embd
            rates.append(B * L / dt)
            flops.append(per_tok * B * L / dt)
        return rates, flops

    rates, _ = sft_steps("tiny", 32, reps)
    out["train.sft_tokens_per_s"] = metric(rates, "tok/s", note="tiny shape, batch 32, fwd+bwd+AdamW")

    def pack_vs_pad(shape, steps):  # a preset's SFT step as the loop runs it (its micro-batches), rows padded
        model, tok = _bench_model(shape)  # or packed (--sft_pack), interleaved; the first pair warms up
        model.train()
        opt, p = make_optimizer(model, 1e-3, 0.0), dataclasses.replace(Config(), **config.PRESETS[shape])
        real = {False: [], True: []}
        for s in range(steps + 1):
            for pack in (False, True):
                batches, n_real = train.sft_step_batches(tok, config.train_problems(p, s, p.sft_batch_size, 0),
                                                         p.sft_micro_batch, p.micro_tokens, 1, p.block_size, pack)
                t = time.perf_counter()
                opt.zero_grad()
                train.sft_backward(model, batches, "cpu")
                opt.step()
                if s:
                    real[pack].append(n_real / (time.perf_counter() - t))
        return real

    for shape in ("tiny",) if quick else ("tiny", "small"):  # small: about 20 s a padded step on 2 cores
        real, sfx = pack_vs_pad(shape, reps if shape == "tiny" else 2), "" if shape == "tiny" else ".small"
        for pack, tail in ((False, "padded"), (True, "packed")):
            out[f"train.sft_real_tokens_per_s.{tail}{sfx}"] = metric(real[pack], "tok/s",
                                                                    note=f"the {shape} preset's SFT step")
        out["train.sft_pack_speedup" + sfx] = metric([b / a for a, b in zip(real[False], real[True])], "x",
                                                     note=f"{shape}: --sft_pack over padded rows, real tokens/s")
    _, flops = sft_steps("small", 8, 2 if quick else 4)
    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    a @ b
    mm = [2 * 1024 ** 3 / t for t in _timed(lambda: a @ b, 10 if quick else 30)]
    mm_med = sorted(mm)[len(mm) // 2]
    out["train.matmul_gflops"] = metric([m / 1e9 for m in mm], "GFLOP/s", note="float32 1024x1024 matmul")
    out["train.small_training_gflops"] = metric([f / 1e9 for f in flops], "GFLOP/s", note="small shape SFT, batch 8")
    out["train.matmul_fraction"] = metric([f / mm_med for f in flops], "", ">= 0.5",
                                         note="small-shape training FLOP/s over the matmul's")
    if not quick:  # a minute or two of compiling; the CUDA compile is timed by the gpu section
        for mode in ("on", "model"):
            t = _cold_compile_s(mode)
            if math.isfinite(t):
                out[f"train.compile_s.{mode}"] = metric([t], "s",
                                                        note=f"--compile {mode}: small shape, 2 lengths, cold cache")
    return out


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: on Linux its high-water mark (VmHWM), which starts afresh
    with the program, not getrusage's ru_maxrss, which Linux carries across the exec from the process that
    forked it (bench_memory's child read this benchmark's own peak: 7,408 MB after the sections before it,
    where the step's own is about 1,039, results/cpu/9f00a80/memory.json); elsewhere ru_maxrss (kB on Linux,
    bytes on macOS), which may carry a parent's peak in the same way."""
    import resource

    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2 ** 20 if sys.platform == "darwin" else rss / 1024


def bench_memory(quick: bool) -> dict:
    """Peak resident memory of one tiny RL step (rollout + LaSeR update), in a fresh process."""
    import subprocess

    code = (
        "import torch, bench, config, loss, runs, train\n"
        "model, tok, ro, r_v = bench._rl_batch('tiny', 16, 8, 128)\n"
        "adv, _ = loss.group_advantages(r_v, 8)\n"
        "opt = runs.make_optimizer(model, 1e-5, 0.0)\n"
        "train.rl_update(model, opt, ro, adv, r_v, config.Config(), use_mse=True, c_ref=-15.0, tok=tok)\n"
        "print(bench.peak_rss_mb())\n"
    )
    vals = []
    for _ in range(1 if quick else 2):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=os.path.dirname(os.path.abspath(__file__)))
        vals.append(float(r.stdout.strip().splitlines()[-1]))
    return {"memory.rl_step_peak_rss_mb": metric(vals, "MB", note="tiny, 16x8 rollouts x 128 tokens, one process")}


def bench_hf(quick: bool) -> dict:
    """Our sampler against transformers' `generate` on the same weights: a random tiny-shape model of
    the Llama layer (--arch llama), exported with export.py's code and loaded by transformers; the same
    prompts, K samples each, temperature 1 without top-k/top-p, the same number of new tokens."""
    import tempfile

    import torch
    try:
        import transformers
    except ImportError:
        print("[bench] hf: skipped (transformers is not installed: pip install -r requirements-dev.txt)")
        return {}
    import hf
    from model import GPT, swiglu_hidden
    from rollout import sample

    base, tok = _bench_model("tiny")
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(base.cfg, mlp="swiglu", mlp_hidden=swiglu_hidden(base.cfg.n_embd),
                                    norm_weight=True)).eval()
    P, K, T = (4, 8, 32) if quick else (16, 8, 128)
    reps = 1 if quick else 3
    prompts = _prompts(tok, P)
    with tempfile.TemporaryDirectory() as d:
        hf.export(model, tok, d, {})
        ref = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    width = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_id] * (width - len(p)) + p for p in prompts])
    att = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    gen = dict(do_sample=True, max_new_tokens=T, min_new_tokens=T, num_return_sequences=K, temperature=1.0,
               top_k=0, top_p=1.0, pad_token_id=tok.pad_id, eos_token_id=tok.eos_id)
    ours, theirs = [], []
    for _ in range(reps):  # interleaved so that machine noise hits both alike
        ours += _timed(lambda: sample(model, prompts, K, T, generator=torch.Generator().manual_seed(0), tokenizer=tok), 1)
        with torch.no_grad():
            theirs += _timed(lambda: ref.generate(input_ids=ids, attention_mask=att, **gen), 1)
    rows = P * K
    return {"hf.ours_tokens_per_s": metric([rows * T / t for t in ours], "tok/s", note=f"{P}x{K} rows x {T} tokens"),
            "hf.transformers_tokens_per_s": metric([rows * T / t for t in theirs], "tok/s",
                                                   note=f"transformers {transformers.__version__} generate"),
            "hf.ours_vs_transformers": metric([b / a for a, b in zip(ours, theirs)], "x", ">= 1",
                                              note="tiny shape, Llama layer, random weights, CPU float32")}


# ----------------------------------------------------------------------------------------------------
# the GPU section (python bench.py --device cuda): the small preset's shapes on one card

def _matmul_peak(dev, n: int, repeats: int, out: dict) -> float:
    """The matmul peak of this card, in this run (TFLOP/s, the MFU denominator), in the dtype the run computes
    in (_run_dtype: bf16, or float32 on a CUDA card without it); recorded in out."""
    import torch

    timed = functools.partial(_timed, sync=torch.cuda.synchronize if dev.type == "cuda" else lambda: None)
    dtype = _run_dtype(dev)
    name = str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
    ab = [torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2)]
    per = 10  # matmuls a timed sample: one sync's latency spread over them

    def matmuls():
        for _ in range(per):
            ab[0] @ ab[1]
    timed(matmuls, 2)
    mm = [per * 2 * n ** 3 / t / 1e12 for t in timed(matmuls, repeats)]
    out[f"gpu.matmul_{name}_tflops"] = metric(mm, "TFLOP/s", note=f"{n}^3 {name} matmul")
    return statistics.median(mm)


class _GpuSFT:
    """A preset's SFT step on a device as the training loop runs it (its batches, fused AdamW on CUDA, a
    given training forward), measured into `out`: gpu.sft_* keys, with `tail` naming a variant."""

    def __init__(self, model, tok, cfg, dev, peak: float, reps: int, n_steps: int, out: dict):
        import torch

        from runs import make_optimizer

        self.model, self.tok, self.cfg, self.dev, self.peak, self.reps, self.out = model, tok, cfg, dev, peak, reps, out
        self.n_steps = n_steps  # the steps timed in a row (their shapes vary, as the loop's do)
        self.opt = make_optimizer(model, 1e-4, 0.1)
        self.sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        self.n_mat = sum(p.numel() for n, p in model.named_parameters() if "wte" not in n)
        model.train()

    def step(self, batches, fwd):  # the loop's step: clipping, and on CUDA no wait for the device
        import train

        train.sft_step(self.model, self.opt, batches, self.dev, fwd, self.cfg.grad_clip)

    def batches(self, s: int, pin: bool = True):  # SFT step s's batches, built on the host as the loop builds them
        import tasks
        import train
        from config import CUDA_LENGTH_MULTIPLE

        cuda = self.dev.type == "cuda"
        batches, n_real = train.sft_step_batches(self.tok, tasks.train_batch(s, self.cfg.sft_batch_size, 0),
                                                 self.cfg.sft_micro_batch, self.cfg.micro_tokens,
                                                 CUDA_LENGTH_MULTIPLE if cuda else 1, self.model.cfg.block_size,
                                                 self.cfg.sft_pack, train.sft_row_multiple(self.cfg, cuda))
        return train.pinned(batches) if cuda and pin else batches, n_real

    def throughput(self, fwd, tail: str = ""):
        """The first step (with a compiled forward: its compile), then real and padded tokens/s and MFU
        at a long run's steady state (compiled, kernel plans made for these shapes; with --sft_graphs
        every shape's graph recorded)."""
        import train

        timed, out = functools.partial(_timed, sync=self.sync), self.out
        if self.cfg.sft_graphs:
            graphs = train.SFTGraphs(self.model, self.opt, self.dev, fwd, self.cfg.grad_clip)
            step = lambda batches: graphs(batches, self.opt.param_groups[0]["lr"])
        else:
            step = lambda batches: self.step(batches, fwd)
        steps = [self.batches(s) for s in range(self.n_steps)]
        first = timed(lambda: step(steps[0][0]), 1)
        out["gpu.sft_first_step_s" + tail] = metric(first, "s", note="compiles forward and backward at one shape "
                                                    "(the dynamic-shape compile comes later; kernels compiled "
                                                    "earlier in this process are reused)")
        for batches, _ in steps[1:] + (steps if self.cfg.sft_graphs else []):  # (graphs: a shape's 2nd step records it)
            step(batches)
        # the steps back to back, as the loop runs them (a step's launches overlap the last one's kernels),
        # one sync at each end; one sample per pass over the steps
        n_real = sum(n for _, n in steps)
        n_padded = sum(b[0].numel() for batches, _ in steps for b in batches)
        real, padded, mfu = [], [], []
        all_steps = lambda: [step(batches) for batches, _ in steps]
        for _ in range(max(3, self.reps)):
            t = timed(all_steps, 1)[0]
            real.append(n_real / t)
            padded.append(n_padded / t)
            mfu.append(6 * self.n_mat * n_real / t / (self.peak * 1e12))
        note = f"batch {self.cfg.sft_batch_size}, micro_tokens {self.cfg.micro_tokens}, {len(steps)} steps in a row"
        out["gpu.sft_real_tokens_per_s" + tail] = metric(real, "tok/s", None if tail else ">= 1e6", note=note)
        out["gpu.sft_padded_tokens_per_s" + tail] = metric(padded, "tok/s")
        out["gpu.sft_mfu" + tail] = metric(mfu, "", None if tail else ">= 0.15",
                                           note="6 N x real tokens/s over this run's matmul peak (gpu.matmul_*_tflops)")
        if self.cfg.sft_graphs:  # (a capture that failed leaves the steps uncaptured: say how many were captured)
            out["gpu.sft_graphs_captured" + tail] = metric([len(graphs.captured)], "", note=graphs.summary())
        busy = _device_busy(all_steps, self.dev, f"SFT{tail or ''}, {len(steps)} steps in a row")
        if busy == busy:  # (NaN: the profile failed, its note printed)
            out["gpu.sft_device_busy" + tail] = metric([busy], "", note="share of the steps' wall time with a "
                                                       "kernel running (torch.profiler); kernels in the log")

    def prefetch_ratio(self, fwd, n_row: int):
        """n_row steps back to back as in the training loop: their batches built beforehand, or built
        meanwhile by runs.prefetch, in a thread (whose Python holds the GIL that the step's launches need)
        or in worker processes (the loop's way on CUDA, as many as it starts: runs.batch_workers; the batches
        pinned as they arrive). Each ratio is what that way costs a step bound by the host; the steps are the
        loop's (with --sft_graphs replayed from CUDA graphs, recorded in two untimed passes). The weights
        these steps train are put back."""
        import train
        from runs import batch_workers, prefetch

        if self.cfg.sft_graphs:
            graphs = train.SFTGraphs(self.model, self.opt, self.dev, fwd, self.cfg.grad_clip)
            step = lambda batches: graphs(batches, self.opt.param_groups[0]["lr"])
        else:
            step = lambda batches: self.step(batches, fwd)

        def in_a_row(batch_iter, pin=False) -> float:  # real tokens/s
            self.sync()
            t, n_real = time.perf_counter(), 0
            for batches, n in batch_iter:
                step(train.pinned(batches) if pin else batches)
                n_real += n
            self.sync()
            return n_real / (time.perf_counter() - t)

        def prefetched(process) -> float:  # real tokens/s; the first batches come before the clock, as in a
            it = prefetch(functools.partial(self.batches, pin=not process), range(n_row), process=process,
                          workers=batch_workers())
            first = next(it)  # loop that has been running, and the worker's shutdown after it
            rate = in_a_row(itertools.islice(itertools.chain([first], it), n_row),
                            pin=process and self.dev.type == "cuda")
            it.close()
            return rate
        ready = [self.batches(s) for s in range(n_row)]
        weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        for _ in range(2 if self.cfg.sft_graphs else 1):  # untimed: kernel plans (and graphs) for these shapes
            in_a_row(ready)
        for way, process in (("thread", False), ("process", True)):
            ratio = [prefetched(process) / in_a_row(ready) for _ in range(self.reps)]
            self.out[f"gpu.sft_prefetch_{way}_ratio"] = metric(ratio, "x", note=f"{n_row} steps in a row: "
                                                               f"prefetch {way} vs batches ready")
        self.model.load_state_dict(weights)


def gpu_sft_metrics(dev, quick: bool, dry: bool = False) -> dict:
    """The small preset's SFT step on one CUDA device as its loop runs it: rows packed (--sft_pack), blocks
    compiled (--compile on, the default), the whole step replayed from CUDA graphs (--sft_graphs:
    train.SFTGraphs), against five variants: the same step launched op by op (.plain; the preset's way
    before the H100 run of 5a74bdc, where it ran at 479k real tokens/s against 1.13M from graphs, and the
    unnamed figures of earlier runs), rows padded instead (.padded), the whole model compiled as one graph
    (--compile model, .whole_model), 4x the problems a step (.batch512: whether a step's time grows with its
    tokens), each launched op by op, and the graphs of eager blocks (.graphs_eager); each with its compile
    time. Dynamo is reset between variants (inductor's kernel cache is not). (The model's forward and
    backward alone replayed from torch.compile's "reduce-overhead" graphs, re-recorded for each new shape
    of padded rows, was measured on an H100 on 2026-11-27 and gained nothing.) `dry`: the test preset,
    forwards not compiled."""
    import torch
    import torch._dynamo

    import config
    from runs import _CompiledForward, training_forward

    out = _Printed()
    preset = "test" if dry else "small"
    peak = _matmul_peak(dev, 256 if dry else 8192, 3 if dry else 10, out)
    cfg = dataclasses.replace(config.Config(), **config.PRESETS[preset], device=dev.type)
    model, tok = _bench_model(preset)
    reps, n_steps = (1, 4) if dry else (2, 20) if quick else (5, 50)
    sft = _GpuSFT(model.to(dev), tok, cfg, dev, peak, reps, n_steps, out)
    per_block = lambda: training_forward(model, "off" if dry else "on")
    whole = lambda: model if dry else _CompiledForward(model, whole=True)
    eager = lambda: model
    variants = [("", per_block, True, 1, True), (".plain", per_block, True, 1, False),
                (".padded", per_block, False, 1, False), (".whole_model", whole, True, 1, False),
                (".batch512", per_block, True, 4, False), (".graphs_eager", eager, True, 1, True)]
    for tail, make, pack, times, graphs in variants:
        torch._dynamo.reset()
        sft.cfg = dataclasses.replace(cfg, sft_pack=pack, sft_batch_size=times * cfg.sft_batch_size, sft_graphs=graphs)
        try:
            sft.throughput(make(), tail)
        except Exception as e:  # noqa: BLE001 (a measurement of an option: say why it failed, keep the rest)
            print(f"[bench] sft{tail or ' (per block)'} failed: {_why(e)}", flush=True)
    return out


def bench_gpu_sft(quick: bool) -> dict:
    """The small preset's SFT step on one CUDA device and its variants: see gpu_sft_metrics."""
    import torch

    return gpu_sft_metrics(torch.device("cuda"), quick)


def gpu_attention_metrics(dev, quick: bool, dry: bool = False) -> dict:
    """One decode step's attention as the sampler runs it at 512 rows (8 in the rehearsal): a query per row
    and head of the small preset (8 heads of 56) against the first W slots of a KV cache of 256 slots (the
    benchmark's decode: prompts of up to 37 tokens and 192 new ones), under an additive mask that hides
    each row's left padding, for windows of 128, 192 and 256 slots (the decode's average is 165). For each
    way of computing it, microseconds a call (50 calls in a row, replayed from a CUDA graph as the decode
    step is, where a graph can hold them) and its largest difference from float32 arithmetic on the same
    inputs: SDPA's memory-efficient kernel (.efficient), cuDNN's (.cudnn) and the math one (.math); the
    two matrix products compiled (.matmul); flex attention compiled with the mask as a score modifier
    (.flex); the mask folded into the keys, a column of 0 (seen) or -30,000 (hidden) that a query column
    of 1 adds to each score, so that a kernel without a mask computes it (.flash_key_bias,
    .efficient_key_bias, .cudnn_key_bias: head dimension 56 + 1, padded to 64, as model.KVCache holds them
    with model.KEY_BIAS); and two references that are not the decode's attention: flash attention without
    a mask (.flash_unmasked) and a sum over the window's keys and values (.read_kv; not a tight bound on
    reading them: on an H100 it took 160 us at 192 slots and 94 at 256). A way that fails on this device
    says why in one line. `dry`:
    the test preset's heads, nothing compiled."""
    import warnings

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    import model as model_lib

    out = _Printed()
    cuda = dev.type == "cuda"
    dtype = _run_dtype(dev) if cuda else torch.float32
    B, H, hd, L = (8, 2, 16, 64) if dry else (512, 8, 56, 256)
    gen = torch.Generator(dev).manual_seed(0)
    # compiled as the decode's blocks are (rollout.compiled_blocks: every size symbolic)
    compiled = (lambda f: f) if dry else functools.partial(torch.compile, dynamic=True, fullgraph=True)

    def matmuls(q, k, v, bias):
        scores = q.float() @ k.float().transpose(-1, -2) * q.shape[-1] ** -0.5 + bias
        return (torch.softmax(scores, dim=-1) @ v.float()).to(v.dtype)

    def flex(q, k, v, bias):
        from torch.nn.attention.flex_attention import flex_attention
        row_bias = bias[:, 0, 0]  # (B, W)
        return flex_attention(q, k, v, score_mod=lambda score, b, h, q_idx, kv_idx: score + row_bias[b, kv_idx])

    def sdpa(backend):
        def run(q, k, v, bias):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return run

    def unmasked(q, k, v, bias):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v)

    def key_bias(backend):  # the mask folded into the cache's keys, made once here as model.KVCache's would be
        wide = model_lib.key_bias_width(hd)  # hd + a bias column, padded to a multiple of 8 (56 -> 64)
        qf = F.pad(torch.cat([q, torch.ones_like(q[..., :1])], -1), (0, wide - hd - 1))
        hidden = torch.arange(L, device=dev) < pad.view(B, 1)  # (B, L): each row's left padding
        col = (hidden * model_lib.HIDDEN).to(dtype)[:, None, :, None].expand(-1, H, -1, 1)  # (B, H, L, 1)
        kf = F.pad(torch.cat([cache[0], col], -1), (0, wide - hd - 1))[:, :, :W]  # slices of the cache
        vf = F.pad(cache[1], (0, wide - hd))[:, :, :W]

        def run(*_):
            with sdpa_kernel([backend]):
                return F.scaled_dot_product_attention(qf, kf, vf, scale=hd ** -0.5)[..., :hd]
        return run

    ways = {"efficient": lambda: sdpa(SDPBackend.EFFICIENT_ATTENTION),
            "cudnn": lambda: sdpa(SDPBackend.CUDNN_ATTENTION),
            "math": lambda: sdpa(SDPBackend.MATH),
            "matmul": lambda: compiled(matmuls), "flex": lambda: compiled(flex),
            "flash_key_bias": lambda: key_bias(SDPBackend.FLASH_ATTENTION),
            "efficient_key_bias": lambda: key_bias(SDPBackend.EFFICIENT_ATTENTION),
            "cudnn_key_bias": lambda: key_bias(SDPBackend.CUDNN_ATTENTION), "flash_unmasked": lambda: unmasked,
            "read_kv": lambda: lambda q, k, v, bias: k.sum(dtype=torch.float32) + v.sum(dtype=torch.float32)}
    calls = 5 if dry else 50
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    graphs_ok = cuda
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "flex_attention called without torch.compile")  # (dry: none compiled)
        for W in ((32,) if dry else (128, 192, 256)):
            cache = torch.randn(2, B, H, L, hd, generator=gen, device=dev).to(dtype)
            k, v = cache[0][:, :, :W], cache[1][:, :, :W]  # (B, H, W, hd): slices of the cache, as decode_step's
            q = torch.randn(B, H, 1, hd, generator=gen, device=dev).to(dtype)
            pad = torch.randint(0, W // 4, (B, 1, 1, 1), generator=gen, device=dev)  # each row's left padding
            bias = torch.zeros(B, 1, 1, W, dtype=dtype, device=dev).masked_fill_(
                torch.arange(W, device=dev) < pad, float("-inf"))
            want = matmuls(q.float(), k.float(), v.float(), bias.float())
            for name, make in ways.items():
                try:
                    fn = make()
                    got = fn(q, k, v, bias)  # the first call: a compile, where there is one
                    if name not in ("flash_unmasked", "read_kv"):
                        out[f"gpu.attention_max_diff.{W}.{name}"] = metric(
                            [float((got.float() - want).abs().max())], "", note="against float32 arithmetic")
                    run, how = lambda: [fn(q, k, v, bias) for _ in range(calls)], "launched one by one"
                    if graphs_ok:  # the calls replayed from a CUDA graph, as the decode step's are: device time
                        side = torch.cuda.Stream()  # (warmed up on a side stream, as before any capture)
                        side.wait_stream(torch.cuda.current_stream())
                        with torch.cuda.stream(side):
                            fn(q, k, v, bias)
                        torch.cuda.current_stream().wait_stream(side)
                        try:
                            graph = torch.cuda.CUDAGraph()
                            with torch.cuda.graph(graph):
                                run()
                            run, how = graph.replay, "replayed from a CUDA graph"
                        except Exception as e:  # noqa: BLE001 (a kernel a graph cannot hold: timed launched)
                            # and so are the ways after it: a failed capture may leave the stream unfit for another
                            graphs_ok = False
                            torch.cuda.synchronize()
                            print(f"[bench] attention {name}: CUDA graph capture failed ({type(e).__name__}); "
                                  f"this way and the ones after it timed launched one by one", flush=True)
                    run()
                    times = [x * 1e6 / calls for x in _timed(run, 3 if quick or dry else 5, sync=sync)]
                    out[f"gpu.attention_us.{W}.{name}"] = metric(
                        times, "us", note=f"{B} rows x {H} heads of {hd}, window {W} of {L} slots, "
                                          f"{str(dtype)[6:]}, {calls} calls {how}")
                except Exception as e:  # noqa: BLE001 (a way this device or torch build lacks: say so, go on)
                    print(f"[bench] attention {name} (window {W}) failed: {_why(e)}", flush=True)
    return out


def bench_gpu_attention(quick: bool) -> dict:
    """A 512-row decode step's attention, computed each way there is: see gpu_attention_metrics."""
    import torch

    return gpu_attention_metrics(torch.device("cuda"), quick)


def bench_gpu(quick: bool) -> dict:
    """The small preset on one CUDA device: see gpu_metrics."""
    import torch

    return gpu_metrics(torch.device("cuda"), quick)


def gpu_metrics(dev, quick: bool, dry: bool = False) -> dict:
    """bf16 matmul peak (the MFU denominator, measured in the same run), SFT tokens/s and MFU, decode
    ms/step at 1 to 2,048 rows, one RL step split into sample / verify / update, the cost of the in-pass
    z_c readout, evaluation completions/s, peak memory: the small preset's shapes and settings. Random
    weights with an EOS bias (lengths spread as in real rollouts), except for decode, where every row runs
    to the limit. `dry`: a rehearsal on the test preset at toy sizes, on any device (the tests run it on
    CPU, so that this GPU-only path has run before a GPU session is spent on it)."""
    import torch

    import config
    import rollout
    import tasks
    import train
    from config import autocast
    from runs import make_optimizer, training_forward

    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    timed = functools.partial(_timed, sync=sync)  # the device's time, not the launch's

    reps = 1 if dry else 2 if quick else 5
    preset, n_mm, T = ("test", 256, 8) if dry else ("small", 8192, 64 if quick else 128)
    out = _Printed()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    peak = _matmul_peak(dev, n_mm, 3 if dry else 10 if quick else 30, out)

    cfg = dataclasses.replace(config.Config(), **config.PRESETS[preset], device=dev.type)
    model, tok = _bench_model(preset)
    model = model.to(dev)

    # decode: every row runs all its steps (a hook rules EOS out: a random model's row could end, and a
    # check every few steps end the call, early), the fixed-shape step from a CUDA graph, its blocks compiled by
    # inductor; ".eager_blocks": the same graphs of eager kernels (COMPILE_DECODE off). 512 rows (the target)
    # run the preset's RL length, whose later steps attend over more of the cache
    model.eval()
    out["gpu.decode_step_ops"] = metric([decode_step_ops(model)], "ops",
                                        note="kernels a decode step's graph replays with eager blocks")
    # (-1e4, not -inf: the sections compare logits by their differences, and -inf - -inf is NaN)
    flags, no_eos = (rollout.CUDA_GRAPHS, rollout.COMPILE_DECODE), _eos_offset(model, tok, -1e4)
    T512 = T if dry else cfg.max_new_tokens
    try:
        ro_default = _decode_metrics(model, tok, dev, T, T512, reps, dry, timed, sync, out)
    finally:
        rollout.CUDA_GRAPHS, rollout.COMPILE_DECODE = flags
        no_eos.remove()
    # the weights the default decode ran, for the other decodes at the end (SFT and RL move them), kept in host memory
    decoded = copy.deepcopy(model).cpu()

    # from here on an EOS bias spreads the lengths as in real rollouts; graphs and compiled code made
    # before it would not see the hook: start both afresh
    hook = _eos_offset(model, tok)
    rollout._DECODERS.pop(model, None)
    torch._dynamo.reset()
    # SFT: the preset's batch and micro-batching, the compiled forward, fused AdamW
    fwd = training_forward(model, cfg.compile)
    n_steps = 4 if dry else 20 if quick else 50  # SFT steps timed in a row
    sft = _GpuSFT(model, tok, cfg, dev, peak, reps, n_steps, out)
    sft.throughput(fwd)
    sft.prefetch_ratio(fwd, n_steps)

    # in-pass z_c readout: the preset's RL sampling with the readout vs without; a ratio near 1 against a
    # target 2% above it, so at least 5 interleaved pairs even in quick mode (about 4 s on an H100)
    prompts, ratio = _prompts(tok, cfg.prompts_per_step), []
    with autocast(dev):
        for i in range(reps + 1 if dry else max(reps, 6) + 1):  # (the first pair dropped: an even count kept)
            order = (True, False) if i % 2 else (False, True)  # alternately first: no order effect in the ratio
            t = {s: timed(lambda: rollout.sample(model, prompts, cfg.group_size, cfg.max_new_tokens, tokenizer=tok,
                                                 generator=torch.Generator(dev).manual_seed(0), score=s), 1)[0]
                 for s in order}
            ratio.append(t[True] / t[False])
    out["gpu.self_reward_overhead"] = metric(ratio[1:], "x", "<= 1.02", note="in-pass readout vs none, RL sampling")

    # one RL step of the preset (64 x 8 x up to 192 tokens on small): sample / verify / update
    opt, times = make_optimizer(model, cfg.rl_lr, cfg.weight_decay), {"sample": [], "verify": [], "update": []}
    n = cfg.prompts_per_step * cfg.group_size
    with train.verifier_pool(cfg.verify_workers) as pool:
        for s in range(reps + 2):
            sync()
            rec, _ = train.rl_step(model, opt, tok, cfg, step=s, c_ref=-15.0, forward=fwd, pool=pool)
            sync()
            if s >= 2:  # warm-up: compile, graph capture, pool start
                for k, key in (("sample", "time_rollout"), ("verify", "time_verify"), ("update", "time_update")):
                    times[k].append(rec[key])
        # the verifier on as many realistic completions as a step has rows (random weights write none),
        # other ones at each repeat (a group's answers repeat, as in a real step, but few from before)
        verify_s = []
        for r in range(reps):
            work = _verify_workload(n_problems=-(-n // 8), seed=1000 + r)[:n]
            verify_s += _timed(lambda: train.verify_rollouts([w[0] for w in work], [w[1] for w in work], pool), 1)
    # a step: its sampling and update, and the verifier's time on realistic answers (not the in-step one)
    times["step"] = [a + b + c for a, b, c in zip(times["sample"], times["update"], verify_s)]
    shape = f"{cfg.prompts_per_step}x{cfg.group_size} rows, <= {cfg.max_new_tokens} tokens"
    for k, v in times.items():
        out[f"gpu.rl_{k}_s"] = metric(v, "s", "<= 0.5" if k == "step" else None,
                                      note=shape + ("; sample + update + gpu.verify_step_s" if k == "step" else ""))
    out["gpu.verify_step_s"] = metric(verify_s, "s", note=f"{n} realistic completions, new at each repeat, "
                                                          f"{cfg.verify_workers} worker processes")

    # evaluation sampling: 16 samples per problem in evaluate.py's CUDA calls (4,096 rows)
    probs = tasks.make_split("test", 8 if dry else 256 if quick else 512, 0)

    def evaluation():
        for _ in rollout.sample_chunks(model, tok, probs, num_samples=16, max_new_tokens=cfg.max_new_tokens,
                                       prompts_per_call=4096 // 16, generator=torch.Generator(dev).manual_seed(0)):
            pass
    evaluation()
    t = timed(evaluation, 1 if quick or dry else 2)
    out["gpu.eval_completions_per_s"] = metric([16 * len(probs) / x for x in t], "completions/s",
                                               note=f"{len(probs)} problems x 16, up to {cfg.max_new_tokens} tokens")
    hook.remove()
    if cuda:
        out["gpu.peak_memory_gb"] = metric([torch.cuda.max_memory_allocated() / 2 ** 30], "GiB",
                                           note="every section but the other decodes (_decode_candidates), "
                                                "which run after")

    # the other decodes last, so that a bench cut short by its time limit loses them, not the figures above: on
    # the weights the default decode ran (its copy), with EOS ruled out again and nothing compiled before
    rollout._DECODERS.pop(model, None)  # (the model's decoders and their caches: memory for the other decodes)
    torch._dynamo.reset()
    decoded = decoded.to(dev)
    no_eos = _eos_offset(decoded, tok, -1e4)
    try:
        _decode_candidate_metrics(decoded, tok, dev, T, T512, reps, dry, timed, sync, out, ro_default)
    finally:
        rollout.CUDA_GRAPHS, rollout.COMPILE_DECODE = flags
        no_eos.remove()
    return out


def _decode_candidates() -> dict:
    """The decodes bench.py measures beside the default, each as the module settings it changes: the default
    itself again (.default_again: none changed), timed beside the others at the end of the GPU section, minutes
    after the default's own figures (whether the card's speed moved meanwhile); the mask
    given to the kernel with cuDNN's first (.masked_cudnn; the memory-efficient kernel with a mask, the
    default before 5aacde5, ran 308k tokens/s there and is no longer measured); caches with no spare slots,
    as before 8dcb47b, so that the last window spans a whole cache (.no_spare_slots: whether its graph calls
    another kernel); windows of 64 slots (.window64, the default before 023616b) and of 16 (.window16):
    fewer unwritten slots read, more graphs captured; a check every 8 steps that waits for the device
    (.sync_check, the loop before rollout.LAGGED_CHECK)."""
    from torch.nn.attention import SDPBackend

    import model
    import rollout

    cudnn = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    # in the order they run: a bench cut short loses the last (the three changes not yet run on a card first,
    # the mask given to cuDNN's kernel, measured at 5aacde5 already, last)
    return {".default_again": {},
            ".sync_check": {(rollout, "LAGGED_CHECK"): False, (rollout, "CHECK_EVERY"): 8},
            ".no_spare_slots": {(rollout, "SPARE_SLOTS"): 0},
            ".window64": {(rollout, "WINDOW"): 64},
            ".window16": {(rollout, "WINDOW"): 16},
            ".masked_cudnn": {(model, "DECODE_ATTENTION"): cudnn, (model, "KEY_BIAS"): set()}}


@contextlib.contextmanager
def _no_compile_cache():
    """torch.compile without its caches of compiled code (inductor's FX graph cache and AOTAutograd's), for a
    decode candidate that differs from another only by the attention kernels' priority: on an H100 the
    .masked_cudnn candidate, compiled after the masked memory-efficient one, ran that one's kernel (its
    profile in results/small/h100_5aacde5), which a cache whose key leaves out the priority would explain
    (our guess).
    Neither read from nor written to, so a later process cannot load a candidate's code either."""
    import torch
    import torch._functorch.config
    import torch._inductor.config

    with contextlib.ExitStack() as stack:
        for module, name in ((torch._inductor.config, "fx_graph_cache"),
                             (torch._functorch.config, "enable_autograd_cache")):
            if hasattr(module, name):
                stack.enter_context(module.patch({name: False}))
        yield


def _cudnn_share(kernels: dict, key: str, out) -> None:
    """The share of a profile's attention kernels' device time in cuDNN's (names with "cudnn"), against the
    memory-efficient and flash kernels ("fmha", "flash" without "cudnn"): which kernel a decode ran. None
    traced (CPU, or the profile failed): no metric."""
    cudnn = sum(t for name, t in kernels.items() if "cudnn" in name)
    other = sum(t for name, t in kernels.items() if "cudnn" not in name and ("fmha" in name or "flash" in name))
    if cudnn + other:
        out[key] = metric([cudnn / (cudnn + other)], "", note="share of the attention kernels' device time in "
                                                              "cuDNN's (from the profile)")


def _decode_call(model, tok, dev, rows: int, tail: str, steps: int, reps: int, timed, sync, out, target=None):
    """One sampling call's speed at `rows` rows, `steps` new tokens each (the fixed loop, as on CUDA; on CPU
    too, for the rehearsal's windows): its first call's time (compile and capture), ms/step and tokens/s
    (gpu.decode_*.{rows}{tail}). Returns the first call's rollouts and the call."""
    import torch

    import rollout
    from config import autocast

    prompts, K = _prompts(tok, max(1, rows // 8)), rows // max(1, rows // 8)
    run = lambda: rollout.sample(model, prompts, K, steps, generator=torch.Generator(dev).manual_seed(0),
                                 tokenizer=tok, fixed=True)
    with autocast(dev):
        sync()
        t0 = time.perf_counter()
        ro = run()  # graph capture, and a compile where the shapes are new to it (1 row; then any other)
        sync()
        out[f"gpu.decode_first_call_s.{rows}{tail}"] = metric([time.perf_counter() - t0], "s",
                                                              note="compile and capture included")
        t = timed(run, reps)
    out[f"gpu.decode_ms_per_step.{rows}{tail}"] = metric([x / steps * 1e3 for x in t], "ms", note=f"{steps} new tokens")
    out[f"gpu.decode_tokens_per_s.{rows}{tail}"] = metric([rows * steps / x for x in t], "tok/s", target,
                                                          note=f"{steps} new tokens")
    return ro, run


def _same_tokens(a, b) -> float:
    return float((a.response == b.response).float().mean())


def _decode_metrics(model, tok, dev, T: int, T512: int, reps: int, dry: bool, timed, sync, out):
    """gpu_metrics' decode section: ms/step and tokens/s with compiled and eager blocks (T new tokens; T512
    at 512 rows), each first call's compile and capture time, and the agreement of the graphs, the compiled
    blocks and the cached forward. Every row must run all its steps (the caller rules EOS out). Returns the
    rollouts of the default decode at 512 rows (8 in the rehearsal), which the candidates' are compared with
    (_decode_candidate_metrics)."""
    import torch

    import rollout
    from config import autocast

    decode = lambda rows, tail, target=None: _decode_call(model, tok, dev, rows, tail, T512 if rows == 512 else T,
                                                          reps, timed, sync, out, target)
    for compiled, tail in ((True, ""), (False, ".eager_blocks")):
        rollout.COMPILE_DECODE = compiled
        for rows in ((1, 8) if dry else (1, 64, 512, 2048)) if compiled else (1,) if dry else (1, 512):
            ro = decode(rows, tail, ">= 5e5" if rows == 512 and compiled else None)[0]
            if compiled and rows == (8 if dry else 512):
                ro_default = ro
        if compiled and dev.type == "cuda":  # a fallback (its notice is in the log) would leave eager blocks timed
            out["gpu.decode_compiled"] = metric([float(rollout.COMPILE_DECODE)], "", "== 1",
                                                note="1: the timings above ran compiled blocks")
    # the graph replays the eager fixed-shape step (the same tokens; with compiled blocks the tokens may part
    # where bf16 rounding tips a draw); decode_step agrees with the CPU loop's cached forward (case 3), and the
    # sampler's decoder with compiled blocks with the one with eager blocks, fed the same tokens
    prompts = _prompts(tok, 8 if dry else 64)
    with autocast(dev), torch.no_grad():
        ros = []
        for graphs, compiled in ((True, False), (False, False), (True, True)):
            rollout.CUDA_GRAPHS, rollout.COMPILE_DECODE = graphs, compiled
            ros.append(rollout.sample(model, prompts, 8, T, generator=torch.Generator(dev).manual_seed(1),
                                      tokenizer=tok))
        rollout.CUDA_GRAPHS, rollout.COMPILE_DECODE = True, True
        idx, valid = rollout._left_pad(prompts, tok.pad_id, dev)
        caches = [model.new_cache(len(prompts), rollout.fixed_cache_len(idx.shape[1] + T)) for _ in range(3)]
        for c in caches:  # the cached forward's, decode_step's, and the prefill the decoders load
            model(idx, cache=c, valid=valid)
        rows = torch.arange(len(prompts), device=dev).repeat_interleave(8)
        # (compiled blocks on CUDA only, as the sampler's: on CPU both are eager, and tests/test_rollout.py
        # compares inductor's CPU kernels with the eager step)
        decoders = [rollout._FixedDecoder(model, len(rows), caches[2].max_len, dev.type == "cuda",
                                          compiled and dev.type == "cuda") for compiled in (True, False)]
        for d in decoders:
            d.cache.load(caches[2], rows)
        # (torch.maximum keeps a NaN, where Python's max(0.0, nan) is 0.0: a NaN logit reads as NaN, not as agreement)
        diff = diff_compiled = torch.zeros((), device=dev)
        for t in range(T - 1):
            slot = torch.tensor([idx.shape[1] + t], device=dev)
            nxt = ros[0].response[::8, t]
            want = model(nxt[:, None], cache=caches[0])[:, -1]
            diff = torch.maximum(diff, (model.decode_step(nxt, caches[1], slot) - want).abs().max().float())
            fused, plain = (d.step(model, ros[0].response[:, t], slot, idx.shape[1] + t + 1)[0] for d in decoders)
            diff_compiled = torch.maximum(diff_compiled, (fused - plain).abs().max().float())
        diff, diff_compiled = float(diff), float(diff_compiled)
    out["gpu.graph_vs_eager_same_tokens"] = metric([_same_tokens(ros[0], ros[1])], "", "== 1",
                                                   note=f"fraction of equal tokens, {len(ros[0])} rows, eager blocks")
    out["gpu.compiled_vs_eager_same_tokens"] = metric([_same_tokens(ros[2], ros[0])], "",
                                                      note="fraction of equal tokens, graphs of compiled vs eager blocks")
    out["gpu.decode_step_vs_cached_forward"] = metric([diff], "max |logit diff|",
                                                      note=f"{len(prompts)} rows x {T - 1} steps, bf16")
    out["gpu.decode_compiled_vs_eager"] = metric([diff_compiled], "max |logit diff|",
                                                 note="the sampler's decoders, compiled vs eager blocks, bf16")
    try:  # a diagnostic, first run on a card: if it fails there, say so and let the benchmark go on
        _decode_split(model, tok, dev, T512, reps, dry, timed, out)
    except Exception as e:  # noqa: BLE001
        print(f"note: gpu.decode_split_ms not measured ({_why(e)})", file=sys.stderr)
    return ro_default


def _decode_candidate_metrics(model, tok, dev, T: int, T512: int, reps: int, dry: bool, timed, sync, out,
                              ro_default) -> None:
    """The other decodes (_decode_candidates), with compiled blocks, at 512 rows (8 in the rehearsal): each
    one's speed, its share of tokens equal to the default decoder's call (`ro_default`, of the same weights),
    and its profile (which kernels ran). Every row must run all its steps (the caller rules EOS out)."""
    import torch

    import rollout
    from config import autocast

    rows = 8 if dry else 512
    steps = T512 if rows == 512 else T
    for tail, settings in _decode_candidates().items():
        saved = {(module, name): getattr(module, name) for module, name in settings}
        rollout.COMPILE_DECODE = True
        try:
            for (module, name), value in settings.items():
                setattr(module, name, value)
            torch._dynamo.reset()  # (the attention kernel is chosen when a block is compiled: compile afresh)
            with _no_compile_cache():
                ro, run = _decode_call(model, tok, dev, rows, tail, steps, reps, timed, sync, out)
            if dev.type == "cuda":  # a compile that fell back (its notice above) ran eager blocks instead
                out[f"gpu.decode_compiled{tail}"] = metric([float(rollout.COMPILE_DECODE)], "", "== 1",
                                                           note=f"1: the {tail} timings ran compiled blocks")
            out[f"gpu.decode_same_tokens.{rows}{tail}"] = metric(
                [_same_tokens(ro, ro_default)], "", note="share of tokens equal to the default decoder's (bf16 "
                                                         "rounding may tip a draw)")
            with autocast(dev):
                label, kernels = f"decode, {rows} rows x {steps} tokens, {tail[1:]}", {}
                busy = _device_busy(run, dev, label, host_ops=False, kernels=kernels)
            if busy == busy:
                out[f"gpu.decode_device_busy.{rows}{tail}"] = metric([busy], "")
            _cudnn_share(kernels, f"gpu.decode_cudnn_attention_share.{rows}{tail}", out)
        except Exception as e:  # noqa: BLE001 (a candidate: say why it failed, keep the rest)
            print(f"[bench] decode {tail} failed: {_why(e)}", flush=True)
        finally:
            for (module, name), value in saved.items():
                setattr(module, name, value)
            rollout._DECODERS.pop(model, None)  # (their caches: memory for the next candidate)
            torch._dynamo.reset()


def _decode_split(model, tok, dev, T: int, reps: int, dry: bool, timed, out) -> None:
    """Where a fixed-loop decode step's time goes at 512 rows (8 in the rehearsal): the decoder's step
    alone (on CUDA its graph: the model and the z_c readout), and the loop without it (the sampler, the
    bookkeeping, the host's checks: what the graph does not hold), its decoder's step standing in with the
    same logits every time (EOS ruled out, so that every row runs all T steps)."""
    import torch

    import rollout
    from config import autocast

    rows = 8 if dry else 512
    prompts = _prompts(tok, rows // 8)
    run = lambda: rollout.sample(model, prompts, 8, T, generator=torch.Generator(dev).manual_seed(0),
                                 tokenizer=tok, fixed=True)
    with autocast(dev), torch.no_grad():
        run()  # the decoder of this shape, made (compiled, captured) if it was not
        dec = next(reversed(rollout._DECODERS[model].values()))  # (the pool's newest: the one just used)
        tok_in = torch.full((rows,), tok.eos_id, dtype=torch.long, device=dev)
        slots = torch.arange(dec.cache.length, dec.cache.length + T, device=dev)
        steps = lambda: [dec.step(model, tok_in, slots[t:t + 1], dec.cache.length + t + 1) for t in range(T)]
        logits, zc = (x.clone() for x in dec.step(model, tok_in, slots[:1], dec.cache.length + 1))
        logits[:, tok.eos_id] = float("-inf")
        model_s = timed(steps, reps)
        real_step, rollout._FixedDecoder.step = rollout._FixedDecoder.step, lambda *a: (logits, zc)
        try:
            loop_s = timed(run, reps)
        finally:
            rollout._FixedDecoder.step = real_step
        note = f"{rows} rows, ms a step; the two add up to decode_ms_per_step where neither waits on the other"
        for part, secs, what in (("model", model_s, "the decoder's step: "),
                                 ("loop", loop_s, "the rest of the loop: ")):
            out[f"gpu.decode_split_ms.{part}"] = metric([x / T * 1e3 for x in secs], "ms", note=what + note)
        kernels = {}
        busy = _device_busy(run, dev, f"decode, {rows} rows x {T} tokens", kernels=kernels)
    if busy == busy:  # (NaN: the profile failed, its note printed)
        out[f"gpu.decode_device_busy.{rows}"] = metric([busy], "", note=f"share of a {rows}-row decode call's "
                                                       "wall time with a kernel running (torch.profiler)")
    _cudnn_share(kernels, f"gpu.decode_cudnn_attention_share.{rows}", out)


SECTIONS = [bench_verify, bench_rollout, bench_train, bench_memory, bench_hf, bench_gpu, bench_gpu_sft,
            bench_gpu_attention]


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def _section_name(fn) -> str:
    return fn.__name__.removeprefix("bench_")


def _fmt(x: float) -> str:
    if x != x:
        return "nan"
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 1e5 or ax < 1e-3:
        return f"{x:.3e}"
    return f"{x:.4g}"


def print_table(metrics: dict[str, dict]) -> None:
    rows = [("metric", "median", "spread [min, max]", "unit", "target")]
    for key, m in metrics.items():
        lo, hi = m["spread"]
        rows.append((key, _fmt(m["median"]), f"[{_fmt(lo)}, {_fmt(hi)}]", m["unit"], m.get("target") or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) if i in (0, 3, 4) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repeats (sections finish in seconds)")
    ap.add_argument("--only", action="append", default=[], metavar="SECTION",
                    help="run only this section (repeatable; names: %s)" % ", ".join(_section_name(f) for f in SECTIONS))
    ap.add_argument("--out", default="bench.json", help="where to write the JSON results")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                    help="cpu: every section but the gpu ones (default); cuda: the gpu section (the small preset "
                         "on one card; --only gpu_sft: its SFT step, graphed, op by op, padded, whole model "
                         "compiled; --only gpu_attention: a 512-row decode step's attention, each way there is)")
    args = ap.parse_args(argv)

    names = {_section_name(f): f for f in SECTIONS}
    wanted = [n for item in args.only for n in item.split(",") if n]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if (any(n.startswith("gpu") for n in wanted) or args.device == "cuda") and not _cuda_available():
        ap.error("the gpu sections: each needs a CUDA device (--device cuda), and none is available")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if os.path.isdir(args.out) or not os.path.isdir(out_dir) and os.path.exists(out_dir):
        ap.error(f"--out {args.out}: not a file path (a directory, or under a file)")
    try:  # now, not after the benchmark
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        ap.error(f"--out {args.out}: cannot create {out_dir}: {e.strerror}")
    default = ["gpu"] if args.device == "cuda" else [n for n in names if not n.startswith("gpu")]
    selected = [f for f in SECTIONS if _section_name(f) in (wanted or default)]

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    all_metrics: dict[str, dict] = {}
    sections: dict[str, dict] = {}
    for fn in selected:
        name = _section_name(fn)
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        ms = fn(args.quick)
        dt = time.perf_counter() - t0
        sections[name] = {"seconds": dt, "metrics": ms}
        all_metrics.update(ms)
        print(f"[bench] {name} done in {dt:.1f}s", flush=True)

    print()
    print_table(all_metrics)
    result = {"machine": machine_info(args.device), "quick": args.quick, "sections": sections, "metrics": all_metrics}
    from runs import write_text
    write_text(args.out, json.dumps(result, indent=2))  # atomically
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
