import collections
import json
import random
import re
from fractions import Fraction
from math import gcd

import pytest
import sympy
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        standard_transformations)

import tasks
import train
from tokenizer import Tokenizer, load_tokenizer, train_bpe


@pytest.mark.parametrize("family", tasks.FAMILIES)
@pytest.mark.parametrize("level", tasks.LEVELS)
def test_every_family_level_has_worked_solution_ending_in_box(family, level):
    rng = random.Random(f"{family}{level}")
    for _ in range(30):
        p = tasks.make_problem(rng, family, level)
        assert p.family == family and p.level == level
        assert p.solution.endswith(f"\\boxed{{{p.answer}}}")
        assert len(p.solution.splitlines()) >= 2  # at least one worked step before the box


def test_answers_are_mathematically_right():
    rng = random.Random(0)
    for _ in range(200):
        p = tasks.arithmetic(rng, rng.choice(tasks.LEVELS))
        a, op, b = re.match(r"Compute (\d+) ([-+*]) (\d+)\.", p.problem).groups()
        assert int(p.answer) == {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        p = tasks.linear(rng, rng.choice(tasks.LEVELS))
        lhs, rhs = p.problem[len("Solve for x: "):-1].split(" = ")
        x = int(p.answer)
        ev = lambda s: eval(re.sub(r"(\d)x", r"\1*x", s).replace(" ", ""), {"x": x})  # our own text
        assert ev(lhs) == ev(rhs)


_X = sympy.Symbol("x")
_T = standard_transformations + (implicit_multiplication_application, convert_xor)


def _expr(s: str):
    """Our own reading of a step's or a question's math (`7(x + 2)`, `x^2 - 3x`, `-4 / -2`), exact."""
    return parse_expr(s, transformations=_T, local_dict={"x": _X}, evaluate=True)


def _value(ans: str):
    m = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", ans)
    return sympy.Rational(int(m[2]), int(m[3])) * (-1 if m[1] else 1) if m else _expr(ans)


@pytest.mark.parametrize("family", ["fraction", "polynomial", "word"])
def test_every_gold_answer_is_the_value_of_its_problem(family):
    """The gold answer, computed here from the question's text alone (the existing check covers only
    arithmetic and linear): a wrong gold answer makes SFT teach it and the reward pay for it."""
    rng = random.Random(f"gold-{family}")
    for level in tasks.LEVELS:
        for _ in range(500 if family == "word" else 150):  # (word: a rare give-away of more than one has)
            p = tasks.make_problem(rng, family, level)
            gold = _value(p.answer)
            if family == "fraction":
                a, b, op, c, d = re.fullmatch(r"Compute (\d+)/(\d+) ([-+*]) (\d+)/(\d+)\.", p.problem).groups()
                x, y = Fraction(int(a), int(b)), Fraction(int(c), int(d))
                want = {"+": x + y, "-": x - y, "*": x * y}[op]
                assert gold == sympy.Rational(want.numerator, want.denominator), p
            elif family == "polynomial":
                assert sympy.expand(_expr(re.fullmatch(r"Expand (.+)\.", p.problem)[1]) - gold) == 0, p
            else:
                nums = [int(n) for n in re.findall(r"\d+", p.problem)]
                if " gets " in p.problem:
                    want = nums[0] + nums[1]
                elif " gives away " in p.problem:
                    want = nums[0] - nums[1]
                elif " boxes " in p.problem:
                    a, n, k = nums
                    want = a + n * k
                else:
                    n, k, gift, m = nums
                    assert (n * k - gift) % m == 0, p  # the rest is shared equally, whole items
                    want = (n * k - gift) // m
                    assert want >= 1, p  # each friend gets at least one
                assert want >= 0 and gold == want, p  # a count of things is never negative


@pytest.mark.parametrize("family", ["linear", "polynomial", "word", "fraction"])
def test_every_worked_step_holds_and_arrives_at_the_answer(family):
    """Each `A = B = C` of a worked solution is a chain of equal values (linear: at x = the answer;
    polynomials: as polynomials in x), and the last step ends in the boxed value (fractions: reduced)."""
    rng = random.Random(f"steps-{family}")
    for level in tasks.LEVELS:
        for _ in range(60):
            p = tasks.make_problem(rng, family, level)
            *steps, box = p.solution.splitlines()
            assert box == f"\\boxed{{{p.answer}}}"
            gold = _value(p.answer)
            for line in steps:
                for eq in line.split(": ")[-1].split(", "):
                    parts = [_expr(s) for s in eq.split(" = ")]
                    if family == "linear":
                        parts = [e.subs(_X, gold) for e in parts]
                    assert all(sympy.expand(a - b) == 0 for a, b in zip(parts, parts[1:])), (p.solution, line)
            last = steps[-1].split(" = ")[-1]
            assert sympy.expand(_expr(last) - gold) == 0, p.solution
            if family == "fraction" and "/" in last:
                num, den = map(int, last.split("/"))
                assert gcd(num, den) == 1, p.solution  # simplified by the gcd before the box


def test_draws_keep_to_the_families_and_levels_asked_for():
    for fam, lv in ((("word",), (1,)), (("fraction", "linear"), (3,))):
        got = [p for s in range(20) for p in tasks.train_batch(s, 8, 0, fam, lv)]
        assert {p.family for p in got} == set(fam) and {p.level for p in got} == set(lv)
        got = tasks.make_split("validation", 12, 0, fam, lv)
        assert {p.family for p in got} == set(fam) and {p.level for p in got} == set(lv)


def test_training_streams_of_different_seeds_and_steps_never_coincide():
    """train_batch is a pure function of (seed, step), and a different (seed, step) is a different
    stream: no two seeds of a study train on the same problems, at any step."""
    batches = {(seed, step): tuple(p.problem for p in tasks.train_batch(step, 6, seed))
               for seed in (0, 1, 2, 11, 12) for step in (0, 1, 2, 12, 21)}
    assert len(set(batches.values())) == len(batches)


def test_integer_answers_take_the_generators_form():
    """`007`, `-0` and ` 46 ` are the integers 7, 0 and 46: outside answers written so key as the generated ones."""
    assert [tasks.generator_form(a) for a in ("007", "-0", "-007", " 46 ", "0")] == ["7", "0", "-7", "46", "0"]
    assert tasks.outside_key("Compute 12 + 34.", "046") == tasks.canonical_key("Compute 12 + 34.", "46")


def test_a_boolean_answer_is_refused_with_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "ok", "answer": 1}\n{"problem": "p", "answer": true}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: 'answer' must be a non-empty string or a number"):
        tasks.load_jsonl(str(bad))


