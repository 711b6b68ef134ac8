r"""Outside data: scripts/convert_data.py turns GSM8K and MATH files into our JSON lines (answers, the last
box with nested braces, \fbox, annotation removal, bad records). tests/data holds hand-written samples."""
import importlib.util
import json
import os

import pytest

import tasks
import verify

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
SAMPLE = os.path.join(DATA, "outside_sample.jsonl")

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
