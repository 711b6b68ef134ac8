"""scripts/: bad command lines end in one line on stderr and exit code 2 (make_tiny_hf.py, the audits),
and hf_parity.py answers --help without running; the shell scripts' plumbing with stand-ins for the programs
they run; gpu_summary.py on a check archived from a card."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import make_tiny_hf  # noqa: E402


def _script(name, *args, timeout=120):
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", name), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_make_tiny_hf_refuses_a_file_and_a_training_run(tmp_path, sft_dir, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    before = {n: open(os.path.join(sft_dir, n), "rb").read() for n in ("config.json", "tokenizer.json")}
    for out, fragment in ((afile, "is a file, not a directory"), (afile / "model", "is a file, not a directory"),
                          (sft_dir, "a training run's directory")):
        capsys.readouterr()
        assert make_tiny_hf.main([str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("make_tiny_hf.py: error: ") and fragment in err and len(err.strip().splitlines()) == 1
    assert afile.read_text() == "x"
    assert {n: open(os.path.join(sft_dir, n), "rb").read() for n in before} == before


@pytest.mark.parametrize("name", ["audit_split_seeds_tokens.py", "audit_bad_input.py"])
def test_audits_without_a_checkout_print_their_usage(name, tmp_path):
    for args in ((), (str(tmp_path / "missing"),), (ROOT, ROOT)):
        r = _script(name, *args)
        assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.startswith(f"usage: {name} [-h] REPO_DIR") and f"{name}: error: " in r.stderr
    r = _script(name, "--help")
    assert r.returncode == 0 and "checkout" in r.stdout  # the docstring


def test_hf_parity_answers_help_without_running(capsys):
    import hf_parity  # (in this process: as a process of its own, each call imported torch and transformers anew)
    with pytest.raises(SystemExit) as e:
        hf_parity.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("usage: hf_parity.py") and "Print the parity figures" in out
    assert "max |logit difference|" not in out  # nothing was built or compared
    with pytest.raises(SystemExit) as e:
        hf_parity.main(["--no_such_flag"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "unrecognized arguments" in err


def test_sft_shapes_counts_the_shapes_a_graphed_run_meets(capsys):
    import sft_shapes  # (its main() in this process, as a process of its own would run it)
    assert sft_shapes.main(["--config", "test", "--steps", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [f"rows a multiple of {m}" for m in (1, 4, 8)]
    for line in lines[1:]:  # every shape's rows a multiple of 4, then 8
        rows = [int(s.split("x")[0]) for s in line.split("(")[1].split(")")[0].split(", ")]
        assert all(n % int(line.split()[4].rstrip(":")) == 0 for n in rows), line
    share = [float(ln.split("real tokens ")[1].split()[0]) for ln in lines]
    assert 0 < share[2] <= share[1] <= share[0] <= 1  # rows of padding only add slots
    with pytest.raises(SystemExit) as e:
        sft_shapes.main(["--steps", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.strip() == "sft_shapes.py: error: --steps must be >= 1, got 0 (see --help)"


@pytest.mark.parametrize("script, stray, first_line", [
    ("scripts/gpu_check.sh", ["-x"], "The GPU check: one command, for one CUDA card"),
    ("demo_tiny.sh", ["seed0"], "The tiny demo on a CPU, for each seed in $SEEDS"),
    ("scripts/ddp_exit_loop.sh", ["0"], "Repeat three torchrun commands like those of tests/test_ddp.py")])
def test_shell_scripts_print_their_comment_for_help_and_refuse_stray_arguments(script, stray, first_line):
    """--help prints the script's opening comment and runs nothing (before: a check into a folder named
    --help, the 27-minute demo, a seq error); a stray argument is one line and exit code 2."""
    run = lambda *args: subprocess.run(["bash", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    h = run("--help")
    assert h.returncode == 0 and h.stderr == "" and h.stdout.startswith(first_line), h
    assert "set -" not in h.stdout and not any(ln.startswith("#") for ln in h.stdout.splitlines()), h.stdout
    r = run(*stray)
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1, r
    assert r.stderr.startswith(os.path.basename(script) + ": ") and r.stderr.endswith("(see --help)\n"), r.stderr


def test_demo_tiny_passes_train_flags_to_each_run_and_writes_where_it_says(tmp_path):
    """demo_tiny.sh's plumbing, with a stand-in `python` that logs its command lines (and writes the metrics
    file the script copies): TRAIN_FLAGS reach the three train.py runs, word for word and not evaluate.py;
    N_SAMPLES and N_PROBLEMS reach evaluate.py; runs under OUT, reports under RESULTS, a summary for two seeds."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    stub = bin_dir / "python"
    stub.write_text('#!/usr/bin/env bash\necho "$*" >> "%s"\n'
                    'for ((i = 1; i < $#; i++)); do [[ ${!i} == --out_dir ]] && { j=$((i + 1)); mkdir -p "${!j}"; '
                    'echo "{}" > "${!j}/metrics.jsonl"; }; done; exit 0\n' % log)
    stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", OUT=str(tmp_path / "o"), SEEDS="3 4",
               RESULTS=str(tmp_path / "res"), TRAIN_FLAGS="--sft_steps 5  --rl_steps 2", N_SAMPLES="4", N_PROBLEMS="7")
    r = subprocess.run(["bash", "demo_tiny.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    calls = log.read_text().splitlines()
    trains = [c for c in calls if c.startswith("train.py ")]
    assert len(trains) == 6 and all(c.endswith(" --sft_steps 5 --rl_steps 2") for c in trains), calls
    assert [c.split("--out_dir ")[1].split()[0] for c in trains[:3]] == [str(tmp_path / "o" / "seed3" / r)
                                                                         for r in ("sft", "grpo", "laser")]
    evals = [c for c in calls if c.startswith("evaluate.py ")]
    assert len(evals) == 3 and "--sft_steps" not in " ".join(evals)
    assert "--n_samples 4 --n_problems 7" in evals[0] and f"--out {tmp_path / 'res' / 'seed3'}" in evals[0]
    assert evals[2] == f"evaluate.py --aggregate {tmp_path / 'res' / 'seed3'} {tmp_path / 'res' / 'seed4'} " \
                       f"--out {tmp_path / 'res'}"
    assert json.load(open(tmp_path / "res" / "seed4" / "timing.json"))["seed"] == 4


def test_same_numbers_compares_two_results_and_answers_help(tmp_path):
    seed0 = os.path.join(ROOT, "results", "tiny", "seed0")
    r = _script("same_numbers.py", seed0, seed0)
    assert r.returncode == 0 and r.stdout.count(": identical\n") == 6, r
    other = tmp_path / "seed0"
    other.mkdir()
    for name in os.listdir(seed0):
        if name.endswith((".json", ".jsonl")):
            (other / name).write_bytes(open(os.path.join(seed0, name), "rb").read())
    with open(other / "laser_metrics.jsonl", "a") as f:
        f.write('{"step": 999}\n')
    evals = json.load(open(other / "eval.json"))
    evals["laser"]["accuracy_avg"] += 0.25
    evals["laser"]["sv_auroc"], evals["laser"]["new_metric"] = "x", 1.0
    evals["grpo"]["sv_ece"] = float("nan")  # (first in the file: NaN has no numeric difference, not the largest)
    del evals["sft"]["sv_f1"]
    json.dump(evals, open(other / "eval.json", "w"))
    r = _script("same_numbers.py", seed0, str(other))
    said = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert r.returncode == 1 and list(said.values()).count("identical") == 4, r
    assert said["laser_metrics.jsonl"].startswith("DIFFERENT: 1 value differs (the first: the whole (its length), 201 "
                                                  "vs 202"), said
    assert said["eval.json"].startswith("DIFFERENT: 3 values differ (the first: grpo/sv_ece, "), said
    assert "; the largest numeric difference 0.25, at laser/accuracy_avg)" in said["eval.json"]
    assert said["eval.json"].endswith("; only in A: 'sv_f1' (1); only in B: 'new_metric' (1)"), said
    r = _script("same_numbers.py", "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage: same_numbers.py")
    r = _script("same_numbers.py", seed0)
    assert r.returncode == 2 and r.stderr.startswith("same_numbers.py: error: ") and r.stderr.count("\n") == 1, r


def _check_dir(archive: str, out) -> str:
    """A GPU check's OUT rebuilt from one archived under results/small (its runs' files renamed back), and
    its RUNS."""
    runs = out / "small"
    for name in os.listdir(archive):
        src = os.path.join(archive, name)
        run = next((r for r in ("sft_alt", "sft", "laser", "grpo") if name.startswith(r + "_")), None)
        if run and name.endswith(("_metrics.jsonl", "_config.json")):
            (runs / run).mkdir(parents=True, exist_ok=True)
            (runs / run / name[len(run) + 1:]).write_bytes(open(src, "rb").read())
        elif os.path.isfile(src) and name not in ("summary.md", "README.md"):
            (out / name).write_bytes(open(src, "rb").read())
    if os.path.isdir(os.path.join(archive, "eval")):
        (out / "eval").mkdir()
        (out / "eval" / "eval.json").write_bytes(open(os.path.join(archive, "eval", "eval.json"), "rb").read())
    return str(runs)


def test_gpu_summary_rewrites_an_archived_checks_summary_with_its_targets(tmp_path):
    """scripts/gpu_summary.py on the files of the check archived in results/small/h100_6f2a32a: the summary
    the script wrote on the card then, line for line, with the targets block (new since) after its title."""
    import gpu_summary
    archive = os.path.join(ROOT, "results", "small", "h100_6f2a32a")
    lines = gpu_summary.summary(str(tmp_path), _check_dir(archive, tmp_path), "--sft_graphs false")
    then = open(os.path.join(archive, "summary.md"), encoding="utf-8").read().splitlines()
    start = lines.index("## Targets (issue 11, set on one H100)") - 1
    end = lines.index("| stage | wall-clock (s) | status |") - 1
    assert start == 1  # (after the title)
    assert lines[:start] + lines[end:] == then
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ")[1:] for ln in lines[start:end] if ln.startswith("| ")}
    assert rows["whole small run <= 360 s"] == ["140.8 s (SFT 1000 of the preset's 1000 steps, RL 100 of 400)",
                                                "met, for a shortened run |"]
    assert rows["SFT >= 1M real tokens/s"] == ["the training loop 1.126M, the benchmark 1.116M", "met |"]
    assert rows["SFT MFU >= 15%"] == ["18.4% (the benchmark)", "met |"]
    assert rows["decode >= 500k tokens/s at 512 rows"] == ["317.9k", "missed |"]
    assert rows["steady RL step <= 0.5 s"][1] == "met in the run |"
    assert rows["in-pass z_c readout <= 1.02x"] == ["1.003x", "met |"]
    decodes = [ln.split(" | ")[:3] for ln in lines[start:end] if ln.startswith("| .") or ln.startswith("| (")]
    assert decodes == [["| (default)", "317.9k", "1.000x"], ["| .sum_attention", "305.2k", "0.960x"],
                       ["| .eager_blocks", "274.3k", "0.863x"]]  # fastest first


def test_gpu_summary_of_a_bench_cut_short(tmp_path):
    """Only a bench's log, cut in the middle of a line: the metrics it printed, the targets it has no figure
    for said to be not measured; the script writes OUT/summary.md and refuses an OUT that is not a directory."""
    log = open(os.path.join(ROOT, "results", "small", "h100_5aacde5", "bench.log"), encoding="utf-8").read()
    decode = log.index('[metric] {"gpu.decode_tokens_per_s.512.eager_blocks"')
    (tmp_path / "bench.log").write_text(log[:decode + 60])
    r = _script("gpu_summary.py", str(tmp_path))
    assert r.returncode == 0 and r.stdout == (tmp_path / "summary.md").read_text(), r.stderr
    rows = {ln.split(" | ")[0][2:]: ln.split(" | ")[-1] for ln in r.stdout.splitlines() if ln.startswith("| ")}
    assert rows["decode >= 500k tokens/s at 512 rows"] == "missed |"
    assert rows["whole small run <= 360 s"] == rows["SFT >= 1M real tokens/s"] == "not measured |"
    assert "| .eager_blocks |" not in r.stdout and "| gpu.decode_tokens_per_s.2048 |" in r.stdout
    r = _script("gpu_summary.py", str(tmp_path / "missing"))
    assert r.returncode == 2 and r.stderr.strip().endswith("is not a directory (a GPU check's OUT)"), r


def test_gpu_check_runs_its_stages_in_order_and_writes_the_summary(tmp_path):
    """gpu_check.sh's plumbing, with stand-ins for `python` (each stage's command logged; train.py leaves a
    checkpoint and a step's record, bench.py its JSON; python -c and the summary run for real) and nvidia-smi:
    every stage in order with its limit, times.tsv a line each, the summary from what the stages left."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f"""#!/usr/bin/env bash
[[ $1 == -c || $1 == scripts/gpu_summary.py ]] && exec {sys.executable} "$@"
echo "$*" >> {log}
for ((i = 1; i < $#; i++)); do j=$((i + 1)); case ${{!i}} in
  --out_dir) mkdir -p "${{!j}}"; touch "${{!j}}/ckpt.pt"; echo '{{"step": 1, "time_rollout": 0.2, "time_verify": 0.02, "time_update": 0.05}}' > "${{!j}}/metrics.jsonl" ;;
  --out) [[ $1 == bench.py ]] && echo '{{"metrics": {{"gpu.decode_tokens_per_s.512": {{"median": 5.2e5, "spread": [5.1e5, 5.3e5], "unit": "tok/s", "target": ">= 5e5"}}}}}}' > "${{!j}}" ;;
esac; done; exit 0
""")
    (bin_dir / "nvidia-smi").write_text("#!/usr/bin/env bash\necho 'A card, 80 GiB, 1.0'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TRAIN_FLAGS="--rl_steps 3")
    r = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path / "o")], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r
    calls = log.read_text().splitlines()
    assert [c.split(" --out")[0] for c in calls] == [
        "bench.py --device cuda --quick", "train.py --config small --stage sft",
        "train.py --config small --stage rl --init " + str(tmp_path / "o" / "small" / "sft"),
        "evaluate.py " + str(tmp_path / "o" / "small" / "laser") + " --names laser --n_samples 16",
        "-m pytest -v -p no:cacheprovider -k on_cuda", "bench.py --only gpu_attention --quick",
        "train.py --config small --stage sft --sft_graphs false", "bench.py --only gpu_sft --quick",
        "-m pytest -v -p no:cacheprovider"]
    assert all(c.endswith(" --rl_steps 3") for c in calls if c.startswith("train.py")), calls
    times = [ln.split("\t") for ln in (tmp_path / "o" / "times.tsv").read_text().splitlines()]
    assert [t[0] for t in times] == ["bench", "sft", "rl", "evaluate", "cuda_tests", "attention", "sft_alt",
                                     "gpu_sft", "tests"]
    assert all(t[2] == "0" for t in times), times
    assert 185 <= int(times[0][3]) <= 190 and 315 <= int(times[1][3]) <= 320, times  # 540 s - each one's reserve
    summary = (tmp_path / "o" / "summary.md").read_text()
    assert summary.startswith("# GPU check: A card, 80 GiB, 1.0, torch ?, CUDA ?\n") and r.stdout.endswith(
        f"wrote {tmp_path / 'o'}/summary.md\n")
    assert "| decode >= 500k tokens/s at 512 rows | 520.0k | met |" in summary
    assert "LaSeR RL: 1 steps, median step 0.270 s" in summary


def test_gpu_checks_later_stages_leave_each_other_their_thresholds():
    """A stage after the evaluation runs if THRESHOLD s are left, for at most the time left but RESERVE s. Each
    threshold leaves its stage 50 s at least. The card's tests come first and reserve the test suite's threshold
    (what they check has not run on a card; the stages after them measure again); among the attention, the SFT
    stage again and the SFT step's variants each reserve leaves the next one's threshold (the card's tests once
    reserved 165 s where the attention's threshold was 170: tests run to their limit skipped it); the SFT step's
    variants take all that is left."""
    import re
    text = open(os.path.join(ROOT, "scripts", "gpu_check.sh"), encoding="utf-8").read()
    chain = {name: (int(threshold), int(reserve)) for threshold, name, reserve in
             re.findall(r"END - EPOCHSECONDS < (\d+) \)\) \|\|\n\s*stage (\w+) (\d+) ", text)}
    assert list(chain) == ["cuda_tests", "attention", "sft_alt", "gpu_sft", "tests"], chain
    assert all(threshold - reserve >= 50 for threshold, reserve in chain.values()), chain
    assert chain["cuda_tests"][1] == chain["tests"][0] and chain["gpu_sft"][1] == 0, chain
    assert chain["attention"][1] >= chain["sft_alt"][0] and chain["sft_alt"][1] >= chain["gpu_sft"][0], chain


def test_gpu_summary_ranks_the_decodes_against_the_default_timed_beside_them():
    """Where the bench timed the default decode again beside the other decodes (.default_again), they are
    ranked against that figure, not the default's own, taken minutes before; the target reads the default's."""
    import gpu_summary
    m = lambda v: {"median": v, "spread": [v, v], "unit": "tok/s"}
    metrics = {gpu_summary.DECODE: m(5.1e5), gpu_summary.DECODE + ".default_again": m(4.8e5),
               gpu_summary.DECODE + ".window16": m(4.92e5), gpu_summary.DECODE + ".sync_check": m(4.56e5)}
    lines = gpu_summary.targets(metrics, {}, [], [], {"sft_steps": 1000, "rl_steps": 400})
    assert "| decode >= 500k tokens/s at 512 rows | 510.0k | met |" in lines
    table = lines[lines.index("| decode | tokens/s | against .default_again | cuDNN share |") + 2:]
    assert table == ["| (default) | 510.0k | 1.062x | - |", "| .window16 | 492.0k | 1.025x | - |",
                     "| .default_again | 480.0k | 1.000x | - |", "| .sync_check | 456.0k | 0.950x | - |"]
    # a NaN figure is no figure (it once made min() of nothing raise)
    lines = gpu_summary.targets({"gpu.sft_real_tokens_per_s": m(float("nan"))}, {}, [], [], {"sft_steps": 1,
                                                                                              "rl_steps": 1})
    assert "| SFT >= 1M real tokens/s | - | not measured |" in lines


def test_gpu_summary_says_when_the_card_is_not_the_one_the_targets_were_set_on():
    """The targets were set on an H100 and the pool lends H200s: the summary of a check on another card says
    under the targets' heading that its verdicts are that card's; on an H100, or a card not named, it says
    nothing."""
    import gpu_summary
    m = {gpu_summary.DECODE: {"median": 5.2e5, "spread": [5.2e5, 5.2e5], "unit": "tok/s"}}
    said = lambda device: [ln for ln in gpu_summary.targets(m, {}, [], [], {"sft_steps": 1, "rl_steps": 1}, device)
                           if "not an H100" in ln]
    assert said("NVIDIA H200, 143771 MiB, 570.124.06") == [
        "Measured on NVIDIA H200, 143771 MiB, 570.124.06, not an H100: each verdict below is this card's; report "
        "its figures as this card's, not as the targets met or missed."]
    assert said("NVIDIA H100 80GB HBM3") == said("") == []
