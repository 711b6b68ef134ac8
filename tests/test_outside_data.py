r"""Outside data end to end: scripts/convert_data.py (GSM8K and MATH files into our JSON lines), the
--data_mix share of SFT batches and RL steps (a pure function of seed and step), the length checks at
load (counts printed, one-line error when nothing fits), c_ref calibration on RL's mix, a bit-identical
resume, and evaluate.py --data_jsonl on the chosen split's problems. tests/data holds the hand-written
samples: outside_sample.jsonl has 12 problems, 8 in the train split (one with a prompt too long for the
test preset, one with a solution too long for an SFT row), 3 in test and 1 in validation."""
import dataclasses
import importlib.util
import json
import os

import pytest
import torch

import config
import evaluate
import rollout
import runs
import tasks
import train
import verify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
SAMPLE = os.path.join(DATA, "outside_sample.jsonl")
T = ["--config", "test"]

_spec = importlib.util.spec_from_file_location("convert_data", os.path.join(ROOT, "scripts", "convert_data.py"))
convert_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(convert_data)


def _convert(capsys, *argv):
    code = convert_data.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _rows(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


# ------------------------------------------------------------------------------------------ converter

def test_gsm8k_answers_solutions_and_annotations(tmp_path, capsys):
    out = str(tmp_path / "g.jsonl")
    code, printed, _ = _convert(capsys, "--format", "gsm8k", os.path.join(DATA, "gsm8k_sample.jsonl"), "--out", out)
    assert code == 0 and "read 5 gsm8k records" in printed and "wrote 5" in printed and "skipped 0" in printed
    rows = _rows(out)
    assert [r["answer"] for r in rows] == ["37", "1200", "150", "30", "-5"]  # "#### 1,200" loses its comma
    assert rows[0]["solution"] == ("Mia has 3 * 14 = 42 apples.\nAfter eating 5, she has 42 - 5 = 37 apples.\n"
                                   "\\boxed{37}")
    assert rows[2]["solution"].splitlines()[1] == "He earns 15 * 10 = $150."
    for r in rows:
        assert "<<" not in r["solution"] and ">>" not in r["solution"] and "####" not in r["solution"]
        assert r["solution"].endswith(f"\\boxed{{{r['answer']}}}")
        assert verify.reward(r["solution"], r["answer"]) == 1.0  # the checker reads the gold back
        assert r["family"] == "gsm8k"
    assert [p.answer for p in tasks.load_jsonl(out)] == [r["answer"] for r in rows]  # train.py reads it
    assert "by canonical key: train 4, validation 0, test 1" in printed


def test_math_last_box_nested_braces_fbox_levels_and_types(tmp_path, capsys):
    out = str(tmp_path / "m.jsonl")
    code, printed, _ = _convert(capsys, "--format", "math", os.path.join(DATA, "math_sample.jsonl"), "--out", out)
    assert code == 0 and "wrote 7" in printed
    rows = _rows(out)
    assert [r["answer"] for r in rows] == ["\\frac{5}{6}", "9", "13", "6", "\\frac{\\sqrt{3}}{2}", "56", "6"]
    assert [r["level"] for r in rows] == [1, 2, 1, 2, 1, 0, 1]  # "Level ?" -> 0
    assert [r["family"] for r in rows] == ["prealgebra", "algebra", "prealgebra", "number_theory", "geometry",
                                           "prealgebra", "counting_probability"]
    src = _rows(os.path.join(DATA, "math_sample.jsonl"))
    assert [r["solution"] for r in rows] == [s["solution"] for s in src]  # kept as they are
    # a directory of .json files (MATH's layout), searched recursively, in sorted order
    for i, rec in enumerate(src[:3]):
        d = tmp_path / "MATH" / "train" / rec["type"].lower()
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.json").write_text(json.dumps(rec))
    out2 = str(tmp_path / "m2.jsonl")
    assert _convert(capsys, "--format", "math", str(tmp_path / "MATH"), "--out", out2)[0] == 0
    assert sorted(r["answer"] for r in _rows(out2)) == ["13", "9", "\\frac{5}{6}"]


def test_bad_records_are_skipped_with_a_count_or_stop_strict(tmp_path, capsys):
    good = {"question": "Tom has 2 cats and 3 dogs. How many pets?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}
    lines = [json.dumps(good), "{oops", json.dumps({"question": "q"}), json.dumps({"question": "q", "answer": "5"}),
             json.dumps({"question": "q", "answer": "x ####  "}), "[1]", ""]
    src = tmp_path / "g.jsonl"
    src.write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "o.jsonl")
    code, printed, _ = _convert(capsys, "--format", "gsm8k", str(src), "--out", out)
    assert code == 0 and "read 6 gsm8k records" in printed and "wrote 1" in printed and "skipped 5" in printed
    for where, why in [(2, "invalid JSON"), (3, "'answer' missing"), (4, "no '####'"), (5, "nothing after '####'"),
                       (6, "expected a JSON object")]:
        assert f"g.jsonl:{where}: {why}" in printed, (where, printed)
    assert [r["answer"] for r in _rows(out)] == ["5"]
    code, _, err = _convert(capsys, "--format", "gsm8k", str(src), "--out", out, "--strict")
    assert code == 2 and err.count("\n") == 1 and "g.jsonl:2: invalid JSON" in err
    m = tmp_path / "m.jsonl"
    m.write_text(json.dumps({"problem": "p", "solution": "no box here, the answer is 4"}) + "\n"
                 + json.dumps({"problem": "p", "solution": "so \\boxed{\\frac{1}{2}"}) + "\n")
    code, _, err = _convert(capsys, "--format", "math", str(m), "--out", out)
    assert code == 2 and "none of its 2 records could be converted" in err and "m.jsonl:1: no \\boxed{}" in err
    for argv, fragment in [(["--format", "gsm8k", str(tmp_path / "nope.jsonl")], "no such file"),
                           (["--format", "gsm8k", str(tmp_path)], "is a directory"),
                           (["--format", "gsm8k", str(src), "--out", str(src)], "is the input file")]:
        code, _, err = _convert(capsys, "--out", out, *argv)
        assert code == 2 and fragment in err and err.count("\n") == 1, (argv, err)
    with pytest.raises(SystemExit) as e:
        convert_data.main(["--format", "csv", str(src), "--out", out])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ the mix

def _outside():
    return [p for p in tasks.load_jsonl(SAMPLE) if tasks.split_of(p.key) == "train"]


def test_out_that_is_a_directory_is_refused_and_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, printed, err = _convert(capsys, "--format", "gsm8k", os.path.join(DATA, "gsm8k_sample.jsonl"), "--out", str(out))
    assert code == 2 and err.startswith("convert_data.py: error: ") and "is a directory" in err
    assert len(err.strip().splitlines()) == 1 and printed == ""
    assert os.listdir(tmp_path) == ["out"] and os.listdir(out) == []  # no <out>.tmp nor any temporary file
    code, _, err = _convert(capsys, "--format", "gsm8k", os.path.join(DATA, "gsm8k_sample.jsonl"),
                            "--out", str(tmp_path / "g.jsonl"))
    assert code == 0 and sorted(os.listdir(tmp_path)) == ["g.jsonl", "out"]  # written atomically, nothing beside it


def test_train_problems_mix_is_a_pure_function_of_stream_and_step():
    cfg, outside = config.Config(**config.PRESETS["test"]), _outside()
    fam, lv = config.families_levels(cfg)
    plain = config.train_problems(cfg, 3, 8, "rl-0", [])
    assert plain == tasks.train_batch(3, 8, "rl-0", fam, lv)  # no outside data: the generated stream as before
    half = config.train_problems(cfg, 3, 8, "rl-0", outside)
    assert half[:4] == tasks.train_batch(3, 4, "rl-0", fam, lv) and all(p in outside for p in half[4:])
    assert half == config.train_problems(cfg, 3, 8, "rl-0", outside)  # pure: a resume sees the same
    assert {p.problem for s in range(20) for p in config.train_problems(cfg, s, 8, "rl-0", outside)[4:]} == \
        {p.problem for p in outside}  # every outside problem is drawn over a few steps
    for mix, n, want in [(1.0, 8, 8), (0.0, 8, 0), (0.5, 7, 4), (0.25, 8, 2), (0.01, 2, 1), (0.9, 10, 9)]:
        got = config.train_problems(dataclasses.replace(cfg, data_mix=mix), 0, n, 0, outside)
        assert len(got) == n and sum(p in outside for p in got) == want, (mix, n)
    # SFT's stream at the default 0.5 is the one it always had: first half generated, then seeded choices
    import random
    r = random.Random("jsonl-0-5")
    assert config.train_problems(cfg, 5, 7, 0, outside) == tasks.train_batch(5, 7, 0, fam, lv)[:3] + [
        r.choice(outside) for _ in range(4)]


def test_c_ref_is_calibrated_on_rls_mix(sft_dir, monkeypatch):
    model, tok, _ = runs.load_run(sft_dir)
    cfg = dataclasses.replace(config.Config(**config.PRESETS["test"]), data_mix=1.0)
    seen = []
    monkeypatch.setattr(rollout, "sample_chunks", lambda m, t, problems, **kw: seen.extend(problems) or iter(()))
    with pytest.raises(config.UserError, match="no calibration sample finished"):
        rollout.calibrate_c_ref(model, tok, cfg, _outside())
    assert len(seen) == cfg.calib_prompts and all(p in _outside() for p in seen)


def test_an_sft_runs_c_ref_at_evaluation_is_measured_on_rls_mix(sft_dir, tmp_path, monkeypatch, capsys):
    """evaluate.py and sample.py measure an SFT checkpoint's c_ref (rollout.run_c_ref) on the problems an RL
    run from it would calibrate on: its --data_jsonl share included, generated only if the file is gone."""
    model, tok, ck = runs.load_run(sft_dir)
    seen = []
    monkeypatch.setattr(rollout, "sample_chunks", lambda m, t, problems, **kw: seen.append(problems) or iter(()))
    data = tmp_path / "d.jsonl"
    data.write_text(open(SAMPLE).read())
    cfg = dataclasses.replace(config.Config(**config.PRESETS["test"]), data_jsonl=str(data), data_mix=1.0)
    for c in (cfg, dataclasses.replace(cfg, data_jsonl=str(tmp_path / "gone.jsonl"))):
        with pytest.raises(config.UserError, match="no calibration sample finished"):
            rollout.run_c_ref(model, tok, c, ck, "run")
    with_file, without = seen
    assert len(with_file) == cfg.calib_prompts and all(p in _outside() for p in with_file)
    assert not any(p in _outside() for p in without)
    assert "note: c_ref is measured on generated problems only" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ training

def test_sft_then_rl_on_outside_data_only(tmp_path, capsys):
    """--stage all with --data_mix 1: the counts printed up front, every RL prompt an outside one that fits."""
    out = str(tmp_path / "run")
    train.main(T + ["--stage", "all", "--out_dir", out, "--data_jsonl", SAMPLE, "--data_mix", "1", "--sft_steps", "2",
                    "--rl_steps", "2", "--c_ref", "-20"])
    printed = capsys.readouterr().out
    assert printed.count("12 problems loaded, 8 kept for training, 4 dropped") == 2  # SFT and RL stages
    assert "6 of 8 problems used for SFT, 2 skipped" in printed  # the long prompt and the long solution
    assert printed.count("7 of 8 problems used for RL, 1 skipped") == 2  # checked before SFT, and in RL
    assert printed.index("used for RL") < printed.index("SFT: ")  # before SFT's steps, not after them
    long_prompt = max(_outside(), key=lambda p: len(p.problem))  # the one skipped for RL
    fits = {p.problem for p in _outside()} - {long_prompt.problem}
    samples = _rows(os.path.join(out, "laser", "samples.jsonl"))
    assert len(samples) == 4 and all(s["problem"] in fits for s in samples)
    assert runs.load_checkpoint(os.path.join(out, "laser"))["step"] == 2


def test_rl_mixes_outside_prompts_and_resumes_bit_identically(sft_dir, tmp_path, capsys):
    common = T + ["--stage", "rl", "--init", sft_dir, "--rl_steps", "3", "--data_jsonl", SAMPLE,
                  "--c_ref", "-20"]
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train.main(common + ["--out_dir", full])
    train.main(common + ["--out_dir", part, "--halt_at", "1"])
    train.main(["--stage", "rl", "--out_dir", part, "--resume"])
    a, b = runs.load_checkpoint(full), runs.load_checkpoint(part)
    assert b["step"] == 3 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    samples = _rows(os.path.join(full, "samples.jsonl"))  # 2 prompts a step at --data_mix 0.5: 1 generated, 1 outside
    outside = {p.problem for p in _outside()}
    assert [s["problem"] in outside for s in samples] == [False, True] * 3
    assert samples == _rows(os.path.join(part, "samples.jsonl"))
    assert "7 of 8 problems used for RL" in capsys.readouterr().out


def test_resume_refuses_outside_problems_that_changed(sft_dir, tmp_path, capsys):
    """A run resumed on a --data_jsonl file that no longer holds the problems it trained on would go on as
    another run: refused in one line, for SFT and for RL (the checkpoint keeps a digest of them)."""
    data = tmp_path / "d.jsonl"
    data.write_text(open(SAMPLE).read())
    rl, sft = str(tmp_path / "rl"), str(tmp_path / "sft")
    train.main(T + ["--stage", "rl", "--init", sft_dir, "--rl_steps", "3", "--data_jsonl", str(data), "--c_ref", "-20",
                    "--out_dir", rl, "--halt_at", "1"])
    train.main(T + ["--stage", "sft", "--sft_steps", "3", "--data_jsonl", str(data), "--out_dir", sft, "--halt_at", "1"])
    lines = data.read_text().splitlines()
    kept = {p.problem for p in tasks.keep_split(_outside(), "train")[0]}
    i = next(i for i, ln in enumerate(lines) if json.loads(ln)["problem"] in kept
             and len(json.loads(ln)["problem"]) < 200 and str(json.loads(ln)["answer"]).isdigit())
    row = json.loads(lines[i])
    row["answer"] = f"{row['answer']}.0"  # the same value, written otherwise: still a change to the data
    data.write_text("\n".join(lines[:i] + [json.dumps(row)] + lines[i + 1:]) + "\n")
    capsys.readouterr()
    for out in (rl, sft):
        stage = "rl" if out == rl else "sft"
        with pytest.raises(SystemExit) as e:
            train.main(["--stage", stage, "--out_dir", out, "--resume"])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "not the problems this run was trained on" in err[0], err
    data.write_text(open(SAMPLE).read())  # the file restored: the runs resume, with flags that a resume may
    train.main(["--stage", "rl", "--out_dir", rl, "--resume", "--max_new_tokens", "40"])  # change (which prompts fit)
    assert runs.load_checkpoint(rl)["step"] == 3
    train.main(["--stage", "sft", "--out_dir", sft, "--resume", "--data_mix", "0"])  # (config.json kept by the refusal)
    assert runs.load_checkpoint(sft)["step"] == 3


# ------------------------------------------------------------------------------------------ evaluation

def _long_problem(split: str) -> dict:
    text = "Read this long story about a patient gardener who counts the flowers every single morning. " * 12
    answer = next(str(x) for x in range(1, 1000) if tasks.split_of(tasks.canonical_key(text, str(x))) == split)
    return {"problem": text + "How many flowers are there?", "answer": answer}


def test_evaluate_on_the_outside_problems_of_a_split(sft_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(open(SAMPLE).read() + json.dumps(_long_problem("test")) + "\n")
    out = str(tmp_path / "ev")
    common = ["--n_samples", "2", "--n_boot", "0", "--out", out, "--data_jsonl", str(data)]
    assert evaluate.main([sft_dir] + common) == 0
    printed = capsys.readouterr().out
    assert "13 problems loaded, 4 kept for test, 9 dropped" in printed
    assert "3 of 4 problems used for evaluation, 1 skipped (prompt + --max_new_tokens 48 + 1 >" in printed
    recs = json.load(open(os.path.join(out, "records.json")))[os.path.basename(sft_dir)]
    test = [p for p in tasks.load_jsonl(SAMPLE) if tasks.split_of(p.key) == "test"]
    assert [(r["problem"], r["gold"]) for r in recs] == [(p.problem, p.answer) for p in test]
    assert all(len(r["samples"]) == 2 and r["family"] == "external" for r in recs)
    assert json.load(open(os.path.join(out, "eval.json")))[os.path.basename(sft_dir)]["n_problems"] == 3
    assert evaluate.main([sft_dir] + common + ["--split", "validation", "--n_problems", "1"]) == 0
    recs = json.load(open(os.path.join(out, "records.json")))[os.path.basename(sft_dir)]
    assert [r["problem"] for r in recs] == ["How many minutes are in 3 hours?"]


def test_data_mix_0_never_refuses_a_file_whose_problems_do_not_fit(tmp_path, capsys):
    """--data_mix 0: the file only shapes the tokenizer; no SFT row or RL prompt is drawn from it, so its
    problems' lengths refuse nothing (with a share of it, the same file is refused)."""
    data = tmp_path / "long.jsonl"
    row = _long_problem("train")
    data.write_text(json.dumps({**row, "problem": row["problem"] * 5}) + "\n")
    argv = T + ["--stage", "all", "--data_jsonl", str(data), "--sft_steps", "1", "--rl_steps", "1", "--c_ref", "-20"]
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--out_dir", str(tmp_path / "mixed"), "--data_mix", "0.5"])
    assert e.value.code == 2 and "none of the 1 problems kept fits" in capsys.readouterr().err
    train.main(argv + ["--out_dir", str(tmp_path / "run"), "--data_mix", "0"])
    assert runs.load_checkpoint(str(tmp_path / "run" / "laser"))["step"] == 1


def test_data_digest_covers_what_each_stage_reads():
    """SFT's digest changes with a solution (SFT trains on it), RL's does not; both change with the order
    (draws are by index)."""
    a = _outside()
    b = [dataclasses.replace(a[0], solution=(a[0].solution or "") + " Done.")] + a[1:]
    assert runs.data_digest(a) != runs.data_digest(b)
    assert runs.data_digest(a, solutions=False) == runs.data_digest(b, solutions=False)
    for solutions in (True, False):
        assert runs.data_digest(a, solutions) != runs.data_digest(a[::-1], solutions)


def test_outside_problems_shape_the_tokenizer():
    """The BPE merges are learned on the outside problems too (what --data_mix 0 still uses them for)."""
    cfg = dataclasses.replace(config.Config(**config.PRESETS["test"]), data_jsonl=SAMPLE)
    extra = config.outside_train_data(cfg)
    corpus = config.corpus_for_tokenizer(cfg, extra)
    assert all(p.problem + "\n" + p.solution in corpus for p in extra)