def test_deterministic_by_seed_and_split_disjoint():
    assert tasks.make_split("test", 60, 3) == tasks.make_split("test", 60, 3)
    assert tasks.train_batch(5, 16, seed=1) == tasks.train_batch(5, 16, seed=1)
    assert tasks.train_batch(5, 16, seed=1) != tasks.train_batch(6, 16, seed=1)
    val = {p.key for seed in range(3) for p in tasks.make_split("validation", 150, seed)}
    test = {p.key for seed in range(3) for p in tasks.make_split("test", 150, seed)}
    train = {p.key for s in range(200) for p in tasks.train_batch(s, 32, seed=0)}
    assert len(test) > 150 and len(val) > 150 and len(train) > 3000
    assert not test & train and not val & train and not val & test  # whatever the seeds
    assert all(tasks.split_of(k) == "test" for k in test) and all(tasks.split_of(k) == "validation" for k in val)


def _twin_signature(p):
    """Written independently of tasks.canonical_key: the same numbers (in any order, whatever the
    wording) and the same gold answer make two problems twins."""
    return tuple(sorted(int(n) for n in re.findall(r"[0-9]+", p.problem))), p.answer.replace(" ", "")


@pytest.mark.parametrize("family", tasks.FAMILIES)
def test_no_held_out_problem_has_a_training_twin(family):
    """30,000 problems per family, drawn as sample_problem draws them before it keeps one of the split it
    wants: twins always share a split (so no held-out problem has a twin in training, nor validation one
    in test). (Before: the split hashed the surface text, and 86 of the 150 tiny test problems had a
    training problem with the same computation and answer.)"""
    rng = random.Random(family)
    splits = collections.defaultdict(set)  # twin signature -> the splits its problems fell in
    for _ in range(30_000):
        p = tasks.make_problem(rng, family, rng.choice(tasks.LEVELS))
        splits[_twin_signature(p)].add(tasks.split_of(p.key))
    assert all(len(s) == 1 for s in splits.values())
    counts = collections.Counter(next(iter(s)) for s in splits.values())
    assert all(counts[s] > 0.05 * len(splits) for s in tasks.SPLITS), counts  # and each split holds its share
    assert all(tasks.split_of(tasks.sample_problem(rng, split, [family]).key) == split  # (what it keeps)
               for split in tasks.SPLITS for _ in range(50))


