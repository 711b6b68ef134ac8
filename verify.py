r"""Answer extraction and answer-equivalence checking; `reward` is the RL reward.

Public API
----------
``extract_answer(text) -> str | None``
    The content of the LAST top-level ``\boxed{...}`` or ``\fbox{...}`` (balanced braces, escaped
    ``\{ \}`` skipped, nested boxes unwrapped), or of ``\boxed 5`` (space form: the next run of
    non-space characters). If that box is empty or never closed (a truncated generation) there is no
    answer (None). Only when the text contains no box at all, two conservative fallbacks are tried,
    last occurrence wins: ``#### X`` (GSM8K style) and "(final) answer is X" / "answer: X". X is the
    rest of that line, reduced to its first ``$...$`` if it has one, else cut at the first sentence
    end (". "); it must contain a digit, a ``$`` or a backslash, so prose ("the answer is clear") is
    not an answer. A bare last ``$...$`` is NOT treated as an answer.
``is_equivalent(pred, gold) -> bool``
    True iff the two answer strings denote the same mathematical object. A string containing a box
    is reduced to its extracted answer first.
``reward(completion, gold) -> float`` and ``reward_with_reason(completion, gold) -> (float, reason)``
    1.0 or 0.0; reason is one of NO_ANSWER, UNPARSABLE, WRONG, RIGHT (module constants; REASONS
    lists them). UNPARSABLE: an answer was extracted but it is outside the supported math language
    (and does not match the gold as plain text) or exceeds a resource limit.

Conventions
-----------
* Numbers: integers, decimals (``.5``, ``5.``), thousands separators ``1,000``, ``1{,}000``,
  ``1\,000``, ``12 345`` (whole answer). ``1,000`` is one thousand; against a list/tuple the
  comma-separated reading is tried as well, so ``1,234`` also matches ``(1, 234)`` (not when a group
  starts with 0: ``10,020``). ``1,2`` and ``0,111`` are lists: groups must be exactly three digits
  after a non-zero lead; there is no decimal comma. Scientific ``1e3``, ``1.5\times10^{3}``;
  repeating decimals ``0.\overline{3}``; mixed numbers ``2\frac{1}{2}`` / ``2 1/2`` = 5/2; base
  subscripts ``204_5`` = 54; ratios ``2:3`` = 2/3.
* Exactness: every literal is an exact rational (``0.5`` is exactly 1/2). Rational answers are
  compared with rational arithmetic. Other closed forms (``\sqrt2``, ``\pi``, ``\ln 3``) are compared
  by evaluating both sides: equal iff the difference vanishes within rounding noise at 175 bits and
  again at 700+ bits (i.e. agreement to ~200 digits; a proof in practice for closed forms).
* Tolerance only where exactness is impossible: when an answer contains a decimal literal and the
  value it is compared with has no terminating decimal expansion (1/3, sqrt 2, pi), they are equal
  iff ``|a - b| <= 1e-6 * max(|a|, |b|)`` (REL_TOL, inclusive). Hence ``0.333333`` = 1/3,
  ``0.33333`` != 1/3, ``3.14`` != pi, ``3.14159`` = pi, ``0.5000001`` != 1/2 (both terminate).
* Percent: ``%`` (also ``\%``, "percent", "pct") is the number 1/100 and nothing else: ``50\%`` =
  0.5 = 1/2, but ``50\%`` != 50 and ``0.5\%`` != 0.5. (Dropping the sign would make 0.5% equal
  0.5; mathematical truth was preferred.)
* Degrees and units are annotations and are removed: ``30^\circ`` = ``30°`` = 30 (not pi/6), except
  inside a trigonometric argument where degrees are converted (``\sin 30^\circ`` = 1/2).
  ``5 \text{ cm}``, ``15\mbox{ cm}^2``, ``5 dollars``, ``\$5``, ``12 apples`` are 5, 15, 5, 5, 12.
  After a value, a word counts as a unit when it is a known unit (cm, kg, ...), or has >= 3 letters
  after a space, or >= 4 letters; ``\text{...}`` after a value always does. Single letters are
  variables (``5m`` is 5*m) and units are not converted (100 cm != 1 m).
* Variables: single letters (``xy`` = x*y), greek names, subscripts ``x_1``; ``e`` is Euler's number
  and ``i`` the imaginary unit; implicit multiplication (``2x``, ``2(x+1)``, ``(x-3)(x+2)``); ``^``
  followed by a number takes the whole number (``x^23`` = x**23). Functions: sqrt, nth roots (real
  root for an odd index and a negative radicand), sin..csc with ``^{-1}`` and arc inverses,
  sinh/cosh/tanh, ln, log (``\log`` is natural, ``\log_b``), exp, ``|x|``, floor/ceil, ``n!``,
  ``n!!``, ``\binom``.
* Expressions with variables are equal iff they agree (in the exact sense above, or within REL_TOL
  when a decimal literal is involved) at 4 deterministic pseudo-random real points of both signs.
  This decides polynomial and rational identities (``x^2-x-6`` = ``(x-3)(x+2)``) and separates
  ``|x|`` from ``x``; removable singularities are ignored ((x^2-1)/(x-1) = x+1).
* Equations: ``x = 5`` equals 5 (a name, ``f(x)``, ``\text{Area}``, ``\angle A`` or a tuple of names on
  the left is dropped; ``x = 3/6 = 1/2`` keeps the last part, ``x = 1/3 \approx 0.33`` the part before
  the approximation; ``x \in S`` gives S). Other equations are kept and equal when their sides'
  differences are proportional: ``2x + 4y - 3 = 0`` equals ``y = -\frac12 x + \frac34``. Inequalities
  likewise with a positive factor, and one-variable bounds are sets: ``x \ge 2`` = ``[2, \infty)``,
  ``x < -1 or x > 1`` = ``(-\infty,-1)\cup(1,\infty)``, ``x \ne 0``, ``\{x \mid x > 2\}``.
* Collections: ``(a, b)`` is an ordered pair (order matters) that also equals the open interval
  (a, b); ``[1, 2)``, ``(-\infty, 3]`` are intervals; unions ``\cup``, ``\mathbb{R}``, ``\emptyset``
  and finite sets are compared as subsets of the real line after merging (``[1,2]\cup[2,3]`` =
  ``[1,3]``; "all real numbers" and "no solution" are R and the empty set); ``\{...\}`` is a set
  (unordered); bare comma / "and" / "or" lists are solution lists: unordered against sets and lists,
  ordered against tuples, so ``x=2, x=3`` = ``\{3, 2\}``; ``x=1, y=2`` is an assignment (matched by
  name; equals ``(1, 2)`` in written order). A one-element set or list equals its element.
  ``a \pm b`` is the set {a+b, a-b}. Matrices (pmatrix/bmatrix/array) need the same shape and
  entries; a column or row vector also equals a tuple.
* Text answers (``\text{Evelyn}``, "yes", multiple choice ``(B)``) and anything the math parser
  rejects fall back to comparing the text, case-insensitive, with markup and spaces removed; only
  plain text (letters, digits, ``.,+-/``) can match this way, so code-like strings never do.

Safety model
------------
Model output is untrusted. No string ever reaches ``eval``/``exec``/``sympify``/``parse_expr``: a
hand-written tokenizer and recursive-descent parser accept only the grammar above and build sympy
objects directly (Integer, Rational, Symbol, Add, Mul, Pow, whitelisted functions). Names are single
letters, greek letters or subscripted letters; there is no attribute access and no call of anything
outside the whitelist, so input cannot run code, touch files or import modules; anything else is a
parse error. sympy objects are used only as an expression container: nodes are built with
``evaluate=False`` (exact rational arithmetic excepted), because sympy's automatic evaluation and
assumption queries call its adaptive numerics, which can run for ever (e.g. on sin(sin(10^158 i)) or
Abs(sqrt(pi (2 + sqrt(i))))). sympy is never asked to expand, simplify, solve or evalf. All numerics
are done by a small evaluator on mpmath's libmp kernels with explicit precision (thread-safe, no
global context) that checks magnitudes before every operation that could explode.

Time and memory bounds (no signals, so they hold in worker threads too)
-----------------------------------------------------------------------
Checked before any real work: answer <= 1500 characters, <= 600 tokens, nesting <= 40, literals <=
120 digits, sci exponents <= 400, integer powers only when |exponent| * bits(base) <= 20000
(``9^9^9^9``, ``10^{10^{10}}``, ``2^{2^{100}}`` are rejected), polynomial degree <= 2000, factorial
<= 500, binomial n <= 10000, <= 32 list elements. The evaluator keeps |values| < 2^65536, trig
arguments < 2^1024, exp arguments < 40000, gamma arguments < 1024, precision <= 4000 bits, and
<= 20000 nodes. A 0.8-second wall-clock budget per comparison, checked inside the evaluator and the
list matching, is the last resort; running out means "not equal". Extraction scans the text once
with compiled regexes (linear; fine for megabyte completions). Hitting any limit gives "not equal"
(UNPARSABLE for a prediction), never "equal". Parsed answers are cached (lru_cache, 8192 entries),
so the gold answer of a GRPO group is parsed once.
"""
from __future__ import annotations

import functools
import math
import random
import re
import time
from fractions import Fraction

import sympy
from mpmath import libmp
from sympy import Integer, Rational, S, Symbol

__all__ = ["extract_answer", "is_equivalent", "reward", "reward_with_reason",
           "NO_ANSWER", "UNPARSABLE", "WRONG", "RIGHT", "REASONS", "REL_TOL"]

NO_ANSWER = "no_answer"
UNPARSABLE = "unparsable"
WRONG = "wrong"
RIGHT = "right"
REASONS = (NO_ANSWER, UNPARSABLE, WRONG, RIGHT)

REL_TOL = Fraction(1, 10**6)        # decimal vs non-terminating value
MAX_ANSWER_CHARS = 1500
MAX_TOKENS = 600
MAX_DEPTH = 40
MAX_LITERAL_DIGITS = 120
MAX_SCI_EXPONENT = 400
MAX_POW_BITS = 20_000
MAX_SYMBOLIC_EXPONENT = 2000
MAX_FACTORIAL = 500
MAX_BINOM = 10_000
MAX_NUMBER_BITS = 200_000
MAX_ITEMS = 32
TIME_BUDGET_S = 0.8
_N_POINTS = 4                       # random points that must agree for expressions in variables


class _ParseError(Exception):
    """The answer is not in the supported language (text fallback may still match)."""


class _LimitError(Exception):
    """The answer exceeds a resource limit (never equal to anything)."""


class _Timeout(Exception):
    pass


# ====================================================================================== extraction

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\\\|\\[{}]|[{}]")
_SPACE_ARG_RE = re.compile(r"[ \t]*([^\s$]+)")
_FALLBACK_RE = re.compile(r"####|\b(?:final\s+answer|the\s+answer|answer)\b\s*(?:is\b|was\b|:|=)",
                          re.IGNORECASE)


def _match_brace(text: str, open_idx: int) -> int | None:
    """Index of the brace closing the one at open_idx (escaped braces and \\\\ skipped)."""
    depth = 0
    for m in _BRACE_RE.finditer(text, open_idx):
        t = m.group()
        if t == "{":
            depth += 1
        elif t == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def _box_content(text: str, pos: int) -> tuple[str | None, int]:
    """Argument of a \\boxed whose name ends at pos: (content or None if unterminated, end)."""
    i = pos
    n = len(text)
    while i < n and text[i] in " \t\n":
        i += 1
    if i < n and text[i] == "{":
        j = _match_brace(text, i)
        if j is None:
            return None, n
        return text[i + 1:j], j + 1
    m = _SPACE_ARG_RE.match(text, pos)      # `\boxed 5`: the next run of non-space characters
    if m is None:
        return "", pos
    return m.group(1), m.end()


