"""Tests for verify.py: extraction, equivalence (each pair checked in both directions), reward
reasons, hostile-input safety (no code execution, no side effects), and time bounds in the main
thread and in worker threads. Runs in a few seconds."""
import os
import sys
import threading

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import verify  # noqa: E402
from verify import (NO_ANSWER, REASONS, RIGHT, UNPARSABLE, WRONG, extract_answer,  # noqa: E402
                    is_equivalent, reward, reward_with_reason)

# --------------------------------------------------------------------------- extraction

EXTRACT_CASES = [
    (r"so the result is \boxed{5}", "5"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"first \boxed{1}, then corrected: \boxed{2}", "2"),             # last box wins
    (r"\fbox{7}", "7"),
    (r"the answer is \boxed 5", "5"),                                 # space form
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),                                 # escaped braces
    (r"\boxed{\boxed{9}}", "9"),                                      # nested box unwrapped
    (r"\boxed{a^{b^{c}} + {d}}", r"a^{b^{c}} + {d}"),                 # nested braces
    (r"$\boxed{x^{2}}$.", "x^{2}"),
    (r"\boxed {12}", "12"),
    (r"\[\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}\]", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
    ("no box and no marker here", None),
    (r"\boxed{}", None),                                              # empty box
    (r"\boxed{3} and later \boxed{4", None),                          # truncated last box
    (r"\boxedx", None),
    ("", None),
    ("The answer is 42.", "42"),                                      # fallbacks (no box at all)
    ("The final answer is $28 \\%$. I hope it is correct.", "28 \\%"),
    ("Answer: 3/4", "3/4"),
    ("reasoning...\n#### 72", "72"),
    ("the answer is clear from the figure", None),                    # prose is not an answer
    ("The answer is x = 5\nand more text", "x = 5"),
    ("the answer is 3.5 apples. Done", "3.5 apples"),
    (r"The answer is 7, but \boxed{8} is final", "8"),               # a box beats the fallback
    ("Final Answer: The largest $n$ is 34.", "34"),
    ("Final Answer: The final answer is 16386.16.", "16386.16"),
    ("The answer is $\\frac{1}{2}$.", "\\frac{1}{2}"),
    ("The answer is: 24", "24"),
]


@pytest.mark.parametrize("text,expected", EXTRACT_CASES)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_extract_answer_non_string():
    assert extract_answer(None) is None


# --------------------------------------------------------------------------- equivalence