def test_twins_share_a_key_and_a_split():
    twins = [("Compute 12 + 34.", "Compute 34 + 12.", "46"),
             ("Ana has 12 pens and gets 5 more. How many pens does Ana have now?",
              "Ben has 5 coins and gets 12 more. How many coins does Ben have now?", "17"),
             ("Compute 1/2 * 3/4.", "Compute 3/2 * 1/4.", "\\frac{3}{8}"),
             ("Expand (x + 3)(x - 2).", "Expand (x - 2)(x + 3).", "x^2 + x - 6")]
    for a, b, ans in twins:
        assert tasks.canonical_key(a, ans) == tasks.canonical_key(b, ans.replace(" ", ""))
    assert tasks.canonical_key("Compute 12 + 34.", "46") != tasks.canonical_key("Compute 12 + 35.", "47")


def test_outside_data_is_filtered_by_key(tmp_path):
    held = tasks.make_split("test", 20, 0)
    rows = [{"problem": p.problem.replace("Compute", "Please compute"), "answer": p.answer} for p in held]
    rows += [{"problem": p.problem, "answer": p.answer} for p in tasks.train_batch(0, 20, seed=0)]
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, dropped = tasks.keep_split(tasks.load_jsonl(str(f)), "train")
    assert dropped == 20 and len(kept) == 20  # reworded test problems never reach training


def _written_otherwise(answer: str) -> str:
    """The same value as another writer would put it: `46.0`, `8/7`, `x**2-x-6` (a test's own rules)."""
    if re.fullmatch(r"-?\d+", answer):
        return answer + ".0"
    frac = re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", answer)
    if frac:
        return f"{frac[1]}{frac[2]}/{frac[3]}"
    return answer.replace("^", "**").replace(" ", "")


def test_a_held_out_problem_reworded_with_its_answer_written_otherwise_is_not_trained_on(tmp_path):
    """Outside data is keyed with its answer as the generators write it (tasks.outside_key), so a test
    problem reworded and with `46.0`, `8/7` or `x**2-x-6` for its answer is still a test problem. (Before:
    the answer's text was keyed as written, and 293 of 405 such problems went to training.)"""
    held = tasks.make_split("test", 90, 0) + tasks.make_split("validation", 90, 0)
    train = tasks.train_batch(0, 90, seed=0)
    assert {p.family for p in held} == set(tasks.FAMILIES)
    rows = [{"problem": "Please: " + p.problem, "answer": _written_otherwise(p.answer)} for p in held + train]
    assert sum(r["answer"] != p.answer for r, p in zip(rows, held)) == len(held)  # every answer rewritten
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kept, dropped = tasks.keep_split(tasks.load_jsonl(str(f)), "train")
    assert dropped == len(held) and len(kept) == len(train)  # and no training problem is lost by it
    assert [tasks.generator_form(r["answer"]) for r in rows] == [p.answer for p in held + train]


def test_every_generated_answer_is_its_own_generator_form():
    """So an outside copy of a generated problem keys exactly as the problem does."""
    for family in tasks.FAMILIES:
        for level in tasks.LEVELS:
            rng = random.Random(f"form-{family}{level}")
            for _ in range(100):
                p = tasks.make_problem(rng, family, level)
                assert tasks.generator_form(p.answer) == p.answer, (family, level, p.answer)
    for text in ("x^2 + y", "(1, 2)", "sqrt(2)", "x^2 - 1/2", "(x+1)^1000", "pens", "3" * 5000 + "/7",
                 "((((x+1)^12)^12)^12)^12", "(x^12+x^11+x^10+x^9+x^8+x^7+x^6+x^5+x^4+x^3+x^2+x+1)^12"):
        assert tasks.generator_form(text) is None  # no form a generator could give (or too costly to expand)


def test_canonical_key_orders_numbers_of_any_length():
    assert tasks.canonical_key("Compute 100 + 007 + 25.", "132") == "7,25,100=132"
    assert tasks.canonical_key("Compute \uff15\uff19 + \u0661\u0667.", "76") == "17,59=76"  # full-width, Arabic-Indic
    huge = "9" * 5000  # longer than Python converts to int by default
    assert tasks.canonical_key(f"Last digit of {huge} + 12?", "1") == f"12,{huge}=1"