def _unwrap_boxes(s: str) -> str:
    """`\\boxed{\\boxed{5}}` -> `5` (only when the box spans the whole string)."""
    for _ in range(20):
        t = s.strip()
        m = _BOX_RE.match(t)
        if not m:
            return t
        content, end = _box_content(t, m.end())
        if content is None or t[end:].strip(" .,;$"):
            return t
        s = content
    return s.strip()


def _first_sentence(line: str) -> str:
    """Cut at the first sentence end (". " or " I hope") that is not inside $...$."""
    in_math = False
    for k, ch in enumerate(line):
        if ch == "$":
            in_math = not in_math
        elif not in_math:
            if ch == "." and (k + 1 == len(line) or line[k + 1].isspace()):
                return line[:k]
            if line.startswith(" I hope", k):
                return line[:k]
    return line


def _fallback_answer(text: str) -> str | None:
    last = None
    for m in _FALLBACK_RE.finditer(text):
        last = m
    if last is None:
        return None
    rest = text[last.end():last.end() + 400].lstrip(" \t:")
    if rest.startswith("\n"):
        rest = rest.lstrip()
    cand = _first_sentence(rest.split("\n", 1)[0])
    # "Final Answer: The largest $n$ is 34" -> the part after the last " is "
    k = cand.rfind(" is ")
    if k >= 0 and cand[:k].count("$") % 2 == 0:
        cand = cand[k + 4:]
    cand = cand.strip().rstrip(".,;:!?").strip()
    m = re.fullmatch(r"\$\$(.+)\$\$|\$(.+)\$|\\\((.+)\\\)|\\\[(.+)\\\]", cand, re.S)
    if m:
        cand = next(g for g in m.groups() if g is not None).strip()
    if not cand or not re.search(r"[\d$\\]", cand):
        return None
    return cand


def extract_answer(text: str) -> str | None:
    r"""Content of the last top-level \boxed{} / \fbox{} (see module docstring), else a fallback."""
    if not isinstance(text, str) or not text:
        return None
    last = None
    seen_box = False
    pos = 0
    while True:
        m = _BOX_RE.search(text, pos)
        if m is None:
            break
        seen_box = True
        content, end = _box_content(text, m.end())
        if content is None:          # unterminated: everything after it is inside it
            last = None
            break
        last, pos = content, end
    if seen_box:
        if last is None:
            return None
        ans = _unwrap_boxes(last)
        return ans or None
    return _fallback_answer(text)


# ====================================================================================== normalization

_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": r"\times ", "\u22c5": r"\cdot ",
    "\u00b7": r"\cdot ", "\u00f7": r"\div ", "\u03c0": r"\pi ", "\u221e": r"\infty ", "\u221a": r"\sqrt ",
    "\u00b0": r"^\circ ", "\u2264": r"\le ", "\u2265": r"\ge ", "\u2260": r"\ne ", "\u222a": r"\cup ",
    "\u2229": r"\cap ", "\u2205": r"\emptyset ", "\u00b1": r"\pm ", "\u2213": r"\mp ", "\u2208": r"\in ",
    "\u00b2": "^2", "\u00b3": "^3", "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\u2032": "'",
    "\u00bd": "(1/2)", "\u00bc": "(1/4)", "\u00be": "(3/4)", "\u2248": r"\approx ", "\uff0c": ",",
}
_UNICODE_RE = re.compile("|".join(map(re.escape, _UNICODE)))
_THIN_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\\[,!]|\{,\}|,\\!|\{,\}\\!)(?=\d{3}(?!\d))")
_SPACE_THOUSANDS_RE = re.compile(r"^[+-]?[1-9]\d{0,2}(?: \d{3})+(?:\.\d+)?$")
_MIXED_RE = re.compile(r"^(\d+)\s+(\d+)\s*/\s*(\d+)$")
_DELIM_RE = re.compile(r"(?<!\\)\\[\[\]()]|\\\$|\$")
_TRAIL_RE = re.compile(r"(?:\s|[.,;:]|\\\\|\\quad|\\qquad|\\[,;:! ])+$")


def _prenormalize(s: str) -> str:
    if len(s) > MAX_ANSWER_CHARS:
        raise _LimitError("answer too long")
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], s)
    s = _DELIM_RE.sub(" ", s)
    s = _THIN_THOUSANDS_RE.sub("", s)
    s = _TRAIL_RE.sub("", s).strip()
    if _SPACE_THOUSANDS_RE.match(s):
        s = s.replace(" ", "")
    m = _MIXED_RE.match(s)
    if m:   # plain-text mixed number `2 1/2`
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    return s


_TEXT_KEY_CMD_RE = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|"
                              r"operatorname|boxed|fbox|displaystyle|left|right)(?![A-Za-z])")


def _text_key(s: str) -> str:
    """Loose textual form for non-math answers: markup, spaces and case removed."""
    s = _UNICODE_RE.sub(lambda m: _UNICODE[m.group()], s)
    s = _TEXT_KEY_CMD_RE.sub("", s)
    s = re.sub(r"\\[,;:! ]|[{}$\s~]|\\\\", "", s).lower()
    s = s.strip(".,;:")
    m = re.fullmatch(r"\(([a-z0-9]+)\)", s)
    if m:
        s = m.group(1)
    return s


# ====================================================================================== tokenizer

_TOK_RE = re.compile(r"""
  (?P<ws>\s+|~)
| (?P<thou>[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?(?![\d]))
| (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
| (?P<cmd>\\[A-Za-z]+)
| (?P<esc>\\[^A-Za-z])
| (?P<word>[A-Za-z]+)
| (?P<op>\*\*|<=|>=|!=|!!|=<|=>|[-+*/^_=<>(){}\[\],;!|&'%:])
""", re.X)

_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
          "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon",
          "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma",
          "Upsilon", "Phi", "Psi", "Omega"}
_FUNC_NAMES = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "arccot",
               "sinh", "cosh", "tanh", "ln", "log", "exp", "sqrt", "abs", "asin", "acos", "atan"}
_SKIP_CMDS = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr",
              "biggl", "biggr", "displaystyle", "textstyle", "scriptstyle", "limits", "quad", "qquad",
              "hfill", "nonumber", "notag", "middle", "angle", "measuredangle", "triangle"}
_TEXT_CMDS = {"text", "textbf", "textit", "textrm", "textsf", "textnormal", "mbox", "hbox", "emph"}
_WRAP_CMDS = {"mathrm", "mathbf", "mathit", "mathsf", "mathtt", "boldsymbol", "bm", "operatorname",
              "mathbb", "boxed", "fbox", "mathcal", "mathnormal"}
_CMD_TOKENS = {
    "frac": ("cmd", "frac"), "dfrac": ("cmd", "frac"), "tfrac": ("cmd", "frac"), "cfrac": ("cmd", "frac"),
    "sqrt": ("cmd", "sqrt"), "binom": ("cmd", "binom"), "dbinom": ("cmd", "binom"),
    "tbinom": ("cmd", "binom"), "overline": ("cmd", "overline"),
    "pi": ("const", "pi"), "infty": ("const", "oo"), "infinity": ("const", "oo"),
    "emptyset": ("const", "empty"), "varnothing": ("const", "empty"),
    "cdot": ("op", "*"), "times": ("op", "*"), "ast": ("op", "*"), "div": ("op", "/"),
    "pm": ("op", "pm"), "mp": ("op", "mp"),
    "le": ("op", "<="), "leq": ("op", "<="), "leqslant": ("op", "<="), "ge": ("op", ">="),
    "geq": ("op", ">="), "geqslant": ("op", ">="), "lt": ("op", "<"), "gt": ("op", ">"),
    "ne": ("op", "!="), "neq": ("op", "!="), "approx": ("op", "approx"), "in": ("op", "in"),
    "cup": ("op", "cup"), "cap": ("op", "cap"), "circ": ("op", "deg"), "degree": ("op", "deg"),
    "lbrace": ("op", r"\{"), "rbrace": ("op", r"\}"), "langle": ("op", "<<"), "rangle": ("op", ">>"),
    "lvert": ("op", "|"), "rvert": ("op", "|"), "vert": ("op", "|"), "mid": ("op", "|"),
    "lfloor": ("op", "lfloor"), "rfloor": ("op", "rfloor"), "lceil": ("op", "lceil"),
    "rceil": ("op", "rceil"), "dots": ("op", "..."), "ldots": ("op", "..."), "cdots": ("op", "..."),
    "land": ("word", "and"), "lor": ("word", "or"), "wedge": ("word", "and"), "vee": ("word", "or"),
    "e": ("id", "e"),
}
_MATRIX_ENVS = {"pmatrix", "bmatrix", "matrix", "smallmatrix", "Bmatrix", "array"}


def _read_group(s: str, i: int) -> tuple[str, int]:
    """Raw content of the {...} group starting at or after i (spaces skipped)."""
    n = len(s)
    while i < n and s[i] in " \t\n":
        i += 1
    if i >= n or s[i] != "{":
        raise _ParseError("expected {")
    j = _match_brace(s, i)
    if j is None:
        raise _ParseError("unbalanced braces")
    return s[i + 1:j], j + 1


def _tokenize(s: str, thousands: bool, depth: int = 0) -> tuple[list, bool, bool]:
    """-> (tokens, saw_thousands, has_decimal). A token is (kind, value, space_before)."""
    if depth > 8:
        raise _LimitError("markup nested too deep")
    toks: list = []
    saw_thou = False
    has_dec = False
    i, n = 0, len(s)
    sp = False

    def add(kind, val):
        nonlocal sp
        toks.append((kind, val, sp))
        sp = False
        if len(toks) > MAX_TOKENS:
            raise _LimitError("too many tokens")

    while i < n:
        m = _TOK_RE.match(s, i)
        if m is None:
            raise _ParseError(f"unexpected character {s[i]!r}")
        kind = m.lastgroup
        text = m.group()
        i = m.end()
        if kind == "ws":
            sp = True
        elif kind == "thou":
            if thousands:
                saw_thou = True
                has_dec |= "." in text
                add("num", text.replace(",", ""))
            else:
                # re-tokenize the leading digits only; the commas become separators
                head = re.match(r"\d+", text).group()
                i = m.start() + len(head)
                add("num", head)
        elif kind == "num":
            if re.search(r"\.\d|[eE]", text):
                has_dec = True
            add("num", text)
        elif kind == "word":
            add("id" if len(text) == 1 else "word", text)
        elif kind == "op":
            add("op", text)
        elif kind == "esc":
            c = text[1]
            if c in ",;:! ":
                sp = True
            elif c == "{":
                add("op", r"\{")
            elif c == "}":
                add("op", r"\}")
            elif c == "%":
                add("op", "%")
            elif c == "|":
                add("op", "|")
            elif c == "\\":
                add("op", "rowsep")
            elif c == "$":
                pass
            else:
                raise _ParseError(f"unsupported escape {text!r}")
        else:  # cmd
            name = text[1:]
            if name in _SKIP_CMDS:
                sp = True
                if name in ("left", "right", "middle", "bigl", "bigr", "Bigl", "Bigr") and i < n and s[i] == ".":
                    i += 1
            elif name in _TEXT_CMDS:
                content, i = _read_group(s, i)
                c = content.strip(" ~\\,;:!")
                if c in ("%", "\\%", "percent"):
                    add("op", "%")
                elif c:
                    add("text", content)
                else:
                    sp = True
            elif name in _WRAP_CMDS:
                content, i = _read_group(s, i)
                c = content.strip()
                if name == "mathbb":
                    if c in ("R", "C", "Z", "N", "Q"):
                        add("const", "R" if c == "R" else "bb" + c)
                    else:
                        raise _ParseError("unsupported \\mathbb")
                elif re.fullmatch(r"(?:~|\\[ ,;:!]|\s)*[A-Za-z]{2,}", c) and name not in ("boxed", "fbox"):
                    c = re.sub(r"~|\\[ ,;:!]|\s", "", c)
                    if name == "operatorname" and c in _FUNC_NAMES:
                        add("func", c)
                    else:
                        add("text", c)
                else:
                    sub, t2, d2 = _tokenize(content, thousands, depth + 1)
                    saw_thou |= t2
                    has_dec |= d2
                    add("op", "{")
                    for t in sub:
                        toks.append(t)
                    add("op", "}")
            elif name in ("begin", "end"):
                env, i = _read_group(s, i)
                env = env.strip().rstrip("*")
                if env not in _MATRIX_ENVS:
                    raise _ParseError(f"unsupported environment {env}")
                if name == "begin" and env == "array":
                    _, i = _read_group(s, i)      # column spec
                add(name, env)
            elif name in _CMD_TOKENS:
                add(*_CMD_TOKENS[name])
            elif name in _GREEK:
                add("id", name)
            elif name in _FUNC_NAMES:
                add("func", name)
            else:
                raise _ParseError(f"unsupported command {text}")
    return toks, saw_thou, has_dec