EQUAL = [
    # integers, signs, separators
    ("5", "5"), ("-5", "\u22125"), ("+5", "5"), ("-0", "0"), ("00012", "12"),
    ("1,000", "1000"), ("7,425,000", "7425000"), ("1{,}000", "1000"), ("1\\,000", "1000"),
    ("12 345", "12345"), ("1,000,000", "10^6"), ("$1,000.99", "1000.99"),
    # decimals and fractions
    ("0.5", "1/2"), (".5", "0.5"), ("5.0", "5"), ("1000.0", "1000"), ("0.50", ".5"), ("5.", "5"),
    ("\\frac{1}{2}", "0.5"), ("\\dfrac{3}{4}", "0.75"), ("\\tfrac{1}{4}", "0.25"),
    ("\\frac12", "1/2"), ("\\frac1{2}", "0.5"), ("\\frac{1}2", "0.5"), ("\\frac 1 2", "0.5"),
    ("2/4", "1/2"), ("\\frac{-1}{2}", "-\\frac12"), ("-\\frac{1}{2}", "-0.5"), ("\u22121/2", "-0.5"),
    ("\\frac{3}{2}", "1\\frac{1}{2}"), ("2 1/2", "5/2"), ("3 \\frac{3}{4}", "3.75"),
    ("2\\frac12", "5/2"), ("1\\frac17", "8/7"), ("3 \\frac34", "3.75"),  # bare mixed numbers (were 2 * 1/2)
    ("-1 1/6", "-\\frac{7}{6}"), ("1\u20442", "1/2"), ("3\u200b", "3"),  # signed mixed; fraction slash; zero width
    ("0.\\overline{3}", "1/3"), ("0.1\\overline{6}", "1/6"),
    # scientific notation and powers
    ("1e3", "1000"), ("1E-3", "0.001"), ("1.5e3", "1500"), ("1.5\\times10^{3}", "1500"),
    ("3 \\times 10^{-2}", "0.03"), ("2^{10}", "1024"), ("2^{100}", "1267650600228229401496703205376"),
    ("2^3^2", "512"), ("-2^2", "-4"), ("(-2)^2", "4"), ("x^{-1}", "1/x"), ("2**3", "8"),
    # roots, pi, constants
    ("\\sqrt{8}", "2\\sqrt2"), ("\\sqrt{12}", "2\\sqrt{3}"), ("2^{1/2}", "\\sqrt2"),
    ("\\frac{1}{\\sqrt{3}}", "\\frac{\\sqrt3}{3}"), ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"),
    ("\\sqrt[3]{27}", "3"), ("\\sqrt[3]{-8}", "-2"), ("\\sqrt[4]{16}", "2"),
    ("\\sqrt 2+\\sqrt 5", "\\sqrt{2}+\\sqrt{5}"), ("\\frac94\\pi", "\\frac{9}{4}\\pi"),
    ("(1+\\sqrt2)^2", "3+2\\sqrt2"), ("\\sqrt{5+2\\sqrt{6}}", "\\sqrt2+\\sqrt3"),
    ("e^{i\\pi}", "-1"), ("i^2", "-1"), ("\\sqrt{-1}", "i"), ("3+4i", "4i+3"),
    ("\\ln(e^2)", "2"), ("\\log_2 8", "3"), ("\\log_{10} 100", "2"), ("\\log 6", "\\log 2 + \\log 3"),
    ("\\cos(\\pi/3)", "1/2"), ("\\arctan 1", "\\pi/4"), ("\\sin^{-1}(1/2)", "\\pi/6"),
    ("\\infty", "+\\infty"), ("inf", "\\infty"), ("\\infty", "\u221e"),
    # tolerance: decimal vs value without a terminating expansion
    ("0.333333", "1/3"), ("\\frac{1}{3}", "0.3333333333"), ("3.14159", "\\pi"), ("2\\pi", "6.283185"),
    ("\\frac{\\sqrt{3}}{2}", "0.866025"), ("\\frac{1}{12}", "0.0833333333333333"),
    # percent = 1/100
    ("50\\%", "0.5"), ("50\\%", "\\frac{1}{2}"), ("10%", "0.1"), ("5\\%", "\\frac{1}{20}"),
    ("28\\%", "28 percent"), ("28 \\%", "28\\%"),
    # units, degrees, text around numbers
    ("5 \\text{ cm}", "5"), ("5\\,\\text{cm}", "5"), ("5 dollars", "5"), ("\\$5.00", "5"),
    ("15\\mbox{ cm}^2", "15"), ("\\frac{1}{2} \\text{ cm}^2", "0.5"), ("4\\text{ units}", "4"),
    ("12 apples", "12"), ("125\\textnormal{ miles}", "125"), ("\\frac{3}{4} \\text{ inch}", "0.75"),
    ("\\text{5} \\text{ cm}", "5"), ("\\text{12,000}\\text{ dollars}", "12000"), ("x = \\text{-3}", "-3"),
    ("30^\\circ", "30"), ("30\u00b0", "30"), ("90^{\\circ}", "90"), ("90 degrees", "90"),
    ("$5$", "5"), ("\\(5\\)", "5"), ("\\left(\\frac{1}{3}\\right)", "1/3"), ("5.", "5"),
    # equations: names on the left are dropped
    ("x = 5", "5"), ("k = \\frac{1}{3}", "1/3"), ("x_1 = 4", "4"), ("f(x) = x^2", "x^2"),
    ("f(x, y) = x+y", "x+y"), ("g(1, 2) = 3", "3"), ("f(x,y) = x y, g(1,2) = 3", "(xy, 3)"),
    ("\\text{Area} = 15", "15"), ("y = 2x+3", "2x+3"), ("x = 3/6 = 1/2", "1/2"), ("2+3=5", "5"),
    ("x=1/3 \\approx 0.33", "1/3"), ("x \\approx 3.14", "3.14"), ("x \\in [1,2]", "[1,2]"),
    ("x = 2 + 3 = 5", "5"), ("(x-2)(x+5) = x^2+3x-10", "x^2+3x-10"), ("\\sin^2 x + \\cos^2 x = 1", "1"),
    ("x^2-x-6 = (x-3)(x+2) = (x+2)(x-3)", "(x-3)(x+2)"), ("1/3 = 0.3333", "0.3333"),  # (a decimal: rounded)
    ("\\frac{2}{3} \\approx 0.66", "0.66"), ("\\pi \\approx 3", "3"), ("0.333 \\approx \\frac13", "1/3"),  # cut, round
    ("(x,y)=(2,1)", "y=1, x=2"), ("y=1, x=2", "(2,1)"),  # a pair's names in order
    # text or font commands around the whole answer: read as math
    ("\\log{\\left(8\\right)}^{4}", "(\\log 8)^4"), ("\\sin{(x)}^2", "\\sin(x)^2"),  # sympy's way: the value's power
    ("\\textbf{\\frac{11}{12}}", "\\frac{11}{12}"), ("\\text{1/2}", "\\frac12"), ("\\text{-0.6}", "-\\frac35"),
    ("\\text{46 shells}", "46"), ("\\textbf{x^2 - 1}", "x^2-1"),
    ("y=2x+3", "y - 2x = 3"), ("2x+4y-3=0", "y=-\\frac12 x+\\frac34"),
    ("x^2/4 + y^2/3 = 1", "x^2/16 + y^2/12 = 1/4"), ("y = \\frac{1}{2}x + 1", "x - 2y + 2 = 0"),
    # expressions in variables
    ("2x+1", "1+2*x"), ("x^2 - x - 6", "(x-3)(x+2)"), ("x^2+2x+1", "(x+1)^2"), ("a^2 - b^2", "(a-b)(a+b)"),
    ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}"), ("2\\sin b \\cos a", "2 \\cos a \\sin b"),
    ("xy", "yx"), ("\\frac{1}{2}x", "\\frac{x}{2}"), ("x/2", "0.5x"), ("-x+1", "1-x"),
    ("\\sin^2 x + \\cos^2 x", "1"), ("\\tan^2(y)+1", "\\sec^2(y)"), ("\\sqrt{x^2}", "|x|"),
    ("\\frac{x^2-1}{x-1}", "x+1"), ("x^{0.5}", "\\sqrt{x}"), ("\\frac{\\pi r}{h+r}", "\\pi r/(r+h)"),
    ("2\\left(x+1\\right)", "2x+2"), ("3x \\cdot 2y", "6xy"), ("x \\times y", "xy"),
    # tuples (ordered)
    ("(1,2)", "(1, 2)"), ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\langle 1, 2 \\rangle", "(1,2)"), ("(x, y) = (1, 2)", "(1,2)"), ("(1, 4.5)", "(1,\\frac{9}{2})"),
    ("x=1, y=2", "(1,2)"), ("a=2, b=3", "b=3, a=2"), ("(6,31,-1)", "6, 31, -1"),
    # sets and lists of solutions (unordered)
    ("x=2, x=3", "\\{3, 2\\}"), ("\\{1,2,3\\}", "\\{3,2,1\\}"), ("1, 2", "2, 1"),
    ("x = 2 or x = 3", "2, 3"), ("x=2 \\text{ or } x=3", "\\{2,3\\}"), ("12\\text{ and }13", "12 and 13"),
    ("\\left\\{ 1, 2 \\right\\}", "\\{2,1\\}"), ("\\lbrace 1, 2 \\rbrace", "\\{2,1\\}"),
    ("5", "\\{5\\}"), ("5", "x = 5, x = 5"), ("\\emptyset", "\\{\\}"), ("-2,1", "1, -2"),
    ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}"), ("3 \\pm 2\\sqrt{2}", "3+2\\sqrt2, 3-2\\sqrt2"),
    ("\\{1\\pm\\sqrt{5},-2\\}", "-2, 1+\\sqrt5, 1-\\sqrt5"), ("\\pm 2", "2, -2"),
    # intervals and inequalities
    ("[1, 2)", "[1,2)"), ("(-\\infty, 3]", "(-\\infty,3]"), ("(0, 1)", "(0,1)"),
    ("\\mathbb{R}", "(-\\infty, \\infty)"), ("[1,2]\\cup[2,3]", "[1,3]"),
    ("(-\\infty, 0) \\cup (0, \\infty)", "x \\neq 0"), ("\\{-1\\} \\cup [0,7)", "\\{-1\\}\\cup[0,7)"),
    ("[-1, -\\tfrac12) \\cup (-\\tfrac12, 0)", "[-1, -\\frac12) \\cup (-\\frac12, 0)"),
    ("x \\in (1,3)", "1 < x < 3"), ("x > 5", "(5, \\infty)"), ("x \\ge 2", "[2,\\infty)"),
    ("x \\geq 5", "x >= 5"), ("5 \\leq x", "x \\ge 5"), ("x<1", "-x>-1"), ("x \\ne 3", "x != 3"),
    # matrices and vectors
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}"),
    ("\\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right]", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}"),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)"),
    ("\\begin{pmatrix} -\\frac{7}{4} & -2 \\\\ 4 & \\frac{1}{4} \\end{pmatrix}",
     "\\begin{pmatrix} -1.75 & -2 \\\\ 4 & 0.25 \\end{pmatrix}"),
    # misc notation
    ("10!", "3628800"), ("5!!", "15"), ("10!/8!", "90"), ("\\binom{5}{2}", "10"), ("\\dbinom{6}{3}", "20"),
    ("|-3|", "3"), ("\\left|-3\\right|", "3"), ("\\lfloor 2.5 \\rfloor", "2"), ("\\lceil 2.1 \\rceil", "3"),
    ("204_5", "54"), ("1,234", "(1, 234)"),
    # more notation: set-builder, ratios, aliases, labels, degrees inside trig
    ("\\{x \\mid x > 2\\}", "(2,\\infty)"), ("\\{x : 1 \\le x < 3\\}", "[1,3)"),
    ("x < -1 \\text{ or } x > 1", "(-\\infty,-1)\\cup(1,\\infty)"), ("x \\in \\mathbb{R}", "\\text{all real numbers}"),
    ("\\text{no solution}", "\\emptyset"), ("2:3", "\\frac{2}{3}"), ("2:3", "4:6"),
    ("f^{-1}(x) = 2x+1", "2x+1"), ("\\angle A = 30^\\circ", "30"), ("50\\text{\\%}", "0.5"),
    ("\\sin 30^\\circ", "1/2"), ("\\sin 15^\\circ", "\\frac{\\sqrt{6}-\\sqrt{2}}{4}"), ("\\cos(60\u00b0)", "0.5"),
    ("\\frac{1}{1+i}", "\\frac{1-i}{2}"), ("\\ln 2 / \\ln 3", "\\log_3 2"), ("e", "2.718281828"), ("\\exp(1)", "e"),
    ("\\frac{-b \\pm \\sqrt{b^2-4ac}}{2a}", "\\frac{-b + \\sqrt{b^2-4ac}}{2a}, \\frac{-b - \\sqrt{b^2-4ac}}{2a}"),
    ("1.\\overline{27}", "14/11"), ("1011_2", "11"), ("-1 < x < 3", "(-1,3)"), ("[-2, 5]", "-2 \\le x \\le 5"),
    ("12.5\\%", "0.125"), ("6.02 \\times 10^{23}", "602000000000000000000000"), ("\\text{Answer: } 5", "5"),
    ("The answer is \\boxed{5}", "5"), ("5\\mathrm{~cm}", "5"), ("(5 \\text{ cm}, 3 \\text{ cm})", "(5, 3)"),
    ("{1,3}", "(1,3)"), ("oo", "\\infty"), ("(0, oo)", "(0,\\infty)"), ("y=x+1", "x=y-1"), ("x=5", "y=5"),
    ("\\$16,\\!386.20", "16386.20"), ("34x+45y-20z+100=0", "-34x-45y+20z-100=0"),
    ("\\frac{5\\sqrt{42}}{27}", "\\frac{10\\sqrt{10.5}}{27}"),
    ("\\begin{pmatrix}\\frac{1}{3\\sqrt[3]{x}^2}&0\\\\-\\sin(x)&0\\end{pmatrix}",
     "\\begin{pmatrix}\\frac{1}{3x^{2/3}}&0\\\\-\\sin(x)&0\\end{pmatrix}"),
    # text answers
    ("\\text{Evelyn}", "Evelyn"), ("\\text{yes}", "Yes"), ("\\text{(C)}", "C"), ("(B)", "B"),
    ("\\text{no solution}", "No solution"), ("\\textbf{(A)}", "A"), ("10 20", "10~20"),
    # a gap before three digits is a thousands separator, in the text fallback too
    ("1\\ 000", "1000"), ("1\\ 000\\ 000", "1000000"), ("1~000", "1000"), ("1\\;000", "1000"),
    ("\\text{1 000}", "1000"), ("1 000 dollars", "1000 dollars"),
    # exact roots of long integers (a perfect power found without factoring)
    ("\\sqrt{2^{10000}}", "2^{5000}"), ("\\sqrt[3]{-2^{9000}}", "-2^{3000}"), ("(2^{9000})^{-2/3}", "2^{-6000}"),
]