def test_every_worked_step_of_a_fraction_problem_holds():
    """Each `a = b = c` line of a fraction solution is a chain of equal values for the checker. (Before:
    `1/5 * 5/5 = 1*5 / 5*5 = 5/25`, whose middle is 5 under the usual precedence.)"""
    import verify
    rng = random.Random("fraction-steps")
    n = 0
    for _ in range(60):
        p = tasks.make_problem(rng, "fraction", 3)
        for line in p.solution.splitlines()[:-1]:
            parts = line.split(": ")[-1].split(", ")[0].split(" = ")
            for a, b in zip(parts, parts[1:]):
                n += 1
                assert verify.is_equivalent(a, b), (line, a, b)
    assert n > 60


def test_split_capacity_error_is_clear():
    with pytest.raises(ValueError, match="polynomial level 1.*holds only about"):
        tasks.make_split("test", 600, 0, ["polynomial"], [1])


def test_load_jsonl_and_errors_name_the_line(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"problem": "1+1?", "answer": 2}) + "\n\n"
                    + json.dumps({"problem": "x?", "answer": "3", "solution": "\\boxed{3}"}) + "\n")
    out = tasks.load_jsonl(str(good))
    assert [p.answer for p in out] == ["2", "3"] and out[1].solution == "\\boxed{3}"
    for line, msg in [("{not json", "invalid JSON"), ('{"answer": 1}', "missing required key 'problem'"),
                      ('[1, 2]', "expected a JSON object"), ('{"problem": "", "answer": 1}', "non-empty"),
                      ('{"problem": "p", "answer": [1]}', "string or a number"),
                      ('{"problem": "p", "answer": NaN}', "NaN is not a number"),
                      ('{"problem": "p", "answer": 1e999}', "not a finite number"),
                      ('{"problem": "p' + " " * 100_000 + 'q", "answer": 1}', "100,000 or more whitespace")]:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps({"problem": "ok", "answer": 1}) + "\n" + line + "\n")
        with pytest.raises(ValueError, match=rf"bad.jsonl:2: .*{re.escape(msg)}"):
            tasks.load_jsonl(str(bad))