# ====================================================================================== values

class _Seq:
    """Collection. kind: 'tuple' (ordered), 'set' / 'pm' (unordered), 'list' (bare comma list),
    'matrix' (items are row tuples). pair=True for a parenthesised 2-tuple (may be an open interval)."""
    __slots__ = ("kind", "items", "pair")

    def __init__(self, kind, items, pair=False):
        self.kind, self.items, self.pair = kind, tuple(items), pair

    def __repr__(self):
        return f"_Seq({self.kind}, {self.items})"


class _SetV:
    """A subset of the real line: a union of pieces (lo, hi, lo_open, hi_open); a point is a closed
    piece with lo == hi. Endpoints are real closed forms or +-oo. Canonicalised only when compared."""
    __slots__ = ("pieces",)

    def __init__(self, pieces):
        self.pieces = tuple(pieces)

    def __repr__(self):
        return f"_SetV({self.pieces})"


class _Rel:
    """lhs op rhs with op in '=', '!=', '<', '<=' (> and >= are flipped)."""
    __slots__ = ("op", "lhs", "rhs")

    def __init__(self, op, lhs, rhs):
        if op in (">", ">="):
            op, lhs, rhs = op.replace(">", "<"), rhs, lhs
        self.op, self.lhs, self.rhs = op, lhs, rhs

    def __repr__(self):
        return f"_Rel({self.lhs} {self.op} {self.rhs})"


class _Scalar:
    """A sympy expression; origin is the symbol of a stripped `x = ...` (or None)."""
    __slots__ = ("e", "origin")

    def __init__(self, e, origin=None):
        self.e, self.origin = e, origin

    def __repr__(self):
        return f"_Scalar({self.e}{', ' + str(self.origin) if self.origin is not None else ''})"


class _Assign:
    """`x = 1, y = 2`: (symbol, value) pairs in written order."""
    __slots__ = ("pairs",)

    def __init__(self, pairs):
        self.pairs = tuple(pairs)

    def __repr__(self):
        return f"_Assign({self.pairs})"


class _Txt:
    __slots__ = ("s",)

    def __init__(self, s):
        self.s = s

    def __repr__(self):
        return f"_Txt({self.s!r})"


_PM = sympy.Dummy("pm")
_OO, _NOO = S.Infinity, S.NegativeInfinity
_BAD_NUMBERS = (S.NaN, S.ComplexInfinity, S.Infinity, S.NegativeInfinity)
_E, _I = S.Exp1, S.ImaginaryUnit
_RELOPS = {"=", "<", "<=", ">", ">=", "!=", "in", "=<", "=>", "approx"}
_SEP_WORDS = {"and", "or"}
_PERCENT_WORDS = {"percent", "pct", "percentage"}
_DEGREE_WORDS = {"degrees", "degree", "deg"}
_CONST_WORDS = {"pi": sympy.pi, "inf": _OO, "infty": _OO, "infinity": _OO, "oo": _OO}
_UNIT_WORDS = {"cm", "mm", "km", "kg", "mg", "ml", "mL", "ft", "yd", "hr", "hrs", "min", "mins", "sec",
               "secs", "lb", "lbs", "oz", "mph", "kmh", "sq", "cu", "units", "unit", "dollars",
               "cents", "meters", "inches", "feet", "miles", "hours", "minutes", "seconds", "days"}
_PLAIN_FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "arccot",
                "asin", "acos", "atan", "sinh", "cosh", "tanh", "ln", "log", "exp", "sqrt", "abs"}
_SYMPY_FUNCS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec,
    "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "arccot": sympy.acot, "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh, "ln": sympy.log, "log": sympy.log,
}
_INVERSE = {"sin": sympy.asin, "cos": sympy.acos, "tan": sympy.atan, "cot": sympy.acot,
            "sec": sympy.asec, "csc": sympy.acsc}


# ====================================================================================== safe construction
# sympy objects serve only as an immutable expression container. Automatic evaluation is used for
# exact rational arithmetic alone; every other node is built with evaluate=False, because sympy's
# evaluation and assumption queries call its adaptive numerics, which can run for ever on inputs such
# as sin(sin(10^158 i)), Abs(sqrt(pi (2 + sqrt(i)))) or sqrt(log(sqrt(i)) / log(log(3 + sqrt(i)))).
# All numerics are done by the guarded evaluator below.

def _need_expr(*vs):
    for v in vs:
        if not isinstance(v, sympy.Expr):
            raise _ParseError("arithmetic on a collection")


def _arith(*vs):
    """Operands of arithmetic and functions: expressions without infinities or undefined values
    (infinity is a value on its own and an interval endpoint, never an operand)."""
    _need_expr(*vs)
    for v in vs:
        if v.has(*_BAD_NUMBERS):
            raise _ParseError("arithmetic with infinity")


def _rat_bits(r) -> int:
    return max(int(r.p).bit_length(), int(r.q).bit_length())


def _check_size(v):
    if isinstance(v, Rational) and _rat_bits(v) > MAX_NUMBER_BITS:
        raise _LimitError("number too large")
    return v


def _add(a, b):
    _arith(a, b)
    if isinstance(a, Rational) and isinstance(b, Rational):
        return _check_size(a + b)
    if a == 0:
        return b
    if b == 0:
        return a
    return sympy.Add(a, b, evaluate=False)


def _neg(a):
    _need_expr(a)
    if isinstance(a, Rational) or a in (_OO, _NOO):
        return -a
    return sympy.Mul(S.NegativeOne, a, evaluate=False)


def _sub(a, b):
    return _add(a, _neg(b))


def _mul(a, b):
    _arith(a, b)
    if isinstance(a, Rational) and isinstance(b, Rational):
        return _check_size(a * b)
    if a == 1:
        return b
    if b == 1:
        return a
    return sympy.Mul(a, b, evaluate=False)


def _div(a, b):
    _arith(a, b)
    if b == 0:
        raise _ParseError("division by zero")
    if isinstance(a, Rational) and isinstance(b, Rational):
        return _check_size(a / b)
    if isinstance(b, Rational):
        return _mul(a, 1 / b)
    return _mul(a, sympy.Pow(b, S.NegativeOne, evaluate=False))


def _base_bits(b) -> int:
    if isinstance(b, Rational):
        return _rat_bits(b)
    bits = 1
    for a in sympy.preorder_traversal(b):
        if isinstance(a, Rational):
            bits = max(bits, _rat_bits(a))
    return bits