NOT_EQUAL = [
    ("2\\frac12", "1"),  # a mixed number, not 2 * 1/2
    ("2", "-2"), ("1/2", "2"), ("1,2", "12"), ("1,2", "1.2"), ("0,111", "111"), ("10,020", "10, 20"),
    ("1/3", "0.33"), ("0.33333", "1/3"), ("0.5000001", "1/2"), ("1/3", "0.3"), ("\\sqrt{2}", "1.414"),
    ("3.14", "\\pi"), ("3", "\\pi"), ("\\pi/2", "1.5708"), ("2^{100}\\sqrt{2}", "2^{100}\\sqrt{2}+1"),
    ("2^{100}+1", "2^{100}"), ("\\pi \\cdot 10^{-50}", "0"), ("10^{-50}", "0"),
    ("50\\%", "50"), ("0.5\\%", "0.5"), ("50\\%", "5"), ("30^\\circ", "\\frac{\\pi}{6}"),
    ("5 m", "5"), ("100\\text{ cm}", "1"),
    ("x^2-x-6", "x^2+x-6"), ("(x+1)^2", "x^2+1"), ("x^3", "x^2"), ("|x|", "x"), ("2x", "2y"),
    ("x", "y"), ("X", "x"), ("2x+1", "2x-1"), ("\\frac{x}{2}", "\\frac{2}{x}"),
    ("2^{100}x", "2^{100}x+1"), ("\\sin x", "\\cos x"), ("\\log(x^2)", "2\\log x"),
    ("(1,2)", "(2,1)"), ("(1, -2)", "(-2, 1)"), ("(1,2,3)", "(1,2)"), ("(1,2)", "\\{1,2\\}"),
    ("x=2,y=1", "x=1,y=2"), ("(0,9)", "[0,9)"), ("[1,2)", "[1,2]"), ("(1,2)", "[1,2)"),
    ("[1,2]", "1,2"), ("[0,9)", "[0,1)"), ("(-\\infty, 3]", "(-\\infty, 3)"),
    ("\\{1,2\\}", "\\{1,2,3\\}"), ("1, 2, 3", "2"), ("\\{2, 3\\}", "2"), ("\\pm2", "2"),
    ("5 \\text{ or } 6", "5"), ("[4, 6]", "5"),
    ("x \\le 2", "x < 2"), ("x<1", "x>-1"), ("x > 5", "x < 5"), ("x \\geq 5", "x \\leq 5"),
    ("x=3", "x=-3"), ("2x + z = 1", "1"), ("7 = 11a+c", "11a+c"),
    # a chain of `=` that does not hold says nothing: neither side is its answer
    ("5 = 3", "3"), ("5 = 3", "5"), ("x = 5 = 3", "3"), ("2 + 3 = 6", "6"), ("2+3=5, 1+1=3", "5, 3"),
    ("(x-2)(x+5) = x^2+3x-9", "x^2+3x-9"), ("x^2 + 3x = 10", "10"),
    # nor an approximation that does not hold (either side was paid: two guesses in one answer)
    ("1 \\approx 2", "1"), ("1 \\approx 2", "2"), ("\\frac{1}{2} \\approx \\frac{11}{12}", "\\frac{11}{12}"),
    ("\\frac{2}{3} \\approx 0.68", "0.68"), ("x = 1/3 \\approx 0.5", "1/3"), ("7.4 \\approx 8", "8"),
    # words that change the number they label; what looks like f(x) but multiplies; names out of order
    ("46 \\text{ dozen}", "46"), ("\\text{46} \\text{ dozen}", "46"), ("5 hundred", "5"), ("\\text{not } 46", "46"),
    ("\\text{at least } 46", "46"), ("46 \\text{ or more}", "46"), ("x(x+1) = 6", "6"), ("y=1, x=2", "(1,2)"),
    ("g(1, 2) = 3", "4"), ("g(1, 2) = 3 = 4", "4"), ("g(1, 2)", "3"),  # (a name with a comma: = only)
    ("\\sin{(x)}^2", "\\sin(x^2)"), ("[3, 1]", "[5, 2]"),  # (an interval written backwards is none)
    ("-\\infty", "\\infty"), ("\\infty", "10^{100}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&5\\end{bmatrix}"),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "(1,2,3,4)"),
    ("C", "D"), ("\\text{yes}", "no"), ("\\text{Evelyn}", "Evelin"),
    ("1/0", "2/0"), ("\\infty - \\infty", "\\infty - \\infty"),
    ("", "5"), ("5", ""), ("204_5", "204"),
    ("\\sin 30^\\circ", "\\sin 30"), ("2:3", "3:2"), ("\\{x \\mid x > 2\\}", "[2,\\infty)"),
    ("x < -1 \\text{ or } x > 1", "(-\\infty,-1]\\cup(1,\\infty)"), ("\\text{no solution}", "0"),
    ("2^{100}x", "2^{100}x+1"), ("10^{400}x^{50} + 1", "10^{400}x^{50}"), ("1 + 10^{-60}", "1"),
    ("\\sqrt{2} + 10^{-60}", "\\sqrt{2}"), ("\\sin(x)", "\\sin(x + 10^{-40})"),
    ("{1,3}", "(3,1)"), ("y=x+1", "x=y+1"), ("(a+5)(b+2)", "(+5)(b+2)"), ("x+2n+1", "x+1"),
    ("4", "\\frac{34}{16}+\\frac{\\sqrt{1358}}{16}"), ("2", "\\frac{1+\\sqrt{5}}{2}"),
    # digits kept apart are not one number (the text fallback used to drop the gap)
    ("1 2", "12"), ("10 20", "1020"), ("$1$ $23$", "123"), ("1~2", "12"), ("1{}2", "12"),
]


