"""study.py diagnose: rank correlation, within-problem AUROCs of r_s / answer frequency / log-likelihood,
best-of-N failures, r_s over training, and the command line."""
import json
import math
import os
import subprocess
import sys
import types

import numpy as np

import study
from runs import load_checkpoint


def _record(scores, correct, answers, logp=None, family="arithmetic", level=1):
    logp = logp or [0.0] * len(scores)
    return {"family": family, "level": level, "gold": "1", "problem": "p",
            "greedy": {"answer": "1", "correct": True},
            "samples": [{"answer": a, "correct": c, "r_s": s, "mean_logp": lp, "finished": True}
                        for s, c, a, lp in zip(scores, correct, answers, logp)]}


def eq(a, b):
    return a == b


def test_spearman():
    assert study.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert study.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isclose(study.spearman([1, 2, 2, 3], [1, 2, 2, 3]), 1.0)
    assert math.isnan(study.spearman([1, 1, 1], [1, 2, 3]))


def test_within_problem_aurocs_and_failures():
    # r_s ranks the right answer first; the frequent answer is wrong; log-likelihood is uninformative
    good = _record([0.9, 0.1, 0.2, 0.3], [True, False, False, False], ["1", "2", "2", "2"])
    # r_s picks a wrong answer although a correct sample exists: a best-of-N failure
    bad = _record([0.1, 0.8, 0.2, 0.3], [True, False, True, False], ["1", "5", "1", "6"], level=2)
    d = study.diagnose([good, bad], equiv=eq)
    assert d["n_mixed_problems"] == 2
    assert math.isclose(d["within_auroc"]["r_s"], (1.0 + 0.0) / 2)
    assert math.isclose(d["within_auroc"]["freq"], (0.0 + 1.0) / 2)  # frequent answer wrong, then right
    assert math.isclose(d["within_auroc"]["logp"], 0.5)
    assert d["n_failures"] == 1 and d["failures"][0]["picked"] == "5" and d["failures_picked_rarer"] == 1
    assert math.isclose(d["failures"][0]["picked_freq"], 0.25) and math.isclose(d["failures"][0]["correct_freq"], 0.5)
    assert d["by_group"]["arithmetic L1"]["best_of_n"] == 1.0 and d["by_group"]["arithmetic L2"]["best_of_n"] == 0.0
    assert math.isclose(d["spearman_rs_freq"], np.mean([study.spearman([0.9, 0.1, 0.2, 0.3], [.25, .75, .75, .75]),
                                                        study.spearman([0.1, 0.8, 0.2, 0.3], [.5, .25, .5, .25])]))
    # records without lengths (written before evaluate.py kept them) leave the length rows blank
    assert math.isnan(d["within_auroc"]["length"]) and math.isnan(d["spearman_rs_length"])


def test_length_diagnostics():
    """The right answers are the short ones in one problem and the long ones in the other; r_s follows length."""
    a = _record([0.9, 0.1, 0.2, 0.3], [True, False, False, False], ["1", "2", "2", "2"])
    b = _record([0.1, 0.8, 0.2, 0.3], [True, False, True, False], ["1", "5", "1", "6"])
    for rec, lengths in ((a, [10, 40, 30, 20]), (b, [50, 10, 40, 20])):
        for s, n in zip(rec["samples"], lengths):
            s["length"] = n
    d = study.diagnose([a, b], equiv=eq)
    assert math.isclose(d["within_auroc"]["length"], (0.0 + 1.0) / 2)
    assert math.isclose(d["spearman_rs_length"], np.mean([study.spearman([0.9, 0.1, 0.2, 0.3], [10, 40, 30, 20]),
                                                          study.spearman([0.1, 0.8, 0.2, 0.3], [50, 10, 40, 20])]))


def test_truncated_samples_are_left_out():
    rec = _record([0.9, float("nan"), 0.2], [True, False, False], ["1", None, "3"])
    rec["samples"][1]["finished"] = False
    sc = study.problem_scores(rec, eq)
    assert len(sc["r_s"]) == 2 and list(sc["correct"]) == [True, False]
    assert list(sc["freq"]) == [0.5, 0.5]  # shares among the answered samples