def _pow(b, e):
    _arith(b, e)
    if isinstance(e, Rational):
        mag = -(-abs(int(e.p)) // int(e.q))
        trivial = isinstance(b, Rational) and abs(b) in (0, 1)
        if mag > 1 and not trivial:
            if mag * _base_bits(b) > MAX_POW_BITS:
                raise _LimitError("power too large")
            if b.free_symbols and mag > MAX_SYMBOLIC_EXPONENT:
                raise _LimitError("degree too large")
        if b == 0 and e.is_negative:
            raise _ParseError("division by zero")
        if isinstance(b, Rational) and (isinstance(e, Integer) or int(e.q) <= 64):
            return _check_size(sympy.Pow(b, e))          # exact: 2^10, 8^(1/3), 12^(1/2)
        if e == 1:
            return b
    return sympy.Pow(b, e, evaluate=False)


def _root(x, n):
    _arith(x, n)
    if isinstance(n, Integer):
        if n <= 0 or n > 100:
            raise _ParseError("bad root index")
        if n % 2 == 1 and not x.free_symbols and _real_sign(x) == -1:
            return _neg(_pow(_neg(x), Rational(1, int(n))))   # real odd root of a negative number
        return _pow(x, Rational(1, int(n)))
    if n.is_number:
        raise _ParseError("bad root index")
    return _pow(x, _div(S.One, n))


def _fn(f, *args):
    _arith(*args)
    return f(*args, evaluate=False)


def _abs(v):
    _arith(v)
    if not v.free_symbols:
        s = _real_sign(v)
        if s is not None:
            return _neg(v) if s < 0 else v
    return sympy.Abs(v, evaluate=False)


def _floor_ceil(v, floor: bool):
    _arith(v)
    if isinstance(v, Rational):
        q = Fraction(int(v.p), int(v.q))
        return Integer(math.floor(q) if floor else math.ceil(q))
    if not v.free_symbols:
        x = _real_value(v)
        if x is None:
            raise _ParseError("floor of a non-real or undecidable value")
        fl = libmp.mpf_floor(x, _P2, _RND)
        frac = libmp.mpf_sub(x, fl, _P2, _RND)
        if _bits(frac) < -200 or _bits(libmp.mpf_sub(libmp.fone, frac, _P2, _RND)) < -200:
            raise _ParseError("floor too close to an integer to decide")
        n = Integer(libmp.to_int(fl))
        return n if floor else n + 1
    return (sympy.floor if floor else sympy.ceiling)(v, evaluate=False)


def _factorial(a, double=False):
    _arith(a)
    if a.is_number:
        if not isinstance(a, Integer) or a < 0:
            raise _ParseError("factorial of a non-natural number")
        if a > MAX_FACTORIAL * (2 if double else 1):
            raise _LimitError("factorial too large")
        return sympy.factorial2(a) if double else sympy.factorial(a)
    if double:
        raise _ParseError("symbolic double factorial")
    return sympy.factorial(a, evaluate=False)


def _binom(n, k):
    _arith(n, k)
    if n.is_number or k.is_number:
        if not (isinstance(n, Integer) and isinstance(k, Integer)):
            raise _ParseError("binomial of non-integers")
        if abs(n) > MAX_BINOM or abs(k) > MAX_BINOM:
            raise _LimitError("binomial too large")
        return sympy.binomial(n, k)
    return sympy.binomial(n, k, evaluate=False)


def _subs_pm(e, val):
    """Substitute the \\pm placeholder, rebuilding every node unevaluated (exact rationals excepted)."""
    if e is _PM:
        return val
    if not e.args or not e.has(_PM):
        return e
    args = [_subs_pm(a, val) for a in e.args]
    if isinstance(e, sympy.Add):
        out = args[0]
        for a in args[1:]:
            out = _add(out, a)
        return out
    if isinstance(e, sympy.Mul):
        out = args[0]
        for a in args[1:]:
            out = _mul(out, a)
        return out
    if isinstance(e, sympy.Pow):
        return _pow(*args)
    return e.func(*args, evaluate=False)


def _number(text: str):
    digits = sum(ch.isdigit() for ch in re.split(r"[eE]", text)[0])
    if digits > MAX_LITERAL_DIGITS:
        raise _LimitError("literal too long")
    m = re.search(r"[eE]([+-]?\d+)$", text)
    if m and (len(m.group(1)) > 5 or abs(int(m.group(1))) > MAX_SCI_EXPONENT):
        raise _LimitError("exponent too large")
    return Rational(Fraction(text))


# ====================================================================================== numerics
# Fixed-precision complex evaluation with mpmath's libmp kernels (explicit precision: thread-safe, no
# global context) and magnitude checks before every operation that could explode. Rounding noise is
# estimated from the largest intermediate magnitude.

_P1, _P2 = 175, 700                 # working precisions (bits): normal, and confirmation of zeros
_MAX_PREC = 4000                    # cap of the confirmation precision
_MAX_GAMMA_PREC = 1000
_MAX_MAG_BITS = 1 << 16             # |value| < 2**65536
_MAX_TRIG_BITS = 1024               # |Re z| < 2**1024 for trigonometric functions
_MAX_EXP_ARG = 40_000               # Re z for exp(z): result < 2**57708
_MAX_EVAL_NODES = 20_000
_RND = libmp.round_nearest
_ZERO = (libmp.fzero, libmp.fzero)
_ONE = (libmp.fone, libmp.fzero)


class _NumFail(Exception):
    pass


def _bits(x) -> int:
    """Magnitude exponent of an mpf (|x| < 2**bits); very negative for zero."""
    if x == libmp.fzero:
        return -(1 << 30)
    if x in (libmp.fnan, libmp.finf, libmp.fninf):
        raise _NumFail("not finite")
    return x[2] + x[3]


def _zbits(z) -> int:
    return max(_bits(z[0]), _bits(z[1]))


def _mag(z):
    return libmp.mpf_add(libmp.mpf_abs(z[0]), libmp.mpf_abs(z[1]), _P1)


class _Eval:
    """Value of a sympy expression as (re, im) mpf tuples at `prec` bits; symbols bound by `env`."""

    def __init__(self, prec, env=None, deadline=None):
        self.P = prec
        self.env = env or {}
        self.memo = {}
        self.maxbits = 0
        self.eff = prec                  # lowest precision actually used (gamma runs at <= 1000 bits)
        self.nodes = 0
        self.deadline = deadline

    def noise_bits(self) -> int:
        """log2 of a generous bound on the accumulated rounding error."""
        return self.maxbits - self.eff + 24

    def __call__(self, e):
        hit = self.memo.get(e)
        if hit is not None:
            return hit
        self.nodes += 1
        if self.nodes > _MAX_EVAL_NODES:
            raise _NumFail("expression too large")
        if self.deadline is not None and self.nodes % 8 == 0 and time.monotonic() > self.deadline:
            raise _Timeout()
        z = self._eval(e)
        zb = _zbits(z)
        if zb > _MAX_MAG_BITS:
            raise _NumFail("overflow")
        if zb < -_MAX_MAG_BITS or min(_bits(z[0]), _bits(z[1])) < -_MAX_MAG_BITS:   # underflow to 0
            z = tuple(c if _bits(c) >= -_MAX_MAG_BITS else libmp.fzero for c in z)
            zb = _zbits(z)
        self.maxbits = max(self.maxbits, zb)
        self.memo[e] = z
        return z

    def _eval(self, e):
        P = self.P
        if isinstance(e, Rational):
            if _rat_bits(e) > _MAX_MAG_BITS:
                raise _NumFail("overflow")
            return (libmp.from_rational(int(e.p), int(e.q), P, _RND), libmp.fzero)
        if e is S.Pi:
            return (libmp.mpf_pi(P, _RND), libmp.fzero)
        if e is S.Exp1:
            return (libmp.mpf_e(P, _RND), libmp.fzero)
        if e is S.ImaginaryUnit:
            return (libmp.fzero, libmp.fone)
        if isinstance(e, sympy.Symbol):
            if e in self.env:
                return self.env[e]
            raise _NumFail("free symbol")
        if isinstance(e, sympy.Add):
            acc = _ZERO
            for a in e.args:
                acc = libmp.mpc_add(acc, self(a), P, _RND)
            return acc
        if isinstance(e, sympy.Mul):
            acc = _ONE
            for a in e.args:
                acc = libmp.mpc_mul(acc, self(a), P, _RND)
                if _zbits(acc) > _MAX_MAG_BITS:
                    raise _NumFail("overflow")
            return acc
        if isinstance(e, sympy.Pow):
            if e.args[0] is S.Exp1:
                return self._exp(self(e.args[1]))
            return self._pow(self(e.args[0]), e.args[1])
        if isinstance(e, sympy.exp):
            return self._exp(self(e.args[0]))
        if isinstance(e, sympy.binomial):
            n, k = (self(a) for a in e.args)
            g = lambda z: self._gamma(libmp.mpc_add(z, _ONE, P, _RND))  # noqa: E731
            return libmp.mpc_div(g(n), libmp.mpc_mul(g(k), g(libmp.mpc_sub(n, k, P, _RND)), P, _RND), P, _RND)
        if not isinstance(e, sympy.Function) or len(e.args) != 1:
            raise _NumFail(f"unsupported {type(e).__name__}")
        z = self(e.args[0])
        name = type(e).__name__
        if name == "log":
            if z == _ZERO:
                raise _NumFail("log 0")
            return libmp.mpc_log(z, P, _RND)
        if name in ("sin", "cos", "tan", "cot", "sec", "csc"):
            if _bits(z[0]) > _MAX_TRIG_BITS or _bits(z[1]) > 14:
                raise _NumFail("trigonometric argument too large")
            s, c = libmp.mpc_sin(z, P, _RND), libmp.mpc_cos(z, P, _RND)
            num, den = {"sin": (s, _ONE), "cos": (c, _ONE), "tan": (s, c), "cot": (c, s),
                        "sec": (_ONE, c), "csc": (_ONE, s)}[name]
            return libmp.mpc_div(num, den, P, _RND) if den is not _ONE else num
        if name in ("asin", "acos", "atan", "acot", "asec", "acsc"):
            if name in ("acot", "asec", "acsc"):
                z = libmp.mpc_div(_ONE, z, P, _RND)
            f = {"asin": libmp.mpc_asin, "acsc": libmp.mpc_asin, "acos": libmp.mpc_acos,
                 "asec": libmp.mpc_acos, "atan": libmp.mpc_atan, "acot": libmp.mpc_atan}[name]
            return f(z, P, _RND)
        if name in ("sinh", "cosh", "tanh"):
            if _bits(z[0]) > 15 or _bits(z[1]) > _MAX_TRIG_BITS:
                raise _NumFail("hyperbolic argument too large")
            f = {"sinh": libmp.mpc_sinh, "cosh": libmp.mpc_cosh, "tanh": libmp.mpc_tanh}[name]
            return f(z, P, _RND)
        if name == "Abs":
            return (libmp.mpc_abs(z, P, _RND), libmp.fzero)
        if name in ("floor", "ceiling"):
            if z[1] != libmp.fzero:
                raise _NumFail("floor of a complex value")
            return ((libmp.mpf_floor if name == "floor" else libmp.mpf_ceil)(z[0], P, _RND), libmp.fzero)
        if name == "factorial":
            return self._gamma(libmp.mpc_add(z, _ONE, P, _RND))
        raise _NumFail(f"unsupported function {name}")

    def _gamma(self, z):
        if _zbits(z) > 10:
            raise _NumFail("gamma argument too large")
        p = min(self.P, _MAX_GAMMA_PREC)
        self.eff = min(self.eff, p)
        return libmp.mpc_gamma(z, p, _RND)

    def _exp(self, z):
        if libmp.mpf_cmp(z[0], libmp.from_int(_MAX_EXP_ARG)) > 0 or _bits(z[1]) > _MAX_TRIG_BITS:
            raise _NumFail("exp overflow")
        if libmp.mpf_cmp(z[0], libmp.from_int(-_MAX_EXP_ARG)) < 0:
            return _ZERO                                          # underflow
        return libmp.mpc_exp(z, self.P, _RND)

    def _pow(self, zb, x):
        P = self.P
        if isinstance(x, Integer) or isinstance(x, Rational) and x.q == 2:
            n = int(x.p)
            if zb == _ZERO:
                if n > 0:
                    return _ZERO
                if n == 0:
                    return _ONE
                raise _NumFail("0 to a negative power")
            if abs(n) * max(abs(_zbits(zb)), 1) > _MAX_MAG_BITS * (x.q if x.q == 2 else 1):
                raise _NumFail("overflow")
            if x.q == 2:
                zb = libmp.mpc_sqrt(zb, P, _RND)
            return libmp.mpc_pow_int(zb, n, P, _RND)
        zx = self(x)
        if zb == _ZERO:
            if libmp.mpf_cmp(zx[0], libmp.fzero) > 0:
                return _ZERO
            raise _NumFail("0 to a non-positive power")
        return self._exp(libmp.mpc_mul(zx, libmp.mpc_log(zb, P, _RND), P, _RND))


_EVAL_ERRORS = (_NumFail, ZeroDivisionError, ValueError, OverflowError, TypeError, ArithmeticError,
                RecursionError, KeyError)


def _evaluate(e, prec=_P1, env=None):
    """-> (value, evaluator) or None when the value cannot be computed safely."""
    ev = _Eval(prec, env)
    try:
        return ev(e), ev
    except _EVAL_ERRORS:
        return None


def _agree(a, b, env, loose: bool, deadline=None) -> bool | None:
    """Numerically, is a == b? True / False, or None if undecidable (not computable, or equal only
    within a rounding noise that is too large to mean anything).

    Exact mode: equal iff the difference vanishes within rounding noise at 175 bits and again at
    700 bits more than the largest magnitude met (so |a - b| < 2**-600 is required even for huge
    values). Loose mode (a decimal literal is involved): equal iff |a - b| <= 1e-6 max(|a|, |b|)."""
    prec = _P1
    for step in (1, 2):
        ev = _Eval(prec, env, deadline)
        try:
            za, zb = ev(a), ev(b)
            zd = libmp.mpc_sub(za, zb, prec, _RND)
            noise = ev.noise_bits()
            md = _mag(zd)
            scale = _mag(za)
            if libmp.mpf_cmp(_mag(zb), scale) > 0:
                scale = _mag(zb)
            if loose and libmp.mpf_le(md, libmp.mpf_mul(_LOOSE, scale, _P1)):
                return True
            if md != libmp.fzero and _bits(md) > noise:
                return False
            if step == 2:
                # zero within noise at the higher precision: trust it only if that noise is tiny
                return True if noise < -500 else None
            prec = min(_P2 + max(0, ev.maxbits), _MAX_PREC)
        except _EVAL_ERRORS:
            return None
    return None


def _real_value(v):
    """mpf value (700 bits) of a closed form that is provably real at that precision, else None."""
    r = _evaluate(v, _P2)
    if r is None:
        return None
    z, ev = r
    if _bits(z[1]) > ev.noise_bits():
        return None
    return z[0]


def _real_sign(v) -> int | None:
    """Sign of a real closed form (-1, 0, 1); None if not real or too close to 0 to decide."""
    if isinstance(v, Rational):
        return (int(v.p) > 0) - (int(v.p) < 0)
    if v is _OO:
        return 1
    if v is _NOO:
        return -1
    r = _evaluate(v, _P2)
    if r is None:
        return None
    z, ev = r
    noise = ev.noise_bits()
    if _bits(z[1]) > noise or _bits(z[0]) <= noise:
        return None
    return -1 if z[0][0] else 1


def _real_key(v):
    """Sort key for a real endpoint: mpf, with +-oo mapped to mpmath infinities."""
    if v is _OO:
        return libmp.finf
    if v is _NOO:
        return libmp.fninf
    return _real_value(v)


_LOOSE = libmp.from_rational(REL_TOL.numerator, REL_TOL.denominator, _P1, _RND)
_TIGHT = libmp.from_rational(1, 10**30, _P1, _RND)      # ratio constancy in the exact mode


# ====================================================================================== parser

class _Parser:
    def __init__(self, toks):
        self.t = toks
        self.i = 0
        self.depth = 0
        self.abs_open = 0
        self.trig = 0

    # -- helpers
    def peek(self, k=0):
        j = self.i + k
        return self.t[j] if j < len(self.t) else None

    def next(self):
        tok = self.peek()
        if tok is None:
            raise _ParseError("unexpected end")
        self.i += 1
        return tok

    def is_op(self, val, k=0):
        tok = self.peek(k)
        return tok is not None and tok[0] == "op" and tok[1] == val

    def expect_op(self, val):
        tok = self.next()
        if tok[0] != "op" or tok[1] != val:
            raise _ParseError(f"expected {val}")

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _LimitError("nesting too deep")

    def leave(self):
        self.depth -= 1

    def split_token(self, first_kind, first, rest_kind, rest):
        """Replace the current token by two (LaTeX single-token macro arguments: \\frac12)."""
        sp = self.t[self.i][2]
        self.t = self.t[:self.i] + [(first_kind, first, sp), (rest_kind, rest, False)] + self.t[self.i + 1:]

    # -- top level
    def at_sep(self):
        tok = self.peek()
        if tok is None:
            return False
        if tok[0] == "op" and tok[1] in (",", ";"):
            return True
        if tok[0] == "word" and tok[1].lower() in _SEP_WORDS:
            return True
        if tok[0] == "text":
            c = tok[1].strip().lower().strip(",").strip()
            return c in _SEP_WORDS or (c == "" and "," in tok[1])
        return False

    def answer(self):
        items = [self.item()]
        while self.at_sep():
            while self.at_sep():
                self.next()
            if self.peek() is None:
                break
            items.append(self.item())
            if len(items) > MAX_ITEMS:
                raise _LimitError("too many items")
        if self.peek() is not None:
            raise _ParseError(f"unexpected token {self.peek()[1]!r}")
        return items

    def item(self):
        start = self.i
        j = start
        while j < len(self.t) and self.t[j][0] in ("text", "word"):
            j += 1
        if j > start and j < len(self.t) and self.t[j][0] == "op" and self.t[j][1] in ("=", "in", "approx"):
            self.i = j                 # a label such as `\text{Area} = 15`: only a name
            parts = [S.Zero]
        else:
            while self.peek() is not None and self.peek()[0] == "text" and not self.at_sep() \
                    and self.peek(1) is not None:
                self.next()            # leading `\text{Answer: }` label
                start = self.i
            parts = [self.setexpr()]
            if self.is_op(":") and _is_expr(parts[0]):          # ratio 2:3 = 2/3
                self.next()
                parts = [_div(parts[0], self.expr())]
        lhs_toks = self.t[start:self.i]
        self.skip_units()
        ops = []
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in _RELOPS:
                break
            self.next()
            ops.append({"=<": "<=", "=>": ">="}.get(tok[1], tok[1]))
            parts.append(self.setexpr())
            self.skip_units()
            if len(ops) > 8:
                raise _ParseError("relation chain too long")
        return _build_item(parts, ops, lhs_toks)

    def unit_start(self, tok) -> bool:
        kind, val, sp = tok
        if kind == "text":
            c = val.strip().lower()
            return bool(c) and c.strip(",") not in _SEP_WORDS
        if kind == "word":
            lw = val.lower()
            if lw in _SEP_WORDS or lw in _PLAIN_FUNCS or lw in _CONST_WORDS or lw in _PERCENT_WORDS:
                return False
            if lw in _DEGREE_WORDS or val in _UNIT_WORDS:
                return True
            return (len(val) >= 3 and sp) or len(val) >= 4
        return False

    def skip_units(self):
        """Drop a unit annotation after a value: words, \\text{}, ^2, /, degree marks."""
        tok = self.peek()
        if tok is None or not self.unit_start(tok):
            return
        while True:
            tok = self.peek()
            if tok is None:
                return
            if tok[0] == "text" and not self.at_sep():
                self.next()
            elif tok[0] == "word" and tok[1].lower() not in _SEP_WORDS:
                self.next()
            elif tok[0] == "op" and tok[1] == "deg":
                self.next()
            elif tok[0] == "op" and tok[1] in ("^", "**"):
                self.next()
                if self.is_op("{"):
                    self.next()
                    if self.peek() is not None and self.peek()[0] == "num":
                        self.next()
                    self.expect_op("}")
                elif self.peek() is not None and self.peek()[0] == "num":
                    self.next()
                else:
                    raise _ParseError("bad unit power")
            elif tok[0] == "op" and tok[1] in ("/", "*") and self.peek(1) is not None \
                    and self.peek(1)[0] in ("text", "word"):
                self.next()
            else:
                return

    # -- expressions
    def setexpr(self):
        left = self.expr()
        while self.is_op("cup"):
            self.next()
            right = self.expr()
            left = _SetV(_as_set(left).pieces + _as_set(right).pieces)
            if len(left.pieces) > MAX_ITEMS:
                raise _LimitError("too many pieces")
        if self.is_op("cap"):
            raise _ParseError("intersections are not supported")
        return left

    def expr(self):
        self.enter()
        tok = self.peek()
        if tok is not None and tok[0] == "op" and tok[1] in ("pm", "mp"):
            self.next()
            v = self.term()
            result = _mul(_PM, v) if tok[1] == "pm" else _mul(_neg(_PM), v)
        else:
            result = self.term()
        while True:
            tok = self.peek()
            if tok is None or tok[0] != "op" or tok[1] not in ("+", "-", "pm", "mp"):
                break
            self.next()
            rhs = self.term()
            if tok[1] == "+":
                result = _add(result, rhs)
            elif tok[1] == "-":
                result = _sub(result, rhs)
            elif tok[1] == "pm":
                result = _add(result, _mul(_PM, rhs))
            else:
                result = _sub(result, _mul(_PM, rhs))
        self.leave()
        return result

    def implicit_start(self, tok) -> bool:
        kind, val = tok[0], tok[1]
        if kind in ("id", "const", "func", "cmd", "begin"):
            return not (kind == "cmd" and val == "overline")
        if kind == "word":
            lw = val.lower()
            return not self.unit_start(tok) and lw not in _SEP_WORDS and lw not in _PERCENT_WORDS \
                and lw not in _DEGREE_WORDS
        if kind == "op":
            if val in ("(", "lfloor", "lceil", "<<"):
                return True
            if val == "|":
                return self.abs_open == 0
        return False

    def term(self):
        left = self.unary()
        while True:
            tok = self.peek()
            if tok is None:
                break
            if tok[0] == "op" and tok[1] in ("*", "/"):
                self.next()
                right = self.unary()
                left = _mul(left, right) if tok[1] == "*" else _div(left, right)
            elif self.implicit_start(tok):
                left = _mul(left, self.power())
            else:
                break
        return left

    def unary(self):
        if self.is_op("-"):
            self.next()
            self.enter()
            v = self.unary()
            self.leave()
            return _neg(v)
        if self.is_op("+"):
            self.next()
            self.enter()
            v = self.unary()
            self.leave()
            return v
        return self.power()

    def degree_follows(self) -> int:
        """Number of tokens of a `^\\circ` / `^{\\circ}` at the cursor (0 if none)."""
        if not (self.is_op("^") or self.is_op("**")):
            return 0
        if self.is_op("deg", 1):
            return 2
        if self.is_op("{", 1) and self.is_op("deg", 2) and self.is_op("}", 3):
            return 4
        return 0

    def power(self):
        base = self.postfix()
        if (self.is_op("^") or self.is_op("**")) and not self.degree_follows():
            self.next()
            self.enter()
            e = self.unary()
            self.leave()
            base = self.postfix_ops(_pow(base, e))
        return base

    def postfix(self):
        return self.postfix_ops(self.atom())

    def postfix_ops(self, a):
        while True:
            tok = self.peek()
            if tok is None:
                return a
            k = self.degree_follows()
            if k or tok[0] == "op" and tok[1] == "deg":
                self.i += k or 1
                if self.trig:          # \sin 30^\circ: inside trig, degrees are pi/180 radians
                    a = _mul(a, _mul(sympy.pi, Rational(1, 180)))
            elif tok[0] == "op" and tok[1] in ("!", "!!"):
                self.next()
                a = _factorial(a, double=tok[1] == "!!")
            elif tok[0] == "op" and tok[1] == "%" or tok[0] == "word" and tok[1].lower() in _PERCENT_WORDS:
                self.next()
                a = _mul(a, Rational(1, 100))
            else:
                return a

    def group_arg(self):
        """A LaTeX macro argument: {...} or a single token (first digit of a number)."""
        tok = self.peek()
        if tok is None:
            raise _ParseError("missing argument")
        if tok[0] == "op" and tok[1] == "{":
            self.next()
            self.enter()
            v = self.setexpr()
            self.leave()
            self.expect_op("}")
            return v
        if tok[0] == "num" and len(tok[1]) > 1:
            self.split_token("num", tok[1][0], "num", tok[1][1:])
            return _number(self.next()[1])
        if tok[0] == "word" and len(tok[1]) > 1:
            rest = tok[1][1:]
            self.split_token("id", tok[1][0], "id" if len(rest) == 1 else "word", rest)
        self.enter()
        v = self.postfix()
        self.leave()
        return v

    def bracket(self, open_tok):
        """After ( or [: grouping, tuple, or interval."""
        self.enter()
        items = [self.setexpr()]
        self.skip_units()
        while self.is_op(","):
            self.next()
            items.append(self.setexpr())
            self.skip_units()
            if len(items) > MAX_ITEMS:
                raise _LimitError("too many items")
        close = self.next()
        self.leave()
        if close[0] != "op" or close[1] not in (")", "]"):
            raise _ParseError("expected closing bracket")
        c = close[1]
        if len(items) == 1:
            if (open_tok, c) in (("(", ")"), ("[", "]")):
                return items[0]
            raise _ParseError("mismatched brackets")
        if len(items) == 2:
            if (open_tok, c) == ("(", ")"):
                return _Seq("tuple", items, pair=True)
            lo, hi = items
            return _SetV([_piece(lo, hi, open_tok == "(", c == ")")])
        if (open_tok, c) in (("(", ")"), ("[", "]")):
            return _Seq("tuple", items)
        raise _ParseError("mismatched brackets")

    def delimited_list(self, close):
        self.enter()
        items = []
        if not self.is_op(close):
            items.append(self.setexpr())
            while self.is_op(","):
                self.next()
                items.append(self.setexpr())
                if len(items) > MAX_ITEMS:
                    raise _LimitError("too many items")
        self.expect_op(close)
        self.leave()
        return items

    def atom(self):
        tok = self.next()
        kind, val = tok[0], tok[1]
        if kind == "num":
            return self.number_atom(val)
        if kind == "id":
            return self.identifier(val)
        if kind == "const":
            if val == "pi":
                return sympy.pi
            if val == "oo":
                return _OO
            if val == "empty":
                return _SetV([])
            if val == "R":
                return _SetV([(_NOO, _OO, True, True)])
            raise _ParseError("unsupported set")
        if kind == "word":
            return self.word_atom(val)
        if kind == "func":
            return self.function(val)
        if kind == "cmd":
            if val == "frac":
                a = self.group_arg()
                b = self.group_arg()
                return _div(a, b)
            if val == "sqrt":
                n = None
                if self.is_op("["):
                    self.next()
                    n = self.expr()
                    self.expect_op("]")
                x = self.group_arg()
                return _pow(x, S.Half) if n is None else _root(x, n)
            if val == "binom":
                return _binom(self.group_arg(), self.group_arg())
            raise _ParseError(f"unexpected {val}")
        if kind == "begin":
            return self.matrix(val)
        if kind == "op":
            if val in ("(", "["):
                return self.bracket(val)
            if val == "{":
                items = self.delimited_list("}")
                if not items:
                    raise _ParseError("empty group")
                # a LaTeX group is invisible: `{1,3}` renders as the list 1, 3
                return items[0] if len(items) == 1 else _Seq("list", items)
            if val == r"\{":
                if self.peek() is not None and self.peek()[0] == "id" and \
                        (self.is_op("|", 1) or self.is_op(":", 1)):
                    return self.set_builder()
                items = self.delimited_list(r"\}")
                return _Seq("set", items) if items else _SetV([])
            if val == "<<":
                return _Seq("tuple", self.delimited_list(">>"))
            if val == "|":
                self.abs_open += 1
                self.enter()
                v = self.expr()
                self.leave()
                self.expect_op("|")
                self.abs_open -= 1
                return _abs(v)
            if val in ("lfloor", "lceil"):
                self.enter()
                v = self.expr()
                self.leave()
                self.expect_op("rfloor" if val == "lfloor" else "rceil")
                return _floor_ceil(v, val == "lfloor")
        if kind == "text":
            raise _ParseError("text inside an expression")
        raise _ParseError(f"unexpected token {val!r}")

    def set_builder(self):
        """\\{x | x > 2\\} or \\{x : 1 \\le x < 3\\}: a one-variable condition as a set."""
        self.enter()
        self.next()
        self.next()
        cond = self.item()
        self.expect_op(r"\}")
        self.leave()
        if isinstance(cond, _Rel):
            s = _rel_to_set(cond)
            if s is not None:
                return s
        if isinstance(cond, _SetV):
            return cond
        raise _ParseError("unsupported set-builder condition")

    def number_atom(self, val):
        v = _number(val)
        nxt = self.peek()
        if nxt is None:
            return v
        # repeating decimal 0.1\overline{6}
        if nxt[0] == "cmd" and nxt[1] == "overline" and not nxt[2] and "." in val and "e" not in val.lower():
            self.next()
            rep = self.repeating_digits()
            ip, frac = val.split(".")
            ip = ip or "0"
            a = int(ip + frac + rep) - int(ip + frac)
            return _check_size(Rational(a, 10 ** len(frac) * (10 ** len(rep) - 1)))
        # base subscript 204_5
        if nxt[0] == "op" and nxt[1] == "_" and val.isdigit():
            self.next()
            base_tok = self.next()
            if base_tok[0] == "op" and base_tok[1] == "{":
                base_tok = self.next()
                self.expect_op("}")
            if base_tok[0] != "num" or not base_tok[1].isdigit() or not 2 <= int(base_tok[1]) <= 36:
                raise _ParseError("bad base")
            try:
                return Integer(int(val, int(base_tok[1])))
            except ValueError:
                raise _ParseError("bad digits for base") from None
        # mixed number 2\frac{1}{2}
        if nxt[0] == "cmd" and nxt[1] == "frac" and val.isdigit():
            t, j = self.t, self.i + 1
            if (j + 5 < len(t) + 0 and t[j][1] == "{" and t[j + 1][0] == "num" and t[j + 1][1].isdigit()
                    and t[j + 2][1] == "}" and t[j + 3][1] == "{" and t[j + 4][0] == "num"
                    and t[j + 4][1].isdigit() and t[j + 5][1] == "}"):
                self.next()
                return _add(v, _div(self.group_arg(), self.group_arg()))
        return v

    def repeating_digits(self) -> str:
        if self.is_op("{"):
            self.next()
            tok = self.next()
            self.expect_op("}")
        else:
            tok = self.peek()
            if tok is not None and tok[0] == "num" and len(tok[1]) > 1:   # \overline36: only the 3
                self.split_token("num", tok[1][0], "num", tok[1][1:])
            tok = self.next()
        if tok[0] != "num" or not tok[1].isdigit() or len(tok[1]) > 60:
            raise _ParseError("bad repeating decimal")
        return tok[1]

    def identifier(self, name):
        if self.is_op("_"):
            self.next()
            tok = self.peek()
            if tok is None:
                raise _ParseError("missing subscript")
            if tok[0] == "op" and tok[1] == "{":
                self.next()
                parts = []
                while not self.is_op("}"):
                    t = self.next()
                    if t[0] not in ("num", "id", "word") and not (t[0] == "op" and t[1] in "+-,"):
                        raise _ParseError("bad subscript")
                    parts.append(t[1])
                    if len(parts) > 8:
                        raise _ParseError("bad subscript")
                self.next()
                sub = "".join(parts)
            else:
                if tok[0] not in ("num", "id", "word"):
                    raise _ParseError("bad subscript")
                if len(tok[1]) > 1 and tok[0] in ("num", "word"):      # x_12 is x_1 * 2 in LaTeX
                    rest = tok[1][1:]
                    kind = "id" if tok[0] == "word" and len(rest) == 1 else tok[0]
                    self.split_token(tok[0] if tok[0] == "num" else "id", tok[1][0], kind, rest)
                sub = self.next()[1]
            return Symbol(f"{name}_{sub}")
        if name == "e":
            return _E
        if name == "i":
            return _I
        return Symbol(name)

    def word_atom(self, w):
        lw = w.lower()
        if lw in _CONST_WORDS:
            return _CONST_WORDS[lw]
        if lw in _PLAIN_FUNCS:
            return self.function(lw)
        if lw in _SEP_WORDS or lw in _PERCENT_WORDS:
            raise _ParseError("unexpected word")
        if len(w) > 3:      # `xyz` is a product of variables; longer runs are words, not math
            raise _ParseError("word in expression")
        v = S.One
        for ch in w[:-1]:
            v = _mul(v, _E if ch == "e" else _I if ch == "i" else Symbol(ch))
        return _mul(v, self.identifier(w[-1]))

    def function(self, name):
        if name == "sqrt":
            if self.is_op("("):
                self.next()
                x = self.expr()
                self.expect_op(")")
            else:
                x = self.group_arg()
            return _pow(x, S.Half)
        fpow = None
        if self.is_op("^") or self.is_op("**"):
            self.next()
            if self.is_op("-"):
                self.next()
                fpow = _neg(self.group_arg())
            else:
                fpow = self.group_arg()
        base = None
        if name == "log" and self.is_op("_"):
            self.next()
            base = self.group_arg()
        trig = name in _INVERSE
        self.trig += trig
        self.enter()
        if self.is_op("("):
            self.next()
            arg = self.expr()
            self.expect_op(")")
        else:
            arg = self.power()
            while self.peek() is not None and self.implicit_start(self.peek()) \
                    and self.peek()[0] != "func" \
                    and not (self.peek()[0] == "word" and self.peek()[1].lower() in _PLAIN_FUNCS):
                arg = _mul(arg, self.power())
        self.leave()
        self.trig -= trig
        if fpow is not None and fpow == -1 and name in _INVERSE:
            return _fn(_INVERSE[name], arg)
        if name == "abs":
            v = _abs(arg)
        elif name == "exp":
            v = _pow(_E, arg)
        elif base is not None:
            if base == 1 or base == 0:
                raise _ParseError("bad log base")
            v = _div(_fn(sympy.log, arg), _fn(sympy.log, base))
        else:
            v = _fn(_SYMPY_FUNCS[name], arg)
        if fpow is not None:
            v = _pow(v, fpow)
        return v

    def matrix(self, env):
        self.enter()
        rows, row = [], []
        while True:
            tok = self.peek()
            if tok is None:
                raise _ParseError("unterminated matrix")
            if tok[0] == "end":
                self.next()
                if tok[1] != env:
                    raise _ParseError("mismatched environment")
                break
            if tok[0] == "op" and tok[1] == "rowsep":
                self.next()
                if row:
                    rows.append(tuple(row))
                row = []
                continue
            if tok[0] == "op" and tok[1] == "&":
                self.next()
                if not row:
                    raise _ParseError("empty cell")
                continue
            v = self.expr()
            _need_expr(v)
            row.append(v)
            if len(row) > MAX_ITEMS or len(rows) > MAX_ITEMS:
                raise _LimitError("matrix too large")
        if row:
            rows.append(tuple(row))
        self.leave()
        if not rows or len({len(r) for r in rows}) != 1:
            raise _ParseError("ragged matrix")
        return _Seq("matrix", [_Seq("tuple", r) for r in rows])


# ====================================================================================== answers

def _piece(lo, hi, lopen, ropen):
    """One interval; endpoints must be real closed forms or +-infinity."""
    for v in (lo, hi):
        _need_expr(v)
        if v.free_symbols:
            raise _ParseError("symbolic interval")
        if v not in (_OO, _NOO) and _real_key(v) is None:
            raise _ParseError("interval endpoint is not a real number")
    return (lo, hi, bool(lopen or lo in (_OO, _NOO)), bool(ropen or hi in (_OO, _NOO)))


def _as_set(v) -> _SetV:
    if isinstance(v, _SetV):
        return v
    if isinstance(v, _Seq):
        if v.pair:
            return _SetV([_piece(v.items[0], v.items[1], True, True)])
        if v.kind in ("set", "pm", "list"):
            return _SetV([_piece(x, x, False, False) for x in v.items])
    if isinstance(v, sympy.Expr):
        return _SetV([_piece(v, v, False, False)])
    raise _ParseError("not a set")


def _name_like(toks) -> tuple[bool, Symbol | None]:
    """Is the left side of `=` just a name (x, x_1, f(x), \\text{Area}, (x, y))? -> (bool, symbol)."""
    kinds = [t[0] for t in toks]
    vals = [t[1] for t in toks]
    if not toks:
        return False, None
    if kinds == ["id"]:
        return True, Symbol(vals[0]) if vals[0] not in ("e", "i") else None
    if len(toks) >= 3 and kinds[0] == "id" and vals[1] == "_":
        sub = "".join(v for v in vals[2:] if v not in ("{", "}"))
        if all(k in ("num", "id", "word", "op") for k in kinds[2:]) and re.fullmatch(r"[\w+\-,]{1,8}", sub):
            return True, Symbol(f"{vals[0]}_{sub}")
    if all(k in ("word", "text") for k in kinds):
        return True, None
    if kinds[0] in ("id", "word") and len(toks) >= 3 and vals[-1] == ")" and "(" in vals \
            and (kinds[0] == "id" or len(vals[0]) <= 3):
        head = toks[1:vals.index("(")]       # f(x), f^{-1}(x), f_2(x)
        if all(t[0] == "num" or t[1] in ("^", "_", "{", "}", "-", "'") or t[0] == "id" for t in head):
            return True, None
    if vals[0] == "(" and vals[-1] == ")" and len(toks) >= 5:
        inner = toks[1:-1]
        if all((t[0] == "id") if j % 2 == 0 else (t[1] == ",") for j, t in enumerate(inner)):
            return True, None
    return False, None


def _expand_pm(v):
    if _is_expr(v) and v.has(_PM):
        return _Seq("pm", [_subs_pm(v, S.One), _subs_pm(v, S.NegativeOne)])
    if isinstance(v, _Seq) and any(_is_expr(x) and x.has(_PM) for x in v.items):
        if v.kind in ("set", "list", "pm"):
            out = []
            for x in v.items:
                e = _expand_pm(x)
                out.extend(e.items if isinstance(e, _Seq) and e.kind == "pm" else [e])
            return _Seq(v.kind, out)
        raise _ParseError("\\pm inside a tuple")
    if isinstance(v, _SetV) and any(p[0].has(_PM) or p[1].has(_PM) for p in v.pieces):
        raise _ParseError("\\pm inside an interval")
    return v


def _is_expr(v) -> bool:
    return isinstance(v, sympy.Expr)


def _build_item(parts, ops, lhs_toks):
    if not ops:
        return _wrap(parts[0])
    if "approx" in ops:
        # `x = 1/3 \approx 0.33`: the exact value before the approximation is the answer
        k = ops.index("approx")
        if k >= 1:
            parts, ops = parts[:k + 1], ops[:k]
        ops = ["=" if op == "approx" else op for op in ops]
    if all(op in ("=", "in") for op in ops):
        named, sym = _name_like(lhs_toks)
        if named:
            v = _wrap(parts[-1])
            if isinstance(v, _Scalar) and sym is not None and len(parts) == 2:
                v.origin = sym
            return v
        if "in" in ops:
            raise _ParseError("membership with a non-name")
        if len(parts) > 2 or all(_is_expr(p) and not p.free_symbols for p in parts):
            return _wrap(parts[-1])
        a, b = parts
        _arith(a, b)
        if a.has(_PM) or b.has(_PM):
            raise _ParseError("\\pm in an equation")
        return _Rel("=", a, b)
    if any(op in ("=", "in") for op in ops):
        raise _ParseError("mixed relations")
    for p in parts:
        _arith(p)
        if p.has(_PM):
            raise _ParseError("\\pm in an inequality")
    if len(ops) == 1:
        return _Rel(ops[0], parts[0], parts[1])
    if len(ops) == 2:
        lo, mid, hi = parts
        o1, o2 = ops
        if o1[0] != o2[0] or "!" in o1 + o2:
            raise _ParseError("inconsistent chain")
        if o1[0] == ">":
            lo, hi = hi, lo
            o1, o2 = o2, o1
        if isinstance(mid, Symbol) and not lo.free_symbols and not hi.free_symbols:
            return _SetV([_piece(lo, hi, o1 in ("<", ">"), o2 in ("<", ">"))])
    raise _ParseError("unsupported relation chain")


def _wrap(v):
    v = _expand_pm(v)
    if _is_expr(v):
        return _Scalar(v)
    return v


def _assemble(items):
    if len(items) == 1:
        return items[0]
    origins = [it.origin if isinstance(it, _Scalar) else None for it in items]
    if all(o is not None for o in origins) and len(set(origins)) == len(origins):
        return _Assign([(o, it.e) for o, it in zip(origins, items)])
    flat = []
    for it in items:
        if isinstance(it, _Seq) and it.kind == "pm":
            flat.extend(it.items)
        elif isinstance(it, _Scalar):
            flat.append(it.e)
        else:
            flat.append(it)
    return _Seq("list", flat)


class _Parsed:
    __slots__ = ("value", "inexact")

    def __init__(self, value, inexact):
        self.value, self.inexact = value, inexact

    def __repr__(self):
        return f"_Parsed({self.value!r}{', inexact' if self.inexact else ''})"


_REAL_WORDS = {"allrealnumbers", "allreals", "realnumbers", "allrealx", "allrealvaluesofx"}
_EMPTY_WORDS = {"nosolution", "nosolutions", "norealsolution", "norealsolutions", "emptyset", "thereisnosolution"}


def _words_only(toks) -> bool:
    if len(toks) == 3 and toks[0][1] == "(" and toks[2][1] == ")":
        toks = toks[1:2]                     # multiple choice `(B)`
    if not toks or not all(t[0] in ("word", "text") or t[0] == "op" and t[1] in ",-" for t in toks):
        return False
    if any(t[0] == "text" for t in toks):
        return True
    words = [t[1].lower() for t in toks if t[0] == "word"]
    return any(len(w) >= 3 and w not in _PLAIN_FUNCS and w not in _CONST_WORDS for w in words)


def _parse_one(s: str, thousands: bool):
    toks, saw_thou, has_dec = _tokenize(s, thousands)
    if not toks:
        raise _ParseError("empty answer")
    if _words_only(toks):
        key = _text_key(s)
        if not _TEXTY_RE.fullmatch(key):
            raise _ParseError("not a plain text answer")
        if key in _REAL_WORDS:
            return _Parsed(_SetV([(_NOO, _OO, True, True)]), False), saw_thou
        if key in _EMPTY_WORDS:
            return _Parsed(_SetV([]), False), saw_thou
        return _Parsed(_Txt(key), False), saw_thou
    items = _Parser(toks).answer()
    return _Parsed(_assemble(items), has_dec), saw_thou


@functools.lru_cache(maxsize=8192)
def _parse_cached(s: str):
    """-> ('ok', tuple of _Parsed alternatives) | ('parse', None) | ('limit', None)."""
    try:
        t = _prenormalize(_unwrap_boxes(s))
        if not t:
            return ("parse", None)
        first, ambiguous = _parse_one(t, True)
        alts = [first]
        # `1,234` may also be the list (1, 234); not when a group starts with 0 (`10,020`)
        if ambiguous and not re.search(r",0", t):
            try:
                alts.append(_parse_one(t, False)[0])
            except (_ParseError, _LimitError):
                pass
        return ("ok", tuple(alts))
    except (_LimitError, RecursionError, MemoryError):
        return ("limit", None)
    except _ParseError:
        return ("parse", None)
    except Exception:  # any other failure on odd input: not an answer (never crash a training run)
        return ("parse", None)


# ====================================================================================== fast path

_FAST_RE = re.compile(r"^\s*\$?\s*(-)?\s*(?:(\d{1,60}(?:\.\d{0,60})?|\.\d{1,60})(?:\s*/\s*(\d{1,60}))?|"
                      r"\\[dt]?frac\{(\d{1,60})\}\{(\d{1,60})\})\s*\$?\s*\.?\s*$")


def _fast_number(s: str):
    """Plain integer / decimal / a/b / \\frac{a}{b} -> (Fraction, has_decimal) or None."""
    if len(s) > 200:
        return None
    m = _FAST_RE.match(s.replace("\u2212", "-"))
    if not m:
        return None
    neg, dec, den, fn, fd = m.groups()
    if dec is not None:
        if den is not None and "." in dec:
            return None
        q = Fraction(dec)
        if den is not None:
            if int(den) == 0:
                return None
            q = q / int(den)
        is_dec = bool(re.search(r"\.\d", dec))
    else:
        if int(fd) == 0:
            return None
        q, is_dec = Fraction(int(fn), int(fd)), False
    return (-q if neg else q), is_dec


def _terminates(q: Fraction) -> bool:
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    return d == 1


def _rational_match(a: Fraction, b: Fraction, inexact: bool) -> bool:
    if a == b:
        return True
    if not inexact or (_terminates(a) and _terminates(b)):
        return False
    return abs(a - b) <= REL_TOL * max(abs(a), abs(b))


# ====================================================================================== comparison

class _Ctx:
    __slots__ = ("inexact", "deadline", "pred_raw", "gold_raw")

    def __init__(self, inexact, pred_raw, gold_raw, deadline):
        self.inexact = inexact
        self.deadline = deadline
        self.pred_raw, self.gold_raw = pred_raw, gold_raw

    def tick(self):
        if time.monotonic() > self.deadline:
            raise _Timeout()


def _eq_expr(a, b, cx) -> bool:
    """Scalar equality: exact for rationals, numeric (see _agree) otherwise; expressions with
    variables must agree at several deterministic random points."""
    cx.tick()
    if a.has(S.NaN, S.ComplexInfinity) or b.has(S.NaN, S.ComplexInfinity):
        return False
    if a == b:
        return True
    if a.has(_OO, _NOO) or b.has(_OO, _NOO):
        return False
    if isinstance(a, Rational) and isinstance(b, Rational):
        return _rational_match(Fraction(int(a.p), int(a.q)), Fraction(int(b.p), int(b.q)), cx.inexact)
    syms = a.free_symbols | b.free_symbols
    if not syms:
        return _agree(a, b, None, cx.inexact, cx.deadline) is True
    good = 0
    for pt in _points(sorted(syms, key=lambda s: s.name)):
        cx.tick()
        v = _agree(a, b, pt, cx.inexact, cx.deadline)
        if v is None:        # pole, removable singularity or out of range: try another point
            continue
        if not v:
            return False
        good += 1
        if good >= _N_POINTS:
            return True
    return good >= 2


def _points(syms, n_max=12):
    """Deterministic pseudo-random real points with |coordinate| in [0.3, 2.5]. The first four cover
    all sign patterns of the first two variables (so |x| and x, sqrt(x^2) and x differ)."""
    rng = random.Random(20240607)
    for j in range(n_max):
        pt = {}
        for i, s in enumerate(syms):
            q = rng.choice((7, 11, 13))
            k = rng.randint(3 * q // 10 + 1, 5 * q // 2)
            neg = (j >> i) & 1 if j < 4 and i < 2 else rng.random() < 0.4
            pt[s] = (libmp.from_rational(-k if neg else k, q, _P2 + 64, _RND), libmp.fzero)
        yield pt


def _ratio_test(f1, f2, positive: bool, cx) -> bool:
    """Is f2 = k * f1 for one constant k != 0 (real and > 0 if positive)? Decided numerically."""
    if f1 == 0 or f2 == 0:
        return f1 == 0 and f2 == 0
    syms = sorted(f1.free_symbols | f2.free_symbols, key=lambda s: s.name)
    ratios = []
    for pt in (_points(syms) if syms else [None]):
        cx.tick()
        ev = _Eval(_P1, pt)
        try:
            z1, z2 = ev(f1), ev(f2)
            noise = ev.noise_bits()
            if _zbits(z1) <= noise or _zbits(z2) <= noise:
                continue
            ratios.append(libmp.mpc_div(z2, z1, _P1, _RND))
        except _EVAL_ERRORS:
            continue
        if len(ratios) >= _N_POINTS:
            break
    if len(ratios) < (3 if syms else 1):
        return False
    r0 = ratios[0]
    if positive and (_bits(r0[1]) > _bits(r0[0]) - 90 or libmp.mpf_cmp(r0[0], libmp.fzero) <= 0):
        return False
    tol = _LOOSE if cx.inexact else _TIGHT
    for r in ratios[1:]:
        diff = _mag(libmp.mpc_sub(r, r0, _P1, _RND))
        if not libmp.mpf_le(diff, libmp.mpf_mul(tol, _mag(r0), _P1)):
            return False
    return True


def _eq_rel(r1: _Rel, r2: _Rel, cx) -> bool:
    if r1.op != r2.op:
        return False
    return _ratio_test(_sub(r1.rhs, r1.lhs), _sub(r2.rhs, r2.lhs), r1.op in ("<", "<="), cx)


def _rel_to_set(r: _Rel) -> _SetV | None:
    """`x < 3` -> (-oo, 3) etc.; None unless a bound on a single variable."""
    lhs, rhs, op = r.lhs, r.rhs, r.op
    if isinstance(lhs, Symbol) and not rhs.free_symbols:
        sym_left, c = True, rhs
    elif isinstance(rhs, Symbol) and not lhs.free_symbols:
        sym_left, c = False, lhs
    else:
        return None
    try:
        if op == "!=":
            return _SetV([_piece(_NOO, c, True, True), _piece(c, _OO, True, True)])
        if op == "=":
            return _SetV([_piece(c, c, False, False)])
        strict = op == "<"
        if sym_left:        # x < c
            return _SetV([_piece(_NOO, c, True, strict)])
        return _SetV([_piece(c, _OO, strict, True)])
    except _ParseError:
        return None


def _canonical(s: _SetV):
    """Sorted, merged pieces [(lo, hi, lo_open, hi_open)] of a union (empty pieces dropped)."""
    items = []
    for lo, hi, lopen, ropen in s.pieces:
        klo, khi = _real_key(lo), _real_key(hi)
        if klo is None or khi is None:
            raise _ParseError("undecidable endpoint")
        c = libmp.mpf_cmp(klo, khi)
        if c > 0 or c == 0 and (lopen or ropen):
            continue
        items.append([klo, khi, lo, hi, lopen, ropen])
    items.sort(key=functools.cmp_to_key(lambda p, q: libmp.mpf_cmp(p[0], q[0]) or (p[4] - q[4])))
    merged = []
    for p in items:
        if merged:
            q = merged[-1]
            c = libmp.mpf_cmp(p[0], q[1])          # new lo vs current hi
            if c < 0 or c == 0 and not (q[5] and p[4]):
                if libmp.mpf_cmp(p[1], q[1]) > 0 or libmp.mpf_cmp(p[1], q[1]) == 0 and not p[5]:
                    q[1], q[3], q[5] = p[1], p[3], p[5]
                if libmp.mpf_cmp(p[0], q[0]) == 0 and not p[4]:
                    q[4] = False
                continue
        merged.append(list(p))
    return [(p[2], p[3], p[4], p[5]) for p in merged]


def _eq_sets(s1: _SetV, s2: _SetV, cx) -> bool:
    try:
        c1, c2 = _canonical(s1), _canonical(s2)
    except _ParseError:
        return False
    if len(c1) != len(c2):
        return False
    for (lo1, hi1, lo1o, hi1o), (lo2, hi2, lo2o, hi2o) in zip(c1, c2):
        if lo1o != lo2o or hi1o != hi2o:
            return False
        if not (_eq_expr(lo1, lo2, cx) and _eq_expr(hi1, hi2, cx)):
            return False
    return True


def _ordered_eq(xs, ys, cx) -> bool:
    return len(xs) == len(ys) and all(_equal(x, y, cx) for x, y in zip(xs, ys))


def _signatures(items, pt):
    """Complex float value of each scalar item at one shared point (None when not available): a
    cheap filter so that long lists are not matched pairwise with the full test."""
    out = []
    for x in items:
        sig = None
        if _is_expr(x):
            try:
                z = _Eval(_P1, pt)(x)
                sig = complex(libmp.to_float(z[0]), libmp.to_float(z[1]))
                if sig != sig or abs(sig) == float("inf"):
                    sig = None
            except (*_EVAL_ERRORS, _Timeout):
                sig = None
        out.append(sig)
    return out


def _sig_close(a, b) -> bool:
    return a is None or b is None or abs(a - b) <= 1e-4 * max(abs(a), abs(b)) + 1e-300


def _unordered_eq(xs, ys, cx) -> bool:
    """Set semantics: every element of each side equals some element of the other."""
    syms = set()
    for x in (*xs, *ys):
        if _is_expr(x):
            syms |= x.free_symbols
    pt = next(_points(sorted(syms, key=lambda s: s.name)))
    sx, sy = _signatures(xs, pt), _signatures(ys, pt)
    for src, ssrc, dst, sdst in ((xs, sx, ys, sy), (ys, sy, xs, sx)):
        for x, s in zip(src, ssrc):
            if any(x == y for y in dst):          # cheap structural match first
                continue
            if not any(_equal(x, y, cx) for y, t in zip(dst, sdst) if _sig_close(s, t)):
                return False
    return True


def _flat_vector(m: _Seq):
    rows = m.items
    if len(rows) == 1:
        return list(rows[0].items)
    if all(len(r.items) == 1 for r in rows):
        return [r.items[0] for r in rows]
    return None


def _equal(a, b, cx) -> bool:
    cx.tick()
    a_origin = a.origin if isinstance(a, _Scalar) else None
    b_origin = b.origin if isinstance(b, _Scalar) else None
    if isinstance(a, _Scalar):
        a = a.e
    if isinstance(b, _Scalar):
        b = b.e
    if isinstance(a, _Txt) or isinstance(b, _Txt):
        return _text_match(cx.pred_raw, cx.gold_raw)
    if _is_expr(a) and _is_expr(b):
        if a_origin is not None and b_origin is not None and a_origin != b_origin \
                and (a.free_symbols or b.free_symbols):
            # `y = x + 1` vs `x = y - 1`: the same relation solved for different names
            return _eq_rel(_Rel("=", a_origin, a), _Rel("=", b_origin, b), cx)
        return _eq_expr(a, b, cx)
    for x, y, y_origin in ((a, b, b_origin), (b, a, a_origin)):
        if isinstance(x, _Rel) and _is_expr(y):
            return y_origin is not None and _eq_rel(x, _Rel("=", y_origin, y), cx)
    if isinstance(a, _Rel) and isinstance(b, _Rel):
        return _eq_rel(a, b, cx)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, _Rel) and (isinstance(y, _SetV) or isinstance(y, _Seq) and y.pair):
            s = _rel_to_set(x)
            return s is not None and _eq_sets(s, _as_set(y), cx)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, _Seq) and x.kind in ("set", "list", "pm") and _is_expr(y):
            return all(_equal(el, y, cx) for el in x.items)
        if isinstance(x, _SetV) and _is_expr(y):
            return bool(x.pieces) and all(p[2] is False and p[3] is False and _eq_expr(p[0], y, cx)
                                          and _eq_expr(p[1], y, cx) for p in x.pieces)
    if isinstance(a, _Seq) and isinstance(b, _Seq):
        return _eq_seq(a, b, cx)
    if isinstance(a, _SetV) and isinstance(b, _SetV):
        return _eq_sets(a, b, cx)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, _SetV) and isinstance(y, _Seq) and y.kind == "list" \
                and all(isinstance(r, _Rel) for r in y.items):       # `x < -1 or x > 1`
            sets = [_rel_to_set(r) for r in y.items]
            if any(s is None for s in sets):
                return False
            return _eq_sets(x, _SetV([p for s in sets for p in s.pieces]), cx)
        if isinstance(x, _SetV) and isinstance(y, _Seq):
            if not (y.pair or y.kind in ("set", "list", "pm")):
                return False
            try:
                return _eq_sets(x, _as_set(y), cx)
            except _ParseError:
                return False
    if isinstance(a, _Assign) and isinstance(b, _Assign):
        da, db = dict(a.pairs), dict(b.pairs)
        return da.keys() == db.keys() and all(_eq_expr(da[k], db[k], cx) for k in da)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, _Assign) and isinstance(y, _Seq) and y.kind in ("tuple", "list"):
            return _ordered_eq([v for _, v in x.pairs], list(y.items), cx)
    return False