@pytest.mark.parametrize("pred,gold", EQUAL)
def test_equal(pred, gold):
    assert is_equivalent(pred, gold) is True
    assert is_equivalent(gold, pred) is True


@pytest.mark.parametrize("pred,gold", NOT_EQUAL)
def test_not_equal(pred, gold):
    assert is_equivalent(pred, gold) is False
    assert is_equivalent(gold, pred) is False


@pytest.mark.parametrize("decided,equal", [(1, False), (2, True)])
def test_expressions_in_variables_need_two_points_that_agree(monkeypatch, decided, equal):
    """Where every sampled point but a few is a pole or out of range (undecidable), one point that agrees
    says nothing: two must (and none may disagree)."""
    seen = []

    def agree(a, b, pt, loose, deadline=None):
        seen.append(pt)
        return True if len(seen) <= decided else None
    monkeypatch.setattr(verify, "_agree", agree)
    assert is_equivalent("x + 1", "x + 2") is equal
    assert len(seen) == 12  # (every point tried before giving up)


def test_accepts_boxed_and_non_string_inputs():
    assert is_equivalent(r"\boxed{\frac{1}{2}}", "0.5")
    assert is_equivalent("12", 12)
    assert not is_equivalent(None, "1")


def test_parsed_gold_is_cached():
    verify._parse_cached.cache_clear()
    for _ in range(5):
        is_equivalent("x^2 + 1", "(x+1)^2 - 2x")
    info = verify._parse_cached.cache_info()
    assert info.misses == 2 and info.hits == 8


