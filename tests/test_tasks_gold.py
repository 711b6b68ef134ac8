"""tasks.py against an independent reading of each problem: every gold answer is its question's value, every worked
step holds and ends in the box, draws keep to the families, levels, seeds and steps asked for; outside answers
take the generators' form. (From a mutation audit: these defects survived the suite before.)"""
import random
import re
from fractions import Fraction
from math import gcd

import pytest
import sympy
from sympy.parsing.sympy_parser import (convert_xor, implicit_multiplication_application, parse_expr,
                                        standard_transformations)

import tasks

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