def _eq_seq(a: _Seq, b: _Seq, cx) -> bool:
    ka, kb = a.kind, b.kind
    if ka == "matrix" or kb == "matrix":
        if ka == kb == "matrix":
            return len(a.items) == len(b.items) and all(
                _ordered_eq(r1.items, r2.items, cx) for r1, r2 in zip(a.items, b.items))
        m, o = (a, b) if ka == "matrix" else (b, a)
        if o.kind not in ("tuple", "list"):
            return False
        vec = _flat_vector(m)
        return vec is not None and _ordered_eq(vec, list(o.items), cx)
    if ka == "tuple" or kb == "tuple":
        if ka in ("set", "pm") or kb in ("set", "pm"):
            return False
        return _ordered_eq(a.items, b.items, cx)
    return _unordered_eq(a.items, b.items, cx)


_TEXTY_RE = re.compile(r"[a-z0-9 .,+\-/]+")


def _text_match(pred: str, gold: str) -> bool:
    """Fallback for answers outside the math language: equal plain-text keys (letters, digits and
    light punctuation only, so code-like strings never match anything)."""
    kp = _text_key(pred)
    return kp == _text_key(gold) and _TEXTY_RE.fullmatch(kp) is not None \
        and re.search(r"[a-z0-9]", kp) is not None