# --------------------------------------------------------------------------- reward and reasons

REASON_CASES = [
    (r"We get $\boxed{42}$.", "42", 1.0, RIGHT),
    (r"We get $\boxed{\frac{84}{2}}$.", "42", 1.0, RIGHT),
    (r"We get $\boxed{41}$.", "42", 0.0, WRONG),
    ("I think it is 42 but I am not sure", "42", 0.0, NO_ANSWER),
    (r"truncated \boxed{4", "42", 0.0, NO_ANSWER),
    (r"\boxed{}", "42", 0.0, NO_ANSWER),
    (r"\boxed{\int_0^1 x\,dx}", "1/2", 0.0, UNPARSABLE),
    (r"\boxed{9^9^9^9}", "1", 0.0, UNPARSABLE),
    (r"\boxed{__import__('os')}", "0", 0.0, UNPARSABLE),
    (r"\boxed{5 = 3}", "3", 0.0, UNPARSABLE), (r"\boxed{1 \approx 2}", "2", 0.0, UNPARSABLE),  # false: no answer
    (r"\boxed{2 + 3 = 5}", "5", 1.0, RIGHT),
    ("The final answer is $x^2-x-6$. I hope it is correct.", "-6 - x + x^2", 1.0, RIGHT),
    (r"\boxed{x = 2 \text{ or } x = 3}", r"\{2, 3\}", 1.0, RIGHT),
    (r"solution \boxed{5}", r"The solution gives \boxed{5}.", 1.0, RIGHT),   # boxed gold is extracted
]


@pytest.mark.parametrize("completion,gold,value,reason", REASON_CASES)
def test_reward_with_reason(completion, gold, value, reason):
    assert reward_with_reason(completion, gold) == (value, reason)
    assert reward(completion, gold) == value
    assert reward_with_reason(completion, gold, finished=False) == (0.0, "truncated")  # cut at the length limit