def test_a_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    f = tmp_path / "latin1.jsonl"
    f.write_bytes((json.dumps({"problem": "ok", "answer": 1}) + "\n").encode() * 500 + b'{"problem": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1.jsonl:501: not UTF-8 text \(byte 17 of the line\)"):
        tasks.load_jsonl(str(f))
    f.write_bytes(b'{"problem": "a", "answer": 1}\r\n{"problem": "b", "answer": 2}\r{"problem": "c", "answer": 3}')
    assert [p.answer for p in tasks.load_jsonl(str(f))] == ["1", "2", "3"]  # any newline, as text mode reads
    f.write_bytes(b'{"problem": "a", "answer": 1}\r{"problem": "b", "answer": 2}\r{"problem": "c\xff"}\r')
    with pytest.raises(ValueError, match=r"latin1.jsonl:3: not UTF-8 text \(byte 15 of the line\)"):
        tasks.load_jsonl(str(f))  # lines counted as they are parsed


def test_bad_family_or_level():
    with pytest.raises(ValueError, match="unknown family"):
        tasks.make_problem(random.Random(0), "calculus", 1)
    with pytest.raises(ValueError, match="unknown level"):
        tasks.make_problem(random.Random(0), "word", 9)


def test_tokenizer_roundtrip_digits_and_specials(tok, tmp_path):
    text = "Compute 12345 + 678.\n\\boxed{\\frac{5}{6}} héllo ∞"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    for d in "0123456789":  # every digit is its own token
        assert tok.encode(d) == [ord(d)]
    digit_tokens = [tok.decode([i]) for i in tok.encode("907 * 31 = 28117")]
    assert all(sum(c.isdigit() for c in t) <= 1 for t in digit_tokens)
    assert len({tok.bos_id, tok.eos_id, tok.pad_id, tok.zc_id}) == 4
    # spelling a special token in text never produces it
    evil = "<|zc|> <|eos|><|bos|><|pad|>"
    assert not {tok.zc_id, tok.eos_id, tok.bos_id, tok.pad_id} & set(tok.encode(evil))
    assert tok.decode(tok.encode(evil)) == evil
    path = str(tmp_path / "tok.json")
    tok.save(path)
    again = load_tokenizer(path)
    assert again.encode(text) == ids and again.zc_id == tok.zc_id and again.vocab_size == tok.vocab_size


def test_bpe_is_deterministic_and_learns_merges():
    texts = [p.problem + "\n" + p.solution for p in tasks.train_batch(0, 100, seed=0)]
    a, b = train_bpe(texts, 50), train_bpe(list(texts), 50)
    assert a == b and len(a) == 50
    tok = Tokenizer(a)
    assert len(tok.encode("Compute")) == 1 or len(tok.encode(" boxed")) <= 2
    assert len(tok.encode(texts[0])) < len(texts[0].encode())  # merges compress the corpus
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer([b"ab", b"ab"])


def test_bpe_merges_by_hand():
    """Pieces 'ab' x1, ' ab' x2, ' cd' x1: (a, b) occurs 3 times and is merged first, then (' ', ab)
    twice; every pair left occurs once, so learning stops there (the docstring's rule), below n_merges."""
    assert train_bpe(["ab ab ab cd"], 10) == [b"ab", b" ab"]


def test_bpe_merges_do_not_depend_on_the_corpus_order():
    """Ties are broken by the pair's bytes, not by which text came first: the same corpus, the same merges."""
    texts = [p.problem + "\n" + p.solution for p in tasks.train_batch(0, 60, seed=0)]
    assert train_bpe(texts, 40) == train_bpe(texts[::-1], 40)


def test_prompt_and_sft_row_are_bos_problem_newline_solution_eos(tok):
    """The documented formats: a prompt is [BOS, problem, newline]; an SFT row is the prompt, the
    solution and EOS; z_c and padding never appear in a row."""
    for p in tasks.train_batch(0, 5, seed=0):
        assert tok.encode_prompt(p.problem) == [tok.bos_id] + tok.encode(p.problem + "\n")
        (row, n_prompt), = train.sft_rows(tok, [p])
        assert row[0] == tok.bos_id and row[-1] == tok.eos_id and n_prompt == len(tok.encode_prompt(p.problem))
        assert tok.decode(row[1:-1]) == p.problem + "\n" + p.solution
        assert tok.zc_id not in row and tok.pad_id not in row and row.count(tok.bos_id) == 1


def test_a_tokenizer_file_with_other_special_tokens_is_refused(tmp_path):
    data = json.loads(Tokenizer([b"ab"]).to_json())
    data["specials"] = data["specials"][:3]  # a tokenizer from before z_c: its ids would be read wrongly
    path = tmp_path / "tok.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="special tokens"):
        load_tokenizer(str(path))


def test_ids_are_the_bytes_then_the_merges_then_bos_eos_pad_zc(tok):
    """The documented id layout, which saved checkpoints depend on: 0..255 the bytes, then the merges, then
    <|bos|>, <|eos|>, <|pad|>, <|zc|> and nothing else (an id with no token could be sampled and not decoded)."""
    assert [tok.encode(chr(i)) for i in range(128)] == [[i] for i in range(128)]
    assert tok.enc.decode_single_token_bytes(255) == b"\xff" and tok.enc.decode_single_token_bytes(256) == tok.merges[0]
    n = 256 + len(tok.merges)
    assert [tok.bos_id, tok.eos_id, tok.pad_id, tok.zc_id] == list(range(n, n + 4)) and tok.vocab_size == n + 4
    assert [tok.decode([i]) for i in range(n, n + 4)] == ["<|bos|>", "<|eos|>", "<|pad|>", "<|zc|>"]


def test_load_jsonl_keeps_family_and_level_and_refuses_mistyped_optional_fields(tmp_path):
    """An outside file's family and level reach its problems (evaluate.py's per-family tables read them); a
    boolean answer, a solution that is not a string, a boolean level and a solution with a run of 100,000
    blanks are refused with the file and line."""
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"problem": "p?", "answer": "4", "family": "gsm8k", "level": 3}) + "\n")
    (p,) = tasks.load_jsonl(str(f))
    assert (p.family, p.level) == ("gsm8k", 3)
    for line, msg in [('{"problem": "p", "answer": true}', "string or a number"),
                      ('{"problem": "p", "answer": 1, "solution": 5}', "'solution' must be a string"),
                      ('{"problem": "p", "answer": 1, "level": true}', "'level' must be an integer"),
                      ('{"problem": "p", "answer": 1, "solution": "a' + " " * 100_000 + 'b"}', "100,000 or more")]:
        f.write_text(line + "\n")
        with pytest.raises(ValueError, match=rf"d.jsonl:1: .*{re.escape(msg)}"):
            tasks.load_jsonl(str(f))