# ====================================================================================== public API

def _judge(pred: str, gold: str) -> str:
    fp, fg = _fast_number(pred), _fast_number(gold)
    if fp is not None and fg is not None:
        return RIGHT if _rational_match(fp[0], fg[0], fp[1] or fg[1]) else WRONG
    pp = _parse_cached(pred)
    gp = _parse_cached(gold)
    if pp[0] == "limit":
        return UNPARSABLE
    if pp[0] == "parse" or gp[0] != "ok":
        if gp[0] != "limit" and pp[0] != "limit" and _text_match(pred, gold):
            return RIGHT
        return UNPARSABLE if pp[0] != "ok" else WRONG
    deadline = time.monotonic() + TIME_BUDGET_S
    try:
        for pa in pp[1]:
            for ga in gp[1]:
                cx = _Ctx(pa.inexact or ga.inexact, pred, gold, deadline)
                if _equal(pa.value, ga.value, cx):
                    return RIGHT
    except _Timeout:
        return WRONG
    except (RecursionError, MemoryError):
        return WRONG
    except Exception:   # a sympy failure on odd input is "not shown equal"
        return WRONG
    return WRONG


def _clean_arg(x) -> str:
    if x is None:
        return ""
    if not isinstance(x, str):
        x = str(x)
    return x