# the reward asks for the gold's form, where equivalence compares values: a computation is not its result
AS_ASKED = [  # (boxed answer, gold, reward)
    ("27 + 82", "109", 0.0), ("109", "109", 1.0), ("x = 27 + 82", "109", 0.0), ("27 + 82 = 109", "109", 1.0),
    ("5/4 - 1/3", r"\frac{11}{12}", 0.0), ("11/12", r"\frac{11}{12}", 1.0),
    (r"0.91\overline{6}", r"\frac{11}{12}", 1.0),
    (r"\frac{84}{2}", "42", 1.0), (r"\frac{22}{24}", r"\frac{11}{12}", 1.0), (r"\sqrt{4}", "2", 0.0),
    ("15 - 8", "7", 0.0), ("15 + 8 - 30", "-7", 0.0), ("-7", "-7", 1.0), ("(-7)", "-7", 1.0), ("-7.0", "-7", 1.0),
    (r"2\frac{1}{2}", r"\frac{5}{2}", 1.0), ("50\\%", r"\frac{1}{2}", 1.0), ("1,000,000", "10^6", 1.0),
    ("10^6", "1000000", 1.0), ("2^{10}", "1024", 0.0), ("1024", "2^{10}", 1.0),  # a gold written as a computation
    (r"\frac{11}{12} \approx 0.917", r"\frac{11}{12}", 1.0),  # (the exact value before the approximation)
    ("(3x - 12)(3x + 8)", "9x^2 - 12x - 96", 0.0), ("9x^2 - 12x - 96", "9x^2 - 12x - 96", 1.0),
    ("-96 - 12x + 9x^2", "9x^2 - 12x - 96", 1.0), ("-2(x - 8)", "-2x + 16", 0.0), ("(x-6)^2", "x^2 - 12x + 36", 0.0),
    ("x^2 - x - 6", "(x-3)(x+2)", 0.0), ("(x+2)(x-3)", "(x-3)(x+2)", 1.0),  # a factored gold: factored answers
    ("(x-2)(x+5) = x^2 + 3x - 10", "x^2 + 3x - 10", 1.0), ("x^2 + 3x - 10 = (x-2)(x+5)", "x^2 + 3x - 10", 0.0),
    ("x^2 + 3x - 10 = (x-2)(x+5)", "(x-2)(x+5)", 1.0),  # an identity: its right side, in that side's form
    ("x^2 + {10 - 3}x - 30", "x^2 + 7x - 30", 0.0), ("{x^2 + 7x - 30}", "x^2 + 7x - 30", 1.0),  # braces that group
    (r"\frac{\sqrt{2}}{2}", "0.707107", 1.0), ("0.707107", r"\frac{\sqrt{2}}{2}", 1.0),  # (no rational, no rule)
    # the copied question inside a set, a list or a \pm: not the one value asked for
    (r"\{27+82\}", "109", 0.0), ("27+82, 27+82", "109", 0.0), (r"x \in \{27+82\}", "109", 0.0),
    (r"27+82 \text{ or } 27+82", "109", 0.0), (r"27+82 \pm 0", "109", 0.0), (r"\{(x-3)(x+2)\}", "x^2 - x - 6", 0.0),
    # numbers written as numbers in other ways
    (r"30^\circ", "30", 1.0), (r"45\degree", "45", 1.0), ("30\u00b0", "30", 1.0), (r"10^{-3}", "0.001", 1.0),
    (r"2.5\times10^{-3}", "0.0025", 1.0), (r"\frac{5}{-6}", r"-\frac56", 1.0), ("-(7)", "-7", 1.0),
    (r"-\left(\frac{7}{6}\right)", r"-\frac76", 1.0), ("(1/2)", r"\frac12", 1.0), ("(2)(3)", "6", 0.0),
    (r"\frac{11}{12} \approx 0.92", "0.92", 1.0), (r"\pi \approx 3.14", "3.14", 1.0),  # either side of \approx
    # the copied question wrapped in something worth 0 or 1 (a review found each paid on every task)
    ("59 + 17 + 0x", "76", 0.0), ("x = 59 + 17 + 0x", "76", 0.0), ("59 + 17 + i - i", "76", 0.0),
    (r"59 + 17 + \sin 0", "76", 0.0), ("(59 + 17)e^0", "76", 0.0), (r"|59 + 17|", "76", 0.0),
    (r"e^{\ln(59 + 17)}", "76", 0.0), (r"\frac{(59 + 17)x}{x}", "76", 0.0), (r"6/7 + 2/7 + 0x", r"\frac{8}{7}", 0.0),
    (r"(4x + 8)(2x - 8) \cdot \frac{x}{x}", "8x^2 - 16x - 64", 0.0),
    (r"(4x + 8)(2x - 8) + \frac1x - \frac1x", "8x^2 - 16x - 64", 0.0),
    (r"x^2 - x - 6 + \frac1x - \frac1x", "(x-3)(x+2)", 0.0),
    # coefficients left as computations, FOIL terms, like terms not combined
    (r"(4\cdot 2)x^2 + (4\cdot(-8) + 8\cdot 2)x + 8\cdot(-8)", "8x^2 - 16x - 64", 0.0),
    ("(4x)(2x) + (4x)(-8) + (8)(2x) + (8)(-8)", "8x^2 - 16x - 64", 0.0), ("(-7)(x) + (-7)(-9)", "-7x + 63", 0.0),
    ("x^2 + 2x + x - 6", "x^2 + 3x - 6", 0.0), ("8x^2 - 16x - 64 + 0x", "8x^2 - 16x - 64", 0.0),
    # results written in other ways
    (r"\textbf{76}", "76", 1.0), (r"\text{76}", "76", 1.0), ("(-5)/6", r"-\frac{5}{6}", 1.0),
    (r"\frac{(-5)}{6}", r"-\frac{5}{6}", 1.0), ("(8)/7", r"\frac{8}{7}", 1.0), ("25 percent", "0.25", 1.0),
    ("x^2 + -7x + -18", "x^2 - 7x - 18", 1.0), ("(x)^2 - 7(x) - 18", "x^2 - 7x - 18", 1.0),
    ("x^2 + 8x + (-9)", "x^2 + 8x - 9", 1.0), (r"8 \cdot x^2 - 16 \cdot x - 64", "8x^2 - 16x - 64", 1.0),
    (r"\frac{1}{2}x + 1", r"\frac{x}{2} + 1", 1.0),
    # a second review: what looks like a mixed number but is read as a product; a sign before parentheses
    (r"5700\frac7{10}", "3990", 0.0), (r"(5700)\frac{7}{10}", "3990", 0.0), (r"(-2)\frac{1}{2}", "-1", 0.0),
    (r"-(-(x^2 + 2x + x - 6))", "x^2 + 3x - 6", 0.0), ("-(x + 6 + x + 6)", "-2x - 12", 0.0),
    ("x^2 + 18x + 76 + x^0", "x^2 + 18x + 77", 0.0), ("(x^2 - 1)", "x^2 - 1", 1.0),
]


