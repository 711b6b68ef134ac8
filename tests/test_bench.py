"""bench.py's GPU section, rehearsed on CPU at toy sizes (this machine has no GPU: the path a GPU session
runs must have run before), and its device check."""
import math
import os
import time

import pytest
import torch

import bench


def test_gpu_section_rehearsal_on_cpu():
    import model
    import rollout
    settings = lambda: (model.DECODE_ATTENTION, model.KEY_BIAS, rollout.WINDOW, rollout.SPARE_SLOTS,
                        rollout.LAGGED_CHECK, rollout.CHECK_EVERY)
    before = settings()
    out = bench.gpu_metrics(torch.device("cpu"), quick=True, dry=True)
    assert settings() == before  # (each decode candidate's settings undone)
    for key in ("gpu.matmul_bf16_tflops", "gpu.sft_real_tokens_per_s", "gpu.sft_mfu", "gpu.decode_ms_per_step.8",
                "gpu.rl_sample_s", "gpu.rl_verify_s", "gpu.rl_update_s", "gpu.rl_step_s", "gpu.verify_step_s",
                "gpu.self_reward_overhead", "gpu.eval_completions_per_s", "gpu.sft_prefetch_thread_ratio",
                "gpu.sft_prefetch_process_ratio", "gpu.decode_step_ops", "gpu.decode_first_call_s.8",
                "gpu.decode_ms_per_step.1.eager_blocks", "gpu.decode_first_call_s.1.eager_blocks",
                "gpu.decode_split_ms.model", "gpu.decode_split_ms.loop", "gpu.decode_tokens_per_s.8.sync_check",
                "gpu.decode_tokens_per_s.8.masked_cudnn", "gpu.decode_tokens_per_s.8.no_spare_slots",
                "gpu.decode_tokens_per_s.8.window64", "gpu.decode_tokens_per_s.8.window16"):
        assert math.isfinite(out[key]["median"]) and out[key]["median"] > 0, key
    for key in ("gpu.decode_device_busy.8", "gpu.sft_device_busy"):
        assert 0 < out[key]["median"] <= 1, key
    assert out["gpu.sft_padded_tokens_per_s"]["median"] >= out["gpu.sft_real_tokens_per_s"]["median"]
    assert out["gpu.graph_vs_eager_same_tokens"]["median"] == 1.0  # on CPU both are the eager step
    # CPU: the math kernel with a mask, as the default there; the fixed loop with other windows and cache lengths
    for tail in (".default_again", ".masked_cudnn", ".no_spare_slots", ".window64", ".window16", ".sync_check"):
        assert out[f"gpu.decode_same_tokens.8{tail}"]["median"] == 1.0, tail
    assert out["gpu.compiled_vs_eager_same_tokens"]["median"] == 1.0  # (CPU's sampler compiles nothing)
    assert out["gpu.decode_step_vs_cached_forward"]["median"] < 1e-4  # float32 on CPU
    assert out["gpu.decode_compiled_vs_eager"]["median"] == 0.0  # (on CPU both decoders' blocks are eager)
    assert out["gpu.decode_tokens_per_s.8"]["target"] is None and "gpu.decode_ms_per_step.8.eager_blocks" not in out
    # the other decodes come last: a bench cut short by its time limit loses them, not the targets' figures
    keys = list(out)
    assert keys.index("gpu.decode_tokens_per_s.8.masked_cudnn") > keys.index("gpu.eval_completions_per_s")


def test_gpu_sft_section_rehearsal_on_cpu():
    out = bench.gpu_sft_metrics(torch.device("cpu"), quick=True, dry=True)
    # every variant measured (uncompiled in the rehearsal)
    for tail in ("", ".plain", ".padded", ".whole_model", ".batch512", ".graphs_eager"):
        for key in ("gpu.sft_first_step_s", "gpu.sft_real_tokens_per_s", "gpu.sft_mfu", "gpu.sft_device_busy"):
            assert math.isfinite(out[key + tail]["median"]) and out[key + tail]["median"] > 0, key + tail
    assert out["gpu.sft_real_tokens_per_s"]["target"] == ">= 1e6" and out["gpu.sft_mfu.whole_model"]["target"] is None
    assert "batch 32," in out["gpu.sft_real_tokens_per_s.batch512"]["note"]  # 4x the test preset's 8 problems
    assert out["gpu.sft_graphs_captured"]["median"] == 0  # (nothing is captured on CPU)
    assert "0 CUDA graph(s) captured" in out["gpu.sft_graphs_captured"]["note"]


