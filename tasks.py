"""Synthetic math problems with step-by-step worked solutions, deterministic by seed.

Five families, each with difficulty levels 1 (easiest) to 3:

  arithmetic  column addition / subtraction with carries and borrows written out; multiplication with
              its partial products
  linear      linear equations in one unknown with an integer solution
  fraction    fraction arithmetic with a common denominator and simplification by the gcd
  polynomial  expanding products of linear factors (answers like `x^2 - x - 6`, which a checker must
              compare symbolically: `-6 - x + x^2` is the same answer; `(x-3)(x+2)` is the question,
              and the reward refuses it: verify._not_as_asked)
  word        short word problems of one to three steps

Every solution ends in `\\boxed{answer}`; `answer` is the exact gold string.

Splits: train, validation and test. A problem's split is fixed by a hash of its canonical key
(`canonical_key`): the numbers in its text as a sorted multiset, and its gold answer. Wording, names,
items, operand order and even the family drop out, so `Compute 12 + 34.`, `Compute 34 + 12.` and
`Ana has 12 pens and gets 34 more. ...` share one key and one split: a held-out problem never has a
training twin that differs only in its surface. (A key can merge problems that are not twins, e.g. two
different computations on the same numbers with the same answer; that only makes the split stricter.)
Generators reject problems of other splits, so no seed or count can make two splits share a key.
Validation problems are for in-training evaluation and any tuning; test problems only for evaluate.py.

Outside data: `load_jsonl(path)` reads `{"problem": ..., "answer": ...[, "solution": ...]}` lines and
names the line number of any malformed one; `keep_split` filters them by the same keys, with their
answers written as the generators write them (`outside_key`).
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import random
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from math import gcd

FAMILIES = ("arithmetic", "linear", "fraction", "polynomial", "word")
LEVELS = (1, 2, 3)
SPLITS = ("train", "validation", "test")
TEST_PERCENT = 10  # share of the key space reserved for the test split
VAL_PERCENT = 10   # and for the validation split


@dataclass(frozen=True)
class Problem:
    problem: str
    answer: str
    solution: str | None = None
    family: str = "external"
    level: int = 0

    @property
    def key(self) -> str:
        return canonical_key(self.problem, self.answer)


# --------------------------------------------------------------------------- helpers

def _signed(n: int) -> str:
    """`+ 3` or `- 3`, for writing terms after the first."""
    return f"+ {n}" if n >= 0 else f"- {-n}"


def _frac(q: Fraction) -> str:
    """LaTeX for a reduced fraction; integers stay plain."""
    if q.denominator == 1:
        return str(q.numerator)
    sign = "-" if q < 0 else ""
    return f"{sign}\\frac{{{abs(q.numerator)}}}{{{q.denominator}}}"


def _plain_frac(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def _poly(coeffs: dict[int, int]) -> str:
    """Write sum(c * x^p) in descending powers: {2: 1, 1: -1, 0: -6} -> 'x^2 - x - 6'."""
    terms = []
    for p in sorted(coeffs, reverse=True):
        c = coeffs[p]
        if c == 0:
            continue
        mag = abs(c)
        body = {0: f"{mag}", 1: "x", 2: "x^2"}.get(p, f"x^{p}")
        if p > 0 and mag != 1:
            body = f"{mag}{body}"
        if not terms:
            terms.append(("-" if c < 0 else "") + body)
        else:
            terms.append(("- " if c < 0 else "+ ") + body)
    return " ".join(terms) if terms else "0"


def _p(n: int) -> str:
    """Parenthesise negatives inside products: 3 -> '3', -3 -> '(-3)'."""
    return f"({n})" if n < 0 else str(n)


def _lin(a: int, b: int) -> str:
    """Write a*x + b."""
    return _poly({1: a, 0: b})


# --------------------------------------------------------------------------- families

def _columns(a: int, b: int, op: str) -> tuple[list[str], int]:
    """Column addition, subtraction or multiplication by one digit, ones column first.

    Each line does one column and ends with the running result, so every step only needs the digits
    of its column and the line above it:  "9+7+0=16, 6" then "5+1+1=7, 76".
    The third term is the carry (or borrow) coming in from the previous column.
    """
    da = str(a)[::-1]
    db = str(b)[::-1] if op != "*" else ""
    lines, c, res = [], 0, ""
    for i in range(len(da) if op != "+" else max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        if op == "+":
            v = x + y + c
            line, digit, c = f"{x}+{y}+{c}={v}", v % 10, v // 10
        elif op == "-":
            v = x - y - c
            line = f"{x}-{y}-{c}={v}" + (f"+10={v + 10}" if v < 0 else "")
            digit, c = v % 10, int(v < 0)
        else:
            y = b
            v = x * y + c
            line, digit, c = f"{x}*{y}+{c}={v}", v % 10, v // 10
        res = f"{digit}{res}"
        lines.append(f"{line}, {res}")
    if c:
        res = f"{c}{res}"
        lines.append(f"carry {c}, {res}")
    return lines, int(res)


def arithmetic(rng: random.Random, level: int) -> Problem:
    if level == 1:
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), "+"
    elif level == 2:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        a, b, op = (a, b, "+") if rng.random() < 0.5 else (max(a, b), min(a, b), "-")
    else:
        a, b, op = rng.randint(100, 999), rng.randint(2, 9), "*"
    steps, ans = _columns(a, b, op)
    return Problem(f"Compute {a} {op} {b}.", str(ans), "\n".join(steps) + f"\n\\boxed{{{ans}}}",
                   "arithmetic", level)


def linear(rng: random.Random, level: int) -> Problem:
    x = rng.randint(-12, 12) if level == 1 else rng.randint(-9, 9)
    a = rng.choice([i for i in range(-5, 6) if i not in (-1, 0, 1)]) if level > 1 else 1
    b = rng.choice([i for i in range(-12 if level == 1 else -9, 13 if level == 1 else 10) if i != 0])
    if level == 1:
        c = x + b
        q = f"Solve for x: {_lin(1, b)} = {c}."
        steps = [f"x = {c} {_signed(-b)}", f"x = {x}"]
    elif level == 2:
        c = a * x + b
        q = f"Solve for x: {_lin(a, b)} = {c}."
        steps = [f"{a}x = {c} {_signed(-b)} = {c - b}", f"x = {c - b} / {a} = {x}"]
    else:
        cc = rng.choice([i for i in range(-5, 6) if i not in (0, a)])
        d = a * x + b - cc * x
        q = f"Solve for x: {_lin(a, b)} = {_lin(cc, d)}."
        steps = [f"{a}x {_signed(-cc)}x = {d} {_signed(-b)}",
                 f"{a - cc}x = {d - b}", f"x = {d - b} / {a - cc} = {x}"]
    return Problem(q, str(x), "\n".join(steps) + f"\n\\boxed{{{x}}}", "linear", level)


def fraction(rng: random.Random, level: int) -> Problem:
    if level == 1:
        d = rng.randint(3, 12)
        a, c = rng.randint(1, d - 1), rng.randint(1, d - 1)
        b = d
        op = "+"
    else:
        b, d = rng.randint(2, 6), rng.randint(2, 6)
        a, c = rng.randint(1, 2 * b - 1), rng.randint(1, 2 * d - 1)
        op = rng.choice("+-") if level == 2 else rng.choice("+-*")
    x, y = Fraction(a, b), Fraction(c, d)
    q = f"Compute {a}/{b} {op} {c}/{d}."
    if op == "*":
        num, den = a * c, b * d
        steps = [f"{a}/{b} * {c}/{d} = ({a}*{c})/({b}*{d}) = {num}/{den}"]
        val = x * y
    else:
        den = b * d // gcd(b, d)
        ka, kc = den // b, den // d
        num = a * ka + c * kc if op == "+" else a * ka - c * kc
        steps = []
        if b != d:
            steps.append(f"common denominator {den}: {a}/{b} = {a * ka}/{den}, {c}/{d} = {c * kc}/{den}")
        steps.append(f"{a * ka}/{den} {op} {c * kc}/{den} = {num}/{den}")
        val = x + y if op == "+" else x - y
    g = gcd(num, den)
    if g > 1:
        steps.append(f"divide by {g}: {num}/{den} = {_plain_frac(val)}")
    return Problem(q, _frac(val), "\n".join(steps) + f"\n\\boxed{{{_frac(val)}}}", "fraction", level)


def polynomial(rng: random.Random, level: int) -> Problem:
    nz = [i for i in range(-9, 10) if i != 0]
    if level == 1:
        k = rng.choice([i for i in range(-9, 10) if abs(i) > 1])
        b = rng.choice(nz)
        q = f"Expand {k}(x {_signed(b)})."
        ans = _lin(k, k * b)
        steps = [f"{k}*x = {k}x", f"{k}*{_p(b)} = {k * b}", f"{k}(x {_signed(b)}) = {ans}"]
    else:
        a = 1 if level == 2 else rng.randint(2, 4)
        c = 1 if level == 2 else rng.randint(1, 3)
        b, d = rng.choice([i for i in range(-12, 13) if i != 0]), rng.choice(nz)
        f1 = f"({_lin(a, b)})"
        f2 = f"({_lin(c, d)})"
        q = f"Expand {f1}{f2}."
        mid = a * d + b * c
        ans = _poly({2: a * c, 1: mid, 0: b * d})
        steps = [f"x^2 terms: {a}*{c} = {a * c}",
                 f"x terms: {a}*{_p(d)} {_signed(b)}*{c} = {a * d} {_signed(b * c)} = {mid}",
                 f"constant: {b}*{_p(d)} = {b * d}",
                 f"{f1}{f2} = {ans}"]
    return Problem(q, ans, "\n".join(steps) + f"\n\\boxed{{{ans}}}", "polynomial", level)


_NAMES = ("Ana", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Ivy", "Jon", "Kai", "Lea", "Max")
_ITEMS = ("apples", "pens", "stickers", "coins", "books", "cards", "marbles", "shells")


def word(rng: random.Random, level: int) -> Problem:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    if level == 1:
        a, b = rng.randint(5, 40), rng.randint(2, 9)
        if rng.random() < 0.5:
            q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
            steps, ans = [f"{a} + {b} = {a + b}"], a + b
        else:
            a = a + b
            q = f"{name} has {a} {item} and gives away {b}. How many {item} are left?"
            steps, ans = [f"{a} - {b} = {a - b}"], a - b
    elif level == 2:
        n, k, a = rng.randint(2, 6), rng.randint(2, 9), rng.randint(2, 20)
        q = (f"{name} has {a} {item} and buys {n} boxes with {k} {item} each. "
             f"How many {item} does {name} have now?")
        steps, ans = [f"{n} * {k} = {n * k}", f"{a} + {n * k} = {a + n * k}"], a + n * k
    else:
        n, k, m = rng.randint(2, 6), rng.randint(3, 9), rng.randint(2, 5)
        # choose the gift so that the rest divides evenly and each friend gets at least one
        gift = (n * k) % m + m * rng.randint(0, max(0, (n * k) // m - 2))
        total = n * k - gift
        share = total // m
        q = (f"{name} buys {n} packs of {k} {item}, gives {gift} to a neighbour and shares the rest "
             f"equally among {m} friends. How many {item} does each friend get?")
        steps = [f"{n} * {k} = {n * k}", f"{n * k} - {gift} = {total}", f"{total} / {m} = {share}"]
        ans = share
    return Problem(q, str(ans), "\n".join(steps) + f"\n\\boxed{{{ans}}}", "word", level)


GENERATORS = {"arithmetic": arithmetic, "linear": linear, "fraction": fraction,
              "polynomial": polynomial, "word": word}


def make_problem(rng: random.Random, family: str, level: int) -> Problem:
    """One problem of `family` at `level`, drawn from `rng` (either split)."""
    if family not in GENERATORS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose from {LEVELS}")
    return GENERATORS[family](rng, level)


# --------------------------------------------------------------------------- splits

def canonical_key(problem_text: str, answer: str) -> str:
    """The computation behind a problem, with its surface removed: the sorted numbers of the text and
    the gold answer without spaces. `Compute 34 + 12.` -> '12,34=46'. (The numbers are compared as
    digit strings, shortest first: the order of their values, for numbers of any length.)"""
    numbers = [("".join(str(unicodedata.digit(c)) for c in n).lstrip("0") or "0")  # (any script's digits)
               for n in re.findall(r"\d+", problem_text)]
    numbers.sort(key=lambda n: (len(n), n))
    return ",".join(numbers) + "=" + re.sub(r"\s+", "", answer)


def split_of(key: str) -> str:
    """'train', 'validation' or 'test', fixed by a hash of a canonical key (independent of any seed)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % 100
    return "test" if h < TEST_PERCENT else "validation" if h < TEST_PERCENT + VAL_PERCENT else "train"