@pytest.mark.parametrize("answer,gold,value", AS_ASKED)
def test_the_reward_wants_the_result_in_the_golds_form(answer, gold, value):
    """`\\boxed{27 + 82}` for "Compute 27 + 82." earned the reward (equal values), so a policy could copy
    the question into its box; it earns nothing now, while is_equivalent still compares values."""
    assert reward(rf"so \boxed{{{answer}}}.", gold) == value, (answer, gold)
    assert is_equivalent(answer, gold)


def test_the_committed_results_verdicts_are_the_rewards():
    """Every answer of the committed evaluations that kept their records (results/**/records.json: seven
    evaluations, fifteen runs) is judged as it was when they ran: a change to the checker that would move their
    numbers fails here."""
    import glob
    import json
    verdicts = {}  # (answer, gold) -> the verdicts recorded for it
    root = os.path.join(os.path.dirname(__file__), "..", "results")
    files = sorted(glob.glob(os.path.join(root, "**", "records.json"), recursive=True))
    assert len(files) >= 4
    for f in files:
        for records in json.load(open(f)).values():
            for r in records:
                for s in r["samples"] + [r["greedy"]]:
                    if s["answer"] is not None:
                        verdicts.setdefault((s["answer"], r["gold"]), set()).add(s["correct"])
    assert len(verdicts) > 1000 and {True, False} <= set().union(*verdicts.values())
    changed = [(a, g, v) for (a, g), v in verdicts.items() if v != {reward(rf"\boxed{{{a}}}", g) == 1.0}]
    assert not changed, changed[:10]


def test_reason_constants():
    assert set(REASONS) == {"no_answer", "unparsable", "wrong", "right", "truncated"}
    assert (NO_ANSWER, UNPARSABLE, WRONG, RIGHT) == ("no_answer", "unparsable", "wrong", "right")


# --------------------------------------------------------------------------- hostile input safety