def is_equivalent(pred: str, gold: str) -> bool:
    """True iff the answer strings denote the same mathematical object (conventions above)."""
    pred, gold = _answer_part(_clean_arg(pred)), _answer_part(_clean_arg(gold))
    if not pred.strip() or not gold.strip():
        return False
    if len(pred) > 4 * MAX_ANSWER_CHARS or len(gold) > 4 * MAX_ANSWER_CHARS:
        return False
    return _judge(pred, gold) == RIGHT


def _answer_part(s: str) -> str:
    if "\\boxed" in s or "\\fbox" in s:
        ans = extract_answer(s)
        if ans is not None:
            return ans
    return s


def reward_with_reason(completion: str, gold: str) -> tuple[float, str]:
    """(1.0, RIGHT) if the completion's extracted answer equals gold, else (0.0, reason)."""
    gold = _clean_arg(gold)
    if "\\boxed" in gold or "\\fbox" in gold:
        gold = extract_answer(gold) or gold
    ans = extract_answer(_clean_arg(completion))
    if ans is None:
        return 0.0, NO_ANSWER
    if len(ans) > 4 * MAX_ANSWER_CHARS:
        return 0.0, UNPARSABLE
    if not gold.strip():
        return 0.0, WRONG
    r = _judge(ans, gold)
    return (1.0 if r == RIGHT else 0.0), r


def reward(completion: str, gold: str) -> float:
    """1.0 if the completion's final answer is equivalent to gold, else 0.0."""
    return reward_with_reason(completion, gold)[0]