def sample_problem(rng: random.Random, split: str, families=FAMILIES, levels=LEVELS) -> Problem:
    """Draw family and level uniformly, then a problem of that split (rejection sampling)."""
    family, level = rng.choice(list(families)), rng.choice(list(levels))
    for _ in range(10_000):
        p = make_problem(rng, family, level)
        if split_of(p.key) == split:
            return p
    raise RuntimeError(f"could not draw a {split} problem for {family} level {level}")


def make_split(split: str, n: int, seed: int = 0, families=FAMILIES, levels=LEVELS) -> list[Problem]:
    """`n` problems of `split` with distinct keys, balanced over families and levels, deterministic by
    seed. Raises ValueError when a (family, level) cell of the split holds fewer keys than asked for."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = random.Random(f"{split}-{seed}")
    cells = [(f, lv) for f in families for lv in levels]
    out, seen = [], set()
    for i in range(n):
        f, lv = cells[i % len(cells)]
        for _ in range(10_000):
            p = make_problem(rng, f, lv)
            if split_of(p.key) == split and p.key not in seen:
                break
        else:
            have = sum(1 for q in out if (q.family, q.level) == (f, lv))
            want = -(-n // len(cells))
            raise ValueError(f"{n} {split} problems need {want} of {f} level {lv}, but the {split} split "
                             f"holds only about {have} distinct ones: ask for at most "
                             f"{have * len(cells)} or drop that level")
        seen.add(p.key)
        out.append(p)
    return out


@functools.lru_cache(maxsize=65536)
def generator_form(answer: str) -> str | None:
    """`answer`'s value written as the generators write their answers, where it is a value they could
    give: an integer (`46.0`, `x = 46` -> `46`), a reduced fraction (`8/7`, `16/14` -> `\\frac{8}{7}`),
    or a polynomial in x with integer coefficients (`(x-3)(x+2)`, `x**2-x-6` -> `x^2 - x - 6`); else
    None. Every generated answer is its own generator form."""
    m = re.fullmatch(r"\s*(-?)0*(\d+)\s*", answer)
    if m:  # the common case, without a parse
        return ("" if m[2] == "0" else m[1]) + m[2]
    import sympy  # (here: sympy's import only for outside answers that are not plain integers)

    import verify
    v = verify.answer_value(answer)
    try:
        if v is None:
            return None
        if v.is_Rational:
            return _frac(Fraction(int(v.p), int(v.q)))
        (x, *more) = v.free_symbols or (None,)
        small = sum(1 for _ in sympy.preorder_traversal(v)) <= 200 and _degree_bound(v) <= 12  # cheap to expand
        if x is not None and not more and x.name == "x" and small:
            poly = sympy.Poly(v.doit(), x)  # (the checker's parse leaves sums and products unevaluated)
            if poly.domain.is_ZZ:
                return _poly({deg: int(c) for (deg,), c in poly.terms()})
    except (ValueError, TypeError, ArithmeticError, sympy.PolynomialError):  # (a 4,300-digit integer's str)
        pass
    return None


def _degree_bound(e) -> float:
    """An upper bound on the degree of expression `e` in its symbols, from its tree (inf where a power's
    exponent is not a non-negative integer): what expanding it could cost, known before expanding."""
    if e.is_Symbol:
        return 1
    if e.is_Number:
        return 0
    if e.is_Pow:
        return _degree_bound(e.base) * int(e.exp) if e.exp.is_Integer and e.exp >= 0 else math.inf
    parts = [_degree_bound(a) for a in e.args]
    return sum(parts) if e.is_Mul else max(parts, default=math.inf) if e.is_Add else math.inf


def outside_key(problem_text: str, answer: str) -> str:
    """The canonical key of an outside problem: `canonical_key` with its answer in the generators' form
    where it has one, so that a held-out problem worded afresh, with its answer written another way
    (`8/7` for `\\frac{8}{7}`), keeps the held-out problem's split."""
    return canonical_key(problem_text, generator_form(answer) or answer)