PAYLOADS = [
    "__import__('os').system('echo pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "{0.__class__}",
    "{0.__init__.__globals__}",
    "lambda: 1",
    "eval('1+1')",
    "exec('import os')",
    "x.__class__",
    "sympy.sympify('1')",
    "open('/etc/passwd').read()",
    "__builtins__",
    "Symbol('x')",
    "\\boxed{__import__(\"os\")}",
    "1; import os",
    "globals()",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_payloads_are_not_answers(payload):
    assert is_equivalent(payload, "1") is False
    assert is_equivalent("1", payload) is False
    assert is_equivalent(payload, payload) is False          # not even equal to itself
    assert reward_with_reason(rf"\boxed{{{payload}}}", "2") in ((0.0, UNPARSABLE), (0.0, NO_ANSWER))


def test_payloads_have_no_side_effects(tmp_path):
    target = tmp_path / "pwned"
    t = str(target)
    payloads = [
        f"__import__('os').system('touch {t}')",
        f"open('{t}', 'w').write('x')",
        f"__import__('pathlib').Path('{t}').touch()",
        f"exec(\"open('{t}','w')\")",
        f"(lambda: __import__('os').system('touch {t}'))()",
    ]
    for p in payloads:
        assert not is_equivalent(p, "0")
        assert not is_equivalent("0", p)
        assert reward(rf"\boxed{{{p}}}", "0") == 0.0
        assert reward(rf"\boxed{{{p}}}", p) == 0.0
    assert not target.exists()


def test_model_text_never_reaches_a_code_parser(monkeypatch):
    """sympify(str) goes through parse_expr, which evaluates Python: it must never be called, and
    neither may eval/exec, whatever the input."""
    import builtins

    import sympy.parsing.sympy_parser as sp_parser

    calls = []

    def trap(name):
        def f(*args, **kwargs):
            calls.append((name, args[:1]))
            raise AssertionError(f"{name} called")
        return f

    monkeypatch.setattr(sp_parser, "parse_expr", trap("parse_expr"))
    monkeypatch.setattr(builtins, "eval", trap("eval"))
    monkeypatch.setattr(builtins, "exec", trap("exec"))
    verify._parse_cached.cache_clear()
    inputs = [p for p, _ in EQUAL[::3]] + [p for p, _ in NOT_EQUAL[::3]] + PAYLOADS
    for s in inputs:
        is_equivalent(s, "x^2 + 1")
        reward_with_reason(rf"\boxed{{{s}}}", "(1, 2)")
    assert calls == []


# --------------------------------------------------------------------------- time bounds

HOSTILE = [
    ("9^9^9^9", "1"),
    ("10^{10^{10}}", "10^{10^{10}}"),
    ("2^{2^{100}}", "2"),
    ("2^{-2^{100}}", "0"),
    ("(1/2)^{10^9}", "0"),
    ("\\sqrt{2}^{10^9}", "1"),
    ("(" * 10_000 + "1" + ")" * 10_000, "1"),
    ("\\frac{" * 3000 + "1" + "}{2}" * 3000, "0"),
    ("(" * 38 + "x" + ")" * 38, "x+1"),
    ("x" * 1_000_000, "x"),
    ("1" * 1_000_000, "1"),
    ("(x+1)^{1000}", "x^{1000}+1"),
    ("(x+y+z)^{50}", "(x+y+z)^{49}"),
    ("(x+1)^{2000}", "(x-1)^{2000}"),
    ("x^{2000} - 1", "(x-1)(x+1)"),
    ("e^{e^{e^{e^{e^{x}}}}}", "x"),
    ("e^{e^{e^{e^{e^{e}}}}}", "1"),
    ("\\sin(10^{5000})", "0"),
    ("1000!", "1"),
    ("\\binom{10000}{5000}", "1"),
    ("\\sqrt{" * 60 + "2" + "}" * 60, "2"),
    ("\\{" + ",".join(f"x^{{{i}}}" for i in range(32)) + "\\}", "\\{" + ",".join(f"x^{{{i + 1}}}" for i in range(32)) + "\\}"),
    ("10^{400}x^{50} + 1", "10^{400}x^{50}"),
    # inputs on which sympy's own numerics never return (found by fuzzing): they must not reach it
    ("\\sin(\\sin(a+(100!)(i+3)))", "y"),
    ("|\\sqrt{(\\pi)(\\sqrt{i}+2)}|", "\\ln(|x|-2)"),
    ("2^{100} \\pm \\sinh(\\sin(-(0)))+\\tan(\\binom{\\cos(a)}{0.5 \\pm 10^{50}})", "1"),
    ("(\\sqrt[3]{\\sqrt{\\sinh(0)}}, \\sqrt{\\log_{\\ln(3+\\sqrt{i})}(\\sqrt{i})}\\cdot 100)", "(0, 1)"),
    ("(\\sinh((7)(x))!)^{\\sqrt{2}\\%}-\\cos((\\sqrt{e-1.5})(y))", "\\ln(\\pi)\\%"),
    ("x = \\arctan((\\frac{1}{3})^{(\\sqrt[3]{2^{100}})(1)}\\cdot \\tan(\\ln(1.5))\\%)", "\\lfloor 100 \\rfloor"),
    ("\\frac{\\lfloor \\sqrt[3]{\\log_{\\sqrt{i} \\pm 100}((\\infty)^{2})} \\rfloor}{\\sqrt{(\\tan(10\\cdot 2^{100}))(\\sqrt[3]{2})}}", "1"),
    ("\\sin(10^{300} x)", "\\cos(10^{300} x)"),
    # roots of long integers: sympy's search for a perfect power factors them (14 s to minutes; found by fuzzing)
    ("(3^{9000}+1)^{1/2}", "1"), ("(3^{9000}*5^{6000}+1)^{1/2}", "1"), ("\\sqrt[3]{\\binom{10000}{5000}+1}", "1"),
    ("\\frac{2^{9000}+1}{7^{5000}}^{1/2}", "1"),
    ("e^{e^{e^{e^{x}}}}", "e^{e^{e^{e^{x}}}} + 1"),
    ("\\{" + ",".join(f"\\tan(\\arctan(x y + {k}))" for k in range(32)) + "\\}",
     "\\{" + ",".join(f"xy+{k + 1}" for k in range(32)) + "\\}"),
]


# The hostile cases below check behaviour (an answer, no exception, no hang); how fast the verifier
# answers them is measured by `python bench.py --only verify` (verify.hostile_max_latency_s, target
# <= 1 s), not asserted here: a wall-clock bound in a test fails on a loaded machine.
HANG_S = 30  # a worker that has not returned by then is hung, whatever the machine's load


@pytest.mark.parametrize("pred,gold", HOSTILE, ids=[f"h{i}" for i in range(len(HOSTILE))])
def test_hostile_inputs_are_not_equal(pred, gold):
    verify._parse_cached.cache_clear()
    assert is_equivalent(pred, gold) is False
    assert is_equivalent(gold, pred) is False


@pytest.mark.parametrize("pred,gold", HOSTILE, ids=[f"t{i}" for i in range(len(HOSTILE))])
def test_hostile_inputs_in_worker_thread(pred, gold):
    verify._parse_cached.cache_clear()
    out = {}

    def work():
        out["r"] = reward_with_reason(rf"\boxed{{{pred}}}", gold)

    th = threading.Thread(target=work, daemon=True)
    th.start()
    th.join(timeout=HANG_S)
    assert not th.is_alive(), "verifier hung in a worker thread"
    assert out["r"][0] == 0.0


def test_hostile_completions_extraction_is_fast():
    big = [
        "\\boxed{" * 200_000,                 # never closed
        "\\boxed{1}" * 100_000,               # 900k characters of boxes
        "The answer is " * 70_000 + "5",      # many fallback markers
        "{" * 500_000 + "\\boxed{3}",
        "$" * 1_000_000,
    ]
    expected = [0.0, 0.0, 0.0, 1.0, 0.0]  # only the fourth ends in a complete \boxed{3}
    assert [reward_with_reason(text, "3")[0] for text in big] == expected


def test_many_hostile_inputs_in_parallel_threads():
    verify._parse_cached.cache_clear()
    results = []

    def work(p, g):
        results.append(is_equivalent(p, g))

    threads = [threading.Thread(target=work, args=pg, daemon=True) for pg in HOSTILE[:8]]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=HANG_S)
    assert all(not th.is_alive() for th in threads)
    assert results == [False] * len(threads)