def test_gpu_attention_section_rehearsal_on_cpu(capsys):
    out = bench.gpu_attention_metrics(torch.device("cpu"), quick=True, dry=True)
    for way in ("math", "matmul", "flex", "flash_key_bias"):  # each the same attention as float32 arithmetic
        assert out[f"gpu.attention_max_diff.32.{way}"]["median"] < 1e-5, way
    for way in ("math", "matmul", "flex", "flash_key_bias", "flash_unmasked", "read_kv"):
        assert out[f"gpu.attention_us.32.{way}"]["median"] > 0, way
    # a way the device lacks (the memory-efficient kernel on CPU) is a line, and the rest go on
    assert "[bench] attention efficient (window 32) failed: RuntimeError" in capsys.readouterr().out
    assert "gpu.attention_us.32.efficient" not in out


def test_device_busy_is_the_share_of_wall_time_with_an_op_running(capsys):
    """Half the call asleep (no op), half in matmuls: the busy share is the matmuls' share of the wall time."""
    a, idle, spent = torch.randn(256, 256), [], []

    def half_idle():
        t = time.perf_counter()
        time.sleep(0.1)
        idle.append(time.perf_counter() - t)
        t = time.perf_counter()
        while time.perf_counter() - t < 0.1:
            a @ a
        spent.append(time.perf_counter() - t)

    busy = bench._device_busy(half_idle, torch.device("cpu"), "test", host_ops=True)
    assert abs(busy - spent[0] / (idle[0] + spent[0])) < 0.1
    printed = capsys.readouterr().out
    assert "[profile] test: wall" in printed and "aten::matmul" in printed
    assert "[profile] test, traced on the host:" in printed and "aten::mm" in printed  # (matmul's own time)


def test_a_profile_that_fails_is_a_note_and_nan(capsys):
    """The profile is a diagnostic: its failure must not take the benchmark's measurements with it."""
    def fails():
        raise RuntimeError("no kernels here\nsecond line")

    assert math.isnan(bench._device_busy(fails, torch.device("cpu"), "a failing call"))
    assert "note: the profile of a failing call failed: RuntimeError: no kernels here\n" in capsys.readouterr().out


def test_device_cuda_without_cuda_is_one_line(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error path cannot happen")
    with pytest.raises(SystemExit) as e:
        bench.main(["--device", "cuda"])
    assert e.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # the SFT variants' section too
        bench.main(["--only", "gpu_sft"])
    assert e.value.code == 2 and "needs a CUDA device" in capsys.readouterr().err


def test_a_bad_out_path_is_refused_before_the_benchmark_runs(tmp_path, monkeypatch, capsys):
    """(Before: a traceback at the very end, the results lost.)"""
    monkeypatch.setattr(bench, "SECTIONS", [])  # nothing would run anyway: the check comes first
    afile = tmp_path / "f"
    afile.write_text("")
    for out in (str(tmp_path), str(afile / "x.json")):
        with pytest.raises(SystemExit) as e:
            bench.main(["--out", out])
        assert e.value.code == 2 and f"--out {out}: not a file path" in capsys.readouterr().err
    assert bench.main(["--out", str(tmp_path / "new" / "b.json")]) == 0  # a new directory is made
    assert '"metrics": {}' in (tmp_path / "new" / "b.json").read_text()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="VmHWM is Linux's (/proc)")
def test_peak_memory_is_the_measured_processs_own():
    """bench_memory reads its step's peak in a fresh process: a program started by a process holding
    512 MB reports its own peak, not its parent's (getrusage's ru_maxrss carries the parent's across the
    exec on Linux, which put 7,408 MB on a tiny RL step whose own peak is about 1,039)."""
    import inspect
    import subprocess
    import sys

    assert "bench.peak_rss_mb()" in inspect.getsource(bench.bench_memory)  # (what its child prints)

    held = bytearray(512 * 2 ** 20)  # (zeroed by bytearray: resident)
    here = bench.peak_rss_mb()
    assert here >= 512
    r = subprocess.run([sys.executable, "-c", "import bench; print(bench.peak_rss_mb())"], capture_output=True,
                       text=True, check=True, cwd=os.path.dirname(os.path.abspath(bench.__file__)))
    child = float(r.stdout)
    assert 0 < child < 200, child  # (a Python with only bench's standard-library imports)
    del held


def test_the_verifier_benchmarks_labelled_completions_are_judged_as_labelled():
    """verify.label_agreement (target 1.0): every right and wrong completion of the benchmark's workload as
    the reward judges it (the factored product, labelled right for an expanded gold, read 0.98 once the
    reward asked for the gold's form), and every unanswered one as having no answer."""
    import verify
    work = bench._verify_workload()
    assert len(work) == 200 and {True, False, None} <= {e for _, _, e in work}
    for completion, gold, expected in work:
        r, reason = verify.reward_with_reason(completion, gold)
        assert reason == verify.NO_ANSWER if expected is None else (r == 1.0) == expected, (completion[-80:], gold)