def keep_split(problems: list[Problem], split: str = "train") -> tuple[list[Problem], int]:
    """The outside problems whose key (`outside_key`) belongs to `split` (e.g. for training), and how
    many were dropped."""
    kept = [p for p in problems if split_of(outside_key(p.problem, p.answer)) == split]
    return kept, len(problems) - len(kept)


def train_batch(step: int, batch_size: int, seed: int, families=FAMILIES, levels=LEVELS) -> list[Problem]:
    """The training problems for one step: a pure function of (seed, step), so the data cursor of a
    run is just its step number and a resumed run sees exactly the same problems."""
    rng = random.Random(f"train-{seed}-{step}")
    return [sample_problem(rng, "train", families, levels) for _ in range(batch_size)]


# --------------------------------------------------------------------------- outside data

def load_jsonl(path: str) -> list[Problem]:
    """Read `{"problem": str, "answer": str|number[, "solution": str, "family": str, "level": int]}`
    lines. Blank lines are skipped; anything else that is wrong (a malformed line, a missing or
    mistyped field, a binary file, a directory, a file with no problem at all) raises ValueError
    naming the file and, where there is one, the line."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not a JSONL file")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        before = io.StringIO(data[:e.start].decode("utf-8"), newline=None).read()  # (lines as parsing splits them)
        line, col = before.count("\n") + 1, e.start - max(data.rfind(b"\n", 0, e.start), data.rfind(b"\r", 0, e.start))
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {col} of the line); expected JSON lines") from None
    out = []
    for lineno, line in enumerate(io.StringIO(text, newline=None), 1):  # (universal newlines, as open's)
        if line.strip():
            out.append(_problem_from_line(line, f"{path}:{lineno}"))
    if not out:
        raise ValueError(f"{path}: no problems in the file (expected one JSON object per line)")
    return out


def _not_a_number(name: str):
    raise ValueError(f"{name} is not a number this data can hold")


def json_object(text: str) -> dict:
    """One JSON line as a dict; ValueError saying what is wrong with it (the caller says where)."""
    try:
        obj = json.loads(text, parse_constant=_not_a_number)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


# (tiktoken's pre-tokenizer fails on a run of about a million); tried only where a run starts: linear time
_LONG_SPACE = re.compile(r"(?<!\s)\s{100000}|^\s{100000}")


def _problem_from_line(line: str, where: str) -> Problem:
    try:
        obj = json_object(line)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    for key in ("problem", "answer"):
        if key not in obj:
            raise ValueError(f"{where}: missing required key {key!r}")
    if not isinstance(obj["problem"], str) or not obj["problem"].strip():
        raise ValueError(f"{where}: 'problem' must be a non-empty string")
    ans = obj["answer"]
    if isinstance(ans, bool) or not isinstance(ans, (str, int, float)) or not str(ans).strip():
        raise ValueError(f"{where}: 'answer' must be a non-empty string or a number")
    if isinstance(ans, float) and not math.isfinite(ans):
        raise ValueError(f"{where}: 'answer' {ans} is not a finite number")
    for key in ("problem", "answer", "solution"):
        if _LONG_SPACE.search(str(obj.get(key) or "")):
            raise ValueError(f"{where}: {key!r} holds a run of 100,000 or more whitespace characters, "
                             "more than the tokenizer can take")
    sol = obj.get("solution")
    if sol is not None and not isinstance(sol, str):
        raise ValueError(f"{where}: 'solution' must be a string")
    level = obj.get("level", 0)
    if isinstance(level, bool) or not isinstance(level, int):
        raise ValueError(f"{where}: 'level' must be an integer")
    return Problem(obj["problem"], str(ans), sol, str(obj.get("family", "external")), level)