def test_cli_writes_diagnostics(tmp_path):
    recs = {"laser": [_record([0.9, 0.1, 0.2, 0.3], [True, False, False, False], ["1", "2", "2", "2"])]}
    (tmp_path / "records.json").write_text(json.dumps(recs))
    lines = [{"step": 0, "eval_acc": 0.1}] + [{"step": s, "rs_correct": 0.5, "rs_incorrect": 0.1, "sv_auroc": 0.7}
                                              for s in range(1, 31)]
    (tmp_path / "laser_metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    assert study.main(["diagnose", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "diagnostics.json").read_text())
    assert [w["steps"] for w in out["rs_over_training"]["laser"]] == ["1-25", "26-30"]
    md = (tmp_path / "diagnostics.md").read_text()
    assert "within-problem AUROC of r_s" in md
    assert f"per family and level ({tmp_path})" in md  # the per-group tables name the directory they come from
    assert study.main(["diagnose", str(tmp_path / "missing")]) == 2


def test_grid_entries_become_train_flags():
    assert study.parse_grid(["base", "a05:alpha=0.5,tau=0"]) == {"base": [], "a05": ["--alpha", "0.5", "--tau", "0"]}
    # values that hold commas, as --levels and --families take them (before: "expected key=value, got '2'")
    assert study.parse_grid(["lv:levels=1,2,rl_steps=5,families=linear,word"]) == {
        "lv": ["--levels", "1,2", "--rl_steps", "5", "--families", "linear,word"]}
    assert study.train_config(study.parse_grid(["lv:levels=1,2"])["lv"], "lv").levels == "1,2"
    try:
        study.parse_grid(["bad:alpha"])
    except ValueError as e:
        assert "key=value" in str(e)
    else:
        raise AssertionError("a grid entry without '=' must be refused")


def _in_process(monkeypatch):
    """study's commands (python train.py ..., python evaluate.py ...) run by their main() in this process:
    the same work without a process each, whose imports would cost seconds (test_run_trains_evaluates_and_reuses
    runs them as processes)."""
    import evaluate
    import train

    def run(cmd, check):
        assert cmd[0] == sys.executable and check and os.path.dirname(cmd[1]) == study.HERE, cmd
        script, args = os.path.basename(cmd[1]), cmd[2:]
        try:
            if script == "train.py":
                train.main(args)  # (it returns its run directory; an error leaves by SystemExit, as from the process)
                code = 0
            else:
                assert script == "evaluate.py", cmd
                code = evaluate.main(args)
        except SystemExit as e:
            code = e.code
        if code:
            raise subprocess.CalledProcessError(code, cmd)
    stand_in = types.SimpleNamespace(run=run, CalledProcessError=subprocess.CalledProcessError)
    monkeypatch.setattr(study, "subprocess", stand_in)  # (study's name only: torch's own subprocess calls untouched)


def test_run_trains_evaluates_and_reuses(sft_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # not the repository root: train.py and evaluate.py are found beside study.py
    out = "study"
    argv = ["run", "--sft", sft_dir, "--grid", "one:rl_steps=1,n_val=4", "--out", out, "--config", "test"]
    assert study.main(argv) == 0
    table = json.loads((tmp_path / "study" / "study_validation.json").read_text())
    assert set(table) == {"one"} and len(table["one"]["accuracy_avg"]) == 1
    ckpt = tmp_path / "study" / "one" / "seed0" / "ckpt.pt"
    report = tmp_path / "study" / "one" / "seed0" / "eval_validation" / "eval.json"
    stamp, evaluated = ckpt.stat().st_mtime_ns, report.stat().st_mtime_ns
    assert study.main(argv) == 0 and ckpt.stat().st_mtime_ns == stamp  # a finished run is reused, not retrained
    assert report.stat().st_mtime_ns == evaluated  # and so is its evaluation, newer than the checkpoint
    _in_process(monkeypatch)  # (the processes have been seen to run: from here on, their main() in this one)
    os.utime(ckpt)  # a checkpoint newer than its evaluation is evaluated again
    assert study.main(argv) == 0 and report.stat().st_mtime_ns > evaluated
    assert "| one |" in (tmp_path / "study" / "study_validation.md").read_text()
    # the same entry name asking for other settings: refused, the run neither reused nor trained over
    stamp = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    argv[4] = "one:rl_steps=1,n_val=4,alpha=0.5"
    err = _fails(capsys, argv)
    assert "alpha 0.1 there, 0.5 asked" in err and os.path.join("study", "one", "seed0") in err
    assert "delete that run directory or use another --out" in err and ckpt.stat().st_mtime_ns == stamp


def test_run_resumes_an_unfinished_run(sft_dir, tmp_path, monkeypatch, capsys):
    """A run stopped before its --rl_steps (here by --halt_at, an execution flag) is resumed, not refused
    (train.py never starts afresh over a run) nor reused as it is."""
    _in_process(monkeypatch)
    out = str(tmp_path / "study")
    argv = ["run", "--sft", sft_dir, "--grid", "two:rl_steps=2,n_val=4,halt_at=1", "--out", out, "--config", "test"]
    assert study.main(argv) == 0
    run = os.path.join(out, "two", "seed0")
    assert load_checkpoint(run)["step"] == 1
    argv[4] = "two:rl_steps=2,n_val=4"
    capsys.readouterr()
    assert study.main(argv) == 0 and load_checkpoint(run)["step"] == 2
    out = capsys.readouterr().out  # study's command, then train.py's own word that it went on from step 1
    said = [ln for ln in out.splitlines() if ln.startswith("=== two seed 0: python train.py ")]
    assert len(said) == 1 and said[0].endswith(" --resume"), out
    assert "resumed RL at step 1" in out and not os.path.exists(run + ".1")  # (no fresh start over the run)


def _fails(capsys, argv):
    """study.main(argv) ends in one line on stderr and exit code 2; returns that line."""
    capsys.readouterr()
    assert study.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("study.py: error: "), err
    return err


def _no_subprocess(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"nothing should run: {a}")
    monkeypatch.setattr(study.subprocess, "run", refuse)


def test_run_compares_a_runs_saved_settings_but_how_it_ran(sft_dir, tmp_path, monkeypatch, capsys):
    """A run directory already there is reused only with the settings its grid entry asks for; flags of
    how a run executes (device, threads, micro-batches, its own out_dir) and the spelling of paths aside."""
    import dataclasses

    import torch

    from runs import load_checkpoint, write_json

    run = tmp_path / "study" / "one" / "seed0"
    args = ["--config", "test", "--stage", "rl", "--algo", "laser", "--seed", "0", "--init", sft_dir,
            "--out_dir", str(run), "--rl_steps", "1"]
    wanted = study.train_config(args, "one")
    assert wanted.rl_steps == 1 and wanted.n_layer == 1 and wanted.init == sft_dir  # the preset, then the flags
    same = dataclasses.replace(wanted, out_dir="elsewhere/laser", device="cpu", threads=1, micro_batch=2,
                               init=sft_dir + os.sep + ".")
    ck = {**load_checkpoint(sft_dir), "stage": "rl", "step": 1, "config": dataclasses.asdict(same)}
    run.mkdir(parents=True)
    torch.save(ck, run / "ckpt.pt")
    assert study.existing_run(str(run), wanted, "one") == 1  # reused as it is
    other = dataclasses.replace(same, alpha=0.5, group_size=2, init=str(tmp_path))
    torch.save({**ck, "config": dataclasses.asdict(other)}, run / "ckpt.pt")
    _no_subprocess(monkeypatch)
    err = _fails(capsys, ["run", "--sft", sft_dir, "--grid", "one:rl_steps=1", "--out", str(tmp_path / "study"),
                          "--config", "test"])
    assert "alpha 0.5 there, 0.1 asked" in err and "group_size 2 there, 4 asked" in err and "init" in err
    # a run that has a config.json but no checkpoint yet is compared too (not trained over)
    (run / "ckpt.pt").unlink()
    write_json(str(run / "config.json"), dataclasses.asdict(other))
    assert "alpha 0.5 there" in _fails(capsys, ["run", "--sft", sft_dir, "--grid", "one:rl_steps=1",
                                                 "--out", str(tmp_path / "study"), "--config", "test"])


def test_run_checks_every_entry_before_training(sft_dir, tmp_path, monkeypatch, capsys):
    _no_subprocess(monkeypatch)
    base = ["run", "--sft", sft_dir, "--out", str(tmp_path / "s"), "--config", "test", "--grid", "fine:alpha=0.5"]
    assert "grid entry 'bad'" in _fails(capsys, base + ["bad:no_such_flag=1"])  # an unknown flag, in the last entry
    assert "grid entry 'bad'" in _fails(capsys, base + ["bad:alpha=-1"])  # a value out of range
    assert "key=value" in _fails(capsys, base + ["bad:alpha"])
    assert "RL trains the model of --init" in _fails(capsys, base + ["bad:n_layer=2"])  # train.py would refuse it
    # the model fields train.py records for RL are --init's (the test preset's 32), not the tiny preset's 128
    args = ["--config", "tiny", "--stage", "rl", "--init", sft_dir, "--out_dir", str(tmp_path / "r")]
    assert study.train_config(args, "x").n_embd == 32
    assert "given twice" in _fails(capsys, base + ["fine:alpha=1"])
    assert "both seed 0" in _fails(capsys, ["run", "--sft", sft_dir, sft_dir, "--grid", "a", "--out",
                                            str(tmp_path / "s"), "--config", "test"])
    assert not (tmp_path / "s").exists()


def test_out_that_is_a_file_is_refused_before_any_work(sft_dir, tmp_path, monkeypatch, capsys):
    _no_subprocess(monkeypatch)
    monkeypatch.setattr(study, "probe", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no sampling")))
    recs = {"laser": [_record([0.9, 0.1], [True, False], ["1", "2"])]}
    (tmp_path / "records.json").write_text(json.dumps(recs))
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out in (str(afile), str(afile / "below")):
        for argv in (["diagnose", str(tmp_path)], ["run", "--sft", sft_dir, "--grid", "a", "--config", "test"],
                     ["probe", sft_dir]):
            assert "is a file, not a directory" in _fails(capsys, argv + ["--out", out])
    assert afile.read_text() == "x"


def test_probe_counts_are_checked_up_front(sft_dir, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "p")
    for flag, value in (("--n_fit", "0"), ("--n_fit", "-3"), ("--n_samples", "0")):
        assert f"{flag} must be >= 1" in _fails(capsys, ["probe", sft_dir, flag, value, "--out", out])
    assert "no such run directory" in _fails(capsys, ["probe", sft_dir, str(tmp_path / "nope"), "--out", out])
    # a model whose samples never finish leaves no EOS state to fit on: one line, not a numpy error
    empty = {"problem": np.zeros(0, int), "correct": np.zeros(0, bool), "logp_zc": np.zeros(0),
             "h": np.zeros((0, 32)), "blocks": np.zeros((0, 1, 32))}
    monkeypatch.setattr(study, "eos_features", lambda *a, **k: empty)
    assert "none of the fitting problems' samples finished" in _fails(capsys, ["probe", sft_dir, "--n_fit", "2",
                                                                               "--out", out])
    assert not os.path.exists(out)


def test_diagnose_refuses_malformed_and_empty_records(tmp_path, capsys):
    good = _record([0.9, 0.1, 0.2, 0.3], [True, False, False, False], ["1", "2", "2", "2"])
    cases = [([good], "expected a JSON object"),
             ({}, "no runs' records"),
             ({"laser": []}, "non-empty list"),
             ({"laser": [1, 2]}, "JSON objects with a 'samples' list"),
             ({"laser": [{k: v for k, v in good.items() if k != "samples"}]}, "'samples'"),
             ({"laser": [{**good, "samples": [{"answer": "1"}]}]}, "has no 'correct' field"),
             ({"laser": [{k: v for k, v in good.items() if k != "level"}]}, "no 'level' field"),
             ({"laser": [{**good, "samples": [{**good["samples"][0], "r_s": "high"}]}]}, "high")]
    for i, (recs, fragment) in enumerate(cases):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "records.json").write_text(json.dumps(recs))
        err = _fails(capsys, ["diagnose", str(d)])
        assert fragment in err and "records.json" in err, (recs, err)
        assert not (d / "diagnostics.json").exists()
    (tmp_path / "d0" / "records.json").write_text(json.dumps({"grpo": [good]}))
    (tmp_path / "d1" / "records.json").write_text(json.dumps({"laser": [good]}))
    assert "every DIR must hold the same runs" in _fails(capsys, ["diagnose", str(tmp_path / "d0"), str(tmp_path / "d1")])
    (tmp_path / "d1" / "laser_metrics.jsonl").write_text('{"step": 1, "rs_correct": 0.5}\n{"step": 2, trunc\n')
    assert "laser_metrics.jsonl: unreadable metrics log" in _fails(capsys, ["diagnose", str(tmp_path / "d1")])


def test_study_plot_and_its_notice_without_matplotlib(tmp_path, monkeypatch, capsys):
    table = {name: {k: [0.3 + 0.1 * i, 0.35 + 0.1 * i, float("nan")] for k in study.STUDY_METRICS}
             for i, name in enumerate(["base", "alpha05"])}
    path = str(tmp_path / "study_validation.png")
    assert study.plot_grid(table, "validation", path) and os.path.getsize(path) > 1000
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # as if it were not installed
    assert not study.plot_grid(table, "validation", str(tmp_path / "none.png"))
    assert "matplotlib not installed" in capsys.readouterr().out and not os.path.exists(tmp_path / "none.png")


def test_probe_within_problems_learns_what_tells_samples_apart_not_difficulty():
    """Synthetic samples whose correctness depends on the problem's difficulty (shared by its samples)
    and on a per-sample feature: the within-problem probe finds the per-sample feature, and a
    difficulty-only score ranks a problem's samples at chance."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(200), 8)
    difficulty, own = rng.normal(size=200)[g], rng.normal(size=len(g))
    y = rng.random(len(g)) < 1 / (1 + np.exp(-(2 * difficulty + 1.5 * own)))
    x = np.stack([difficulty, own, rng.normal(size=len(g))], 1)
    pooled, within = study.fit_probe(x, y), study.fit_probe(x, y, g)
    assert study.within_auroc(within(x), y, g)[0] > 0.75
    assert study.within_auroc(difficulty, y, g)[0] == 0.5  # ties within a problem
    assert study.auroc(pooled(x), y) > study.auroc(within(x), y) + 0.05  # only the pooled probe uses difficulty


def test_eos_features_are_the_hidden_state_the_readout_reads(sft_dir):
    """The probe's feature of a sample is the final hidden state at its EOS: the output head applied to it
    gives the sampler's log p(z_c) back."""
    import torch

    import tasks
    from runs import load_run

    model, tok, ck = load_run(sft_dir)
    f = study.eos_features(model, tok, study.run_config(ck), tasks.make_split("validation", 6, 0), 8, seed=0)
    assert len(f["correct"]) > 0 and f["h"].shape[0] == len(f["problem"]) == len(f["logp_zc"])
    with torch.no_grad():
        logp = torch.log_softmax(model.lm_head(torch.tensor(f["h"])), -1)[:, tok.zc_id].numpy()
    np.testing.assert_allclose(logp, f["logp_zc"], atol=1e-4)
    assert f["blocks"].shape == (len(f["h"]), len(model.blocks), f["h"].shape[1])
    with torch.no_grad():  # the last block's output, normed, is the final state
        np.testing.assert_allclose(model.norm_f(torch.tensor(f["blocks"][:, -1])).numpy(), f["h"], atol=1e-5)
    assert f["problem"].min() >= 0 and f["problem"].max() < 6


def test_mean_std_over_seeds_says_when_a_seed_has_no_value():
    assert study._mean_std([0.5, 0.7]) == "0.600 ± 0.141"
    assert study._mean_std([0.5, float("nan"), 0.7]) == "0.600 ± 0.141 (2 of 3 seeds)"
    assert study._mean_std([float("nan")] * 2) == "-"


def test_spearman_gives_ties_their_average_rank():
    # ranks of x with the tie averaged: 1, 2.5, 2.5, 4; of y: 1, 2, 3, 4 -> r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert math.isclose(study.spearman([1, 2, 2, 3], [1, 2, 3, 4]), 3 / math.sqrt(10))


def test_a_problem_without_a_correct_sample_is_no_best_of_n_failure():
    """A failure of best-of-N is a problem with a correct sample where r_s picked a wrong one; where every
    sample is wrong there is nothing r_s could have picked right."""
    none_right = _record([0.9, 0.1, 0.2], [False, False, False], ["2", "3", "4"])
    d = study.diagnose([none_right], equiv=eq)
    assert d["n_failures"] == 0 and d["failures"] == []


def test_within_auroc_counts_only_problems_with_both_classes():
    scores, correct = np.array([0.9, 0.1, 0.5, 0.4, 0.3, 0.2]), np.array([True, False, False, False, True, True])
    value, n = study.within_auroc(scores, correct, np.array([0, 0, 1, 1, 2, 2]))
    assert (value, n) == (1.0, 1)  # problem 0 only: problem 1 has no right sample, problem 2 no wrong one
